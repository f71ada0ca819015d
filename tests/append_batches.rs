//! `chainlog append` on inputs of many batches: a FILE's two halves are
//! checked on two threads, keeping their records up to a memory budget
//! (the lines past it are parsed again when appended), and a stream's
//! parsing overlaps appending, so a bad line's number and what is appended
//! before it must not depend on where the batches, the halves or the
//! budget end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chainlog::{Log, Options};

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");
/// Lines in each input: several 4096-event batches, and over the 1 MiB
/// from which a FILE's halves are checked on two threads.
const LINES: u64 = 12_000;
const BAD: &str = r#"{"event":"a.b","actor":"x","colour":"red"}"#;

fn line(i: u64) -> String {
    format!(
        r#"{{"timestamp":"2026-03-09T09:52:14Z","event":"batch.line","actor":"user{i}","node":"nyc-edge-01","context":{{"i":{i},"pad":"abcdefghijklmnopqrstuvwxyz0123456789"}}}}"#
    )
}

/// `LINES` lines; the 1-based line numbers in `bad` are replaced by a bad
/// line, and a blank line follows line 7 (blank lines count).
fn input(bad: &[u64]) -> String {
    let mut text = String::new();
    for n in 1..=LINES {
        if bad.contains(&n) {
            text.push_str(BAD);
        } else {
            text.push_str(&line(n));
        }
        text.push('\n');
        if n == 7 {
            text.push_str("  \n");
        }
    }
    text
}

/// The 1-based number of the line that starts chunk `k` of the eight a
/// FILE of `text` is checked in (the first line that starts at or after
/// `k` eighths of it; the threads take chunks in turn).
fn line_starting_chunk(text: &str, k: usize) -> u64 {
    let at = k * (text.len() / 8);
    let start = at + text[at - 1..].find('\n').unwrap();
    text[..start].matches('\n').count() as u64 + 1
}

/// A temporary directory holding an initialised log, and the log's path.
fn new_log() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    (tmp, dir)
}

