//! The live tail over real HTTP: `GET …/events/stream` as Server-Sent
//! Events against a running `chainlog serve`.

#[path = "support/server.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{create_key, data_with_admin, key_id, raw_get, raw_request, TestServer};

/// One SSE message: its `event:` (None for records), `id:` and `data:`.
#[derive(Debug, Clone)]
struct Message {
    event: Option<String>,
    id: Option<u64>,
    data: Value,
}

/// An open stream: the status, then messages as they arrive.
struct Stream {
    status: u16,
    messages: mpsc::Receiver<(Message, Instant)>,
    socket: TcpStream,
}

/// Opens `path` as a stream with `key` and extra header lines.
fn open_stream(addr: SocketAddr, path: &str, key: &str, extra: &str) -> Stream {
    let mut socket = TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The body is chunked; each message is one chunk, so chunk-size
        // lines are told apart from SSE fields by their lack of a colon.
        let mut current: (Option<String>, Option<u64>, Option<Value>) = (None, None, None);
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let line = line.trim_end_matches('\r');
            if let Some(v) = line.strip_prefix("event: ") {
                current.0 = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("id: ") {
                current.1 = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                current.2 = Some(serde_json::from_str(v).unwrap());
            } else if line.is_empty() {
                if let Some(data) = current.2.take() {
                    let message = Message {
                        event: current.0.take(),
                        id: current.1.take(),
                        data,
                    };
                    if tx.send((message, Instant::now())).is_err() {
                        return;
                    }
                }
                current = (None, None, None);
            }
        }
    });
    Stream {
        status,
        messages: rx,
        socket,
    }
}

/// Leaving closes the connection for both ends, the reader thread's
/// clone of the socket included (dropping one descriptor of two would
/// leave the connection open, and the server waiting for the client).
impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Stream {
    fn next(&self, within: Duration) -> Option<(Message, Instant)> {
        self.messages.recv_timeout(within).ok()
    }
}

