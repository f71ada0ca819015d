//! Reading a log's archive in a bucket, each test against s3s-fs and Ceph
//! RGW (`NAME::s3s_fs`, `NAME::ceph`; s3s-fs ignores Object Lock, Ceph keeps
//! it):
//!
//! - `chainlog query`, `export` and `prove --from s3://…` answer from the
//!   archive as they do from the log's directory, for the records archived;
//! - an evidence pack of an archived log states the archive's part of the
//!   period (`chainlog evidence --archive s3://…`, and `serve --archive-to`):
//!   which archived segments hold the period's records, whether the bucket
//!   has each one at its manifest size, their Object Lock as the bucket
//!   reports it, and the records not archived yet; a missing segment is
//!   named, and an archive that cannot be read is said in the pack (and on
//!   stderr), never left out; on Ceph every segment is reported locked in
//!   compliance mode until the archive run's date.
#![cfg(all(feature = "s3", feature = "server"))]

#[path = "support/s3.rs"]
mod s3;
#[macro_use]
#[path = "support/ceph.rs"]
mod ceph;
#[path = "support/server.rs"]
mod support;
#[path = "support/tools.rs"]
mod tools;

use std::io::Read;
use std::path::Path;
use std::process::Output;

use ceph::CephServer;
use s3::{S3Server, TestS3};
use serde_json::Value;

