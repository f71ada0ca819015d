//! `chainlog tail` and `chainlog tail -f` beside a process that appends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chainlog::{Event, Log, Options, Timestamp};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

fn tail(dir: &Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .arg("tail")
        .args(args)
        .output()
        .unwrap();
    let rows = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        rows,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn event(actor: &str, i: u64) -> Event {
    let mut e = Event::new(Timestamp::now(), "node.added", actor);
    e.context.insert("i".into(), i.into());
    e
}

fn seqs(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect()
}

#[test]
fn tail_prints_the_newest_matches_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), Options::default()).unwrap();
    for i in 0..25 {
        log.append(&event(if i % 3 == 0 { "alice" } else { "bob" }, i))
            .unwrap();
    }
    // The writer stays open: tail reads beside it.
    let (ok, rows, err) = tail(dir.path(), &[]);
    assert!(ok, "{err}");
    assert_eq!(seqs(&rows), (15..25).collect::<Vec<_>>());
    // Rows are those of `export --format jsonl`, provenance included.
    assert_eq!(rows[9]["context"]["i"], 24);
    assert!(rows[9]["received_at"].is_string() && rows[9]["appender"].is_string());
    let (ok, rows, _) = tail(dir.path(), &["--actor", "alice", "--limit", "3"]);
    assert!(ok);
    assert_eq!(seqs(&rows), [18, 21, 24]);
    let (ok, rows, _) = tail(dir.path(), &["--after", "21"]);
    assert!(ok);
    assert_eq!(seqs(&rows), [22, 23, 24]);
    let (ok, _, err) = tail(dir.path(), &["--reverse"]);
    assert!(!ok && err.contains("--reverse"), "{err}");
    let (ok, _, err) = tail(dir.path(), &["--after", "3", "--limit", "2"]);
    assert!(!ok && err.contains("--limit"), "{err}");
    log.close().unwrap();
}

#[test]
fn tail_follow_prints_records_another_process_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), Options::default()).unwrap();
    for i in 0..3 {
        log.append(&event("alice", i)).unwrap();
    }
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir.path())
        .args(["tail", "-f", "--actor", "alice", "--limit", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let row: Value = serde_json::from_str(&line).unwrap();
            if tx.send((row, Instant::now())).is_err() {
                return;
            }
        }
    });
    let next = |within| rx.recv_timeout(within).map(|(row, _)| row);
    let first: Vec<Value> = (0..2)
        .map(|_| next(Duration::from_secs(20)).unwrap())
        .collect();
    assert_eq!(seqs(&first), [1, 2]);
    // Appended by this process while tail -f runs in another; bob's are
    // filtered out.
    let mut latencies = Vec::new();
    for i in 3..13u64 {
        log.append(&event("bob", i)).unwrap();
        let receipt = log.append(&event("alice", i)).unwrap();
        let appended = Instant::now();
        let (row, arrived) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(row["seq"].as_u64(), Some(receipt.seq));
        assert_eq!(row["actor"], "alice");
        latencies.push(arrived.saturating_duration_since(appended));
    }
    // Nothing else came (no duplicates).
    assert!(next(Duration::from_millis(800)).is_err());
    latencies.sort();
    eprintln!(
        "tail -f: append to printed line, median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    child.kill().unwrap();
    child.wait().unwrap();
    log.close().unwrap();
}
