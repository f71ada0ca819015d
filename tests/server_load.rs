//! A bounded load test of `chainlog serve` on loopback.
//!
//! Phase 1: C concurrent keep-alive clients each POST single events, at
//! Durability::Always (every answer means the event is on disk).
//! Phase 2: fewer clients POST batches of events.
//! Phase 1b: phase 1 again with A idle attackers connected (sockets that
//! never send a byte), to compare the legitimate clients' p99 latency.
//! Baseline: the same batches appended directly to a `Log` by as many
//! threads, in the same run, on the same disk.
//!
//! Every loop is bounded in count and time and the test stops by itself.
//! The default `cargo test` runs a small quick version; for real numbers:
//!
//! ```text
//! cargo test --release --test server_load -- --ignored --nocapture
//! ```
//!
//! Targets (docs/PERFORMANCE.md): single posts ≥ 10,000 durable events/s
//! with p99 < 20 ms from 64 clients; batched posts ≥ half the engine's own
//! batched rate.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainlog::event::EventRef;
use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Durability, Event, Log, Options};
use support::{create_key, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection, as lean as a load client can be.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Sends a request and returns the status and body (the server always
    /// answers with a Content-Length).
    async fn send(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..header_end]).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("content-length");
        while self.buf.len() < header_end + length {
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection mid-answer");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        (status, self.buf[header_end..header_end + length].to_vec())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn event_json(client: usize, i: usize) -> String {
    format!(
        r#"{{"event":"pcap.download","actor":"client-{client}@acme.io","node":"nyc-edge-{:02}","resource":"a3f7c2b1","ip":"203.0.113.42","context":{{"bytes":18231,"sha256":"83f8b0b56c68b3fc8e9e828fc949537eeed70063e4b76477affd9554f38768cd","i":{i}}}}}"#,
        client % 16
    )
}

fn post(key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/workspaces/load/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Durable events acknowledged per client, and each request's latency.
struct PhaseResult {
    events: u64,
    requests: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        if l.is_empty() {
            return 0.0;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        f64::from(l[i]) / 1000.0
    }
}

/// `clients` connections each POST `batch` events per request until
/// `max_requests_per_client` or `duration` is reached.
async fn phase(
    addr: std::net::SocketAddr,
    key: &str,
    clients: usize,
    batch: usize,
    max_requests_per_client: usize,
    duration: Duration,
) -> PhaseResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await;
            let mut latencies = Vec::with_capacity(max_requests_per_client);
            let mut events = 0u64;
            // Built once, so the client (on the same cores) costs the
            // server as little CPU as possible; the events repeat, which an
            // audit log allows.
            let body = if batch == 1 {
                event_json(c, 0)
            } else {
                let items: Vec<String> = (0..batch).map(|j| event_json(c, j)).collect();
                format!("[{}]", items.join(","))
            };
            let request = post(&key, &body);
            for _ in 0..max_requests_per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let (status, answer) = conn.send(&request).await;
                latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
                // Count the receipts (`{"receipts":[{…},…]}`): each is a durable event.
                events += answer.iter().filter(|&&b| b == b'{').count() as u64 - 1;
            }
            (events, latencies)
        }));
    }
    let mut result = PhaseResult {
        events: 0,
        requests: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (events, latencies) = t.await.unwrap();
        result.events += events;
        result.requests += latencies.len() as u64;
        result.latencies_us.extend(latencies);
    }
    result.elapsed = start.elapsed();
    result
}

