//! The `chainlog` binary's retention, legal hold, key and checkpoint
//! commands, run as a user would: `retention`, `hold`, `keygen`,
//! `checkpoint` and `verify --checkpoint/--public-key/--threads`.
//!
//! The key files and signed checkpoints the tool writes are also checked with
//! Go's golang.org/x/mod/sumdb/note (an outside implementation) when Go is
//! installed (required under `CHAINLOG_REQUIRE_GO`, as scripts/test.sh sets).

#[path = "support/go.rs"]
mod go_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use chainlog::Timestamp;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");
const DAY_NANOS: i64 = 86_400_000_000_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs `chainlog --dir DIR ARGS...`.
fn at(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--dir", s(dir)];
    all.extend_from_slice(args);
    run(&all)
}

/// Runs and asserts the exit code.
fn expect(code: i32, dir: &Path, args: &[&str]) -> Run {
    let r = at(dir, args);
    assert_eq!(r.code, code, "chainlog {args:?}: {r:?}");
    r
}

/// `n` JSON Lines events, evenly spread over the `days` days that end a
/// minute ago, oldest first; `tag` goes into each event's context.
fn events(n: u64, days: i64, tag: &str) -> String {
    let end = Timestamp::now().unix_nanos() - 60_000_000_000;
    let start = end - days * DAY_NANOS;
    let step = (end - start) / n as i64;
    (0..n)
        .map(|i| {
            let ts = Timestamp::from_unix_nanos(start + i as i64 * step);
            json!({
                "timestamp": ts.to_string(),
                "event": if i % 3 == 0 { "config.changed" } else { "pcap.download" },
                "actor": format!("user{}@acme.io", i % 7),
                "node": format!("nyc-edge-{:02}", i % 5),
                "context": {"i": i, "tag": tag, "diff": "x".repeat(300)},
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// Appends `jsonl` (oldest first) to the log in `dir` from files, in
/// batches of 50, each received (by the debug build's engine clock hook)
/// when its last event happened: retention judges age by time of receipt,
/// so the log ages as its event times say.
fn append(dir: &Path, jsonl: &str) {
    let file = dir.with_extension("events.jsonl");
    let lines: Vec<&str> = jsonl.lines().collect();
    for batch in lines.chunks(50) {
        let last: Value = serde_json::from_str(batch[batch.len() - 1]).unwrap();
        let clock = last["timestamp"].as_str().unwrap();
        std::fs::write(&file, batch.join("\n") + "\n").unwrap();
        let out = Command::new(BIN)
            .args(["--dir", s(dir), "-q", "append", s(&file)])
            .env_remove("CHAINLOG_DIR")
            .env("CHAINLOG_TEST_ENGINE_CLOCK", clock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "append: {out:?}");
    }
    std::fs::remove_file(file).unwrap();
}

/// Each record's time of receipt, by seq (from `export`).
fn received_times(dir: &Path) -> Vec<Timestamp> {
    expect(0, dir, &["-q", "export", "--format", "jsonl"])
        .stdout
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let row: Value = serde_json::from_str(l).unwrap();
            assert_eq!(row["seq"], i as u64);
            Timestamp::parse_rfc3339(row["received_at"].as_str().unwrap()).unwrap()
        })
        .collect()
}

/// A new log of 128 KiB segments holding `jsonl`.
fn build(dir: &Path, jsonl: &str) {
    expect(0, dir, &["-q", "init", "--segment-bytes", "128KiB"]);
    append(dir, jsonl);
}

/// Every file in the log directory and its bytes (files only: the Merkle
/// tiles live in the `tile/` subdirectory).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The segment files' names, oldest first.
fn segment_names(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_keys()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

fn base_seq(name: &str) -> u64 {
    name.trim_end_matches(".seg").parse().unwrap()
}

/// Every record `cat` prints.
fn cat(dir: &Path) -> Vec<Value> {
    expect(0, dir, &["cat"])
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn timestamp(record: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(record["timestamp"].as_str().unwrap()).unwrap()
}

/// The segment files a `retention` run listed (its indented lines).
fn listed_segments(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// The seq in a "…: seq N, hash H" receipt line.
fn receipt_seq(stdout: &str) -> u64 {
    let rest = &stdout[stdout.rfind("seq ").unwrap() + 4..];
    rest[..rest.find(',').unwrap()].parse().unwrap()
}

#[test]
fn retention_dry_run_changes_nothing_then_deletes_only_old_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    build(&dir, &events(2500, 200, "a"));
    let before = cat(&dir);
    let received = received_times(&dir);
    let files_before = snapshot(&dir);
    let segments_before = segment_names(&dir);
    assert!(segments_before.len() >= 6, "{segments_before:?}");

    // A checkpoint from before retention, kept outside the log directory.
    let key = tmp.path().join("key");
    let public = tmp.path().join("key.pub");
    let cp = tmp.path().join("before.checkpoint");
    expect(
        0,
        &dir,
        &[
            "-q",
            "keygen",
            "--secret-key",
            s(&key),
            "--public-key",
            s(&public),
        ],
    );
    expect(
        0,
        &dir,
        &["-q", "checkpoint", "--secret-key", s(&key), "-o", s(&cp)],
    );

    // The dry run lists old segments and changes nothing.
    let dry = expect(0, &dir, &["retention", "--dry-run"]);
    assert!(dry.stdout.starts_with("dry run: would delete "), "{dry:?}");
    assert!(dry.stdout.contains("max age 90d"), "{dry:?}");
    let planned = listed_segments(&dry.stdout);
    assert!(!planned.is_empty(), "{dry:?}");
    assert!(planned.len() < segments_before.len() - 1, "{dry:?}");
    assert_eq!(planned[..], segments_before[..planned.len()]);
    assert!(
        snapshot(&dir) == files_before,
        "the dry run changed the log"
    );

    // The real run deletes exactly those (no flag means --max-age 90d).
    let real = expect(0, &dir, &["retention"]);
    assert!(real.stdout.starts_with("deleted "), "{real:?}");
    assert_eq!(listed_segments(&real.stdout), planned, "{real:?}");
    let record_seq = receipt_seq(&real.stdout);
    assert_eq!(record_seq, 2500);
    let after = snapshot(&dir);
    for name in &planned {
        assert!(!after.contains_key(name), "{name} was not deleted");
        let index = name.replace(".seg", ".idx");
        assert!(!after.contains_key(&index), "{index} was not deleted");
    }
    // The kept sealed segments are untouched; only the newest grew.
    let kept: Vec<&String> = segments_before[planned.len()..].iter().collect();
    for name in &kept[..kept.len() - 1] {
        assert!(after[*name] == files_before[*name], "{name} changed");
    }

    // The log.retention record, by `system`, says what went and why.
    let records = cat(&dir);
    let retention = records.last().unwrap();
    assert_eq!(retention["seq"], record_seq);
    assert_eq!(retention["event"], "log.retention");
    assert_eq!(retention["actor"], "system");
    let context = &retention["context"];
    let cutoff = Timestamp::parse_rfc3339(context["cutoff"].as_str().unwrap()).unwrap();
    let deleted = context["deleted"].as_array().unwrap();
    let deleted_files: Vec<&str> = deleted
        .iter()
        .map(|d| d["file"].as_str().unwrap())
        .collect();
    assert_eq!(deleted_files, planned);
    let first_kept = base_seq(kept[0]);
    assert_eq!(context["first_retained_seq"], first_kept);
    // Every deleted record was received before the cut-off (and, as this
    // log was received as its events happened, is dated before it); the
    // first kept segment has a later one (so retention did not stop early).
    for (record, at) in before.iter().zip(&received).take(first_kept as usize) {
        assert!(
            *at < cutoff,
            "{record} received {at} is not past the cut-off"
        );
        assert!(timestamp(record) <= *at, "{record}");
    }
    let second_kept = base_seq(kept[1]);
    let first_kept_newest = received[first_kept as usize..second_kept as usize]
        .iter()
        .max()
        .unwrap();
    assert!(*first_kept_newest >= cutoff);
    for d in deleted {
        let at = Timestamp::parse_rfc3339(d["max_received_at"].as_str().unwrap()).unwrap();
        assert!(at < cutoff, "{d}");
    }
    // The rest of the log is there, record for record.
    assert_eq!(records[0]["seq"], first_kept);
    assert_eq!(records[..records.len() - 1], before[first_kept as usize..]);

    let verify = expect(0, &dir, &["verify"]);
    assert!(verify.stdout.starts_with("intact: "), "{verify:?}");
    // A checkpoint from before retention still vouches for the log: its
    // size lies in the segments that were kept.
    expect(
        0,
        &dir,
        &["verify", "--checkpoint", s(&cp), "--public-key", s(&public)],
    );

    // Nothing more is due: nothing is appended or deleted.
    let files = snapshot(&dir);
    let again = expect(0, &dir, &["retention", "--max-age", "90d"]);
    assert!(again.stdout.starts_with("nothing to delete"), "{again:?}");
    assert!(snapshot(&dir) == files);

    // By size: the oldest sealed segments go until the rest fit.
    let r = expect(0, &dir, &["retention", "--max-bytes", "300K"]);
    assert!(!listed_segments(&r.stdout).is_empty(), "{r:?}");
    let segment_bytes: usize = snapshot(&dir)
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .map(|(_, b)| b.len())
        .sum();
    assert!(segment_bytes <= 300 << 10, "{segment_bytes} bytes left");
    expect(0, &dir, &["verify"]);
}

/// Issue 14, finding 8: one event dated 2261 kept its segment, and all
/// after it, forever. Age is judged by the time the engine received the
/// records, whatever dates clients give them.
#[test]
fn age_retention_judges_by_time_of_receipt_not_event_time() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = |timestamp: &str| -> String {
        (0..900)
            .map(|i| {
                json!({
                    "timestamp": timestamp,
                    "event": "config.changed",
                    "actor": "ops@acme.io",
                    "context": {"i": i, "diff": "x".repeat(300)},
                })
                .to_string()
                    + "\n"
            })
            .collect()
    };
    let append_at = |dir: &Path, clock: Option<&str>, input: &str| {
        let file = dir.with_extension("in.jsonl");
        std::fs::write(&file, input).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--dir", s(dir), "-q", "append", s(&file)])
            .env_remove("CHAINLOG_DIR")
            .env_remove("CHAINLOG_TEST_ENGINE_CLOCK")
            .stdin(Stdio::null());
        if let Some(clock) = clock {
            cmd.env("CHAINLOG_TEST_ENGINE_CLOCK", clock);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "append: {out:?}");
    };
    let received_100_days_ago =
        Timestamp::from_unix_nanos(Timestamp::now().unix_nanos() - 100 * DAY_NANOS).to_string();

    // Dated 2261, received 100 days ago: past a 90-day max age.
    let future = tmp.path().join("future");
    expect(0, &future, &["-q", "init", "--segment-bytes", "128KiB"]);
    append_at(
        &future,
        Some(&received_100_days_ago),
        &jsonl("2261-12-31T23:59:59Z"),
    );
    let segments = segment_names(&future);
    assert!(segments.len() >= 3, "{segments:?}");
    let r = expect(0, &future, &["retention"]);
    assert_eq!(
        listed_segments(&r.stdout),
        segments[..segments.len() - 1],
        "every sealed segment goes: {r:?}"
    );
    assert!(r.stdout.contains("last received "), "{r:?}");
    expect(0, &future, &["verify"]);

    // Dated 200 days ago, received now: nothing is due.
    let late = tmp.path().join("late");
    expect(0, &late, &["-q", "init", "--segment-bytes", "128KiB"]);
    let old = Timestamp::from_unix_nanos(Timestamp::now().unix_nanos() - 200 * DAY_NANOS);
    append_at(&late, None, &jsonl(&old.to_string()));
    assert!(segment_names(&late).len() >= 3);
    let r = expect(0, &late, &["retention", "--dry-run"]);
    assert!(r.stdout.starts_with("dry run: nothing to delete"), "{r:?}");
    let r = expect(0, &late, &["retention"]);
    assert!(r.stdout.starts_with("nothing to delete"), "{r:?}");
}

#[test]
fn retention_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    build(&dir, &events(10, 200, "a"));
    for bad in ["90", "d", "90x", "-1d", "99999999999999y"] {
        let r = expect(2, &dir, &["retention", &format!("--max-age={bad}")]);
        assert!(r.stderr.contains("--max-age"), "{r:?}");
        assert!(
            r.stderr.contains("not a duration") || r.stderr.contains("too long"),
            "{r:?}"
        );
    }
    expect(2, &dir, &["retention", "--max-bytes", "12Q"]);
    for good in ["30m", "12h", "2w", "1y", "45s"] {
        let r = expect(0, &dir, &["retention", "--dry-run", "--max-age", good]);
        assert!(r.stdout.contains(&format!("max age {good}")), "{r:?}");
    }
    let r = expect(0, &dir, &["retention", "--dry-run", "--max-bytes", "1M"]);
    assert!(!r.stdout.contains("max age"), "{r:?}");
    expect(2, tmp.path().join("missing").as_path(), &["retention"]);
}

#[test]
fn a_legal_hold_blocks_retention_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    build(&dir, &events(1500, 200, "a"));

    let r = expect(0, &dir, &["hold", "status"]);
    assert_eq!(r.stdout, "no legal hold\n");
    let r = expect(0, &dir, &["hold", "status", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap(),
        json!({"held": false})
    );

    let set = expect(
        0,
        &dir,
        &[
            "hold",
            "set",
            "--actor",
            "legal@acme.io",
            "--reason",
            "case 42",
        ],
    );
    let set_seq = receipt_seq(&set.stdout);
    assert_eq!(set_seq, 1500, "{set:?}");
    let r = expect(
        2,
        &dir,
        &[
            "hold",
            "set",
            "--actor",
            "legal@acme.io",
            "--reason",
            "again",
        ],
    );
    assert!(r.stderr.contains("a legal hold is already set"), "{r:?}");

    let r = expect(0, &dir, &["hold", "status"]);
    assert!(r.stdout.contains("set by legal@acme.io"), "{r:?}");
    assert!(r.stdout.contains("case 42"), "{r:?}");
    let r = expect(0, &dir, &["hold", "status", "--json"]);
    let status: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status["held"], true);
    assert_eq!(status["actor"], "legal@acme.io");
    assert_eq!(status["reason"], "case 42");

    // Retention is refused and deletes nothing; a dry run says why.
    let files = snapshot(&dir);
    let r = expect(2, &dir, &["retention"]);
    assert!(
        r.stderr
            .starts_with("chainlog: retention blocked by a legal hold set by legal@acme.io at "),
        "{r:?}"
    );
    assert!(r.stderr.contains(": case 42"), "{r:?}");
    assert!(snapshot(&dir) == files, "a held log changed");
    let r = expect(0, &dir, &["retention", "--dry-run"]);
    assert!(!listed_segments(&r.stdout).is_empty(), "{r:?}");
    assert!(r.stdout.contains("a real run would be refused"), "{r:?}");
    assert!(snapshot(&dir) == files);

    let release = expect(
        0,
        &dir,
        &[
            "hold",
            "release",
            "--actor",
            "cfo@acme.io",
            "--reason",
            "case closed",
        ],
    );
    assert_eq!(receipt_seq(&release.stdout), set_seq + 1, "{release:?}");
    let r = expect(
        2,
        &dir,
        &["hold", "release", "--actor", "cfo@acme.io", "--reason", "x"],
    );
    assert!(r.stderr.contains("no legal hold is set"), "{r:?}");
    assert_eq!(
        expect(0, &dir, &["hold", "status"]).stdout,
        "no legal hold\n"
    );

    let r = expect(0, &dir, &["retention"]);
    let deleted = listed_segments(&r.stdout);
    assert!(!deleted.is_empty(), "{r:?}");
    for name in &deleted {
        assert!(!dir.join(name).exists());
    }

    // All three are events in the chain.
    let records = cat(&dir);
    let find = |event: &str| {
        records
            .iter()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} record"))
            .clone()
    };
    let held = find("log.hold_set");
    assert_eq!(held["seq"], set_seq);
    assert_eq!(held["actor"], "legal@acme.io");
    assert_eq!(held["context"]["reason"], "case 42");
    let released = find("log.hold_released");
    assert_eq!(released["seq"], set_seq + 1);
    assert_eq!(released["actor"], "cfo@acme.io");
    assert_eq!(released["context"]["reason"], "case closed");
    let retention = find("log.retention");
    assert_eq!(retention["seq"], set_seq + 2);
    assert_eq!(retention["actor"], "system");
    expect(0, &dir, &["verify"]);
}

/// Splits a public key into name, key id and decoded key data.
fn parse_public(text: &str) -> (String, String, Vec<u8>) {
    let line = text.strip_suffix('\n').expect("a newline at the end");
    let parts: Vec<&str> = line.splitn(3, '+').collect();
    assert_eq!(parts.len(), 3, "{text:?}");
    let data = base64::engine::general_purpose::STANDARD
        .decode(parts[2])
        .unwrap();
    (parts[0].to_string(), parts[1].to_string(), data)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let r = run(&[
        "keygen",
        "--secret-key",
        s(&secret),
        "--public-key",
        s(&public),
        "--name",
        name,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    (secret, public)
}

#[test]
fn keygen_writes_a_private_secret_key_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(tmp.path(), "audit.example");
    assert_eq!(mode(&secret), 0o600);
    let public_text = std::fs::read_to_string(&public).unwrap();
    let (name, id, data) = parse_public(&public_text);
    assert_eq!(name, "audit.example");
    assert!(
        id.len() == 8
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id:?}"
    );
    assert_eq!(data.len(), 33);
    assert_eq!(data[0], 0x01, "the Ed25519 type byte");
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    assert!(
        secret_text.starts_with(&format!("PRIVATE+KEY+audit.example+{id}+")),
        "{secret_text:?}"
    );
    assert!(secret_text.ends_with('\n'));

    // A second pair is a different key.
    let (_, other_public) = keygen(tmp.path(), "other");
    let (_, _, other_data) = parse_public(&std::fs::read_to_string(other_public).unwrap());
    assert_ne!(data[1..], other_data[1..]);

    // Never overwrite: not both, not one; nothing half-made is left.
    let fresh = tmp.path().join("fresh.key");
    for (sk, pk) in [
        (&secret, &public),
        (&fresh, &public),
        (&secret, &tmp.path().join("fresh.pub")),
    ] {
        let r = run(&["keygen", "--secret-key", s(sk), "--public-key", s(pk)]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("already exists"), "{r:?}");
    }
    assert!(!fresh.exists() && !tmp.path().join("fresh.pub").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_text);

    // Names without spaces or '+'; the default is a valid one.
    for bad in ["a b", "a+b", ""] {
        let sk = tmp.path().join("bad.key");
        let r = run(&[
            "keygen",
            "--secret-key",
            s(&sk),
            "--public-key",
            s(&tmp.path().join("bad.pub")),
            "--name",
            bad,
        ]);
        assert_eq!(r.code, 2, "{bad:?}: {r:?}");
        assert!(!sk.exists());
    }
    let sk = tmp.path().join("default.key");
    let pk = tmp.path().join("default.pub");
    let r = run(&["keygen", "--secret-key", s(&sk), "--public-key", s(&pk)]);
    assert_eq!(r.code, 0, "{r:?}");
    let (name, _, _) = parse_public(&std::fs::read_to_string(&pk).unwrap());
    assert!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "{name:?}"
    );
    assert!(
        r.stdout
            .contains(std::fs::read_to_string(&pk).unwrap().trim()),
        "{r:?}"
    );
}

