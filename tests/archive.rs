//! Archiving to S3-compatible object storage, end to end, against two real
//! S3 servers on 127.0.0.1: `s3s-fs` (which checks request signatures),
//! installed by `scripts/s3-server.sh install`, and Ceph's radosgw (Debian's
//! packages, `scripts/ceph-server.sh`). Most tests are one body run against
//! both (`on_both_servers!`, in tests/support/ceph.rs): `NAME::s3s_fs` starts its own s3s-fs on a free
//! loopback port with a fresh root directory, killed on drop; `NAME::ceph`
//! uses the test binary's one Ceph, under a prefix of its own. Killing the
//! server mid-run and the throughput figures are s3s-fs only.
//!
//! Without a server's binaries its tests are skipped with a note, unless
//! `CHAINLOG_REQUIRE_S3` (s3s-fs) or `CHAINLOG_REQUIRE_CEPH` (Ceph) is set
//! (as `scripts/test.sh` does), when they fail.
#![cfg(feature = "s3")]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainlog::archive::{self, ArchiveOptions};
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir, VerifyOptions};
use chainlog::{Event, Log, Options, Timestamp};

#[cfg(feature = "server")]
#[path = "support/server.rs"]
mod support;

#[path = "support/s3.rs"]
mod s3;
use s3::{library_credentials, S3Server, TestS3, BUCKET};
#[macro_use]
#[path = "support/ceph.rs"]
mod ceph;
#[path = "support/tools.rs"]
mod tools;
use ceph::CephServer;

const SEGMENT_BYTES: u64 = 128 * 1024;

/// What a client sent on one connection through a [`RecordingProxy`].
#[derive(Default)]
struct Sent {
    bytes: Vec<u8>,
    /// The client closed its side (or the connection failed).
    done: bool,
}

/// A TCP proxy in front of the S3 server that records every byte clients
/// send. s3s-fs accepts the Object Lock headers but ignores them, so the
/// tests read them off the wire.
struct RecordingProxy {
    port: u16,
    connections: Arc<Mutex<Vec<Arc<Mutex<Sent>>>>>,
}

/// One request head seen by a [`RecordingProxy`].
#[derive(Debug)]
struct SentRequest {
    method: String,
    target: String,
    /// Names in lowercase.
    headers: Vec<(String, String)>,
}

impl SentRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The header names listed in `SignedHeaders=` of the SigV4
    /// Authorization header.
    fn signed_headers(&self) -> Vec<&str> {
        let auth = self.header("authorization").unwrap_or("");
        auth.split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .map(|list| list.split(';').collect())
            .unwrap_or_default()
    }

    fn is_list(&self) -> bool {
        self.method == "GET" && self.target.contains("list-type=2")
    }
}

impl RecordingProxy {
    fn start(upstream: u16) -> RecordingProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<Arc<Mutex<Sent>>>>> = Arc::default();
        let recorded = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                    continue; // dropping the client closes it: it sees a failed connection
                };
                let sent = Arc::new(Mutex::new(Sent::default()));
                recorded.lock().unwrap().push(sent.clone());
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || forward(client_in, server_out, Some(sent)));
                std::thread::spawn(move || forward(server, client, None));
            }
        });
        RecordingProxy { port, connections }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests sent since the last call, once every client that sent
    /// them has closed its connection (call it after the client exited).
    fn take_requests(&self) -> Vec<SentRequest> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let taken: Vec<Arc<Mutex<Sent>>> = loop {
            {
                let mut connections = self.connections.lock().unwrap();
                if connections.iter().all(|c| c.lock().unwrap().done) {
                    break std::mem::take(&mut *connections);
                }
            }
            assert!(
                Instant::now() < deadline,
                "a proxied connection stayed open"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut requests = Vec::new();
        for sent in taken {
            parse_requests(&sent.lock().unwrap().bytes, &mut requests);
        }
        requests
    }
}

/// Copies `from` to `to` until `from` ends, recording the bytes in `sent`.
fn forward(mut from: TcpStream, mut to: TcpStream, sent: Option<Arc<Mutex<Sent>>>) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(sent) = &sent {
            sent.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    if let Some(sent) = sent {
        sent.lock().unwrap().done = true;
    }
}

