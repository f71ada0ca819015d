//! SIEM deliveries against a running `chainlog serve` and real HTTP
//! receivers in the test: a webhook receiver that checks every signature
//! with its own HMAC-SHA256 and records seqs, and a Splunk HEC receiver
//! that checks the request's shape and token. Covers order and
//! completeness, a kill -9 in the middle of delivery, a destination down
//! for a while (`delivery.failing`, lag, `delivery.recovered`), the CLI and
//! the API's admin scope.

#[path = "support/server.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::{
    chainlog, create_key, data_with_admin, json_request, metric_value, test_certificate,
    TestCertificate, TestServer,
};

/// Generous: CI machines are loaded.
const WAIT: Duration = Duration::from_secs(60);

/// What a receiver checks.
#[derive(Clone)]
enum Check {
    /// Webhook: the signature with this secret.
    Webhook { secret: String },
    /// HEC: the path and this token.
    Hec { token: String },
}

/// A test receiver: answers every request with `status` (200 unless
/// changed), records each delivered record's seq in arrival order, and
/// counts requests that fail its checks.
struct Receiver {
    addr: SocketAddr,
    h: Handles,
}

impl Receiver {
    fn start(check: Check, workspace: &str) -> Receiver {
        Receiver::start_with(check, workspace, None)
    }

    /// A receiver over HTTPS with this certificate.
    fn start_tls(check: Check, workspace: &str, cert: &TestCertificate) -> Receiver {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{self, ServerConfig};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Receiver::start_with(check, workspace, Some(Arc::new(config)))
    }

    fn start_with(
        check: Check,
        workspace: &str,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            h: Handles {
                seqs: Arc::default(),
                rejected: Arc::default(),
                status: Arc::new(AtomicU16::new(200)),
                hold_after: Arc::new(AtomicUsize::new(usize::MAX)),
                released: Arc::new((Mutex::new(false), Condvar::new())),
                items: Arc::default(),
            },
        };
        let shared = r.h.clone();
        let workspace = workspace.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (shared, check, workspace) = (shared.clone(), check.clone(), workspace.clone());
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve_connection(stream, &shared, &check, &workspace),
                    Some(config) => {
                        let Ok(server) = tokio_rustls::rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let stream = tokio_rustls::rustls::StreamOwned::new(server, stream);
                        serve_connection(stream, &shared, &check, &workspace);
                    }
                });
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seqs(&self) -> Vec<u64> {
        self.h.seqs.lock().unwrap().clone()
    }

    fn release(&self) {
        self.h.hold_after.store(usize::MAX, Ordering::SeqCst);
        let (lock, cv) = &*self.h.released;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Waits until every seq below `end` arrived; returns the arrivals.
    fn wait_for_all(&self, end: u64) -> Vec<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seqs = self.seqs();
            let mut seen = vec![false; end as usize];
            for &s in &seqs {
                if s < end {
                    seen[s as usize] = true;
                }
            }
            if seen.iter().all(|&b| b) {
                return seqs;
            }
            assert!(
                Instant::now() < deadline,
                "not every seq below {end} arrived: {} of them, rejected {:?}",
                seen.iter().filter(|&&b| b).count(),
                self.h.rejected.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a receiver's connections share.
#[derive(Clone)]
struct Handles {
    seqs: Arc<Mutex<Vec<u64>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    status: Arc<AtomicU16>,
    hold_after: Arc<AtomicUsize>,
    released: Arc<(Mutex<bool>, Condvar)>,
    items: Arc<Mutex<Vec<Value>>>,
}

/// The receiver's own HMAC-SHA256, hex.
fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks one delivered record: seq, a 64-hex hash, the workspace.
fn record_seq(record: &Value, workspace: &str) -> Result<u64, String> {
    let hash = record["hash"].as_str().unwrap_or_default();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad hash in {record}"));
    }
    if record["workspace"] != workspace {
        return Err(format!("bad workspace in {record}"));
    }
    record["seq"]
        .as_u64()
        .ok_or_else(|| format!("no seq in {record}"))
}

/// Checks a request; the seqs it carries.
fn check_request(
    check: &Check,
    workspace: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    items: &Mutex<Vec<Value>>,
) -> Result<Vec<u64>, String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    match check {
        Check::Webhook { secret } => {
            let ts = header("chainlog-timestamp").ok_or("no timestamp")?;
            let signature = header("chainlog-signature").ok_or("no signature")?;
            let mut signed = ts.as_bytes().to_vec();
            signed.push(b'.');
            signed.extend_from_slice(body);
            if signature != format!("v1={}", hmac_hex(secret, &signed)) {
                return Err(format!("bad signature {signature}"));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let ts: i64 = ts.parse().map_err(|_| "bad timestamp")?;
            if (now - ts).abs() > 300 {
                return Err(format!("timestamp {ts} outside the 5-minute window"));
            }
            let batch: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if batch["workspace"] != workspace {
                return Err(format!("bad batch workspace {}", batch["workspace"]));
            }
            batch["events"]
                .as_array()
                .ok_or("no events")?
                .iter()
                .map(|r| record_seq(r, workspace))
                .collect()
        }
        Check::Hec { token } => {
            if path != "/services/collector/event" {
                return Err(format!("bad path {path}"));
            }
            if header("authorization") != Some(&format!("Splunk {token}")) {
                return Err("bad token".into());
            }
            let mut seqs = Vec::new();
            for item in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
                let item = item.map_err(|e| e.to_string())?;
                if !item["time"].is_number()
                    || !item["host"].is_string()
                    || item["source"] != format!("chainlog:{workspace}")
                    || item["sourcetype"] != "chainlog"
                {
                    return Err(format!("bad HEC item {item}"));
                }
                seqs.push(record_seq(&item["event"], workspace)?);
                items.lock().unwrap().push(item);
            }
            Ok(seqs)
        }
    }
}

