//! Real audit data: the 2,900 AWS CloudTrail events in
//! `tests/fixtures/cloudtrail` (an attack simulation, see its
//! UPSTREAM-README.md and LICENSE), mapped to chainlog events, stored through
//! the library and through the CLI, and read back unchanged.

use std::path::Path;
use std::process::{Command, Stdio};

use chainlog::event::{encode_record, validate_event_type};
use chainlog::format::frame::padded_len;
use chainlog::format::segment::{data_end_limit, HEADER_BYTES};
use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Durability, Event, Log, Options, Outcome, Receipt};
use serde_json::{Map, Value};

const SEGMENT_BYTES: u64 = 1 << 20;

#[path = "support/cloudtrail.rs"]
mod mapping;
use mapping::{cloudtrail_records, snake_case, to_event};

fn events() -> Vec<Event> {
    let records = cloudtrail_records();
    assert_eq!(records.len(), 2900);
    records.iter().map(to_event).collect()
}

/// Batches that fit `append_batch`: bounded in events and frame bytes.
fn batches(events: &[Event]) -> Vec<&[Event]> {
    let capacity = (data_end_limit(SEGMENT_BYTES) - HEADER_BYTES) as usize;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    let mut scratch = Vec::new();
    for (i, e) in events.iter().enumerate() {
        scratch.clear();
        chainlog::event::record::encode_provenance(
            chainlog::storage::sim::SIM_CLOCK_START,
            chainlog::event::Origin::Client,
            chainlog::log::DEFAULT_APPENDER,
            &mut scratch,
        )
        .unwrap();
        encode_record(e, &mut scratch).unwrap();
        let frame = padded_len(scratch.len());
        if bytes + frame > capacity || i - start == 500 {
            out.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += frame;
    }
    out.push(&events[start..]);
    out
}

fn assert_same_events(stored: &[Event], expected: &[Event]) {
    assert_eq!(stored.len(), expected.len());
    for (i, (got, want)) in stored.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "event {i}");
        // Same context JSON, key order included.
        assert_eq!(
            serde_json::to_string(&got.context).unwrap(),
            serde_json::to_string(&want.context).unwrap(),
            "event {i}"
        );
    }
}

#[test]
fn the_mapping_fits_the_event_rules() {
    assert_eq!(snake_case("GetObject"), "get_object");
    assert_eq!(snake_case("DescribeDBInstances"), "describe_db_instances");
    assert_eq!(snake_case("ListMFADevices"), "list_mfa_devices");
    assert_eq!(
        snake_case("AddPermission20150331v2"),
        "add_permission20150331v2"
    );
    let events = events();
    for e in &events {
        validate_event_type(&e.event_type).unwrap();
        e.validate().unwrap();
    }
    let types: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "s3.list_buckets",
        "iam.create_access_key",
        "signin.console_login",
        "resource-explorer-2.list_indexes",
        "lambda.create_function20150331",
        "sts.get_caller_identity",
    ] {
        assert!(types.contains(t), "{t} not among {types:?}");
    }
    assert!(events.iter().any(|e| e.outcome == Outcome::Failure));
    assert!(events.iter().any(|e| e.source_ip.is_none()));
    assert!(events.iter().any(|e| e.actor.starts_with("arn:aws:iam::")));
    // The data is not in time order, and stays in append order.
    assert!(events.windows(2).any(|w| w[0].timestamp > w[1].timestamp));
}

#[test]
fn cloudtrail_events_round_trip_through_the_library() {
    let events = events();
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::create(
        tmp.path(),
        Options {
            segment_bytes: SEGMENT_BYTES,
            durability: Durability::None,
            ..Options::default()
        },
    )
    .unwrap();
    let mut receipts: Vec<Receipt> = Vec::new();
    for batch in batches(&events) {
        receipts.extend(log.append_batch(batch).unwrap());
    }
    log.close().unwrap();
    assert_eq!(
        receipts.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..2900).collect::<Vec<_>>()
    );

    let log = Log::open(tmp.path(), Options::for_reading()).unwrap();
    assert!(log.state().segments > 2, "{:?}", log.state());
    let records: Vec<_> = log.iter_from(0).map(Result::unwrap).collect();
    let stored: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
    assert_same_events(&stored, &events);
    let read_receipts: Vec<Receipt> = records
        .iter()
        .map(|r| Receipt {
            seq: r.seq,
            hash: r.hash,
        })
        .collect();
    assert_eq!(read_receipts, receipts);

    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 2900);
    assert_eq!(report.head, receipts.last().map(|r| r.hash));
}

fn chainlog(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_chainlog"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chainlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn cloudtrail_events_round_trip_through_the_cli() {
    let events = events();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("cloudtrail.jsonl");
    let mut jsonl = String::new();
    for e in &events {
        jsonl.push_str(&serde_json::to_string(e).unwrap());
        jsonl.push('\n');
    }
    std::fs::write(&input, jsonl).unwrap();
    let dir = tmp.path().join("log");
    chainlog(&dir, &["init", "--segment-bytes", "1MiB"]);
    let out = chainlog(
        &dir,
        &[
            "append",
            "--receipts",
            "--durability",
            "batch",
            input.to_str().unwrap(),
        ],
    );
    let receipts: Vec<Receipt> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(receipts.len(), 2900);

    let out = chainlog(&dir, &["cat"]);
    let mut stored = Vec::new();
    let mut stored_receipts = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut v: Map<String, Value> = serde_json::from_str(line).unwrap();
        let seq = v.remove("seq").unwrap().as_u64().unwrap();
        let hash = v.remove("hash").unwrap().as_str().unwrap().parse().unwrap();
        stored_receipts.push(Receipt { seq, hash });
        // What cat prints (minus seq and hash) is valid append input.
        stored.push(serde_json::from_value::<Event>(Value::Object(v)).unwrap());
    }
    assert_same_events(&stored, &events);
    assert_eq!(stored_receipts, receipts);

    let out = chainlog(&dir, &["verify"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let head = receipts.last().unwrap().hash;
    assert!(
        text.starts_with("intact: 2900 records in ") && text.trim_end().ends_with(&head.to_hex()),
        "{text}"
    );
}