/// The HTTP/1.1 request heads in `bytes`, skipping their bodies
/// (Content-Length or chunked). Stops at a request cut off part-way.
fn parse_requests(mut bytes: &[u8], out: &mut Vec<SentRequest>) {
    fn find(bytes: &[u8], what: &[u8]) -> Option<usize> {
        bytes.windows(what.len()).position(|w| w == what)
    }
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let request = SentRequest {
            method: request_line.next().unwrap_or("").to_string(),
            target: request_line.next().unwrap_or("").to_string(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
        };
        let mut rest = &bytes[end + 4..];
        if request
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let Some(line_end) = find(rest, b"\r\n") else {
                    out.push(request);
                    return;
                };
                let size_text = String::from_utf8_lossy(&rest[..line_end]);
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                let skip = line_end + 2 + size + 2;
                rest = rest.get(skip..).unwrap_or(&[]);
                if size == 0 {
                    break;
                }
            }
        } else {
            let len: usize = request
                .header("content-length")
                .map_or(0, |l| l.parse().unwrap());
            rest = rest.get(len..).unwrap_or(&[]);
        }
        out.push(request);
        bytes = rest;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn expect_code(output: &Output, code: i32) -> String {
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&output.stderr)
    );
    stdout
}

/// A log of `records` events with `context_bytes` of context each, in
/// segments of `segment_bytes`; `age_days` back in time.
/// The real file system, with the engine clock `age_days` back: records
/// appended through it were received then (retention judges age by it).
fn received_days_ago(age_days: i64) -> Arc<dyn chainlog::storage::Storage> {
    let at =
        Timestamp::from_unix_nanos(Timestamp::now().unix_nanos() - age_days * 86_400_000_000_000);
    Arc::new(chainlog::storage::SetClock::new(
        Arc::new(chainlog::storage::FsStorage),
        at,
    ))
}