#[test]
fn checkpoint_refuses_a_secret_key_others_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    build(&dir, &events(20, 1, "a"));
    let (secret, public) = keygen(tmp.path(), "audit.example");
    for loose in [0o644, 0o640, 0o620, 0o604] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(loose)).unwrap();
        let r = expect(2, &dir, &["checkpoint", "--secret-key", s(&secret)]);
        assert!(r.stderr.contains(s(&secret)), "{r:?}");
        assert!(r.stderr.contains(&format!("mode {loose:04o}")), "{r:?}");
        assert!(
            r.stderr.contains(&format!("chmod 600 {}", s(&secret))),
            "{r:?}"
        );
        assert!(r.stdout.is_empty());
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = expect(0, &dir, &["checkpoint", "--secret-key", s(&secret)]);
    assert!(r.stdout.contains("\n\n\u{2014} audit.example "), "{r:?}");
    // A public key where the secret key goes, a missing key, a missing log.
    let r = expect(2, &dir, &["checkpoint", "--secret-key", s(&public)]);
    assert!(r.stderr.contains("mode 0644"), "{r:?}");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = expect(2, &dir, &["checkpoint", "--secret-key", s(&public)]);
    assert!(r.stderr.contains("this is a public key"), "{r:?}");
    expect(
        2,
        &dir,
        &["checkpoint", "--secret-key", s(&tmp.path().join("nope"))],
    );
    expect(
        2,
        &tmp.path().join("missing"),
        &["checkpoint", "--secret-key", s(&secret)],
    );
    expect(
        2,
        &dir,
        &["checkpoint", "--secret-key", s(&secret), "--origin", "a b"],
    );
}

