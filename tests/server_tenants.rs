//! Tenants kept apart by `chainlog serve` (issue 15, findings 8 and 9): one
//! workspace's slow export readers and queued verifications neither refuse
//! nor hold up another workspace's; requests without a valid key open no
//! workspace, and are answered alike whether the workspace exists or not.
//! The tests wait for states they can see (an answer, a gauge of
//! `GET /metrics`), with generous upper bounds, never for a fixed time.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chainlog::{Event, Log, Options, Timestamp};
use support::{create_key, metric_value, raw_get, small_segment_workspace, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A workspace log of `events` events of about 1 KiB each, written with
/// the library before the server starts: its export (about 1.1 KiB an
/// event as JSON) is far larger than what sockets buffer, and verifying it
/// takes a while.
fn big_workspace(data: &Path, name: &str, events: usize) {
    let log = Log::create(data.join("workspaces").join(name), Options::default()).unwrap();
    let pad = "x".repeat(900);
    let mut left = events;
    while left > 0 {
        let n = left.min(1000);
        let batch: Vec<Event> = (0..n)
            .map(|i| {
                let mut e = Event::new(Timestamp::now(), "pcap.download", format!("u{i}@acme.io"));
                e.context.insert("pad".into(), pad.clone().into());
                e
            })
            .collect();
        log.append_batch(&batch).unwrap();
        left -= n;
    }
    log.close().unwrap();
}

/// Waits (up to a minute) until `ready` holds for the server's metrics.
fn wait_for_metrics(server: &TestServer, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = server.scrape();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a GET on a new connection and reads only the answer's head: the
/// status and the head's text. The connection stays open, unread.
async fn head_only(addr: std::net::SocketAddr, path: &str, key: &str) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("no answer within 30 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before the head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&got[..end]).to_lowercase();
        }
    };
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, stream)
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> (u16, Vec<u8>) {
    let response = client.get(url).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workspaces_slow_exports_leave_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    big_workspace(&data, "big", 30_000);
    let big = create_key(&data, "big", "read");
    let small = create_key(&data, "small", "read");
    let server = TestServer::start(&data, &["--metrics-listen", "127.0.0.1:0"]);

    // Eight readers of big's export that read the head and stop: with the
    // defaults, 2 stream (and stall), 6 are refused with Retry-After.
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let (status, head, stream) =
            head_only(server.addr, "/v1/workspaces/big/export?format=jsonl", &big).await;
        match status {
            200 => stalled.push(stream),
            503 => {
                refused += 1;
                assert!(head.contains("\r\nretry-after: 1"), "{head}");
            }
            other => panic!("{other}: {head}"),
        }
    }
    assert_eq!((stalled.len(), refused), (2, 6));

    // small's exports are served in full meanwhile, two at once.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/workspaces/small/export?format=jsonl", server.url);
    let (a, b) = tokio::join!(get(&client, &url, &small), get(&client, &url, &small));
    for (status, body) in [a, b] {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let text = String::from_utf8(body).unwrap();
        // small holds apikey.created, and the other export's `access.export`
        // record when that export ended first (reads are audited).
        let events: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events[0], "\"apikey.created\"", "{text}");
        assert!(
            events[1..].iter().all(|e| e == "\"access.export\"") && events.len() <= 2,
            "{text}"
        );
    }
    let metrics = server.scrape();
    let running = |w| {
        metric_value(
            &metrics,
            "chainlog_slots_running",
            &[("kind", "export"), ("workspace", w)],
        )
    };
    assert_eq!(running("big"), Some(2.0), "{metrics}");
    assert_eq!(
        running("small"),
        None,
        "small's exports are done: {metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "chainlog_slots_refused_total",
            &[("kind", "export")]
        ),
        Some(6.0)
    );

    // The slow readers go away: their slots free, and big exports again.
    drop(stalled);
    let server = tokio::task::spawn_blocking(move || {
        wait_for_metrics(&server, "big's export slots freed", |m| {
            metric_value(
                m,
                "chainlog_slots_running",
                &[("kind", "export"), ("workspace", "big")],
            )
            .is_none()
        });
        server
    })
    .await
    .unwrap();
    let (status, _, _stream) =
        head_only(server.addr, "/v1/workspaces/big/export?format=jsonl", &big).await;
    assert_eq!(status, 200);
    drop(_stream);
    let (status, stderr) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workspaces_verifies_do_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    big_workspace(&data, "big", 30_000);
    let big = create_key(&data, "big", "read");
    // Small segments: a verification reads a segment's preallocated tail
    // too, 64 MiB by default, which takes seconds in a debug build.
    small_segment_workspace(&data, "small");
    let small = create_key(&data, "small", "read");
    // A checkpoint key: signing verifies the log first, so it takes a verify slot.
    let secret = dir.path().join("cp.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlog"))
        .args(["keygen", "--name", "audit.example", "--secret-key"])
        .arg(&secret)
        .arg("--public-key")
        .arg(dir.path().join("cp.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let server = std::sync::Arc::new(TestServer::start(
        &data,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--checkpoint-key",
            secret.to_str().unwrap(),
        ],
    ));
    let client = reqwest::Client::new();
    let started = Instant::now();

    // Three verifications of big: one runs, two wait in big's queue.
    let mut bigs = Vec::new();
    for _ in 0..3 {
        let (client, url, key) = (
            client.clone(),
            format!("{}/v1/workspaces/big/verify", server.url),
            big.clone(),
        );
        bigs.push(tokio::spawn(async move {
            let (status, body) = get(&client, &url, &key).await;
            (status, body, started.elapsed())
        }));
    }
    let s = server.clone();
    tokio::task::spawn_blocking(move || {
        wait_for_metrics(&s, "big's verify queue full", |m| {
            let usage = |name| metric_value(m, name, &[("kind", "verify"), ("workspace", "big")]);
            usage("chainlog_slots_running") == Some(1.0)
                && usage("chainlog_slots_queued") == Some(2.0)
        })
    })
    .await
    .unwrap();

    // A signed checkpoint of big is refused at once: it would verify the
    // whole log too, so it takes a verify slot.
    assert_verify_queue_full(
        &client,
        &format!("{}/v1/workspaces/big/checkpoint", server.url),
        &big,
    )
    .await;

    // So is a fourth verification of big's, with Retry-After.
    assert_verify_queue_full(
        &client,
        &format!("{}/v1/workspaces/big/verify", server.url),
        &big,
    )
    .await;
    // small's verification does not wait for big's queue to drain.
    let asked = started.elapsed();
    let (status, body) = get(
        &client,
        &format!("{}/v1/workspaces/small/verify", server.url),
        &small,
    )
    .await;
    let small_done = started.elapsed();
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["intact"], true, "{body}");
    let mut big_done = Vec::new();
    for t in bigs {
        let (status, body, done) = t.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        big_done.push(done);
    }
    big_done.sort();
    eprintln!(
        "small's verify took {:?}; big's three ended at {:?} after the start",
        small_done - asked,
        big_done
    );
    assert!(
        small_done < big_done[2],
        "small's verify ({small_done:?}) waited for big's queue ({big_done:?})"
    );
    let server = std::sync::Arc::into_inner(server).unwrap();
    let (status, stderr) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
}

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .unwrap()
        .count()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn requests_without_a_valid_key_open_no_workspace_and_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let workspaces = 40;
    for i in 0..workspaces {
        small_segment_workspace(&data, &format!("w{i}"));
    }
    // A valid key, of another workspace than those asked for.
    let other = create_key(&data, "other", "admin");
    let server = TestServer::start(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let pid = server.pid();
    let unknown = format!("clk_0000000000000000_{}", "A".repeat(43));
    let variants: [Option<&str>; 3] = [None, Some(&unknown), Some(&other)];
    let routes = [
        "events",
        "events/1",
        "export",
        "verify",
        "checkpoint",
        "keys",
    ];

    // Use up this address's refusals recorded one by one (each an append
    // and fdatasync to the server's log): the rest are counted, alike.
    for _ in 0..12 {
        let (status, _) = raw_get(server.addr, "/v1/workspaces/nobody/events", None);
        assert_eq!(status, 401);
    }
    let fds_before = proc_count(pid, "fd");
    let threads_before = proc_count(pid, "task");

    let (mut first_exists, mut first_absent) = (Vec::new(), Vec::new());
    let (mut all_exists, mut all_absent) = (Vec::new(), Vec::new());
    for i in 0..workspaces {
        let mut first = true;
        for route in routes {
            for key in variants {
                // Alternate which goes first, so that drift hits both.
                let mut pair = [(format!("w{i}"), true), (format!("absent{i}"), false)];
                if i % 2 == 1 {
                    pair.reverse();
                }
                let mut answers = Vec::new();
                for (w, exists) in pair {
                    let start = Instant::now();
                    let answer = raw_get(server.addr, &format!("/v1/workspaces/{w}/{route}"), key);
                    let took = start.elapsed();
                    match (exists, first) {
                        (true, true) => first_exists.push(took),
                        (false, true) => first_absent.push(took),
                        _ => {}
                    }
                    if exists {
                        all_exists.push(took);
                    } else {
                        all_absent.push(took);
                    }
                    answers.push(answer);
                }
                first = false;
                assert!(matches!(answers[0].0, 401 | 403), "{answers:?}");
                assert_eq!(answers[0], answers[1], "{route} with {key:?}");
            }
        }
    }

    let fds_after = proc_count(pid, "fd");
    let threads_after = proc_count(pid, "task");
    let metrics = server.scrape();
    assert_eq!(
        metric_value(&metrics, "chainlog_workspaces_open", &[]),
        Some(0.0),
        "{metrics}"
    );
    // Opening a workspace takes a commit thread and its files (lock,
    // segment, indexes): 40 of them would show. The blocking pool may
    // have grown by a thread or two, and a socket may still be closing.
    assert!(
        fds_after <= fds_before + 2,
        "fds {fds_before} -> {fds_after}"
    );
    assert!(
        threads_after <= threads_before + 4,
        "threads {threads_before} -> {threads_after}"
    );

    let figures = [
        ("first request, existing", median(first_exists.clone())),
        ("first request, absent", median(first_absent.clone())),
        ("every request, existing", median(all_exists)),
        ("every request, absent", median(all_absent)),
    ];
    eprintln!("median answer times of refused requests: {figures:?}");
    // The two take the same code path now; before, the first request to
    // an existing workspace opened its log. The bound is loose: medians
    // of interleaved samples, on a machine other builds load.
    let (e, a) = (figures[0].1, figures[1].1);
    let gap = e.abs_diff(a);
    assert!(
        gap < Duration::from_millis(1) + e.min(a) / 2,
        "first-request medians differ: existing {e:?}, absent {a:?}"
    );
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

/// `url` is refused at once because the workspace's verify queue is full:
/// 503 with Retry-After and `too_many_verifies`.
async fn assert_verify_queue_full(client: &reqwest::Client, url: &str, key: &str) {
    let response = client.get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "too_many_verifies", "{body}");
}
