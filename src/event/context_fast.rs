//! The fast path of the context rules: one pass that allocates nothing and
//! only ever says "valid".
//!
//! [`accepts`] returns `true` only for text that the full check
//! ([`super::context_rules`]) accepts; `false` means "run the full check",
//! which decides and gives the error. It declines what it cannot decide
//! cheaply: any escape in a string (names are compared as raw bytes, which
//! equals comparing them unescaped only without escapes), nesting deeper
//! than [`FAST_DEPTH`], more than [`FAST_NAMES`] member names open at once,
//! and anything the grammar refuses. The caller has checked UTF-8, so bytes
//! from 0x80 up inside strings are characters.
//!
//! A stored context is usually a small object of plain strings and
//! integers: this path takes it without the `Vec`s and `Cow`s the full
//! check builds.

use super::context_json::find_quote_escape_or_control;
use super::context_rules::{literal, number_end};

/// Deepest nesting taken (the context object is depth 1).
const FAST_DEPTH: usize = 16;
/// Member names of the open objects kept at once.
const FAST_NAMES: usize = 32;

/// Whether `text` (valid UTF-8) certainly passes the context rules.
pub(super) fn accepts(text: &[u8]) -> bool {
    // Open containers, innermost last: for an object, where its names start.
    let mut open = [Open::Array; FAST_DEPTH];
    let mut depth = 0;
    // Member names (start, end) of the open objects. Positions are kept
    // as u32 (the arrays are set up for every record; smaller is cheaper).
    let mut names = [(0u32, 0u32); FAST_NAMES];
    let mut name_count = 0;
    if text.first() != Some(&b'{') || u32::try_from(text.len()).is_err() {
        return false;
    }
    let mut at = 0;
    // `at` is at a value's first byte.
    'value: loop {
        at = match text.get(at) {
            Some(b'{') => {
                if depth == FAST_DEPTH {
                    return false;
                }
                if text.get(at + 1) == Some(&b'}') {
                    at + 2
                } else {
                    open[depth] = Open::Object {
                        names_from: name_count as u8,
                    };
                    depth += 1;
                    match member(text, at + 1, &mut names, &mut name_count) {
                        Some(next) => at = next,
                        None => return false,
                    }
                    continue 'value;
                }
            }
            Some(b'[') => {
                if depth == FAST_DEPTH {
                    return false;
                }
                if text.get(at + 1) == Some(&b']') {
                    at + 2
                } else {
                    open[depth] = Open::Array;
                    depth += 1;
                    at += 1;
                    continue 'value;
                }
            }
            Some(b'"') => match plain_string_end(text, at) {
                Some(end) => end,
                None => return false,
            },
            Some(b'-' | b'0'..=b'9') => match number_end(text, at) {
                Some(end) => end,
                None => return false,
            },
            Some(b't') => match literal(text, at, b"true") {
                Ok(end) => end,
                Err(_) => return false,
            },
            Some(b'f') => match literal(text, at, b"false") {
                Ok(end) => end,
                Err(_) => return false,
            },
            Some(b'n') => match literal(text, at, b"null") {
                Ok(end) => end,
                Err(_) => return false,
            },
            _ => return false,
        };
        // After a value: close containers or go on to the next value.
        loop {
            let Some(inner) = depth.checked_sub(1).map(|d| open[d]) else {
                return at == text.len();
            };
            match (inner, text.get(at)) {
                (Open::Object { .. }, Some(b',')) => {
                    match member(text, at + 1, &mut names, &mut name_count) {
                        Some(next) => at = next,
                        None => return false,
                    }
                    continue 'value;
                }
                (Open::Array, Some(b',')) => {
                    at += 1;
                    continue 'value;
                }
                (Open::Object { names_from }, Some(b'}')) => {
                    let names_from = usize::from(names_from);
                    if has_duplicate(text, &names[names_from..name_count]) {
                        return false;
                    }
                    name_count = names_from;
                    depth -= 1;
                }
                (Open::Array, Some(b']')) => depth -= 1,
                _ => return false,
            }
            at += 1;
        }
    }
}

/// An open container; an object with where its names start in `names`
/// (at most [`FAST_NAMES`], so a `u8`).
#[derive(Clone, Copy)]
enum Open {
    Object { names_from: u8 },
    Array,
}

/// Reads `"name":` at `at` (a name without escapes), recording the name;
/// the position of the member's value.
fn member(
    text: &[u8],
    at: usize,
    names: &mut [(u32, u32); FAST_NAMES],
    name_count: &mut usize,
) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let end = plain_string_end(text, at)?;
    if text.get(end) != Some(&b':') {
        return None;
    }
    let slot = names.get_mut(*name_count)?;
    // `accepts` declines text longer than u32::MAX.
    *slot = ((at + 1) as u32, (end - 1) as u32);
    *name_count += 1;
    Some(end + 1)
}

/// The position after the string whose opening quote is at `at`, when it
/// has neither an escape nor a control character.
fn plain_string_end(text: &[u8], at: usize) -> Option<usize> {
    let body = at + 1;
    let i = body + find_quote_escape_or_control(text.get(body..)?)?;
    (text[i] == b'"').then_some(i + 1)
}

