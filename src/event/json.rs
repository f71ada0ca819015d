//! An event read from its JSON form without building an owned [`Event`](crate::Event):
//! strings borrowed from the text, the context written to its stored form
//! while it is read.
//!
//! [`EventRef`] implements serde's `Deserialize` for the JSON form `Event`
//! derives (`timestamp`, `event`, `actor`, `node`, `resource`, `ip`,
//! `outcome`, `context`), and its [`EncodeRecord`] writes exactly the record
//! bytes [`encode_record`](crate::event::encode_record) writes for the
//! `Event` serde_json parses from the same text, with the same validation
//! and errors. `chainlog append` and the HTTP server read events this way.
//!
//! It takes what `Event` takes except two kinds of context, which it
//! declines: an object with a repeated key (serde_json's ordered map keeps
//! the first key's place with the last value) and a key starting
//! `$serde_json::private::` (serde_json's `Value` reads those specially).
//! So when [`EventRef::from_json`] returns `None`, parse the text as an
//! [`Event`](crate::Event) with serde_json, which either takes it or says
//! what is wrong: a caller gets serde_json's answers, only faster for the
//! common case.
//!
//! Why serde_json and not a hand-written reader or simd-json: measured end
//! to end in `docs/PERFORMANCE.md` ("Hand-written JSON and CSV vs libraries").
//!
//! ```
//! use chainlog::event::encode_record;
//! use chainlog::event::EventRef;
//! use chainlog::{EncodeRecord, Event};
//!
//! let text = r#"{"timestamp":"2026-03-09T09:52:14Z","event":"pcap.download",
//!   "actor":"alice@acme.io","ip":"203.0.113.42","context":{"bytes": 18231}}"#;
//! let event = EventRef::from_json(text).expect("the usual form");
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
    /// serde_json read a number of the context as an `f64`.
    float_read: bool,
}

impl<'a> EventRef<'a> {
    /// One event object filling `text` (JSON whitespace around it allowed),
    /// read with serde_json; `None` when serde_json refuses it or the
    /// context is one the owned path must read (see `Deserialize`).
    pub fn from_json(text: &'a str) -> Option<EventRef<'a>> {
        serde_json::from_str(text).ok()
    }

    /// The context in its stored form: compact JSON, exactly the bytes the
    /// record holds.
    pub fn context_json(&self) -> &str {
        &self.context_json
    }

    /// Whether serde_json read a number of the context as a 64-bit float:
    /// one with a fraction or an exponent, `-0`, or an integer beyond 64
    /// bits. Only such a number can be stored as another number than the
    /// one sent, so when this is false the text passes
    /// [`check_numbers`](crate::event::input::check_numbers) and a reader
    /// need not run it (a number outside the context is refused by serde).
    pub fn float_read(&self) -> bool {
        self.float_read
    }
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

/// The context's stored form, written while serde reads it, and whether a
/// number of it was read as an `f64`.
struct StoredContext {
    json: String,
    float_read: bool,
}

impl Default for StoredContext {
    fn default() -> Self {
        StoredContext {
            json: "{}".to_owned(),
            float_read: false,
        }
    }
}

impl<'de> serde::Deserialize<'de> for StoredContext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::with_capacity(256);
        let mut float_read = false;
        d.deserialize_map(Stored {
            out: &mut out,
            float_read: &mut float_read,
        })?;
        // Only whole strings and ASCII punctuation were written.
        let json = String::from_utf8(out).map_err(serde::de::Error::custom)?;
        Ok(StoredContext { json, float_read })
    }
}