fn make_log(dir: &Path, records: u64, context_bytes: usize, segment_bytes: u64, age_days: i64) {
    let log = Log::create_in(
        received_days_ago(age_days),
        dir,
        Options {
            segment_bytes,
            durability: chainlog::Durability::None,
            ..Options::default()
        },
    )
    .unwrap();
    let start = Timestamp::now().unix_nanos() - age_days * 86_400_000_000_000;
    let filler = "x".repeat(context_bytes);
    // A batch must fit in one segment.
    let batch_len = ((segment_bytes / 2) / (context_bytes as u64 + 400)).clamp(1, 512) as usize;
    let mut batch = Vec::new();
    for i in 0..records {
        let ts = Timestamp::from_unix_nanos(start + i as i64 * 1_000_000);
        let mut event = Event::new(ts, "auth.login", format!("user{}@acme.io", i % 17));
        event.node = Some(format!("nyc-edge-{:02}", i % 5));
        event.context.insert("i".into(), i.into());
        event.context.insert("filler".into(), filler.clone().into());
        batch.push(event);
        if batch.len() == batch_len {
            log.append_batch(&batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.append_batch(&batch).unwrap();
    }
    log.close().unwrap();
}

/// Appends `records` events dated, and received, `age_days` back.
fn append_more(dir: &Path, records: u64, age_days: i64) {
    let log = Log::open_in(
        received_days_ago(age_days),
        dir,
        Options {
            segment_bytes: SEGMENT_BYTES,
            ..Options::default()
        },
    )
    .unwrap();
    let events: Vec<Event> = (0..records)
        .map(|i| {
            let ts = Timestamp::now().unix_nanos() - age_days * 86_400_000_000_000;
            let mut event = Event::new(Timestamp::from_unix_nanos(ts), "node.added", "deploy-bot");
            event.context.insert("n".into(), i.into());
            event
        })
        .collect();
    for chunk in events.chunks(512) {
        log.append_batch(chunk).unwrap();
    }
    log.close().unwrap();
}

fn sealed_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
        - 1
}

fn dir_arg(dir: &Path) -> String {
    dir.to_str().unwrap().to_string()
}

on_both_servers! {
fn archive_verify_from_the_bucket_restore_and_rerun(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 3000, 100, SEGMENT_BYTES, 1);
    let sealed = sealed_segments(&log_dir);
    assert!(
        sealed >= 3,
        "the test log should have several sealed segments"
    );
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{BUCKET}/prod/eu");

    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(
        out.contains(&format!("archived {sealed} segments")),
        "{out}"
    );
    let objects = server.objects("prod/eu");
    // Each sealed segment and its index, and one manifest.
    assert_eq!(objects.len(), 2 * sealed + 1, "{objects:?}");
    assert!(
        objects.iter().any(|o| o.starts_with("manifest/")),
        "{objects:?}"
    );

    // Verify straight from the bucket: same report as a local verify.
    let out = expect_code(&server.run(&["verify", "--from", &url]), 0);
    assert!(out.starts_with("intact: "), "{out}");
    assert!(
        out.contains(&format!(
            "archive: {} objects of {sealed} segments",
            2 * sealed
        )),
        "{out}"
    );
    let json = expect_code(&server.run(&["verify", "--from", &url, "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["segments"], sealed as u64);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["archive"]["objects_checked"], 2 * sealed as u64);

    // A rerun uploads nothing.
    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(out.starts_with("nothing new to archive"), "{out}");
    assert_eq!(server.objects("prod/eu"), objects);

    // More records seal more segments: only those are uploaded, with a new manifest.
    append_more(&log_dir, 1500, 0);
    let sealed_now = sealed_segments(&log_dir);
    assert!(sealed_now > sealed);
    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(
        out.contains(&format!("archived {} segment", sealed_now - sealed)),
        "{out}"
    );
    let manifests = server.objects("prod/eu/manifest");
    assert_eq!(
        manifests.len(),
        2,
        "one manifest per run that archived something: {manifests:?}"
    );

    // A signed checkpoint of the archive, verified from the bucket.
    let keygen = server.run(&[
        "keygen",
        "--secret-key",
        work.path().join("k.key").to_str().unwrap(),
        "--public-key",
        work.path().join("k.pub").to_str().unwrap(),
        "--name",
        "archive.test",
    ]);
    expect_code(&keygen, 0);
    let key = work.path().join("k.key");
    let out = expect_code(
        &server.run(&[
            "--dir",
            &dir,
            "archive",
            "--to",
            &url,
            "--checkpoint-key",
            key.to_str().unwrap(),
        ]),
        0,
    );
    assert!(out.contains("checkpoint: checkpoint/"), "{out}");
    let checkpoints = server.objects("prod/eu/checkpoint");
    assert_eq!(checkpoints.len(), 1);
    let checkpoint = work.path().join("archived.checkpoint");
    std::fs::write(
        &checkpoint,
        server.read_object(&format!("prod/eu/checkpoint/{}", checkpoints[0])),
    )
    .unwrap();
    let public = work.path().join("k.pub");
    let out = expect_code(
        &server.run(&[
            "verify",
            "--from",
            &url,
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ]),
        0,
    );
    assert!(out.contains("checkpoint: the archive matches"), "{out}");

    // Restore: the restored log opens, verifies, and holds the same records.
    let restored = work.path().join("restored");
    let out = expect_code(
        &server.run(&["--dir", &dir_arg(&restored), "restore", "--from", &url]),
        0,
    );
    assert!(out.contains("intact: "), "{out}");
    let report = verify_dir(&FsStorage, &restored, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    let original = Log::open(&log_dir, Options::for_reading()).unwrap();
    let copy = Log::open(&restored, Options::for_reading()).unwrap();
    let last = report.last_seq.unwrap();
    let a: Vec<_> = original
        .iter_from(0)
        .take(last as usize + 1)
        .map(|r| r.unwrap())
        .collect();
    let b: Vec<_> = copy.iter_from(0).map(|r| r.unwrap()).collect();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.seq, x.hash, &x.event), (y.seq, y.hash, &y.event));
    }
    drop(copy);
    // ... and takes appends, continuing the chain.
    append_more(&restored, 10, 0);
    assert!(verify_dir(&FsStorage, &restored, &mut |_| {})
        .unwrap()
        .is_intact());
    // A non-empty directory is refused.
    let out = server.run(&["--dir", &dir_arg(&restored), "restore", "--from", &url]);
    expect_code(&out, 2);
    assert!(
        text(&out.stderr).contains("is not empty"),
        "{}",
        text(&out.stderr)
    );
}
}

#[test]
fn an_archive_interrupted_by_a_killed_server_completes_on_the_next_run() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    // About 40 segments of 2 MiB, so the upload takes long enough to interrupt.
    make_log(&log_dir, 20_000, 4000, 2 << 20, 1);
    let sealed = sealed_segments(&log_dir);
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{BUCKET}/nightly");
    let archiving = server
        .command(&["--dir", &dir, "archive", "--to", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the first segments have landed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .files("nightly")
        .iter()
        .filter(|o| o.ends_with(".seg"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "nothing was uploaded");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    let out = archiving.wait_with_output().unwrap();
    let uploaded = server.files("nightly");
    if out.status.success() {
        eprintln!("note: the archive finished before the server was killed; the rerun below is then a no-op");
    } else {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            !uploaded.iter().any(|o| o.starts_with("manifest/")),
            "the manifest is written last: {uploaded:?}"
        );
        assert!(uploaded.iter().filter(|o| o.ends_with(".seg")).count() < sealed);
        // Nothing is readable as an archive yet.
        let verify = server.run(&["verify", "--from", &url]);
        assert_ne!(verify.status.code(), Some(0));
    }
    server.restart();
    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(out.contains("it now holds"), "{out}");
    let objects = server.objects("nightly");
    assert_eq!(objects.len(), 2 * sealed + 1, "{objects:?}");
    let out = expect_code(&server.run(&["verify", "--from", &url]), 0);
    assert!(out.starts_with("intact: "), "{out}");
    // And the run after that uploads nothing.
    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(out.starts_with("nothing new to archive"), "{out}");
}

on_both_servers! {
/// A segment already in the bucket but in no manifest (a run that was cut
/// off before writing its manifest) is adopted after a byte-for-byte
/// comparison. Regression: s3s-fs answers the create-only PUT with 412
/// before reading the body and closes the connection, which the client
/// saw as a failed upload about one time in five.
fn a_segment_uploaded_before_an_interrupted_run_is_adopted(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 4000, 4000, 2 << 20, 1);
    let sealed = sealed_segments(&log_dir);
    let dir = dir_arg(&log_dir);
    let first = "00000000000000000000.seg";
    // The race is timing-dependent: several prefixes, several chances.
    for trial in 0..4 {
        let prefix = format!("adopt{trial}");
        let url = format!("s3://{BUCKET}/{prefix}");
        server.write_object(
            &format!("{prefix}/{first}"),
            std::fs::read(log_dir.join(first)).unwrap(),
        );
        let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
        assert!(out.contains("found 1 object already uploaded"), "{out}");
        assert_eq!(server.objects(&prefix).len(), 2 * sealed + 1);
        expect_code(&server.run(&["verify", "--from", &url]), 0);
    }
}
}

on_both_servers! {
fn changed_or_deleted_objects_are_reported_as_tampering(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 3000, 100, SEGMENT_BYTES, 1);
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{BUCKET}/tamper");
    expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    let first = "tamper/00000000000000000000.seg";
    let original = server.read_object(first);

    // One byte of a record changed on the server's disk.
    let mut changed = original.clone();
    changed[1000] ^= 0x20;
    server.write_object(first, changed);
    let out = server.run(&["verify", "--from", &url]);
    let stdout = expect_code(&out, 1);
    assert!(stdout.starts_with("NOT INTACT"), "{stdout}");
    assert!(
        stdout.contains("digest_mismatch: s3://audit/tamper/00000000000000000000.seg"),
        "{stdout}"
    );
    // A rerun that compares contents reports it, and uploads nothing.
    let before = server.objects("tamper");
    let out = server.run(&["--dir", &dir, "archive", "--to", &url, "--verify-existing"]);
    expect_code(&out, 1);
    assert!(
        text(&out.stderr).contains("tampered"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.objects("tamper"), before);
    // Restore refuses the object too.
    let restored = work.path().join("restored");
    let out = server.run(&["--dir", &dir_arg(&restored), "restore", "--from", &url]);
    expect_code(&out, 1);
    assert!(
        text(&out.stderr).contains("00000000000000000000.seg has SHA-256"),
        "{}",
        text(&out.stderr)
    );
    server.write_object(first, original);
    expect_code(&server.run(&["verify", "--from", &url]), 0);

    // A segment deleted from the bucket: the chain has a gap, and a plain
    // rerun (a LIST) notices.
    let segment_objects: Vec<String> = server
        .objects("tamper")
        .into_iter()
        .filter(|o| o.ends_with(".seg"))
        .collect();
    assert!(segment_objects.len() >= 3, "{segment_objects:?}");
    let second_name = segment_objects[1].clone();
    let second = format!("tamper/{second_name}");
    let saved = server.read_object(&second);
    server.delete_object(&second);
    let stdout = expect_code(&server.run(&["verify", "--from", &url]), 1);
    assert!(stdout.contains("object_missing"), "{stdout}");
    assert!(
        stdout.contains("missing_records") || stdout.contains("link_mismatch"),
        "{stdout}"
    );
    let out = server.run(&["--dir", &dir, "archive", "--to", &url]);
    expect_code(&out, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{second_name} is missing")),
        "{stderr}"
    );

    // The newest archived segment deleted: the chain alone cannot tell, the manifest can.
    server.write_object(&second, saved);
    server.delete_object(&format!("tamper/{}", segment_objects.last().unwrap()));
    let stdout = expect_code(&server.run(&["verify", "--from", &url]), 1);
    assert!(stdout.contains("object_missing"), "{stdout}");
}
}

on_both_servers! {
fn wrong_credentials_are_a_clear_error(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 1500, 100, SEGMENT_BYTES, 1);
    let url = format!("s3://{BUCKET}/creds");
    for args in [
        vec!["--dir", log_dir.to_str().unwrap(), "archive", "--to", &url],
        vec!["verify", "--from", &url],
    ] {
        let out = server
            .command(&args)
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .output()
            .unwrap();
        expect_code(&out, 2);
        let stderr = text(&out.stderr);
        assert!(stderr.contains("refused the credentials"), "{stderr}");
    }
    assert!(server.objects("creds").is_empty());
    // A bad URL is a usage error too.
    let out = server.run(&["verify", "--from", "s3://NO/x"]);
    expect_code(&out, 2);
}
}

