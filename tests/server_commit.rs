//! The commit queue of `POST …/events`, end to end against `chainlog
//! serve`: concurrent requests combined into shared appends each get
//! exactly their own receipts, an invalid event refuses only its request,
//! large requests go alone, and SIGTERM loses nothing acknowledged.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Log, Options, Record};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::{create_key, post_body, small_segment_workspace, TestServer};

async fn post(client: &Client, url: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(body).unwrap();
    post_body(client, url, key, "application/json", body).await
}

/// The (seq, hash) of every receipt in an answer.
fn receipts(body: &Value) -> Vec<(u64, String)> {
    body["receipts"]
        .as_array()
        .unwrap_or_else(|| panic!("no receipts: {body}"))
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every record of a log, by seq.
fn records(dir: &Path) -> BTreeMap<u64, Record> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0)
        .map(|r| {
            let r = r.unwrap();
            (r.seq, r)
        })
        .collect()
}

/// A server over `data` and an append key of workspace `acme`; returns
/// them with the workspace's events URL.
fn serve_acme(data: &Path) -> (TestServer, String, String) {
    let key = create_key(data, "acme", "append");
    let server = TestServer::start(data, &[]);
    let url = format!("{}/v1/workspaces/acme/events", server.url);
    (server, key, url)
}

fn stop(server: TestServer) {
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

/// Receipts must name the request's own records: contiguous, in its order.
fn assert_own_receipts(
    stored: &BTreeMap<u64, Record>,
    actor: &str,
    events: usize,
    got: &[(u64, String)],
) {
    assert_eq!(got.len(), events, "{actor}");
    for (j, (seq, hash)) in got.iter().enumerate() {
        assert_eq!(*seq, got[0].0 + j as u64, "{actor}: not contiguous {got:?}");
        let record = &stored[seq];
        assert_eq!(record.event.actor, actor, "seq {seq}");
        assert_eq!(record.event.context["j"], json!(j), "seq {seq}");
        assert_eq!(record.hash.to_string(), *hash, "seq {seq}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_get_exactly_their_own_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, key, url) = serve_acme(&data);
    let client = Client::new();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..32 {
        let (client, url, key, answers) =
            (client.clone(), url.clone(), key.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let actor = format!("c{c}-r{i}");
                let count = 1 + (c + i) % 4;
                let body: Vec<Value> = (0..count)
                    .map(|j| json!({"event": "pcap.download", "actor": actor, "context": {"j": j}}))
                    .collect();
                let (status, body) = post(&client, &url, &key, &json!(body)).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                answers
                    .lock()
                    .unwrap()
                    .push((actor, count, receipts(&body)));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop(server);
    let dir = data.join("workspaces/acme");
    let stored = records(&dir);
    let answers = answers.lock().unwrap();
    let mut seqs: Vec<u64> = Vec::new();
    for (actor, count, got) in answers.iter() {
        assert_own_receipts(&stored, actor, *count, got);
        seqs.extend(got.iter().map(|r| r.0));
    }
    seqs.sort_unstable();
    seqs.dedup();
    // apikey.created, then one record per receipt and nothing else.
    assert_eq!(seqs, (1..stored.len() as u64).collect::<Vec<_>>());
    let report = verify_dir(&FsStorage, &dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, stored.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_refuses_only_its_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, key, url) = serve_acme(&data);
    let client = Client::new();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..24 {
        let (client, url, key, answers) =
            (client.clone(), url.clone(), key.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let actor = format!("c{c}-r{i}");
                let bad = c % 3 == 0;
                let body: Vec<Value> = (0..3)
                    .map(|j| {
                        let event = if bad && j == 2 {
                            "Not A Type"
                        } else {
                            "pcap.download"
                        };
                        json!({"event": event, "actor": actor, "context": {"j": j}})
                    })
                    .collect();
                let (status, body) = post(&client, &url, &key, &json!(body)).await;
                if bad {
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
                    assert_eq!(body["error"], "invalid_event", "{body}");
                    let detail = body["detail"].as_str().unwrap();
                    assert!(
                        detail.starts_with("event at index 2: ")
                            && detail.ends_with("; nothing was appended"),
                        "{detail}"
                    );
                } else {
                    assert_eq!(status, StatusCode::CREATED, "{body}");
                    answers.lock().unwrap().push((actor, receipts(&body)));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop(server);
    let stored = records(&data.join("workspaces/acme"));
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 16 * 10);
    for (actor, got) in answers.iter() {
        assert_own_receipts(&stored, actor, 3, got);
    }
    assert_eq!(
        stored.len(),
        1 + 16 * 10 * 3,
        "nothing of a refused request"
    );
}

/// With the smallest segments, a few ordinary requests together would
/// not fit one segment: they must be appended in several batches. A
/// request over the queue's byte bound goes alone; one over a segment
/// gets the error it gets without the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_go_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("workspaces/acme");
    small_segment_workspace(&data, "acme");
    let (server, key, url) = serve_acme(&data);
    let client = Client::new();
    // About `events` × 330 bytes in a segment.
    let batch = |actor: &str, events: usize| {
        json!((0..events)
            .map(|j| json!({"event": "pcap.download", "actor": actor, "context": {"j": j, "pad": "x".repeat(200)}}))
            .collect::<Vec<_>>())
    };
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..12 {
        let (client, url, key, answers) =
            (client.clone(), url.clone(), key.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                let actor = format!("c{c}-r{i}");
                // About 14 KiB (two fit the queue's bound of a quarter
                // segment), and one of 70 KiB: over that, under a segment.
                let events = if c == 0 && i == 3 { 220 } else { 45 };
                let (status, body) = post(&client, &url, &key, &batch(&actor, events)).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                answers
                    .lock()
                    .unwrap()
                    .push((actor, events, receipts(&body)));
            }
        }));
    }
    let (status, body) = post(&client, &url, &key, &batch("huge", 600)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "batch_too_large", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("batch of ")
            && detail.contains("bytes (one segment) exceeds the limit of"),
        "{detail}"
    );
    for t in tasks {
        t.await.unwrap();
    }
    stop(server);
    let stored = records(&dir);
    let answers = answers.lock().unwrap();
    for (actor, events, got) in answers.iter() {
        assert_own_receipts(&stored, actor, *events, got);
    }
    assert_eq!(stored.len(), 1 + 11 * 6 * 45 + 5 * 45 + 220);
    assert!(stored.values().all(|r| r.event.actor != "huge"));
    let report = verify_dir(&FsStorage, &dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}

/// SIGTERM while many single-event requests wait in the queue: every
/// acknowledged event is stored, and the server exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_acknowledged_single_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, key, url) = serve_acme(&data);
    let client = Client::new();
    let acked = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..48 {
        let (client, url, key, acked) = (client.clone(), url.clone(), key.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"event": "pcap.download", "actor": format!("w{w}-{i}")});
                let sent = client
                    .post(&url)
                    .header("Authorization", format!("Bearer {key}"))
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .send()
                    .await;
                // Refused or cut off once the server stops.
                let Ok(response) = sent else { break };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(text) = response.text().await else {
                    break;
                };
                let Ok(body) = serde_json::from_str::<Value>(&text) else {
                    break;
                };
                acked.lock().unwrap().extend(receipts(&body));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 500 {
        assert!(
            Instant::now() < deadline,
            "too few appends acknowledged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::spawn_blocking(move || stop(server))
        .await
        .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let dir = data.join("workspaces/acme");
    let stored = records(&dir);
    for (seq, hash) in acked.lock().unwrap().iter() {
        let record = stored
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged seq {seq} is missing"));
        assert_eq!(record.hash.to_string(), *hash);
    }
    // The server let go of the log: it opens for writing.
    Log::open(&dir, Options::default())
        .unwrap()
        .close()
        .unwrap();
    let report = verify_dir(&FsStorage, &dir, &mut |_| {}).unwrap();
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:?}"
    );
}