/// Whether two of the names (byte ranges of `text`) are equal.
fn has_duplicate(text: &[u8], names: &[(u32, u32)]) -> bool {
    let name = |&(from, to): &(u32, u32)| &text[from as usize..to as usize];
    names
        .iter()
        .enumerate()
        .any(|(i, a)| names[i + 1..].iter().any(|b| name(a) == name(b)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::event::any_json::{any_json, Shape};
    use serde_json::{Map, Value};

    use super::accepts;
    use crate::event::context_rules::{check_context, full_check};

    /// What the fast path says, checked against the full check: it never
    /// accepts what the full check refuses.
    fn agree(text: &[u8]) -> bool {
        let fast = std::str::from_utf8(text).is_ok() && accepts(text);
        let full = std::str::from_utf8(text).is_ok() && full_check(text).is_ok();
        assert!(
            !fast || full,
            "fast path accepts what the full check refuses: {:?}",
            String::from_utf8_lossy(text)
        );
        // The public check is the full check's answer either way.
        assert_eq!(check_context(text).is_ok(), full, "{text:?}");
        fast
    }

    #[test]
    fn usual_contexts_take_the_fast_path() {
        for text in [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"sha256":"ab12","bytes":18231,"peak":1.5e3,"ok":true,"x":null,"l":[1,[],{}]}"#,
            r#"{"a":{"a":{"a":[-0,0.5,-9223372036854775808,18446744073709551615]}}}"#,
            "{\"caf\u{e9}\":\"\u{2603}\"}",
        ] {
            assert!(agree(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn the_fast_path_declines_what_it_does_not_decide() {
        for text in [
            // Refused by the rules.
            r#"{"a":1,"a":2}"#,
            r#"{"a":1 }"#,
            r#"{"a":01}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":tru}"#,
            r#"{"a":1}x"#,
            "{\"a\":\"\u{1}\"}",
            r#"[1]"#,
            // Valid, but beyond the fast path: escapes, depth, many names.
            r#"{"a":"\n"}"#,
            r#"{"\u0061":1,"a":2}"#,
        ] {
            assert!(!agree(text.as_bytes()), "{text}");
        }
        let deep = format!(
            "{}{}",
            r#"{"a":"#.repeat(17),
            "1".to_string() + &"}".repeat(17)
        );
        assert!(full_check(deep.as_bytes()).is_ok());
        assert!(!agree(deep.as_bytes()));
        let many: Vec<String> = (0..33).map(|i| format!("\"k{i}\":{i}")).collect();
        let many = format!("{{{}}}", many.join(","));
        assert!(!agree(many.as_bytes()));
        let some: Vec<String> = (0..32).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(agree(format!("{{{}}}", some.join(",")).as_bytes()));
    }

    /// Integers of every length up to 22 digits, either sign, are judged
    /// by their value, on both paths.
    #[test]
    fn integers_of_every_length_are_judged_by_their_value() {
        let mut cases: Vec<String> = Vec::new();
        for len in 1..=22 {
            cases.push(format!("1{}", "0".repeat(len - 1)));
            cases.push("9".repeat(len));
        }
        for v in [1u128 << 63, (1 << 63) + 1, (1 << 64) - 1, 1 << 64] {
            cases.push(v.to_string());
        }
        for digits in cases {
            let v: u128 = digits.parse().unwrap();
            for negative in [false, true] {
                let text = format!("{{\"n\":{}{digits}}}", if negative { "-" } else { "" });
                let in_range = if negative { v <= 1 << 63 } else { v < 1 << 64 };
                assert_eq!(full_check(text.as_bytes()).is_ok(), in_range, "{text}");
                assert_eq!(agree(text.as_bytes()), in_range, "{text}");
            }
        }
    }

    fn any_value() -> impl Strategy<Value = Value> {
        any_json(Shape {
            strings: ["[a-c\u{e9}]{0,4}", ".{0,6}"],
            keys: "[a-c]{0,2}",
            width: 4,
            size: 32,
        })
    }

    fn context_text() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(("[a-c\"\\\\]{0,2}", any_value()), 0..5).prop_map(|entries| {
            let map: Map<String, Value> = entries.into_iter().collect();
            serde_json::to_vec(&map).unwrap_or_default()
        })
    }

    /// One edit of a valid context: a byte changed, inserted or removed, or
    /// a stretch repeated (which makes duplicate names and deeper nests).
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            context_text(),
            0..4u8,
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                Just(b','),
                Just(b':'),
                Just(b'{'),
                Just(b'}'),
                Just(b'['),
                Just(b']'),
                Just(b' '),
                Just(b'0'),
                Just(b'-'),
                Just(b'e'),
                Just(b'.'),
                Just(0x01),
                Just(0xc3),
                any::<u8>(),
            ],
        )
            .prop_map(|(mut text, edit, i, j, byte)| {
                if text.is_empty() {
                    return text;
                }
                let at = i.index(text.len());
                match edit {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    2 => {
                        text.remove(at);
                    }
                    _ => {
                        let to = at + j.index(text.len() - at + 1);
                        let stretch = text[at..to].to_vec();
                        text.splice(to..to, stretch);
                    }
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Valid contexts of plain strings, small and shallow, take the
        /// fast path; and it agrees with the full check on them.
        #[test]
        fn fast_path_takes_plain_valid_contexts(text in context_text()) {
            let fast = agree(&text);
            prop_assert!(full_check(&text).is_ok());
            if !text.contains(&b'\\') {
                prop_assert!(fast, "{}", String::from_utf8_lossy(&text));
            }
        }

        /// On edited contexts (valid or not), the fast path never accepts
        /// what the full check refuses.
        #[test]
        fn fast_path_agrees_with_the_full_check_on_mutations(text in mutated()) {
            agree(&text);
        }

        /// And on arbitrary bytes in JSON's alphabet.
        #[test]
        fn fast_path_agrees_with_the_full_check_on_random_text(
            text in r#"\{[{}\[\]",:a0-9.eE+\-tfrulnsx\\ ]{0,40}"#
        ) {
            agree(text.as_bytes());
        }
    }
}