/// The segment files of the log in `dir`, sorted (oldest first).
fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// "1 segment", "3 segments".
fn plural_segments(n: usize) -> String {
    format!("{n} segment{}", if n == 1 { "" } else { "s" })
}

on_both_servers! {
fn retention_deletes_only_archived_segments_and_the_archive_still_verifies(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    // Old events: every sealed segment is past a 90-day max age.
    make_log(&log_dir, 3000, 100, SEGMENT_BYTES, 200);
    let sealed = sealed_segments(&log_dir);
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{BUCKET}/retained");
    let retention = || {
        server.run(&[
            "--dir",
            &dir,
            "retention",
            "--max-age",
            "90d",
            "--only-archived",
            &url,
        ])
    };

    // Nothing archived yet: every due segment is kept, and named.
    let out = expect_code(&retention(), 0);
    assert!(
        out.starts_with("deleted nothing under max age 90d"),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {sealed} segments (seq 0..=")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "00000000000000000000.seg is not archived in {url} yet"
        )),
        "{out}"
    );
    assert_eq!(sealed_segments(&log_dir), sealed);

    // Archived, then more old records seal segments that are due too, but
    // not archived: only the archived prefix is deleted.
    expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    append_more(&log_dir, 1500, 200);
    let files = segment_files(&log_dir);
    let unarchived = files.len() - 1 - sealed;
    assert!(unarchived >= 1, "{files:?}");
    let first_kept = &files[sealed];
    let first_kept_seq: u64 = first_kept.trim_end_matches(".seg").parse().unwrap();
    let dry = server.run(&[
        "--dir",
        &dir,
        "retention",
        "--dry-run",
        "--max-age",
        "90d",
        "--only-archived",
        &url,
    ]);
    let dry = expect_code(&dry, 0);
    assert!(
        dry.starts_with(&format!("dry run: would delete {sealed} segments")),
        "{dry}"
    );
    assert!(
        dry.contains(&format!(
            "dry run: would keep {} (seq {first_kept_seq}..=",
            plural_segments(unarchived)
        )) && dry.contains(&format!(
            " due for deletion: {first_kept} is not archived in {url} yet"
        )),
        "{dry}"
    );
    assert_eq!(segment_files(&log_dir), files, "a dry run deletes nothing");
    let out = expect_code(&retention(), 0);
    assert!(out.contains(&format!("deleted {sealed} segments")), "{out}");
    assert!(
        out.contains(&format!(
            "kept {} (seq {first_kept_seq}..=",
            plural_segments(unarchived)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            " due for deletion: {first_kept} is not archived in {url} yet"
        )),
        "{out}"
    );
    for (i, name) in files.iter().enumerate() {
        assert_eq!(log_dir.join(name).exists(), i >= sealed, "{name}: {out}");
    }

    // The local log still verifies (a retention record accounts for its start)...
    let out = expect_code(&server.run(&["--dir", &dir, "verify"]), 0);
    assert!(out.starts_with("intact: "), "{out}");
    // ... and the archive, from seq 0, too.
    let out = expect_code(&server.run(&["verify", "--from", &url]), 0);
    assert!(out.contains(", seq 0..="), "{out}");

    // Once archived, the kept segments go too.
    expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    let out = expect_code(&retention(), 0);
    assert!(out.starts_with("deleted "), "{out}");
    assert!(!out.contains("kept"), "{out}");
    assert!(!log_dir.join(first_kept).exists());
    expect_code(&server.run(&["--dir", &dir, "verify"]), 0);

    // Archiving goes on after retention.
    append_more(&log_dir, 1500, 0);
    let out = expect_code(&server.run(&["--dir", &dir, "archive", "--to", &url]), 0);
    assert!(out.starts_with("archived "), "{out}");
    let out = expect_code(&server.run(&["verify", "--from", &url]), 0);
    assert!(out.contains(", seq 0..="), "{out}");
}
}

