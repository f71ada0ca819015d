//! A POST body read as borrowed events ([`EventRef`], serde_json with the
//! strings borrowed from the body): no owned `Event` per event, and the
//! context written to its stored form as it is read.
//!
//! This is the fast way in, not a second parser with its own rules: it
//! takes the usual bodies and declines the rest (`None`), and then the
//! owned path (`api::append::parse_events`) reads the body and gives every answer,
//! errors included, as it always has. What this path appends is byte for
//! byte what the owned path would append.

use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};

use crate::event::input;
use crate::event::EventRef;
use crate::server::error::ApiError;

/// The events of a body (already checked as UTF-8), or `None` when the
/// owned path must read it: a body it cannot take, a malformed one, or
/// one over `max` events.
pub(super) fn borrowed_events(text: &str, kind: BodyKind, max: usize) -> Option<Vec<EventRef<'_>>> {
    match kind {
        // Told apart as `parse_events` does, by the first byte that is
        // not ASCII whitespace.
        BodyKind::Json => match text.bytes().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => EventRef::from_json(text).map(|event| vec![event]),
            Some(b'[') => {
                let mut de = serde_json::Deserializer::from_str(text);
                let events = Array { max, text }.deserialize(&mut de).ok()?;
                de.end().ok()?;
                Some(events)
            }
            _ => None,
        },
        BodyKind::NdJson => {
            let mut events = Vec::new();
            for line in text.split('\n') {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.bytes().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                if events.len() == max {
                    return None;
                }
                events.push(EventRef::from_json(line)?);
            }
            Some(events)
        }
    }
}

/// The input contract's number rule ([`input::check_numbers`]) over a
/// body serde_json has read: a number the record would hold as another
/// number refuses the request (400, naming the NDJSON line or the byte of
/// the JSON body).
pub(super) fn check_numbers(text: &str, kind: BodyKind) -> Result<(), ApiError> {
    let refuse = |prefix: String, e: crate::event::EventError| {
        ApiError::bad_request(
            "invalid_event",
            format!("{prefix}{e}; nothing was appended"),
        )
    };
    match kind {
        BodyKind::Json => {
            input::check_numbers(text.as_bytes()).map_err(|e| refuse(String::new(), e))
        }
        BodyKind::NdJson => {
            for (i, line) in text.split('\n').enumerate() {
                input::check_numbers(line.as_bytes())
                    .map_err(|e| refuse(format!("line {}: ", i + 1), e))?;
            }
            Ok(())
        }
    }
}

/// A JSON array of at most `max` events (`text` is the whole body, for a
/// first guess at the count).
struct Array<'t> {
    max: usize,
    text: &'t str,
}

impl<'de> DeserializeSeed<'de> for Array<'_> {
    type Value = Vec<EventRef<'de>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Array<'_> {
    type Value = Vec<EventRef<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // About 250 bytes per event in the usual batch.
        let mut events = Vec::with_capacity((self.text.len() / 256).clamp(1, self.max.max(1)));
        loop {
            if events.len() == self.max {
                // One more is too many: the owned path says so.
                return match seq.next_element::<IgnoredAny>()? {
                    Some(_) => Err(serde::de::Error::custom("too many events")),
                    None => Ok(events),
                };
            }
            match seq.next_element()? {
                Some(event) => events.push(event),
                None => return Ok(events),
            }
        }
    }
}

/// How a request body holds its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// One JSON event object, or an array of them.
    Json,
    /// One event object per line.
    NdJson,
}
