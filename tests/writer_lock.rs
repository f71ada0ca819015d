//! The single-writer lock (issue 14): deleting or replacing `chainlog.lock`
//! must not let a second writer in, a symbolic link in its place is not
//! followed, and the file is still locked for older chainlog binaries.

#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Error, Event, Log, Options, Timestamp};

const LOCK: &str = "chainlog.lock";

fn event(i: i64) -> Event {
    Event::new(
        Timestamp::from_unix_nanos(1_773_049_934_000_000_000 + i),
        "apikey.revoked",
        "alice@acme.io",
    )
}

/// A second writer, in this process and as `chainlog append` in another
/// one, is refused as locked, and the CLI prints no receipt.
fn assert_second_writer_refused(dir: &Path) {
    match Log::open(dir, Options::default()) {
        Err(Error::Locked(_)) => {}
        other => panic!("a second Log::open was not refused as locked: {other:?}"),
    }
    // It may be refused, and gone, before its input arrives.
    let line = r#"{"timestamp":"2026-03-09T09:52:14Z","event":"apikey.revoked","actor":"mallory"}"#;
    let out = output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_chainlog"))
            .arg("--dir")
            .arg(dir)
            .args(["append", "--durability", "always", "--receipts"]),
        format!("{line}\n").as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "chainlog append: {stderr} {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("locked by another writer"),
        "chainlog append: {stderr}"
    );
    assert!(out.stdout.is_empty(), "the second writer printed a receipt");
}

/// The writer keeps appending after the attempts, and the log holds its
/// records only.
fn assert_first_writer_unharmed(dir: &Path, log: Log) {
    log.append(&event(1)).unwrap();
    log.close().unwrap();
    let report = verify_dir(&FsStorage, dir, &mut |_| {}).unwrap();
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:?}"
    );
    assert_eq!(report.records, 2);
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::create(&dir, Options::default()).unwrap();
    log.append(&event(0)).unwrap();
    std::fs::remove_file(dir.join(LOCK)).unwrap();
    assert_second_writer_refused(&dir);
    assert_first_writer_unharmed(&dir, log);
}

#[test]
fn replacing_the_lock_file_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::create(&dir, Options::default()).unwrap();
    log.append(&event(0)).unwrap();
    // Deleted and created anew.
    std::fs::remove_file(dir.join(LOCK)).unwrap();
    File::create(dir.join(LOCK)).unwrap();
    assert_second_writer_refused(&dir);
    // Renamed over.
    File::create(dir.join("other")).unwrap();
    std::fs::rename(dir.join("other"), dir.join(LOCK)).unwrap();
    assert_second_writer_refused(&dir);
    assert_first_writer_unharmed(&dir, log);
}

/// An older chainlog locks only `chainlog.lock`: it must still find it
/// locked while a writer runs, and free once the writer is closed.
#[test]
fn the_lock_file_stays_locked_for_older_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::create(&dir, Options::default()).unwrap();
    let old = File::options().write(true).open(dir.join(LOCK)).unwrap();
    assert!(old.try_lock().is_err(), "chainlog.lock is not locked");
    log.close().unwrap();
    old.try_lock().unwrap();
}

#[test]
fn a_symbolic_link_in_place_of_the_lock_file_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    Log::create(&dir, Options::default())
        .and_then(Log::close)
        .unwrap();
    let target = tmp.path().join("elsewhere");
    std::fs::remove_file(dir.join(LOCK)).unwrap();
    std::os::unix::fs::symlink(&target, dir.join(LOCK)).unwrap();
    let err = Log::open(&dir, Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("symbolic link"),
        "{err}"
    );
    assert!(!target.exists(), "the link was followed");
    // Read-only opens take no lock.
    let read_only = Options::for_reading();
    Log::open(&dir, read_only).unwrap();
    std::fs::remove_file(dir.join(LOCK)).unwrap();
    Log::open(&dir, Options::default()).unwrap();
}
