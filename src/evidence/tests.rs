//! A pack's round trip (build, then check) and its corruption detection:
//! one byte changed in any file of the pack is found, and named.

use std::io::{Read, Write};
use std::path::Path;

use super::*;
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::{Event, Log, Options, Outcome, Timestamp};

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;
const START: i64 = 1_772_000_000 * 1_000_000_000;

fn log_with_events(dir: &Path, n: i64) -> Log {
    let log = Log::create(dir, Options::default()).unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let time = Timestamp::from_unix_nanos(START + i * DAY_NANOS / 100);
            let kind = [
                "auth.login",
                "access.export",
                "auth.failed",
                "apikey.rotated",
            ][i as usize % 4];
            let mut e = Event::new(time, kind, format!("user{}@acme.io", i % 5));
            e.source_ip = Some(format!("203.0.113.{}", i % 200).parse().unwrap());
            if kind == "auth.failed" {
                e.outcome = Outcome::Failure;
            }
            e
        })
        .collect();
    log.append_batch(&events).unwrap();
    log
}

/// A log of 400 events, 100 a day from `START`, its key, and the options
/// of a pack of its second and third days (seqs 100 to 300).
fn days_one_and_two() -> (tempfile::TempDir, Log, NoteSigner, EvidenceOptions) {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_events(&dir.path().join("log"), 400);
    let signer = NoteSigner::from_seed("audit.example", [3; 32]).unwrap();
    let options = EvidenceOptions::new(
        Timestamp::from_unix_nanos(START + DAY_NANOS),
        Timestamp::from_unix_nanos(START + 3 * DAY_NANOS),
    );
    (dir, log, signer, options)
}

fn build_to(path: &Path, log: &Log, signer: &NoteSigner, options: &EvidenceOptions) -> PackSummary {
    let file = std::fs::File::create(path).unwrap();
    build(log, signer, options, file, &|_| None, &mut |_, _| {}).unwrap()
}

fn files_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().to_string(), bytes)
        })
        .collect()
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn a_pack_round_trips_and_any_changed_byte_is_found_in_its_file() {
    let (dir, log, signer, mut options) = days_one_and_two();
    let witnessed = log.checkpoint("chainlog").unwrap().sign(&signer).unwrap();
    options.seed = 11;
    options.sample = 8;
    options.witnessed_checkpoint = Some(witnessed);
    let pack = dir.path().join("pack.zip");
    let summary = build_to(&pack, &log, &signer, &options);
    assert_eq!((summary.first_seq, summary.end_seq), (100, 300));
    assert_eq!(summary.rows_in_period, 200);
    assert_eq!(summary.failures, 50);
    let report = check(&pack, Some(&signer.verifier())).unwrap();
    assert_eq!(
        (report.rows, report.sample, report.first_seq),
        (200, 8, 100)
    );
    assert!(report.witnessed && report.witnessed_linked && report.key_given);

    let files = files_of(&pack);
    assert_eq!(files.len(), summary.files);
    for (i, (name, bytes)) in files.iter().enumerate() {
        if bytes.is_empty() {
            continue;
        }
        let mut changed = files.clone();
        let at = bytes.len() / 2;
        changed[i].1[at] ^= 0x20;
        let copy = dir.path().join("changed.zip");
        write_zip(&copy, &changed);
        let err = check(&copy, Some(&signer.verifier())).expect_err(name);
        assert_eq!(err.file(), name.as_str(), "{name}: {err}");
    }
    // Another key's verifier, and a file added.
    let other = NoteSigner::from_seed("audit.example", [4; 32]).unwrap();
    let err = check(&pack, Some(&other.verifier())).unwrap_err();
    assert_eq!(err.file(), SEAL_FILE);
    let mut added = files.clone();
    added.push(("notes.txt".into(), b"trust me\n".to_vec()));
    let copy = dir.path().join("added.zip");
    write_zip(&copy, &added);
    assert!(matches!(check(&copy, None), Err(PackError::Unlisted { file }) if file == "notes.txt"));
}

