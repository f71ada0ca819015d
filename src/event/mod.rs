//! The audit event, its validation, and its stored byte encoding.
//!
//! The record bytes written by [`encode_record`] (the event body) are what the
//! chain hash covers, after the provenance prefix of a version 2 record (see
//! `docs/FORMAT.md`, "Record", and [`record`]). [`decode_record`] decodes them
//! without copying, so filters can look at the actor or event type without
//! parsing the context.

#[cfg(test)]
mod any_json;
pub(crate) mod context_fast;
pub(crate) mod context_json;
pub mod context_rules;
pub mod input;
pub mod json;
pub mod record;

pub use json::EventRef;
pub use record::{decode_record, Origin, RecordView};
pub(crate) use record::{index_fields, RecordSummary};

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{
    MAX_ACTOR_BYTES, MAX_CONTEXT_BYTES, MAX_EVENT_TYPE_BYTES, MAX_NODE_BYTES, MAX_RECORD_BYTES_V1,
    MAX_RESOURCE_BYTES,
};

/// Why an event, or stored record bytes, were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event type is not two or more dot-separated parts of `[a-z0-9_-]`.
    #[error("event type {0:?} must be two or more dot-separated parts of lowercase letters, digits, '_' and '-'")]
    BadEventType(String),
    /// A required string is empty, or an optional one is present but empty.
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    /// A field is longer than its limit.
    #[error("field `{field}` is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string holds a control character (it would garble terminals and CSV).
    #[error("field `{0}` contains a control character")]
    ControlCharacter(&'static str),
    /// A string holds an invisible format character (Unicode category Cf:
    /// zero-width and bidi controls), which could make two names look alike.
    #[error("field `{field}` contains the invisible format character U+{code_point:04X}")]
    FormatCharacter {
        /// The field.
        field: &'static str,
        /// The character's code point.
        code_point: u32,
    },
    /// The event type is reserved for the engine's own records (`log.*`).
    #[error("event type {0:?} is reserved for the log's own records (its first part is `log`)")]
    ReservedEventType(String),
    /// A stored context breaks a context rule (see [`context_rules`]).
    #[error("context {reason} (at byte {at})")]
    BadContext {
        /// Byte offset in the context text.
        at: usize,
        /// The rule broken, as a phrase after "context".
        reason: &'static str,
    },
    /// A number of an event's JSON text would be stored as another number
    /// (see [`input::check_numbers`]).
    #[error("the number at byte {at} of the JSON text {reason}: it would not be stored as sent (send it as a string)")]
    NumberChanged {
        /// Byte offset in the JSON text checked.
        at: usize,
        /// Why, as a phrase after "the number".
        reason: &'static str,
    },
    /// Record bytes of a layout version this build does not know.
    #[error("unknown record layout version {0}")]
    UnsupportedVersion(u16),
    /// The timestamp text is not RFC 3339, or is out of range.
    #[error("bad timestamp {0:?}: expected RFC 3339 such as 2026-03-09T09:52:14Z, between 1678 and 2261")]
    BadTimestamp(String),
    /// The IP text is not an IPv4 or IPv6 address.
    #[error("bad IP address {0:?}")]
    BadIp(String),
    /// The outcome is not `success` or `failure`.
    #[error("bad outcome {0:?}: expected \"success\" or \"failure\"")]
    BadOutcome(String),
    /// Stored record bytes do not decode.
    #[error("malformed record bytes: {0}")]
    Malformed(&'static str),
}

/// When an event happened: nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `nanos` nanoseconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        // i64 nanoseconds cover 1677..2262; the clock is inside that range.
        Timestamp(i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 (`2026-03-09T09:52:14Z`, `2026-03-09T10:52:14.5+01:00`).
    pub fn parse_rfc3339(text: &str) -> Result<Self, EventError> {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| EventError::BadTimestamp(text.to_string()))?;
        i64::try_from(parsed.unix_timestamp_nanos())
            .map(Timestamp)
            .map_err(|_| EventError::BadTimestamp(text.to_string()))
    }

    /// RFC 3339 in UTC with a `Z` and only the fraction digits needed.
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatted for every exported row, so done by hand on a stack buffer.
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as u32;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = secs.rem_euclid(86_400) as u32;
        let mut buf = [0u8; 30];
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut v = value;
            for i in (0..digits).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        // Years of i64 nanoseconds are 1677..=2262: always four digits.
        put(0, year as u32, 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, second_of_day / 3600, 2);
        put(14, second_of_day / 60 % 60, 2);
        put(17, second_of_day % 60, 2);
        put(20, nanos, 9);
        buf[4] = b'-';
        buf[7] = b'-';
        buf[10] = b'T';
        buf[13] = b':';
        buf[16] = b':';
        buf[19] = b'.';
        let mut end = 19;
        if nanos != 0 {
            end = 29;
            while buf[end - 1] == b'0' {
                end -= 1;
            }
        }
        buf[end] = b'Z';
        f.write_str(std::str::from_utf8(&buf[..=end]).unwrap_or_default())
    }
}

