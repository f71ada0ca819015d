//! Record bytes: the one decoder for every record layout, and the rules it
//! enforces.
//!
//! A record's layout is its segment's `format_version` (`docs/FORMAT.md`,
//! "Record"):
//!
//! - version 1: the event body: timestamp, outcome, source IP, event type,
//!   actor, node, resource, context;
//! - version 2: a provenance prefix (`received_at`, `origin`, `appender`)
//!   followed by exactly the version 1 body.
//!
//! [`decode_record`] is the only decoder: the verifier, recovery, readers,
//! the server and the bundle checker all reach the bytes through it (or
//! through `RecordSummary`, which accepts exactly what it accepts), so one
//! set of rules decides what a valid record is. What it enforces:
//!
//! - every length within its limit, no byte after the context;
//! - event type: 1..=128 bytes, dot-separated parts of `[a-z0-9_-]+`, at
//!   least two parts;
//! - actor 1..=256 bytes, appender (v2) 1..=256, node and resource 0..=256
//!   (0 = absent), none holding a forbidden character: a control character
//!   (Unicode category Cc) in both versions and, in version 2, also an
//!   invisible format character (category Cf, see [`is_format_character`]);
//! - the context rules of [`check_context`];
//! - version 2: origin 0 (client) or 1 (engine), and no client record with
//!   a reserved (`log.*`) event type ([`EventError::ReservedEventType`]).
//!
//! Version 1 recorded no origin: its records report [`Origin::Legacy`], and
//! its `log.*` records are taken as the engine's (a known weakness of
//! version 1, which version 2 closes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::context_rules::{check_context, check_utf8_context};
use super::{validate_event_type, Event, EventError, Outcome, Timestamp, IP_NONE, IP_V4, IP_V6};
use crate::limits::{
    MAX_ACTOR_BYTES, MAX_APPENDER_BYTES, MAX_CONTEXT_BYTES, MAX_EVENT_TYPE_BYTES, MAX_NODE_BYTES,
    MAX_RECORD_BYTES, MAX_RECORD_BYTES_V1, MAX_RESOURCE_BYTES,
};

/// Record layout of format version 1 segments: the event body alone.
pub const RECORD_V1: u16 = 1;
/// Record layout of format version 2 segments: provenance, then the body.
pub const RECORD_V2: u16 = 2;

/// Where `received_at` sits in a version 2 record; the log fills it in
/// under its append lock.
pub const RECEIVED_AT_OFFSET: usize = 0;

/// The largest record of a layout version, or `None` for an unknown one.
pub const fn max_record_bytes(version: u16) -> Option<usize> {
    match version {
        RECORD_V1 => Some(MAX_RECORD_BYTES_V1),
        RECORD_V2 => Some(MAX_RECORD_BYTES),
        _ => None,
    }
}

/// Who wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Appended through a public append path (origin byte 0).
    Client,
    /// Written by the engine itself: retention, legal holds, recovery
    /// cuts, migration (origin byte 1). No public append path writes it.
    Engine,
    /// A version 1 record: the format did not record its origin. Version 1
    /// readers took every `log.*` record as the engine's.
    Legacy,
}

impl Origin {
    /// `client`, `engine` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Engine => "engine",
            Origin::Legacy => "legacy",
        }
    }
}

/// Whether an event type is reserved for the engine: its first part is `log`.
pub fn is_reserved_event_type(event_type: &str) -> bool {
    event_type.as_bytes().starts_with(b"log.")
}

/// Whether `c` is one of the invisible format characters (Unicode general
/// category Cf, Unicode 15.1) that version 2 forbids in the actor,
/// appender, node and resource: soft hyphen, bidi controls, zero-width
/// characters, tags and the like, which could make two different names look
/// the same.
pub fn is_format_character(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Whether every byte is printable ASCII (0x20..=0x7E); written as a fold
/// so that it compiles to a branch-free loop.
fn is_printable_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5f))
}

/// Checks the characters of a name-like field (actor, appender, node,
/// resource) under the rules of record `version`.
pub(crate) fn check_characters(
    field: &'static str,
    value: &str,
    version: u16,
) -> Result<(), EventError> {
    // Printable ASCII, the usual case, needs no UTF-8 decoding.
    if is_printable_ascii(value.as_bytes()) {
        return Ok(());
    }
    for c in value.chars() {
        if c.is_control() {
            return Err(EventError::ControlCharacter(field));
        }
        if version >= RECORD_V2 && is_format_character(c) {
            return Err(EventError::FormatCharacter {
                field,
                code_point: c as u32,
            });
        }
    }
    Ok(())
}