#[test]
fn a_pack_from_the_first_record_and_an_empty_period_check_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_events(&dir.path().join("log"), 50);
    let signer = NoteSigner::from_seed("audit.example", [3; 32]).unwrap();
    let all = EvidenceOptions::new(Timestamp::from_unix_nanos(0), Timestamp::now());
    let pack = dir.path().join("all.zip");
    let summary = build_to(&pack, &log, &signer, &all);
    assert_eq!((summary.first_seq, summary.end_seq), (0, 50));
    let report = check(&pack, Some(&signer.verifier())).unwrap();
    assert_eq!((report.rows, report.sample), (50, 32));
    let none = EvidenceOptions::new(
        Timestamp::from_unix_nanos(START - 2 * DAY_NANOS),
        Timestamp::from_unix_nanos(START - DAY_NANOS),
    );
    let empty = dir.path().join("empty.zip");
    let summary = build_to(&empty, &log, &signer, &none);
    assert_eq!((summary.first_seq, summary.end_seq), (50, 50));
    let report = check(&empty, Some(&signer.verifier())).unwrap();
    assert_eq!((report.rows, report.sample), (0, 0));
    let inverted = EvidenceOptions::new(Timestamp::now(), Timestamp::from_unix_nanos(0));
    let out = std::io::sink();
    let err = build(&log, &signer, &inverted, out, &|_| None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, EvidenceError::BadRequest(_)), "{err}");
}

#[test]
fn the_archive_state_is_asked_for_the_packs_seqs_and_reported() {
    let (dir, log, signer, mut options) = days_one_and_two();
    options.archive = Some(ArchiveState(std::sync::Arc::new(|first, end| {
        serde_json::json!({
            "target": "s3://audit/prod", "first_seq": first, "end_seq": end,
            "archived_seqs": [0, 255], "records_not_archived": end - 256,
            "segments": [{"present": true}, {"present": false}],
            "locked_segments": 1, "earliest_retain_until": null,
            "problems": ["s3://audit/prod/00000000000000000128.seg is missing"],
        })
    })));
    let pack = dir.path().join("pack.zip");
    build_to(&pack, &log, &signer, &options);
    assert!(check(&pack, Some(&signer.verifier())).is_ok());
    let file = |name: &str| {
        let files = files_of(&pack);
        files.into_iter().find(|(n, _)| n == name).unwrap().1
    };
    let state: serde_json::Value = serde_json::from_slice(&file(STATE_FILE)).unwrap();
    let archive = &state["archive"];
    assert_eq!(
        (archive["first_seq"].as_u64(), archive["end_seq"].as_u64()),
        (Some(100), Some(300))
    );
    let html = String::from_utf8(file("report.html")).unwrap();
    for shown in [
        "s3://audit/prod",
        "records of the period not archived yet",
        "1 of 2",
        "00000000000000000128.seg is missing",
    ] {
        assert!(html.contains(shown), "the report lacks {shown:?}");
    }
    // Without an archive, the pack says it says nothing about one.
    options.archive = None;
    build_to(&pack, &log, &signer, &options);
    let state: serde_json::Value = serde_json::from_slice(&file(STATE_FILE)).unwrap();
    assert_eq!(state["archive"]["configured"], false);
}

