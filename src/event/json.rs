//! An event read from its JSON form without building an owned [`Event`](crate::Event):
//! strings borrowed from the text, the context kept as its stored JSON.
//!
//! [`EventRef::parse_json_prefix`] reads the JSON form `Event` derives
//! (`timestamp`, `event`, `actor`, `node`, `resource`, `ip`, `outcome`,
//! `context`), and [`EventRef`]'s [`EncodeRecord`] writes exactly the record
//! bytes [`encode_record`](crate::event::encode_record) writes for the
//! `Event` serde_json parses from the same text, with the same validation
//! and errors. The HTTP server appends request bodies this way.
//!
//! It takes the usual events and declines the rest: when it returns
//! `None`, parse the text as an [`Event`](crate::Event) with serde_json, which either
//! takes it (a form this parser leaves to it) or says what is wrong. So a
//! caller gets serde_json's answers, only faster for the common case.
//!
//! ```
//! use chainlog::event::encode_record;
//! use chainlog::event::EventRef;
//! use chainlog::{EncodeRecord, Event};
//!
//! let text = r#"{"timestamp":"2026-03-09T09:52:14Z","event":"pcap.download",
//!   "actor":"alice@acme.io","ip":"203.0.113.42","context":{"bytes": 18231}}"#;
//! let (event, rest) = EventRef::parse_json_prefix(text).expect("the usual form");
//! assert!(rest.is_empty());
//! assert_eq!(event.actor, "alice@acme.io");
//! assert_eq!(event.context_json(), r#"{"bytes":18231}"#);
//!
//! let (mut fast, mut owned) = (Vec::new(), Vec::new());
//! event.encode_record(&mut fast)?;
//! encode_record(&serde_json::from_str::<Event>(text)?, &mut owned)?;
//! assert_eq!(fast, owned);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::net::IpAddr;

use crate::event::context_text;
use crate::event::{encode_fields, validate_texts, EncodeRecord, EventError, Outcome, Timestamp};
use crate::limits::MAX_CONTEXT_BYTES;

/// An event borrowing its text from the JSON it was read from; see the
/// [module docs](self). The fields mean what [`Event`](crate::Event)'s do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// When it happened ("now", as read, when the JSON has none).
    pub timestamp: Timestamp,
    /// Dotted category and action.
    pub event_type: Cow<'a, str>,
    /// Who.
    pub actor: Cow<'a, str>,
    /// The node touched, if any.
    pub node: Option<Cow<'a, str>>,
    /// The resource touched, if any.
    pub resource: Option<Cow<'a, str>>,
    /// Where the request came from.
    pub source_ip: Option<IpAddr>,
    /// Success or failure.
    pub outcome: Outcome,
    /// The context in its stored form (compact JSON, as the record holds it).
    context_json: Cow<'a, str>,
}

/// The fields of the JSON form, each once.
#[derive(Clone, Copy)]
enum Field {
    Timestamp,
    Event,
    Actor,
    Node,
    Resource,
    Ip,
    Outcome,
    Context,
}

impl Field {
    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "timestamp" => Field::Timestamp,
            "event" => Field::Event,
            "actor" => Field::Actor,
            "node" => Field::Node,
            "resource" => Field::Resource,
            "ip" => Field::Ip,
            "outcome" => Field::Outcome,
            "context" => Field::Context,
            _ => return None,
        })
    }
}

