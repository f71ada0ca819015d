//! The record codec: round trips for both layouts, and one test per rule
//! showing that bytes breaking it are refused.

use super::*;
use crate::event::{encode_record, EncodeRecord};
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

/// Body bytes for an event, without the client checks (so that tests can
/// build records that break them).
fn body(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    crate::event::encode_fields(
        &mut out,
        e.timestamp,
        e.outcome,
        e.source_ip,
        [
            Some(e.event_type.as_str()),
            Some(e.actor.as_str()),
            e.node.as_deref(),
            e.resource.as_deref(),
        ],
    );
    let context = serde_json::to_vec(&e.context).unwrap();
    out.extend_from_slice(&(context.len() as u32).to_le_bytes());
    out.extend_from_slice(&context);
    out
}

fn with_context(context: &str) -> Vec<u8> {
    let mut out = body(&Event::new(Timestamp::from_unix_nanos(1), "a.b", "x"));
    out.truncate(out.len() - 6); // `{}` and its length
    out.extend_from_slice(&(context.len() as u32).to_le_bytes());
    out.extend_from_slice(context.as_bytes());
    out
}

fn v2(origin: u8, appender: &str, body: &[u8]) -> Vec<u8> {
    let mut out = 77i64.to_le_bytes().to_vec();
    out.push(origin);
    out.extend_from_slice(&(appender.len() as u16).to_le_bytes());
    out.extend_from_slice(appender.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The decoders' verdict on a context, in both versions (they must agree).
fn context_verdict(context: &str) -> Result<(), EventError> {
    let v1 = decode_record(RECORD_V1, &with_context(context)).map(|_| ());
    let v2 = decode_record(RECORD_V2, &v2(0, "k", &with_context(context))).map(|_| ());
    assert_eq!(v1, v2, "{context}");
    v1
}

fn refused_context(context: &str, reason: &str) {
    match context_verdict(context) {
        Err(EventError::BadContext { reason: r, .. }) => assert_eq!(r, reason, "{context}"),
        other => panic!("{context}: {other:?}"),
    }
}

#[test]
fn v1_round_trip() {
    let e = sample();
    let mut buf = Vec::new();
    encode_record(&e, &mut buf).unwrap();
    let view = decode_record(RECORD_V1, &buf).unwrap();
    assert_eq!(view.origin, Origin::Legacy);
    assert_eq!((view.received_at, view.appender), (None, None));
    assert_eq!(view.to_event().unwrap(), e);

    let mut minimal = Event::new(Timestamp::from_unix_nanos(-5), "auth.login", "system");
    minimal.source_ip = Some("203.0.113.42".parse().unwrap());
    buf.clear();
    encode_record(&minimal, &mut buf).unwrap();
    let view = decode_record(RECORD_V1, &buf).unwrap();
    assert_eq!(view.to_event().unwrap(), minimal);
}

#[test]
fn v2_round_trip() {
    let e = sample();
    let mut buf = Vec::new();
    let received = Timestamp::from_unix_nanos(1_770_000_000_123_456_789);
    encode_provenance(received, Origin::Client, "key-0042", &mut buf).unwrap();
    encode_record(&e, &mut buf).unwrap();
    let view = decode_record(RECORD_V2, &buf).unwrap();
    assert_eq!(view.received_at, Some(received));
    assert_eq!(view.origin, Origin::Client);
    assert_eq!(view.appender, Some("key-0042"));
    assert_eq!(view.to_event().unwrap(), e);
    // The body after the prefix is exactly the v1 record.
    let prefix = 8 + 1 + 2 + "key-0042".len();
    assert_eq!(
        decode_record(RECORD_V1, &buf[prefix..])
            .unwrap()
            .to_event()
            .unwrap(),
        e
    );

    let mut engine = Vec::new();
    let retention = Event::new(Timestamp::from_unix_nanos(3), "log.retention", "system");
    encode_provenance(received, Origin::Engine, "chainlog", &mut engine).unwrap();
    crate::event::EngineEvent(&retention)
        .encode_record(&mut engine)
        .unwrap();
    let view = decode_record(RECORD_V2, &engine).unwrap();
    assert_eq!(view.origin, Origin::Engine);
    assert_eq!(view.event_type, "log.retention");
}

#[test]
fn legacy_origin_is_not_written() {
    let mut buf = vec![1];
    assert!(encode_provenance(Timestamp::now(), Origin::Legacy, "x", &mut buf).is_err());
    assert_eq!(buf, vec![1]);
}

#[test]
fn truncated_or_extended_records_are_refused() {
    let mut v1 = Vec::new();
    encode_record(&sample(), &mut v1).unwrap();
    let v2 = v2(0, "key", &v1);
    for (version, buf) in [(RECORD_V1, &v1), (RECORD_V2, &v2)] {
        for cut in 0..buf.len() {
            assert!(
                decode_record(version, &buf[..cut]).is_err(),
                "v{version} prefix {cut} decoded"
            );
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            decode_record(version, &longer),
            Err(EventError::Malformed("trailing bytes after the context"))
        );
    }
}

#[test]
fn unknown_layout_version_is_refused() {
    let mut buf = Vec::new();
    encode_record(&sample(), &mut buf).unwrap();
    for version in [0, 3, u16::MAX] {
        assert_eq!(
            decode_record(version, &buf),
            Err(EventError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn unknown_outcome_code_is_refused() {
    let mut buf = Vec::new();
    encode_record(&sample(), &mut buf).unwrap();
    buf[8] = 7;
    assert_eq!(
        decode_record(RECORD_V1, &buf),
        Err(EventError::Malformed("unknown outcome code"))
    );
}

#[test]
fn unknown_origin_code_is_refused() {
    let buf = v2(2, "key", &body(&sample()));
    assert_eq!(
        decode_record(RECORD_V2, &buf),
        Err(EventError::Malformed("unknown origin code"))
    );
}

#[test]
fn record_over_the_version_limit_is_refused() {
    let mut e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "x".repeat(256));
    e.context.insert(
        "blob".into(),
        Value::String("y".repeat(crate::limits::MAX_CONTEXT_BYTES - 11)),
    );
    let full = body(&e);
    assert!(decode_record(RECORD_V1, &full).is_ok());
    let mut over = full.clone();
    over.push(b'x');
    assert!(matches!(
        decode_record(RECORD_V1, &over),
        Err(EventError::Malformed(_))
    ));
}

fn event_type_verdict(event_type: &str) -> Result<(), EventError> {
    let e = Event::new(Timestamp::from_unix_nanos(1), event_type, "x");
    decode_record(RECORD_V1, &body(&e)).map(|_| ())
}

#[test]
fn event_type_with_uppercase_is_refused() {
    assert_eq!(
        event_type_verdict("Login"),
        Err(EventError::BadEventType("Login".into()))
    );
    assert_eq!(
        event_type_verdict("auth.Login"),
        Err(EventError::BadEventType("auth.Login".into()))
    );
}

#[test]
fn event_type_with_an_empty_part_is_refused() {
    for bad in ["aws..test", ".a", "a.", ""] {
        assert_eq!(
            event_type_verdict(bad),
            Err(EventError::BadEventType(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(event_type_verdict("aws.s3.get_object"), Ok(()));
}

#[test]
fn event_type_too_long_is_refused() {
    let long = format!("a.{}", "b".repeat(MAX_EVENT_TYPE_BYTES - 1));
    assert!(matches!(
        event_type_verdict(&long),
        Err(EventError::TooLong { field: "event", .. })
    ));
}

#[test]
fn empty_actor_is_refused() {
    let e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "");
    assert_eq!(
        decode_record(RECORD_V1, &body(&e)),
        Err(EventError::Empty("actor"))
    );
}

#[test]
fn control_character_in_actor_is_refused() {
    let e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "adm\u{1}in");
    for (version, buf) in [(RECORD_V1, body(&e)), (RECORD_V2, v2(0, "k", &body(&e)))] {
        assert_eq!(
            decode_record(version, &buf),
            Err(EventError::ControlCharacter("actor"))
        );
    }
    // C1 controls (U+0080..U+009F) and DEL are control characters too.
    for actor in ["a\u{7f}", "a\u{85}", "a\u{9f}"] {
        let e = Event::new(Timestamp::from_unix_nanos(1), "a.b", actor);
        assert_eq!(
            decode_record(RECORD_V1, &body(&e)),
            Err(EventError::ControlCharacter("actor"))
        );
    }
}

#[test]
fn tab_in_node_is_refused() {
    let mut e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "x");
    e.node = Some("nyc\tedge".into());
    assert_eq!(
        decode_record(RECORD_V1, &body(&e)),
        Err(EventError::ControlCharacter("node"))
    );
    e.node = None;
    e.resource = Some("r\n".into());
    assert_eq!(
        decode_record(RECORD_V1, &body(&e)),
        Err(EventError::ControlCharacter("resource"))
    );
}

#[test]
fn format_character_is_refused_in_v2_only() {
    let e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "adm\u{200b}in");
    assert!(decode_record(RECORD_V1, &body(&e)).is_ok());
    assert_eq!(
        decode_record(RECORD_V2, &v2(0, "k", &body(&e))),
        Err(EventError::FormatCharacter {
            field: "actor",
            code_point: 0x200B
        })
    );
    for c in [
        '\u{ad}',
        '\u{202e}',
        '\u{2066}',
        '\u{feff}',
        '\u{e0041}',
        '\u{110bd}',
    ] {
        let mut e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "x");
        e.node = Some(format!("n{c}"));
        assert_eq!(
            decode_record(RECORD_V2, &v2(0, "k", &body(&e))),
            Err(EventError::FormatCharacter {
                field: "node",
                code_point: c as u32
            }),
            "{:X}",
            c as u32
        );
    }
    // Visible non-ASCII text is fine.
    let e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "zoë@acme.io");
    assert!(decode_record(RECORD_V2, &v2(0, "k", &body(&e))).is_ok());
}

#[test]
fn appender_rules() {
    let b = body(&sample());
    assert_eq!(
        decode_record(RECORD_V2, &v2(0, "", &b)),
        Err(EventError::Empty("appender"))
    );
    assert_eq!(
        decode_record(RECORD_V2, &v2(0, "k\u{1}", &b)),
        Err(EventError::ControlCharacter("appender"))
    );
    assert_eq!(
        decode_record(RECORD_V2, &v2(0, "k\u{2060}", &b)),
        Err(EventError::FormatCharacter {
            field: "appender",
            code_point: 0x2060
        })
    );
    assert!(matches!(
        decode_record(RECORD_V2, &v2(0, &"k".repeat(257), &b)),
        Err(EventError::TooLong {
            field: "appender",
            ..
        })
    ));
    assert_eq!(check_appender(""), Err(EventError::Empty("appender")));
    assert!(check_appender(&"k".repeat(256)).is_ok());
}

#[test]
fn reserved_event_type_from_a_client_is_refused() {
    let e = Event::new(Timestamp::from_unix_nanos(1), "log.retention", "system");
    assert_eq!(
        decode_record(RECORD_V2, &v2(0, "k", &body(&e))),
        Err(EventError::ReservedEventType("log.retention".into()))
    );
    assert_eq!(
        decode_record(RECORD_V2, &v2(1, "chainlog", &body(&e)))
            .unwrap()
            .origin,
        Origin::Engine
    );
    // Version 1 had no origin: its `log.*` records are the legacy rule's.
    assert_eq!(
        decode_record(RECORD_V1, &body(&e)).unwrap().origin,
        Origin::Legacy
    );
    // `logs.x` and `x.log` are not reserved.
    assert!(!is_reserved_event_type("logs.x"));
    assert!(!is_reserved_event_type("x.log"));
    // The client paths refuse it before anything is written.
    let mut out = vec![];
    assert_eq!(
        encode_record(&e, &mut out),
        Err(EventError::ReservedEventType("log.retention".into()))
    );
    assert!(out.is_empty());
}

#[test]
fn context_that_is_not_an_object_is_refused() {
    refused_context("[1]", "is not a JSON object");
    refused_context("1", "is not a JSON object");
    refused_context("\"a\"", "is not a JSON object");
    refused_context("", "is not a JSON object");
}

#[test]
fn context_with_bad_syntax_is_refused() {
    refused_context("{x}", "has an object member without a string name");
    refused_context("{\"a\"}", "has a member name without ':'");
    refused_context("{\"a\":}", "has a byte that starts no JSON value");
    refused_context("{\"a\":1,}", "has an object member without a string name");
    refused_context("{\"a\":[1,]}", "has a byte that starts no JSON value");
    refused_context("{\"a\":tru}", "has a byte that starts no JSON value");
    refused_context("{\"a\":1", "ends before its value is complete");
    refused_context("{\"a\":\"x}", "has an unterminated string");
    refused_context(
        "{\"a\":[1}",
        "has a byte where ',' or a closing bracket belongs",
    );
    refused_context("{}{}", "has bytes after the object");
    refused_context("{}x", "has bytes after the object");
}

#[test]
fn context_with_whitespace_is_refused() {
    for text in [
        "{ }",
        "{\"a\": 1}",
        "{\"a\" :1}",
        "{\"a\":1 }",
        "{\"a\":[1, 2]}",
        "{\n\"a\":1}",
        " {}",
        "{} ",
    ] {
        match context_verdict(text) {
            Err(EventError::BadContext { .. }) => {}
            other => panic!("{text:?}: {other:?}"),
        }
    }
    // Whitespace inside strings is text.
    assert_eq!(context_verdict("{\"a b\":\" c \"}"), Ok(()));
}

#[test]
fn context_with_duplicate_names_is_refused() {
    let reason = "has an object with two members of the same name";
    refused_context("{\"a\":1,\"a\":2}", reason);
    // Compared after unescaping.
    refused_context("{\"a\":1,\"\\u0061\":2}", reason);
    refused_context("{\"\\/\":1,\"/\":2}", reason);
    // In nested objects, and past the pairwise-compare size.
    refused_context("{\"o\":{\"k\":1,\"k\":null}}", reason);
    let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
    assert_eq!(context_verdict(&format!("{{{}}}", many.join(","))), Ok(()));
    let dup = format!("{{{},\"k17\":0}}", many.join(","));
    refused_context(&dup, reason);
    // The same name in different objects is fine.
    assert_eq!(context_verdict("{\"a\":{\"a\":1},\"b\":{\"a\":2}}"), Ok(()));
}

#[test]
fn context_nested_past_128_levels_is_refused() {
    let nested = |depth: usize| {
        let mut s = String::new();
        for _ in 1..depth {
            s.push_str("{\"a\":");
        }
        s.push_str("[]");
        s.push_str(&"}".repeat(depth - 1));
        s
    };
    // nested(d) has depth d: d-1 objects and the innermost array.
    assert_eq!(context_verdict(&nested(128)), Ok(()));
    refused_context(&nested(129), "nests deeper than 128 levels");
}

#[test]
fn context_with_bad_escapes_is_refused() {
    refused_context("{\"a\":\"\\x\"}", "has an escape RFC 8259 does not define");
    refused_context(
        "{\"a\":\"\\u12\"}",
        "has a \\u escape without four hex digits",
    );
    refused_context("{\"a\":\"\\ud800\"}", "has a lone surrogate escape");
    refused_context("{\"a\":\"\\udc00\"}", "has a lone surrogate escape");
    refused_context("{\"a\":\"\\ud800\\u0041\"}", "has a lone surrogate escape");
    refused_context(
        "{\"a\":\"x\u{1}\"}",
        "has a raw control character in a string",
    );
    assert_eq!(
        context_verdict("{\"a\":\"\\ud83d\\ude00\\n\\t\\\"\"}"),
        Ok(())
    );
    // DEL and other characters need no escape.
    assert_eq!(context_verdict("{\"a\":\"\u{7f}é\"}"), Ok(()));
}

#[test]
fn context_that_is_not_utf8_is_refused() {
    let mut buf = with_context("{\"a\":\"xx\"}");
    let at = buf.len() - 3;
    buf[at] = 0xff;
    assert_eq!(
        decode_record(RECORD_V1, &buf),
        Err(EventError::BadContext {
            at: 0,
            reason: "is not UTF-8"
        })
    );
}

#[test]
fn context_numbers_follow_the_grammar() {
    for ok in [
        "0", "-0", "1.5", "-1.5e-3", "1E+2", "0.0", "1e999", "-1e999",
    ] {
        assert_eq!(context_verdict(&format!("{{\"n\":{ok}}}")), Ok(()), "{ok}");
    }
    for bad in ["01", "-", "1.", ".5", "1e", "1e+", "+1", "-a", "0x10"] {
        assert!(
            context_verdict(&format!("{{\"n\":{bad}}}")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn context_integer_out_of_range_is_refused() {
    let reason = "has an integer outside [-2^63, 2^64-1]";
    assert_eq!(context_verdict("{\"n\":18446744073709551615}"), Ok(()));
    assert_eq!(context_verdict("{\"n\":-9223372036854775808}"), Ok(()));
    refused_context("{\"n\":18446744073709551616}", reason);
    refused_context("{\"n\":-9223372036854775809}", reason);
    refused_context("{\"n\":[123456789012345678901234567890]}", reason);
    // With a fraction or exponent, the grammar alone decides.
    assert_eq!(context_verdict("{\"n\":18446744073709551616.0}"), Ok(()));
}

#[test]
fn a_huge_float_is_valid_but_does_not_parse_into_an_event() {
    let buf = with_context("{\"a\":1e999}");
    let view = decode_record(RECORD_V1, &buf).unwrap();
    assert!(matches!(view.to_event(), Err(EventError::Malformed(_))));
}

#[test]
fn encoder_refuses_contexts_nested_too_deep() {
    let mut value = json!([]);
    for _ in 0..127 {
        value = json!({ "a": value });
    }
    // `value` is 128 levels; as a member of the context it is 129.
    let mut e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "x");
    e.context.insert("v".into(), value.clone());
    let mut out = Vec::new();
    assert!(matches!(
        encode_record(&e, &mut out),
        Err(EventError::BadContext { .. })
    ));
    assert!(out.is_empty());
    let Value::Object(inner) = value else {
        unreachable!()
    };
    e.context = inner;
    encode_record(&e, &mut out).unwrap();
    assert!(decode_record(RECORD_V1, &out).is_ok());
}

#[test]
fn ascii_records_take_the_fast_path() {
    let mut e = sample();
    e.source_ip = None;
    let mut buf = Vec::new();
    encode_record(&e, &mut buf).unwrap();
    let fast = RecordSummary::decode_ascii(RECORD_V1, &buf).expect("an ASCII record");
    assert_eq!(fast.timestamp, e.timestamp);
    assert_eq!(fast.event_type, b"pcap.download");
    let engine = v2(1, "k", &buf);
    let fast = RecordSummary::decode_ascii(RECORD_V2, &engine).expect("ASCII v2");
    assert_eq!(fast.origin, Origin::Engine);
    assert_eq!(fast.received_at, Some(Timestamp::from_unix_nanos(77)));
    // Non-ASCII text is still accepted, through `decode_record`.
    e.actor = "zoë@acme.io".into();
    buf.clear();
    encode_record(&e, &mut buf).unwrap();
    assert_eq!(RecordSummary::decode_ascii(RECORD_V1, &buf), None);
    assert!(RecordSummary::decode(RECORD_V1, &buf).is_ok());
}

#[test]
fn printable_ascii_check_matches_its_definition() {
    for b in 0..=255u8 {
        assert_eq!(
            is_printable_ascii(&[b'a', b]),
            (0x20..=0x7e).contains(&b),
            "{b}"
        );
    }
}

/// Context member values for generated contexts, a few of them invalid.
const VALUE: &str =
    r#"(1|-0|2\.5|1e9|18446744073709551616|"[x\\é]{0,2}"|\[\]|null|true|\{\}| 1|\{"a":1,"a":2\})"#;

/// Record-like bytes of either layout: each field's bytes and length
/// prefix may be right or wrong, the text ASCII, other UTF-8 or not UTF-8
/// at all, the context often a valid object.
fn record_bytes() -> impl proptest::strategy::Strategy<Value = (u16, Vec<u8>)> {
    use proptest::prelude::*;
    let text = || {
        prop_oneof![
            12 => "[ -~]{0,40}".prop_map(String::into_bytes),
            6 => "(log|[a-z]{1,4})\\.[a-z_-]{1,5}".prop_map(String::into_bytes),
            3 => ".{0,20}".prop_map(String::into_bytes),
            1 => "[a-z\u{7f}\u{85}\u{200b}\u{feff}\t]{0,6}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..40),
            1 => (120usize..300).prop_map(|n| vec![b'a'; n]),
        ]
        .boxed()
    };
    let context = prop_oneof![
        8 => proptest::string::string_regex(&format!(
            r#"\{{("[a-c\\]{{0,2}}":{VALUE}(,"[d-z\\]{{1,3}}":{VALUE}){{0,2}})?\}}"#
        ))
        .unwrap()
        .prop_map(String::into_bytes),
        1 => text(),
    ];
    // Fields mostly right, so that many records are valid.
    let event_type = prop_oneof![
        6 => "(log|[a-z]{1,4})\\.[a-z_-]{1,5}".prop_map(String::into_bytes),
        1 => text(),
    ];
    let name = move || prop_oneof![6 => "[ -~]{1,12}".prop_map(String::into_bytes), 1 => text()];
    let optional_name =
        move || prop_oneof![6 => "[ -~]{0,12}".prop_map(String::into_bytes), 1 => text()];
    let named = move |n: BoxedStrategy<Vec<u8>>| (n, prop::option::weighted(0.02, any::<u16>()));
    (
        prop_oneof![8 => Just(RECORD_V1), 8 => Just(RECORD_V2), 1 => Just(3u16)],
        (
            any::<[u8; 8]>(),
            prop_oneof![8 => Just(0u8), 8 => Just(1u8), 1 => any::<u8>()],
            named(name().boxed()),
        ),
        any::<[u8; 8]>(),
        prop_oneof![16 => Just(0u8), 16 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![8 => Just(0u8), 8 => Just(4), 8 => Just(6), 1 => any::<u8>()],
        [
            named(event_type.boxed()),
            named(name().boxed()),
            named(optional_name().boxed()),
            named(optional_name().boxed()),
        ],
        (context, prop::option::weighted(0.02, any::<u32>())),
        prop_oneof![
            12 => Just((0usize, 0u8, 0usize)),
            1 => (1usize.., Just(0u8), Just(0usize)),
            1 => (Just(0usize), 1u8.., any::<usize>()),
            1 => (Just(0usize), Just(0u8), 1usize..4),
        ],
    )
        .prop_map(
            |(version, prefix, ts, outcome, ip_kind, fields, context, damage)| {
                let mut b = Vec::new();
                let put = |b: &mut Vec<u8>, (text, len): (Vec<u8>, Option<u16>)| {
                    let len = len.unwrap_or(text.len() as u16);
                    b.extend_from_slice(&len.to_le_bytes());
                    b.extend_from_slice(&text);
                };
                if version != RECORD_V1 {
                    b.extend_from_slice(&prefix.0);
                    b.push(prefix.1);
                    put(&mut b, prefix.2);
                }
                b.extend_from_slice(&ts);
                b.push(outcome);
                b.push(ip_kind);
                b.extend(std::iter::repeat_n(7u8, usize::from(ip_kind % 17)));
                for field in fields {
                    put(&mut b, field);
                }
                let len = context.1.unwrap_or(context.0.len() as u32);
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(&context.0);
                // Damage: cut the end, flip a byte, or append bytes.
                let (cut, flip, append) = damage;
                b.truncate(b.len().saturating_sub(cut % (b.len() + 1)));
                if flip != 0 && !b.is_empty() {
                    let at = append % b.len();
                    b[at] ^= flip;
                } else {
                    b.extend(std::iter::repeat_n(b'x', append));
                }
                (version, b)
            },
        )
}

/// JSON objects of every shape serde_json's `Value` holds.
fn context_value() -> impl proptest::strategy::Strategy<Value = Map<String, Value>> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,4}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop::collection::vec((".{0,6}", value), 0..5).prop_map(|kv| kv.into_iter().collect())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The verifier's check accepts and rejects exactly what
    /// `decode_record` does, with the same fields and errors.
    #[test]
    fn record_summary_agrees_with_decode_record((version, bytes) in record_bytes()) {
        let view = decode_record(version, &bytes);
        let summary = RecordSummary::decode(version, &bytes);
        match &view {
            Ok(v) => proptest::prop_assert_eq!(
                summary.clone(),
                Ok(RecordSummary {
                    received_at: v.received_at,
                    origin: v.origin,
                    timestamp: v.timestamp,
                    event_type: v.event_type.as_bytes(),
                    actor: v.actor.as_bytes(),
                    node: v.node.map(str::as_bytes),
                    context_json: v.context_json.as_bytes(),
                })
            ),
            Err(e) => proptest::prop_assert_eq!(summary.clone(), Err(e.clone())),
        }
        // The fast path on its own never accepts what decode rejects.
        if let Some(fast) = RecordSummary::decode_ascii(version, &bytes) {
            proptest::prop_assert!(view.is_ok());
            proptest::prop_assert_eq!(Ok(fast), summary.clone());
        }
        // The write path's indexer reads the same fields from what decodes.
        if let Ok(s) = summary {
            proptest::prop_assert_eq!(
                index_fields(version, &bytes),
                Some(IndexFields { event_type: s.event_type, actor: s.actor, node: s.node })
            );
        }
    }

    /// Whatever the encoder writes, the decoder accepts; and a context the
    /// rules accept is one serde_json parses to an object (numbers aside).
    #[test]
    fn encoded_contexts_pass_the_rules(context in context_value()) {
        let mut e = Event::new(Timestamp::from_unix_nanos(1), "a.b", "x");
        e.context = context;
        let mut buf = Vec::new();
        encode_provenance(Timestamp::from_unix_nanos(2), Origin::Client, "k", &mut buf).unwrap();
        encode_record(&e, &mut buf).unwrap();
        let view = decode_record(RECORD_V2, &buf);
        proptest::prop_assert!(view.is_ok(), "{:?}", view);
        proptest::prop_assert_eq!(view.unwrap().to_event().unwrap(), e);
    }

    /// The context rules agree with serde_json: text serde_json writes for
    /// its own object is accepted, and accepted text parses as an object.
    #[test]
    fn context_rules_agree_with_serde_json(
        text in r#"\{("[a-c\\"]{0,2}":(1|-0|2\.5|"[x\\u]{0,3}"|\[(1|\[\]|\{\})?\]|null|\{"a":[01]\}),?){0,3}\}"#
    ) {
        let ours = check_context(text.as_bytes());
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            if serde_json::to_string(&value).unwrap() == text {
                proptest::prop_assert_eq!(ours.clone(), Ok(()));
            }
        }
        if ours.is_ok() {
            let parsed = serde_json::from_str::<Value>(&text);
            proptest::prop_assert!(matches!(parsed, Ok(Value::Object(_))), "{}", text);
        }
    }
}
