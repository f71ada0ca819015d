//! The stored context's rules, checked in one pass over its bytes.
//!
//! A stored context (both record versions) is one RFC 8259 JSON value that
//! is an object, written compactly: no whitespace outside strings, no
//! duplicate member names in any object (compared after unescaping),
//! nesting depth at most [`MAX_CONTEXT_DEPTH`] (the context object is depth
//! 1), strings without raw U+0000..U+001F, only RFC 8259 escapes, no `\u`
//! escape that is a lone surrogate, and numbers in RFC 8259 grammar of which
//! those without fraction or exponent lie in [-2^63, 2^64-1].
//!
//! Numbers with a fraction or exponent are taken as the grammar allows,
//! whatever their magnitude (`1e999` is a valid context). The rule is the
//! grammar's so that an independent verifier needs no floating-point parser;
//! the library never writes such a number (serde_json's numbers are finite),
//! and [`crate::event::RecordView::to_event`] reports one as malformed.
//!
//! This runs on every record the verifier reads, so it builds nothing for
//! the usual context: ASCII text needs no UTF-8 check, runs of plain string
//! bytes are skipped eight at a time, and member names are only copied when
//! they hold escapes.

use std::borrow::Cow;

use crate::event::EventError;

/// Deepest nesting a stored context may have; the context object is depth 1.
pub const MAX_CONTEXT_DEPTH: usize = 128;

/// Objects with more members than this are checked for duplicates by
/// sorting their names instead of comparing each pair.
const PAIRWISE_MEMBERS: usize = 16;

/// Checks `text` against the context rules (not its length; the record
/// decoder bounds that first).
pub fn check_context(text: &[u8]) -> Result<(), EventError> {
    // Bytes >= 0x80 can only be inside strings (anywhere else the grammar
    // refuses them), so one UTF-8 check of the whole text, skipped for ASCII,
    // makes every string valid UTF-8.
    if !text.is_ascii() && std::str::from_utf8(text).is_err() {
        return Err(bad(0, "is not UTF-8"));
    }
    check_utf8_context(text)
}

/// [`check_context`] of text known to be valid UTF-8 (the record decoder's
/// ASCII path has just scanned it).
pub(crate) fn check_utf8_context(text: &[u8]) -> Result<(), EventError> {
    if super::context_fast::accepts(text) {
        return Ok(());
    }
    full_check(text)
}

/// The full check of valid UTF-8 `text`, without the fast path.
pub(super) fn full_check(text: &[u8]) -> Result<(), EventError> {
    Checker {
        text,
        names: Vec::new(),
        stack: Vec::new(),
    }
    .run()
}

fn bad(at: usize, reason: &'static str) -> EventError {
    EventError::BadContext { at, reason }
}

/// An open container: an object (with the index of its first member name
/// in `names`) or an array.
#[derive(Clone, Copy)]
enum Open {
    Object { names_from: usize },
    Array,
}

struct Checker<'a> {
    text: &'a [u8],
    /// Member names of the open objects, innermost last.
    names: Vec<Cow<'a, [u8]>>,
    stack: Vec<Open>,
}

impl<'a> Checker<'a> {
    fn byte(&self, at: usize) -> Result<u8, EventError> {
        self.text
            .get(at)
            .copied()
            .ok_or(bad(at, "ends before its value is complete"))
    }