/// Writes a version 2 record's provenance prefix; the event body
/// ([`crate::EncodeRecord`]) follows it. On error `out` is unchanged.
///
/// `origin` is [`Origin::Client`] or [`Origin::Engine`];
/// [`Origin::Legacy`] is refused (version 2 always records the origin).
pub fn encode_provenance(
    received_at: Timestamp,
    origin: Origin,
    appender: &str,
    out: &mut Vec<u8>,
) -> Result<(), EventError> {
    let origin = match origin {
        Origin::Client => 0,
        Origin::Engine => 1,
        Origin::Legacy => return Err(EventError::Malformed("a version 2 record needs an origin")),
    };
    check_appender(appender)?;
    out.extend_from_slice(&received_at.unix_nanos().to_le_bytes());
    out.push(origin);
    // Fits in u16: check_appender bounded it to 256 bytes.
    out.extend_from_slice(&(appender.len() as u16).to_le_bytes());
    out.extend_from_slice(appender.as_bytes());
    Ok(())
}

/// Bytes of the provenance prefix for `appender`: what a version 2 record
/// adds to its event body.
pub fn provenance_len(appender: &str) -> usize {
    8 + 1 + 2 + appender.len()
}

/// Checks an appender name: 1..=256 bytes, no control or format character.
pub fn check_appender(appender: &str) -> Result<(), EventError> {
    if appender.is_empty() {
        return Err(EventError::Empty("appender"));
    }
    if appender.len() > MAX_APPENDER_BYTES {
        return Err(EventError::TooLong {
            field: "appender",
            len: appender.len(),
            max: MAX_APPENDER_BYTES,
        });
    }
    check_characters("appender", appender, RECORD_V2)
}

/// A decoded record, borrowing its strings from the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordView<'a> {
    /// When the engine received it (version 2); `None` for version 1.
    pub received_at: Option<Timestamp>,
    /// Who wrote it: a client, the engine, or unrecorded (version 1).
    pub origin: Origin,
    /// Who appended it (version 2); `None` for version 1.
    pub appender: Option<&'a str>,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Success or failure.
    pub outcome: Outcome,
    /// Source address, if any.
    pub source_ip: Option<IpAddr>,
    /// Event type.
    pub event_type: &'a str,
    /// Actor.
    pub actor: &'a str,
    /// Node, if any.
    pub node: Option<&'a str>,
    /// Resource, if any.
    pub resource: Option<&'a str>,
    /// The context as compact JSON text (checked, not parsed).
    pub context_json: &'a str,
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventError> {
        let Some((head, rest)) = self.bytes.split_at_checked(n) else {
            return Err(EventError::Malformed("record is shorter than its fields"));
        };
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EventError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, EventError> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        if len > max {
            return Err(EventError::TooLong { field, len, max });
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| EventError::Malformed("text is not UTF-8"))
    }

    /// A name-like text field: within `max`, non-empty when `required`,
    /// without forbidden characters.
    fn name(
        &mut self,
        field: &'static str,
        max: usize,
        required: bool,
        version: u16,
    ) -> Result<&'a str, EventError> {
        let text = self.text(field, max)?;
        if required && text.is_empty() {
            return Err(EventError::Empty(field));
        }
        check_characters(field, text, version)?;
        Ok(text)
    }
}

