//! A POST body read as borrowed events ([`EventRef`]): no owned `Event`
//! per event, and the context kept as the client's text when it is
//! already in its stored form.
//!
//! This is the fast way in, not a second parser with its own rules: it
//! takes the usual bodies and declines the rest (`None`), and then the
//! owned path (`api::parse_events`) reads the body and gives every answer,
//! errors included, as it always has. What this path appends is byte for
//! byte what the owned path would append.

use crate::event::EventRef;
use crate::server::api::BodyKind;

/// The events of a body (already checked as UTF-8), or `None` when the
/// owned path must read it: a body it cannot take, a malformed one, or
/// one over `max` events.
pub(super) fn borrowed_events(text: &str, kind: BodyKind, max: usize) -> Option<Vec<EventRef<'_>>> {
    match kind {
        // Told apart as `parse_events` does, by the first byte that is
        // not ASCII whitespace.
        BodyKind::Json => match text.bytes().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => whole_object(text).map(|event| vec![event]),
            Some(b'[') => array(text, max),
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
                events.push(whole_object(line)?);
            }
            Some(events)
        }
    }
}

/// Whether `text` is only JSON whitespace (what serde_json allows after a
/// value).
fn only_whitespace(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// `text` as exactly one event object.
fn whole_object(text: &str) -> Option<EventRef<'_>> {
    let (event, rest) = EventRef::parse_json_prefix(text)?;
    only_whitespace(rest).then_some(event)
}

/// `text` as a JSON array of at most `max` event objects.
fn array(text: &str, max: usize) -> Option<Vec<EventRef<'_>>> {
    let mut rest = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .strip_prefix('[')?;
    // About 250 bytes per event in the usual batch.
    let mut events = Vec::with_capacity((text.len() / 256).clamp(1, max.max(1)));
    if let Some(after) = rest
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .strip_prefix(']')
    {
        return only_whitespace(after).then_some(events);
    }
    loop {
        if events.len() == max {
            return None;
        }
        let (event, after) = EventRef::parse_json_prefix(rest)?;
        events.push(event);
        let after = after.trim_start_matches([' ', '\t', '\n', '\r']);
        if let Some(next) = after.strip_prefix(',') {
            rest = next;
        } else {
            let end = after.strip_prefix(']')?;
            return only_whitespace(end).then_some(events);
        }
    }
}