impl<'a> EventRef<'a> {
    /// Reads one event object at the start of `text` (after JSON
    /// whitespace) and returns it with the text after its closing `}`.
    ///
    /// `None` when the object is not in the form this parser takes: then
    /// parse it as an [`Event`](crate::Event) with serde_json, which decides. Declined
    /// are every text serde_json refuses (a missing or unknown field, a
    /// wrong type, a bad timestamp, address or outcome, bad JSON) and a few
    /// it takes: the event as an array, `outcome` as `{"success": null}`,
    /// and contexts with duplicate keys, nesting over 64 levels or keys
    /// starting `$serde_json::private::`. What it returns encodes exactly
    /// as that `Event` does, including the validation errors.
    pub fn parse_json_prefix(text: &'a str) -> Option<(EventRef<'a>, &'a str)> {
        let bytes = text.as_bytes();
        let mut at = context_text::skip_whitespace(bytes, 0);
        if bytes.get(at) != Some(&b'{') {
            return None;
        }
        at = context_text::skip_whitespace(bytes, at + 1);
        let mut seen = 0u8;
        let mut timestamp = None;
        let mut event_type = None;
        let mut actor = None;
        let mut node = None;
        let mut resource = None;
        let mut source_ip = None;
        let mut outcome = Outcome::Success;
        let mut context_json = Cow::Borrowed("{}");
        loop {
            let (key, end) = context_text::string(text, at)?;
            let field = Field::from_key(&key)?;
            let bit = 1u8 << field as u8;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            at = context_text::skip_whitespace(bytes, end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = context_text::skip_whitespace(bytes, at + 1);
            at = match field {
                Field::Timestamp => {
                    let (value, end) = context_text::string(text, at)?;
                    timestamp = Some(Timestamp::parse_rfc3339(&value).ok()?);
                    end
                }
                Field::Event => {
                    let (value, end) = context_text::string(text, at)?;
                    event_type = Some(value);
                    end
                }
                Field::Actor => {
                    let (value, end) = context_text::string(text, at)?;
                    actor = Some(value);
                    end
                }
                Field::Node => {
                    let (value, end) = string_or_null(text, at)?;
                    node = value;
                    end
                }
                Field::Resource => {
                    let (value, end) = string_or_null(text, at)?;
                    resource = value;
                    end
                }
                Field::Ip => {
                    let (value, end) = string_or_null(text, at)?;
                    source_ip = match value {
                        Some(ip) => Some(ip.parse().ok()?),
                        None => None,
                    };
                    end
                }
                Field::Outcome => {
                    let (value, end) = context_text::string(text, at)?;
                    outcome = value.parse().ok()?;
                    end
                }
                Field::Context => {
                    let (value, end) = context_text::object(text, at)?;
                    context_json = value;
                    end
                }
            };
            at = context_text::skip_whitespace(bytes, at);
            match bytes.get(at)? {
                b',' => at = context_text::skip_whitespace(bytes, at + 1),
                b'}' => break,
                _ => return None,
            }
        }
        let event = EventRef {
            timestamp: timestamp.unwrap_or_else(Timestamp::now),
            event_type: event_type?,
            actor: actor?,
            node,
            resource,
            source_ip,
            outcome,
            context_json,
        };
        Some((event, text.get(at + 1..)?))
    }

    /// The context in its stored form: compact JSON, exactly the bytes the
    /// record holds.
    pub fn context_json(&self) -> &str {
        &self.context_json
    }
}

/// A string, or `null` (as serde reads an `Option<String>`).
fn string_or_null(text: &str, at: usize) -> Option<(Option<Cow<'_, str>>, usize)> {
    if text.as_bytes().get(at..at + 4) == Some(b"null") {
        return Some((None, at + 4));
    }
    context_text::string(text, at).map(|(value, end)| (Some(value), end))
}

impl EncodeRecord for EventRef<'_> {
    /// The checks and layout of [`encode_record`](crate::event::encode_record),
    /// in its order; the tests compare the two byte for byte.
    fn encode_record(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        validate_texts(
            &self.event_type,
            &self.actor,
            self.node.as_deref(),
            self.resource.as_deref(),
        )?;
        let context = self.context_json.as_bytes();
        if context.len() > MAX_CONTEXT_BYTES {
            return Err(EventError::TooLong {
                field: "context",
                len: context.len(),
                max: MAX_CONTEXT_BYTES,
            });
        }
        // Lengths fit in u16: validated well below 65,536 above.
        encode_fields(
            out,
            self.timestamp,
            self.outcome,
            self.source_ip,
            [
                Some(&*self.event_type),
                Some(&*self.actor),
                self.node.as_deref(),
                self.resource.as_deref(),
            ],
        );
        out.extend_from_slice(&(context.len() as u32).to_le_bytes());
        out.extend_from_slice(context);
        Ok(())
    }
}