/// Copies a log directory (without the lock file).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        // Files only: the tiles in `tile/` are derived and rebuilt when needed.
        if entry.file_name() != "chainlog.lock" && entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `verify --checkpoint CP --public-key KEY ARGS...` on `dir`.
fn verify_cp(dir: &Path, cp: &Path, key: &Path, args: &[&str]) -> Run {
    let mut all = vec!["verify", "--checkpoint", s(cp), "--public-key", s(key)];
    all.extend_from_slice(args);
    at(dir, &all)
}

#[test]
fn verify_against_a_signed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (secret, public) = keygen(&keys, "audit.example");
    let dir = tmp.path().join("log");
    build(&dir, &events(900, 10, "a"));
    assert!(segment_names(&dir).len() >= 3);

    let cp = keys.join("cp");
    let r = expect(
        0,
        &dir,
        &[
            "checkpoint",
            "--secret-key",
            s(&secret),
            "--output",
            s(&cp),
            "--origin",
            "audit.example/logs",
        ],
    );
    assert!(r.stdout.contains("900 records"), "{r:?}");
    let note = std::fs::read_to_string(&cp).unwrap();
    let log_id = expect(0, &dir, &["stats", "--json"]).stdout;
    let log_id: Value = serde_json::from_str(&log_id).unwrap();
    assert!(
        note.starts_with(&format!(
            "audit.example/logs/{}\n900\n",
            log_id["log_id"].as_str().unwrap()
        )),
        "{note}"
    );
    // To stdout: the same note (Ed25519 signatures are deterministic).
    let stdout = expect(
        0,
        &dir,
        &[
            "checkpoint",
            "--secret-key",
            s(&secret),
            "--origin",
            "audit.example/logs",
        ],
    );
    assert_eq!(stdout.stdout, note);
    go_opens(&public, &cp, &note);

    // Intact, in text and JSON, on any number of threads.
    let r = verify_cp(&dir, &cp, &public, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("checkpoint: the log matches the checkpoint signed by audit.example+"),
        "{r:?}"
    );
    let mut reports = Vec::new();
    for threads in [&["--threads", "1"][..], &["--threads", "2"], &[]] {
        let mut args = vec!["--json"];
        args.extend_from_slice(threads);
        let r = verify_cp(&dir, &cp, &public, &args);
        assert_eq!(r.code, 0, "{r:?}");
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["checkpoint"], json!({"size": 900, "matched": true}));
        reports.push(report);
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]));
    expect(0, &dir, &["verify", "--threads", "2"]);
    expect(2, &dir, &["verify", "--threads", "0"]);

    // Copies from now, for the truncation and the fork.
    let truncated = tmp.path().join("truncated");
    copy_dir(&dir, &truncated);
    let fork = tmp.path().join("fork");
    copy_dir(&dir, &fork);

    // The log grows: the old checkpoint still holds.
    append(&dir, &events(300, 1, "b"));
    expect(
        0,
        &dir,
        &[
            "-q",
            "verify",
            "--checkpoint",
            s(&cp),
            "--public-key",
            s(&public),
        ],
    );

    // Truncated: the newest segment deleted. The chain alone cannot tell.
    let newest = segment_names(&truncated).pop().unwrap();
    std::fs::remove_file(truncated.join(&newest)).unwrap();
    expect(0, &truncated, &["verify"]);
    let r = verify_cp(&truncated, &cp, &public, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("checkpoint_mismatch"), "{r:?}");
    assert!(r.stdout.contains("truncated: the log has"), "{r:?}");
    assert!(r.stdout.contains("the log does NOT match"), "{r:?}");
    let r = verify_cp(&truncated, &cp, &public, &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["checkpoint"]["matched"], false);

    // Forked: the same log id and start, different records after the
    // checkpoint the fork is checked against.
    append(&fork, &events(300, 1, "forked"));
    expect(0, &fork, &["verify"]);
    let grown = keys.join("grown.cp");
    expect(
        0,
        &dir,
        &[
            "-q",
            "checkpoint",
            "--secret-key",
            s(&secret),
            "-o",
            s(&grown),
        ],
    );
    let r = verify_cp(&fork, &grown, &public, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("forked or rewritten"), "{r:?}");

    // Rewritten wholesale: another log with the same events.
    let other = tmp.path().join("other");
    build(&other, &events(900, 10, "a"));
    let r = verify_cp(&other, &cp, &public, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("not log"), "{r:?}");
}