/// Writes the value serde reads as [`crate::context_json`] writes the
/// `Value` serde_json would build from it; notes any number read as `f64`.
struct Stored<'o> {
    out: &'o mut Vec<u8>,
    float_read: &'o mut bool,
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
        *self.float_read = true;
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
            let element = Stored {
                out: &mut *self.out,
                float_read: &mut *self.float_read,
            };
            if seq.next_element_seed(element)?.is_none() {
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
            map.next_value_seed(Stored {
                out: &mut *self.out,
                float_read: &mut *self.float_read,
            })?;
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
    /// Reads `Event`'s JSON form (an object, as `Event` reads it) with any
    /// serde format; a context with a repeated key or a
    /// `$serde_json::private::` key is refused (the owned `Event` takes
    /// those).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = <Wire<'de> as serde::Deserialize>::deserialize(super::input::ObjectOnly(d))?;
        Ok(EventRef {
            timestamp: wire.timestamp,
            event_type: wire.event_type.0,
            actor: wire.actor.0,
            node: wire.node.map(|t| t.0),
            resource: wire.resource.map(|t| t.0),
            source_ip: wire.source_ip,
            outcome: wire.outcome,
            context_json: Cow::Owned(wire.context.json),
            float_read: wire.context.float_read,
        })
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
        EventRef::from_json(text).unwrap()
    }

    fn declined(text: &str) {
        assert_eq!(EventRef::from_json(text), None, "{text}");
    }

    #[test]
    fn the_usual_event_borrows_its_strings() {
        let event = taken(USUAL);
        for text in [&event.event_type, &event.actor] {
            assert!(matches!(text, Cow::Borrowed(_)));
        }
        assert!(matches!(event.node, Some(Cow::Borrowed("nyc-edge-03"))));
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
        // Numbers and escapes in the context are stored as serde_json
        // writes the Value it reads.
        let event = taken(
            r#"{"event":"a.b","actor":"x","context":{"n":[1E+2,-0,1.50,-7,18446744073709551615],"s":"\u00e9\/\u0001"}}"#,
        );
        assert_eq!(
            event.context_json(),
            r#"{"n":[100.0,-0.0,1.5,-7,18446744073709551615],"s":"é/\u0001"}"#
        );
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
            r#"{"event":"a.b","actor":"x","context":{"a":1e999}}"#,
            r#"{"event":"a.b","actor":"x",}"#,
            r#"{"event":"a.b","actor":"x""#,
            r#"{"event":"a.b","actor":"\ud800"}"#,
            r#"{"event":"a.b","actor":"x","node":nul}"#,
            r#"{"event":"a.b","actor":"x","node":nullx}"#,
            r#"{"event":"a.b","actor":"x"} x"#,
            r#"{"event":"a.b","actor":"x"}{}"#,
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
    fn what_serde_takes_in_other_forms_is_taken() {
        // The outcome as a map.
        taken(r#"{"event":"a.b","actor":"x","outcome":{"failure":null}}"#);
        // An event is an object: serde's positional form of a struct is
        // refused by both (issue 15, finding 13).
        for text in [
            r#"["2026-03-09T09:52:14Z","a.b","x"]"#,
            r#"["2026-03-09T09:52:14Z","a.b","x","n","r","10.0.0.1","success",{}]"#,
        ] {
            let owned = serde_json::from_str::<Event>(text).unwrap_err().to_string();
            assert!(owned.contains("an event as a JSON object"), "{owned}");
            declined(text);
        }
        let deep = format!(
            r#"{{"event":"a.b","actor":"x","context":{{"a":{}1{}}}}}"#,
            "[".repeat(120),
            "]".repeat(120)
        );
        taken(&deep);
        // serde_json's recursion limit holds for both.
        let deeper = deep.replace("[1]", "[[[[[[[[[[1]]]]]]]]]]");
        assert!(serde_json::from_str::<Event>(&deeper).is_err());
        declined(&deeper);
    }

    #[test]
    fn repeated_and_private_context_keys_are_left_to_event() {
        for text in [
            r#"{"event":"a.b","actor":"x","context":{"a":1,"a":2}}"#,
            r#"{"event":"a.b","actor":"x","context":{"a":{"b":1,"c":[{"d":1,"\u0064":2}]}}}"#,
            r#"{"event":"a.b","actor":"x","context":{"x":{"$serde_json::private::RawValue":"[1]"}}}"#,
        ] {
            assert!(serde_json::from_str::<Event>(text).is_ok(), "{text}");
            declined(text);
        }
        // Past the short list of keys, a repeat is still found.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!(
            r#"{{"event":"a.b","actor":"x","context":{{{}}}}}"#,
            many.join(",")
        );
        taken(&text);
        let dup = format!(
            r#"{{"event":"a.b","actor":"x","context":{{{},"k3":0}}}}"#,
            many.join(",")
        );
        declined(&dup);
        // The same key in two objects is no repeat.
        taken(r#"{"event":"a.b","actor":"x","context":{"a":{"a":1},"b":{"a":2}}}"#);
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
    fn numbers_read_as_floats_are_noted() {
        for (context, float) in [
            (r#"{}"#, false),
            (
                r#"{"a":[1,-7,18446744073709551615,-9223372036854775808],"s":"1.5"}"#,
                false,
            ),
            (r#"{"a":{"b":[1.5]}}"#, true),
            (r#"{"a":-0}"#, true),
            (r#"{"a":1e2}"#, true),
            (r#"{"a":18446744073709551616}"#, true),
            (r#"{"a":-9223372036854775809}"#, true),
        ] {
            let text = format!(r#"{{"event":"a.b","actor":"x","context":{context}}}"#);
            assert_eq!(taken(&text).float_read(), float, "{context}");
        }
        assert!(!taken(r#"{"event":"a.b","actor":"x"}"#).float_read());
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn the_borrowed_reader_agrees_with_event(case in any_event()) {
            let serde_took = serde_json::from_str::<Event>(&case.text).is_ok();
            let took = parse_both_and_compare(&case.text);
            prop_assert_eq!(took, serde_took && case.takeable, "{:?}", case.text);
        }
    }
}