/// The engine alone: `threads` threads append the same batches to a fresh
/// log at Durability::Always. Returns the rate of the append calls, and
/// the sustained rate (until the log is closed).
fn engine_batched_rate(
    dir: &std::path::Path,
    threads: usize,
    batch: usize,
    batches_per_thread: usize,
) -> (f64, f64) {
    let log = Arc::new(
        Log::create(
            dir,
            Options {
                durability: Durability::Always,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let batches: Vec<Vec<Event>> = (0..threads)
        .map(|c| {
            let items: Vec<String> = (0..batch).map(|j| event_json(c, j)).collect();
            serde_json::from_str(&format!("[{}]", items.join(","))).unwrap()
        })
        .collect();
    let batches = Arc::new(batches);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (log, batches) = (log.clone(), batches.clone());
            std::thread::spawn(move || {
                for _ in 0..batches_per_thread {
                    log.append_batch(&batches[t]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let appended = start.elapsed();
    // Closing joins the work a sealed segment leaves to background threads
    // (its index and Merkle tiles), which the server pays for during its
    // run: the sustained rate counts it.
    Arc::try_unwrap(log).ok().unwrap().close().unwrap();
    let closed = start.elapsed();
    let events = (threads * batch * batches_per_thread) as f64;
    (
        events / appended.as_secs_f64(),
        events / closed.as_secs_f64(),
    )
}

/// Parsing the same batch bodies on one thread, the part of a batched POST
/// the engine alone does not do: into owned `Event`s (as the engine's
/// batches were made), and into borrowed `EventRef`s, as the server reads
/// them. Returns both rates.
fn json_parse_rates(batch: usize) -> (f64, f64) {
    let items: Vec<String> = (0..batch).map(|j| event_json(0, j)).collect();
    let body = format!("[{}]", items.join(","));
    let rounds = 50;
    let start = Instant::now();
    for _ in 0..rounds {
        let events: Vec<Event> = serde_json::from_str(&body).unwrap();
        assert_eq!(events.len(), batch);
    }
    let owned = (rounds * batch) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..rounds {
        let events: Vec<EventRef<'_>> = serde_json::from_str(&body).unwrap();
        assert_eq!(events.len(), batch);
    }
    let borrowed = (rounds * batch) as f64 / start.elapsed().as_secs_f64();
    (owned, borrowed)
}

/// One small write and fdatasync, the disk's floor for a durable append.
fn fdatasync_us(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("probe")).unwrap();
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&[7u8; 256]).unwrap();
        f.sync_data().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

struct Plan {
    single_clients: usize,
    single_requests: usize,
    batch_clients: usize,
    batch: usize,
    batch_requests: usize,
    duration: Duration,
    /// Idle connections held open during phase 1b (0: no phase 1b).
    attackers: usize,
}

async fn run(plan: Plan) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "load", "append");
    // Phase 1b's idle attackers must outlive their phase.
    let server = TestServer::start(&data, &["--idle-timeout", "120s"]);

    let single = phase(
        server.addr,
        &key,
        plan.single_clients,
        1,
        plan.single_requests,
        plan.duration,
    )
    .await;
    // Under attack: idle sockets stay open (the idle timeout is longer
    // than the phase) while the same single-event clients run.
    let attacked = if plan.attackers > 0 {
        let mut idle = Vec::with_capacity(plan.attackers);
        for _ in 0..plan.attackers {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        let attacked = phase(
            server.addr,
            &key,
            plan.single_clients,
            1,
            plan.single_requests,
            plan.duration,
        )
        .await;
        // Every idle socket is still open: none was refused or timed out.
        for stream in &idle {
            let mut byte = [0u8; 1];
            assert!(
                matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "an idle attacker's connection was closed during the phase"
            );
        }
        Some(attacked)
    } else {
        None
    };
    let batched = phase(
        server.addr,
        &key,
        plan.batch_clients,
        plan.batch,
        plan.batch_requests,
        plan.duration,
    )
    .await;
    let (status, stderr) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    let attacked_events = attacked.as_ref().map_or(0, |a| a.events);

    // Nothing acknowledged is missing, and the chain is intact.
    let dir = data.join("workspaces/load");
    let report = verify_dir(&FsStorage, &dir, &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        report.records,
        1 + single.events + batched.events + attacked_events,
        "apikey.created + every acknowledged event"
    );

    let baseline_batches = (batched.events as usize / plan.batch / plan.batch_clients).max(1);
    let (engine_calls, engine) = tokio::task::spawn_blocking({
        let dir = tmp.path().join("engine");
        let (threads, batch) = (plan.batch_clients, plan.batch);
        move || engine_batched_rate(&dir, threads, batch, baseline_batches)
    })
    .await
    .unwrap();
    let sync_us = fdatasync_us(tmp.path());
    let (parse_owned, parse_borrowed) = json_parse_rates(plan.batch);

    println!(
        "chainlog serve load test (loopback, Durability::Always, {} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  fdatasync of one small write: {sync_us:.0} µs");
    println!(
        "  single-event POSTs, {} clients: {} events in {:.2} s = {:.0} durable events/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        plan.single_clients,
        single.events,
        single.elapsed.as_secs_f64(),
        single.rate(),
        single.percentile_ms(0.50),
        single.percentile_ms(0.99),
        single.percentile_ms(1.0),
    );
    if let Some(attacked) = &attacked {
        println!(
            "  single-event POSTs, {} clients, with {} idle attackers connected: {:.0} durable events/s; latency p99 {:.2} ms (without attackers {:.2} ms), max {:.2} ms",
            plan.single_clients,
            plan.attackers,
            attacked.rate(),
            attacked.percentile_ms(0.99),
            single.percentile_ms(0.99),
            attacked.percentile_ms(1.0),
        );
    }
    println!(
        "  batched POSTs ({} events each), {} clients: {} events in {} requests, {:.2} s = {:.0} durable events/s; latency p50 {:.2} ms, p99 {:.2} ms",
        plan.batch,
        plan.batch_clients,
        batched.events,
        batched.requests,
        batched.elapsed.as_secs_f64(),
        batched.rate(),
        batched.percentile_ms(0.50),
        batched.percentile_ms(0.99),
    );
    println!(
        "  engine alone, same batches, {} threads: append calls {:.0} events/s, sustained (to close, with the index and tile work of sealed segments) {:.0} events/s; HTTP batched / engine: {:.2} of the append calls, {:.2} sustained",
        plan.batch_clients,
        engine_calls,
        engine,
        batched.rate() / engine_calls,
        batched.rate() / engine
    );
    println!(
        "  JSON parsing of the same bodies alone, 1 thread: into Events {parse_owned:.0} events/s, borrowed (EventRef, as the server reads them) {parse_borrowed:.0} events/s"
    );
}

/// The quick version `cargo test` runs: small, and checks correctness only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_load_loses_nothing() {
    run(Plan {
        single_clients: 16,
        single_requests: 40,
        batch_clients: 4,
        batch: 100,
        batch_requests: 5,
        duration: Duration::from_secs(60),
        attackers: 50,
    })
    .await;
}

/// The full version, for real numbers in release builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run with --release -- --ignored --nocapture"]
async fn full_load() {
    run(Plan {
        single_clients: 64,
        single_requests: 5_000,
        batch_clients: 8,
        batch: 1_000,
        batch_requests: 200,
        duration: Duration::from_secs(10),
        attackers: 500,
    })
    .await;
}