fn init(dir: &Path) {
    let out = Command::new(BIN)
        .args(["-q", "--dir", dir.to_str().unwrap(), "init"])
        .env_remove("CHAINLOG_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The debug build's hook for the memory budget of a FILE's kept records.
const KEPT_BYTES_VAR: &str = "CHAINLOG_TEST_APPEND_KEPT_BYTES";

fn append(dir: &Path, file: Option<&Path>, stdin: &str) -> Output {
    append_keeping(dir, file, stdin, None)
}

/// `append` with the kept records' budget set to `kept` bytes.
fn append_keeping(dir: &Path, file: Option<&Path>, stdin: &str, kept: Option<usize>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["--dir", dir.to_str().unwrap(), "append"])
        .env_remove("CHAINLOG_DIR")
        .env_remove(KEPT_BYTES_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(file) = file {
        cmd.arg(file);
    }
    if let Some(kept) = kept {
        cmd.env(KEPT_BYTES_VAR, kept.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let text = stdin.to_string();
    // The child may stop reading at a bad line.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Checks that `out` is an append refused (exit 2) at line `n` of `input`,
/// for its unknown field; returns its stderr.
fn refused_at(out: Output, n: u64) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "line {n}: {stderr}");
    let want = format!("chainlog: line {}: unknown field `colour`", numbered(n));
    assert!(stderr.starts_with(&want), "line {n}: {stderr}");
    stderr
}

/// Checks that `out` is a FILE refused at line `n` with nothing appended
/// to the log in `dir`.
fn refused_whole(out: Output, n: u64, dir: &Path) {
    let stderr = refused_at(out, n);
    assert!(
        stderr.contains("nothing was appended (the whole file is checked first)"),
        "line {n}: {stderr}"
    );
    assert!(actors(dir).is_empty(), "line {n}: something was appended");
}

/// The actors of every record, in order.
fn actors(dir: &Path) -> Vec<String> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0)
        .map(|r| r.unwrap().event.actor.to_string())
        .collect()
}

fn expected_actors(lines: std::ops::Range<u64>) -> Vec<String> {
    lines.map(|i| format!("user{i}")).collect()
}

/// The 1-based input line number of line `n` of `input` (one blank line
/// follows line 7).
fn numbered(n: u64) -> u64 {
    if n > 7 {
        n + 1
    } else {
        n
    }
}

#[test]
fn a_bad_line_in_a_large_file_appends_nothing_and_is_numbered_from_the_start() {
    let (tmp, dir) = new_log();
    let file = tmp.path().join("in.jsonl");
    let mut cases: Vec<(Vec<u64>, u64)> = vec![
        (vec![5000], 5000),
        (vec![LINES - 3], LINES - 3),
        // Bad lines in two chunks: the first one is reported.
        (vec![9000, LINES - 1], 9000),
        (vec![LINES], LINES),
    ];
    // The first line of a chunk, and the last of the one before it.
    // Content line `n` is input line `numbered(n)`; the blank line is in
    // the first chunk.
    for k in [1, 4] {
        let first = line_starting_chunk(&input(&[]), k) - 1;
        cases.push((vec![first], first));
        cases.push((vec![first - 1], first - 1));
    }
    for (bad, reported) in cases {
        std::fs::write(&file, input(&bad)).unwrap();
        refused_whole(append(&dir, Some(&file), ""), reported, &dir);
    }

    // The same file without a bad line: every record, in order.
    std::fs::write(&file, input(&[])).unwrap();
    let out = append(&dir, Some(&file), "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(actors(&dir), expected_actors(1..LINES + 1));
}

#[test]
fn a_bad_line_in_a_large_stream_appends_the_lines_before_it() {
    let (_tmp, dir) = new_log();
    // After two full batches and part of a third.
    let bad = 4096 * 2 + 100;
    let stderr = refused_at(append(&dir, None, &input(&[bad])), bad);
    let before = bad - 1;
    assert!(
        stderr.contains(&format!(
            "; {before} records before it were appended (seq 0..={}); it and the lines after it were not",
            before - 1
        )),
        "{stderr}"
    );
    assert_eq!(actors(&dir), expected_actors(1..bad));
}

#[test]
fn lines_past_the_memory_budget_are_parsed_again_and_appended_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("in.jsonl");
    // Nothing kept; part of the first batch of each half (a batch of 4096
    // records is about 600 KB); a few batches of each half.
    for kept in [0, 150_000, 2_500_000] {
        let dir = tmp.path().join(format!("log-{kept}"));
        init(&dir);
        // A bad line is found in the check, wherever the budget ended.
        let bad = LINES - 2;
        std::fs::write(&file, input(&[bad])).unwrap();
        refused_whole(append_keeping(&dir, Some(&file), "", Some(kept)), bad, &dir);
        std::fs::write(&file, input(&[])).unwrap();
        let out = append_keeping(&dir, Some(&file), "", Some(kept));
        assert!(out.status.success(), "{kept}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.starts_with(&format!(
                "appended {LINES} records (seq 0..={}), head ",
                LINES - 1
            )),
            "{kept}: {stdout}"
        );
        assert_eq!(actors(&dir), expected_actors(1..LINES + 1), "{kept}");
    }
}

#[test]
fn a_named_pipe_as_file_is_checked_whole_before_appending() {
    let (tmp, dir) = new_log();
    let fifo = tmp.path().join("in.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let through_fifo = |text: String| {
        let path = fifo.clone();
        // Opening a FIFO for writing waits for its reader; the reader may
        // stop at a bad line, so a failed write is expected then.
        let writer = std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let _ = pipe.write_all(text.as_bytes());
        });
        let out = append(&dir, Some(&fifo), "");
        writer.join().unwrap();
        out
    };
    let bad = LINES - 5;
    refused_whole(through_fifo(input(&[bad])), bad, &dir);
    let out = through_fifo(input(&[]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(actors(&dir), expected_actors(1..LINES + 1));
}