#[test]
fn a_checkpoint_that_cannot_vouch_for_the_log_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(tmp.path(), "audit.example");
    let (_, wrong_public) = keygen(tmp.path(), "audit.example2");
    let dir = tmp.path().join("log");
    build(&dir, &events(50, 1, "a"));
    let cp = tmp.path().join("cp");
    expect(
        0,
        &dir,
        &["-q", "checkpoint", "--secret-key", s(&secret), "-o", s(&cp)],
    );
    let note = std::fs::read_to_string(&cp).unwrap();
    expect(
        0,
        &dir,
        &["verify", "--checkpoint", s(&cp), "--public-key", s(&public)],
    );

    // Another key: exit 1 (an integrity failure).
    let r = verify_cp(&dir, &cp, &wrong_public, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("has no signature by key audit.example2+"),
        "{r:?}"
    );
    assert!(r.stderr.contains("cannot vouch"), "{r:?}");

    // One digit of the size changed: the signature fails, exit 1.
    let changed = tmp.path().join("changed");
    std::fs::write(&changed, note.replacen("\n50\n", "\n49\n", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&changed).unwrap(), note);
    let r = verify_cp(&dir, &changed, &public, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("does not verify"), "{r:?}");

    // Garbled files and missing ones: exit 2, never a panic.
    let garbled = tmp.path().join("garbled");
    std::fs::write(&garbled, "q8Zt3 random text\nwith lines\n").unwrap();
    let r = verify_cp(&dir, &garbled, &public, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("malformed checkpoint"), "{r:?}");
    let binary = tmp.path().join("binary");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    assert_eq!(verify_cp(&dir, &binary, &public, &[]).code, 2);
    let r = verify_cp(&dir, &public, &garbled, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("malformed key"), "{r:?}");
    let r = verify_cp(&dir, &cp, &secret, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("this is a secret key"), "{r:?}");
    let r = verify_cp(&dir, &tmp.path().join("missing"), &public, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("missing"), "{r:?}");
    assert_eq!(
        verify_cp(&dir, &cp, &tmp.path().join("missing"), &[]).code,
        2
    );
    assert_eq!(
        verify_cp(&tmp.path().join("nolog"), &cp, &public, &[]).code,
        2
    );

    // The two flags go together.
    let r = expect(2, &dir, &["verify", "--checkpoint", s(&cp)]);
    assert!(r.stderr.contains("--public-key"), "{r:?}");
    let r = expect(2, &dir, &["verify", "--public-key", s(&public)]);
    assert!(r.stderr.contains("--checkpoint"), "{r:?}");
}