/// Checks the PUTs of one archive run: each carries the Object Lock headers
/// (`mode`, one retain-until date about `days` days ahead), signed, and an
/// x-amz-checksum-sha256. Returns the date and the number of PUTs.
#[track_caller]
fn assert_locked_puts(requests: &[SentRequest], mode: &str, days: i64) -> (String, usize) {
    let puts: Vec<&SentRequest> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert!(!puts.is_empty(), "{requests:#?}");
    let until = puts[0]
        .header("x-amz-object-lock-retain-until-date")
        .unwrap_or_else(|| panic!("no retain-until date: {:#?}", puts[0]))
        .to_string();
    // RFC 3339 in UTC, whole seconds: 2027-02-25T09:30:00Z.
    assert!(until.len() == 20 && until.ends_with('Z'), "{until}");
    let ahead =
        Timestamp::parse_rfc3339(&until).unwrap().unix_nanos() - Timestamp::now().unix_nanos();
    let day = 86_400_000_000_000;
    assert!(
        (days * day - day / 24..=days * day + 1_000_000_000).contains(&ahead),
        "{until} is not {days} days ahead"
    );
    for put in &puts {
        assert_eq!(put.header("x-amz-object-lock-mode"), Some(mode), "{put:#?}");
        assert_eq!(
            put.header("x-amz-object-lock-retain-until-date"),
            Some(until.as_str()),
            "one date per run: {put:#?}"
        );
        assert!(put.header("x-amz-checksum-sha256").is_some(), "{put:#?}");
        let signed = put.signed_headers();
        for name in [
            "x-amz-object-lock-mode",
            "x-amz-object-lock-retain-until-date",
        ] {
            assert!(signed.contains(&name), "{name} is not signed: {put:#?}");
        }
    }
    assert_no_lock_on_reads(requests);
    (until, puts.len())
}