fn serve_connection(stream: impl Read + Write, h: &Handles, check: &Check, workspace: &str) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            if reader.read_line(&mut l).unwrap_or(0) == 0 {
                return;
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = h.status.load(Ordering::SeqCst);
        if status == 200 {
            match check_request(check, workspace, &path, &headers, &body, &h.items) {
                Ok(seqs) => h.seqs.lock().unwrap().extend(seqs),
                Err(why) => h.rejected.lock().unwrap().push(why),
            }
        }
        if h.seqs.lock().unwrap().len() >= h.hold_after.load(Ordering::SeqCst) {
            let (lock, cv) = &*h.released;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
        }
        let answer = match check {
            Check::Hec { .. } if status == 200 => r#"{"text":"Success","code":0}"#,
            Check::Hec { .. } => r#"{"text":"Server is busy","code":9}"#,
            Check::Webhook { .. } => "{}",
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let out = reader.get_mut();
        if out
            .write_all(response.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// `chainlog delivery ARGS --workspace acme --data DATA`, which must
/// succeed; its stdout.
fn delivery_cli(data: &std::path::Path, args: &[&str]) -> String {
    let out = chainlog()
        .arg("delivery")
        .args(args)
        .args(["--workspace", "acme", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delivery {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Appends `n` events (`kind`, numbered) through the API.
fn append(addr: SocketAddr, key: &str, kind: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"event": kind, "actor": "alice@acme.io", "context": {"i": i}}))
            .collect();
        let (status, body) = json_request(
            addr,
            "POST",
            "/v1/workspaces/acme/events",
            Some(key),
            Some(&Value::Array(events)),
        );
        assert_eq!(status, 201, "{body}");
    }
}

/// The log's next seq, read through the API.
fn log_end(addr: SocketAddr, key: &str) -> u64 {
    let (status, page) = json_request(
        addr,
        "GET",
        "/v1/workspaces/acme/events?reverse=true&limit=1",
        Some(key),
        None,
    );
    assert_eq!(status, 200, "{page}");
    page["events"][0]["seq"].as_u64().map_or(0, |s| s + 1)
}

/// The events of one type in the log.
fn events_of(addr: SocketAddr, key: &str, event: &str) -> Vec<Value> {
    let (status, page) = json_request(
        addr,
        "GET",
        &format!("/v1/workspaces/acme/events?event={event}&limit=1000"),
        Some(key),
        None,
    );
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until `f` returns something.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Arrivals in order with none skipped: each seq is at most one past the
/// highest before it (a batch sent again after a crash goes back, never
/// forward past a gap).
fn assert_in_order_none_skipped(seqs: &[u64], first: u64) {
    let mut high: Option<u64> = None;
    for (i, &s) in seqs.iter().enumerate() {
        let limit = high.map_or(first, |h| h + 1);
        assert!(s <= limit, "seq {s} at arrival {i} skips past {limit}");
        high = Some(high.map_or(s, |h| h.max(s)));
    }
}

fn put_webhook(server: &TestServer, admin: &str, name: &str, url: &str, extra: Value) -> Value {
    let mut body = json!({
        "kind": "webhook",
        "url": url,
        "secret": "test-secret-0123456789",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = json_request(
        server.addr,
        "PUT",
        &format!("/v1/workspaces/acme/deliveries/{name}"),
        Some(admin),
        Some(&body),
    );
    assert_eq!(status, 201, "{answer}");
    answer
}

fn webhook_receiver() -> Receiver {
    Receiver::start(
        Check::Webhook {
            secret: "test-secret-0123456789".into(),
        },
        "acme",
    )
}

#[test]
fn webhook_gets_every_record_in_order_signed() {
    let (_dir, data, admin) = data_with_admin("acme");
    let append_key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let receiver = webhook_receiver();
    append(server.addr, &append_key, "pcap.download", 250);
    let answer = put_webhook(
        &server,
        &admin,
        "siem",
        &receiver.url(),
        json!({"batch_events": 40}),
    );
    assert_eq!(answer["secret_set"], true);
    assert!(
        answer.get("secret").is_none(),
        "a given secret is not echoed"
    );
    append(server.addr, &append_key, "incident.opened", 250);
    let end = log_end(server.addr, &admin);
    let seqs = receiver.wait_for_all(end);
    // No failure, no restart: each record exactly once, in seq order (the
    // reads of this test are recorded too, and delivered after).
    assert_eq!(seqs[..end as usize], (0..end).collect::<Vec<_>>());
    assert!(receiver.h.rejected.lock().unwrap().is_empty());
    let status = wait_until("the position to reach the end", || {
        let (code, list) = json_request(
            server.addr,
            "GET",
            "/v1/workspaces/acme/deliveries",
            Some(&admin),
            None,
        );
        assert_eq!(code, 200, "{list}");
        let s = list["deliveries"][0]["status"].clone();
        (s["next_seq"].as_u64() >= Some(end) && s["records_behind"] == 0).then_some(s)
    });
    assert_eq!(status["delivered"], status["next_seq"]);
    assert_eq!(status["failing"], false);
    let scrape = server.scrape();
    let labels = [
        ("workspace", "acme"),
        ("destination", "siem"),
        ("kind", "webhook"),
    ];
    assert_eq!(
        metric_value(&scrape, "chainlog_delivery_lag_records", &labels),
        Some(0.0)
    );
    assert!(metric_value(&scrape, "chainlog_delivery_records_total", &labels) >= Some(end as f64));
    // The configuration change is in the log, by the admin key.
    let configured = events_of(server.addr, &admin, "delivery.configured");
    assert_eq!(configured.len(), 1);
    assert!(configured[0]["context"]["destination"]
        .get("secret")
        .is_none());
}

#[test]
fn kill_9_in_the_middle_of_delivery_loses_nothing() {
    let (_dir, data, admin) = data_with_admin("acme");
    let append_key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let receiver = webhook_receiver();
    append(server.addr, &append_key, "node.added", 2000);
    // Held once 500 seqs arrived: the server is then waiting for an answer.
    receiver.h.hold_after.store(500, Ordering::SeqCst);
    put_webhook(
        &server,
        &admin,
        "siem",
        &receiver.url(),
        json!({"batch_events": 50}),
    );
    wait_until("500 seqs", || (receiver.seqs().len() >= 500).then_some(()));
    let end = log_end(server.addr, &admin);
    let status = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(server);
    let before = receiver.seqs().len();
    assert!(before < end as usize, "the kill came after the end");
    receiver.release();
    let server = TestServer::start(&data, &[]);
    let seqs = receiver.wait_for_all(end);
    assert_in_order_none_skipped(&seqs, 0);
    // The restart resumed near where it stopped (a batch or two again),
    // not from the start.
    assert!(
        seqs.len() < end as usize + 200,
        "{} arrivals for {end} records",
        seqs.len()
    );
    drop(server);
}

#[test]
fn a_destination_down_for_a_while_fails_then_recovers() {
    let (_dir, data, admin) = data_with_admin("acme");
    let append_key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let receiver = webhook_receiver();
    receiver.h.status.store(503, Ordering::SeqCst);
    put_webhook(&server, &admin, "siem", &receiver.url(), json!({}));
    append(server.addr, &append_key, "auth.login_failed", 100);
    let failing = wait_until("delivery.failing", || {
        events_of(server.addr, &admin, "delivery.failing").pop()
    });
    assert_eq!(failing["actor"], "system");
    assert_eq!(failing["outcome"], "failure");
    assert_eq!(failing["context"]["destination"], "siem");
    assert!(failing["context"]["last_error"]
        .as_str()
        .unwrap()
        .contains("503"));
    let (_, list) = json_request(
        server.addr,
        "GET",
        "/v1/workspaces/acme/deliveries/siem",
        Some(&admin),
        None,
    );
    let s = &list["status"];
    assert_eq!(s["failing"], true, "{list}");
    assert_eq!(s["next_seq"], 0);
    let behind_before = s["records_behind"].as_u64().unwrap();
    assert!(behind_before >= 100, "{list}");
    append(server.addr, &append_key, "auth.login_failed", 50);
    // The lag grows while it is down.
    wait_until("the lag to grow", || {
        let (_, one) = json_request(
            server.addr,
            "GET",
            "/v1/workspaces/acme/deliveries/siem",
            Some(&admin),
            None,
        );
        (one["status"]["records_behind"].as_u64().unwrap() >= behind_before + 50
            && one["status"]["seconds_behind"].as_f64().unwrap() > 0.0)
            .then_some(())
    });
    let labels = [
        ("workspace", "acme"),
        ("destination", "siem"),
        ("kind", "webhook"),
    ];
    assert_eq!(
        metric_value(&server.scrape(), "chainlog_delivery_failing", &labels),
        Some(1.0)
    );
    assert!(receiver.seqs().is_empty());
    receiver.h.status.store(200, Ordering::SeqCst);
    let recovered = wait_until("delivery.recovered", || {
        events_of(server.addr, &admin, "delivery.recovered").pop()
    });
    assert_eq!(recovered["context"]["destination"], "siem");
    assert_eq!(
        recovered["context"]["failing_event_seq"], failing["seq"],
        "{recovered}"
    );
    // Everything up to and including the recovery event arrives, in order.
    let end = recovered["seq"].as_u64().unwrap() + 1;
    let seqs = receiver.wait_for_all(end);
    assert_in_order_none_skipped(&seqs, 0);
    assert_eq!(
        metric_value(&server.scrape(), "chainlog_delivery_failing", &labels),
        Some(0.0)
    );
}

#[test]
fn splunk_hec_through_the_cli_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let read_key = create_key(&data, "acme", "read");
    let append_key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let receiver = Receiver::start(
        Check::Hec {
            token: "hec-token-1".into(),
        },
        "acme",
    );
    append(server.addr, &append_key, "pcap.download", 30);
    append(server.addr, &append_key, "incident.opened", 30);
    // Added with the CLI while the server runs: it picks the file up.
    let url = receiver.url();
    delivery_cli(
        &data,
        &[
            "add",
            "--name",
            "splunk",
            "--kind",
            "splunk-hec",
            "--url",
            &url,
            "--token",
            "hec-token-1",
            "--index",
            "audit",
            "--filter",
            "event=pcap.*",
        ],
    );
    append(server.addr, &append_key, "pcap.download", 30);
    let end = log_end(server.addr, &read_key);
    let wanted: Vec<u64> = events_of(server.addr, &read_key, "pcap.*")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(wanted.len(), 60);
    wait_until("every pcap event", || {
        (receiver.seqs().len() >= wanted.len()).then_some(())
    });
    assert_eq!(
        receiver.seqs(),
        wanted,
        "only the matching records, in order"
    );
    assert!(receiver.h.rejected.lock().unwrap().is_empty());
    let items = receiver.h.items.lock().unwrap().clone();
    assert!(items.iter().all(|i| i["index"] == "audit"));
    assert_eq!(items[0]["event"]["event"], "pcap.download");
    // The status as the server stored it: caught up to the end.
    let status = wait_until("the stored position", || {
        let v: Value = serde_json::from_str(&delivery_cli(&data, &["status", "--json"])).unwrap();
        let s = &v[0]["status"];
        (s["next_seq"].as_u64() >= Some(end) && s["records_behind"] == 0).then_some(v.clone())
    });
    assert_eq!(status[0]["token_set"], true);
    let text = delivery_cli(&data, &["list", "--json"]);
    assert!(
        text.contains("splunk") && !text.contains("hec-token-1"),
        "{text}"
    );
    delivery_cli(&data, &["remove", "--name", "splunk"]);
    let (status, list) = json_request(
        server.addr,
        "GET",
        "/v1/workspaces/acme/deliveries",
        Some(&create_key(&data, "acme", "admin")),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list["deliveries"], json!([]));
}

#[test]
fn deliveries_need_an_admin_key_and_a_valid_destination() {
    let (_dir, data, admin) = data_with_admin("acme");
    let append_key = create_key(&data, "acme", "append");
    let read_key = create_key(&data, "acme", "read");
    let other_admin = create_key(&data, "other", "admin");
    let server = TestServer::start(&data, &[]);
    let path = "/v1/workspaces/acme/deliveries/siem";
    let body = json!({"kind": "webhook", "url": "https://siem.example/hook"});
    for key in [&append_key, &read_key, &other_admin] {
        for (method, body) in [("GET", None), ("PUT", Some(&body)), ("DELETE", None)] {
            let (status, answer) = json_request(server.addr, method, path, Some(key), body);
            assert_eq!(status, 403, "{method} {answer}");
        }
        let (status, _) = json_request(
            server.addr,
            "GET",
            "/v1/workspaces/acme/deliveries",
            Some(key),
            None,
        );
        assert_eq!(status, 403);
    }
    let (status, _) = json_request(server.addr, "GET", path, None, None);
    assert_eq!(status, 401);
    for bad in [
        json!({"kind": "webhook", "url": "http://siem.example/hook"}),
        json!({"kind": "webhook", "url": "https://siem.example/hook", "secret": "short"}),
        json!({"kind": "webhook", "url": "https://x.example", "filters": "outcome=maybe"}),
        json!({"kind": "webhook", "url": "https://x.example", "format": "cef"}),
        json!({"kind": "splunk_hec", "url": "https://x.example"}),
        json!({"kind": "webhook", "url": "https://x.example", "bogus": 1}),
        json!({"kind": "webhook", "url": "https://x.example", "id": "0123456789abcdef"}),
        json!({"kind": "syslog", "address": "127.0.0.1:6514"}),
    ] {
        let (status, answer) = json_request(server.addr, "PUT", path, Some(&admin), Some(&bad));
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    // OCSF (the library's delivery::ocsf) is a format of webhooks and HEC.
    let ocsf = json!({"kind": "webhook", "url": "https://x.example", "format": "ocsf"});
    let (status, answer) = json_request(
        server.addr,
        "PUT",
        "/v1/workspaces/acme/deliveries/lake",
        Some(&admin),
        Some(&ocsf),
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["format"], "ocsf");
    // Without a secret, one is made and shown once.
    let (status, answer) = json_request(server.addr, "PUT", path, Some(&admin), Some(&body));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["secret"].as_str().unwrap().len(), 64);
    let (status, one) = json_request(server.addr, "GET", path, Some(&admin), None);
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none());
    assert_eq!(one["secret_set"], true);
    // A change keeps the id (so the position) and the secret.
    let (status, changed) = json_request(
        server.addr,
        "PUT",
        path,
        Some(&admin),
        Some(&json!({"kind": "webhook", "url": "https://siem.example/v2"})),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["id"], answer["id"]);
    assert!(changed.get("secret").is_none());
    let (status, _) = json_request(server.addr, "DELETE", path, Some(&admin), None);
    assert_eq!(status, 200);
    let (status, _) = json_request(server.addr, "DELETE", path, Some(&admin), None);
    assert_eq!(status, 404);
    assert_eq!(events_of(server.addr, &admin, "delivery.removed").len(), 1);
}

#[test]
fn https_webhook_verifies_the_receiver_with_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cert) = test_certificate(dir.path()) else {
        assert!(
            std::env::var_os("CHAINLOG_REQUIRE_OPENSSL").is_none(),
            "CHAINLOG_REQUIRE_OPENSSL is set but openssl could not make the test certificate"
        );
        eprintln!("NOTE: https_webhook_verifies_the_receiver_with_the_ca_file skipped: no openssl command (scripts/test.sh installs it)");
        return;
    };
    let data = dir.path().join("data");
    let admin = create_key(&data, "acme", "admin");
    let server = TestServer::start(&data, &[]);
    let receiver = Receiver::start_tls(
        Check::Webhook {
            secret: "test-secret-0123456789".into(),
        },
        "acme",
        &cert,
    );
    let url = format!("https://localhost:{}/hook", receiver.addr.port());
    // Without the CA file the system's roots do not know the test CA: the
    // handshake fails and the destination fails, nothing is delivered.
    put_webhook(&server, &admin, "untrusted", &url, json!({}));
    let failing = wait_until("delivery.failing of the untrusted one", || {
        events_of(server.addr, &admin, "delivery.failing").pop()
    });
    assert_eq!(failing["context"]["destination"], "untrusted");
    assert!(receiver.seqs().is_empty());
    // With it, every record arrives.
    let ca = cert.ca_cert.to_str().unwrap();
    put_webhook(&server, &admin, "trusted", &url, json!({"ca_file": ca}));
    let seqs = receiver.wait_for_all(2);
    assert_in_order_none_skipped(&seqs, 0);
    assert!(receiver.h.rejected.lock().unwrap().is_empty());
}

/// Events per second delivered on loopback, per destination kind:
/// `cargo test --release --test deliveries -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (docs/PERFORMANCE.md): run with --release -- --ignored --nocapture"]
fn delivery_throughput() {
    const EVENTS: usize = 20_000;
    for (kind, batch) in [
        ("webhook", 100),
        ("webhook", 1000),
        ("splunk_hec", 100),
        ("splunk_hec", 1000),
    ] {
        let (_dir, data, admin) = data_with_admin("acme");
        let append_key = create_key(&data, "acme", "append");
        let server = TestServer::start(&data, &[]);
        append(server.addr, &append_key, "pcap.download", EVENTS);
        let end = log_end(server.addr, &admin);
        let (receiver, body) = if kind == "webhook" {
            (
                webhook_receiver(),
                json!({"kind": "webhook", "secret": "test-secret-0123456789"}),
            )
        } else {
            (
                Receiver::start(Check::Hec { token: "t".into() }, "acme"),
                json!({"kind": "splunk_hec", "token": "t"}),
            )
        };
        let mut body = body;
        body["url"] = receiver.url().into();
        body["batch_events"] = batch.into();
        let started = Instant::now();
        let (status, answer) = json_request(
            server.addr,
            "PUT",
            "/v1/workspaces/acme/deliveries/bench",
            Some(&admin),
            Some(&body),
        );
        assert_eq!(status, 201, "{answer}");
        receiver.wait_for_all(end);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{kind} batch {batch}: {end} events in {secs:.2} s = {:.0} events/s",
            end as f64 / secs
        );
    }
}