/// A Go program that checks a keygen pair and a checkpoint with
/// golang.org/x/mod/sumdb/note: the secret key signs what the public key
/// verifies, and the checkpoint opens with the public key.
const GO_NOTE_CHECK: &str = r#"package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func read(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return string(b)
}

func main() {
	signer, err := note.NewSigner(strings.TrimSpace(read(os.Args[1])))
	if err != nil {
		fmt.Fprintln(os.Stderr, "secret key:", err)
		os.Exit(1)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(read(os.Args[2])))
	if err != nil {
		fmt.Fprintln(os.Stderr, "public key:", err)
		os.Exit(1)
	}
	signed, err := note.Sign(&note.Note{Text: "hello\n"}, signer)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := note.Open(signed, note.VerifierList(verifier)); err != nil {
		fmt.Fprintln(os.Stderr, "the pair does not match:", err)
		os.Exit(1)
	}
	n, err := note.Open([]byte(read(os.Args[3])), note.VerifierList(verifier))
	if err != nil {
		fmt.Fprintln(os.Stderr, "checkpoint:", err)
		os.Exit(1)
	}
	fmt.Print(n.Text)
}
"#;

/// Checks the key pair next to `public` and the checkpoint `cp` with Go, when
/// Go is installed.
fn go_opens(public: &Path, cp: &Path, note: &str) {
    if !go_support::go_found() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("main.go");
    std::fs::write(&source, GO_NOTE_CHECK).unwrap();
    let program = work.path().join("notekeys");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&program)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let secret = public.with_extension("key");
    let out = Command::new(&program)
        .arg(&secret)
        .arg(public)
        .arg(cp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Go rejected the keys or the checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = &note[..note.rfind("\n\n").unwrap() + 1];
    assert_eq!(String::from_utf8(out.stdout).unwrap(), body);
}
