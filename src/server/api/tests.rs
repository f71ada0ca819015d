//! Tests of the route handlers' helpers.

use crate::event::{EncodeRecord, Timestamp};
use crate::server::ingest::{self, BodyKind};

use super::*;
use crate::event::json::cases::{any_event, encoded, EventCase};
use proptest::prelude::*;

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("%2e%2e"), "..");
    assert_eq!(percent_decode("a%2Fb"), "a/b");
    assert_eq!(percent_decode("acme"), "acme");
    assert_eq!(percent_decode("%"), "%");
    assert_eq!(percent_decode("a%2"), "a%2");
    assert_eq!(percent_decode("%ff"), "\u{fffd}");
}

#[test]
fn body_errors_name_the_event() {
    let max = 3;
    let bad_field = r#"[{"event":"a.b","actor":"x"},{"event":"a.b"}]"#;
    let e = parse_events(bad_field, BodyKind::Json, max).unwrap_err();
    assert_eq!(e.error, "invalid_event");
    assert!(
        e.detail
            .starts_with("event at index 1: missing field `actor`"),
        "{}",
        e.detail
    );
    assert_eq!(e.detail.matches(" at line ").count(), 1, "{}", e.detail);

    let e = parse_events(r#"[{"event":"a.b","actor":"x"},"#, BodyKind::Json, max).unwrap_err();
    assert_eq!(e.error, "malformed_json");

    let e = parse_events(r#"[{"event":"a.b","actor":"x"}] x"#, BodyKind::Json, max).unwrap_err();
    assert_eq!(e.error, "malformed_json");

    let four = r#"[{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"},{"event":"a.b","actor":"x"}]"#;
    assert_eq!(
        parse_events(four, BodyKind::Json, max).unwrap_err().error,
        "too_many_events"
    );
    assert_eq!(parse_events(four, BodyKind::Json, 4).unwrap().len(), 4);

    let nd = "{\"event\":\"a.b\",\"actor\":\"x\"}\r\n\n{\"event\":\"a.b\",\"actor\":\"x\",\"bogus\":1}\n";
    let e = parse_events(nd, BodyKind::NdJson, max).unwrap_err();
    assert!(
        e.detail.starts_with("line 3: unknown field `bogus`"),
        "{}",
        e.detail
    );

    let e = parse_events("42", BodyKind::Json, max).unwrap_err();
    assert_eq!(e.error, "malformed_json");
}

/// A body of `cases` as `kind` holds them, separators drawn from `seed`.
fn body_of(cases: &[EventCase], kind: BodyKind, seed: u64) -> String {
    let pick =
        |i: usize, choices: &[&'static str]| choices[(seed >> (i % 60)) as usize % choices.len()];
    match kind {
        BodyKind::Json if cases.len() == 1 && seed % 2 == 0 => cases[0].text.clone(),
        BodyKind::Json => {
            let items: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
            format!(
                "{}[{}]{}",
                pick(0, &["", " ", "\n"]),
                items.join(pick(1, &[",", " , ", ",\r\n"])),
                pick(2, &["", "\n", " "])
            )
        }
        // A line holds one event: no newlines inside.
        BodyKind::NdJson => cases
            .iter()
            .enumerate()
            .map(|(i, c)| c.text.replace('\n', " ") + pick(i, &["\n", "\r\n", "\n\n", "\n \n"]))
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// The borrowed path takes a body exactly when the owned path
    /// parses it (and nothing in it is declined), and then appends the
    /// same records or fails on the same event with the same error.
    #[test]
    fn the_borrowed_path_appends_what_the_owned_path_does(
        cases in prop::collection::vec(any_event(), 0..6),
        ndjson in any::<bool>(),
        max in 0usize..8,
        seed in any::<u64>(),
    ) {
        let kind = if ndjson { BodyKind::NdJson } else { BodyKind::Json };
        let body = body_of(&cases, kind, seed);
        let before = Timestamp::now();
        let owned = parse_events(&body, kind, max);
        let borrowed = ingest::borrowed_events(&body, kind, max);
        let after = Timestamp::now();
        match borrowed {
            Some(mut borrowed) => {
                let owned = owned.unwrap_or_else(|e| panic!("owned path refused ({e}) {body:?}"));
                prop_assert_eq!(borrowed.len(), owned.len());
                let now = before..=after;
                for (b, o) in borrowed.iter_mut().zip(&owned) {
                    if now.contains(&b.timestamp) && now.contains(&o.timestamp) {
                        b.timestamp = o.timestamp;
                    }
                    prop_assert_eq!(
                        encoded(|out| b.encode_record(out)),
                        encoded(|out| o.encode_record(out)),
                        "{:?}", body
                    );
                }
                prop_assert_eq!(encode_events(&borrowed, "k"), encode_events(&owned, "k"));
            }
            None => prop_assert!(
                owned.is_err() || cases.iter().any(|c| !c.takeable),
                "declined a body the owned path takes: {:?}", body
            ),
        }
    }
}

#[test]
fn the_usual_bodies_go_the_borrowed_way() {
    let event = r#"{"event":"pcap.download","actor":"client-1@acme.io","node":"nyc-edge-01","resource":"a3f7c2b1","ip":"203.0.113.42","context":{"bytes":18231,"i":7}}"#;
    let array = format!("[{}]", vec![event; 1000].join(","));
    let taken = |body: &str, kind, max| ingest::borrowed_events(body, kind, max).map(|e| e.len());
    assert_eq!(taken(&array, BodyKind::Json, 1000), Some(1000));
    assert_eq!(taken(event, BodyKind::Json, 1), Some(1));
    assert_eq!(
        taken(&format!(" \n{event}\r\n"), BodyKind::Json, 1),
        Some(1)
    );
    assert_eq!(taken(" [ ] ", BodyKind::Json, 1), Some(0));
    let lines = format!("{event}\r\n\n  \n{event}\n{event}");
    assert_eq!(taken(&lines, BodyKind::NdJson, 3), Some(3));
    assert_eq!(taken("", BodyKind::NdJson, 3), Some(0));
    // Over the limit, or anything amiss: the owned path answers.
    assert_eq!(taken(&array, BodyKind::Json, 999), None);
    assert_eq!(taken(&lines, BodyKind::NdJson, 2), None);
    for bad in [
        format!("[{event},]"),
        format!("[{event}] x"),
        format!("[{event}"),
        format!("[{event},1]"),
        format!("[,{event}]"),
        format!("{event} {event}"),
        "[".to_string(),
        "42".to_string(),
    ] {
        assert_eq!(taken(&bad, BodyKind::Json, 10), None, "{bad}");
        assert!(parse_events(&bad, BodyKind::Json, 10).is_err(), "{bad}");
    }
}
