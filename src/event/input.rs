//! The input contract of an event's JSON text, beyond what serde checks.
//!
//! - An event is a JSON object. serde's derived `Deserialize` for a struct
//!   also takes a positional array (`["2026-03-09T09:52:14Z","a.b","x"]`),
//!   which the README never promised and which silently shifts fields when
//!   one is missing: `ObjectOnly` makes [`Event`](crate::Event) and
//!   [`EventRef`](crate::event::EventRef) refuse it.
//! - Every number in the context is stored with the value it was sent with.
//!   serde_json reads an integer beyond 64 bits as the nearest `f64`, and a
//!   fraction with more digits than an `f64` keeps as a rounded one, so the
//!   record would hold another number than the one sent, with a 201.
//!   [`check_numbers`] refuses both; what remains may only change its
//!   spelling (`1E+2` is stored as `100.0`, `1.50` as `1.5`).

use serde::de::{Deserializer, MapAccess, Visitor};

use crate::event::context_json::find_quote_escape_or_control;
use crate::event::EventError;

/// A deserializer that reads a struct only from a map (a JSON object),
/// refusing the sequence form serde derives alongside it.
pub(crate) struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(AnObject(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A struct's visitor that takes a map only, and says so when it meets
/// anything else.
struct AnObject<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for AnObject<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event as a JSON object (not an array of its fields)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(map)
    }
}

/// Checks the numbers of a JSON text that serde_json has accepted (one
/// event, or a body of them): an integer (no fraction, no exponent) must
/// lie in -2^63 ..= 2^64-1, and any other number must be stored with the
/// same value, that is, be the value of the `f64` nearest to it.
///
/// Strings are skipped, so only numbers outside them count: in an event,
/// those of its context. On a text serde_json refused the answer means
/// nothing (the caller reports serde's error instead).
pub fn check_numbers(text: &[u8]) -> Result<(), EventError> {
    let mut at = 0;
    while let Some(&b) = text.get(at) {
        match b {
            b'"' => at = string_end(text, at + 1),
            b'-' | b'0'..=b'9' => at = number(text, at)?,
            _ => at += 1,
        }
    }
    Ok(())
}

/// The position after the string whose body starts at `at` (the end of
/// the text when it is unterminated).
fn string_end(text: &[u8], mut at: usize) -> usize {
    loop {
        let rest = text.get(at..).unwrap_or_default();
        let Some(found) = find_quote_escape_or_control(rest) else {
            return text.len();
        };
        at += found;
        match text[at] {
            b'"' => return at + 1,
            // An escape: skip the escaped byte (a `\u` escape's digits are
            // plain bytes).
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Checks the number starting at `start`; returns the position after it.
fn number(text: &[u8], start: usize) -> Result<usize, EventError> {
    let negative = text[start] == b'-';
    let digits_from = |mut i: usize| {
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let int_start = start + usize::from(negative);
    let int_end = digits_from(int_start);
    let mut end = int_end;
    while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = text.get(end) {
        end += 1;
    }
    let token = &text[start..end];
    if end == int_end {
        if !integer_in_range(negative, &text[int_start..int_end]) {
            return Err(EventError::NumberChanged {
                at: start,
                reason: "is an integer outside -2^63 ..= 2^64-1",
            });
        }
    } else if !float_kept(token) {
        return Err(EventError::NumberChanged {
            at: start,
            reason: "has more precision or range than a 64-bit float keeps",
        });
    }
    Ok(end)
}

/// Whether `digits` (no sign, no leading zeros) is a magnitude the stored
/// context rules allow (`docs/FORMAT.md`, "Context").
pub(crate) fn integer_in_range(negative: bool, digits: &[u8]) -> bool {
    // No leading zeros, so more than 20 digits is always too large.
    if digits.len() > 20 {
        return false;
    }
    let magnitude = digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    });
    match magnitude {
        Some(m) if negative => m <= 1 << 63,
        Some(_) => true,
        None => false,
    }
}

/// Whether the number `token` (with a fraction or exponent) has the value
/// of the `f64` serde_json reads from it, which is what the record stores.
fn float_kept(token: &[u8]) -> bool {
    let Some(parsed) = std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite())
    else {
        return false;
    };
    // What the record will hold: serde_json's shortest round-trip form.
    let Some(stored) = serde_json::Number::from_f64(parsed) else {
        return false;
    };
    decimal(token) == decimal(stored.to_string().as_bytes())
}

/// A number's decimal value as (negative, significant digits, exponent of
/// the last digit), zero as `(false, [], 0)`; `None` for an exponent out
/// of range (such a number is no finite `f64` anyway).
fn decimal(token: &[u8]) -> Option<(bool, Vec<u8>, i64)> {
    let (negative, token) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let (mantissa, exponent) = match token.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => {
            let text = std::str::from_utf8(&token[e + 1..]).ok()?;
            (&token[..e], text.parse::<i64>().ok()?)
        }
        None => (token, 0),
    };
    let (int, frac) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &[][..]),
    };
    let mut digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    while digits.last() == Some(&b'0') {
        digits.pop();
        exponent = exponent.checked_add(1)?;
    }
    let leading = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..leading);
    if digits.is_empty() {
        return Some((false, digits, 0));
    }
    Some((negative, digits, exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_at(text: &str) -> Option<usize> {
        match check_numbers(text.as_bytes()) {
            Ok(()) => None,
            Err(EventError::NumberChanged { at, .. }) => Some(at),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn integers_in_64_bits_pass_and_wider_ones_are_refused() {
        for ok in [
            "0",
            "-0",
            "18446744073709551615",
            "-9223372036854775808",
            r#"{"a":[1,-2,3]}"#,
        ] {
            assert_eq!(refused_at(ok), None, "{ok}");
        }
        for (bad, at) in [
            ("18446744073709551616", 0),
            ("-9223372036854775809", 0),
            (r#"{"n":1180591620717411303424}"#, 5),
            (r#"{"a":"x","n":[1,-123456789012345678901234]}"#, 16),
        ] {
            assert_eq!(refused_at(bad), Some(at), "{bad}");
        }
    }

    #[test]
    fn numbers_inside_strings_are_not_numbers() {
        assert_eq!(
            refused_at(r#"{"s":"99999999999999999999999","t":"\"1e-999\\"}"#),
            None
        );
        assert_eq!(refused_at(r#"{"s":"\\","n":1e-999}"#), Some(14));
    }

    #[test]
    fn a_fraction_must_keep_its_value() {
        for ok in [
            "1.5", "1.50", "1E+2", "-0.0", "0.1", "1e-7", "2.5e300", "0e0",
        ] {
            assert_eq!(refused_at(ok), None, "{ok}");
        }
        for bad in [
            "3.14159265358979323846",
            "1e-400",
            "1e400",
            "0.10000000000000000001",
        ] {
            assert_eq!(refused_at(bad), Some(0), "{bad}");
        }
    }

    #[test]
    fn the_integer_range_is_the_stored_rule() {
        assert!(integer_in_range(false, b"18446744073709551615"));
        assert!(!integer_in_range(false, b"18446744073709551616"));
        assert!(integer_in_range(true, b"9223372036854775808"));
        assert!(!integer_in_range(true, b"9223372036854775809"));
        assert!(!integer_in_range(false, b"100000000000000000000"));
    }
}
