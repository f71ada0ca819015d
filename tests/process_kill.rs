//! Real process crashes: `chainlog append --durability always --receipts`
//! (and a helper process with eight appending threads) killed with SIGKILL
//! at random moments, again and again, over the same log directory.
//!
//! After every kill: the verifier finds the log intact (a torn tail is
//! allowed: it is what a kill during a write leaves), the log opens, every
//! record the killed process printed a receipt for is there with the same
//! seq and hash, nothing from earlier rounds was lost or changed, and a new
//! append continues the chain.
//!
//! The kill delays come from a seeded xorshift, so a run can be repeated:
//! `CHAINLOG_KILL_SEED=<n> cargo test --test process_kill -- --nocapture`.
//! The tests print what they checked (rounds, kills, receipts, torn tails).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chainlog::event::encode_record;
use chainlog::format::segment::MIN_SEGMENT_BYTES;
use chainlog::hash::chain::ChainHash;
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir, Report};
use chainlog::{Durability, Event, Log, Options, Receipt, Timestamp};

/// Rounds of the single-writer test.
const SINGLE_ROUNDS: u64 = 100;
/// Rounds of the concurrent test.
const CONCURRENT_ROUNDS: u64 = 30;
/// Threads appending in the concurrent helper process.
const HELPER_THREADS: u64 = 8;
/// The environment variable that turns `concurrent_appender_child` into
/// the helper process; its value is the log directory.
const CHILD_ENV: &str = "CHAINLOG_KILL_CHILD";

/// A small, seeded xorshift64: the same seed gives the same kill delays.
struct XorShift(u64);

impl XorShift {
    fn from_env(default: u64) -> (XorShift, u64) {
        let seed = std::env::var("CHAINLOG_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        (XorShift(seed.max(1)), seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::Always,
        ..Options::default()
    }
}

fn chainlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chainlog"))
}

