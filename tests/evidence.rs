//! Evidence packs (`chainlog evidence`, `chainlog check-evidence`) built from
//! the 2,900 CloudTrail events: the pack checks out with chainlog and with
//! its own `verify_pack.py` (run with the project's venv python, which has
//! the pinned `cryptography`); a changed row, a dropped row, a swapped
//! checkpoint (from another log or another period) and an added file fail
//! both, whether the manifest was left alone or re-signed with the log's key
//! (an operator forging a pack); and the report renders in headless Chromium
//! with its charts and tables.
//!
//! The Python part needs scripts/python-tools.sh; it is skipped with a note
//! unless CHAINLOG_REQUIRE_PYTHON_TOOLS is set (scripts/test.sh sets it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use chainlog::evidence::seal;
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[path = "support/browser.rs"]
mod browser;
#[path = "support/cloudtrail.rs"]
mod mapping;

/// The shared fixture: a CloudTrail log, its keys, and a pack of the middle
/// third of its time span.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: PathBuf,
    public: PathBuf,
    pack: PathBuf,
    /// A pack of another period of the same log.
    other_period: PathBuf,
    /// A pack of another log signed with the same key.
    other_log: PathBuf,
    signer: NoteSigner,
    since: Timestamp,
    until: Timestamp,
    events: Vec<chainlog::Event>,
}

fn chainlog(args: &[&str]) -> Output {
    server::chainlog()
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = chainlog(args);
    assert!(
        out.status.success(),
        "chainlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn make_log(dir: &Path, name: &str, events: &[chainlog::Event]) -> PathBuf {
    let input = dir.join(format!("{name}.jsonl"));
    let mut jsonl = String::new();
    for e in events {
        jsonl.push_str(&serde_json::to_string(e).unwrap());
        jsonl.push('\n');
    }
    std::fs::write(&input, jsonl).unwrap();
    let log = dir.join(name);
    ok(&["--dir", p(&log), "init", "--segment-bytes", "1MiB", "-q"]);
    ok(&[
        "--dir",
        p(&log),
        "append",
        "-q",
        "--durability",
        "batch",
        p(&input),
    ]);
    log
}

fn pack(f_log: &Path, secret: &Path, since: &str, until: &str, out: &Path, seed: &str) {
    ok(&[
        "evidence",
        "--log",
        p(f_log),
        "--since",
        since,
        "--until",
        until,
        "--checkpoint-key",
        p(secret),
        "--output",
        p(out),
        "--sample",
        "40",
        "--seed",
        seed,
        "--no-pdf",
        "-q",
    ]);
}

/// Server-like access events inside the period, so that the access summary has rows.
fn access_events(at: Timestamp) -> Vec<chainlog::Event> {
    let mut events = Vec::new();
    for (i, (kind, actor, ip, failed)) in [
        ("access.export", "apikey:k_read", "203.0.113.9", false),
        ("access.verify", "apikey:k_admin", "203.0.113.10", false),
        ("auth.failed", "anonymous", "198.51.100.7", true),
        ("auth.failed", "anonymous", "198.51.100.7", true),
        ("access.denied", "apikey:k_read", "203.0.113.9", true),
        ("apikey.created", "apikey:k_admin", "203.0.113.10", false),
        ("apikey.revoked", "apikey:k_admin", "203.0.113.10", false),
    ]
    .into_iter()
    .enumerate()
    {
        let time = Timestamp::from_unix_nanos(at.unix_nanos() + i as i64 * 1_000_000_000);
        let mut e = chainlog::Event::new(time, kind, actor);
        e.source_ip = Some(ip.parse().unwrap());
        if failed {
            e.outcome = chainlog::Outcome::Failure;
        }
        events.push(e);
    }
    events
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut events: Vec<chainlog::Event> = mapping::cloudtrail_records()
            .iter()
            .map(mapping::to_event)
            .collect();
        assert_eq!(events.len(), 2900);
        let times: Vec<i64> = events.iter().map(|e| e.timestamp.unix_nanos()).collect();
        let (lo, hi) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let since = Timestamp::from_unix_nanos(lo + (hi - lo) / 3);
        let until = Timestamp::from_unix_nanos(lo + 2 * (hi - lo) / 3);
        let middle = Timestamp::from_unix_nanos(lo + (hi - lo) / 2);
        let access = access_events(middle);
        events.splice(1450..1450, access);
        let log = make_log(&dir, "log", &events);
        let (secret, public) = (dir.join("log.sec"), dir.join("log.pub"));
        ok(&[
            "keygen",
            "--secret-key",
            p(&secret),
            "--public-key",
            p(&public),
            "--name",
            "audit.example",
            "-q",
        ]);
        let signer = NoteSigner::parse(&std::fs::read_to_string(&secret).unwrap()).unwrap();
        let (s, u) = (since.to_string(), until.to_string());
        let pack_path = dir.join("pack.zip");
        pack(&log, &secret, &s, &u, &pack_path, "7");
        let other_period = dir.join("other-period.zip");
        let later = Timestamp::from_unix_nanos(lo + 5 * (hi - lo) / 6).to_string();
        pack(&log, &secret, &s, &later, &other_period, "7");
        let other = make_log(&dir, "other", &events[..1000]);
        let other_log = dir.join("other-log.zip");
        pack(
            &other,
            &secret,
            "2000-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
            &other_log,
            "7",
        );
        Fixture {
            _tmp: tmp,
            dir,
            secret,
            public,
            pack: pack_path,
            other_period,
            other_log,
            signer,
            since,
            until,
            events,
        }
    })
}