/// The JSON form as serde reads it: `Event`'s fields and attributes, with
/// the strings borrowed and the context written straight to its stored form.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(default = "Timestamp::now")]
    timestamp: Timestamp,
    #[serde(rename = "event", borrow)]
    event_type: Text<'a>,
    #[serde(borrow)]
    actor: Text<'a>,
    #[serde(default, borrow)]
    node: Option<Text<'a>>,
    #[serde(default, borrow)]
    resource: Option<Text<'a>>,
    #[serde(rename = "ip", default)]
    source_ip: Option<IpAddr>,
    #[serde(default)]
    outcome: Outcome,
    #[serde(default)]
    context: StoredContext,
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl<'de> serde::de::Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The context's stored form, written while serde reads it.
struct StoredContext(String);

impl Default for StoredContext {
    fn default() -> Self {
        StoredContext("{}".to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for StoredContext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::with_capacity(256);
        d.deserialize_map(Stored { out: &mut out })?;
        // Only whole strings and ASCII punctuation were written.
        String::from_utf8(out)
            .map(StoredContext)
            .map_err(serde::de::Error::custom)
    }
}

/// Writes the value serde reads as [`crate::context_json`] writes the
/// `Value` serde_json would build from it.
struct Stored<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Stored<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Stored<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.number(serde_json::Number::from(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.number(serde_json::Number::from(v));
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json's Value turns a non-finite float into null.
        match serde_json::Number::from_f64(v) {
            Some(n) => self.number(n),
            None => self.out.extend_from_slice(b"null"),
        }
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        crate::event::context_json::write_str(v, self.out);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let before = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(Stored { out: self.out })?.is_none() {
                self.out.truncate(before);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // serde_json's map keeps a repeated key's first place with its
            // last value, and its Value reads these keys specially: both
            // are left to the owned path.
            if key.starts_with(SERDE_PRIVATE_KEY) || !keys.insert(key.clone()) {
                return Err(serde::de::Error::custom(DECLINED));
            }
            if keys.len > 1 {
                self.out.push(b',');
            }
            crate::event::context_json::write_str(&key, self.out);
            self.out.push(b':');
            map.next_value_seed(Stored { out: self.out })?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

impl Stored<'_> {
    fn number(self, n: serde_json::Number) {
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(self.out, format_args!("{n}"));
    }
}

/// Keys serde_json's `Value` treats specially start with this.
const SERDE_PRIVATE_KEY: &str = "$serde_json::private::";
/// The error that sends a text to the owned path.
const DECLINED: &str = "left to the owned path";

struct KeySeed;

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// One object's keys so far, to find a repeat: a list while short, then a
/// set (so a context of many keys costs no quadratic time).
#[derive(Default)]
struct Keys<'a> {
    few: Vec<Cow<'a, str>>,
    many: std::collections::HashSet<Cow<'a, str>>,
    len: usize,
}

impl<'a> Keys<'a> {
    /// Adds `key`; false if the object already has it.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        const FEW: usize = 16;
        let new = if self.len < FEW {
            if self.few.contains(&key) {
                false
            } else {
                self.few.push(key);
                true
            }
        } else {
            if self.many.is_empty() {
                self.many.extend(self.few.drain(..));
            }
            self.many.insert(key)
        };
        self.len += usize::from(new);
        new
    }
}

impl<'de> serde::Deserialize<'de> for EventRef<'de> {
    /// Reads `Event`'s JSON form with any serde format; a context with a
    /// repeated key or a `$serde_json::private::` key is refused (the owned
    /// `Event` takes those).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = <Wire<'de> as serde::Deserialize>::deserialize(d)?;
        Ok(EventRef {
            timestamp: wire.timestamp,
            event_type: wire.event_type.0,
            actor: wire.actor.0,
            node: wire.node.map(|t| t.0),
            resource: wire.resource.map(|t| t.0),
            source_ip: wire.source_ip,
            outcome: wire.outcome,
            context_json: Cow::Owned(wire.context.0),
        })
    }
}