#[track_caller]
fn assert_no_lock_on_reads(requests: &[SentRequest]) {
    for request in requests.iter().filter(|r| r.method != "PUT") {
        assert!(
            !request
                .headers
                .iter()
                .any(|(n, _)| n.starts_with("x-amz-object-lock-")),
            "{request:#?}"
        );
    }
}

on_both_servers! {
fn object_lock_headers_are_sent_and_signed_on_every_put_and_only_there(server: &dyn TestS3) {
    let proxy = RecordingProxy::start(server.port());
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 3000, 100, SEGMENT_BYTES, 1);
    let sealed = sealed_segments(&log_dir);
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{}/locked", server.locked_bucket());
    let key = work.path().join("k.key");
    expect_code(
        &server.run(&[
            "keygen",
            "--secret-key",
            key.to_str().unwrap(),
            "--public-key",
            work.path().join("k.pub").to_str().unwrap(),
            "--name",
            "archive.test",
        ]),
        0,
    );

    // Segments, indexes, the manifest and a checkpoint, in compliance mode
    // (the default) for 30 days.
    let out = expect_code(
        &server.run(&[
            "--dir",
            &dir,
            "archive",
            "--to",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--object-lock-days",
            "30",
            "--checkpoint-key",
            key.to_str().unwrap(),
        ]),
        0,
    );
    let requests = proxy.take_requests();
    let (until, puts) = assert_locked_puts(&requests, "COMPLIANCE", 30);
    assert_eq!(puts, 2 * sealed + 2, "{requests:#?}");
    assert!(requests.iter().any(SentRequest::is_list), "{requests:#?}");
    assert!(
        out.contains(&format!(
            "object lock: the objects written are retained in compliance mode until {until}"
        )),
        "{out}"
    );

    // A second run in governance mode, with a HEAD before each PUT: the
    // GET of the manifest and the HEADs carry no lock headers.
    append_more(&log_dir, 1500, 0);
    let sealed_now = sealed_segments(&log_dir);
    expect_code(
        &server.run(&[
            "--dir",
            &dir,
            "archive",
            "--to",
            &url,
            "--endpoint",
            &proxy.endpoint(),
            "--object-lock-days",
            "7",
            "--object-lock-mode",
            "governance",
            "--no-conditional-put",
        ]),
        0,
    );
    let requests = proxy.take_requests();
    let (_, puts) = assert_locked_puts(&requests, "GOVERNANCE", 7);
    assert_eq!(puts, 2 * (sealed_now - sealed) + 1, "{requests:#?}");
    for method in ["HEAD", "GET"] {
        assert!(
            requests.iter().any(|r| r.method == method && !r.is_list()),
            "no {method}: {requests:#?}"
        );
    }

    // The server took every locked PUT: the archive verifies, read through the
    // proxy without lock headers.
    let out = expect_code(
        &server.run(&["verify", "--from", &url, "--endpoint", &proxy.endpoint()]),
        0,
    );
    assert!(out.starts_with("intact: "), "{out}");
    let requests = proxy.take_requests();
    assert!(requests.iter().any(|r| r.method == "GET"), "{requests:#?}");
    assert_no_lock_on_reads(&requests);
    assert_eq!(server.objects_in(server.locked_bucket(), "locked").len(), 2 * sealed_now + 3);
}
}