/// Appends `events` with `key`; returns the seqs and when the 201 came.
fn append(addr: SocketAddr, key: &str, events: &[Value]) -> (Vec<u64>, Instant) {
    let body = serde_json::to_vec(&Value::Array(events.to_vec())).unwrap();
    let mut request = format!(
        "POST /v1/workspaces/acme/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (status, text) = raw_request(addr, &request);
    let at = Instant::now();
    assert_eq!(status, 201, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let seqs = answer["receipts"]
        .as_array()
        .map(|r| r.iter().map(|x| x["seq"].as_u64().unwrap()).collect())
        .unwrap_or_else(|| vec![answer["seq"].as_u64().unwrap()]);
    (seqs, at)
}

fn event(kind: &str, actor: &str, i: u64) -> Value {
    json!({"event": kind, "actor": actor, "context": {"i": i}})
}

fn page(addr: SocketAddr, key: &str, query: &str) -> Value {
    let (status, body) = raw_get(
        addr,
        &format!("/v1/workspaces/acme/events?{query}"),
        Some(key),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn records_arrive_in_order_soon_after_the_append() {
    let (_dir, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    // Records before the stream opens are not sent (the stream starts at
    // the log's end).
    append(server.addr, &admin, &[event("node.added", "ops", 0)]);
    let reader = create_key(&data, "acme", "read");
    // Filtered: reads (the page below) are audited into the same log.
    let stream = open_stream(
        server.addr,
        "/v1/workspaces/acme/events/stream?event=node.added",
        &reader,
        "",
    );
    assert_eq!(stream.status, 200);
    let rounds: u64 = std::env::var("TAIL_LATENCY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut latencies = Vec::new();
    for i in 0..rounds {
        let (seqs, acked) = append(server.addr, &admin, &[event("node.added", "ops", i + 1)]);
        let (message, arrived) = stream
            .next(Duration::from_secs(10))
            .expect("the record reaches the stream");
        assert_eq!(message.event, None);
        assert_eq!(message.id, Some(seqs[0]));
        assert_eq!(message.data["seq"].as_u64(), Some(seqs[0]));
        assert_eq!(message.data["context"]["i"], i + 1);
        latencies.push(arrived.saturating_duration_since(acked));
    }
    // The rows are those of GET …/events, provenance included.
    let last = page(server.addr, &admin, "reverse=true&limit=1&event=node.added");
    let row = &last["events"][0];
    let (message, _) = {
        let (seqs, _) = append(server.addr, &admin, &[event("node.added", "ops", 999)]);
        let m = stream.next(Duration::from_secs(10)).unwrap();
        assert_eq!(m.0.id, Some(seqs[0]), "{:?}", m.0);
        m
    };
    assert_eq!(
        message.data.as_object().unwrap().keys().collect::<Vec<_>>(),
        row.as_object().unwrap().keys().collect::<Vec<_>>()
    );
    assert_eq!(message.data["appender"], key_id(&admin));
    latencies.sort();
    let (median, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "tail latency from 201 to SSE event over {} events: median {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        median,
        p99,
        max
    );
    // Generous: the bound is 100 ms, but CI shares two cores.
    assert!(max < Duration::from_secs(2), "{latencies:?}");
    drop(stream);
    server.stop();
}

#[test]
fn resume_with_last_event_id_has_no_gaps_or_duplicates_and_filters_apply() {
    let (_dir, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    let mut first_seq = None;
    for i in 0..10 {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        let (seqs, _) = append(server.addr, &admin, &[event("pcap.download", actor, i)]);
        first_seq.get_or_insert(seqs[0]);
    }
    let first_seq = first_seq.unwrap();
    let path = format!("/v1/workspaces/acme/events/stream?actor=alice&cursor={first_seq}");
    let stream = open_stream(server.addr, &path, &admin, "");
    assert_eq!(stream.status, 200);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (m, _) = stream.next(Duration::from_secs(10)).unwrap();
        assert_eq!(m.data["actor"], "alice");
        seen.push(m.id.unwrap());
    }
    drop(stream);
    // More while disconnected, then resume after the last one seen: the
    // header wins over the cursor, as a browser's EventSource sends both.
    for i in 10..14 {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        append(server.addr, &admin, &[event("pcap.download", actor, i)]);
    }
    let last = *seen.last().unwrap();
    let stream = open_stream(
        server.addr,
        &path,
        &admin,
        &format!("Last-Event-ID: {last}\r\n"),
    );
    assert_eq!(stream.status, 200);
    while seen.len() < 7 {
        let (m, _) = stream.next(Duration::from_secs(10)).unwrap();
        assert_eq!(m.data["actor"], "alice");
        seen.push(m.id.unwrap());
    }
    let expected: Vec<u64> = page(server.addr, &admin, "actor=alice&event=pcap.download")["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, expected);
    assert!(stream.next(Duration::from_millis(300)).is_none());
    // A workspace has at most 8 streams open (this one and 7 more).
    let more: Vec<Stream> = (0..7)
        .map(|_| open_stream(server.addr, &path, &admin, ""))
        .collect();
    assert!(more.iter().all(|s| s.status == 200));
    let refused = open_stream(server.addr, &path, &admin, "");
    assert_eq!(refused.status, 503);
    drop(more);
    drop(refused);
    // A client that leaves frees its slot: the server notices the closed
    // connection (the wait below only gives it time to).
    let left = Instant::now();
    let deadline = left + Duration::from_secs(20);
    let again = loop {
        let s = open_stream(server.addr, &path, &admin, "");
        if s.status == 200 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "a slot was free again {:?} after 8 clients left",
        left.elapsed()
    );
    assert_eq!(again.status, 200);
    drop(again);
    // Bad parameters are refused before the stream starts.
    for (path, extra) in [
        ("/v1/workspaces/acme/events/stream?limit=5", ""),
        ("/v1/workspaces/acme/events/stream?reverse=true", ""),
        ("/v1/workspaces/acme/events/stream", "Last-Event-ID: x\r\n"),
    ] {
        let s = open_stream(server.addr, path, &admin, extra);
        assert_eq!(s.status, 400, "{path} {extra}");
    }
    drop(stream);
    server.stop();
}

#[test]
fn wrong_key_and_other_workspace_are_refused_and_audited() {
    let (_dir, data, admin) = data_with_admin("acme");
    let other = create_key(&data, "globex", "read");
    let server = TestServer::start(&data, &[]);
    append(server.addr, &admin, &[event("node.added", "ops", 0)]);
    let s = open_stream(
        server.addr,
        "/v1/workspaces/acme/events/stream",
        "clk_0000000000000000_nope",
        "",
    );
    assert_eq!(s.status, 401);
    let s = open_stream(server.addr, "/v1/workspaces/acme/events/stream", &other, "");
    assert_eq!(s.status, 403);
    // The refusals are recorded in acme's log (auth.* failure events).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let failures = page(server.addr, &admin, "outcome=failure");
        let events = failures["events"].as_array().unwrap();
        let cross = events.iter().any(|e| {
            e["context"]["key_id"] == key_id(&other)
                || e["actor"]
                    .as_str()
                    .is_some_and(|a| a.contains(key_id(&other)))
        });
        if cross {
            break;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {failures}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
}

#[test]
fn a_consumer_that_stops_reading_is_cut_off_with_an_error_event() {
    let (_dir, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    // A raw socket with a small receive buffer, never read until the end.
    let mut socket = TcpStream::connect(server.addr).unwrap();
    write!(
        socket,
        "GET /v1/workspaces/acme/events/stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\n\r\n"
    )
    .unwrap();
    // Each record's row is ~16 KiB; kernel buffers hold a few MiB, the
    // stream's buffer 256 rows: 1600 rows (~26 MB) overflow both on a
    // usual machine. Where the kernel buffers more, more is appended, up
    // to 12,800 rows (~210 MB).
    let pad = "x".repeat(16 * 1024);
    let mut appended = 0u64;
    let mut last_seq = 0;
    let tail_audit = || {
        page(server.addr, &admin, "event=access.tail")["events"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    };
    let mut audit = None;
    while audit.is_none() && appended < 12_800 {
        let batch: Vec<Value> = (0..50)
            .map(|i| json!({"event": "pcap.download", "actor": "bulk", "context": {"pad": pad, "i": appended + i}}))
            .collect();
        let (seqs, _) = append(server.addr, &admin, &batch);
        last_seq = *seqs.last().unwrap();
        appended += 50;
        if appended >= 1600 && appended % 800 == 0 {
            audit = tail_audit();
        }
    }
    // The stream ends: its access.tail says why, within the stall timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    let audit = loop {
        if let Some(e) = audit.take().or_else(tail_audit) {
            break e;
        }
        assert!(Instant::now() < deadline, "the slow stream was not ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    let total = appended;
    assert_eq!(audit["context"]["ended"], "slow_consumer", "{audit}");
    let rows = audit["context"]["rows"].as_u64().unwrap();
    assert!(rows < total, "{audit}");
    // Now read: what was buffered, then the error event, then the end.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut body = Vec::new();
    socket.read_to_end(&mut body).unwrap();
    let text = String::from_utf8_lossy(&body);
    let error_at = text.rfind("event: error\ndata: ").expect("an error event");
    let data_line = text[error_at..].lines().nth(1).unwrap();
    let error: Value = serde_json::from_str(data_line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"], "slow_consumer");
    let resume = error["resume_from"].as_u64().unwrap();
    assert!(resume <= last_seq, "{error}");
    // The seq to resume from follows the last record sent.
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, rows);
    assert_eq!(ids.last().map_or(resume, |l| l + 1), resume);
    // The server is still well.
    let (status, _) = raw_get(server.addr, "/healthz", None);
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn streams_end_at_shutdown_and_are_audited() {
    let (_dir, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    append(server.addr, &admin, &[event("node.added", "ops", 0)]);
    let stream = open_stream(
        server.addr,
        "/v1/workspaces/acme/events/stream?cursor=0",
        &admin,
        "",
    );
    let (first, _) = stream.next(Duration::from_secs(10)).unwrap();
    assert_eq!(first.id, Some(0));
    let started = Instant::now();
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut last = None;
    while let Some((m, _)) = stream.next(Duration::from_secs(5)) {
        last = Some(m);
    }
    let last = last.expect("a final event");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.data["error"], "server_stopping");
    drop(stream);
    let log = chainlog::Log::open(
        data.join("workspaces").join("acme"),
        chainlog::Options::for_reading(),
    )
    .unwrap();
    let tails: Vec<_> = log
        .iter_from(0)
        .map(|r| r.unwrap())
        .filter(|r| r.event.event_type == "access.tail")
        .collect();
    assert_eq!(tails.len(), 1);
    assert_eq!(tails[0].event.context["ended"], "server_stopping");
    assert!(tails[0].event.context["rows"].as_u64().unwrap() >= 1);
}