fn ok(server: &dyn TestS3, args: &[&str]) -> Output {
    support::succeed(&mut server.command(args))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The pack's `state/retention.json`.
fn state(pack: &Path) -> Value {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(pack).unwrap()).unwrap();
    let mut text = String::new();
    zip.by_name("state/retention.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A log of 3,000 events on 2026-03-09 from 09:00 to 09:49:59, with small
/// segments (so that several are sealed and can be archived).
fn make_log(server: &dyn TestS3, log: &Path) {
    let input = log.with_extension("jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let lines: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-03-09T09:{:02}:{:02}Z\",\"event\":\"pcap.download\",\"actor\":\"alice\",\"context\":{{\"i\":{i},\"pad\":\"{}\"}}}}\n",
                i / 60 % 60,
                i % 60,
                "x".repeat(300)
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    ok(
        server,
        &["--dir", p(log), "init", "--segment-bytes", "256KiB", "-q"],
    );
    ok(server, &["--dir", p(log), "append", "-q", p(&input)]);
}

on_both_servers! {
fn a_pack_states_the_archived_segments_of_its_period(server: &dyn TestS3) {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    make_log(server, &log);
    // The log's checkpoint key, and its public half beside it.
    let secret = support::checkpoint_key(tmp.path());
    let public = tmp.path().join("cp.pub");
    ok(
        server,
        &["--dir", p(&log), "archive", "--to", "s3://audit/ev", "-q"],
    );

    let pack = |name: &str, archive: &str| {
        let path = tmp.path().join(name);
        let out = ok(
            server,
            &[
                "--dir",
                p(&log),
                "evidence",
                "--since",
                "2026-03-09T09:10:00Z",
                "--until",
                "2026-03-09T09:50:00Z",
                "--checkpoint-key",
                p(&secret),
                "--output",
                p(&path),
                "--no-pdf",
                "--archive",
                archive,
            ],
        );
        ok(
            server,
            &["check-evidence", p(&path), "--key", p(&public), "-q"],
        );
        (
            state(&path)["archive"].clone(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // Seqs 600..3000 are the period (09:10 to 09:49:59); the archive holds every sealed segment.
    let (archive, _) = pack("pack.zip", "s3://audit/ev");
    assert_eq!(archive["target"], "s3://audit/ev", "{archive:#}");
    assert_eq!(
        (archive["first_seq"].as_u64(), archive["end_seq"].as_u64()),
        (Some(600), Some(3000))
    );
    let archived_last = archive["archived_seqs"][1].as_u64().unwrap();
    let segments = archive["segments"].as_array().unwrap();
    assert!(segments.len() >= 3, "{archive:#}");
    assert!(
        segments
            .iter()
            .all(|s| s["present"] == true && s["object_lock"]["mode"].is_null()),
        "{archive:#}"
    );
    assert!(segments.first().unwrap()["base_seq"].as_u64().unwrap() <= 600);
    assert_eq!(
        segments.last().unwrap()["last_seq"].as_u64(),
        Some(archived_last)
    );
    assert_eq!(
        archive["records_not_archived"].as_u64(),
        Some(3000 - (archived_last + 1))
    );
    assert_eq!(archive["locked_segments"], 0);
    assert_eq!(archive["earliest_retain_until"], Value::Null);
    assert_eq!(archive["problems"], serde_json::json!([]));
    assert!(archive["manifest"]
        .as_str()
        .unwrap()
        .starts_with("manifest/"));

    // A segment deleted from the bucket is named as missing.
    let gone = segments[1]["object"].as_str().unwrap().to_string();
    server.delete_object(&format!("ev/{gone}"));
    let (archive, _) = pack("pack-missing.zip", "s3://audit/ev");
    let problems = archive["problems"].to_string();
    assert!(
        problems.contains(&gone) && problems.contains("missing"),
        "{archive:#}"
    );
    assert_eq!(archive["segments"][1]["present"], false);

    // No archive under the prefix: the pack (and stderr) says so.
    let (archive, stderr) = pack("pack-none.zip", "s3://audit/none");
    assert!(
        archive["error"].as_str().unwrap().contains("no archive at"),
        "{archive:#}"
    );
    assert!(stderr.contains("the archive could not be read"), "{stderr}");
}
}

/// `chainlog serve --archive-to` puts the workspace's archive (under its
/// prefix) in the packs `GET …/evidence` streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_packs_state_the_workspace_archive() {
    let Some(s3) = S3Server::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_log(&s3, &data.join("workspaces/acme"));
    let admin = support::create_key(&data, "acme", "admin");
    let secret = support::checkpoint_key(tmp.path());
    let url = "s3://audit/reads-srv";
    let serve = support::TestServer::start_with_env(
        &data,
        &["--archive-to", url, "--checkpoint-key", p(&secret)],
        &s3.env(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The listing blocks on a runtime of its own.
    let archived = || tokio::task::block_in_place(|| s3.objects("reads-srv/workspaces/acme"));
    while !archived().iter().any(|o| o.starts_with("manifest/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "not archived: {}",
            serve.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/workspaces/acme/evidence?since=2026-03-09T09:10:00Z&until=2026-03-09T09:50:00Z&sample=5&seed=3",
            serve.url
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let pack = tmp.path().join("server-pack.zip");
    std::fs::write(&pack, response.bytes().await.unwrap()).unwrap();
    let archive = state(&pack)["archive"].clone();
    assert_eq!(
        archive["target"],
        format!("{url}/workspaces/acme"),
        "{archive:#}"
    );
    let segments = archive["segments"].as_array().unwrap();
    assert!(
        !segments.is_empty() && segments.iter().all(|s| s["present"] == true),
        "{archive:#}"
    );
    assert_eq!(archive["problems"], serde_json::json!([]));
}

/// The records of `log` as `chainlog ARGS` prints them, from the directory
/// and from the archive.
fn both(server: &dyn TestS3, log: &Path, args: &[&str]) -> (String, String) {
    let text = |out: Output| String::from_utf8(out.stdout).unwrap();
    let mut local = vec!["--dir", p(log)];
    local.extend_from_slice(args);
    let mut archived = args.to_vec();
    archived.extend_from_slice(&["--from", "s3://audit/rd"]);
    (text(ok(server, &local)), text(ok(server, &archived)))
}

on_both_servers! {
fn query_export_and_prove_read_the_archive(server: &dyn TestS3) {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    make_log(server, &log);
    ok(
        server,
        &["--dir", p(&log), "archive", "--to", "s3://audit/rd", "-q"],
    );
    // The archive holds the sealed segments: the first rows of the log.
    let (local, archived) = both(server, &log, &["export", "--format", "jsonl"]);
    let archived_rows = archived.lines().count();
    assert!(
        archived_rows > 1000 && archived_rows < 3000,
        "{archived_rows} rows archived"
    );
    assert_eq!(
        archived,
        local
            .lines()
            .take(archived_rows)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let filtered = [
        "query",
        "--format",
        "csv",
        "--since",
        "2026-03-09T09:05:00Z",
        "--until",
        "2026-03-09T09:07:00Z",
        "--limit",
        "50",
    ];
    let (local, archived) = both(server, &log, &filtered);
    assert_eq!(archived, local);
    assert_eq!(archived.lines().count(), 51, "a header and 50 rows");
    let (local, archived) = both(server, &log, &["prove", "inclusion", "--seq", "700"]);
    let (local, archived): (Value, Value) = (
        serde_json::from_str(&local).unwrap(),
        serde_json::from_str(&archived).unwrap(),
    );
    assert_eq!(
        (archived["seq"].as_u64(), archived["leaf"].clone()),
        (Some(700), local["leaf"].clone())
    );
    assert_eq!(
        archived["tree_size"].as_u64(),
        Some(archived_rows as u64),
        "the archive's tree is its records'"
    );

    // No archive there: exit 2 and a clear message.
    let out = server.run(&["query", "--from", "s3://audit/none"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no archive at s3://audit/none"), "{stderr}");
}
}

on_both_servers! {
/// The Object Lock of the archived segments, as the bucket reports it: Ceph
/// keeps the lock (compliance, until the run's date); s3s-fs ignores the
/// lock headers, and the pack says no segment is locked.
fn a_pack_reports_the_object_lock_the_bucket_reports(server: &dyn TestS3) {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    make_log(server, &log);
    let secret = support::checkpoint_key(tmp.path());
    let url = format!("s3://{}/lk", server.locked_bucket());
    let out = ok(server, &["--dir", p(&log), "archive", "--to", &url, "--object-lock-days", "1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    let until = said
        .split("in compliance mode until ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retain-until date in {said}"));
    let pack = tmp.path().join("pack.zip");
    ok(server, &["--dir", p(&log), "evidence", "--since", "2026-03-09T09:00:00Z", "--until", "2026-03-10T00:00:00Z", "--checkpoint-key", p(&secret), "--output", p(&pack), "--no-pdf", "--archive", &url]);
    let archive = state(&pack)["archive"].clone();
    let segments = archive["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{archive:#}");
    if server.name() == "ceph" {
        assert_eq!(archive["locked_segments"].as_u64(), Some(segments.len() as u64), "{archive:#}");
        for s in segments {
            assert_eq!(s["object_lock"]["mode"], "COMPLIANCE", "{archive:#}");
        }
        let earliest = archive["earliest_retain_until"].as_str().unwrap();
        let (a, b) = (
            chainlog::Timestamp::parse_rfc3339(earliest).unwrap(),
            chainlog::Timestamp::parse_rfc3339(until).unwrap(),
        );
        assert!((a.unix_nanos() - b.unix_nanos()).abs() < 2_000_000_000, "{earliest} against {until}");
    } else {
        assert_eq!(archive["locked_segments"], 0, "{archive:#}");
        assert_eq!(archive["earliest_retain_until"], Value::Null);
    }
}
}