fn entries(pack: &Path) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(pack).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut file = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().to_string(), bytes)
        })
        .collect()
}

fn entry(pack: &Path, name: &str) -> Vec<u8> {
    entries(pack)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// Writes a copy of `pack` with `edit` applied to its files; with `reseal`,
/// the manifest's hashes (and whatever `edit_manifest` changes) are
/// rewritten and signed again with the log's key, as an operator forging a
/// pack could.
fn tampered(
    name: &str,
    pack: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, Vec<u8>>),
    reseal: bool,
    edit_manifest: impl FnOnce(&mut Value),
) -> PathBuf {
    let f = fixture();
    let original = entries(pack);
    let order: Vec<String> = original.iter().map(|(n, _)| n.clone()).collect();
    let mut files: BTreeMap<String, Vec<u8>> = original.into_iter().collect();
    edit(&mut files);
    if reseal {
        let mut manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        for entry in manifest["files"].as_array_mut().unwrap() {
            if let Some(bytes) = files.get(entry["name"].as_str().unwrap()) {
                entry["sha256"] = hex(&Sha256::digest(bytes)).into();
                entry["bytes"] = (bytes.len() as u64).into();
            }
        }
        edit_manifest(&mut manifest);
        let mut text = serde_json::to_vec_pretty(&manifest).unwrap();
        text.push(b'\n');
        let origin = manifest["origin"].as_str().unwrap().to_string();
        let sig = seal(&f.signer, &origin, &hex(&Sha256::digest(&text))).unwrap();
        files.insert("manifest.json".into(), text);
        files.insert("manifest.sig".into(), sig.into_bytes());
    }
    let out = f.dir.join(format!("{name}.zip"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut names = order.clone();
    names.extend(files.keys().filter(|n| !order.contains(n)).cloned());
    for n in names {
        if let Some(bytes) = files.get(&n) {
            zip.start_file(n.as_str(), options).unwrap();
            zip.write_all(bytes).unwrap();
        }
    }
    zip.finish().unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The venv's python with `cryptography`, or None (skipped, with a note).
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let out = Command::new(root.join("scripts/python-tools.sh")).output();
            match out {
                Ok(o) if o.status.success() => {
                    Some(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()))
                }
                other => {
                    if std::env::var_os("CHAINLOG_REQUIRE_PYTHON_TOOLS").is_some() {
                        panic!("CHAINLOG_REQUIRE_PYTHON_TOOLS is set but scripts/python-tools.sh failed: {other:?}");
                    }
                    eprintln!("NOTE: verify_pack.py was NOT run: scripts/python-tools.sh failed: {other:?}");
                    None
                }
            }
        })
        .clone()
}

/// Runs the pack's own verify_pack.py on `pack` with the log's public key.
fn verify_pack_py(pack: &Path) -> Option<Output> {
    let python = python()?;
    let f = fixture();
    // One file per run: the tests run at once, and a script another test
    // is still writing would run half-written (and pass, doing nothing).
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let script = f.dir.join(format!("verify_pack-{run}.py"));
    std::fs::write(&script, entry(&f.pack, "verify_pack.py")).unwrap();
    Some(
        Command::new(python)
            .arg(&script)
            .arg(pack)
            .arg(&f.public)
            .output()
            .unwrap(),
    )
}