/// The (year, month, day) of a day number counted from 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl FromStr for Timestamp {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action happened.
    #[default]
    Success,
    /// The action was refused or failed (a failed login, an invalid key).
    Failure,
}

impl Outcome {
    /// `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

impl FromStr for Outcome {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            other => Err(EventError::BadOutcome(other.to_string())),
        }
    }
}

/// One audit event: who did what, to which node or resource, from where, when.
///
/// Its JSON form (used by the CLI's input and output) has the fields
/// `timestamp`, `event`, `actor`, `node`, `resource`, `ip`, `outcome` and
/// `context`; unknown fields are rejected.
/// In JSON, an event is an object (see [`input`]): its `Deserialize`
/// refuses the positional array form serde derives for a struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Event {
    /// When it happened; in JSON input, "now" when absent.
    #[serde(default = "Timestamp::now")]
    pub timestamp: Timestamp,
    /// Dotted category and action, such as `pcap.download`.
    #[serde(rename = "event")]
    pub event_type: String,
    /// Who: a person, a service, or `system`.
    pub actor: String,
    /// The node touched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The resource touched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Where the request came from; absent for system events.
    #[serde(rename = "ip", default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// Success or failure.
    #[serde(default)]
    pub outcome: Outcome,
    /// The full context, as a JSON object.
    #[serde(default)]
    pub context: Map<String, Value>,
}

// `remote = "Self"` makes the derives inherent functions, so that the
// traits can wrap them: serializing is the derived form, deserializing
// takes an object only.
impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Event::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Event::deserialize(input::ObjectOnly(d))
    }
}

impl Event {
    /// A successful event at `timestamp` with no node, resource, IP or context.
    pub fn new(
        timestamp: Timestamp,
        event_type: impl Into<String>,
        actor: impl Into<String>,
    ) -> Self {
        Event {
            timestamp,
            event_type: event_type.into(),
            actor: actor.into(),
            node: None,
            resource: None,
            source_ip: None,
            outcome: Outcome::Success,
            context: Map::new(),
        }
    }

    /// Checks every field against the rules and limits in [`crate::limits`]
    /// and the record rules ([`record`]) for a client's event: a reserved
    /// (`log.*`) event type is refused with [`EventError::ReservedEventType`].
    pub fn validate(&self) -> Result<(), EventError> {
        validate_texts(
            &self.event_type,
            &self.actor,
            self.node.as_deref(),
            self.resource.as_deref(),
        )
    }
}

/// Checks a client event's text fields (all but the context), in the order
/// every encoder reports them.
pub(crate) fn validate_texts(
    event_type: &str,
    actor: &str,
    node: Option<&str>,
    resource: Option<&str>,
) -> Result<(), EventError> {
    validate_event_type(event_type)?;
    if record::is_reserved_event_type(event_type) {
        return Err(EventError::ReservedEventType(event_type.to_string()));
    }
    validate_names(actor, node, resource)
}

/// Checks the actor, node and resource under the version 2 rules.
pub(crate) fn validate_names(
    actor: &str,
    node: Option<&str>,
    resource: Option<&str>,
) -> Result<(), EventError> {
    validate_text("actor", actor, MAX_ACTOR_BYTES)?;
    if let Some(node) = node {
        validate_text("node", node, MAX_NODE_BYTES)?;
    }
    if let Some(resource) = resource {
        validate_text("resource", resource, MAX_RESOURCE_BYTES)?;
    }
    Ok(())
}

/// Checks an event type: `category.action`, lowercase, bounded.
pub fn validate_event_type(event_type: &str) -> Result<(), EventError> {
    if event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(EventError::TooLong {
            field: "event",
            len: event_type.len(),
            max: MAX_EVENT_TYPE_BYTES,
        });
    }
    if !record::is_event_type(event_type.as_bytes()) {
        return Err(EventError::BadEventType(event_type.to_string()));
    }
    Ok(())
}

