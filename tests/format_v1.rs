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

#[test]
fn cat_and_export_give_the_v1_rows() {
    let log = copy_of_log();
    let expected = std::fs::read_to_string(fixture().join("export.jsonl")).unwrap();
    let r = chainlog(log.path(), &["export", "--format", "jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout, expected,
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
    let options = Options {
        read_only: true,
        ..Options::default()
    };
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
