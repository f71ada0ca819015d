//! The input contract (issue 15, finding 13) through `chainlog append` and
//! the HTTP API: an event is a JSON object, a context number is stored as
//! sent or refused, and invisible or bidi characters are refused in actor,
//! node and resource. Every refusal is exit 2 or 400 with a message that
//! says what and where, and appends nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use chainlog::{Log, Options, Record};

#[cfg(feature = "server")]
#[path = "support/server.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

/// Events that must be refused, each with a phrase its message must hold.
/// All have the event type `input.test`, so that a test can tell whether
/// any of them was stored.
const REFUSED: &[(&str, &str)] = &[
    // Positional: the fields of an event as an array.
    (
        r#"["2026-03-09T09:52:14Z","input.test","alice"]"#,
        "JSON object",
    ),
    (
        r#"{"event":"input.test","actor":"x","context":{"n":18446744073709551616}}"#,
        "integer outside",
    ),
    (
        r#"{"event":"input.test","actor":"x","context":{"a":[1,{"n":-9223372036854775809}]}}"#,
        "integer outside",
    ),
    (
        r#"{"event":"input.test","actor":"x","context":{"pi":3.14159265358979323846264}}"#,
        "64-bit float",
    ),
    (
        r#"{"event":"input.test","actor":"x","context":{"tiny":1e-400}}"#,
        "64-bit float",
    ),
    (r#"{"event":"input.test","actor":"adm\u200bin"}"#, "U+200B"),
    (
        "{\"event\":\"input.test\",\"actor\":\"x\",\"node\":\"edge-\u{202E}10\"}",
        "U+202E",
    ),
    (
        r#"{"event":"input.test","actor":"x","resource":"\u2066r1"}"#,
        "U+2066",
    ),
    (r#"{"event":"input.test","actor":"\ufeffroot"}"#, "U+FEFF"),
];

/// Stored as sent: the widest integers, and fractions a double keeps.
const KEPT: &str = r#"{"event":"input.kept","actor":"x","context":{"max":18446744073709551615,"min":-9223372036854775808,"f":1.5,"s":"99999999999999999999999"}}"#;
const KEPT_CONTEXT: &str = r#"{"max":18446744073709551615,"min":-9223372036854775808,"f":1.5,"s":"99999999999999999999999"}"#;

/// Every record of a log, read without the writer lock.
fn records(dir: &Path) -> Vec<Record> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0).map(Result::unwrap).collect()
}

fn context_of(records: &[Record], event_type: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.event.event_type == event_type)
        .map(|r| serde_json::to_string(&r.event.context).unwrap())
        .collect()
}

