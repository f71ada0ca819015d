//! The HTTP API end to end, against the `chainlog serve` binary: appends and
//! receipts, queries and paging, streamed exports, verify, checkpoints,
//! keys and scopes, audited refusals, abuse, TLS and graceful shutdown.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chainlog::storage::FsStorage;
use chainlog::verify::verify_dir;
use chainlog::{Log, Options, Record};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use support::{
    chainlog, create_key, data_with_admin, key_id, raw_get, raw_request, small_segment_workspace,
    succeed, test_certificate, TestCertificate, TestServer,
};

async fn call(
    client: &Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("Content-Type", content_type).body(bytes);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn post_json(client: &Client, url: &str, key: &str, body: Value) -> (StatusCode, Value) {
    call(
        client,
        Method::POST,
        url,
        Some(key),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    )
    .await
}

async fn get(client: &Client, url: &str, key: Option<&str>) -> (StatusCode, Value) {
    call(client, Method::GET, url, key, None).await
}

async fn get_text(client: &Client, url: &str, key: &str) -> (StatusCode, String) {
    let response = client
        .get(url)
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Every record of a log, read without the writer lock.
fn records(dir: &Path) -> Vec<Record> {
    let log = Log::open(dir, Options::for_reading()).unwrap();
    log.iter_from(0).map(Result::unwrap).collect()
}

fn seqs(rows: &Value) -> Vec<u64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// An error answer is JSON with a code and a clean sentence: no paths,
/// no Rust debug output.
fn assert_clean_error(body: &Value, code: &str, data: &Path) {
    assert_eq!(body["error"], code, "{body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail: {body}"));
    assert!(!detail.is_empty());
    let data = data.to_string_lossy();
    for leak in [
        data.as_ref(),
        "/tmp",
        "Error {",
        "Os {",
        "kind:",
        "panicked",
        "src/",
    ] {
        assert!(!detail.contains(leak), "detail leaks {leak:?}: {detail}");
    }
}

fn events_fixture() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..40u32 {
        let actor = ["alice@acme.io", "bob@acme.io", "deploy-bot"][i as usize % 3];
        let event = [
            "pcap.download",
            "pcap.delete",
            "incident.opened",
            "auth.login_failed",
        ][i as usize % 4];
        let node = format!("nyc-edge-{:02}", i % 5);
        events.push(json!({
            "timestamp": format!("2026-03-09T09:{:02}:{:02}Z", i / 60, i % 60),
            "event": event,
            "actor": actor,
            "node": node,
            "ip": format!("203.0.113.{}", i % 7),
            "outcome": if event == "auth.login_failed" { "failure" } else { "success" },
            "context": {"i": i},
        }));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_query_page_export_and_verify() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let base = format!("{}/v1/workspaces/acme", server.url);
    let events_url = format!("{base}/events");

    // One object, an array, and NDJSON; receipts come back with seqs and hashes.
    let fixture = events_fixture();
    let (status, body) = post_json(&client, &events_url, &admin, fixture[0].clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["receipts"][0]["seq"], 1,
        "seq 0 is the apikey.created event"
    );
    assert_eq!(body["receipts"][0]["hash"].as_str().unwrap().len(), 64);
    let (status, body) = post_json(&client, &events_url, &admin, json!(fixture[1..30])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(seqs(&body["receipts"]), (2..=30).collect::<Vec<_>>());
    let ndjson: String = fixture[30..]
        .iter()
        .map(|e| format!("{e}\n"))
        .collect::<String>()
        + "\n";
    let (status, body) = call(
        &client,
        Method::POST,
        &events_url,
        Some(&admin),
        Some(("application/x-ndjson; charset=utf-8", ndjson.into_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(seqs(&body["receipts"]), (31..=40).collect::<Vec<_>>());

    // Filters, as `chainlog query`: repeated values are OR, fields AND.
    let (status, page) = get(
        &client,
        &format!("{events_url}?actor=alice@acme.io&actor=deploy-bot&event=pcap.*&node=nyc-edge-00&node=nyc-edge-02"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let expected: Vec<u64> = fixture
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            ["alice@acme.io", "deploy-bot"].contains(&e["actor"].as_str().unwrap())
                && e["event"].as_str().unwrap().starts_with("pcap.")
                && ["nyc-edge-00", "nyc-edge-02"].contains(&e["node"].as_str().unwrap())
        })
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(seqs(&page["events"]), expected);
    assert_eq!(page["count"], expected.len());
    assert_eq!(page["next_cursor"], Value::Null);
    let row = &page["events"][0];
    for field in [
        "seq",
        "timestamp",
        "event",
        "actor",
        "node",
        "resource",
        "ip",
        "outcome",
        "context",
        "hash",
        "received_at",
        "origin",
        "appender",
    ] {
        assert!(row.get(field).is_some(), "row lacks {field}: {row}");
    }

    // Time range and outcome.
    let (_, page) = get(
        &client,
        &format!(
            "{events_url}?since=2026-03-09T09:00:10Z&until=2026-03-09T09:00:20Z&outcome=failure"
        ),
        Some(&admin),
    )
    .await;
    let expected: Vec<u64> = (10..20).filter(|i| i % 4 == 3).map(|i| i + 1).collect();
    assert_eq!(seqs(&page["events"]), expected);

    // Paging newest first with a cursor visits every record once: the
    // test's and the records of the reads before it (reads are audited).
    let mut seen = Vec::new();
    let mut audited = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let url = match cursor {
            Some(c) => format!("{events_url}?reverse=true&limit=7&cursor={c}"),
            None => format!("{events_url}?reverse=true&limit=7"),
        };
        let (status, page) = get(&client, &url, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(seqs(&page["events"]));
        audited.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["event"].as_str().unwrap().starts_with("access."))
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (0..=seen[0]).rev().collect::<Vec<_>>());
    assert_eq!(
        audited,
        (41..=seen[0]).rev().collect::<Vec<_>>(),
        "the two queries above were recorded after the 41 events"
    );

    // One event by seq.
    let (status, one) = get(&client, &format!("{events_url}/5"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["event"]["seq"], 5);
    let (status, missing) = get(&client, &format!("{events_url}/999"), Some(&admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_clean_error(&missing, "event_not_found", &data);

    // Exports stream exactly the filtered rows, in every format.
    let filter = "actor=bob@acme.io&event=pcap.*";
    let expected: Vec<u64> = fixture
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e["actor"] == "bob@acme.io" && e["event"].as_str().unwrap().starts_with("pcap.")
        })
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let (status, csv) = get_text(
        &client,
        &format!("{base}/export?format=csv&{filter}"),
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender"
    );
    let csv_seqs: Vec<u64> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(csv_seqs, expected);
    let (_, json_text) = get_text(
        &client,
        &format!("{base}/export?format=json&{filter}"),
        &admin,
    )
    .await;
    let rows: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(seqs(&rows), expected);
    let (_, jsonl) = get_text(
        &client,
        &format!("{base}/export?format=jsonl&{filter}&reverse=true"),
        &admin,
    )
    .await;
    let jsonl_seqs: Vec<u64> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        jsonl_seqs,
        expected.iter().rev().copied().collect::<Vec<_>>()
    );
    // A large export streams in many chunks and still parses.
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"event": "config.changed", "actor": "deploy-bot", "context": {"pad": "x".repeat(200), "i": i}}))
        .collect();
    let (status, _) = post_json(&client, &events_url, &admin, json!(many)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, all) = get_text(&client, &format!("{base}/export?format=json"), &admin).await;
    assert!(all.len() > 3 * 64 * 1024);
    let all: Vec<Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(seqs(&json!(all)), (0..all.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        all.iter()
            .filter(|e| !e["event"].as_str().unwrap().starts_with("access."))
            .count(),
        3041
    );

    // Bad parameters are named.
    let (status, body) = get(&client, &format!("{events_url}?limit=5000"), Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_clean_error(&body, "invalid_parameter", &data);
    let (status, body) = get(&client, &format!("{base}/export"), Some(&admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("format"));

    // Verify.
    let (status, report) = get(&client, &format!("{base}/verify"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["intact"], true, "{report}");
    let verified_last_seq = report["last_seq"].as_u64().unwrap();
    assert_eq!(report["problems"], json!([]));

    // Events can never be changed: PUT, PATCH and DELETE answer 405.
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        for url in [events_url.clone(), format!("{events_url}/3")] {
            let (status, body) = call(&client, method.clone(), &url, Some(&admin), None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}");
            assert_clean_error(&body, "method_not_allowed", &data);
        }
    }
    let (status, health) = get(&client, &format!("{}/healthz", server.url), None).await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));

    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let stored = records(&data.join("workspaces/acme"));
    let written_by_server = |r: &Record| r.event.event_type.starts_with("access.");
    assert_eq!(
        stored.iter().filter(|r| !written_by_server(r)).count(),
        3041
    );
    assert_eq!(stored[3].event.actor, fixture[2]["actor"]);
    // Verify saw every record appended before it; after it, only the
    // server's records of the requests that followed (the 405s).
    assert!(stored
        .iter()
        .filter(|r| r.seq > verified_last_seq)
        .all(written_by_server));
    // A valid key trying to change events: security events, with its id.
    let changes: Vec<&Record> = stored
        .iter()
        .filter(|r| r.event.event_type == "access.denied")
        .collect();
    assert_eq!(changes.len(), 6, "PUT, PATCH and DELETE on two paths");
    assert!(changes.iter().all(|r| {
        r.event.context["reason"] == "method_not_allowed"
            && r.event.context["key_id"] == key_id(&admin)
            && r.event.context["status"] == 405
    }));
}

/// The rows' provenance: who appended each record (the API key id), its
/// origin, and when the server received it; and the filters on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_is_served_and_filtered() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let writer = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let base = format!("{}/v1/workspaces/acme", server.url);
    let events_url = format!("{base}/events");
    let ev = |i: u64| json!({"event": "node.added", "actor": "ops@acme.io", "context": {"i": i}});
    let (status, body) =
        post_json(&client, &events_url, &admin, json!([ev(0), ev(1), ev(2)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let by_admin = seqs(&body["receipts"]);
    let (status, body) = post_json(&client, &events_url, &writer, json!([ev(3), ev(4)])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let by_writer = seqs(&body["receipts"]);

    let (status, page) = get(&client, &events_url, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let rows = page["events"].as_array().unwrap().clone();
    let row = |seq: u64| rows.iter().find(|r| r["seq"] == seq).unwrap();
    for &seq in &by_admin {
        assert_eq!(row(seq)["appender"], key_id(&admin), "{}", row(seq));
        assert_eq!(row(seq)["origin"], "client");
    }
    for &seq in &by_writer {
        assert_eq!(row(seq)["appender"], key_id(&writer), "{}", row(seq));
    }
    let received =
        |r: &Value| chainlog::Timestamp::parse_rfc3339(r["received_at"].as_str().unwrap()).unwrap();
    assert!(rows.windows(2).all(|w| received(&w[0]) <= received(&w[1])));
    // Every filter's answer is what a scan of the rows gives.
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        rows.iter()
            .filter(|r| keep(r))
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    // Reads are audited: each query appends an `access.query` record after
    // its answer, so answers are compared over the records the first page had.
    let last_seq = rows
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let query = |params: String| {
        let client = client.clone();
        let url = format!("{events_url}?{params}");
        let admin = admin.clone();
        async move {
            let (status, page) = get(&client, &url, Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{url}: {page}");
            let mut seqs = seqs(&page["events"]);
            seqs.retain(|&s| s <= last_seq);
            seqs
        }
    };
    assert_eq!(
        query(format!("appender={}", key_id(&writer))).await,
        by_writer
    );
    assert_eq!(
        query(format!(
            "appender={}&appender={}",
            key_id(&writer),
            key_id(&admin)
        ))
        .await,
        expect(&|r| r["appender"] == key_id(&writer) || r["appender"] == key_id(&admin))
    );
    for origin in ["client", "engine"] {
        assert_eq!(
            query(format!("origin={origin}")).await,
            expect(&|r| r["origin"] == origin),
            "{origin}"
        );
    }
    let first_writer = received(row(by_writer[0]));
    let since = first_writer.to_string();
    assert_eq!(
        query(format!("received_since={since}")).await,
        expect(&|r| received(r) >= first_writer)
    );
    assert_eq!(
        query(format!("received_until={since}")).await,
        expect(&|r| received(r) < first_writer)
    );
    // One event, and the export, carry the same fields.
    let (_, one) = get(
        &client,
        &format!("{events_url}/{}", by_writer[1]),
        Some(&admin),
    )
    .await;
    assert_eq!(&one["event"], row(by_writer[1]));
    let (status, csv) = get_text(
        &client,
        &format!("{base}/export?format=csv&appender={}", key_id(&writer)),
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    for line in &lines[1..] {
        assert!(
            line.ends_with(&format!(",client,{}", key_id(&writer))),
            "{line}"
        );
    }
    let (status, body) = get(
        &client,
        &format!("{events_url}?origin=legacy"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_clean_error(&body, "invalid_parameter", &data);
    assert!(
        body["detail"].as_str().unwrap().contains("`origin`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_workspaces_are_enforced_and_refusals_audited() {
    let (_tmp, data, acme_admin) = data_with_admin("acme");
    let acme_append = create_key(&data, "acme", "append");
    let acme_read = create_key(&data, "acme", "read");
    let globex_read = create_key(&data, "globex", "read");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let acme = format!("{}/v1/workspaces/acme", server.url);
    let event = json!({"event": "node.added", "actor": "ops", "node": "fra-01"});

    // append may only POST; read may only GET.
    let (status, _) = post_json(
        &client,
        &format!("{acme}/events"),
        &acme_append,
        event.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = get(&client, &format!("{acme}/events"), Some(&acme_append)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_clean_error(&body, "forbidden", &data);
    let (status, _) = get(&client, &format!("{acme}/verify"), Some(&acme_append)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post_json(
        &client,
        &format!("{acme}/events"),
        &acme_read,
        event.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["detail"].as_str().unwrap().contains("`append`"),
        "{body}"
    );
    let (status, _) = get(&client, &format!("{acme}/events"), Some(&acme_read)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&client, &format!("{acme}/keys"), Some(&acme_read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A valid key on another workspace is refused and recorded there.
    let (status, body) = get(&client, &format!("{acme}/events"), Some(&globex_read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_clean_error(&body, "forbidden", &data);
    // No key, a malformed header, an unknown key, a wrong secret.
    let (status, body) = get(&client, &format!("{acme}/events"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_clean_error(&body, "unauthorized", &data);
    let response = client
        .get(format!("{acme}/events"))
        .header("Authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let unknown = format!("clk_0000000000000000_{}", "A".repeat(43));
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&unknown))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let mut wrong_secret = acme_admin.clone();
    wrong_secret.replace_range(
        30..31,
        if &wrong_secret[30..31] == "x" {
            "y"
        } else {
            "x"
        },
    );
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&wrong_secret))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // A workspace that does not exist: the refusal goes to the server log.
    let (status, _) = get(
        &client,
        &format!("{}/v1/workspaces/initech/events", server.url),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(
        &client,
        &format!("{}/v1/workspaces/initech/events", server.url),
        Some(&acme_read),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The refusals, as the workspace's read key sees them.
    let (_, page) = get(
        &client,
        &format!("{acme}/events?event=auth.failed&event=access.denied&outcome=failure"),
        Some(&acme_read),
    )
    .await;
    let refusals = page["events"].as_array().unwrap();
    let reasons: BTreeSet<&str> = refusals
        .iter()
        .map(|e| e["context"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            "insufficient_scope",
            "other_workspace",
            "missing_key",
            "malformed_authorization",
            "unknown_key",
            "wrong_secret"
        ])
    );
    for e in refusals {
        assert_eq!(e["ip"], "127.0.0.1", "{e}");
        assert_eq!(e["outcome"], "failure");
        assert!(
            e["context"]["method"].is_string()
                && e["context"]["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/v1/workspaces/acme/")
        );
    }
    let denied = refusals
        .iter()
        .find(|e| e["context"]["reason"] == "other_workspace")
        .unwrap();
    assert_eq!(denied["event"], "access.denied");
    assert_eq!(denied["actor"], format!("apikey:{}", key_id(&globex_read)));
    assert_eq!(denied["context"]["key_id"], key_id(&globex_read));
    assert_eq!(denied["context"]["key_workspace"], "globex");
    let wrong = refusals
        .iter()
        .find(|e| e["context"]["reason"] == "wrong_secret")
        .unwrap();
    assert_eq!(wrong["event"], "auth.failed");
    assert_eq!(wrong["context"]["key_id"], key_id(&acme_admin));
    // globex's log got nothing from these; the server log got the initech ones.
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let globex = records(&data.join("workspaces/globex"));
    assert_eq!(globex.len(), 1, "only apikey.created");
    let server_log = records(&data.join("server-log"));
    let initech: Vec<&Record> = server_log
        .iter()
        .filter(|r| r.event.context.get("path") == Some(&json!("/v1/workspaces/initech/events")))
        .collect();
    // The 11th refusal from this address within the minute used a valid
    // key: a security event, recorded on its own with the key's id even
    // though the address had used up its budget, never only counted.
    assert_eq!(initech.len(), 2);
    let denied = initech
        .iter()
        .find(|r| r.event.event_type == "access.denied")
        .unwrap();
    assert_eq!(denied.event.context["key_id"], key_id(&acme_read));
    assert_eq!(denied.event.context["reason"], "other_workspace");
    assert!(server_log
        .iter()
        .all(|r| r.event.event_type != "auth.failed_summary"));
    assert!(!data.join("workspaces/initech").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_managed_over_http_and_the_cli() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let keys_file = data.join("keys.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&keys_file)
        .unwrap()
        .contains(&admin[21..]));

    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let acme = format!("{}/v1/workspaces/acme", server.url);

    let (status, me) = get(&client, &format!("{}/v1/key", server.url), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"id": key_id(&admin), "workspace": "acme", "scope": "admin"})
    );

    // Create, use, rotate, revoke over HTTP.
    let (status, created) = post_json(
        &client,
        &format!("{acme}/keys"),
        &admin,
        json!({"scope": "read"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let read = created["key"].as_str().unwrap().to_string();
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&read)).await.0,
        StatusCode::OK
    );
    let (status, rotated) = call(
        &client,
        Method::POST,
        &format!("{acme}/keys/{}/rotate", key_id(&read)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let read2 = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(key_id(&read2), key_id(&read));
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&read)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&read2))
            .await
            .0,
        StatusCode::OK
    );
    let (status, revoked) = call(
        &client,
        Method::DELETE,
        &format!("{acme}/keys/{}", key_id(&read)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(
        get(&client, &format!("{acme}/events"), Some(&read2))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = call(
        &client,
        Method::DELETE,
        &format!("{acme}/keys/{}", key_id(&read)),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post_json(
        &client,
        &format!("{acme}/keys"),
        &admin,
        json!({"scope": "root"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_clean_error(&body, "invalid_request", &data);
    let (_, list) = get(&client, &format!("{acme}/keys"), Some(&admin)).await;
    let listed = list["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|k| k.get("secret_sha256").is_none()));

    // The changes are events with the admin key as actor and the client's address.
    let (_, page) = get(
        &client,
        &format!("{acme}/events?event=apikey.*"),
        Some(&admin),
    )
    .await;
    let changes: Vec<(&str, &str, &str)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["ip"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let by_admin = format!("apikey:{}", key_id(&admin));
    assert_eq!(
        changes,
        [
            ("apikey.created", "test-admin", ""),
            ("apikey.created", by_admin.as_str(), "127.0.0.1"),
            ("apikey.rotated", by_admin.as_str(), "127.0.0.1"),
            ("apikey.revoked", by_admin.as_str(), "127.0.0.1"),
        ]
    );

    // The CLI changes keys of a log the server holds (issue 15, finding 6):
    // the key works at once and the server records its event.
    let out = chainlog()
        .args(["apikey", "create", "--data"])
        .arg(&data)
        .args(["--workspace", "acme", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("running server"), "{stdout}");
    let reader = stdout.lines().last().unwrap().to_string();
    let (status, _) = get(&client, &format!("{acme}/events"), Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    // A new workspace's key made by the CLI works on the running server at once.
    let fresh = create_key(&data, "globex", "append");
    let (status, _) = post_json(
        &client,
        &format!("{}/v1/workspaces/globex/events", server.url),
        &fresh,
        json!({"event": "node.added", "actor": "ops"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // And a CLI revocation of a key the server has seen takes effect too.
    let out = chainlog()
        .args(["apikey", "list", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    succeed(
        chainlog()
            .args([
                "apikey",
                "revoke",
                key_id(&fresh),
                "--actor",
                "carol",
                "--data",
            ])
            .arg(&data),
    );
    let globex = records(&data.join("workspaces/globex"));
    let last = globex.last().unwrap();
    assert_eq!(
        (last.event.event_type.as_str(), last.event.actor.as_str()),
        ("apikey.revoked", "carol")
    );
    assert_eq!(last.event.source_ip, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_gets_clean_errors_and_loses_nothing() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &["--max-body-bytes", "1048576"]);
    let client = Client::new();
    let events_url = format!("{}/v1/workspaces/acme/events", server.url);
    let good: Vec<Value> = (0..50)
        .map(|i| json!({"event": "pcap.download", "actor": "alice", "context": {"i": i}}))
        .collect();
    let (status, _) = post_json(&client, &events_url, &admin, json!(good)).await;
    assert_eq!(status, StatusCode::CREATED);

    let post_raw = |ctype: &'static str, body: Vec<u8>| {
        let (client, url, key) = (client.clone(), events_url.clone(), admin.clone());
        async move { call(&client, Method::POST, &url, Some(&key), Some((ctype, body))).await }
    };
    // Malformed JSON, wrong shapes, invalid events, unknown fields.
    for (body, code) in [
        (&b"{\"event\": \"a.b\", \"actor\": "[..], "malformed_json"),
        (
            b"[{\"event\":\"a.b\",\"actor\":\"x\"}] trailing",
            "malformed_json",
        ),
        (b"\"just a string\"", "malformed_json"),
        (b"", "malformed_json"),
        (
            b"{\"event\":\"Not A Type\",\"actor\":\"x\"}",
            "invalid_event",
        ),
        (
            b"{\"event\":\"a.b\",\"actor\":\"x\",\"extra\":1}",
            "invalid_event",
        ),
        (
            b"{\"event\":\"a.b\",\"actor\":\"x\",\"ip\":\"999.1.1.1\"}",
            "invalid_event",
        ),
        (
            b"{\"event\":\"a.b\",\"actor\":\"x\",\"timestamp\":\"yesterday\"}",
            "invalid_event",
        ),
        // The engine's own types, and invisible characters, are refused.
        (
            b"{\"event\":\"log.hold_set\",\"actor\":\"x\"}",
            "invalid_event",
        ),
        (
            b"[{\"event\":\"a.b\",\"actor\":\"x\"},{\"event\":\"log.retention\",\"actor\":\"x\"}]",
            "invalid_event",
        ),
        (
            b"{\"event\":\"a.b\",\"actor\":\"adm\\u200bin\"}",
            "invalid_event",
        ),
        (b"[]", "no_events"),
        // A body that is not UTF-8 (JSON text must be), even inside a string.
        (b"{\"event\":\"a.b\",\"actor\":\"x\xff\"}", "malformed_json"),
    ] {
        let (status, answer) = post_raw("application/json", body.to_vec()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert_clean_error(&answer, code, &data);
    }
    let (_, answer) = post_raw(
        "application/json",
        b"[{\"event\":\"a.b\",\"actor\":\"\xc3\"}]".to_vec(),
    )
    .await;
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("not UTF-8 (invalid bytes at byte 25)"),
        "{answer}"
    );
    let long_actor =
        json!([{"event": "a.b", "actor": "ok"}, {"event": "a.b", "actor": "x".repeat(300)}]);
    let (status, answer) = post_json(&client, &events_url, &admin, long_actor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_clean_error(&answer, "invalid_event", &data);
    assert!(
        answer["detail"].as_str().unwrap().contains("index 1"),
        "{answer}"
    );
    let big_context =
        json!({"event": "a.b", "actor": "x", "context": {"blob": "x".repeat(70_000)}});
    let (status, answer) = post_json(&client, &events_url, &admin, big_context).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_clean_error(&answer, "invalid_event", &data);
    // Wrong content types.
    for ctype in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let (status, answer) = post_raw(ctype, b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ctype}");
        assert_clean_error(&answer, "unsupported_media_type", &data);
    }
    // Oversized bodies, declared or streamed, and too many events.
    let huge = format!(
        "[{}]",
        vec![r#"{"event":"a.b","actor":"x"}"#; 60_000].join(",")
    );
    assert!(huge.len() > 1 << 20);
    let (status, answer) = post_raw("application/json", huge.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_clean_error(&answer, "body_too_large", &data);
    let chunked = format!(
        "POST /v1/workspaces/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut request = chunked.into_bytes();
    for _ in 0..20 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_request(server.addr, &request);
    assert_eq!(status, 413, "{body}");
    let many = format!(
        "[{}]",
        vec![r#"{"event":"a.b","actor":"x"}"#; 10_001].join(",")
    );
    let (status, answer) = post_raw("application/json", many.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_clean_error(&answer, "too_many_events", &data);

    // Path tricks in workspace names: each a clean JSON error, nothing created.
    for path in [
        "/v1/workspaces/%2e%2e/events",
        "/v1/workspaces/%2E%2E/keys",
        "/v1/workspaces/..%2f..%2fetc/events",
        "/v1/workspaces/acme%2f..%2f..%2fkeys.json/events",
        "/v1/workspaces/ACME/events",
        "/v1/workspaces/acme%00/events",
        "/v1/workspaces/-acme/events",
        "/v1/workspaces/%ff%fe/events",
        "/v1/workspaces/a.b/verify",
        &format!("/v1/workspaces/{}/events", "a".repeat(64)),
    ] {
        let (status, body) = raw_get(server.addr, path, Some(&admin));
        assert_eq!(status, 400, "{path}: {body}");
        let answer: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
        assert_clean_error(&answer, "invalid_workspace", &data);
        let (status, body) = raw_get(server.addr, path, None);
        assert_eq!(status, 401, "{path}: {body}");
    }
    for path in [
        "/v1/workspaces//events",
        "/v1/workspaces/../keys.json",
        "/../../etc/passwd",
        "/keys.json",
    ] {
        let (status, body) = raw_get(server.addr, path, Some(&admin));
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(
            body.starts_with('{') && !body.contains("\"format\""),
            "{path}: {body}"
        );
    }
    let mut entries: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["keys.json", "keys.lock", "server-log", "workspaces"]
    );
    let workspaces: Vec<_> = std::fs::read_dir(data.join("workspaces"))
        .unwrap()
        .collect();
    assert_eq!(workspaces.len(), 1);

    // A burst of bad keys from one address: each refused, at most 10
    // recorded one by one, the rest counted into one summary at shutdown.
    let burst = 200;
    let mut tasks = Vec::new();
    for i in 0..burst {
        let (client, url) = (client.clone(), events_url.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("clk_{:016x}_{}", i, "B".repeat(43));
            call(&client, Method::GET, &url, Some(&key), None).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // The server is still up and serving.
    let (status, page) = get(&client, &format!("{events_url}?limit=1000"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    let auth_failed = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "auth.failed")
        .count();
    assert!(
        auth_failed <= 10,
        "{auth_failed} auth.failed events recorded one by one"
    );

    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let acme = records(&data.join("workspaces/acme"));
    let individually: Vec<&Record> = acme
        .iter()
        .filter(|r| r.event.event_type == "auth.failed")
        .collect();
    let summaries: Vec<&Record> = acme
        .iter()
        .filter(|r| r.event.event_type == "auth.failed_summary")
        .collect();
    // 20 unauthenticated path-trick requests came first in this minute, into the server log.
    assert_eq!(
        individually.len(),
        0,
        "the path-trick requests used up this address's 10"
    );
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].event.context["failures"], burst);
    assert_eq!(
        summaries[0].event.source_ip,
        Some("127.0.0.1".parse().unwrap())
    );
    let good_seqs: Vec<u64> = acme
        .iter()
        .filter(|r| r.event.event_type == "pcap.download")
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        good_seqs,
        (1..=50).collect::<Vec<_>>(),
        "nothing appended was lost"
    );
    assert_eq!(
        acme.iter().filter(|r| r.event.event_type == "a.b").count(),
        0,
        "no refused event was stored"
    );
    for dir in [data.join("workspaces/acme"), data.join("server-log")] {
        let report = verify_dir(&FsStorage, &dir, &mut |_| {}).unwrap();
        assert!(report.is_intact(), "{dir:?}: {:?}", report.problems);
    }
    let server_log = records(&data.join("server-log"));
    // The admin key's path tricks are security events: each recorded on
    // its own, with the key's id, outside the address's budget.
    let denied: Vec<&Record> = server_log
        .iter()
        .filter(|r| r.event.event_type == "access.denied")
        .collect();
    assert!(denied
        .iter()
        .all(|r| r.event.context["key_id"] == key_id(&admin)));
    assert_eq!(
        denied
            .iter()
            .filter(|r| r.event.context["reason"] == "invalid_workspace_name")
            .count(),
        10 + 1,
        "the ten names above, and the empty one"
    );
    assert!(
        server_log.len() - denied.len() <= 10 + 2,
        "{} events in the server log",
        server_log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_appends_finish_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let url = format!("{}/v1/workspaces/acme/events", server.url);
    let acked = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, key, acked) = (client.clone(), url.clone(), key.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let batch: Vec<Value> = (0..20)
                    .map(|j| json!({"event": "pcap.download", "actor": format!("w{w}"), "context": {"i": i, "j": j}}))
                    .collect();
                let sent = client
                    .post(&url)
                    .header("Authorization", format!("Bearer {key}"))
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&batch).unwrap())
                    .send()
                    .await;
                // Refused or cut off once the server stops.
                let Ok(response) = sent else { break };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(text) = response.text().await else { break };
                let Ok(body) = serde_json::from_str::<Value>(&text) else { break };
                acked.lock().unwrap().extend(seqs(&body["receipts"]));
            }
        }));
    }
    // Stop while the writers are busy: once a few batches were acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 8 * 20 * 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no appends acknowledged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, stderr) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeSet<u64> = records(&data.join("workspaces/acme"))
        .iter()
        .map(|r| r.seq)
        .collect();
    for seq in &acked {
        assert!(stored.contains(seq), "acknowledged seq {seq} is missing");
    }
    let report = verify_dir(&FsStorage, &data.join("workspaces/acme"), &mut |_| {}).unwrap();
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "acme", "read");
    let secret = support::checkpoint_key(tmp.path());
    let public = tmp.path().join("cp.pub");

    let plain = TestServer::start(&data, &[]);
    let client = Client::new();
    let (status, body) = get(
        &client,
        &format!("{}/v1/workspaces/acme/checkpoint", plain.url),
        Some(&key),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_clean_error(&body, "checkpoints_not_configured", &data);
    plain.stop();

    let server = TestServer::start(&data, &["--checkpoint-key", secret.to_str().unwrap()]);
    let (status, body) = get(
        &client,
        &format!("{}/v1/workspaces/acme/checkpoint", server.url),
        Some(&key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let verifier = chainlog::hash::checkpoint::NoteVerifier::parse(
        std::fs::read_to_string(&public).unwrap().trim(),
    )
    .unwrap();
    let checkpoint =
        chainlog::hash::checkpoint::Checkpoint::open(body["note"].as_str().unwrap(), &verifier)
            .unwrap();
    assert_eq!(checkpoint.size, 1);
    assert_eq!(body["size"], 1);
    assert!(checkpoint.origin.starts_with("chainlog/"));
    server.stop();
    // The read was recorded after the checkpoint was signed.
    let stored = records(&data.join("workspaces/acme"));
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].event.event_type, "access.checkpoint");
    assert_eq!(stored[1].event.context["key_id"], key_id(&key));
    // The CLI verifies the log against it.
    let note = tmp.path().join("latest.checkpoint");
    std::fs::write(&note, body["note"].as_str().unwrap()).unwrap();
    let out = chainlog()
        .args(["verify", "--dir"])
        .arg(data.join("workspaces/acme"))
        .arg("--checkpoint")
        .arg(&note)
        .arg("--public-key")
        .arg(&public)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tmp = tempfile::tempdir().unwrap();
    let Some(TestCertificate { ca_cert, cert, key }) = test_certificate(tmp.path()) else {
        eprintln!(
            "NOTE: tls_serves_https skipped: the openssl command could not make a test certificate"
        );
        return;
    };
    let data = tmp.path().join("data");
    let server = TestServer::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.url.starts_with("https://"));
    let mut tls = support::tls_connect(server.addr, &ca_cert).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"{"status":"ok"}"#), "{text}");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_reported_not_exposed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "acme", "read");
    let dir = data.join("workspaces/acme");
    {
        let log = Log::open(&dir, Options::default()).unwrap();
        for i in 0..5 {
            let mut e = chainlog::Event::new(chainlog::Timestamp::now(), "node.added", "ops");
            e.context.insert("i".into(), i.into());
            log.append(&e).unwrap();
        }
        log.close().unwrap();
    }
    // Break seq 2's CRC: a bad frame followed by good ones is corruption,
    // which the log refuses to open (it never "repairs" by truncating).
    let segment = dir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut at = chainlog::format::segment::HEADER_BYTES as usize;
    loop {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) == 2 {
            bytes[at] ^= 0xff;
            break;
        }
        at += chainlog::format::frame::padded_len(len);
    }
    std::fs::write(&segment, &bytes).unwrap();

    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let base = format!("{}/v1/workspaces/acme", server.url);
    let (status, body) = get(&client, &format!("{base}/events"), Some(&key)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_clean_error(&body, "storage_error", &data);
    // The verifier still runs, and says where.
    let (status, report) = get(&client, &format!("{base}/verify"), Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["intact"], false);
    assert_eq!(report["problems"][0]["kind"], "frame_corrupt", "{report}");
    assert_eq!(report["problems"][0]["offset"], at);
    let (status, stderr) = server.stop();
    assert!(status.success());
    assert!(
        stderr.contains("corrupt"),
        "the cause is in the server's output: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out_with_a_clean_error() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &["--request-timeout", "1"]);
    // Headers, then only part of the promised body, then nothing.
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /v1/workspaces/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event\""
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(r#""error":"timeout""#), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The server carries on.
    let (status, _) = raw_get(server.addr, "/healthz", None);
    assert_eq!(status, 200);
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

/// A workspace log made with small segments (`chainlog init
/// --segment-bytes`) keeps them when the server appends to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_keeps_its_segment_size() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("workspaces/acme");
    let small = small_segment_workspace(&data, "acme");
    let key = create_key(&data, "acme", "append");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let url = format!("{}/v1/workspaces/acme/events", server.url);
    // About 300 KiB of events: more than two small segments.
    for i in 0..10 {
        let batch: Vec<Value> = (0..100)
            .map(|j| json!({"event": "pcap.download", "actor": "alice", "context": {"i": i, "j": j, "pad": "x".repeat(200)}}))
            .collect();
        let (status, body) = post_json(&client, &url, &key, json!(batch)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, stderr) = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(status.success(), "{stderr}");
    let segments: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            chainlog::format::segment::parse_file_name(e.file_name().to_str()?)
                .map(|_| e.metadata().unwrap().len())
        })
        .collect();
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(segments.iter().all(|&len| len == small), "{segments:?}");
    assert_eq!(Log::newest_segment_bytes(&dir).unwrap(), Some(small));
    assert_eq!(
        Log::newest_segment_bytes(tmp.path().join("none")).unwrap(),
        None
    );
}

/// `order=time` pages by event time (ties by seq) across pages, a late
/// event in its place, with a cursor that is a string and `through` the
/// records the page was read from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_in_event_time_order() {
    let (_tmp, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &[]);
    let client = Client::new();
    let events_url = format!("{}/v1/workspaces/acme/events", server.url);
    let mut fixture = events_fixture();
    // Late and early arrivals: seq 41 is dated between seqs 16 and 17, seq 42
    // at the same second as seq 4.
    fixture.push(
        json!({"timestamp": "2026-03-09T09:00:15.5Z", "event": "node.added", "actor": "late-bot"}),
    );
    fixture.push(
        json!({"timestamp": "2026-03-09T09:00:03Z", "event": "node.added", "actor": "late-bot"}),
    );
    let (status, body) = post_json(&client, &events_url, &admin, json!(fixture)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut by_time: Vec<(chainlog::Timestamp, u64)> = fixture
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let t = chainlog::Timestamp::parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
            (t, i as u64 + 1)
        })
        .collect();
    by_time.sort();
    let oldest_first: Vec<u64> = by_time.iter().map(|&(_, seq)| seq).collect();
    let newest_first: Vec<u64> = oldest_first.iter().rev().copied().collect();
    let period = "since=2026-03-09T00:00:00Z&until=2026-03-10T00:00:00Z";
    for (reverse, expected) in [("true", &newest_first), ("false", &oldest_first)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{events_url}?order=time&reverse={reverse}&limit=6&{period}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = get(&client, &url, Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(page["through"].as_u64().unwrap() >= 43, "{page}");
            seen.extend(seqs(&page["events"]));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => {
                    assert_eq!(page["next_cursor"], Value::Null, "{page}");
                    break;
                }
            }
        }
        assert_eq!(&seen, expected, "reverse={reverse}");
    }
    let (status, body) = get(
        &client,
        &format!("{events_url}?order=time&cursor=42"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_clean_error(&body, "invalid_parameter", &data);
}
