//! What `chainlog serve` records about refusals and reads (issue 15,
//! findings 2, 3, 4 and 10), over real HTTP against the binary: refusal
//! budgets per address, per log and in total with exact summaries; a valid
//! key outside its workspace recorded one by one whatever else happens;
//! every refusal (404, 405, 431, `/v1/key`) readable by an admin; reads
//! recorded with their rows and bytes, and summarised exactly.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chainlog::{Log, Options, Record};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use support::{create_key, data_with_admin, key_id, raw_request, TestServer};

/// The budgets' window in these tests: long enough that a slow machine
/// never splits one test's requests across two windows (summaries are
/// written at shutdown).
const WINDOW: &str = "60m";

async fn call(
    client: &Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The first page of workspace `acme`'s events of `event_type` (none if
/// the answer has no page).
async fn acme_events(client: &Client, url: &str, key: &str, event_type: &str) -> Vec<Value> {
    let events = format!("{url}/v1/workspaces/acme/events?event={event_type}");
    let (_, body) = call(client, Method::GET, &events, Some(key), None).await;
    let page: Value = serde_json::from_str(&body).unwrap();
    page["events"].as_array().cloned().unwrap_or_default()
}

/// Every record of a log, read without the writer lock.
fn records(dir: &Path) -> Vec<Record> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0).map(Result::unwrap).collect()
}

fn of_type<'a>(records: &'a [Record], event: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.event.event_type == event)
        .collect()
}

fn sum(records: &[&Record], field: &str) -> u64 {
    records
        .iter()
        .map(|r| r.event.context[field].as_u64().unwrap())
        .sum()
}

