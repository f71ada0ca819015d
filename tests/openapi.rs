//! docs/openapi.yaml against the real server: the document is checked with
//! openapi-spec-validator, then `chainlog serve` is driven through every
//! route with the main success and error answers, and each recorded request
//! and response is validated against the document with openapi-core (by
//! tests/openapi/check.py). Every documented operation must be exercised.
//! Last, deliberately broken copies of the document must fail the check, so
//! the check is known to be able to fail.
//!
//! The validators are Python packages, installed with pinned versions into
//! `.venv-tests` by scripts/python-tools.sh (the test runs it when they are
//! missing). If they cannot be installed the test is skipped with a loud
//! note, unless CHAINLOG_REQUIRE_OPENAPI is set (scripts/test.sh sets it), in
//! which case it fails. CHAINLOG_OPENAPI_EXCHANGES=FILE keeps the recorded
//! exchanges, to run `tests/openapi/check.py docs/openapi.yaml FILE` by hand.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;
#[path = "support/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use chainlog::{Log, Options};
use reqwest::{Client, Method};
use serde_json::{json, Map, Value};
use support::{checkpoint_key, create_key, key_id, small_segment_workspace, TestServer};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi/check.py");

/// SIEM destinations: list, add, replace, show, remove, and refusals.
async fn delivery_cases(r: &mut Recorder, ws: &str, admin: &str, read: &str) {
    use Expect::*;
    let list = format!("{ws}/deliveries");
    let one = format!("{list}/siem");
    expect_status(
        r.send(Call::new("list deliveries", Valid, Method::GET, &list).key(admin))
            .await,
        200,
        "list deliveries",
    );
    let hook =
        json!({"kind": "webhook", "url": "https://siem.example/hook", "filters": "event=auth.*"});
    let added = expect_status(
        r.send(
            Call::new("add a webhook", Valid, Method::PUT, &one)
                .key(admin)
                .json(hook),
        )
        .await,
        201,
        "add a webhook",
    );
    assert_eq!(added["secret"].as_str().map(str::len), Some(64), "{added}");
    let hec = json!({"kind": "splunk_hec", "url": "https://splunk.example:8088", "token": "t0k3n", "index": "audit"});
    expect_status(
        r.send(
            Call::new("add a HEC", Valid, Method::PUT, format!("{list}/splunk"))
                .key(admin)
                .json(hec),
        )
        .await,
        201,
        "add a HEC",
    );
    let changed = json!({"kind": "webhook", "url": "https://siem.example/v2", "batch_events": 500});
    expect_status(
        r.send(
            Call::new("replace a webhook", Valid, Method::PUT, &one)
                .key(admin)
                .json(changed),
        )
        .await,
        200,
        "replace a webhook",
    );
    expect_status(
        r.send(Call::new("list deliveries, two", Valid, Method::GET, &list).key(admin))
            .await,
        200,
        "list two deliveries",
    );
    expect_status(
        r.send(Call::new("show a delivery", Valid, Method::GET, &one).key(admin))
            .await,
        200,
        "show a delivery",
    );
    expect_status(
        r.send(Call::new("deliveries, read key", Valid, Method::GET, &list).key(read))
            .await,
        403,
        "deliveries with a read key",
    );
    let plain = json!({"kind": "webhook", "url": "http://siem.example/hook"});
    expect_status(
        r.send(
            Call::new("plain http off loopback", Valid, Method::PUT, &one)
                .key(admin)
                .json(plain),
        )
        .await,
        400,
        "plain http off loopback",
    );
    let unknown = json!({"kind": "webhook", "url": "https://x.example", "colour": "red"});
    expect_status(
        r.send(
            Call::new("unknown delivery field", RequestInvalid, Method::PUT, &one)
                .key(admin)
                .json(unknown),
        )
        .await,
        400,
        "unknown delivery field",
    );
    for name in ["siem", "splunk"] {
        expect_status(
            r.send(
                Call::new(
                    "remove a delivery",
                    Valid,
                    Method::DELETE,
                    format!("{list}/{name}"),
                )
                .key(admin),
            )
            .await,
            200,
            "remove a delivery",
        );
    }
    expect_status(
        r.send(Call::new("show a removed delivery", Valid, Method::GET, &one).key(admin))
            .await,
        404,
        "show a removed delivery",
    );
}

/// The venv's python with the validators (see [`tools::venv_python`]).
fn validator_python() -> Option<PathBuf> {
    tools::venv_python(
        "CHAINLOG_REQUIRE_OPENAPI",
        "the OpenAPI validators (openapi-core, openapi-spec-validator)",
    )
}

