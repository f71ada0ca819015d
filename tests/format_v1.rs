//! A log written by the version 1 binary (`tests/fixtures/v1-log`: three
//! segments after a retention run, with a legal hold set and released, a
//! signed checkpoint, and that binary's `verify --json` and `export`
//! output) stays readable by this build, and is refused for writing until
//! it is migrated.

use std::path::{Path, PathBuf};
use std::process::Command;

use chainlog::event::Origin;
use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Error, Log, Options};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log")
}

/// A copy of the fixture's log directory (tests never touch the fixture).
fn copy_of_log() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let from = fixture().join("log");
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    tmp
}

/// Every file in `dir` with its bytes (but the writer's lock file, which
/// holds nothing), to show that nothing changed.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != "chainlog.lock")
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn chainlog(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_v1_log_verifies_intact_and_matches_its_checkpoint() {
    let log = copy_of_log();
    let report = verify_dir(&FsStorage, log.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 1259);

    let cp = fixture().join("cp.note");
    let pk = fixture().join("pk");
    let r = chainlog(
        log.path(),
        &[
            "verify",
            "--json",
            "--checkpoint",
            cp.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ours: Value = serde_json::from_str(&r.stdout).unwrap();
    let theirs: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("verify.json")).unwrap())
            .unwrap();
    // Every member the version 1 binary reported is reported alike (this
    // build may report more).
    for (key, value) in theirs.as_object().unwrap() {
        assert_eq!(&ours[key], value, "verify --json member {key}");
    }
}

/// Export rows as the version 1 binary wrote them: this build adds the
/// provenance members, which a v1 record has none of, so each row must end
/// with exactly these three nulls; they are cut off.
fn without_v1_provenance(jsonl: &str) -> String {
    const NULLS: &str = r#","received_at":null,"origin":null,"appender":null}"#;
    jsonl
        .lines()
        .map(|l| {
            let kept = l.strip_suffix(NULLS).unwrap_or_else(|| panic!("{l}"));
            format!("{kept}}}\n")
        })
        .collect()
}

#[test]
fn cat_and_export_give_the_v1_rows() {
    let log = copy_of_log();
    let expected = std::fs::read_to_string(fixture().join("export.jsonl")).unwrap();
    let r = chainlog(log.path(), &["export", "--format", "jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        without_v1_provenance(&r.stdout),
        expected,
        "export differs from the version 1 export"
    );
    // `cat` leaves out absent fields, which `export` writes as null.
    let r = chainlog(log.path(), &["cat"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cat = json_lines(&r.stdout);
    let mut exported = json_lines(&expected);
    for row in &mut exported {
        row.as_object_mut().unwrap().retain(|_, v| !v.is_null());
    }
    assert_eq!(cat.len(), exported.len());
    for (ours, theirs) in cat.iter().zip(&exported) {
        assert_eq!(ours, theirs);
    }
}

#[test]
fn the_library_reads_v1_records_with_no_provenance() {
    let log = copy_of_log();
    let before = contents(log.path());
    let options = Options::for_reading();
    let handle = Log::open(log.path(), options).unwrap();
    let records: Vec<_> = handle.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 1259);
    assert_eq!(records[0].seq, 604);
    for r in &records {
        assert_eq!(r.origin, Origin::Legacy, "seq {}", r.seq);
        assert_eq!((r.received_at, r.appender.as_deref()), (None, None));
    }
    // Version 1 `log.*` records read under the legacy rule.
    let engine: Vec<_> = records
        .iter()
        .filter(|r| r.event.event_type.starts_with("log."))
        .map(|r| (r.seq, r.event.event_type.as_str()))
        .collect();
    assert_eq!(
        engine,
        [
            (1200, "log.hold_set"),
            (1201, "log.hold_released"),
            (1802, "log.retention")
        ]
    );
    drop(handle);
    assert!(
        before == contents(log.path()),
        "a read-only open changed files"
    );
}

#[test]
fn opening_a_v1_log_for_writing_asks_for_a_migration() {
    let log = copy_of_log();
    let before = contents(log.path());
    let err = Log::open(log.path(), Options::default()).unwrap_err();
    assert!(
        matches!(&err, Error::MigrationNeeded { version: 1, dir } if dir == log.path()),
        "{err:?}"
    );
    assert!(err.to_string().contains("chainlog migrate"), "{err}");
    assert!(
        before == contents(log.path()),
        "a refused open changed files"
    );

    // The CLI says the same, with the usage-or-input exit code.
    let r = chainlog(log.path(), &["append"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("chainlog migrate"), "{}", r.stderr);
    assert!(
        before == contents(log.path()),
        "a refused append changed files"
    );
}

#[test]
fn migrate_keeps_the_chain_and_the_log_takes_v2_records() {
    let log = copy_of_log();
    let cp = fixture().join("cp.note");
    let pk = fixture().join("pk");
    let migration = Log::migrate(log.path(), Options::default()).unwrap();
    assert_eq!(migration.from_version, 1);
    let record = migration.record.unwrap();
    assert_eq!(record.seq, 1863);

    // A v2 log now: appends work, and take the current layout.
    let handle = Log::open(log.path(), Options::default()).unwrap();
    let mut e = chainlog::Event::new(chainlog::Timestamp::now(), "auth.login", "alice@acme.io");
    e.context.insert("after".into(), "migration".into());
    let appended = handle.append(&e).unwrap();
    assert_eq!(appended.seq, 1864);
    let records: Vec<_> = handle.iter_from(1862).collect::<Result<_, _>>().unwrap();
    drop(handle);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].origin, Origin::Legacy);
    let migrated = &records[1];
    assert_eq!(migrated.event.event_type, "log.migrated");
    assert_eq!(migrated.origin, Origin::Engine);
    assert_eq!(migrated.event.context["from_version"], 1);
    assert_eq!(migrated.hash, record.hash);
    assert!(migrated.received_at.is_some());
    assert_eq!(records[2].origin, Origin::Client);
    assert_eq!(records[2].event, e);
    assert_eq!(records[2].appender.as_deref(), Some("chainlog"));
    assert!(records[2].received_at >= migrated.received_at);
    // The newest v1 segment was sealed; the migration record starts a v2 one.
    let names: Vec<String> = contents(log.path())
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000604.seg",
            "00000000000000001202.seg",
            "00000000000000001802.seg",
            "00000000000000001863.seg"
        ]
    );

    // Intact, and still what the checkpoint signed before the migration.
    let report = verify_dir(&FsStorage, log.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 1259 + 2);
    let r = chainlog(
        log.path(),
        &[
            "verify",
            "--json",
            "--checkpoint",
            cp.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ours: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(ours["checkpoint"]["matched"], true, "{ours}");
    // The records the v1 binary wrote export as they did.
    let r = chainlog(log.path(), &["export", "--format", "jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = std::fs::read_to_string(fixture().join("export.jsonl")).unwrap();
    let v1_rows: String = r
        .stdout
        .lines()
        .take(1259)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        without_v1_provenance(&v1_rows),
        expected,
        "the v1 rows changed"
    );
    assert_eq!(r.stdout.lines().count(), 1259 + 2);
}

#[test]
fn chainlog_migrate_then_append_then_migrate_again() {
    let log = copy_of_log();
    let dir = log.path().to_str().unwrap();
    let r = Command::new(BIN)
        .args(["migrate", dir])
        .env_remove("CHAINLOG_DIR")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8(r.stdout).unwrap();
    assert!(out.contains("from format version 1 to 2"), "{out}");

    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), "{\"event\":\"a.b\",\"actor\":\"x\"}\n").unwrap();
    let r = chainlog(
        log.path(),
        &[
            "append",
            "--appender",
            "ops-bot",
            input.path().to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let handle = Log::open(log.path(), Options::for_reading()).unwrap();
    let last = handle.iter_from(1864).next().unwrap().unwrap();
    assert_eq!(last.appender.as_deref(), Some("ops-bot"));
    drop(handle);

    let r = chainlog(log.path(), &["migrate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    let report = verify_dir(&FsStorage, log.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 1259 + 2);
}

#[test]
fn a_damaged_v1_log_is_not_migrated() {
    let log = copy_of_log();
    // Change one byte of a record in the oldest segment (its CRC then fails).
    let seg = log.path().join("00000000000000000604.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[128 + 48 + 20] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let before = contents(log.path());
    let err = Log::migrate(log.path(), Options::default()).unwrap_err();
    assert!(err.is_corruption(), "{err:?}");
    assert!(err.to_string().contains("nothing was migrated"), "{err}");
    assert!(
        before == contents(log.path()),
        "a refused migration changed files"
    );
    // And it still refuses writes.
    assert!(matches!(
        Log::open(log.path(), Options::default()),
        Err(Error::MigrationNeeded { .. })
    ));
}

#[test]
fn an_empty_v1_log_is_replaced_by_a_v2_segment() {
    use chainlog::format::segment::{self, SegmentHeader, MIN_SEGMENT_BYTES};
    use chainlog::hash::merkle::Frontier;
    use chainlog::storage::sim::SimDisk;
    use chainlog::storage::Storage;
    use chainlog::{ChainHash, LogId};
    // What `chainlog init` of version 1 left: one empty version 1 segment.
    let disk = SimDisk::new();
    let dir = Path::new("/log");
    let log_id = LogId([7; 16]);
    let header = SegmentHeader {
        version: 1,
        log_id,
        base_seq: 0,
        prev_hash: ChainHash::genesis(&log_id),
        segment_bytes: MIN_SEGMENT_BYTES,
        created_at: chainlog::Timestamp::from_unix_nanos(1),
    };
    segment::create(&disk, dir, &header, &Frontier::new()).unwrap();
    let storage = std::sync::Arc::new(disk.clone());
    assert!(matches!(
        Log::open_in(storage.clone(), dir, Options::default()),
        Err(Error::MigrationNeeded { version: 1, .. })
    ));
    let migration = Log::migrate_in(storage.clone(), dir, Options::default()).unwrap();
    assert_eq!(migration.record.unwrap().seq, 0);
    let file = disk.open(&dir.join(segment::file_name(0)), false).unwrap();
    let replaced = segment::read_header(&*file, "x").unwrap();
    assert_eq!(replaced.version, segment::FORMAT_VERSION);
    assert_eq!(
        (replaced.log_id, replaced.base_seq, replaced.prev_hash),
        (log_id, 0, header.prev_hash)
    );
    let report = verify_dir(&disk, dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 1);
    assert_eq!(report.segments, 1);
}

/// Version 1 segments recorded no times of receipt: age-based retention
/// judges them by their newest event time (the version 1 rule), and the
/// record's entries carry no `max_received_at`.
#[test]
fn age_retention_judges_v1_segments_by_event_time() {
    use chainlog::retention::RetentionPolicy;
    use chainlog::storage::SetClock;
    use chainlog::Timestamp;
    use std::sync::Arc;

    let log = copy_of_log();
    Log::migrate(log.path(), Options::default()).unwrap();
    let policy = RetentionPolicy::default(); // 90 days
                                             // The fixture's newest v1 events are dated 2026-12-06 (its oldest segment
                                             // holds some): 80 days on, by the engine's clock, none is due...
    let newest_v1 = Log::open(log.path(), Options::default())
        .unwrap()
        .iter_from(0)
        .map(|r| r.unwrap())
        .filter(|r| r.origin == Origin::Legacy)
        .map(|r| r.event.timestamp)
        .max()
        .unwrap();
    let days = |n: i64| Timestamp::from_unix_nanos(newest_v1.unix_nanos() + n * 86_400_000_000_000);
    let clock = Arc::new(SetClock::new(Arc::new(FsStorage), days(80)));
    let handle = Log::open_in(clock.clone(), log.path(), Options::default()).unwrap();
    assert!(handle.plan_retention(&policy).unwrap().is_empty());
    // ... and 91 days on, every sealed v1 segment is (the v2 one is active).
    clock.set(days(91));
    let due = handle.plan_retention(&policy).unwrap();
    let bases: Vec<u64> = due.iter().map(|d| d.base_seq).collect();
    assert_eq!(bases, [604, 1202, 1802]);
    assert!(due.iter().all(|d| d.max_received_at.is_none()), "{due:?}");
    assert!(due.iter().all(|d| d.max_timestamp <= newest_v1), "{due:?}");
    let outcome = handle.apply_retention(&policy).unwrap();
    assert_eq!(outcome.deleted, due);
    let record = handle
        .iter_from(outcome.record.unwrap().seq)
        .next()
        .unwrap()
        .unwrap();
    let deleted = record.event.context["deleted"].as_array().unwrap();
    assert!(deleted.iter().all(|d| d.get("max_received_at").is_none()));
    assert_eq!(
        record.event.context["cutoff"],
        Timestamp::from_unix_nanos(days(91).unix_nanos() - 90 * 86_400_000_000_000).to_string()
    );
    drop(handle);
    let report = verify_dir(&FsStorage, log.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}
