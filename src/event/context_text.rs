//! A context given as JSON text, checked and brought to its stored form
//! without building a map: the bytes [`crate::event::context_json::write_object`]
//! writes for the `serde_json::Map` that serde_json (with this crate's
//! `preserve_order` and `float_roundtrip`) parses from the same text.
//!
//! It takes the usual texts and declines the rest: `None` means "parse it
//! with serde_json, which decides", never a verdict of its own. What it
//! declines:
//!
//! - anything serde_json refuses (syntax, raw control characters in
//!   strings, bad escapes, lone surrogates, numbers out of range);
//! - duplicate keys in one object (serde's ordered map keeps the first
//!   key's position with the last value);
//! - nesting deeper than [`MAX_NESTING`] (serde_json's recursion limit is
//!   128 levels, counted from the request's outermost value);
//! - keys starting `$serde_json::private::`, which serde_json's `Value`
//!   reads as a raw value or an exact number when those features are on.
//!
//! Strings without escapes and integers in their plain form are stored as
//! written, so a compact context is kept as the client's own text. A string
//! with escapes, or any other number, is read by serde_json itself (one
//! token, so exactly as it reads it inside a whole event) and written back
//! as the stored form writes it.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::Number;

/// Deepest nesting taken, the context object itself being level 1; far
/// below serde_json's limit even inside an array of events.
pub(crate) const MAX_NESTING: usize = 64;

/// Keys serde_json's `Value` treats specially start with this.
const SERDE_PRIVATE_KEY: &str = "$serde_json::private::";