/// Runs check.py on `doc` (and the exchanges, if given); its exit status
/// and output.
fn run_check(python: &Path, doc: &Path, exchanges: Option<&Path>) -> (bool, String) {
    let mut command = Command::new(python);
    command.arg(CHECK).arg(doc);
    if let Some(path) = exchanges {
        command.arg(path);
    }
    let out = command.output().expect("run tests/openapi/check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Percent-encodes a query component (all but the unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the document should say about a request (see check.py).
#[derive(Clone, Copy)]
enum Expect {
    /// The request conforms, and so does the answer.
    Valid,
    /// The document refuses the request; the answer is a documented one.
    RequestInvalid,
    /// No documented path.
    NoPath,
    /// A documented path without this method.
    NoMethod,
}

/// One request to make and record.
struct Call<'a> {
    name: &'a str,
    expect: Expect,
    method: Method,
    path: String,
    query: Vec<(&'a str, String)>,
    key: Option<&'a str>,
    authorization: Option<String>,
    headers: Vec<(&'a str, String)>,
    body: Option<(&'a str, String)>,
}

impl<'a> Call<'a> {
    fn new(name: &'a str, expect: Expect, method: Method, path: impl Into<String>) -> Self {
        Call {
            name,
            expect,
            method,
            path: path.into(),
            query: Vec::new(),
            key: None,
            authorization: None,
            headers: Vec::new(),
            body: None,
        }
    }

    fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    fn authorization(mut self, value: &str) -> Self {
        self.authorization = Some(value.to_string());
        self
    }

    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn query(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &'a str, body: impl Into<String>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }

    fn json(self, body: Value) -> Self {
        self.body("application/json", body.to_string())
    }
}

/// Makes requests against one server and records each exchange.
struct Recorder {
    client: Client,
    base_url: String,
    exchanges: Vec<Value>,
}

impl Recorder {
    /// Sends `call`, records it, and returns the status and parsed body
    /// (a JSON string when the body is not JSON).
    async fn send(&mut self, call: Call<'_>) -> (u16, Value) {
        let mut url = format!("{}{}", self.base_url, call.path);
        if !call.query.is_empty() {
            let pairs: Vec<String> = call
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            url = format!("{url}?{}", pairs.join("&"));
        }
        let mut headers = Map::new();
        let mut request = self.client.request(call.method.clone(), &url);
        let authorization = call
            .authorization
            .clone()
            .or_else(|| call.key.map(|k| format!("Bearer {k}")));
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
            headers.insert("Authorization".into(), value.clone().into());
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
            headers.insert((*name).into(), value.clone().into());
        }
        if let Some((content_type, body)) = &call.body {
            if !content_type.is_empty() {
                request = request.header("Content-Type", *content_type);
                headers.insert("Content-Type".into(), (*content_type).into());
            }
            request = request.body(body.clone());
        }
        let response = request.send().await.expect("send a request");
        let status = response.status().as_u16();
        let mut response_headers = Map::new();
        for (name, value) in response.headers() {
            let value = value.to_str().unwrap_or_default().to_string();
            let entry = response_headers
                .entry(name.as_str().to_string())
                .or_insert_with(|| Value::String(String::new()));
            let joined = match entry.as_str() {
                Some("") => value,
                Some(earlier) => format!("{earlier}, {value}"),
                None => value,
            };
            *entry = Value::String(joined);
        }
        let text = response.text().await.expect("read a response body");
        self.exchanges.push(json!({
            "name": call.name,
            "base_url": self.base_url,
            "expect": match call.expect {
                Expect::Valid => "valid",
                Expect::RequestInvalid => "request_invalid",
                Expect::NoPath => "no_path",
                Expect::NoMethod => "no_method",
            },
            "method": call.method.as_str(),
            "path": call.path,
            "query": call.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "headers": headers,
            "body": call.body.as_ref().map(|(_, b)| b.clone()),
            "status": status,
            "response_headers": response_headers,
            "response_body": text,
        }));
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

impl Recorder {
    /// Opens a live tail (`GET …/events/stream?cursor=0`) with `key` and
    /// records it with its body cut after the first event: the stream
    /// itself does not end.
    async fn send_stream(&mut self, name: &str, path: &str, key: &str) -> (u16, String) {
        let url = format!("{}{path}?cursor=0", self.base_url);
        let mut response = self
            .client
            .get(&url)
            .header("Authorization", format!("Bearer {key}"))
            .send()
            .await
            .expect("open a stream");
        let status = response.status().as_u16();
        let mut response_headers = Map::new();
        for (name, value) in response.headers() {
            let value = value.to_str().unwrap_or_default().to_string();
            response_headers.insert(name.as_str().to_string(), value.into());
        }
        let mut text = String::new();
        while !(text.contains("data: ") && text.ends_with("\n\n")) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), response.chunk())
                .await
                .expect("a first event within 30 s")
                .expect("read the stream");
            let Some(chunk) = chunk else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(response);
        self.exchanges.push(json!({
            "name": name,
            "base_url": self.base_url,
            "expect": "valid",
            "method": "GET",
            "path": path,
            "query": [["cursor", "0"]],
            "headers": {"Authorization": format!("Bearer {key}")},
            "body": null,
            "status": status,
            "response_headers": response_headers,
            "response_body": text,
        }));
        (status, text)
    }
}

/// Asserts the status (the document check then judges the body).
fn expect_status(got: (u16, Value), want: u16, what: &str) -> Value {
    assert_eq!(got.0, want, "{what}: {}", got.1);
    got.1
}

/// A key for `scope`, created through the API with an admin key.
async fn issue_key(r: &mut Recorder, ws: &str, admin: &str, scope: &str) -> String {
    let call = Call::new(
        "create a key",
        Expect::Valid,
        Method::POST,
        format!("{ws}/keys"),
    )
    .key(admin)
    .json(json!({ "scope": scope }));
    let issued = expect_status(r.send(call).await, 201, "create a key");
    issued["key"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_as_docs_openapi_yaml_says() {
    let Some(python) = validator_python() else {
        return;
    };
    let (ok, text) = run_check(&python, Path::new(DOC), None);
    assert!(
        ok,
        "docs/openapi.yaml is not a valid OpenAPI document:\n{text}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Small segments: a log of the default 64 MiB is preallocated, which
    // takes seconds on a slow disk.
    for workspace in ["acme", "globex", "empty", "busy"] {
        small_segment_workspace(&data, workspace);
    }
    let admin = create_key(&data, "acme", "admin");
    let globex = create_key(&data, "globex", "read");
    // A key whose workspace has no log, and one whose log another process
    // holds.
    let empty_append = create_key(&data, "empty", "append");
    let empty_read = create_key(&data, "empty", "read");
    std::fs::remove_dir_all(data.join("workspaces/empty")).unwrap();
    let busy = create_key(&data, "busy", "read");
    let _holder = Log::open(data.join("workspaces/busy"), Options::default()).unwrap();

    let secret = checkpoint_key(tmp.path());
    let server = TestServer::start(&data, &["--checkpoint-key", secret.to_str().unwrap()]);
    let mut r = Recorder {
        client: Client::new(),
        base_url: server.url.clone(),
        exchanges: Vec::new(),
    };
    let ws = "/v1/workspaces/acme";
    let events = format!("{ws}/events");
    use Expect::*;

    // acme's other keys come from the API itself.
    let append = issue_key(&mut r, ws, &admin, "append").await;
    let read = issue_key(&mut r, ws, &admin, "read").await;

    // --- The server's own routes.
    expect_status(
        r.send(Call::new("dashboard", Valid, Method::GET, "/"))
            .await,
        200,
        "dashboard",
    );
    expect_status(
        r.send(Call::new("health", Valid, Method::GET, "/healthz"))
            .await,
        200,
        "healthz",
    );
    for key in [&admin, &append, &read] {
        expect_status(
            r.send(Call::new("whoami", Valid, Method::GET, "/v1/key").key(key))
                .await,
            200,
            "whoami",
        );
    }
    let server_log = "/v1/server-log/events";
    expect_status(
        r.send(
            Call::new("server log", Valid, Method::GET, server_log)
                .key(&admin)
                .query("reverse", "true")
                .query("limit", "5"),
        )
        .await,
        200,
        "server log",
    );
    expect_status(
        r.send(Call::new("server log, read key", Valid, Method::GET, server_log).key(&read))
            .await,
        403,
        "server log, read key",
    );
    expect_status(
        r.send(Call::new(
            "server log, no key",
            RequestInvalid,
            Method::GET,
            server_log,
        ))
        .await,
        401,
        "server log, no key",
    );

    // --- Appending, in each body form.
    let one = json!({"event": "pcap.download", "actor": "alice@acme.io", "node": "nyc-edge-01",
        "resource": "a3f7c2b1", "ip": "203.0.113.42", "context": {"sha256": "ab", "bytes": 18231}});
    expect_status(
        r.send(
            Call::new("append one object", Valid, Method::POST, &events)
                .key(&append)
                .json(one),
        )
        .await,
        201,
        "append one",
    );
    let mut batch = Vec::new();
    let types = ["incident.opened", "auth.login_failed", "pcap.delete"];
    let actors = ["alice@acme.io", "bob@acme.io", "system"];
    for i in 0..12 {
        batch.push(json!({
            "timestamp": format!("2026-03-09T09:{i:02}:14.25+01:00"),
            "event": types[i % 3],
            "actor": actors[i % 3],
            "node": if i % 2 == 0 { json!("nyc-edge-02") } else { Value::Null },
            "ip": if i % 3 == 2 { Value::Null } else { json!("2001:db8::7") },
            "outcome": if i % 3 == 1 { "failure" } else { "success" },
            "context": {"i": i},
        }));
    }
    let (_, receipts) = r
        .send(
            Call::new("append an array", Valid, Method::POST, &events)
                .key(&admin)
                .json(json!(batch)),
        )
        .await;
    assert_eq!(
        receipts["receipts"].as_array().map(Vec::len),
        Some(12),
        "{receipts}"
    );
    let ndjson = "{\"event\":\"node.added\",\"actor\":\"deploy-bot\",\"node\":\"fra-edge-09\"}\r\n\n\
                  {\"event\":\"apikey.rotated\",\"actor\":\"alice@acme.io\",\"outcome\":\"success\"}\n";
    expect_status(
        r.send(
            Call::new("append JSON Lines", Valid, Method::POST, &events)
                .key(&append)
                .body("application/x-ndjson", ndjson),
        )
        .await,
        201,
        "append ndjson",
    );
    expect_status(
        r.send(
            Call::new(
                "append, media type with parameters",
                Valid,
                Method::POST,
                &events,
            )
            .key(&append)
            .body(
                "application/json; charset=utf-8",
                r#"[{"event":"config.changed","actor":"alice@acme.io"}]"#,
            ),
        )
        .await,
        201,
        "append with charset",
    );

    // --- Retrying under an Idempotency-Key: the first answer, its replay,
    // and the key with another body.
    let retried = r#"{"event":"config.changed","actor":"alice@acme.io","context":{"try":1}}"#;
    for (name, want) in [
        ("append with an Idempotency-Key", 201),
        ("its retry, replayed", 201),
    ] {
        expect_status(
            r.send(
                Call::new(name, Valid, Method::POST, &events)
                    .key(&append)
                    .header("Idempotency-Key", "openapi-retry-1")
                    .body("application/json", retried),
            )
            .await,
            want,
            name,
        );
    }
    expect_status(
        r.send(
            Call::new(
                "an Idempotency-Key with another body",
                Valid,
                Method::POST,
                &events,
            )
            .key(&append)
            .header("Idempotency-Key", "openapi-retry-1")
            .body(
                "application/json",
                r#"{"event":"config.changed","actor":"bob@acme.io"}"#,
            ),
        )
        .await,
        422,
        "idempotency key reused",
    );

    // --- Refused appends.
    let bad_appends: [(&str, Expect, &str, &str, u16); 9] = [
        (
            "not JSON",
            RequestInvalid,
            "application/json",
            "{\"event\":",
            400,
        ),
        (
            "unknown field",
            RequestInvalid,
            "application/json",
            r#"{"event":"a.b","actor":"x","bogus":1}"#,
            400,
        ),
        (
            "missing actor, at index 1",
            RequestInvalid,
            "application/json",
            r#"[{"event":"a.b","actor":"x"},{"event":"a.b"}]"#,
            400,
        ),
        (
            "bad event type",
            RequestInvalid,
            "application/json",
            r#"{"event":"NoDot","actor":"x"}"#,
            400,
        ),
        ("empty array", RequestInvalid, "application/json", "[]", 400),
        ("a number", RequestInvalid, "application/json", "42", 400),
        (
            "bad NDJSON line",
            RequestInvalid,
            "application/x-ndjson",
            "{\"event\":\"a.b\",\"actor\":\"x\"}\n{\"event\":\"a.b\"}\n",
            400,
        ),
        (
            "text/plain",
            RequestInvalid,
            "text/plain",
            r#"{"event":"a.b","actor":"x"}"#,
            415,
        ),
        (
            "no content type",
            RequestInvalid,
            "",
            r#"{"event":"a.b","actor":"x"}"#,
            415,
        ),
    ];
    for (name, expect, content_type, body, status) in bad_appends {
        let got = r
            .send(
                Call::new(name, expect, Method::POST, &events)
                    .key(&append)
                    .body(content_type, body),
            )
            .await;
        expect_status(got, status, name);
    }
    let too_many: Vec<String> = (0..10_001)
        .map(|_| r#"{"event":"a.b","actor":"x"}"#.to_string())
        .collect();
    expect_status(
        r.send(
            Call::new("10,001 events", Valid, Method::POST, &events)
                .key(&append)
                .body("application/x-ndjson", too_many.join("\n")),
        )
        .await,
        413,
        "too many events",
    );
    expect_status(
        r.send(
            Call::new("a read key appends", Valid, Method::POST, &events)
                .key(&read)
                .json(json!({"event": "a.b", "actor": "x"})),
        )
        .await,
        403,
        "read key appends",
    );
    expect_status(
        r.send(
            Call::new(
                "append without a log",
                Valid,
                Method::POST,
                "/v1/workspaces/empty/events",
            )
            .key(&empty_append)
            .json(json!({"event": "a.b", "actor": "x"})),
        )
        .await,
        404,
        "append to a workspace with no log",
    );

    // --- Reading: pages, filters, one event.
    let page = expect_status(
        r.send(
            Call::new("first page", Valid, Method::GET, &events)
                .key(&read)
                .query("limit", "5"),
        )
        .await,
        200,
        "first page",
    );
    let cursor = page["next_cursor"].as_u64().expect("a next page");
    let page = expect_status(
        r.send(
            Call::new("next page", Valid, Method::GET, &events)
                .key(&read)
                .query("limit", "5")
                .query("cursor", cursor.to_string()),
        )
        .await,
        200,
        "next page",
    );
    assert_eq!(page["count"], 5, "{page}");
    let page = expect_status(
        r.send(
            Call::new("first page by event time", Valid, Method::GET, &events)
                .key(&read)
                .query("order", "time")
                .query("reverse", "true")
                .query("limit", "5"),
        )
        .await,
        200,
        "first page by event time",
    );
    let cursor = page["next_cursor"].as_str().expect("a next page by time");
    expect_status(
        r.send(
            Call::new("next page by event time", Valid, Method::GET, &events)
                .key(&read)
                .query("order", "time")
                .query("reverse", "true")
                .query("limit", "5")
                .query("cursor", cursor),
        )
        .await,
        200,
        "next page by event time",
    );
    let filtered = expect_status(
        r.send(
            Call::new("filters", Valid, Method::GET, &events)
                .key(&admin)
                .query("actor", "alice@acme.io")
                .query("actor", "bob@acme.io")
                .query("event", "pcap.*")
                .query("event", "auth.login_failed")
                .query("since", "2026-01-01T00:00:00Z")
                .query("until", "1h")
                .query("reverse", "true"),
        )
        .await,
        200,
        "filters",
    );
    assert!(filtered["count"].as_u64().unwrap() > 0, "{filtered}");
    assert_eq!(filtered["next_cursor"], Value::Null);
    expect_status(
        r.send(
            Call::new("more filters", Valid, Method::GET, &events)
                .key(&read)
                .query("node", "nyc-edge-02")
                .query("resource", "a3f7c2b1")
                .query("ip", "2001:db8::/32")
                .query("ip", "203.0.113.0/24")
                .query("outcome", "failure")
                .query("reverse", "false"),
        )
        .await,
        200,
        "more filters",
    );
    for (name, expect, pair) in [
        ("limit 0", RequestInvalid, ("limit", "0")),
        ("limit 1001", RequestInvalid, ("limit", "1001")),
        ("bad outcome", RequestInvalid, ("outcome", "maybe")),
        ("bad cursor", RequestInvalid, ("cursor", "-1")),
        ("unknown order", RequestInvalid, ("order", "arrival")),
        ("bad event pattern", RequestInvalid, ("event", "Bad")),
        ("unknown parameter", Valid, ("nope", "1")),
        ("bad since", Valid, ("since", "yesterday")),
    ] {
        let got = r
            .send(
                Call::new(name, expect, Method::GET, &events)
                    .key(&read)
                    .query(pair.0, pair.1),
            )
            .await;
        expect_status(got, 400, name);
    }
    expect_status(
        r.send(Call::new("read an event", Valid, Method::GET, format!("{events}/1")).key(&read))
            .await,
        200,
        "one event",
    );
    expect_status(
        r.send(
            Call::new(
                "no such event",
                Valid,
                Method::GET,
                format!("{events}/999999"),
            )
            .key(&read),
        )
        .await,
        404,
        "no such event",
    );
    expect_status(
        r.send(
            Call::new(
                "seq not a number",
                RequestInvalid,
                Method::GET,
                format!("{events}/x"),
            )
            .key(&read),
        )
        .await,
        400,
        "seq not a number",
    );
    expect_status(
        r.send(
            Call::new(
                "read without a log",
                Valid,
                Method::GET,
                "/v1/workspaces/empty/events",
            )
            .key(&empty_read),
        )
        .await,
        404,
        "read a workspace with no log",
    );
    expect_status(
        r.send(
            Call::new(
                "log held elsewhere",
                Valid,
                Method::GET,
                "/v1/workspaces/busy/events",
            )
            .key(&busy),
        )
        .await,
        503,
        "busy workspace",
    );

    // --- Exports.
    for format in ["csv", "json", "jsonl"] {
        let (status, body) = r
            .send(
                Call::new("export", Valid, Method::GET, format!("{ws}/export"))
                    .key(&read)
                    .query("format", format)
                    .query("event", "pcap.*")
                    .query("reverse", "true"),
            )
            .await;
        assert_eq!(status, 200, "{format}: {body}");
    }
    expect_status(
        r.send(
            Call::new(
                "export with a limit",
                Valid,
                Method::GET,
                format!("{ws}/export"),
            )
            .key(&read)
            .query("format", "jsonl")
            .query("limit", "3")
            .query("cursor", "2"),
        )
        .await,
        200,
        "export with a limit",
    );
    expect_status(
        r.send(
            Call::new(
                "export without format",
                RequestInvalid,
                Method::GET,
                format!("{ws}/export"),
            )
            .key(&read),
        )
        .await,
        400,
        "export without format",
    );
    expect_status(
        r.send(
            Call::new(
                "export as xml",
                RequestInvalid,
                Method::GET,
                format!("{ws}/export"),
            )
            .key(&read)
            .query("format", "xml"),
        )
        .await,
        400,
        "export as xml",
    );
    expect_status(
        r.send(
            Call::new(
                "export without a log",
                Valid,
                Method::GET,
                "/v1/workspaces/empty/export",
            )
            .key(&empty_read)
            .query("format", "csv"),
        )
        .await,
        404,
        "export a workspace with no log",
    );

    // --- Live tail.
    let (status, text) = r
        .send_stream("live tail", &format!("{ws}/events/stream"), &read)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("id: "), "{text}");
    expect_status(
        r.send(
            Call::new(
                "live tail with a bad cursor",
                RequestInvalid,
                Method::GET,
                format!("{ws}/events/stream"),
            )
            .key(&read)
            .query("cursor", "-1"),
        )
        .await,
        400,
        "live tail with a bad cursor",
    );
    expect_status(
        r.send(
            Call::new(
                "live tail without a log",
                Valid,
                Method::GET,
                "/v1/workspaces/empty/events/stream",
            )
            .key(&empty_read),
        )
        .await,
        404,
        "live tail of a workspace with no log",
    );

    // --- The dashboard's summary and inclusion proofs.
    let summary = format!("{ws}/events/summary");
    let got = expect_status(
        r.send(Call::new("summary", Valid, Method::GET, &summary).key(&read))
            .await,
        200,
        "summary",
    );
    assert!(got["total"].as_u64().unwrap() > 0, "{got}");
    let call = Call::new("summary per day, filtered", Valid, Method::GET, &summary)
        .key(&read)
        .query("bucket", "day")
        .query("outcome", "failure")
        .query("through", "3");
    expect_status(r.send(call).await, 200, "summary per day");
    let call = Call::new("summary of nothing", Valid, Method::GET, &summary)
        .key(&read)
        .query("actor", "nobody");
    let nothing = expect_status(r.send(call).await, 200, "summary of nothing");
    assert_eq!(nothing["total"], 0, "{nothing}");
    let call = Call::new("summary, bad bucket", RequestInvalid, Method::GET, &summary)
        .key(&read)
        .query("bucket", "week");
    expect_status(r.send(call).await, 400, "summary, bad bucket");
    let call = Call::new("summary, append key", Valid, Method::GET, &summary).key(&append);
    expect_status(r.send(call).await, 403, "summary with an append key");
    let proof = expect_status(
        r.send(Call::new("proof", Valid, Method::GET, format!("{ws}/events/1/proof")).key(&read))
            .await,
        200,
        "inclusion proof",
    );
    let proof: chainlog::query::proofs::InclusionProof = serde_json::from_value(proof).unwrap();
    assert!(proof.verify());
    for (name, expect, seq, status) in [
        ("proof past the end", Valid, "999999", 404),
        ("proof of no seq", RequestInvalid, "x", 400),
    ] {
        let call = Call::new(
            name,
            expect,
            Method::GET,
            format!("{ws}/events/{seq}/proof"),
        )
        .key(&read);
        expect_status(r.send(call).await, status, name);
    }

    // --- Verify and checkpoint.
    let report = expect_status(
        r.send(Call::new("verify", Valid, Method::GET, format!("{ws}/verify")).key(&read))
            .await,
        200,
        "verify",
    );
    assert_eq!(report["intact"], true, "{report}");
    expect_status(
        r.send(
            Call::new(
                "verify without a log",
                Valid,
                Method::GET,
                "/v1/workspaces/empty/verify",
            )
            .key(&empty_read),
        )
        .await,
        404,
        "verify a workspace with no log",
    );
    let signed = expect_status(
        r.send(Call::new("checkpoint", Valid, Method::GET, format!("{ws}/checkpoint")).key(&read))
            .await,
        200,
        "checkpoint",
    );
    // The newest witnessed checkpoint: none yet, then one as `serve
    // --witness` stores it (the log's signature stands in for cosignatures).
    let witnessed = format!("{ws}/checkpoint/witnessed");
    expect_status(
        r.send(Call::new("witnessed checkpoint, none", Valid, Method::GET, &witnessed).key(&read))
            .await,
        404,
        "no witnessed checkpoint",
    );
    std::fs::create_dir_all(data.join("witnessed")).unwrap();
    std::fs::write(
        data.join("witnessed/acme.checkpoint"),
        signed["note"].as_str().unwrap(),
    )
    .unwrap();
    let answer = expect_status(
        r.send(Call::new("witnessed checkpoint", Valid, Method::GET, &witnessed).key(&read))
            .await,
        200,
        "witnessed checkpoint",
    );
    assert_eq!(answer["note"], signed["note"]);
    assert_eq!(answer["size"], signed["size"]);
    expect_status(
        r.send(
            Call::new(
                "checkpoint, append key",
                Valid,
                Method::GET,
                format!("{ws}/checkpoint"),
            )
            .key(&append),
        )
        .await,
        403,
        "checkpoint with an append key",
    );

    // --- Evidence packs.
    let evidence = format!("{ws}/evidence");
    fn pack<'k>(name: &'static str, key: &'k str, path: &str) -> Call<'k> {
        Call::new(name, Valid, Method::GET, path)
            .key(key)
            .query("since", "2000-01-01T00:00:00Z")
            .query("sample", "4")
    }
    expect_status(
        r.send(pack("evidence", &admin, &evidence)).await,
        200,
        "evidence",
    );
    expect_status(
        r.send(pack("evidence, read key", &read, &evidence)).await,
        403,
        "evidence with a read key",
    );
    expect_status(
        r.send(
            Call::new(
                "evidence without since",
                RequestInvalid,
                Method::GET,
                evidence.clone(),
            )
            .key(&admin),
        )
        .await,
        400,
        "evidence without since",
    );
    expect_status(
        r.send(
            Call::new(
                "evidence, bad seed",
                RequestInvalid,
                Method::GET,
                evidence.clone(),
            )
            .key(&admin)
            .query("since", "1d")
            .query("seed", "x"),
        )
        .await,
        400,
        "evidence with a bad seed",
    );

    // --- Keys.
    let keys_path = format!("{ws}/keys");
    expect_status(
        r.send(Call::new("list keys", Valid, Method::GET, &keys_path).key(&admin))
            .await,
        200,
        "list keys",
    );
    let issued = expect_status(
        r.send(
            Call::new("create a key", Valid, Method::POST, &keys_path)
                .key(&admin)
                .json(json!({"scope": "read"})),
        )
        .await,
        201,
        "create a key",
    );
    let new_id = issued["id"].as_str().unwrap().to_string();
    expect_status(
        r.send(
            Call::new(
                "create, bad scope",
                RequestInvalid,
                Method::POST,
                &keys_path,
            )
            .key(&admin)
            .json(json!({"scope": "root"})),
        )
        .await,
        400,
        "bad scope",
    );
    expect_status(
        r.send(
            Call::new(
                "create, form body",
                RequestInvalid,
                Method::POST,
                &keys_path,
            )
            .key(&admin)
            .body("application/x-www-form-urlencoded", "scope=read"),
        )
        .await,
        415,
        "form body",
    );
    expect_status(
        r.send(
            Call::new("create, huge body", Valid, Method::POST, &keys_path)
                .key(&admin)
                .body(
                    "application/json",
                    format!("{{\"scope\": \"read\"{}}}", " ".repeat(5000)),
                ),
        )
        .await,
        413,
        "huge key request",
    );
    expect_status(
        r.send(Call::new("list keys, read key", Valid, Method::GET, &keys_path).key(&read))
            .await,
        403,
        "list keys with a read key",
    );
    let rotate = format!("{keys_path}/{new_id}/rotate");
    expect_status(
        r.send(Call::new("rotate", Valid, Method::POST, &rotate).key(&admin))
            .await,
        200,
        "rotate",
    );
    expect_status(
        r.send(
            Call::new(
                "rotate an unknown key",
                Valid,
                Method::POST,
                format!("{keys_path}/0000000000000000/rotate"),
            )
            .key(&admin),
        )
        .await,
        404,
        "rotate an unknown key",
    );
    expect_status(
        r.send(
            Call::new(
                "rotate another workspace's key",
                Valid,
                Method::POST,
                format!("{keys_path}/{}/rotate", key_id(&globex)),
            )
            .key(&admin),
        )
        .await,
        404,
        "rotate another workspace's key",
    );
    let revoke = format!("{keys_path}/{new_id}");
    expect_status(
        r.send(Call::new("revoke", Valid, Method::DELETE, &revoke).key(&admin))
            .await,
        200,
        "revoke",
    );
    expect_status(
        r.send(Call::new("revoke again", Valid, Method::DELETE, &revoke).key(&admin))
            .await,
        409,
        "revoke again",
    );
    expect_status(
        r.send(Call::new("rotate a revoked key", Valid, Method::POST, &rotate).key(&admin))
            .await,
        409,
        "rotate a revoked key",
    );

    delivery_cases(&mut r, ws, &admin, &read).await;

    // --- Who may ask.
    expect_status(
        r.send(Call::new("no key", RequestInvalid, Method::GET, &events))
            .await,
        401,
        "no key",
    );
    expect_status(
        r.send(Call::new(
            "no key, whoami",
            RequestInvalid,
            Method::GET,
            "/v1/key",
        ))
        .await,
        401,
        "no key on whoami",
    );
    expect_status(
        r.send(
            Call::new("Basic auth", RequestInvalid, Method::GET, &events)
                .authorization("Basic YWxpY2U6eA=="),
        )
        .await,
        401,
        "basic auth",
    );
    let wrong = format!("{}x", &read[..read.len() - 1]);
    expect_status(
        r.send(Call::new("wrong secret", Valid, Method::GET, &events).key(&wrong))
            .await,
        401,
        "wrong secret",
    );
    expect_status(
        r.send(Call::new("other workspace", Valid, Method::GET, &events).key(&globex))
            .await,
        403,
        "other workspace",
    );
    expect_status(
        r.send(
            Call::new(
                "invalid workspace name",
                RequestInvalid,
                Method::GET,
                "/v1/workspaces/Acme/events",
            )
            .key(&read),
        )
        .await,
        400,
        "invalid workspace name",
    );

    // Every operation on a workspace refuses a missing key (401), a key of
    // another workspace (403) and an invalid workspace name (400).
    let event = json!({"event": "a.b", "actor": "x"});
    let scope = json!({"scope": "read"});
    for (method, tail, body) in [
        (Method::POST, "events".to_string(), Some(&event)),
        (Method::GET, "events".to_string(), None),
        (Method::GET, "events/1".to_string(), None),
        (Method::GET, "export".to_string(), None),
        (Method::GET, "events/stream".to_string(), None),
        (Method::GET, "verify".to_string(), None),
        (Method::GET, "checkpoint".to_string(), None),
        (Method::GET, "checkpoint/witnessed".to_string(), None),
        (Method::GET, "evidence".to_string(), None),
        (Method::GET, "keys".to_string(), None),
        (Method::POST, "keys".to_string(), Some(&scope)),
        (Method::DELETE, format!("keys/{new_id}"), None),
        (Method::POST, format!("keys/{new_id}/rotate"), None),
    ] {
        // Each request is otherwise one the document accepts.
        let call = |name, expect, path: &str| {
            let mut call = Call::new(name, expect, method.clone(), path);
            if let Some(body) = body {
                call = call.json(body.clone());
            }
            if tail == "export" {
                call = call.query("format", "csv");
            }
            if tail == "evidence" {
                call = call.query("since", "1d");
            }
            call
        };
        let path = format!("{ws}/{tail}");
        let got = r.send(call("no key", RequestInvalid, &path)).await;
        expect_status(got, 401, &path);
        let got = r
            .send(call("other workspace", Valid, &path).key(&globex))
            .await;
        expect_status(got, 403, &path);
        let bad = format!("/v1/workspaces/Acme/{tail}");
        let got = r
            .send(call("invalid workspace name", RequestInvalid, &bad).key(&admin))
            .await;
        expect_status(got, 400, &bad);
    }

    // --- Paths and methods the document does not list.
    for (name, method, path) in [
        ("edit an event", Method::PUT, format!("{events}/1")),
        ("patch an event", Method::PATCH, format!("{events}/1")),
        ("delete an event", Method::DELETE, format!("{events}/1")),
        ("delete the events", Method::DELETE, events.clone()),
        ("post to health", Method::POST, "/healthz".to_string()),
        ("post to the dashboard", Method::POST, "/".to_string()),
        ("delete whoami", Method::DELETE, "/v1/key".to_string()),
        ("post an export", Method::POST, format!("{ws}/export")),
        ("post verify", Method::POST, format!("{ws}/verify")),
        ("post checkpoint", Method::POST, format!("{ws}/checkpoint")),
        ("post evidence", Method::POST, format!("{ws}/evidence")),
        ("put keys", Method::PUT, keys_path.clone()),
        ("get a key", Method::GET, format!("{keys_path}/{new_id}")),
        ("get rotate", Method::GET, rotate.clone()),
    ] {
        let got = r
            .send(Call::new(name, NoMethod, method, path).key(&admin))
            .await;
        expect_status(got, 405, name);
    }
    for path in [
        "/nope",
        "/v1/workspaces/acme",
        "/v1/workspaces/acme/events/1/x",
    ] {
        let got = r
            .send(Call::new("no such path", NoPath, Method::GET, path).key(&read))
            .await;
        expect_status(got, 404, path);
    }

    // A server without a checkpoint key.
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let plain = TestServer::start(&data, &[]);
    let mut r2 = Recorder {
        client: r.client.clone(),
        base_url: plain.url.clone(),
        exchanges: Vec::new(),
    };
    expect_status(
        r2.send(
            Call::new(
                "checkpoint, not configured",
                Valid,
                Method::GET,
                format!("{ws}/checkpoint"),
            )
            .key(&read),
        )
        .await,
        404,
        "checkpoints not configured",
    );
    expect_status(
        r2.send(
            Call::new(
                "evidence, not configured",
                Valid,
                Method::GET,
                format!("{ws}/evidence"),
            )
            .key(&admin)
            .query("since", "1d"),
        )
        .await,
        404,
        "evidence without checkpoints",
    );
    let exchanges: Vec<Value> = r.exchanges.into_iter().chain(r2.exchanges).collect();
    let recorded = tmp.path().join("exchanges.json");
    std::fs::write(&recorded, serde_json::to_vec_pretty(&exchanges).unwrap()).unwrap();
    // To rerun check.py by hand: CHAINLOG_OPENAPI_EXCHANGES=FILE keeps them.
    if let Some(keep) = std::env::var_os("CHAINLOG_OPENAPI_EXCHANGES") {
        std::fs::copy(&recorded, keep).unwrap();
    }

    let started = std::time::Instant::now();
    let (ok, text) = run_check(&python, Path::new(DOC), Some(&recorded));
    assert!(ok, "the server and docs/openapi.yaml disagree:\n{text}");
    eprintln!("{text}checked in {:.1} s", started.elapsed().as_secs_f64());

    // The check can fail: copies of the document with one thing wrong.
    let original = std::fs::read_to_string(DOC).unwrap();
    for (what, from, to) in [
        (
            "a row field the server sends is not documented",
            "        hash: { $ref: \"#/components/schemas/Hash\" }\n    KeyInfo:",
            "    KeyInfo:",
        ),
        (
            "the 401 error code is misspelt",
            "error: { const: unauthorized }",
            "error: { const: unauthorised }",
        ),
        (
            "the receipt hash is upper case",
            "pattern: \"^[0-9a-f]{64}$\"",
            "pattern: \"^[0-9A-F]{64}$\"",
        ),
        (
            "409 is not documented for revoking",
            "        \"409\": { $ref: \"#/components/responses/KeyRevoked\" }\n        \"500\": { $ref: \"#/components/responses/InternalError\" }\n        \"503\": { $ref: \"#/components/responses/KeyStoreUnavailable\" }\n\n  /v1/workspaces/{w}/keys/{id}/rotate:",
            "        \"500\": { $ref: \"#/components/responses/InternalError\" }\n        \"503\": { $ref: \"#/components/responses/KeyStoreUnavailable\" }\n\n  /v1/workspaces/{w}/keys/{id}/rotate:",
        ),
        (
            "the events route documents PUT",
            "  /v1/workspaces/{w}/events/{seq}:\n    parameters:",
            "  /v1/workspaces/{w}/events/{seq}:\n    put:\n      responses:\n        \"200\": { description: edited }\n    parameters:",
        ),
    ] {
        assert!(original.contains(from), "the mutation {what:?} no longer applies");
        let broken = tmp.path().join("broken.yaml");
        std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
        let (ok, text) = run_check(&python, &broken, Some(&recorded));
        assert!(!ok, "the check passed a document where {what}:\n{text}");
        assert!(text.contains("disagreement"), "{what}: {text}");
    }
}