/// `chainlog check-evidence` refuses `pack` (exit 1), naming `file`;
/// returns its message.
fn chainlog_fails(pack: &Path, file: &str) -> String {
    let f = fixture();
    let out = chainlog(&["check-evidence", p(pack), "--key", p(&f.public)]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-evidence passed {}: {stderr}",
        pack.display()
    );
    assert!(
        stderr.contains(file),
        "check-evidence should name {file}: {stderr}"
    );
    stderr
}

/// Both checkers refuse `pack`, naming `file`.
fn both_fail(pack: &Path, file: &str) {
    chainlog_fails(pack, file);
    if let Some(out) = verify_pack_py(pack) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "verify_pack.py passed {}: {stdout} {stderr}",
            pack.display()
        );
        assert!(stdout.starts_with("FAILED: "), "{stdout}");
    }
}

#[test]
fn a_cloudtrail_pack_checks_out_with_chainlog_and_python() {
    let f = fixture();
    let in_period: Vec<usize> = (0..f.events.len())
        .filter(|&i| f.events[i].timestamp >= f.since && f.events[i].timestamp < f.until)
        .collect();
    let (first, last) = (in_period[0] as u64, *in_period.last().unwrap() as u64);
    let out = ok(&[
        "check-evidence",
        p(&f.pack),
        "--key",
        p(&f.public),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_seq"], first);
    assert_eq!(report["end_seq"], last + 1);
    assert_eq!(report["rows"], last + 1 - first);
    assert_eq!(report["sample"], 40);
    assert_eq!(report["key_given"], true);
    assert_eq!(report["witnessed"], false);
    assert!(first > 0 && last + 1 < f.events.len() as u64);

    let manifest: Value = serde_json::from_slice(&entry(&f.pack, "manifest.json")).unwrap();
    assert_eq!(manifest["period"]["rows_in_period"], in_period.len());
    assert_eq!(manifest["sample"]["seed"], 7);
    assert!(manifest["witnessed_checkpoint"].is_null());
    let names: Vec<String> = entries(&f.pack).into_iter().map(|(n, _)| n).collect();
    for want in [
        "manifest.json",
        "manifest.sig",
        "public-key.txt",
        "checkpoints/start.txt",
        "checkpoints/end.txt",
        "proofs/consistency.json",
        "proofs/inclusion-sample.json",
        "events/events.jsonl",
        "events/events.csv",
        "events/records.jsonl",
        "state/retention.json",
        "access/summary.json",
        "report.html",
        "VERIFY.md",
        "verify_pack.py",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let csv = String::from_utf8(entry(&f.pack, "events/events.csv")).unwrap();
    assert_eq!(csv.lines().count() as u64, last + 1 - first + 1);

    let access: Value = serde_json::from_slice(&entry(&f.pack, "access/summary.json")).unwrap();
    assert_eq!(access["reads"]["total"], 2);
    assert_eq!(access["failed_sign_ins"]["total"], 2);
    assert_eq!(access["failed_sign_ins"]["by_ip"]["198.51.100.7"], 2);
    assert_eq!(access["refusals"]["total"], 1);
    assert_eq!(access["key_changes"]["by_event"]["apikey.revoked"], 1);
    assert_eq!(access["reads"]["listed"][0]["actor"], "apikey:k_read");

    // Without --key: the pack's own key, with a warning.
    let out = ok(&["check-evidence", p(&f.pack)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("key in the pack"));

    if let Some(out) = verify_pack_py(&f.pack) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("OK: {} rows", last + 1 - first)),
            "{stdout}"
        );
    }
    // The script stays short: about 50 lines besides comments and blank lines.
    let script = String::from_utf8(entry(&f.pack, "verify_pack.py")).unwrap();
    let code = script
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    assert!(code <= 62, "verify_pack.py has {code} lines of code");
}

#[test]
fn a_changed_row_fails_both_checkers() {
    let f = fixture();
    let change = |files: &mut BTreeMap<String, Vec<u8>>, name: &str, from: &str, to: &str| {
        let text = String::from_utf8(files[name].clone()).unwrap();
        assert!(text.contains(from), "{name} has no {from:?}");
        files.insert(name.into(), text.replacen(from, to, 1).into_bytes());
    };
    let events_jsonl = String::from_utf8(entry(&f.pack, "events/events.jsonl")).unwrap();
    let row: Value = serde_json::from_str(events_jsonl.lines().nth(10).unwrap()).unwrap();
    let actor = row["actor"].as_str().unwrap().to_string();
    let from = format!("\"actor\":{}", serde_json::to_string(&actor).unwrap());
    let records = String::from_utf8(entry(&f.pack, "events/records.jsonl")).unwrap();
    let line: Value = serde_json::from_str(records.lines().nth(10).unwrap()).unwrap();
    let record = line["record"].as_str().unwrap().to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = base64::Engine::decode(&b64, &record).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 1;
    let forged = base64::Engine::encode(&b64, &bytes);
    let mallory = "\"actor\":\"mallory\"";
    // (case, file, text, its replacement, re-signed, whether verify_pack.py
    // sees it too, what chainlog's error names besides the file)
    let cases = [
        // Left alone, the manifest's hash catches it.
        (
            "row-naive",
            "events/events.jsonl",
            from.as_str(),
            mallory,
            false,
            true,
            "",
        ),
        // Re-signed: chainlog compares the row with its record bytes.
        (
            "row-resealed",
            "events/events.jsonl",
            &from,
            mallory,
            true,
            false,
            "actor",
        ),
        // The record bytes themselves, re-signed: the chain breaks for both.
        (
            "record-resealed",
            "events/records.jsonl",
            &record,
            &forged,
            true,
            true,
            "",
        ),
        // A CSV cell, re-signed.
        (
            "csv-resealed",
            "events/events.csv",
            &actor,
            "mallory",
            true,
            false,
            "",
        ),
    ];
    for (name, file, text, to, reseal, python_too, detail) in cases {
        let pack = tampered(
            name,
            &f.pack,
            |fs| change(fs, file, text, to),
            reseal,
            |_| {},
        );
        if python_too {
            both_fail(&pack, file);
        } else {
            let stderr = chainlog_fails(&pack, file);
            assert!(stderr.contains(detail), "{name}: {stderr}");
        }
    }
}

#[test]
fn a_dropped_row_fails_both_checkers() {
    let f = fixture();
    let drop_line = |files: &mut BTreeMap<String, Vec<u8>>, name: &str, n: usize| {
        let text = String::from_utf8(files[name].clone()).unwrap();
        let kept: Vec<&str> = text
            .split_inclusive('\n')
            .enumerate()
            .filter(|(i, _)| *i != n)
            .map(|(_, l)| l)
            .collect();
        files.insert(name.into(), kept.concat().into_bytes());
    };
    let naive = tampered(
        "drop-naive",
        &f.pack,
        |fs| drop_line(fs, "events/events.jsonl", 5),
        false,
        |_| {},
    );
    both_fail(&naive, "events/events.jsonl");
    let all = |fs: &mut BTreeMap<String, Vec<u8>>| {
        drop_line(fs, "events/events.jsonl", 5);
        drop_line(fs, "events/records.jsonl", 5);
        drop_line(fs, "events/events.csv", 6);
    };
    let resealed = tampered("drop-resealed", &f.pack, all, true, |_| {});
    both_fail(&resealed, "events/records.jsonl");
    // The last row dropped and the manifest's counts lowered to match.
    let last = |fs: &mut BTreeMap<String, Vec<u8>>| {
        for name in [
            "events/events.jsonl",
            "events/records.jsonl",
            "events/events.csv",
        ] {
            let text = String::from_utf8(fs[name].clone()).unwrap();
            let n = text.lines().count() - 1;
            let kept: Vec<&str> = text.split_inclusive('\n').take(n).collect();
            fs.insert(name.into(), kept.concat().into_bytes());
        }
    };
    let fewer = tampered("drop-last", &f.pack, last, true, |m| {
        let rows = m["period"]["rows"].as_u64().unwrap();
        m["period"]["rows"] = (rows - 1).into();
    });
    both_fail(&fewer, "");
}

#[test]
fn a_swapped_checkpoint_fails_both_checkers() {
    let f = fixture();
    for (name, source, file) in [
        ("swap-other-log", &f.other_log, "checkpoints/end.txt"),
        ("swap-other-period", &f.other_period, "checkpoints/end.txt"),
        (
            "swap-start-other-log",
            &f.other_log,
            "checkpoints/start.txt",
        ),
    ] {
        let note = entry(source, file);
        let naive = tampered(
            name,
            &f.pack,
            |fs| {
                fs.insert(file.into(), note.clone());
            },
            false,
            |_| {},
        );
        both_fail(&naive, file);
        // Re-signed, with the manifest made to agree with the new checkpoint.
        let theirs: Value = serde_json::from_slice(&entry(source, "manifest.json")).unwrap();
        let side = if file.ends_with("end.txt") {
            "end"
        } else {
            "start"
        };
        let resealed = tampered(
            &format!("{name}-resealed"),
            &f.pack,
            |fs| {
                fs.insert(file.into(), note.clone());
            },
            true,
            |m| {
                m[side] = theirs[side].clone();
            },
        );
        both_fail(&resealed, "");
    }
}

#[test]
fn an_added_file_or_another_key_fails() {
    let f = fixture();
    let added = tampered(
        "added",
        &f.pack,
        |fs| {
            fs.insert("events/extra.csv".into(), b"seq\n1\n".to_vec());
        },
        false,
        |_| {},
    );
    both_fail(&added, "events/extra.csv");
    let dropped = tampered(
        "dropped-file",
        &f.pack,
        |fs| {
            fs.remove("state/retention.json");
        },
        false,
        |_| {},
    );
    both_fail(&dropped, "state/retention.json");
    let other_pub = f.dir.join("other.pub");
    if !other_pub.exists() {
        ok(&[
            "keygen",
            "--secret-key",
            p(&f.dir.join("other.sec")),
            "--public-key",
            p(&other_pub),
            "--name",
            "audit.example",
            "-q",
        ]);
    }
    let out = chainlog(&["check-evidence", p(&f.pack), "--key", p(&other_pub)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.sig"));
    let out = chainlog(&["check-evidence", p(&f.secret)]);
    assert_eq!(out.status.code(), Some(2), "not a zip is bad input");
}

#[test]
fn the_report_renders_in_headless_chromium_with_charts_and_tables() {
    if !browser::ensure_browser("evidence report") {
        return;
    }
    let f = fixture();
    let page = f.dir.join("report.html");
    std::fs::write(&page, entry(&f.pack, "report.html")).unwrap();
    let html = String::from_utf8(entry(&f.pack, "report.html")).unwrap();
    assert!(!html.contains("<script"), "the report needs no script");
    let url = format!("file://{}", page.display());
    let profile = f.dir.join("chromium-profile");
    let chromium = |extra: &[&str]| {
        server::succeed(
            Command::new(browser::CHROMIUM)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(extra)
                .arg(&url),
        )
    };
    // The DOM as Chromium built it.
    let dom = String::from_utf8(chromium(&["--dump-dom"]).stdout).unwrap();
    let manifest: Value = serde_json::from_slice(&entry(&f.pack, "manifest.json")).unwrap();
    let rows = manifest["period"]["rows"].as_u64().unwrap();
    assert!(dom.contains("<svg id=\"chart-days\""), "no day chart");
    assert!(
        dom.contains("<svg id=\"chart-categories\""),
        "no category chart"
    );
    assert!(dom.contains("class=\"bar-failures\""), "no failure bars");
    assert!(
        dom.contains(&format!("<td>total</td><td class=\"n\">{rows}</td>")),
        "the category table's total is not {rows}"
    );
    for table in [
        "period",
        "checks",
        "categories",
        "actors",
        "failures",
        "access-reads",
        "access-failed",
        "access-keys",
        "retention",
        "controls",
    ] {
        assert!(
            dom.contains(&format!("<table id=\"{table}\"")),
            "no table {table}"
        );
    }
    for control in [
        "CC6.1", "CC6.2", "CC7.2", "A.8.15", "A.8.17", "10.5.1", "10.2.1", "10.7",
    ] {
        assert!(
            dom.contains(control),
            "the controls table does not name {control}"
        );
    }
    let failures = f.events[manifest["period"]["first_seq"].as_u64().unwrap() as usize
        ..manifest["period"]["end_seq"].as_u64().unwrap() as usize]
        .iter()
        .filter(|e| e.outcome == chainlog::Outcome::Failure)
        .count();
    assert!(
        dom.contains(&format!("<h2>Failures ({failures})</h2>")),
        "failures are not {failures}"
    );
    // The screenshot: not blank, and the charts' colours are painted.
    let shot = f.dir.join("report.png");
    chromium(&[
        "--window-size=1100,1600",
        &format!("--screenshot={}", shot.display()),
    ]);
    let (w, h, pixels) = browser::decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((w, h), (1100, 1600));
    let count = |rgb: [u8; 3]| pixels.iter().filter(|px| **px == rgb).count();
    let white = count([255, 255, 255]);
    assert!(white < pixels.len() * 97 / 100, "the screenshot is blank");
    assert!(count([0x3b, 0x82, 0xc4]) > 500, "no event bars painted");
    assert!(count([0xd1, 0x24, 0x2f]) > 50, "no failure bars painted");
    assert!(count([0x6e, 0x56, 0xcf]) > 500, "no category bars painted");
    // With a renderer on the PATH, `chainlog evidence` also prints the
    // report to report.pdf, which the manifest covers like any file.
    let with_pdf = f.dir.join("with-pdf.zip");
    let path = format!(
        "{}:{}",
        Path::new(browser::CHROMIUM).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    server::succeed(
        server::chainlog()
            .env("PATH", path)
            .args([
                "evidence",
                "--log",
                p(&f.dir.join("other")),
                "--since",
                "2000-01-01T00:00:00Z",
            ])
            .args([
                "--checkpoint-key",
                p(&f.secret),
                "-o",
                p(&with_pdf),
                "--sample",
                "4",
                "-q",
            ]),
    );
    assert!(entry(&with_pdf, "report.pdf").starts_with(b"%PDF"));
    ok(&["check-evidence", p(&with_pdf), "--key", p(&f.public)]);
    if let Some(dir) = std::env::var_os("CHAINLOG_SCREENSHOTS") {
        std::fs::copy(&shot, Path::new(&dir).join("evidence-report.png")).unwrap();
    }
}

#[path = "support/server.rs"]
mod server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_streams_a_pack_and_records_who_took_it() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = server::create_key(&data, "acme", "admin");
    let read = server::create_key(&data, "acme", "read");
    let srv = server::TestServer::start(&data, &["--checkpoint-key", p(&f.secret)]);
    let client = reqwest::Client::new();
    let base = format!("{}/v1/workspaces/acme", srv.url);
    let events: Vec<Value> = f.events[..300]
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let posted = client
        .post(format!("{base}/events"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&events).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201, "{}", posted.text().await.unwrap());
    let url = format!(
        "{base}/evidence?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z&sample=5&seed=3"
    );
    let refused = client.get(&url).bearer_auth(&read).send().await.unwrap();
    assert_eq!(refused.status(), 403, "a read key takes no pack");
    let answer = client.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/zip");
    let body = answer.bytes().await.unwrap();
    let pack_path = tmp.path().join("served.zip");
    std::fs::write(&pack_path, &body).unwrap();
    let out = ok(&[
        "check-evidence",
        p(&pack_path),
        "--key",
        p(&f.public),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_seq"], 0);
    // The key's creation records come first, then the 300 events.
    assert!(report["rows"].as_u64().unwrap() >= 300, "{report}");
    assert_eq!(report["sample"], 5);
    let manifest: Value = serde_json::from_slice(&entry(&pack_path, "manifest.json")).unwrap();
    assert_eq!(
        manifest["generated_by"],
        format!("apikey:{}", server::key_id(&admin))
    );
    // Taking the pack is recorded once it ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = client
            .get(format!("{base}/events?event=access.evidence"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let listed: Value = serde_json::from_str(&text).unwrap();
        if let Some(row) = listed["events"].as_array().and_then(|rows| rows.first()) {
            assert_eq!(row["actor"], format!("apikey:{}", server::key_id(&admin)));
            assert_eq!(row["context"]["ended"], "complete");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access.evidence event: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, stderr) = srv.stop();
    assert!(status.success(), "{stderr}");
    // The CLI makes the same pack from the data directory.
    let cli_pack = tmp.path().join("cli.zip");
    ok(&[
        "evidence",
        "--data",
        p(&data),
        "--workspace",
        "acme",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2100-01-01T00:00:00Z",
        "--checkpoint-key",
        p(&f.secret),
        "-o",
        p(&cli_pack),
        "--no-pdf",
        "-q",
    ]);
    ok(&["check-evidence", p(&cli_pack), "--key", p(&f.public)]);
}