pub(crate) fn validate_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::Empty(field));
    }
    if value.len() > max {
        return Err(EventError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    record::check_characters(field, value, record::RECORD_V2)
}

pub(crate) const IP_NONE: u8 = 0;
pub(crate) const IP_V4: u8 = 4;
pub(crate) const IP_V6: u8 = 6;

/// Something [`crate::Log::append_batch`] can append: it validates itself
/// and writes its record bytes (the layout in `docs/FORMAT.md`).
///
/// [`Event`] is the usual one; a caller that already holds an event in
/// another form (a parsed request body, say) can implement it to append
/// without building an owned [`Event`] first. The bytes written must be
/// exactly what [`encode_record`] writes for the equivalent [`Event`].
pub trait EncodeRecord {
    /// Validates and appends the record bytes (the event body) to `out`; on
    /// error `out` is left as it was.
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError>;

    /// Who appends this record, when it is not the log's
    /// [`Options::appender`](crate::Options::appender): a server appending
    /// several clients' events in one batch names each one's own. Default
    /// `None`.
    fn appender(&self) -> Option<&str> {
        None
    }
}

impl EncodeRecord for Event {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        encode_record(self, out)
    }
}

/// Writes a record's fields before its context (the layout in
/// `docs/FORMAT.md`): timestamp, outcome, source IP, and the event type,
/// actor, node and resource, each with its length. The texts must already be
/// validated (each under 65,536 bytes).
pub(crate) fn encode_fields(
    out: &mut Vec<u8>,
    timestamp: Timestamp,
    outcome: Outcome,
    source_ip: Option<IpAddr>,
    texts: [Option<&str>; 4],
) {
    out.extend_from_slice(&timestamp.unix_nanos().to_le_bytes());
    out.push(match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
    });
    match source_ip {
        None => out.push(IP_NONE),
        Some(IpAddr::V4(v4)) => {
            out.push(IP_V4);
            out.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            out.push(IP_V6);
            out.extend_from_slice(&v6.octets());
        }
    }
    for text in texts {
        let bytes = text.unwrap_or("").as_bytes();
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Validates `event` as a client's event and appends its record bytes (the
/// event body) to `out`.
///
/// On error `out` is left as it was.
pub fn encode_record(event: &Event, out: &mut Vec<u8>) -> Result<(), EventError> {
    event.validate()?;
    encode_body(event, out)
}

/// An event the engine writes about itself (retention, legal holds,
/// recovery cuts, migration): the client rules, except that its type may be
/// reserved. Only the log's crate-private engine append path uses it.
pub(crate) struct EngineEvent<'a>(pub &'a Event);

impl EncodeRecord for EngineEvent<'_> {
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        let event = self.0;
        validate_event_type(&event.event_type)?;
        validate_names(
            &event.actor,
            event.node.as_deref(),
            event.resource.as_deref(),
        )?;
        encode_body(event, out)
    }
}

/// Appends the body of an event whose texts are validated.
fn encode_body(event: &Event, out: &mut Vec<u8>) -> Result<(), EventError> {
    if nests_deeper_than(&event.context, context_rules::MAX_CONTEXT_DEPTH) {
        return Err(EventError::BadContext {
            at: 0,
            reason: "nests deeper than 128 levels",
        });
    }
    let start = out.len();
    // Lengths fit in u16: validate() bounded them well below 65,536.
    encode_fields(
        out,
        event.timestamp,
        event.outcome,
        event.source_ip,
        [
            Some(event.event_type.as_str()),
            Some(event.actor.as_str()),
            event.node.as_deref(),
            event.resource.as_deref(),
        ],
    );
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let context_start = out.len();
    crate::event::context_json::write_object(&event.context, out);
    let context_len = out.len() - context_start;
    if context_len > MAX_CONTEXT_BYTES {
        out.truncate(start);
        return Err(EventError::TooLong {
            field: "context",
            len: context_len,
            max: MAX_CONTEXT_BYTES,
        });
    }
    out[len_at..context_start].copy_from_slice(&(context_len as u32).to_le_bytes());
    debug_assert!(out.len() - start <= MAX_RECORD_BYTES_V1);
    Ok(())
}

/// Whether an object (depth 1) holds containers nested deeper than `limit`.
fn nests_deeper_than(map: &Map<String, Value>, limit: usize) -> bool {
    fn deeper(value: &Value, depth: usize, limit: usize) -> bool {
        // `depth` is the depth `value` has if it is a container.
        match value {
            Value::Array(items) => {
                depth > limit || items.iter().any(|v| deeper(v, depth + 1, limit))
            }
            Value::Object(map) => {
                depth > limit || map.values().any(|v| deeper(v, depth + 1, limit))
            }
            _ => false,
        }
    }
    limit == 0 || map.values().any(|v| deeper(v, 2, limit))
}

