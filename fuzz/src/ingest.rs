//! The `ingest` target: arbitrary text through the borrowed event parser
//! the HTTP server appends with (`chainlog::event`) and through serde's
//! `Event`, the owned path.
//!
//! Whenever the borrowed parser takes a text, serde_json must take it too,
//! and the two events must encode to the same record bytes, or fail with
//! the same error. (When it declines, the server reads the body the owned
//! way: nothing to compare.)

use chainlog::event::EventRef;
use chainlog::event::{encode_record, EventError};
use chainlog::{EncodeRecord, Event, Timestamp};

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
/// parser took it.
pub fn compare(text: &str) -> bool {
    let before = Timestamp::now();
    let owned = serde_json::from_str::<Event>(text);
    let borrowed = EventRef::parse_json_prefix(text).filter(|(_, rest)| {
        rest.bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    });
    let after = Timestamp::now();
    let Some((mut borrowed, _)) = borrowed else {
        return false;
    };
    let owned = match owned {
        Ok(owned) => owned,
        Err(e) => panic!("the borrowed parser took what serde_json refuses ({e}): {text:?}"),
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