impl<'a> EventRef<'a> {
    /// One event object filling `text` (JSON whitespace around it allowed),
    /// read with serde_json; `None` when serde_json refuses it or the
    /// context is one the owned path must read (see `Deserialize`).
    pub fn from_json(text: &'a str) -> Option<EventRef<'a>> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
pub(crate) mod cases;

#[cfg(test)]
mod tests {
    use super::cases::{any_event, encoded, parse_both_and_compare};
    use super::*;
    use crate::event::{encode_record, Event};
    use crate::limits::MAX_ACTOR_BYTES;
    use proptest::prelude::*;

    /// The load test's event (tests/server_load.rs).
    const USUAL: &str = r#"{"event":"pcap.download","actor":"client-3@acme.io","node":"nyc-edge-03","resource":"a3f7c2b1","ip":"203.0.113.42","context":{"bytes":18231,"sha256":"83f8b0b56c68b3fc8e9e828fc949537eeed70063e4b76477affd9554f38768cd","i":7}}"#;

    fn taken(text: &str) -> EventRef<'_> {
        assert!(parse_both_and_compare(text), "declined: {text}");
        let (event, rest) = EventRef::parse_json_prefix(text).unwrap();
        assert!(rest.trim().is_empty());
        event
    }

    fn declined(text: &str) {
        assert_eq!(EventRef::parse_json_prefix(text), None, "{text}");
    }

    #[test]
    fn the_usual_event_borrows_everything() {
        let event = taken(USUAL);
        for text in [&event.event_type, &event.actor] {
            assert!(matches!(text, Cow::Borrowed(_)));
        }
        assert!(matches!(event.node, Some(Cow::Borrowed("nyc-edge-03"))));
        assert!(matches!(event.context_json, Cow::Borrowed(_)));
        assert_eq!(
            event.context_json(),
            &USUAL[USUAL.find("{\"bytes").unwrap()..USUAL.len() - 1]
        );
    }

    #[test]
    fn fields_in_any_order_spacing_and_spelling() {
        let event = taken(
            " {\n \"context\" : { \"b\" : [ 1 , 2.50 ] } ,\t\"\\u0061ctor\":\"caf\\u00e9\",\r\n\"event\":\"a.b\", \"node\": null, \"resource\":\"\\/api\\/v1\", \"ip\":\"2001:db8::1\", \"outcome\":\"fail\\u0075re\", \"timestamp\":\"2026-03-09T10:52:14.5+01:00\" } ",
        );
        assert_eq!(event.actor, "café");
        assert_eq!(event.resource.as_deref(), Some("/api/v1"));
        assert_eq!(event.node, None);
        assert_eq!(event.outcome, Outcome::Failure);
        assert_eq!(event.context_json(), r#"{"b":[1,2.5]}"#);
        assert_eq!(event.timestamp.to_string(), "2026-03-09T09:52:14.5Z");
        let event = taken(r#"{"event":"a.b","actor":"\ud83d\ude42 \uD83D\uDE42","context":{}}"#);
        assert_eq!(event.actor, "🙂 🙂");
        // Absent fields take serde's defaults; `null` is absent for the
        // optional strings and the address.
        let event = taken(r#"{"event":"a.b","actor":"x","ip":null,"resource":null}"#);
        assert_eq!((event.source_ip, event.outcome), (None, Outcome::Success));
        assert_eq!(event.context_json(), "{}");
    }

    #[test]
    fn what_serde_refuses_is_declined() {
        for text in [
            r#"{}"#,
            r#"{"event":"a.b"}"#,
            r#"{"event":"a.b","actor":"x","colour":"red"}"#,
            r#"{"event":"a.b","actor":"x","actor":"y"}"#,
            r#"{"event":"a.b","actor":"x","\u0061ctor":"y"}"#,
            r#"{"event":"a.b","actor":5}"#,
            r#"{"event":"a.b","actor":null}"#,
            r#"{"event":"a.b","actor":"x","timestamp":null}"#,
            r#"{"event":"a.b","actor":"x","timestamp":"yesterday"}"#,
            r#"{"event":"a.b","actor":"x","ip":"999.1.1.1"}"#,
            r#"{"event":"a.b","actor":"x","ip":""}"#,
            r#"{"event":"a.b","actor":"x","outcome":"Success"}"#,
            r#"{"event":"a.b","actor":"x","outcome":null}"#,
            r#"{"event":"a.b","actor":"x","context":null}"#,
            r#"{"event":"a.b","actor":"x","context":[]}"#,
            r#"{"event":"a.b","actor":"x","context":{"a":1,}}"#,
            r#"{"event":"a.b","actor":"x",}"#,
            r#"{"event":"a.b","actor":"x""#,
            r#"{"event":"a.b","actor":"\ud800"}"#,
            r#"{"event":"a.b","actor":"x","node":nul}"#,
            r#"{"event":"a.b","actor":"x","node":nullx}"#,
            "{\"event\":\"a.b\",\"actor\":\"raw\u{1}\"}",
            "\u{c}{\"event\":\"a.b\",\"actor\":\"x\"}",
            r#"["2026-03-09T09:52:14Z"]"#,
        ] {
            assert!(
                serde_json::from_str::<Event>(text).is_err(),
                "serde took {text}"
            );
            declined(text);
        }
    }

    #[test]
    fn what_serde_takes_in_other_forms_is_declined() {
        for text in [
            // The outcome as a map, the event as an array (short ones
            // take the defaults).
            r#"{"event":"a.b","actor":"x","outcome":{"failure":null}}"#,
            r#"["2026-03-09T09:52:14Z","a.b","x"]"#,
            r#"["2026-03-09T09:52:14Z","a.b","x","n","r","10.0.0.1","success",{}]"#,
            // Contexts with duplicate keys, deep nesting, serde_json's own keys.
            r#"{"event":"a.b","actor":"x","context":{"a":1,"a":2}}"#,
            r#"{"event":"a.b","actor":"x","context":{"x":{"$serde_json::private::RawValue":"[1]"}}}"#,
        ] {
            assert!(
                serde_json::from_str::<Event>(text).is_ok(),
                "serde refused {text}"
            );
            declined(text);
        }
        let deep = format!(
            r#"{{"event":"a.b","actor":"x","context":{{"a":{}1{}}}}}"#,
            "[".repeat(64),
            "]".repeat(64)
        );
        assert!(serde_json::from_str::<Event>(&deep).is_ok());
        declined(&deep);
    }

    #[test]
    fn invalid_events_fail_with_the_same_errors() {
        let long = "x".repeat(MAX_ACTOR_BYTES + 1);
        let blob = "y".repeat(MAX_CONTEXT_BYTES);
        for (text, expected) in [
            (
                r#"{"event":"Pcap.download","actor":"x"}"#.to_string(),
                EventError::BadEventType("Pcap.download".into()),
            ),
            (
                format!(r#"{{"event":"a.b","actor":"{long}"}}"#),
                EventError::TooLong {
                    field: "actor",
                    len: MAX_ACTOR_BYTES + 1,
                    max: MAX_ACTOR_BYTES,
                },
            ),
            (
                r#"{"event":"a.b","actor":""}"#.to_string(),
                EventError::Empty("actor"),
            ),
            (
                r#"{"event":"a.b","actor":"x","resource":""}"#.to_string(),
                EventError::Empty("resource"),
            ),
            (
                r#"{"event":"a.b","actor":"x","node":"a\nb"}"#.to_string(),
                EventError::ControlCharacter("node"),
            ),
            (
                format!(r#"{{"event":"a.b","actor":"x","context":{{"blob":"{blob}"}}}}"#),
                EventError::TooLong {
                    field: "context",
                    len: MAX_CONTEXT_BYTES + 11,
                    max: MAX_CONTEXT_BYTES,
                },
            ),
            (
                // Checked in encode_record's order: fields before the context.
                format!(r#"{{"event":"a.b","actor":"","context":{{"blob":"{blob}"}}}}"#),
                EventError::Empty("actor"),
            ),
        ] {
            let event = taken(&text);
            assert_eq!(encoded(|out| event.encode_record(out)), Err(expected));
        }
    }

    #[test]
    fn a_context_at_the_limit_is_stored() {
        let blob = "y".repeat(MAX_CONTEXT_BYTES - 11);
        let text = format!(r#"{{"event":"a.b","actor":"x","context":{{ "blob" : "{blob}" }}}}"#);
        let event = taken(&text);
        assert_eq!(event.context_json().len(), MAX_CONTEXT_BYTES);
        let mut out = Vec::new();
        event.encode_record(&mut out).unwrap();
        let mut owned = serde_json::from_str::<Event>(&format!(
            r#"{{"event":"a.b","actor":"x","context":{{"blob":"{blob}"}}}}"#
        ))
        .unwrap();
        owned.timestamp = event.timestamp;
        let mut expected = Vec::new();
        encode_record(&owned, &mut expected).unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn the_rest_after_the_object_is_returned() {
        let text = format!("  {USUAL} ,{USUAL}]");
        let (_, rest) = EventRef::parse_json_prefix(&text).unwrap();
        assert_eq!(rest, format!(" ,{USUAL}]"));
    }

    /// `EventRef::from_json` against the owned `Event`: whatever it takes
    /// encodes as the owned event does (bytes or error).
    fn serde_reader_agrees(text: &str) -> bool {
        let before = Timestamp::now();
        let owned = serde_json::from_str::<Event>(text);
        let borrowed = EventRef::from_json(text);
        let after = Timestamp::now();
        let Some(mut borrowed) = borrowed else {
            return false;
        };
        let owned =
            owned.unwrap_or_else(|e| panic!("from_json took what Event refuses ({e}): {text:?}"));
        let now = before..=after;
        if now.contains(&owned.timestamp) && now.contains(&borrowed.timestamp) {
            borrowed.timestamp = owned.timestamp;
        }
        assert_eq!(
            encoded(|out| borrowed.encode_record(out)),
            encoded(|out| encode_record(&owned, out)),
            "{text:?}"
        );
        true
    }

    #[test]
    fn the_serde_reader_declines_repeated_and_private_context_keys() {
        assert!(serde_reader_agrees(USUAL));
        for text in [
            r#"{"event":"a.b","actor":"x","context":{"a":1,"a":2}}"#,
            r#"{"event":"a.b","actor":"x","context":{"x":{"$serde_json::private::RawValue":"[1]"}}}"#,
        ] {
            assert!(serde_json::from_str::<Event>(text).is_ok());
            assert_eq!(EventRef::from_json(text), None, "{text}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!(
            r#"{{"event":"a.b","actor":"x","context":{{{}}}}}"#,
            many.join(",")
        );
        assert!(serde_reader_agrees(&text));
        let dup = format!(
            r#"{{"event":"a.b","actor":"x","context":{{{},"k3":0}}}}"#,
            many.join(",")
        );
        assert_eq!(EventRef::from_json(&dup), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn the_serde_reader_agrees_with_event(case in any_event()) {
            let took = serde_reader_agrees(&case.text);
            if serde_json::from_str::<Event>(&case.text).is_ok() && case.takeable {
                prop_assert!(took, "{:?}", case.text);
            }
        }

        #[test]
        fn the_borrowed_parser_agrees_with_serde(case in any_event()) {
            let serde_took = serde_json::from_str::<Event>(&case.text).is_ok();
            let took = parse_both_and_compare(&case.text);
            prop_assert_eq!(took, serde_took && case.takeable, "{:?}", case.text);
        }
    }
}
