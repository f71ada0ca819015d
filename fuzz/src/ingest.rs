//! The `ingest` target: arbitrary text through the borrowed event reader
//! the HTTP server and `chainlog append` use (`EventRef::from_json`, serde_json
//! into borrowed fields, the context written to its stored form as it is
//! read) and through serde's `Event`, the owned path.
//!
//! Whenever the borrowed reader takes a text, serde_json must take it as an
//! `Event` too, and the two events must encode to the same record bytes, or
//! fail with the same error. When it declines, serde_json must refuse the
//! text or the context must hold what the reader leaves to the owned path
//! (a repeated key in one object, a `$serde_json::private::` key).

use std::collections::HashSet;

use chainlog::event::EventRef;
use chainlog::event::{encode_record, EventError};
use chainlog::{EncodeRecord, Event, Timestamp};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Compares the two paths on `data`, when it is UTF-8 (the server checks a
/// body for that before parsing).
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        compare(text);
    }
}

fn encoded(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EventError>,
) -> Result<Vec<u8>, EventError> {
    let mut out = vec![0xa5];
    match encode(&mut out) {
        Ok(()) => Ok(out),
        Err(e) => {
            assert_eq!(out, [0xa5], "a refused event left bytes behind");
            Err(e)
        }
    }
}

/// Parses `text` both ways and compares; returns whether the borrowed
/// reader took it.
pub fn compare(text: &str) -> bool {
    let before = Timestamp::now();
    let owned = serde_json::from_str::<Event>(text);
    let borrowed = EventRef::from_json(text);
    let after = Timestamp::now();
    let Some(mut borrowed) = borrowed else {
        if owned.is_ok() {
            assert!(
                has_declined_keys(text),
                "the borrowed reader declined what serde_json takes: {text:?}"
            );
        }
        return false;
    };
    let owned = match owned {
        Ok(owned) => owned,
        Err(e) => panic!("the borrowed reader took what serde_json refuses ({e}): {text:?}"),
    };
    // Both "now" when the text has no timestamp.
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

/// Whether the context in `text` is one the borrowed reader leaves to the
/// owned path: a key repeated within one of its objects, or a key starting
/// `$serde_json::private::` (read with serde_json keeping the keys as
/// written: the parsed map has lost the repeats, and serde_json's `Value`
/// may have consumed the private keys).
fn has_declined_keys(text: &str) -> bool {
    // The event as an array has no keys to count: the fuzzer then only
    // checks what the reader takes.
    serde_json::from_str::<ContextRepeats>(text).map_or(true, |r| r.0)
}

/// Whether the `context` member of an event object has a declined key
/// (see [`has_declined_keys`]).
struct ContextRepeats(bool);

impl<'de> Deserialize<'de> for ContextRepeats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut repeats = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "context" {
                        repeats |= map.next_value::<Repeats>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(repeats)
            }
        }
        d.deserialize_map(Members).map(ContextRepeats)
    }
}

/// Whether a JSON value has an object with a key twice, or a key starting
/// `$serde_json::private::`.
struct Repeats(bool);

impl<'de> Deserialize<'de> for Repeats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
                let mut repeats = false;
                while let Some(Repeats(r)) = seq.next_element()? {
                    repeats |= r;
                }
                Ok(repeats)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut keys = HashSet::new();
                let mut repeats = false;
                while let Some(key) = map.next_key::<String>()? {
                    repeats |= key.starts_with("$serde_json::private::") || !keys.insert(key);
                    repeats |= map.next_value::<Repeats>()?.0;
                }
                Ok(repeats)
            }
        }
        d.deserialize_any(Any).map(Repeats)
    }
}
