//! The stored form of an event's context: compact JSON, byte for byte what
//! `serde_json::to_writer` writes for the same map, without going through
//! serde's serializer on the append path.
//!
//! Records made before and after this module must not differ, so the output
//! is defined as serde_json's (keys in map order, no whitespace, numbers as
//! serde_json formats them, strings with only `"`, `\` and control
//! characters escaped, control characters as `\b \t \n \f \r` or `\u00xx`);
//! the tests compare the two on arbitrary values. What is faster here is the
//! common case: a string with nothing to escape is found so eight bytes at a
//! time and copied whole. [`EventRef`](crate::event::EventRef)'s reader
//! writes a context through [`write_str`] and `Number`'s `Display` as it
//! reads it, so both paths store the same bytes.

use serde_json::{Map, Value};

/// Appends the compact JSON of `context` to `out`.
pub fn write_object(context: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, value)) in context.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(key, out);
        out.push(b':');
        write_value(value, out);
    }
    out.push(b'}');
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's Display of a number is its serializer's output
        // (itoa for integers, ryu for floats).
        Value::Number(n) => {
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Whether JSON needs `b` escaped.
fn is_escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first `"`, `\` or control character in `bytes` (the
/// first byte JSON needs escaped), eight bytes at a time. In each word test
/// the lowest flagged byte is exact (a false flag needs a borrow from a
/// flagged byte below it), so the lowest flag of the three tests is the
/// first such byte.
pub(crate) fn find_quote_escape_or_control(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut words {
        let mut lanes = [0u8; 8];
        lanes.copy_from_slice(chunk);
        let w = u64::from_le_bytes(lanes);
        let flags = (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
            | has_zero(w ^ (ONES * u64::from(b'"')))
            | has_zero(w ^ (ONES * u64::from(b'\\')));
        if flags != 0 {
            return Some(offset + flags.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| is_escaped(b))
        .map(|i| offset + i)
}

/// Appends `text` as a JSON string.
pub(crate) fn write_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    out.push(b'"');
    match find_quote_escape_or_control(bytes) {
        None => out.extend_from_slice(bytes),
        Some(first) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut run = 0;
            for (i, &b) in bytes.iter().enumerate().skip(first) {
                if !is_escaped(b) {
                    continue;
                }
                out.extend_from_slice(&bytes[run..i]);
                run = i + 1;
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x09 => out.extend_from_slice(b"\\t"),
                    0x0a => out.extend_from_slice(b"\\n"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    0x0d => out.extend_from_slice(b"\\r"),
                    _ => out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]),
                }
            }
            out.extend_from_slice(&bytes[run..]);
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::event::any_json::{any_json, Shape};
    use serde_json::json;

    fn ours(map: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        write_object(map, &mut out);
        out
    }

    fn theirs(map: &Map<String, Value>) -> Vec<u8> {
        serde_json::to_vec(map).unwrap()
    }

    #[test]
    fn matches_serde_json_on_the_hard_cases() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        let cases = [
            json!({}),
            json!({"a": null, "b": true, "c": false, "d": [], "e": {}}),
            json!({"quote\"key": "back\\slash", "nl": "a\nb\rc\td\u{8}e\u{c}f"}),
            json!({"controls": every_control, "del": "\u{7f}", "slash": "a/b"}),
            json!({"unicode": "é漢字🙂", "long": "x".repeat(100) + "\"" + &"y".repeat(40)}),
            json!({"ints": [0, -1, i64::MIN, u64::MAX], "floats": [0.5, -1e300, 1.0, 2.718_281_9, 1e-7]}),
            json!({"nested": {"deeper": [{"k": ["v", 1, null]}]}}),
        ];
        for case in cases {
            let map = case.as_object().unwrap();
            assert_eq!(
                String::from_utf8(ours(map)).unwrap(),
                String::from_utf8(theirs(map)).unwrap()
            );
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_byte_that_needs_escaping() {
        for b in 0..=255u8 {
            for len in 1..20 {
                for at in 0..len {
                    // Beside bytes that borrow in the word arithmetic.
                    for filler in [b'a', 0xff, 0x80, b'!'] {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        let expected = bytes.iter().position(|&x| is_escaped(x));
                        assert_eq!(
                            find_quote_escape_or_control(&bytes),
                            expected,
                            "byte {b:#x} at {at} of {len} among {filler:#x}"
                        );
                    }
                }
            }
        }
        // Two of them: the first one counts, whatever borrows above it.
        let mut bytes = vec![b'a'; 16];
        bytes[9] = b'"';
        bytes[3] = 0x1f;
        assert_eq!(find_quote_escape_or_control(&bytes), Some(3));
    }

    fn any_value() -> impl Strategy<Value = Value> {
        any_json(Shape {
            strings: [".*", "[\\x00-\\x7f]{0,40}"],
            keys: ".{0,12}",
            width: 6,
            size: 64,
        })
    }

    proptest! {
        #[test]
        fn matches_serde_json(entries in prop::collection::vec((".{0,12}", any_value()), 0..8)) {
            let map: Map<String, Value> = entries.into_iter().collect();
            prop_assert_eq!(ours(&map), theirs(&map));
        }
    }
}