/// Decodes stored record bytes of layout `version` (the segment header's
/// `format_version`), enforcing every rule in the [module docs](self).
pub fn decode_record(version: u16, bytes: &[u8]) -> Result<RecordView<'_>, EventError> {
    let Some(max) = max_record_bytes(version) else {
        return Err(EventError::UnsupportedVersion(version));
    };
    if bytes.len() > max {
        return Err(EventError::Malformed(
            "record exceeds the maximum record size",
        ));
    }
    let mut c = Cursor { bytes };
    let (received_at, origin, appender) = if version == RECORD_V2 {
        let received_at = Timestamp::from_unix_nanos(i64::from_le_bytes(c.array()?));
        let origin = match c.array::<1>()?[0] {
            0 => Origin::Client,
            1 => Origin::Engine,
            _ => return Err(EventError::Malformed("unknown origin code")),
        };
        let appender = c.name("appender", MAX_APPENDER_BYTES, true, version)?;
        (Some(received_at), origin, Some(appender))
    } else {
        (None, Origin::Legacy, None)
    };
    let timestamp = Timestamp::from_unix_nanos(i64::from_le_bytes(c.array()?));
    let outcome = match c.array::<1>()?[0] {
        0 => Outcome::Success,
        1 => Outcome::Failure,
        _ => return Err(EventError::Malformed("unknown outcome code")),
    };
    let source_ip = match c.array::<1>()?[0] {
        IP_NONE => None,
        IP_V4 => Some(IpAddr::V4(Ipv4Addr::from(c.array::<4>()?))),
        IP_V6 => Some(IpAddr::V6(Ipv6Addr::from(c.array::<16>()?))),
        _ => return Err(EventError::Malformed("unknown IP kind")),
    };
    let event_type = c.text("event", MAX_EVENT_TYPE_BYTES)?;
    validate_event_type(event_type)?;
    if origin == Origin::Client && is_reserved_event_type(event_type) {
        return Err(EventError::ReservedEventType(event_type.to_string()));
    }
    let actor = c.name("actor", MAX_ACTOR_BYTES, true, version)?;
    let node = Some(c.name("node", MAX_NODE_BYTES, false, version)?).filter(|s| !s.is_empty());
    let resource =
        Some(c.name("resource", MAX_RESOURCE_BYTES, false, version)?).filter(|s| !s.is_empty());
    let context_len = u32::from_le_bytes(c.array()?) as usize;
    if context_len > MAX_CONTEXT_BYTES {
        return Err(EventError::TooLong {
            field: "context",
            len: context_len,
            max: MAX_CONTEXT_BYTES,
        });
    }
    let context = c.take(context_len)?;
    if !c.bytes.is_empty() {
        return Err(EventError::Malformed("trailing bytes after the context"));
    }
    check_context(context)?;
    // check_context verified UTF-8.
    let context_json =
        std::str::from_utf8(context).map_err(|_| EventError::Malformed("context is not UTF-8"))?;
    Ok(RecordView {
        received_at,
        origin,
        appender,
        timestamp,
        outcome,
        source_ip,
        event_type,
        actor,
        node,
        resource,
        context_json,
    })
}

impl RecordView<'_> {
    /// Builds the owned event, parsing the context. A context number
    /// outside the range of an `f64` (valid in a stored context, never
    /// written by this library) is reported as malformed here.
    pub fn to_event(&self) -> Result<Event, EventError> {
        let context: Map<String, Value> = serde_json::from_str(self.context_json)
            .map_err(|_| EventError::Malformed("context does not parse as a JSON object"))?;
        Ok(Event {
            timestamp: self.timestamp,
            event_type: self.event_type.to_string(),
            actor: self.actor.to_string(),
            node: self.node.map(str::to_string),
            resource: self.resource.map(str::to_string),
            source_ip: self.source_ip,
            outcome: self.outcome,
            context,
        })
    }
}

/// The fields of stored record bytes that the verifier and recovery read,
/// from a check that accepts exactly the bytes [`decode_record`] accepts.
///
/// Printable records are ASCII: their lengths and rules are checked in one
/// pass, with no UTF-8 decoding and no addresses or strings built. Anything
/// else goes through [`decode_record`], so a malformed record is reported
/// with the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSummary<'a> {
    /// When the engine received it (version 2).
    pub received_at: Option<Timestamp>,
    /// Who wrote it.
    pub origin: Origin,
    /// When it happened.
    pub timestamp: Timestamp,
    /// The event type's bytes (valid UTF-8).
    pub event_type: &'a [u8],
    /// The actor's bytes (valid UTF-8), for the index the verifier builds.
    pub actor: &'a [u8],
    /// The node's bytes (valid UTF-8), if any.
    pub node: Option<&'a [u8]>,
    /// The context's JSON text (valid UTF-8).
    pub context_json: &'a [u8],
}

impl<'a> RecordSummary<'a> {
    /// Checks stored record bytes of layout `version` as [`decode_record`] does.
    pub fn decode(version: u16, bytes: &'a [u8]) -> Result<Self, EventError> {
        if let Some(summary) = Self::decode_ascii(version, bytes) {
            return Ok(summary);
        }
        decode_record(version, bytes).map(|view| RecordSummary {
            received_at: view.received_at,
            origin: view.origin,
            timestamp: view.timestamp,
            event_type: view.event_type.as_bytes(),
            actor: view.actor.as_bytes(),
            node: view.node.map(str::as_bytes),
            context_json: view.context_json.as_bytes(),
        })
    }