on_both_servers! {
fn bad_object_lock_settings_are_refused_before_anything_is_uploaded(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 1500, 100, SEGMENT_BYTES, 1);
    let dir = dir_arg(&log_dir);
    let url = format!("s3://{BUCKET}/badlock");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--object-lock-days", "0"],
            "must be 1 to 36500 days, not 0",
        ),
        (&["--object-lock-days", "36501"], "must be 1 to 36500 days"),
        (&["--object-lock-days", "thirty"], "--object-lock-days"),
        (
            &[
                "--object-lock-days",
                "30",
                "--object-lock-mode",
                "legal-hold",
            ],
            "unknown mode \"legal-hold\": use compliance or governance",
        ),
        (&["--object-lock-mode", "governance"], "--object-lock-days"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["--dir", &dir, "archive", "--to", &url];
        args.extend_from_slice(flags);
        let out = server.run(&args);
        expect_code(&out, 2);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    // With --every the settings are checked once, up front, not retried.
    let mut child = server
        .command(&[
            "--dir",
            &dir,
            "archive",
            "--to",
            &url,
            "--every",
            "1s",
            "--object-lock-days",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("archive --every kept running with a bad lock");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2));
    assert!(server.objects("badlock").is_empty());
}
}

on_both_servers! {
fn the_library_archives_and_lists_archived_segments(server: &dyn TestS3) {
    library_credentials();
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    make_log(&log_dir, 3000, 100, SEGMENT_BYTES, 1);
    let target = server.target("lib");
    assert!(archive::archived_bases(&target).unwrap().is_empty());
    let outcome = archive::archive_sealed(&log_dir, &target, &ArchiveOptions::default()).unwrap();
    let sealed = sealed_segments(&log_dir);
    assert_eq!(outcome.uploaded_segments.len(), sealed);
    assert_eq!(outcome.uploaded_objects, 2 * sealed + 1);
    let bases = archive::archived_bases(&target).unwrap();
    assert_eq!(
        bases.into_iter().collect::<Vec<_>>(),
        outcome.uploaded_segments
    );
    let confirmed =
        archive::confirm_archived(&target, &log_dir, &outcome.uploaded_segments).unwrap();
    assert_eq!(confirmed.len(), sealed);
    let report = archive::verify_archive(&target, &VerifyOptions::default(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // The segments' digests come from the verifier's own reads, and so do
    // the indexes' now that verify compares each index with its segment
    // (verify::derived reads them through the same storage): nothing, or
    // less than one copy of the segments, is downloaded on the side.
    let segment_bytes: u64 = sealed as u64 * SEGMENT_BYTES;
    assert!(
        report.archive.extra_bytes < segment_bytes,
        "extra {} bytes, segments {segment_bytes} bytes",
        report.archive.extra_bytes
    );
}
}

/// Archive and verify-from-bucket throughput, next to a plain upload and
/// download of the same bytes to the same server. Run with
/// `cargo test --release --test archive -- --ignored --nocapture throughput`.
#[test]
#[ignore = "a measurement; run it on purpose (see docs/PERFORMANCE.md)"]
fn throughput() {
    use object_store::{ObjectStoreExt as _, PutPayload};

    let Some(server) = S3Server::start() else {
        return;
    };
    library_credentials();
    let work = tempfile::tempdir().unwrap();
    let log_dir = work.path().join("log");
    let segment_bytes: u64 = 32 << 20;
    let started = Instant::now();
    make_log(&log_dir, 120_000, 2000, segment_bytes, 1);
    eprintln!("built the log in {:.1}s", started.elapsed().as_secs_f64());
    let segments: Vec<PathBuf> = {
        let mut s: Vec<PathBuf> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        s.sort();
        s.pop(); // the active segment is not archived
        s
    };
    let bytes: u64 = segments
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let mib = bytes as f64 / (1 << 20) as f64;
    let target = server.target("bench");

    let t = Instant::now();
    let outcome = archive::archive_sealed(&log_dir, &target, &ArchiveOptions::default()).unwrap();
    let archive_secs = t.elapsed().as_secs_f64();
    assert_eq!(outcome.uploaded_segments.len(), segments.len());

    let t = Instant::now();
    let options = VerifyOptions::default();
    let report = archive::verify_archive(&target, &options, &mut |_| {}).unwrap();
    let verify_secs = t.elapsed().as_secs_f64();
    assert!(report.is_intact());

    let t = Instant::now();
    let local = verify_dir(&FsStorage, &log_dir, &mut |_| {}).unwrap();
    let local_secs = t.elapsed().as_secs_f64();
    assert!(local.is_intact());

    // The plain baseline: the same segment files PUT and GET with object_store.
    let (store, runtime) = s3::client(&server.endpoint(), BUCKET);
    let t = Instant::now();
    for (i, path) in segments.iter().enumerate() {
        let data = std::fs::read(path).unwrap();
        let location = object_store::path::Path::from(format!("plain/{i}.seg"));
        runtime
            .block_on(store.put(&location, PutPayload::from(data)))
            .unwrap();
    }
    let put_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..segments.len() {
        let location = object_store::path::Path::from(format!("plain/{i}.seg"));
        let got =
            runtime.block_on(async { store.get(&location).await.unwrap().bytes().await.unwrap() });
        assert!(!got.is_empty());
    }
    let get_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} segments, {mib:.0} MiB, s3s-fs on 127.0.0.1:",
        segments.len()
    );
    eprintln!("  archive (read, SHA-256, create-only PUT with x-amz-checksum-sha256): {:.2}s, {:.0} MiB/s", archive_secs, mib / archive_secs);
    eprintln!("  plain PUT of the same files (object_store, no checksum header):        {:.2}s, {:.0} MiB/s", put_secs, mib / put_secs);
    eprintln!("  verify --from the bucket ({} threads, ranged GETs + manifest SHA-256): {:.2}s, {:.0} MiB/s", options.threads, verify_secs, mib / verify_secs);
    eprintln!("  plain GET of the same files:                                           {:.2}s, {:.0} MiB/s", get_secs, mib / get_secs);
    eprintln!("  local verify (1 thread):                                               {:.2}s, {:.0} MiB/s", local_secs, mib / local_secs);
}