    fn run(mut self) -> Result<(), EventError> {
        if self.text.first() != Some(&b'{') {
            return Err(bad(0, "is not a JSON object"));
        }
        let mut at = 0;
        // `at` is at a value's first byte.
        'value: loop {
            at = match self.byte(at)? {
                b'{' => {
                    self.open(
                        at,
                        Open::Object {
                            names_from: self.names.len(),
                        },
                    )?;
                    if self.byte(at + 1)? == b'}' {
                        self.close_object(at + 1)?;
                        at + 2
                    } else {
                        at = self.member_name(at + 1)?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.open(at, Open::Array)?;
                    if self.byte(at + 1)? == b']' {
                        self.stack.pop();
                        at + 2
                    } else {
                        at += 1;
                        continue 'value;
                    }
                }
                b'"' => self.string(at)?.1,
                b'-' | b'0'..=b'9' => self.number(at)?,
                b't' => literal(self.text, at, b"true")?,
                b'f' => literal(self.text, at, b"false")?,
                b'n' => literal(self.text, at, b"null")?,
                b' ' | b'\t' | b'\n' | b'\r' => return Err(bad(at, "has whitespace")),
                _ => return Err(bad(at, "has a byte that starts no JSON value")),
            };
            // After a value: close containers or go on to the next value.
            loop {
                let Some(&open) = self.stack.last() else {
                    if at != self.text.len() {
                        return Err(bad(at, "has bytes after the object"));
                    }
                    return Ok(());
                };
                match (open, self.byte(at)?) {
                    (Open::Object { .. }, b',') => {
                        at = self.member_name(at + 1)?;
                        continue 'value;
                    }
                    (Open::Array, b',') => {
                        at += 1;
                        continue 'value;
                    }
                    (Open::Object { .. }, b'}') => self.close_object(at)?,
                    (Open::Array, b']') => {
                        self.stack.pop();
                    }
                    (_, b' ' | b'\t' | b'\n' | b'\r') => return Err(bad(at, "has whitespace")),
                    _ => return Err(bad(at, "has a byte where ',' or a closing bracket belongs")),
                }
                at += 1;
            }
        }
    }

    fn open(&mut self, at: usize, open: Open) -> Result<(), EventError> {
        if self.stack.len() == MAX_CONTEXT_DEPTH {
            return Err(bad(at, "nests deeper than 128 levels"));
        }
        self.stack.push(open);
        Ok(())
    }

    /// Reads `"name":` at `at`, recording the name; returns the position of
    /// the member's value.
    fn member_name(&mut self, at: usize) -> Result<usize, EventError> {
        match self.byte(at)? {
            b'"' => {}
            b' ' | b'\t' | b'\n' | b'\r' => return Err(bad(at, "has whitespace")),
            _ => return Err(bad(at, "has an object member without a string name")),
        }
        let (name, end) = self.string(at)?;
        match self.byte(end)? {
            b':' => {}
            b' ' | b'\t' | b'\n' | b'\r' => return Err(bad(end, "has whitespace")),
            _ => return Err(bad(end, "has a member name without ':'")),
        }
        self.names.push(name);
        Ok(end + 1)
    }

    /// Pops the innermost object, refusing it when two members share a name.
    fn close_object(&mut self, at: usize) -> Result<(), EventError> {
        if let Some(Open::Object { names_from }) = self.stack.pop() {
            if has_duplicate(&mut self.names[names_from..]) {
                return Err(bad(at, "has an object with two members of the same name"));
            }
            self.names.truncate(names_from);
        }
        Ok(())
    }