    /// The summary of a valid record whose text is all printable ASCII;
    /// `None` for any other bytes (invalid, or text beyond ASCII).
    fn decode_ascii(version: u16, bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() > max_record_bytes(version)? {
            return None;
        }
        let (received_at, origin, rest) = if version == RECORD_V2 {
            let (received_at, rest) = bytes.split_first_chunk::<8>()?;
            let (&origin, rest) = rest.split_first()?;
            let origin = match origin {
                0 => Origin::Client,
                1 => Origin::Engine,
                _ => return None,
            };
            let (appender, rest) = ascii_text(rest, MAX_APPENDER_BYTES)?;
            if appender.is_empty() {
                return None;
            }
            let received_at = Timestamp::from_unix_nanos(i64::from_le_bytes(*received_at));
            (Some(received_at), origin, rest)
        } else {
            (None, Origin::Legacy, bytes)
        };
        let (timestamp, rest) = rest.split_first_chunk::<8>()?;
        let (&[outcome, ip_kind], rest) = rest.split_first_chunk::<2>()?;
        let ip_len = match ip_kind {
            IP_NONE => 0,
            IP_V4 => 4,
            IP_V6 => 16,
            _ => return None,
        };
        if outcome > 1 {
            return None;
        }
        let rest = rest.get(ip_len..)?;
        let (event_type, rest) = ascii_text(rest, MAX_EVENT_TYPE_BYTES)?;
        if !is_event_type(event_type)
            || (origin == Origin::Client && event_type.starts_with(b"log."))
        {
            return None;
        }
        let (actor, rest) = ascii_text(rest, MAX_ACTOR_BYTES)?;
        if actor.is_empty() {
            return None;
        }
        let (node, rest) = ascii_text(rest, MAX_NODE_BYTES)?;
        let (_resource, rest) = ascii_text(rest, MAX_RESOURCE_BYTES)?;
        let (context_len, context_json) = rest.split_first_chunk::<4>()?;
        let context_len = u32::from_le_bytes(*context_len) as usize;
        // The context is the rest: no trailing bytes.
        if context_len > MAX_CONTEXT_BYTES
            || context_json.len() != context_len
            || !context_json.is_ascii()
            || check_utf8_context(context_json).is_err()
        {
            return None;
        }
        Some(RecordSummary {
            received_at,
            origin,
            timestamp: Timestamp::from_unix_nanos(i64::from_le_bytes(*timestamp)),
            event_type,
            actor,
            node: Some(node).filter(|n| !n.is_empty()),
            context_json,
        })
    }
}

/// The fields an index posts (actor, event type, node), read from record
/// bytes that [`RecordSummary::decode`] accepted (the engine's own frames),
/// so that the write path can feed the index builder from the frames it
/// holds without decoding them again. `None` for bytes it
/// would refuse.
pub(crate) fn index_fields(version: u16, bytes: &[u8]) -> Option<IndexFields<'_>> {
    fn text(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))
    }
    let rest = if version == RECORD_V2 {
        // received_at, origin, then the appender.
        text(bytes.get(9..)?)?.1
    } else {
        bytes
    };
    let (&[_outcome, ip_kind], rest) = rest.get(8..)?.split_first_chunk::<2>()?;
    let ip_len = match ip_kind {
        IP_NONE => 0,
        IP_V4 => 4,
        IP_V6 => 16,
        _ => return None,
    };
    let (event_type, rest) = text(rest.get(ip_len..)?)?;
    let (actor, rest) = text(rest)?;
    let (node, _) = text(rest)?;
    Some(IndexFields {
        event_type,
        actor,
        node: Some(node).filter(|n| !n.is_empty()),
    })
}

/// What [`index_fields`] reads: the texts' bytes (valid UTF-8 in a record
/// the decoder accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexFields<'a> {
    /// The event type.
    pub event_type: &'a [u8],
    /// The actor.
    pub actor: &'a [u8],
    /// The node, if any.
    pub node: Option<&'a [u8]>,
}

/// Whether `bytes` follow the event type grammar (the length is bounded by
/// the caller): parts of `[a-z0-9_-]+` separated by single dots, at least two.
pub(crate) fn is_event_type(bytes: &[u8]) -> bool {
    let mut dots = 0;
    let mut part_len = 0;
    for &b in bytes {
        match b {
            b'.' if part_len > 0 => {
                dots += 1;
                part_len = 0;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => part_len += 1,
            _ => return false,
        }
    }
    dots > 0 && part_len > 0
}

/// A u16-prefixed text field of at most `max` printable ASCII bytes, and
/// the bytes after it.
fn ascii_text(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if len > max {
        return None;
    }
    let (text, rest) = rest.split_at_checked(len)?;
    is_printable_ascii(text).then_some((text, rest))
}

#[cfg(test)]
mod tests;
