//! The `chainlog` binary, run as a user would: exit codes, messages, output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chainlog::limits::MAX_INPUT_LINE_BYTES;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");
const SEGMENT: &str = "131072";
const SEGMENT_BYTES: u64 = 131_072;

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

fn run_with(args: &[&str], stdin: Option<Vec<u8>>, env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    // Feed stdin from a thread: the child may stop reading early (a bad
    // line), and must not block on a full stdout meanwhile.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with(args, None, &[])
}

/// Runs `chainlog --dir DIR ARGS...`.
fn at(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

fn at_stdin(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let mut all = vec!["--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run_with(&all, Some(stdin.as_bytes().to_vec()), &[])
}

fn init(dir: &Path) {
    let r = at(dir, &["init", "--segment-bytes", SEGMENT]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn event_line(i: u64) -> String {
    json!({
        "timestamp": format!("2026-03-09T{:02}:{:02}:{:02}Z", 8 + i / 3600 % 10, i / 60 % 60, i % 60),
        "event": if i % 4 == 0 { "auth.login_failed" } else { "pcap.download" },
        "actor": format!("user{}@acme.io", i % 7),
        "node": format!("nyc-edge-{:02}", i % 5),
        "ip": format!("203.0.113.{}", i % 250),
        "outcome": if i % 4 == 0 { "failure" } else { "success" },
        "context": {"i": i, "sha256": "ab".repeat(32), "bytes": i * 1000},
    })
    .to_string()
}

fn lines(range: std::ops::Range<u64>) -> String {
    range.map(|i| event_line(i) + "\n").collect()
}

fn write_file(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (seq, hash) of every stored record, from `cat`.
fn cat_receipts(dir: &Path) -> Vec<(u64, String)> {
    let r = at(dir, &["cat"]);
    assert_eq!(r.code, 0, "{r:?}");
    json_lines(&r.stdout)
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn receipts(stdout: &str) -> Vec<(u64, String)> {
    json_lines(stdout)
        .iter()
        .map(|v| {
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
            (
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file in the log directory and below it (the Merkle tiles live in
/// `tile/`), by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// (offset, seq, record length) of each frame in a segment file.
fn frames(bytes: &[u8]) -> Vec<(usize, u64, usize)> {
    let mut out = Vec::new();
    let mut at = 128;
    while at + 48 <= bytes.len() {
        let len = u32_at(bytes, at + 4) as usize;
        if len == 0 {
            break;
        }
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        out.push((at, seq, len));
        at += (48 + len).div_ceil(8) * 8;
    }
    out
}

/// Flips the outcome byte of record `seq` (the 9th record byte) in the
/// first segment; with `fix_crc` the frame CRC is recomputed (forgery),
/// without it the frame is simply damaged. Returns the frame's offset.
fn tamper(dir: &Path, seq: u64, fix_crc: bool) -> usize {
    let path = segment_path(dir, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, _, len) = frames(&bytes).into_iter().find(|f| f.1 == seq).unwrap();
    // The outcome byte: after the provenance prefix (received_at, origin,
    // appender) and the event's timestamp.
    let record = at + 48;
    let appender_len = u16::from_le_bytes([bytes[record + 9], bytes[record + 10]]) as usize;
    bytes[record + 11 + appender_len + 8] ^= 1;
    if fix_crc {
        let crc = crc32c::crc32c(&bytes[at + 4..at + 48 + len]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
    at
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn init_append_cat_verify_stats_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let r = at(&dir, &["init", "--segment-bytes", "128K"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("created log "), "{r:?}");
    assert!(r.stdout.contains("segments of 131072 bytes"), "{r:?}");

    let input = concat!(
        r#"{"timestamp":"2026-03-09T10:52:14.5+01:00","event":"pcap.download","actor":"alice@acme.io","node":"nyc-edge-01","resource":"a3f7c2b1","ip":"2001:DB8::42","context":{"sha256":"ab","bytes":18231}}"#,
        "\n\n",
        r#"{"event":"auth.login_failed","actor":"bob@acme.io","ip":"198.51.100.7","outcome":"failure"}"#,
        "\r\n",
        r#"{"timestamp":"2026-03-09T09:00:00Z","event":"node.added","actor":"system","node":"fra-core-02","outcome":"success","context":{"capacity_gbps":40,"tags":["edge",null,1.5]}}"#,
    );
    let file = write_file(tmp.path(), "in.jsonl", input.as_bytes());
    let before = chainlog::Timestamp::now();
    let r = at(&dir, &["append", file.to_str().unwrap()]);
    let after = chainlog::Timestamp::now();
    assert_eq!(r.code, 0, "{r:?}");
    let head3 = r
        .stdout
        .strip_prefix("appended 3 records (seq 0..=2), head ")
        .unwrap_or_else(|| panic!("{r:?}"))
        .trim()
        .to_string();

    let r = at(&dir, &["cat"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut got = json_lines(&r.stdout);
    assert_eq!(got.len(), 3);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["seq"], json!(i));
        let hash = v["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    assert_eq!(got[2]["hash"], json!(head3));
    // The record without a timestamp got "now".
    let now: chainlog::Timestamp = got[1]["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        before <= now && now <= after,
        "{now} not in {before}..{after}"
    );
    for v in &mut got {
        let o = v.as_object_mut().unwrap();
        o.remove("hash");
        if o["seq"] == json!(1) {
            o.remove("timestamp");
        }
    }
    assert_eq!(
        got,
        vec![
            json!({"seq":0,"timestamp":"2026-03-09T09:52:14.5Z","event":"pcap.download","actor":"alice@acme.io","node":"nyc-edge-01","resource":"a3f7c2b1","ip":"2001:db8::42","outcome":"success","context":{"sha256":"ab","bytes":18231}}),
            json!({"seq":1,"event":"auth.login_failed","actor":"bob@acme.io","ip":"198.51.100.7","outcome":"failure","context":{}}),
            json!({"seq":2,"timestamp":"2026-03-09T09:00:00Z","event":"node.added","actor":"system","node":"fra-core-02","outcome":"success","context":{"capacity_gbps":40,"tags":["edge",null,1.5]}}),
        ]
    );
    // Field order is the documented one.
    assert!(r
        .stdout
        .lines()
        .next()
        .unwrap()
        .starts_with(r#"{"seq":0,"hash":""#));

    // Enough records through stdin to fill several segments.
    let r = at_stdin(&dir, &["append"], &lines(3..1503));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("appended 1500 records (seq 3..=1502), head "),
        "{r:?}"
    );
    let head = r.stdout.trim().rsplit(' ').next().unwrap().to_string();

    let r = at(&dir, &["cat", "--from", "1000", "--limit", "3"]);
    assert_eq!(r.code, 0, "{r:?}");
    let page = json_lines(&r.stdout);
    assert_eq!(
        page.iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1000, 1001, 1002]
    );
    assert_eq!(page[0]["context"]["i"], json!(1000));
    assert_eq!(at(&dir, &["cat", "--from", "5000"]).stdout, "");

    let r = at(&dir, &["stats", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let stats: Value = serde_json::from_str(&r.stdout).unwrap();
    let segments = stats["segments"].as_u64().unwrap();
    assert!(segments >= 3, "{stats}");
    assert_eq!(stats["records"], json!(1503));
    assert_eq!(stats["first_seq"], json!(0));
    assert_eq!(stats["last_seq"], json!(1502));
    assert_eq!(stats["head"], json!(head));
    let files = snapshot(&dir);
    assert_eq!(
        files.keys().filter(|name| name.ends_with(".seg")).count() as u64,
        segments
    );
    let total: usize = files.values().map(Vec::len).sum();
    assert!(total as u64 >= segments * SEGMENT_BYTES);
    assert_eq!(stats["bytes_on_disk"], json!(total));
    assert_eq!(stats["min_timestamp"], json!("2026-03-09T08:00:03Z"));
    assert_eq!(stats["max_timestamp"], now.to_string());
    let r = at(&dir, &["stats"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("records       1503\n"), "{r:?}");
    assert!(
        r.stdout.contains(&format!("head          {head}\n")),
        "{r:?}"
    );

    let r = at(&dir, &["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!("intact: 1503 records in {segments} segments, seq 0..=1502, head {head}\n")
    );
    assert_eq!(
        r.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let r = at(&dir, &["verify", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["problems"], json!([]));
    assert_eq!(report["records"], json!(1503));
    assert_eq!(report["head"], json!(head));
    assert_eq!(report["torn_tail"], Value::Null);
}

#[test]
fn receipts_are_the_stored_hashes_under_every_durability() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let mut printed = Vec::new();
    for (i, durability) in ["always", "batch", "none"].iter().enumerate() {
        let from = i as u64 * 300;
        let r = at_stdin(
            &dir,
            &["append", "--receipts", "--durability", durability],
            &lines(from..from + 300),
        );
        assert_eq!(r.code, 0, "{durability}: {r:?}");
        let got = receipts(&r.stdout);
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            (from..from + 300).collect::<Vec<_>>()
        );
        printed.extend(got);
    }
    // A FILE argument too.
    let file = write_file(tmp.path(), "more.jsonl", lines(900..910).as_bytes());
    let r = at(&dir, &["append", "--receipts", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    printed.extend(receipts(&r.stdout));
    assert_eq!(printed.len(), 910);
    assert_eq!(cat_receipts(&dir), printed);
}

/// A log holding two records, and its state.
fn prepared_log(tmp: &Path) -> (PathBuf, BTreeMap<String, Vec<u8>>, String) {
    let dir = tmp.join("log");
    init(&dir);
    let r = at_stdin(&dir, &["append"], &lines(0..2));
    assert_eq!(r.code, 0, "{r:?}");
    let cat = at(&dir, &["cat"]).stdout;
    (dir.clone(), snapshot(&dir), cat)
}

#[test]
fn bad_input_names_the_line_exits_2_and_appends_nothing() {
    let oversized = format!(
        r#"{{"event":"a.b","actor":"x","context":{{"pad":"{}"}}}}"#,
        "y".repeat(MAX_INPUT_LINE_BYTES)
    );
    let big_context = format!(
        r#"{{"event":"a.b","actor":"x","context":{{"pad":"{}"}}}}"#,
        "y".repeat(70_000)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown field",
            r#"{"event":"a.b","actor":"x","colour":"red"}"#.into(),
            "unknown field `colour`",
        ),
        (
            "missing actor",
            r#"{"event":"pcap.download","node":"nyc-edge-01"}"#.into(),
            "missing field `actor`",
        ),
        (
            "missing event",
            r#"{"actor":"alice@acme.io"}"#.into(),
            "missing field `event`",
        ),
        (
            "bad event type",
            r#"{"event":"Pcap.Download","actor":"alice@acme.io"}"#.into(),
            r#"event type "Pcap.Download" must be two or more dot-separated parts"#,
        ),
        (
            "bad timestamp",
            r#"{"timestamp":"2026-03-09 09:52","event":"a.b","actor":"x"}"#.into(),
            r#"bad timestamp "2026-03-09 09:52""#,
        ),
        (
            "bad ip",
            r#"{"event":"a.b","actor":"x","ip":"300.1.2.3"}"#.into(),
            "invalid IP address syntax",
        ),
        (
            "bad outcome",
            r#"{"event":"a.b","actor":"x","outcome":"maybe"}"#.into(),
            "unknown variant `maybe`, expected `success` or `failure`",
        ),
        (
            "oversized line",
            oversized,
            "line is longer than the limit of 262144 bytes",
        ),
        (
            "context too large",
            big_context,
            "field `context` is 70010 bytes, over the limit of 65536",
        ),
        (
            "non-object context",
            r#"{"event":"a.b","actor":"x","context":"hello"}"#.into(),
            r#"invalid type: string "hello", expected a map"#,
        ),
        (
            "empty actor",
            r#"{"event":"a.b","actor":""}"#.into(),
            "field `actor` must not be empty",
        ),
        (
            "malformed json",
            r#"{"event":"a.b","actor":"#.into(),
            "EOF while parsing",
        ),
        (
            "reserved event type",
            r#"{"event":"log.retention","actor":"system"}"#.into(),
            "reserved for the log's own records",
        ),
        (
            "invisible character",
            r#"{"event":"a.b","actor":"adm\u200bin"}"#.into(),
            "invisible format character U+200B",
        ),
    ];
    for (name, bad, reason) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, files, cat) = prepared_log(tmp.path());

        // From a FILE: line 3 of 4 is bad, nothing is appended.
        let input = format!("{}{}\n{}\n", lines(10..12), bad, event_line(12));
        let file = write_file(tmp.path(), "in.jsonl", input.as_bytes());
        let r = at(&dir, &["append", "--receipts", file.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{name}: {r:?}");
        assert!(r.stderr.starts_with("chainlog: line 3: "), "{name}: {r:?}");
        assert!(r.stderr.contains(reason), "{name}: {r:?}");
        assert!(
            r.stderr
                .contains("nothing was appended (the whole file is checked first)"),
            "{name}: {r:?}"
        );
        assert_eq!(r.stdout, "", "{name}: no receipts");
        assert!(snapshot(&dir) == files, "{name}: the log changed");
        assert_eq!(at(&dir, &["cat"]).stdout, cat, "{name}");

        // From stdin: the bad line first, so nothing precedes it.
        let r = at_stdin(&dir, &["append"], &format!("{bad}\n{}", lines(20..22)));
        assert_eq!(r.code, 2, "{name}: {r:?}");
        assert!(r.stderr.starts_with("chainlog: line 1: "), "{name}: {r:?}");
        assert!(r.stderr.contains(reason), "{name}: {r:?}");
        assert!(
            r.stderr.trim_end().ends_with("; nothing was appended"),
            "{name}: {r:?}"
        );
        assert!(snapshot(&dir) == files, "{name}: the log changed");
    }
}

#[test]
fn a_bad_line_in_a_stream_stops_after_the_lines_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let input = format!(
        "{}{}\n{}",
        lines(0..2),
        r#"{"event":"a.b","actor":"x","colour":"red"}"#,
        lines(2..4)
    );
    let r = at_stdin(&dir, &["append", "--receipts"], &input);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("chainlog: line 3: unknown field `colour`"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(
            "; 2 records before it were appended (seq 0..=1); it and the lines after it were not"
        ),
        "{r:?}"
    );
    let printed = receipts(&r.stdout);
    assert_eq!(printed.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(cat_receipts(&dir), printed);

    // `-` is stdin too; without --receipts the error says the same.
    let r = at_stdin(&dir, &["append", "-"], &input);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("2 records before it were appended (seq 2..=3)"),
        "{r:?}"
    );
    assert_eq!(r.stdout, "");
    assert_eq!(cat_receipts(&dir).len(), 4);
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let r = run(&["--bogus"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--bogus"), "{r:?}");
    let r = run(&["cat"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "chainlog: no log directory: pass --dir DIR or set CHAINLOG_DIR\n"
    );
    let r = at(&dir, &["init", "--segment-bytes", "1000"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("chainlog: invalid options: segment_bytes"),
        "{r:?}"
    );
    let r = at(&dir, &["init", "--segment-bytes", "12 parsecs"]);
    assert_eq!(r.code, 2, "{r:?}");
    init(&dir);
    let r = at(&dir, &["init"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("a log already exists"), "{r:?}");
    let r = at_stdin(&dir, &["append", "--durability", "sometimes"], "");
    assert_eq!(r.code, 2, "{r:?}");
    let r = at(
        &dir,
        &["append", tmp.path().join("missing.jsonl").to_str().unwrap()],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("chainlog: opening "), "{r:?}");
    let r = at(&tmp.path().join("nowhere"), &["cat"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no log found"), "{r:?}");
}

#[test]
fn chainlog_dir_and_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let env = [("CHAINLOG_DIR", dir.as_path())];
    let r = run_with(&["--quiet", "init"], None, &env);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = run_with(&["append", "-q"], Some(lines(0..3).into_bytes()), &env);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = run_with(&["verify", "--quiet"], None, &env);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let r = run_with(&["cat"], None, &env);
    assert_eq!(json_lines(&r.stdout).len(), 3, "{r:?}");
    // --dir wins over the environment.
    let other = tmp.path().join("other");
    let r = run_with(&["--dir", other.to_str().unwrap(), "cat"], None, &env);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn verify_finds_tampering_and_names_the_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    let r = at_stdin(&dir, &["append"], &lines(0..20));
    assert_eq!(r.code, 0, "{r:?}");

    let forged = tmp.path().join("forged");
    copy_dir(&dir, &forged);
    let offset = tamper(&forged, 7, true);
    let r = at(&forged, &["verify"]);
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert!(lines[0].starts_with("NOT INTACT: 1 problem found"), "{r:?}");
    assert!(
        lines[1].starts_with(&format!(
            "hash_mismatch: seq 7 in 00000000000000000000.seg at byte {offset}: stored hash "
        )),
        "{r:?}"
    );
    let r = at(&forged, &["verify", "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["kind"], json!("hash_mismatch"));
    assert_eq!(problems[0]["seq"], json!(7));
    assert_eq!(problems[0]["segment"], json!("00000000000000000000.seg"));
    assert_eq!(problems[0]["offset"], json!(offset));
    // The forgery reads back without complaint: only verify can tell.
    let r = at(&forged, &["cat", "--from", "7", "--limit", "1"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Damage without a matching CRC is a corrupt frame in the middle.
    let damaged = tmp.path().join("damaged");
    copy_dir(&dir, &damaged);
    let offset = tamper(&damaged, 3, false);
    let r = at(&damaged, &["verify"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "frame_corrupt: seq 3 in 00000000000000000000.seg at byte {offset}: frame checksum mismatch"
        )),
        "{r:?}"
    );
    // A reader reads the records before the damage and says where it stops
    // (only verify exits non-zero).
    let r = at(&damaged, &["cat"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 3, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "chainlog: warning: 00000000000000000000.seg is damaged at byte {offset}"
        )),
        "{r:?}"
    );

    // The original is untouched.
    assert_eq!(at(&dir, &["verify"]).code, 0);
}

#[test]
fn verify_of_a_missing_log_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let r = at(&tmp.path().join("nothing-here"), &["verify"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.starts_with("chainlog: no log found in "), "{r:?}");
    // An existing directory without segments is not a log either.
    let r = at(tmp.path(), &["verify"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn a_torn_tail_is_a_note_not_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    init(&dir);
    assert_eq!(at_stdin(&dir, &["append"], &lines(0..5)).code, 0);
    // Half a frame after the last one, as a crash mid-write leaves it.
    let path = segment_path(&dir, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let (at_, _, len) = *frames(&bytes).last().unwrap();
    let end = at_ + (48 + len).div_ceil(8) * 8;
    bytes[end..end + 4].copy_from_slice(&[1, 2, 3, 4]);
    bytes[end + 4..end + 8].copy_from_slice(&200u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();

    let r = at(&dir, &["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("intact: 5 records"), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "note: torn tail in 00000000000000000000.seg at byte {end} (8 bytes)"
        )),
        "{r:?}"
    );
    assert_eq!(at(&dir, &["cat"]).stdout.lines().count(), 5);
    // Opening for writing cuts it; the log goes on.
    assert_eq!(at_stdin(&dir, &["append"], &lines(5..6)).code, 0);
    let r = at(&dir, &["verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("intact: 6 records"), "{r:?}");
    assert!(!r.stdout.contains("torn"), "{r:?}");
}

#[test]
fn demo_shows_the_tampering_being_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("demo");
    let r = run(&["demo", "--dir", ws.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    for expected in [
        "Timestamp (UTC)",
        "Node / Resource",
        "pcap.download",
        "incident.opened",
        "auth.login_failed",
        "2001:db8:85a3::8a2e:370:7334",
        "intact: 16 records in 1 segment, seq 0..=15, head ",
        "TAMPERING DETECTED",
        "hash_mismatch: seq 4 in 00000000000000000000.seg at byte ",
        "The verifier points at the damaged record: seq 4",
        "7. Built an evidence pack for auditors of the 2900 AWS CloudTrail events",
        "Checked it as an auditor would: intact, 2900 rows (seq 0 to 2899)",
    ] {
        assert!(r.stdout.contains(expected), "{expected:?} missing: {r:?}");
    }
    // What it left behind is a real log and a tampered copy.
    assert_eq!(at(&ws.join("log"), &["verify"]).code, 0);
    assert_eq!(at(&ws.join("tampered"), &["verify"]).code, 1);
    let pack = ws.join("evidence.zip");
    let key = ws.join("demo.pub");
    let checked = run(&[
        "check-evidence",
        pack.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(checked.code, 0, "{checked:?}");
    // The workspace now holds a log: a second run refuses to overwrite it.
    assert_eq!(run(&["demo", "--dir", ws.to_str().unwrap()]).code, 2);
}