/// Creates the workspace's log with one event, through the API.
async fn seed(client: &Client, server: &TestServer, workspace: &str, admin: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"event": "pcap.download", "actor": "alice@acme.io", "context": {"i": i}}))
        .collect();
    let (status, body) = call(
        client,
        Method::POST,
        &format!("{}/v1/workspaces/{workspace}/events", server.url),
        Some(admin),
        Some(Value::Array(events)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_addresses_meet_the_log_and_total_budgets_and_are_counted_exactly() {
    let (_tmp, data, acme) = data_with_admin("acme");
    let beta = create_key(&data, "beta", "admin");
    let server = TestServer::start(
        &data,
        &[
            "--audit-window",
            WINDOW,
            "--refusals-per-address",
            "2",
            "--refusals-per-log",
            "5",
            "--refusals-total",
            "8",
        ],
    );
    let client = Client::new();
    seed(&client, &server, "acme", &acme, 1).await;
    seed(&client, &server, "beta", &beta, 1).await;
    // 40 addresses, three refusals each on acme, then the same on beta:
    // 240 refusals in all.
    let addresses: Vec<IpAddr> = (1..=40)
        .map(|i| format!("127.0.1.{i}").parse().unwrap())
        .collect();
    for workspace in ["acme", "beta"] {
        for ip in &addresses {
            let from = Client::builder().local_address(*ip).build().unwrap();
            for _ in 0..3 {
                let url = format!("{}/v1/workspaces/{workspace}/events", server.url);
                let (status, _) = call(&from, Method::GET, &url, None, None).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED);
            }
        }
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let acme_log = records(&data.join("workspaces/acme"));
    let beta_log = records(&data.join("workspaces/beta"));
    // acme: addresses 1 and 2 give 2 each, address 3 one more: acme's 5.
    // beta: address 3's last, then address 4's 2: the total's 8.
    for (log, individually) in [(&acme_log, 5), (&beta_log, 3)] {
        let one_by_one = of_type(log, "auth.failed");
        assert_eq!(one_by_one.len(), individually);
        let summaries = of_type(log, "auth.failed_summary");
        assert_eq!(summaries.len(), 1, "one summary per log and minute");
        let s = &summaries[0].event.context;
        assert_eq!(s["failures"], 120 - individually as u64, "{s:?}");
        let over = &s["over_budget"];
        assert_eq!(
            over["address"].as_u64().unwrap()
                + over["log"].as_u64().unwrap()
                + over["total"].as_u64().unwrap(),
            120 - individually as u64
        );
        assert_eq!(s["by_reason"], json!({"missing_key": 120 - individually}));
        let listed: u64 = s["addresses"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            listed + s["failures_from_unlisted_addresses"].as_u64().unwrap(),
            120 - individually as u64
        );
        assert_eq!(
            s["budgets"],
            json!({"per_address": 2, "per_log": 5, "total": 8})
        );
        // The real event is still there.
        assert_eq!(of_type(log, "pcap.download").len(), 1);
    }
    assert_eq!(
        of_type(&acme_log, "auth.failed")
            .iter()
            .map(|r| r.event.source_ip.unwrap().to_string())
            .collect::<Vec<_>>(),
        [
            "127.0.1.1",
            "127.0.1.1",
            "127.0.1.2",
            "127.0.1.2",
            "127.0.1.3"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_outside_its_workspace_is_recorded_one_by_one() {
    let (_tmp, data, acme_admin) = data_with_admin("acme");
    let acme_read = create_key(&data, "acme", "read");
    let beta_admin = create_key(&data, "beta", "admin");
    // A tiny total budget: cheap refusals use it up at once.
    let server = TestServer::start(&data, &["--audit-window", WINDOW, "--refusals-total", "3"]);
    let client = Client::new();
    seed(&client, &server, "acme", &acme_admin, 1).await;
    seed(&client, &server, "beta", &beta_admin, 1).await;
    let beta = format!("{}/v1/workspaces/beta", server.url);
    let beta_path = "/v1/workspaces/beta";
    for _ in 0..10 {
        let (status, _) = call(&client, Method::GET, &format!("{beta}/events"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The same address then tries beta with acme's read key.
    let attempts = [
        (Method::GET, "/events", "?actor=alice@acme.io", None),
        (Method::GET, "/export", "", None),
        (Method::POST, "/keys", "", Some(json!({"scope": "admin"}))),
    ];
    for (method, path, query, body) in attempts.clone() {
        let url = format!("{beta}{path}{query}");
        let (status, text) = call(&client, method, &url, Some(&acme_read), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    }
    // Beyond its scope in its own workspace.
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{}/v1/workspaces/acme/keys", server.url),
        Some(&acme_read),
        Some(json!({"scope": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");

    let beta_log = records(&data.join("workspaces/beta"));
    assert_eq!(
        of_type(&beta_log, "auth.failed").len(),
        3,
        "the total budget"
    );
    assert_eq!(
        sum(&of_type(&beta_log, "auth.failed_summary"), "failures"),
        7
    );
    let denied = of_type(&beta_log, "access.denied");
    assert_eq!(denied.len(), 3, "{denied:?}");
    for (record, (method, path, _, _)) in denied.iter().zip(&attempts) {
        let c = &record.event.context;
        assert_eq!(record.event.actor, format!("apikey:{}", key_id(&acme_read)));
        assert_eq!(c["key_id"], key_id(&acme_read));
        assert_eq!(c["reason"], "other_workspace");
        assert_eq!(c["method"], method.as_str());
        assert_eq!(c["path"], format!("{beta_path}{path}"));
        assert_eq!(record.event.source_ip, Some("127.0.0.1".parse().unwrap()));
    }
    assert!(of_type(&beta_log, "access.denied_summary").is_empty());
    let acme_log = records(&data.join("workspaces/acme"));
    let scope = of_type(&acme_log, "access.denied");
    assert_eq!(scope.len(), 1);
    assert_eq!(scope[0].event.context["reason"], "insufficient_scope");

    // A stolen key flooding: past its own bound, counted exactly.
    let server = TestServer::start(
        &data,
        &["--audit-window", WINDOW, "--security-events-per-key", "2"],
    );
    // A refusal opens no workspace (finding 9): beta's own key opens its log
    // in this server first, so that the refusals land there.
    seed(&client, &server, "beta", &beta_admin, 1).await;
    for i in 0..5 {
        let url = format!("{}/v1/workspaces/beta/events?i={i}", server.url);
        let (status, _) = call(&client, Method::GET, &url, Some(&acme_read), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let beta_log = records(&data.join("workspaces/beta"));
    assert_eq!(of_type(&beta_log, "access.denied").len(), 3 + 2);
    let summaries = of_type(&beta_log, "access.denied_summary");
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0].event.context;
    assert_eq!(s["attempts"], 3);
    assert_eq!(s["key_id"], key_id(&acme_read));
    assert_eq!(s["paths"], json!({"/v1/workspaces/beta/events": 3}));
    assert_eq!(s["by_reason"], json!({"other_workspace": 3}));
}

/// The server log's events, as an admin reads them.
async fn server_log(client: &Client, server: &TestServer, key: &str) -> Vec<Value> {
    let url = format!("{}/v1/server-log/events?limit=1000", server.url);
    let (status, body) = call(client, Method::GET, &url, Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["events"].as_array().unwrap().clone()
}

fn has(events: &[Value], event: &str, reason: &str, path: &str) -> bool {
    events.iter().any(|e| {
        e["event"] == event && e["context"]["reason"] == reason && e["context"]["path"] == path
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_lands_in_a_log_an_admin_reads() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let read = create_key(&data, "acme", "read");
    let doomed = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    seed(&client, &server, "acme", &admin, 1).await;
    let url = &server.url;
    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{url}/v1/workspaces/acme/keys/{}", key_id(&doomed)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let refusals = [
        (Method::GET, "/nope", None, StatusCode::NOT_FOUND),
        (
            Method::DELETE,
            "/v1/key",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::PUT,
            "/healthz",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v1/key",
            Some(&doomed),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/v1/key", None, StatusCode::UNAUTHORIZED),
        (
            Method::DELETE,
            "/v1/workspaces/acme/events/1",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, path, key, expected) in &refusals {
        let (status, body) = call(
            &client,
            method.clone(),
            &format!("{url}{path}"),
            key.map(String::as_str),
            None,
        )
        .await;
        assert_eq!(status, *expected, "{method} {path}: {body}");
    }
    // A head over hyper's read buffer (431), and one hyper cannot parse (400).
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let _ = std::panic::catch_unwind(|| raw_request(server.addr, big.as_bytes()));
    let (status, _) = raw_request(server.addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400);

    // A read key may not read the server's log; that is recorded too.
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("{url}/v1/server-log/events"),
        Some(&read),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Hyper's refusals are recorded as the connection ends: wait for them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = server_log(&client, &server, &admin).await;
        let hyper_ones = ["header_too_large", "malformed_request"]
            .iter()
            .all(|r| events.iter().any(|e| e["context"]["reason"] == *r));
        if hyper_ones || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        has(&events, "request.refused", "not_found", "/nope"),
        "{events:?}"
    );
    assert!(has(
        &events,
        "request.refused",
        "method_not_allowed",
        "/v1/key"
    ));
    assert!(has(
        &events,
        "request.refused",
        "method_not_allowed",
        "/healthz"
    ));
    assert!(
        has(&events, "auth.failed", "revoked", "/v1/key"),
        "{events:?}"
    );
    assert!(has(&events, "auth.failed", "missing_key", "/v1/key"));
    assert!(has(
        &events,
        "access.denied",
        "insufficient_scope",
        "/v1/server-log/events"
    ));
    for (reason, status) in [("header_too_large", 431), ("malformed_request", 400)] {
        let e = events
            .iter()
            .find(|e| e["context"]["reason"] == reason)
            .unwrap_or_else(|| panic!("no {reason} in {events:?}"));
        assert_eq!(e["event"], "request.refused");
        assert_eq!(e["context"]["status"], status);
        assert_eq!(e["ip"], "127.0.0.1");
    }
    let revoked = events
        .iter()
        .find(|e| e["context"]["reason"] == "revoked")
        .unwrap();
    assert_eq!(revoked["context"]["key_id"], key_id(&doomed));
    // A refusal on a workspace's route goes to that workspace's log.
    let acme = acme_events(&client, url, &read, "request.refused").await;
    assert_eq!(acme.len(), 1, "{acme:?}");
    assert_eq!(acme[0]["context"]["path"], "/v1/workspaces/acme/events/1");
    assert_eq!(acme[0]["context"]["method"], "DELETE");
    // The same with a valid key is a security event, with the key's id.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{url}/v1/workspaces/acme/events/1"),
        Some(&read),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let denied = acme_events(&client, url, &read, "access.denied").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["context"]["reason"], "method_not_allowed");
    assert_eq!(denied[0]["context"]["key_id"], key_id(&read));
    assert_eq!(denied[0]["context"]["status"], 405);

    // With --server-log-readers, other workspaces' admin keys are refused.
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let server = TestServer::start(&data, &["--server-log-readers", "ops,sec"]);
    let (status, _) = call(
        &client,
        Method::GET,
        &format!("{}/v1/server-log/events", server.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let log = records(&data.join("server-log"));
    let refused = of_type(&log, "access.denied");
    assert!(refused
        .iter()
        .any(|r| r.event.context["reason"] == "not_a_server_log_reader"
            && r.event.context["key_id"] == key_id(&admin)));
    // The admin's reads of the server's log were recorded in it.
    assert!(!of_type(&log, "access.query").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_recorded_with_rows_and_bytes_and_summarised_exactly() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let read = create_key(&data, "acme", "read");
    let server = TestServer::start(&data, &["--audit-window", WINDOW, "--reads-per-key", "2"]);
    let client = Client::new();
    seed(&client, &server, "acme", &admin, 30).await;
    let ws = format!("{}/v1/workspaces/acme", server.url);
    let get = |path: String, key: String| {
        let client = client.clone();
        async move {
            let (status, body) = call(&client, Method::GET, &path, Some(&key), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    // Recorded one by one: the read key's first two reads.
    let first = get(
        format!("{ws}/events?limit=5&actor=alice@acme.io"),
        read.clone(),
    )
    .await;
    let export = get(format!("{ws}/export?format=jsonl"), read.clone()).await;
    let export_rows = export.lines().count() as u64;
    assert!(export_rows > 30, "{export_rows}");
    // Counted: the next three.
    let third = get(format!("{ws}/events?limit=3"), read.clone()).await;
    let csv = get(format!("{ws}/export?format=csv"), read.clone()).await;
    let verify = get(format!("{ws}/verify"), read.clone()).await;
    let csv_rows = csv.lines().count() as u64 - 1;
    // Another key has its own count.
    let keys = get(format!("{ws}/keys"), admin.clone()).await;
    let whoami = get(format!("{}/v1/key", server.url), admin.clone()).await;
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");

    let log = records(&data.join("workspaces/acme"));
    let reader = format!("apikey:{}", key_id(&read));
    let queries = of_type(&log, "access.query");
    assert_eq!(queries.len(), 1);
    let q = &queries[0].event.context;
    assert_eq!(queries[0].event.actor, reader);
    assert_eq!(q["rows"], 5);
    assert_eq!(q["bytes"], first.len() as u64);
    assert_eq!(q["filters"], "limit=5&actor=alice@acme.io");
    assert_eq!(
        queries[0].event.source_ip,
        Some("127.0.0.1".parse().unwrap())
    );
    let exports = of_type(&log, "access.export");
    assert_eq!(exports.len(), 1);
    let x = &exports[0].event.context;
    assert_eq!(x["rows"], export_rows);
    assert_eq!(x["bytes"], export.len() as u64);
    assert_eq!(x["ended"], "complete");
    let summaries = of_type(&log, "access.read_summary");
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0].event.context;
    assert_eq!(summaries[0].event.actor, reader);
    assert_eq!(s["reads"], 3);
    assert_eq!(s["rows"], 3 + csv_rows);
    assert_eq!(s["bytes"], (third.len() + csv.len() + verify.len()) as u64);
    assert_eq!(
        s["by_kind"],
        json!({"access.query": 1, "access.export": 1, "access.verify": 1})
    );
    let listed = of_type(&log, "access.key_list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event.context["rows"], 2);
    assert_eq!(listed[0].event.context["bytes"], keys.len() as u64);
    let signed_in = of_type(&log, "access.sign_in");
    assert_eq!(signed_in.len(), 1);
    assert_eq!(
        signed_in[0].event.actor,
        format!("apikey:{}", key_id(&admin))
    );
    assert_eq!(signed_in[0].event.context["bytes"], whoami.len() as u64);
    // Written by the server, not by a client key.
    for r in queries.iter().chain(&exports).chain(&summaries) {
        assert_eq!(r.appender.as_deref(), Some("chainlog"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_short_is_recorded_with_what_was_sent() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    // About 23 MB of export: far more than the socket buffers and the
    // server's chunk queue hold.
    for _ in 0..12 {
        let events: Vec<Value> = (0..2000)
            .map(|i| json!({"event": "pcap.download", "actor": "alice@acme.io", "context": {"pad": "x".repeat(900), "i": i}}))
            .collect();
        let (status, body) = call(
            &client,
            Method::POST,
            &format!("{}/v1/workspaces/acme/events", server.url),
            Some(&admin),
            Some(Value::Array(events)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut response = client
        .get(format!(
            "{}/v1/workspaces/acme/export?format=jsonl",
            server.url
        ))
        .header("Authorization", format!("Bearer {admin}"))
        .send()
        .await
        .unwrap();
    let mut received = 0usize;
    while received < 256 * 1024 {
        received += response.chunk().await.unwrap().unwrap().len();
    }
    drop(response);
    // The export ends when the server notices; then it is recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let export = loop {
        let events = acme_events(&client, &server.url, &admin, "access.export").await;
        if let Some(e) = events.into_iter().next() {
            break e;
        }
        assert!(Instant::now() < deadline, "no access.export event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let c = &export["context"];
    assert_eq!(c["ended"], "client_gone", "{export}");
    let bytes = c["bytes"].as_u64().unwrap();
    let rows = c["rows"].as_u64().unwrap();
    assert!(bytes >= received as u64, "{bytes} < {received}");
    assert!(rows > 0 && rows < 24_000, "{rows}");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}