    /// The string whose opening quote is at `at`: its value (borrowed when
    /// it has no escapes) and the position after its closing quote.
    fn string(&self, at: usize) -> Result<(Cow<'a, [u8]>, usize), EventError> {
        let text = self.text;
        let body = at + 1;
        let rest = text.get(body..).unwrap_or_default();
        let mut i = body
            + super::context_json::find_quote_escape_or_control(rest)
                .ok_or(bad(at, "has an unterminated string"))?;
        if text[i] == b'"' {
            return Ok((Cow::Borrowed(&text[body..i]), i + 1));
        }
        let mut value = text[body..i].to_vec();
        loop {
            match self.byte(i)? {
                b'"' => return Ok((Cow::Owned(value), i + 1)),
                b'\\' => {
                    let escaped = match self.byte(i + 1)? {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let (c, end) = self.unicode_escape(i)?;
                            let mut buf = [0; 4];
                            value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            i = end;
                            continue;
                        }
                        _ => return Err(bad(i, "has an escape RFC 8259 does not define")),
                    };
                    value.push(escaped);
                    i += 2;
                }
                b if b < 0x20 => return Err(bad(i, "has a raw control character in a string")),
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
    }

    /// The character of the `\u` escape at `at` (with its low surrogate
    /// escape when it is a high surrogate), and the position after it.
    fn unicode_escape(&self, at: usize) -> Result<(char, usize), EventError> {
        let unit = |at: usize| -> Result<u32, EventError> {
            let digits = self
                .text
                .get(at + 2..at + 6)
                .filter(|_| self.text.get(at..at + 2) == Some(b"\\u"))
                .ok_or(bad(at, "has a \\u escape without four hex digits"))?;
            digits.iter().try_fold(0u32, |acc, &d| {
                let v = (d as char)
                    .to_digit(16)
                    .ok_or(bad(at, "has a \\u escape without four hex digits"))?;
                Ok(acc << 4 | v)
            })
        };
        let first = unit(at)?;
        let (code, end) = match first {
            0xD800..=0xDBFF => {
                let second = unit(at + 6).map_err(|_| bad(at, "has a lone surrogate escape"))?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(bad(at, "has a lone surrogate escape"));
                }
                (
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00),
                    at + 12,
                )
            }
            0xDC00..=0xDFFF => return Err(bad(at, "has a lone surrogate escape")),
            _ => (first, at + 6),
        };
        char::from_u32(code)
            .map(|c| (c, end))
            .ok_or(bad(at, "has a lone surrogate escape"))
    }

    /// The position after the number at `at`, checking its grammar and,
    /// for an integer, its range.
    fn number(&self, at: usize) -> Result<usize, EventError> {
        let text = self.text;
        let digits_from = |mut i: usize| {
            while text.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let negative = text[at] == b'-';
        let int_start = at + usize::from(negative);
        let int_end = match text.get(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits_from(int_start + 1),
            _ => return Err(bad(at, "has a number without digits")),
        };
        let mut end = int_end;
        let mut integer = true;
        if text.get(end) == Some(&b'.') {
            let after = digits_from(end + 1);
            if after == end + 1 {
                return Err(bad(end, "has a number without digits after '.'"));
            }
            end = after;
            integer = false;
        }
        if let Some(b'e' | b'E') = text.get(end) {
            let mut i = end + 1;
            if let Some(b'+' | b'-') = text.get(i) {
                i += 1;
            }
            let after = digits_from(i);
            if after == i {
                return Err(bad(end, "has a number without exponent digits"));
            }
            end = after;
            integer = false;
        }
        // Up to 18 digits is below 10^18 < 2^63: in range either way.
        if integer && int_end - int_start > 18 {
            let in_range = super::input::integer_in_range(negative, &text[int_start..int_end]);
            if !in_range {
                return Err(bad(at, "has an integer outside [-2^63, 2^64-1]"));
            }
        }
        Ok(end)
    }
}

/// The position after the number at `at`, when its grammar and range are
/// right.
pub(super) fn number_end(text: &[u8], at: usize) -> Option<usize> {
    let checker = Checker {
        text,
        names: Vec::new(),
        stack: Vec::new(),
    };
    checker.number(at).ok()
}

pub(super) fn literal(text: &[u8], at: usize, word: &[u8]) -> Result<usize, EventError> {
    if text.get(at..at + word.len()) == Some(word) {
        Ok(at + word.len())
    } else {
        Err(bad(at, "has a byte that starts no JSON value"))
    }
}

/// Whether two of `names` are equal (reorders them).
fn has_duplicate(names: &mut [Cow<'_, [u8]>]) -> bool {
    if names.len() <= PAIRWISE_MEMBERS {
        names
            .iter()
            .enumerate()
            .any(|(i, a)| names[i + 1..].iter().any(|b| a == b))
    } else {
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    }
}