/// The event timestamp of encoded record bytes of layout `version`,
/// without decoding the rest; the epoch for bytes too short to hold one.
pub fn record_timestamp(version: u16, record: &[u8]) -> Timestamp {
    let body = if version == record::RECORD_V2 {
        // After received_at, origin and the u16-prefixed appender.
        let appender_len = record
            .get(9..11)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
        record.get(11 + appender_len..).unwrap_or_default()
    } else {
        record
    };
    match body.first_chunk::<8>() {
        Some(nanos) => Timestamp(i64::from_le_bytes(*nanos)),
        None => Timestamp(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        let mut e = Event::new(
            Timestamp::parse_rfc3339("2026-03-09T09:52:14.123456789Z").unwrap(),
            "pcap.download",
            "alice@acme.io",
        );
        e.node = Some("nyc-edge-01".into());
        e.resource = Some("a3f7c2b1".into());
        e.source_ip = Some("2001:db8::42".parse().unwrap());
        e.outcome = Outcome::Failure;
        e.context = json!({"sha256": "ab", "bytes": 18231, "nested": {"x": [1, 2.5]}})
            .as_object()
            .unwrap()
            .clone();
        e
    }

    #[test]
    fn event_type_rules() {
        for ok in [
            "pcap.download",
            "devops-guru.search_insights",
            "a.b.c",
            "x1.y2",
        ] {
            assert_eq!(validate_event_type(ok), Ok(()), "{ok}");
        }
        for bad in [
            "pcap",
            "Pcap.download",
            "pcap..x",
            ".a",
            "a.",
            "a b.c",
            "",
            "a.b/c",
        ] {
            assert!(
                matches!(validate_event_type(bad), Err(EventError::BadEventType(_))),
                "{bad}"
            );
        }
        // The one-pass check agrees with the rule as written, on every string
        // of up to 6 bytes over a small alphabet.
        let reference = |t: &str| {
            let part_ok = |p: &str| {
                !p.is_empty()
                    && p.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
            };
            t.split('.').count() >= 2 && t.split('.').all(part_ok)
        };
        let alphabet = ["a", "9", "_", "-", ".", "A", " "];
        let mut strings = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            for t in &longer {
                assert_eq!(validate_event_type(t).is_ok(), reference(t), "{t:?}");
            }
            strings = longer;
        }
        let long = format!("a.{}", "b".repeat(MAX_EVENT_TYPE_BYTES));
        assert!(matches!(
            validate_event_type(&long),
            Err(EventError::TooLong { .. })
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let mut e = sample();
        e.actor = "x".repeat(MAX_ACTOR_BYTES + 1);
        assert!(matches!(
            e.validate(),
            Err(EventError::TooLong { field: "actor", .. })
        ));
        let mut e = sample();
        e.actor.clear();
        assert_eq!(e.validate(), Err(EventError::Empty("actor")));
        let mut e = sample();
        e.node = Some("a\nb".into());
        assert_eq!(e.validate(), Err(EventError::ControlCharacter("node")));
        let mut e = sample();
        e.context
            .insert("blob".into(), Value::String("y".repeat(MAX_CONTEXT_BYTES)));
        let mut buf = vec![9];
        assert!(matches!(
            encode_record(&e, &mut buf),
            Err(EventError::TooLong {
                field: "context",
                ..
            })
        ));
        assert_eq!(buf, vec![9], "a rejected event leaves the buffer unchanged");
    }

    #[test]
    fn timestamps_format_in_utc() {
        let t = Timestamp::parse_rfc3339("2026-03-09T10:52:14.5+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-03-09T09:52:14.5Z");
        assert_eq!(
            Timestamp::from_unix_nanos(0).to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert!(Timestamp::parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        let before_epoch = Timestamp::from_unix_nanos(-1);
        assert_eq!(before_epoch.to_string(), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            Timestamp::parse_rfc3339(&before_epoch.to_string()).unwrap(),
            before_epoch
        );
    }

    #[test]
    fn display_matches_the_time_crate_everywhere_in_range() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bounds = [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            951_782_400_000_000_000,
            4_107_542_400_000_000_000,
        ];
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let nanos = bounds.get(i).copied().unwrap_or(x as i64);
            let ours = Timestamp::from_unix_nanos(nanos).to_string();
            let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap();
            let theirs = dt
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(ours, theirs, "{nanos}");
            assert_eq!(Timestamp::parse_rfc3339(&ours).unwrap().unix_nanos(), nanos);
        }
    }

    #[test]
    fn json_form_rejects_unknown_fields() {
        let err = serde_json::from_str::<Event>(
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"a.b","actor":"x","colour":"red"}"#,
        );
        assert!(err.is_err());
        let ok: Event = serde_json::from_str(
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"a.b","actor":"x","ip":"10.0.0.1"}"#,
        )
        .unwrap();
        assert_eq!(ok.source_ip, Some("10.0.0.1".parse().unwrap()));
    }
}