fn init(dir: &Path) {
    let out = chainlog()
        .arg("--dir")
        .arg(dir)
        .args(["init", "--segment-bytes", "128KiB"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One line of `append` input.
fn event_line(round: u64, i: u64) -> String {
    let kinds = [
        ("pcap.download", "alice@acme.io"),
        ("incident.opened", "deploy-bot"),
        ("auth.login_failed", "mallory@example.net"),
        ("apikey.rotated", "system"),
    ];
    let (event, actor) = kinds[(i % 4) as usize];
    format!(
        r#"{{"timestamp":"2026-03-09T09:52:14.{:09}Z","event":"{event}","actor":"{actor}","node":"nyc-edge-{:02}","ip":"203.0.113.{}","context":{{"round":{round},"i":{i}}}}}"#,
        i % 1_000_000_000,
        i % 17,
        i % 250
    )
}

/// Receipts in a killed process's stdout: complete `{"seq":…}` lines (the
/// last line may be cut off by the kill; other lines are not receipts).
fn parse_receipts(stdout: &[u8]) -> Vec<Receipt> {
    let text = String::from_utf8_lossy(stdout);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| l.starts_with(r#"{"seq":"#))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad receipt {l:?}: {e}")))
        .collect()
}

fn verify(dir: &Path) -> Report {
    verify_dir(&FsStorage, dir, &mut |_| {}).unwrap()
}

/// The stored bytes of `e` appended by a default-options log at `received_at`.
fn record_bytes(e: &Event, received_at: Timestamp) -> Vec<u8> {
    let mut out = Vec::new();
    chainlog::event::record::encode_provenance(
        received_at,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut out,
    )
    .unwrap();
    encode_record(e, &mut out).unwrap();
    out
}

/// What the log held after the last round: the seq the next record gets
/// and the hash of the last record.
#[derive(Debug, Clone, Copy)]
struct Known {
    next_seq: u64,
    head: ChainHash,
}

#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    /// Kills that hit a process still running.
    kills: u64,
    /// Rounds whose process had printed no receipt yet when killed.
    kills_before_first_receipt: u64,
    receipts_checked: u64,
    /// Records the killed processes left without printing their receipts.
    unreceipted_records: u64,
    torn_tails: u64,
    records_at_end: u64,
}

/// The checks after a kill. `receipts` were printed by the killed process
/// (or processes); `contiguous` when one writer printed them in seq order.
fn check_after_kill(
    dir: &Path,
    known: Known,
    receipts: &[Receipt],
    contiguous: bool,
    round: u64,
    tally: &mut Tally,
) -> Known {
    let report = verify(dir);
    assert!(
        report.is_intact(),
        "round {round}: not intact after a kill: {:?}",
        report.problems
    );
    if report.torn_tail.is_some() {
        tally.torn_tails += 1;
    }
    let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("round {round}: open: {e}"));
    let state = log.state();
    assert!(
        state.next_seq >= known.next_seq,
        "round {round}: records lost: the log ends at seq {}, it ended at {} before the round",
        state.next_seq,
        known.next_seq
    );
    // Everything before this round is untouched: the hash chain binds it to
    // the last record of the previous round, which must be unchanged.
    if known.next_seq > 0 {
        let last = log.iter_from(known.next_seq - 1).next().unwrap().unwrap();
        assert_eq!(
            (last.seq, last.hash),
            (known.next_seq - 1, known.head),
            "round {round}: the previous round's last record changed"
        );
    }
    let hashes: Vec<ChainHash> = log
        .iter_from(known.next_seq)
        .map(|r| r.unwrap().hash)
        .collect();
    assert_eq!(known.next_seq + hashes.len() as u64, state.next_seq);
    for (i, r) in receipts.iter().enumerate() {
        if contiguous {
            assert_eq!(
                r.seq,
                known.next_seq + i as u64,
                "round {round}: receipts out of order"
            );
        }
        assert!(
            r.seq >= known.next_seq && r.seq < state.next_seq,
            "round {round}: receipt for seq {} is not in the log (seq {}..{} appended this round)",
            r.seq,
            known.next_seq,
            state.next_seq
        );
        assert_eq!(
            hashes[(r.seq - known.next_seq) as usize],
            r.hash,
            "round {round}: seq {} has another hash than its receipt",
            r.seq
        );
    }
    tally.receipts_checked += receipts.len() as u64;
    tally.unreceipted_records += hashes.len() as u64 - receipts.len() as u64;

    // A new append continues the chain.
    let e = Event::new(
        Timestamp::from_unix_nanos(1_773_049_934_000_000_000),
        "test.after_kill",
        format!("round-{round}"),
    );
    let receipt = log.append(&e).unwrap();
    assert_eq!(receipt.seq, state.next_seq, "round {round}: the next seq");
    // The engine's clock stamped it: read when, to know its bytes.
    let stored = log.iter_from(receipt.seq).next().unwrap().unwrap();
    let received_at = stored.received_at.unwrap();
    assert_eq!(
        receipt.hash,
        state.head.next(receipt.seq, &record_bytes(&e, received_at)),
        "round {round}: the append after the kill does not chain from the head"
    );
    log.close().unwrap();
    let report = verify(dir);
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "round {round}: after the append: {report:?}"
    );
    assert_eq!(report.last_seq, Some(receipt.seq));
    assert_eq!(report.head, Some(receipt.hash));
    tally.rounds += 1;
    tally.records_at_end = receipt.seq + 1;
    Known {
        next_seq: receipt.seq + 1,
        head: receipt.hash,
    }
}

/// A child's stdout and stderr, read to the end on threads.
struct Output {
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn collect(child: &mut Child) -> Output {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    Output {
        stdout: thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        }),
        stderr: thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        }),
    }
}

/// Kills `child` (SIGKILL) if it still runs; returns whether it did, and
/// how the child ended.
fn kill(child: &mut Child) -> (bool, ExitStatus) {
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap();
    }
    (running, child.wait().unwrap())
}