/// `chainlog --dir DIR append FILE` with `text` in FILE: exit code and
/// stderr.
fn append(dir: &Path, text: &str) -> (i32, String) {
    let file = dir.with_extension("jsonl");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "append",
            file.to_str().unwrap(),
        ])
        .env_remove("CHAINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn chainlog_append_keeps_the_input_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let init = Command::new(BIN)
        .args(["--dir", dir.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    for (line, phrase) in REFUSED {
        // A good line first: a FILE is checked whole before anything of
        // it is appended.
        let (code, stderr) = append(&dir, &format!("{KEPT}\n{line}\n"));
        assert_eq!(code, 2, "{line}: {stderr}");
        assert!(stderr.contains("line 2:"), "{line}: {stderr}");
        assert!(
            stderr.contains(phrase),
            "{line}: want {phrase:?} in {stderr}"
        );
        assert!(stderr.contains("nothing was appended"), "{line}: {stderr}");
    }
    assert!(records(&dir).is_empty());
    let (code, stderr) = append(&dir, &format!("{KEPT}\n"));
    assert_eq!(code, 0, "{stderr}");
    let stored = records(&dir);
    assert_eq!(context_of(&stored, "input.kept"), [KEPT_CONTEXT]);
    assert!(context_of(&stored, "input.test").is_empty());
}

/// The CSV formula guard of `chainlog export` (issue 15, finding 13):
/// leading whitespace and full-width starters are seen through, and a real
/// leading `'` is doubled, so one stripped `'` gives the stored text back.
#[test]
fn csv_exports_guard_formulas_behind_spaces_and_full_width_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    // (stored actor, its CSV cell)
    let actors = [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"\"http://x\"\")"),
        (" =1+1", "' =1+1"),
        ("\u{3000}+1", "'\u{3000}+1"),
        ("＝1+1", "'＝1+1"),
        ("＋1", "'＋1"),
        ("－1", "'－1"),
        ("＠SUM(A1)", "'＠SUM(A1)"),
        ("'=1", "''=1"),
        ("'plain", "''plain"),
        ("alice@acme.io", "alice@acme.io"),
        ("a=b", "a=b"),
    ];
    let lines: String = actors
        .iter()
        .map(|(actor, _)| {
            format!(
                "{}\n",
                serde_json::json!({"event": "csv.test", "actor": actor})
            )
        })
        .collect();
    let init = Command::new(BIN)
        .args(["--dir", dir.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let (code, stderr) = append(&dir, &lines);
    assert_eq!(code, 0, "{stderr}");
    let out = Command::new(BIN)
        .args(["--dir", dir.to_str().unwrap(), "export", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut rows = csv.lines().skip(1);
    for (actor, cell) in actors {
        let row = rows.next().unwrap();
        // seq,timestamp,event,actor,...: the actor is the fourth cell; a
        // quoted cell (it holds `"`) is compared as written.
        let after_event = row.split_once(",csv.test,").unwrap().1;
        let written = if cell.contains('"') {
            let inner = after_event.strip_prefix('"').unwrap();
            inner[..inner.find("\",").unwrap()].to_string()
        } else {
            after_event.split(',').next().unwrap().to_string()
        };
        assert_eq!(written, cell, "{actor:?} in {row}");
        // One stripped `'` gives the stored text back.
        let unguarded = written
            .strip_prefix('\'')
            .unwrap_or(&written)
            .replace("\"\"", "\"");
        assert_eq!(unguarded, actor, "{row}");
    }
}

#[cfg(feature = "server")]
mod http {
    use super::*;

    use crate::support::{create_key, post_body, TestServer};
    use reqwest::StatusCode;
    use serde_json::Value;

    async fn post(
        client: &reqwest::Client,
        url: &str,
        key: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, Value) {
        post_body(client, url, key, content_type, body.into_bytes()).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_bodies_keep_the_input_contract() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let key = create_key(&data, "w", "admin");
        let server = TestServer::start(&data, &[]);
        let url = format!("{}/v1/workspaces/w/events", server.url);
        let client = reqwest::Client::new();
        for (event, phrase) in REFUSED {
            // Each body with where its message says the event is.
            let bodies = [
                ("application/json", event.to_string(), &[""][..]),
                (
                    "application/json",
                    format!("[{KEPT},{event}]"),
                    &["event at index 1: ", " at byte "][..],
                ),
                (
                    "application/x-ndjson",
                    format!("{KEPT}\n{event}\n"),
                    &["line 2: ", "event at index 1: "][..],
                ),
            ];
            for (content_type, body, places) in bodies {
                let (status, answer) = post(&client, &url, &key, content_type, body.clone()).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
                let detail = answer["detail"].as_str().unwrap();
                assert!(
                    detail.contains(phrase),
                    "{body}: want {phrase:?} in {detail}"
                );
                assert!(
                    places.iter().any(|p| detail.contains(p)),
                    "{body}: want one of {places:?} in {detail}"
                );
                assert!(
                    matches!(
                        answer["error"].as_str(),
                        Some("invalid_event" | "malformed_json")
                    ),
                    "{answer}"
                );
            }
        }
        // A body of one positional array is refused as a JSON array of
        // events whose first is no object.
        let (status, answer) = post(
            &client,
            &url,
            &key,
            "application/json",
            r#"[["2026-03-09T09:52:14Z","input.test","alice"]]"#.into(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains("index 0"),
            "{answer}"
        );
        let (status, answer) = post(&client, &url, &key, "application/json", KEPT.into()).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (_, _) = server.stop();
        let stored = records(&data.join("workspaces").join("w"));
        assert_eq!(context_of(&stored, "input.kept"), [KEPT_CONTEXT]);
        assert!(context_of(&stored, "input.test").is_empty());
    }
}