on_both_servers! {
/// `chainlog serve --archive-to` archives every workspace's log when it
/// starts and again every `--archive-every`, each under its own prefix, and
/// the archives verify from the bucket alone.
#[cfg(feature = "server")]
fn the_server_archives_every_workspace_on_a_schedule(server: &dyn TestS3) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    // Two workspaces whose logs already have sealed segments (the server
    // opens logs with 64 MiB segments; these were made with small ones).
    for name in ["acme", "beta"] {
        make_log(
            &data.join("workspaces").join(name),
            2000,
            100,
            SEGMENT_BYTES,
            1,
        );
    }
    let url = format!("s3://{BUCKET}/srv");
    let serve = support::TestServer::start_with_env(
        &data,
        &["--archive-to", &url, "--archive-every", "1s"],
        &server.env(),
    );
    let wait_for = |what: &dyn Fn() -> bool, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !what() {
            assert!(
                Instant::now() < deadline,
                "{why}: {:?}\n{}",
                server.objects("srv"),
                serve.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let manifests = |name: &str| {
        server
            .objects(&format!("srv/workspaces/{name}"))
            .into_iter()
            .filter(|o| o.starts_with("manifest/"))
            .count()
    };
    wait_for(
        &|| manifests("acme") == 1 && manifests("beta") == 1,
        "the first run archived nothing",
    );
    // The schedule keeps running: the next run checks the archive again and
    // reports an object deleted from the bucket.
    let first = "00000000000000000000.seg";
    server.delete_object(&format!("srv/workspaces/beta/{first}"));
    wait_for(
        &|| {
            serve.stderr().contains(&format!(
                "archiving workspaces/beta to {url}/workspaces/beta failed"
            ))
        },
        "no later run reported the deleted object",
    );
    let (status, stderr) = serve.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(first), "{stderr}");
    for name in ["acme", "beta"] {
        assert!(
            stderr.contains(&format!(
                "segment(s) of workspaces/{name} to {url}/workspaces/{name}"
            )),
            "{stderr}"
        );
        // Later runs found nothing new to archive: still one manifest.
        assert_eq!(manifests(name), 1, "{:?}", server.objects("srv"));
    }
    let out = expect_code(
        &server.run(&["verify", "--from", &format!("{url}/workspaces/acme")]),
        0,
    );
    assert!(out.starts_with("intact: "), "{out}");
    assert!(
        !stderr.contains(&format!("workspaces/acme to {url}/workspaces/acme failed")),
        "{stderr}"
    );

    // Archive flags without --archive-to are refused.
    let out = server.run(&[
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--archive-every",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
}