/// The position after the JSON whitespace at `at`.
pub(crate) fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The index of the first `"`, `\` or control character in `bytes`, eight
/// bytes at a time. In each word test the lowest flagged byte is exact
/// (a false flag needs a borrow from a flagged byte below it), so the
/// lowest flag of the three tests is the first such byte.
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
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|i| offset + i)
}

/// The JSON string whose opening quote is at `at`: its value (borrowed
/// when it has no escapes) and the position after its closing quote.
pub(crate) fn string(text: &str, at: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let body = at + 1;
    let mut i = body + find_quote_escape_or_control(bytes.get(body..)?)?;
    if bytes.get(i) == Some(&b'"') {
        return Some((Cow::Borrowed(text.get(body..i)?), i + 1));
    }
    // Escapes: find the closing quote, then let serde_json unescape the
    // token, so that every escape (surrogate pairs, lone surrogates, bad
    // escapes) reads exactly as it does inside a whole event.
    loop {
        match *bytes.get(i)? {
            b'"' => break,
            b'\\' => i += 2,
            b if b < 0x20 => return None,
            _ => i += 1,
        }
    }
    let value: String = serde_json::from_str(text.get(at..=i)?).ok()?;
    Some((Cow::Owned(value), i + 1))
}

/// The stored form of the JSON object at `at` in `text` (its `{`), and the
/// position after its `}`; borrowed from `text` when `text` already holds
/// exactly that form.
pub(crate) fn object(text: &str, at: usize) -> Option<(Cow<'_, str>, usize)> {
    if text.as_bytes().get(at) != Some(&b'{') {
        return None;
    }
    let mut compactor = Compactor {
        text,
        mark: at,
        out: None,
        scratch: Vec::new(),
    };
    let end = compactor.object(at, 1)?;
    let stored = match compactor.out {
        None => Cow::Borrowed(text.get(at..end)?),
        Some(mut out) => {
            out.extend_from_slice(text.as_bytes().get(compactor.mark..end)?);
            Cow::Owned(String::from_utf8(out).ok()?)
        }
    };
    Some((stored, end))
}

/// Walks one context, checking it and noting where its stored form
/// departs from the text. Until the first departure nothing is copied.
struct Compactor<'a> {
    text: &'a str,
    /// The text from the context's start to `mark` is accounted for:
    /// copied to `out`, or (while `out` is `None`) identical to the stored
    /// form.
    mark: usize,
    /// The stored form up to `mark`, once it differs from the text.
    out: Option<Vec<u8>>,
    /// A token's stored form, when it is not the text's.
    scratch: Vec<u8>,
}

impl<'a> Compactor<'a> {
    /// The stored form has `with` where the text has `text[from..to]`.
    fn replace(&mut self, from: usize, to: usize, with: &[u8]) -> Option<()> {
        let bytes = self.text.as_bytes();
        // While `out` is None, `mark` is still the context's start.
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(bytes.len().min(4096)));
        out.extend_from_slice(bytes.get(self.mark..from)?);
        out.extend_from_slice(with);
        self.mark = to;
        Some(())
    }

    /// Drops the whitespace at `at`; returns the position after it.
    fn whitespace(&mut self, at: usize) -> Option<usize> {
        let end = skip_whitespace(self.text.as_bytes(), at);
        if end > at {
            self.replace(at, end, b"")?;
        }
        Some(end)
    }

    /// Replaces the token at `from..to` by `self.scratch` unless they are
    /// the same bytes.
    fn replace_by_scratch(&mut self, from: usize, to: usize) -> Option<()> {
        if self.text.as_bytes().get(from..to)? == self.scratch.as_slice() {
            return Some(());
        }
        let scratch = std::mem::take(&mut self.scratch);
        let replaced = self.replace(from, to, &scratch);
        self.scratch = scratch;
        replaced
    }

    /// A string token at `at`, with its value; the position after it.
    fn string(&mut self, at: usize) -> Option<(Cow<'a, str>, usize)> {
        let (value, end) = string(self.text, at)?;
        if let Cow::Owned(unescaped) = &value {
            self.scratch.clear();
            crate::event::context_json::write_str(unescaped, &mut self.scratch);
            self.replace_by_scratch(at, end)?;
        }
        Some((value, end))
    }

    /// A number token at `at`; the position after it.
    fn number(&mut self, at: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut end = at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = bytes.get(end) {
            end += 1;
        }
        let token = bytes.get(at..end)?;
        let (negative, digits) = match token.strip_prefix(b"-") {
            Some(digits) => (true, digits),
            None => (false, token),
        };
        // A plain integer short enough to fit u64 (i64 when negative),
        // without leading zeros, and not -0 (a float to serde_json) is
        // stored as written: serde_json reads it as an integer and writes
        // it back the same.
        let plain = match digits {
            [b'1'..=b'9', rest @ ..] => {
                rest.len() < if negative { 18 } else { 19 } && rest.iter().all(u8::is_ascii_digit)
            }
            [b'0'] => !negative,
            _ => false,
        };
        if !plain {
            // Anything else (floats, exponents, -0, integers beyond
            // u64/i64, which serde_json reads as floats) as serde_json
            // reads it, written as the stored form writes it.
            let number: Number = serde_json::from_str(self.text.get(at..end)?).ok()?;
            self.scratch.clear();
            std::io::Write::write_fmt(&mut self.scratch, format_args!("{number}")).ok()?;
            self.replace_by_scratch(at, end)?;
        }
        Some(end)
    }

    /// Any value at `at`, `nesting` levels in; the position after it.
    fn value(&mut self, at: usize, nesting: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        match bytes.get(at)? {
            b'"' => self.string(at).map(|(_, end)| end),
            b'{' => self.object(at, nesting + 1),
            b'[' => self.array(at, nesting + 1),
            b'-' | b'0'..=b'9' => self.number(at),
            b't' => literal(bytes, at, b"true"),
            b'f' => literal(bytes, at, b"false"),
            b'n' => literal(bytes, at, b"null"),
            _ => None,
        }
    }

    /// The object at `at` (its `{`), at level `nesting`.
    fn object(&mut self, at: usize, nesting: usize) -> Option<usize> {
        if nesting > MAX_NESTING {
            return None;
        }
        let bytes = self.text.as_bytes();
        let mut at = self.whitespace(at + 1)?;
        if bytes.get(at) == Some(&b'}') {
            return Some(at + 1);
        }
        let mut keys = Keys::default();
        loop {
            let (key, end) = self.string(at)?;
            if key.starts_with(SERDE_PRIVATE_KEY) || !keys.insert(key) {
                return None;
            }
            at = self.whitespace(end)?;
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = self.whitespace(at + 1)?;
            at = self.value(at, nesting)?;
            at = self.whitespace(at)?;
            match bytes.get(at)? {
                b',' => at = self.whitespace(at + 1)?,
                b'}' => return Some(at + 1),
                _ => return None,
            }
        }
    }

    /// The array at `at` (its `[`), at level `nesting`.
    fn array(&mut self, at: usize, nesting: usize) -> Option<usize> {
        if nesting > MAX_NESTING {
            return None;
        }
        let bytes = self.text.as_bytes();
        let mut at = self.whitespace(at + 1)?;
        if bytes.get(at) == Some(&b']') {
            return Some(at + 1);
        }
        loop {
            at = self.value(at, nesting)?;
            at = self.whitespace(at)?;
            match bytes.get(at)? {
                b',' => at = self.whitespace(at + 1)?,
                b']' => return Some(at + 1),
                _ => return None,
            }
        }
    }
}

/// `word` at `at`; the position after it.
fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (bytes.get(at..end)? == word).then_some(end)
}

/// The keys of one object so far, to find a duplicate: the first few in
/// place (no allocation for the usual context), the rest in a set.
#[derive(Default)]
struct Keys<'a> {
    few: [&'a str; 8],
    few_len: usize,
    many: HashSet<Cow<'a, str>>,
}

impl<'a> Keys<'a> {
    /// Adds `key`; false if the object already has it.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if self.many.is_empty() {
            if let Cow::Borrowed(k) = key {
                if self.few[..self.few_len].contains(&k) {
                    return false;
                }
                if self.few_len < self.few.len() {
                    self.few[self.few_len] = k;
                    self.few_len += 1;
                    return true;
                }
            }
            self.many
                .extend(self.few[..self.few_len].iter().map(|&k| Cow::Borrowed(k)));
        }
        self.many.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// What the owned path stores for `text`.
    fn stored_by_serde(text: &str) -> Option<String> {
        let map: Map<String, Value> = serde_json::from_str(text).ok()?;
        let mut out = Vec::new();
        crate::event::context_json::write_object(&map, &mut out);
        String::from_utf8(out).ok()
    }

    fn ours(text: &str) -> Option<Cow<'_, str>> {
        let (stored, end) = object(text, 0)?;
        assert_eq!(end, text.len(), "{text}");
        Some(stored)
    }

    /// `text` is taken, stored as the owned path stores it.
    fn same(text: &str) {
        let expected = stored_by_serde(text).unwrap_or_else(|| panic!("serde refused {text}"));
        assert_eq!(ours(text).as_deref(), Some(expected.as_str()), "{text}");
    }

    #[test]
    fn compact_text_is_kept_as_written() {
        for text in [
            r#"{}"#,
            r#"{"bytes":18231,"sha256":"83f8b0b56c68","i":0}"#,
            r#"{"a":null,"b":true,"c":false,"d":[],"e":{},"f":[1,-2,"x",{"g":[]}]}"#,
            r#"{"max":18446744073709551615,"min":-9223372036854775808}"#,
            r#"{"del":"","unicode":"é漢字🙂","slash":"a/b"}"#,
        ] {
            same(text);
            assert!(matches!(ours(text), Some(Cow::Borrowed(_))), "{text}");
        }
    }

    #[test]
    fn whitespace_is_dropped() {
        same("{\n\t\"a\" : [ 1 , 2 ] ,\r\n \"b\" : { } , \"c\":{ \"d\" : null } }");
        same("{ }");
        same("[ ]".replace('[', "{\"x\":[").replace(']', "]}").as_str());
    }

    #[test]
    fn escapes_are_read_as_serde_reads_them_and_written_as_the_store_writes_them() {
        for text in [
            r#"{"a":"caf\u00e9"}"#,
            r#"{"a":"caf\u00E9"}"#,
            r#"{"path":"\/api\/v1"}"#,
            r#"{"smile":"\ud83d\ude42","upper":"\uD83D\uDE42"}"#,
            r#"{"kept":"a\"b\\c\nd\te\rf\bg\fh","ctl":"\u0001\u001f\u007f"}"#,
            r#"{"nul":"\u0000","quote":"\u0022","backslash":"\u005c"}"#,
            r#"{"k\u00e9y":1,"\u0061":2}"#,
            r#"{"line":"\u2028\u2029"}"#,
        ] {
            same(text);
        }
        // Short escapes the store writes the same way are kept as written.
        let kept = r#"{"kept":"a\"b\\c\nd\te\rf\bg\fh"}"#;
        assert!(matches!(ours(kept), Some(Cow::Borrowed(_))));
        assert!(matches!(ours(r#"{"a":"\u00e9"}"#), Some(Cow::Owned(_))));
    }

    #[test]
    fn numbers_are_stored_as_serde_json_writes_them() {
        for text in [
            r#"{"n":1.0}"#,
            r#"{"n":1e3}"#,
            r#"{"n":1E+2}"#,
            r#"{"n":1e-2}"#,
            r#"{"n":-0}"#,
            r#"{"n":-0.0}"#,
            r#"{"n":0.1}"#,
            r#"{"n":-1.5E-3}"#,
            r#"{"n":18446744073709551616}"#,
            r#"{"n":-9223372036854775809}"#,
            r#"{"n":123456789012345678901234567890}"#,
            r#"{"n":0.1000000000000000055511151231257827021181583404541015625}"#,
            r#"{"n":2.2250738585072011e-308}"#,
            r#"{"n":1e-400}"#,
            r#"{"n":4.9e-324}"#,
            r#"{"n":1.7976931348623157e308}"#,
            r#"{"n":100000000000000000000}"#,
            r#"{"n":9999999999999999999}"#,
            r#"{"n":-999999999999999999}"#,
            r#"{"n":0e99999999999}"#,
        ] {
            same(text);
        }
        let kept = ours(r#"{"n":-999999999999999999}"#);
        assert!(matches!(kept, Some(Cow::Borrowed(_))));
        assert_eq!(ours(r#"{"n":-0}"#).as_deref(), Some(r#"{"n":-0.0}"#));
        assert_eq!(ours(r#"{"n":1E+2}"#).as_deref(), Some(r#"{"n":100.0}"#));
    }

    #[test]
    fn duplicate_keys_are_declined() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"x":{"b":1,"c":2,"b":3}}"#,
        ] {
            assert!(stored_by_serde(text).is_some(), "{text}");
            assert_eq!(ours(text), None, "{text}");
        }
        // Past the few kept in place, and with an escaped key among them.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        same(&format!("{{{}}}", many.join(",")));
        let dup = format!("{{{},\"k3\":0}}", many.join(","));
        assert_eq!(ours(&dup), None);
        let escaped_dup = format!("{{\"k\\u0031\":0,{}}}", many.join(","));
        assert_eq!(ours(&escaped_dup), None);
        // The same key in different objects is no duplicate.
        same(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#);
    }

    #[test]
    fn nesting_past_the_limit_is_declined() {
        let nested = |levels: usize| {
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        same(&nested(MAX_NESTING));
        let deeper = nested(MAX_NESTING + 1);
        assert!(stored_by_serde(&deeper).is_some());
        assert_eq!(ours(&deeper), None);
        assert_eq!(ours(&nested(1000)), None);
    }

    #[test]
    fn serde_json_private_keys_are_declined() {
        for text in [
            r#"{"$serde_json::private::RawValue":"[1]"}"#,
            r#"{"x":{"$serde_json::private::RawValue":"[1]"}}"#,
            r#"{"x":{"$serde_json::private::Number":"1"}}"#,
        ] {
            assert_eq!(ours(text), None, "{text}");
        }
    }

    #[test]
    fn what_serde_json_refuses_is_declined() {
        for text in [
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1x}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\ud800x"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\u12"}"#,
            "{\"a\":\"raw\ttab\"}",
            "{\"a\":\"raw\u{1}\"}",
            r#"{"a":"unterminated}"#,
            r#"{"a":"\"}"#,
            r#"{a:1}"#,
            r#"{"a":1"#,
            r#"{"a":[1}"#,
            r#"{"a":'x'}"#,
            "{\"a\":1,\u{c}\"b\":2}",
        ] {
            assert_eq!(stored_by_serde(text), None, "serde took {text}");
            assert_eq!(ours(text), None, "{text}");
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_quote_escape_or_control() {
        let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for b in 0..=255u8 {
            for len in 1..20 {
                for at in 0..len {
                    for filler in [b'a', 0xff, 0x80, b'!'] {
                        let mut bytes = vec![filler; len];
                        bytes[at] = b;
                        let expected = bytes.iter().position(|&x| special(x));
                        assert_eq!(
                            find_quote_escape_or_control(&bytes),
                            expected,
                            "byte {b:#x} at {at} of {len} among {filler:#x}"
                        );
                    }
                }
            }
        }
        // Two specials: the first one counts, whatever borrows above it.
        let mut bytes = vec![b'a'; 16];
        bytes[9] = b'"';
        bytes[3] = 0x1f;
        assert_eq!(find_quote_escape_or_control(&bytes), Some(3));
    }
}