/// Feeds `append` its input, as a producer would: in bursts, or a trickle
/// of small batches. Keeps stdin open until told to stop, so the child is
/// never ended by the end of its input.
fn feed(
    mut stdin: std::process::ChildStdin,
    round: u64,
    burst: bool,
    lines: u64,
    stop: mpsc::Receiver<()>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut i = 0;
        while i < lines {
            let chunk = if burst { lines } else { 1 + i % 7 };
            let mut text = String::new();
            for _ in 0..chunk.min(lines - i) {
                text.push_str(&event_line(round, i));
                text.push('\n');
                i += 1;
            }
            if stdin.write_all(text.as_bytes()).is_err() {
                return; // the child is dead
            }
            if !burst {
                if let Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) =
                    stop.recv_timeout(Duration::from_micros(300))
                {
                    return;
                }
            }
        }
        let _ = stop.recv();
    })
}

/// `chainlog append --durability always --receipts`, killed at random
/// moments, 100 times over one log.
#[test]
fn append_killed_at_random_moments() {
    let started = Instant::now();
    let (mut rng, seed) = XorShift::from_env(0x5eed_c4a1_1c0d_e001);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let mut known = Known {
        next_seq: 0,
        head: Log::open(&dir, options()).unwrap().state().head,
    };
    let mut tally = Tally::default();
    for round in 0..SINGLE_ROUNDS {
        // Every third round a burst large enough for multi-thousand-event
        // batches that fill and roll segments; otherwise a trickle.
        let burst = round % 3 == 2;
        let lines = if burst { 1500 } else { 400 };
        let delay = Duration::from_millis(rng.between(5, 70));
        let mut child = chainlog()
            .arg("--dir")
            .arg(&dir)
            .args(["append", "--durability", "always", "--receipts"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = collect(&mut child);
        let (stop_tx, stop_rx) = mpsc::channel();
        let feeder = feed(child.stdin.take().unwrap(), round, burst, lines, stop_rx);
        thread::sleep(delay);
        let (killed, status) = kill(&mut child);
        let _ = stop_tx.send(());
        feeder.join().unwrap();
        let stdout = output.stdout.join().unwrap();
        let stderr = output.stderr.join().unwrap();
        if !killed {
            panic!(
                "round {round}: append ended by itself ({status}): {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        tally.kills += 1;
        let receipts = parse_receipts(&stdout);
        if receipts.is_empty() {
            tally.kills_before_first_receipt += 1;
        }
        known = check_after_kill(&dir, known, &receipts, true, round, &mut tally);
    }
    eprintln!(
        "process_kill single writer (seed {seed}): {} rounds, {} SIGKILLs, {} receipts checked, \
         {} records appended without a receipt, {} kills before the first receipt, \
         {} torn tails seen, {} records in the log at the end, {:.1}s",
        tally.rounds,
        tally.kills,
        tally.receipts_checked,
        tally.unreceipted_records,
        tally.kills_before_first_receipt,
        tally.torn_tails,
        tally.records_at_end,
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.receipts_checked > 0,
        "no kill came after a receipt: the delays are too short"
    );
}

/// A second `append` on a log that another process is appending to is
/// refused (exit 2, the log is locked), and changes nothing.
#[test]
fn second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let mut first = chainlog()
        .arg("--dir")
        .arg(&dir)
        .args(["append", "--durability", "always", "--receipts"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = first.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", event_line(0, 0)).as_bytes())
        .unwrap();
    // Wait for its receipt: it holds the lock from then on.
    let mut stdout = first.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0];
    while !seen.ends_with(b"\n") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "the first writer died");
        seen.push(byte[0]);
    }
    assert_eq!(parse_receipts(&seen).len(), 1);

    let second = chainlog()
        .arg("--dir")
        .arg(&dir)
        .args(["append", "--durability", "always", "--receipts"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second writer may already have been refused, and exited, before
    // its input arrives: a broken pipe here is that, not a failure.
    let fed = second
        .stdin
        .as_ref()
        .unwrap()
        .write_all(format!("{}\n", event_line(1, 0)).as_bytes());
    if let Err(e) = fed {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "second writer: {stderr}");
    assert!(stderr.contains("locked"), "second writer: {stderr}");
    assert!(out.stdout.is_empty(), "the second writer printed a receipt");

    let (killed, _) = kill(&mut first);
    assert!(killed);
    drop(stdin);
    let report = verify(&dir);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 1, "only the first writer's record");
}

/// The helper process for `concurrent_appenders_killed`: a no-op unless
/// `CHAINLOG_KILL_CHILD` names a log directory. Then eight threads append
/// to it under `Durability::Always` (sharing `fdatasync`s: group commit)
/// and print a receipt for each acknowledged record, until killed.
#[test]
fn concurrent_appender_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(Log::open(PathBuf::from(dir), options()).unwrap());
    let threads: Vec<_> = (0..HELPER_THREADS)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..100_000u64 {
                    let mut e = Event::new(
                        Timestamp::from_unix_nanos(1_773_049_934_000_000_000 + i as i64),
                        "test.concurrent",
                        format!("thread-{t}"),
                    );
                    e.context.insert("i".into(), i.into());
                    // Some threads append small batches: mixed batch sizes
                    // in one group commit.
                    let batch = if t % 2 == 1 { 1 + i % 3 } else { 1 };
                    let events = vec![e; batch as usize];
                    let receipts = log.append_batch(&events).unwrap();
                    let mut out = std::io::stdout().lock();
                    for r in receipts {
                        writeln!(out, "{}", serde_json::to_string(&r).unwrap()).unwrap();
                    }
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Stay alive to be killed: ending by itself would be a test failure.
    thread::sleep(Duration::from_secs(600));
}

/// Eight threads appending under `Durability::Always` in a child process,
/// killed at random moments, 30 times over one log.
#[test]
fn concurrent_appenders_killed() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // this is the helper process
    }
    let started = Instant::now();
    let (mut rng, seed) = XorShift::from_env(0x00c0_ffee_d00d_f00d);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let mut known = Known {
        next_seq: 0,
        head: Log::open(&dir, options()).unwrap().state().head,
    };
    let mut tally = Tally::default();
    let exe = std::env::current_exe().unwrap();
    for round in 0..CONCURRENT_ROUNDS {
        let delay = Duration::from_millis(rng.between(5, 60));
        let mut child = Command::new(&exe)
            .args(["--exact", "concurrent_appender_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = collect(&mut child);
        thread::sleep(delay);
        let (killed, status) = kill(&mut child);
        let stdout = output.stdout.join().unwrap();
        let stderr = output.stderr.join().unwrap();
        assert!(
            killed,
            "round {round}: the helper ended by itself ({status}): {}",
            String::from_utf8_lossy(&stderr)
        );
        tally.kills += 1;
        let mut receipts = parse_receipts(&stdout);
        if receipts.is_empty() {
            tally.kills_before_first_receipt += 1;
        }
        receipts.sort_by_key(|r| r.seq);
        let before = receipts.len();
        receipts.dedup_by_key(|r| r.seq);
        assert_eq!(
            receipts.len(),
            before,
            "round {round}: a seq was receipted twice"
        );
        known = check_after_kill(&dir, known, &receipts, false, round, &mut tally);
    }
    eprintln!(
        "process_kill {HELPER_THREADS} concurrent appenders (seed {seed}): {} rounds, {} SIGKILLs, \
         {} receipts checked, {} records appended without a receipt, \
         {} kills before the first receipt, {} torn tails seen, {} records in the log at the end, {:.1}s",
        tally.rounds,
        tally.kills,
        tally.receipts_checked,
        tally.unreceipted_records,
        tally.kills_before_first_receipt,
        tally.torn_tails,
        tally.records_at_end,
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.receipts_checked > 0,
        "no kill came after a receipt: the delays are too short"
    );
}
