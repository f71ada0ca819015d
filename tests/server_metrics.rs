//! `GET /metrics` of `chainlog serve --metrics-listen`: read with the
//! Prometheus project's own Python parser (prometheus_client, pinned in
//! tests/openapi/requirements.txt, installed into .venv-tests by
//! scripts/python-tools.sh), and its figures move as the requests made
//! between two scrapes say they must.
#![cfg(feature = "server")]

#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

#[path = "support/server.rs"]
mod support;
#[path = "support/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{data_with_admin, raw_get, raw_request, TestServer};

const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/prom_parse.py");

/// The venv's python with prometheus_client, installing it if needed; None
/// (after a loud note) when that fails and it is not required
/// (CHAINLOG_REQUIRE_OPENAPI, which scripts/test.sh sets, requires it).
fn parser_python() -> Option<PathBuf> {
    tools::venv_python("CHAINLOG_REQUIRE_OPENAPI", "prometheus_client")
}

/// One scrape as the parser read it: (sample name, sorted labels) → value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn parse(python: &Path, text: &str) -> Result<(Samples, BTreeMap<String, String>), String> {
    let out = output_with_stdin(Command::new(python).arg(PARSER), text.as_bytes());
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let family: Value = serde_json::from_str(line).unwrap();
        types.insert(
            family["family"].as_str().unwrap().to_string(),
            family["type"].as_str().unwrap().to_string(),
        );
        for s in family["samples"].as_array().unwrap() {
            let mut labels: Vec<(String, String)> = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            labels.sort();
            let name = s["name"].as_str().unwrap().to_string();
            let previous = samples.insert((name.clone(), labels), s["value"].as_f64().unwrap());
            assert!(
                previous.is_none(),
                "{name} appears twice with the same labels"
            );
        }
    }
    Ok((samples, types))
}

/// The labels of `chainlog_http_requests_total` for answers of `status` to
/// `method` on the events route.
fn events_route<'a>(method: &'a str, status: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("route", "/v1/workspaces/{w}/events"),
        ("method", method),
        ("status", status),
    ]
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples
        .get(&(name.to_string(), labels.clone()))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

fn post(addr: std::net::SocketAddr, key: &str, body: &str) -> u16 {
    raw_request(
        addr,
        format!(
            "POST /v1/workspaces/acme/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .0
}

#[test]
fn metrics_move_as_the_requests_say() {
    let Some(python) = parser_python() else {
        return;
    };
    // The parser can fail: text it must reject is rejected.
    for bad in [
        "# TYPE x counter\nx{a=\"1\" 1\n",
        "# TYPE x counter\nx_total one\n",
        "# HELP x a\n# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n",
        "# HELP x a\n# TYPE x counter\nx_total 1\n",
    ] {
        assert!(parse(&python, bad).is_err(), "accepted {bad:?}");
    }

    let (_dir, data, admin) = data_with_admin("acme");
    let server = TestServer::start(&data, &["--metrics-listen", "127.0.0.1:0"]);
    let event = r#"{"event":"pcap.download","actor":"alice@acme.io"}"#;
    assert_eq!(post(server.addr, &admin, event), 201);

    let (before, types) = parse(&python, &server.scrape()).unwrap();
    for (family, kind) in [
        ("chainlog_http_requests", "counter"),
        ("chainlog_refusals", "counter"),
        ("chainlog_records_appended", "counter"),
        ("chainlog_fdatasync_seconds", "histogram"),
        ("chainlog_commit_queue_depth", "gauge"),
        ("chainlog_connections_open", "gauge"),
        ("chainlog_workspace_records", "gauge"),
        ("chainlog_workspace_bytes", "gauge"),
        ("chainlog_workspaces_open", "gauge"),
        ("chainlog_slots_refused", "counter"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let acme = [("workspace", "acme")];
    assert_eq!(value(&before, "chainlog_workspaces_open", &[]), 1.0);
    assert_eq!(value(&before, "chainlog_commit_queue_depth", &acme), 0.0);
    assert_eq!(value(&before, "chainlog_workspace_records", &acme), 2.0);
    assert!(value(&before, "chainlog_workspace_bytes", &acme) > 0.0);
    let posted = events_route("POST", "201");
    assert_eq!(value(&before, "chainlog_http_requests_total", &posted), 1.0);

    // Seven events in one request: +7 records, one more fdatasync at least.
    let seven = [event; 7].join("\n");
    assert_eq!(post(server.addr, &admin, &seven), 201);
    let (after, _) = parse(&python, &server.scrape()).unwrap();
    let delta =
        |name, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(delta("chainlog_records_appended_total", &[]), 7.0);
    assert_eq!(delta("chainlog_workspace_records", &acme), 7.0);
    assert_eq!(delta("chainlog_http_requests_total", &posted), 1.0);
    assert!(delta("chainlog_fdatasync_seconds_count", &[]) >= 1.0);
    assert!(delta("chainlog_fdatasync_seconds_sum", &[]) > 0.0);
    assert!(delta("chainlog_record_bytes_appended_total", &[]) > 7.0 * 40.0);
    let count = value(&after, "chainlog_fdatasync_seconds_count", &[]);
    assert_eq!(
        value(
            &after,
            "chainlog_fdatasync_seconds_bucket",
            &[("le", "+Inf")]
        ),
        count
    );

    // A request without a key: a refusal, a 401, and its record.
    let (status, _) = raw_get(server.addr, "/v1/workspaces/acme/events", None);
    assert_eq!(status, 401);
    // Answers given before the routes (two keys: 400) are counted too.
    let (status, _) = raw_request(
        server.addr,
        b"GET /v1/workspaces/acme/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    let (refused, _) = parse(&python, &server.scrape()).unwrap();
    let duplicate = events_route("GET", "400");
    assert_eq!(
        value(&refused, "chainlog_http_requests_total", &duplicate),
        1.0
    );
    let missing = [("event", "auth.failed"), ("reason", "missing_key")];
    assert_eq!(value(&refused, "chainlog_refusals_total", &missing), 1.0);
    let unauthorized = events_route("GET", "401");
    assert_eq!(
        value(&refused, "chainlog_http_requests_total", &unauthorized),
        1.0
    );
    assert_eq!(
        value(&refused, "chainlog_records_appended_total", &[])
            - value(&after, "chainlog_records_appended_total", &[]),
        1.0,
        "the refusal's record"
    );

    // A connection held open shows; /metrics is not served on the API's
    // listener, and the metrics listener serves nothing else.
    let held = std::net::TcpStream::connect(server.addr).unwrap();
    let (status, _) = raw_get(server.addr, "/healthz", None);
    assert_eq!(status, 200);
    let (open, _) = parse(&python, &server.scrape()).unwrap();
    assert!(value(&open, "chainlog_connections_open", &[]) >= 1.0);
    drop(held);
    assert_eq!(raw_get(server.addr, "/metrics", None).0, 404);
    assert_eq!(raw_get(server.metrics_addr(), "/v1/key", None).0, 404);

    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}