#[test]
fn a_witnessed_checkpoint_is_linked_to_the_end_or_refused() {
    let (dir, log, signer, mut options) = days_one_and_two();
    let pack = dir.path().join("pack.zip");
    let proof_of = |pack: &Path| {
        files_of(pack)
            .into_iter()
            .find(|(n, _)| n == WITNESSED_CONSISTENCY_FILE)
            .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(&b).unwrap())
    };
    // A witnessed tree past the end (400 records), and one before it (a
    // checkpoint of the first 150, as a witness saw the log then).
    let mut now = log.checkpoint("chainlog").unwrap();
    options.witnessed_checkpoint = Some(now.sign(&signer).unwrap());
    build_to(&pack, &log, &signer, &options);
    assert!(
        check(&pack, Some(&signer.verifier()))
            .unwrap()
            .witnessed_linked
    );
    let proof = proof_of(&pack).unwrap();
    assert_eq!(
        (proof["old_size"].as_u64(), proof["new_size"].as_u64()),
        (Some(300), Some(400))
    );
    let mut prover = log.prover().unwrap();
    let earlier = Checkpoint {
        root: crate::hash::proof::tree_root(&mut prover, 150).unwrap(),
        size: 150,
        head: Some(prover.stored_hash(149).unwrap()),
        ..now.clone()
    };
    options.witnessed_checkpoint = Some(earlier.sign(&signer).unwrap());
    build_to(&pack, &log, &signer, &options);
    assert!(
        check(&pack, Some(&signer.verifier()))
            .unwrap()
            .witnessed_linked
    );
    assert_eq!(proof_of(&pack).unwrap()["old_size"].as_u64(), Some(150));
    // A fork: the log's size, another root. No pack is made.
    now.root[0] ^= 1;
    options.witnessed_checkpoint = Some(now.sign(&signer).unwrap());
    let file = std::fs::File::create(dir.path().join("fork.zip")).unwrap();
    let err = build(&log, &signer, &options, file, &|_| None, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("forked"), "{err}");
    // Witnesses that saw more than the log has: records were lost since.
    let ahead = Checkpoint {
        size: 500,
        ..now.clone()
    };
    options.witnessed_checkpoint = Some(ahead.sign(&signer).unwrap());
    let file = std::fs::File::create(dir.path().join("ahead.zip")).unwrap();
    let err = build(&log, &signer, &options, file, &|_| None, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("records were lost"), "{err}");
    // Another log's checkpoint, or one signed by another key.
    let other = NoteSigner::from_seed("audit.example", [4; 32]).unwrap();
    now.root[0] ^= 1;
    for note in [
        now.sign(&other).unwrap(),
        Checkpoint {
            origin: "chainlog/other".into(),
            ..now.clone()
        }
        .sign(&signer)
        .unwrap(),
    ] {
        options.witnessed_checkpoint = Some(note);
        let file = std::fs::File::create(dir.path().join("bad.zip")).unwrap();
        let err = build(&log, &signer, &options, file, &|_| None, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, EvidenceError::BadWitnessed(_)), "{err}");
    }
}

#[test]
/// Retention deletes records but keeps the tree's tiles, so a witnessed
/// checkpoint from before the retained records is still linked.
fn a_witnessed_checkpoint_older_than_retention_is_still_linked() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes: crate::format::segment::MIN_SEGMENT_BYTES,
        ..Options::default()
    };
    let log = Log::create(dir.path().join("log"), options).unwrap();
    let signer = NoteSigner::from_seed("audit.example", [3; 32]).unwrap();
    let event = |i: i64| {
        let mut e = Event::new(
            Timestamp::from_unix_nanos(START + i * DAY_NANOS / 100),
            "auth.login",
            "alice",
        );
        e.context.insert("pad".into(), "x".repeat(400).into());
        e
    };
    log.append(&event(0)).unwrap();
    let early = log.checkpoint("chainlog").unwrap().sign(&signer).unwrap();
    for i in 1..2000 {
        log.append(&event(i)).unwrap();
    }
    let policy = crate::retention::RetentionPolicy {
        max_age: None,
        max_bytes: Some(4 * crate::format::segment::MIN_SEGMENT_BYTES),
    };
    let outcome = log.apply_retention(&policy).unwrap();
    assert!(!outcome.deleted.is_empty(), "retention deleted nothing");
    let mut pack_options = EvidenceOptions::new(
        Timestamp::from_unix_nanos(START + 18 * DAY_NANOS),
        Timestamp::from_unix_nanos(START + 19 * DAY_NANOS),
    );
    pack_options.witnessed_checkpoint = Some(early);
    let pack = dir.path().join("pack.zip");
    build_to(&pack, &log, &signer, &pack_options);
    let report = check(&pack, Some(&signer.verifier())).unwrap();
    assert!(report.witnessed && report.witnessed_linked);
    assert!(
        report.first_seq > 1,
        "the period starts after the witnessed tree"
    );
    assert!(files_of(&pack)
        .iter()
        .any(|(n, _)| n == WITNESSED_CONSISTENCY_FILE));
}
