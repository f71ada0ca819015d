//! The Audit Log dashboard end to end in headless Chromium, driven through
//! chromedriver's WebDriver HTTP API: sign in, read the table, filter,
//! export CSV and JSON, verify an intact chain and a tampered one.
//!
//! Needs Debian's `chromium` and `chromium-driver`; the test installs them
//! with apt-get when missing. If that fails it is skipped with a loud
//! note, unless CHAINLOG_REQUIRE_BROWSER is set (scripts/test.sh sets it),
//! in which case it fails. Set CHAINLOG_SCREENSHOTS=DIR to save screenshots.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chainlog::format::frame::{padded_len, FRAME_HEADER_BYTES};
use chainlog::format::segment::HEADER_BYTES;
use chainlog::query::proofs::InclusionProof;
use chainlog::{Event, Log, Options, Outcome, Timestamp};
use reqwest::Client;
use serde_json::{json, Value};
use support::{create_key, key_id, TestServer};

#[path = "support/browser.rs"]
mod browser;
use browser::{ensure_browser, CHROMEDRIVER, CHROMIUM};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process and one browser session.
struct Browser {
    http: Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
    screenshots: Option<PathBuf>,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(text) = r.text().await {
                    if serde_json::from_str::<Value>(&text)
                        .is_ok_and(|v| v["value"]["ready"] == true)
                    {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1400,1000",
                ]
            }
        }}});
        let mut browser = Browser {
            http,
            base,
            session: String::new(),
            driver,
            _profile: profile,
            screenshots: std::env::var_os("CHAINLOG_SCREENSHOTS").map(PathBuf::from),
        };
        let created = browser.command("POST", "/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        };
        let text = request.send().await.unwrap().text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", value["value"]);
        }
        value["value"].clone()
    }

    async fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.session("POST", "/url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .session(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.session("POST", &format!("/element/{el}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.session("POST", &format!("/element/{el}/clear"), json!({}))
            .await;
        if !text.is_empty() {
            self.session(
                "POST",
                &format!("/element/{el}/value"),
                json!({ "text": text }),
            )
            .await;
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until `script` returns something truthy, and returns it.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script).await;
            let truthy = !(v.is_null() || v == false || v == "" || v == 0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the window, saved under CHAINLOG_SCREENSHOTS when set.
    async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.session("GET", "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        if let Some(dir) = &self.screenshots {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), &bytes).unwrap();
        }
        bytes
    }

    /// The table's rows: seq and the seven cells' text after the seq's own
    /// (checked to show the seq).
    async fn rows(&self) -> Vec<(u64, Vec<String>)> {
        let rows = self
            .js("return [...document.querySelectorAll('#audit-table tbody tr.event')].map(tr => [Number(tr.dataset.seq), [...tr.children].map(td => td.textContent)])")
            .await;
        for r in rows.as_array().unwrap() {
            assert_eq!(
                r[1][0].as_str().unwrap(),
                r[0].to_string(),
                "the seq column"
            );
        }
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let cells = r[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .skip(1)
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect();
                (r[0].as_u64().unwrap(), cells)
            })
            .collect()
    }

    /// Clicks `css` and waits for the table to be reloaded.
    async fn click_and_reload(&self, css: &str) {
        let before = self.js("return document.body.dataset.loaded || ''").await;
        self.click(css).await;
        self.wait_reload(before).await;
    }

    /// Runs `script` and waits for the table to be reloaded.
    async fn js_and_reload(&self, script: &str) {
        let before = self.js("return document.body.dataset.loaded || ''").await;
        self.js(script).await;
        self.wait_reload(before).await;
    }

    /// Drags the mouse from one element's centre to another's and waits
    /// for the table to be reloaded.
    async fn drag_and_reload(&self, from: &str, to: &str) {
        let before = self.js("return document.body.dataset.loaded || ''").await;
        let (a, b) = (self.find(from).await, self.find(to).await);
        let at = |el: &str| json!({"type": "pointerMove", "duration": 50, "origin": {ELEMENT_KEY: el}, "x": 0, "y": 0});
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"},
            "actions": [at(&a), {"type": "pointerDown", "button": 0}, at(&b),
                        {"type": "pointerUp", "button": 0}]}]});
        self.session("POST", "/actions", actions).await;
        self.wait_reload(before).await;
    }

    async fn wait_reload(&self, before: Value) {
        let script = format!(
            "return (document.body.dataset.loaded || '') !== {before} && document.body.dataset.loaded"
        );
        self.wait_for("the table to reload", &script).await;
    }

    /// Fails on anything the page's Content-Security-Policy blocked.
    async fn assert_no_csp_violation(&self) {
        let v = self
            .js("return document.body.dataset.cspViolations || null")
            .await;
        assert_eq!(v, Value::Null, "the CSP blocked something");
    }

    async fn resize(&self, width: u32, height: u32) {
        self.session(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    async fn sign_in(&self, key: &str) {
        self.type_into("#api-key", key).await;
        // The previous session's count may still be on the page: wait for
        // this sign-in's table load itself.
        self.click_and_reload("#sign-in").await;
        self.wait_for(
            "the table after signing in",
            "return document.getElementById('count').dataset.count",
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Flips seq's outcome byte (failure to success) in its segment and
/// recomputes the frame's CRC, as a forger would. Returns the frame's offset.
fn tamper(dir: &Path, seq: u64) -> u64 {
    let path = dir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut at = HEADER_BYTES as usize;
    loop {
        let len = le_u32(&bytes, at + 4) as usize;
        assert!(len > 0, "seq {seq} not found");
        let frame_seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        if frame_seq == seq {
            // After the provenance prefix (received_at, origin, the
            // u16-prefixed appender) and the event's timestamp.
            let record = at + FRAME_HEADER_BYTES;
            let appender_len =
                usize::from(u16::from_le_bytes([bytes[record + 9], bytes[record + 10]]));
            let outcome = record + 11 + appender_len + 8;
            assert_eq!(bytes[outcome], 1, "seq {seq} is not a failure");
            bytes[outcome] = 0;
            let crc = crc32c::crc32c(&bytes[at + 4..at + FRAME_HEADER_BYTES + len]);
            bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            return at as u64;
        }
        at += padded_len(len);
    }
}

struct Fixture {
    actor: &'static str,
    event: &'static str,
    node: String,
    resource: String,
    minute: u32,
}

fn fixture() -> Vec<Fixture> {
    (0..40u32)
        .map(|i| Fixture {
            actor: [
                "alice@acme.io",
                "bob@acme.io",
                "deploy-bot",
                "carol@acme.io",
            ][i as usize % 4],
            event: [
                "pcap.download",
                "incident.opened",
                "pcap.delete",
                "node.added",
                "auth.login_failed",
            ][i as usize % 5],
            node: format!("nyc-edge-{:02}", i % 3),
            resource: format!("r{i:03}"),
            minute: i * 5,
        })
        .collect()
}

fn timestamp(minute: u32) -> String {
    format!("2026-03-09T{:02}:{:02}:00Z", 8 + minute / 60, minute % 60)
}

/// Appends the fixture to workspace acme with an append key.
async fn append_fixture(server: &TestServer, append: &str) {
    let events: Vec<Value> = fixture()
        .iter()
        .map(|f| {
            json!({"timestamp": timestamp(f.minute), "event": f.event, "actor": f.actor,
                   "node": f.node, "resource": f.resource, "ip": "198.51.100.7",
                   "outcome": if f.event == "auth.login_failed" { "failure" } else { "success" }})
        })
        .collect();
    let response = Client::new()
        .post(format!("{}/v1/workspaces/acme/events", server.url))
        .header("Authorization", format!("Bearer {append}"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&events).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_filters_exports_and_verifies() {
    if !ensure_browser("dashboard") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let read = create_key(&data, "acme", "read");
    let append = create_key(&data, "acme", "append");
    // A second workspace whose log a forger changes on disk.
    let forged_read = create_key(&data, "forged", "read");
    let forged_dir = data.join("workspaces/forged");
    {
        let log = Log::open(&forged_dir, Options::default()).unwrap();
        for i in 0..6 {
            let mut e = Event::new(Timestamp::now(), "auth.login_failed", "mallory");
            e.outcome = if i == 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            log.append(&e).unwrap();
        }
        log.close().unwrap();
    }
    let tampered_offset = tamper(&forged_dir, 3);

    // Every read recorded one by one, so the counts below do not depend on
    // where the audit window's minute falls.
    let server = TestServer::start(&data, &["--reads-per-key", "1000"]);
    append_fixture(&server, &append).await;
    // seq 0 and 1 are the two apikey.created events; the fixture is 2..=41.
    let seq_of = |i: usize| i as u64 + 2;

    let browser = Browser::start().await;
    browser.goto(&server.url).await;
    let title = browser.js("return document.title").await;
    assert_eq!(title, "Audit Log · chainlog");

    // A wrong key is refused on the page.
    browser.type_into("#api-key", "clk_not_a_key").await;
    browser.click("#sign-in").await;
    let error = browser
        .wait_for(
            "the sign-in error",
            "const e = document.getElementById('signin-error'); return !e.hidden && e.textContent",
        )
        .await;
    assert!(error.as_str().unwrap().contains("unauthorized"), "{error}");

    // Sign in: every event, newest first, with a count.
    browser.sign_in(&read).await;
    browser.screenshot("1-signed-in").await;
    let headers = browser
        .js("return [...document.querySelectorAll('#audit-table thead th')].map(th => th.textContent)")
        .await;
    assert_eq!(
        headers,
        json!([
            "Seq",
            "Timestamp (UTC)",
            "Event",
            "Actor",
            "Node / Resource",
            "IP",
            "Received (UTC)",
            "Appender"
        ])
    );
    // Reads are audited: signing in (GET /v1/key) recorded seq 42 before
    // the page asked for the events.
    let rows = browser.rows().await;
    assert_eq!(rows.len(), 43);
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..43).rev().collect::<Vec<_>>()
    );
    assert_eq!(rows[0].1[1], "access.sign_in");
    let count = browser
        .js("return document.getElementById('count').textContent")
        .await;
    assert_eq!(count, "43 events");
    let workspace = browser
        .js("return document.getElementById('workspace-name').textContent")
        .await;
    assert_eq!(workspace, "workspace acme");
    // A read key sees no evidence button and no deliveries panel.
    let admin_only = browser
        .js("return ['evidence', 'deliveries'].map(id => document.getElementById(id).hidden)")
        .await;
    assert_eq!(admin_only, json!([true, true]));
    let f = &fixture()[39];
    let (_, cells) = rows.iter().find(|r| r.0 == seq_of(39)).unwrap();
    assert_eq!(
        cells[0],
        format!(
            "{}Z",
            timestamp(f.minute).replace('T', " ").trim_end_matches('Z')
        )
    );
    let badge = if f.event == "auth.login_failed" {
        "failure"
    } else {
        ""
    };
    assert_eq!(cells[1], format!("{}{badge}", f.event));
    assert_eq!(cells[2], f.actor);
    assert_eq!(cells[3], format!("{} / {}", f.node, f.resource));
    assert_eq!(cells[4], "198.51.100.7");
    // Provenance: received by the server just now, appended with the key.
    let received = Timestamp::parse_rfc3339(&cells[5].replace(' ', "T")).unwrap();
    let age_secs = (Timestamp::now().unix_nanos() - received.unix_nanos()) / 1_000_000_000;
    assert!((0..600).contains(&age_secs), "{}", cells[5]);
    assert_eq!(cells[6], key_id(&append));
    let ok = rows.iter().find(|r| r.0 == seq_of(0)).unwrap();
    assert_eq!(ok.1[1], "pcap.download", "only failures carry a badge");
    // The detail view names all three.
    browser
        .js(&format!(
            "document.querySelector('#audit-table tr.event[data-seq=\"{}\"]').click(); return true",
            seq_of(39)
        ))
        .await;
    let detail = browser
        .wait_for("the detail row", "const d = document.querySelector('#audit-table tr.details pre'); return d && d.textContent")
        .await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains(&format!("origin client   appender {}", key_id(&append))),
        "{detail}"
    );
    assert!(detail.contains("received 20"), "{detail}");

    // Filter by provenance: the appending key, client origin.
    browser.type_into("#f-appender", key_id(&append)).await;
    browser
        .js("document.getElementById('f-origin').value = 'client'; return true")
        .await;
    browser.click_and_reload("#apply").await;
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    assert_eq!(shown, (2..42).rev().collect::<Vec<u64>>());
    // Nothing was received after 2100.
    browser
        .type_into("#f-received-since", "2100-01-01T00:00:00Z")
        .await;
    browser.click_and_reload("#apply").await;
    assert!(browser.rows().await.is_empty());
    browser.click_and_reload("#clear").await;
    // The 43 rows, then the first page's query and summary, the first
    // filter's query and summary, the second's query (it matched nothing,
    // so the page asked for no summary).
    assert_eq!(browser.rows().await.len(), 48);
    let cleared = browser
        .js("return ['f-appender', 'f-origin', 'f-received-since'].map(id => document.getElementById(id).value)")
        .await;
    assert_eq!(cleared, json!(["", "", ""]));

    // Filter by actor, event type (prefix), node and time range.
    browser
        .type_into("#f-actor", "alice@acme.io, carol@acme.io")
        .await;
    browser.type_into("#f-event", "pcap.*").await;
    browser
        .type_into("#f-node", "nyc-edge-00,nyc-edge-02")
        .await;
    browser.type_into("#f-since", "2026-03-09T08:20:00Z").await;
    browser.type_into("#f-until", "2026-03-09T11:00:00Z").await;
    browser.click_and_reload("#apply").await;
    let expected: Vec<u64> = fixture()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            ["alice@acme.io", "carol@acme.io"].contains(&f.actor)
                && f.event.starts_with("pcap.")
                && ["nyc-edge-00", "nyc-edge-02"].contains(&f.node.as_str())
                && (20..180).contains(&f.minute)
        })
        .map(|(i, _)| seq_of(i))
        .rev()
        .collect();
    assert!(expected.len() >= 3, "{expected:?}");
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    assert_eq!(shown, expected);
    let count = browser
        .js("return document.getElementById('count').dataset.count")
        .await;
    assert_eq!(count, expected.len().to_string());
    browser.screenshot("2-filtered").await;

    // Export CSV and JSON: exactly the filtered rows.
    browser.click("#export-csv").await;
    let csv = browser
        .wait_for("the CSV export", "const t = document.getElementById('export-data'); return t.dataset.format === 'csv' && t.textContent")
        .await;
    let csv = csv.as_str().unwrap();
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    assert_eq!(
        lines.next().unwrap(),
        "seq,timestamp,event,actor,node,resource,ip,outcome,context,hash,received_at,origin,appender"
    );
    let csv_seqs: Vec<u64> = lines
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(csv_seqs, expected);
    assert!(
        csv.contains(",pcap.download,alice@acme.io,nyc-edge-0") || csv.contains(",pcap.delete,")
    );
    browser.click("#export-json").await;
    let json_text = browser
        .wait_for("the JSON export", "const t = document.getElementById('export-data'); return t.dataset.format === 'json' && t.textContent")
        .await;
    let exported: Value = serde_json::from_str(json_text.as_str().unwrap()).unwrap();
    let json_seqs: Vec<u64> = exported
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(json_seqs, expected);

    // Verify: intact.
    browser.click("#verify").await;
    let intact = browser
        .wait_for(
            "the verify result",
            "return document.getElementById('verify-result').dataset.intact",
        )
        .await;
    assert_eq!(intact, "true");
    let text = browser
        .js("return document.getElementById('verify-result').textContent")
        .await;
    assert!(
        text.as_str()
            .unwrap()
            // 42, the sign-in, five queries (the first page, two provenance
            // filters, the clear, the filtered page), the summaries of the
            // four that matched something and two exports.
            .starts_with("Chain intact: 54 records in 1 segment"),
        "{text}"
    );
    browser.screenshot("3-verified").await;

    // Clearing the filters brings every row back, with the verification's.
    browser.click_and_reload("#clear").await;
    assert_eq!(browser.rows().await.len(), 55);

    // The tampered workspace: verify names where the chain breaks.
    browser.click("#sign-out").await;
    browser.sign_in(&forged_read).await;
    browser.click("#verify").await;
    let intact = browser
        .wait_for(
            "the verify result",
            "return document.getElementById('verify-result').dataset.intact",
        )
        .await;
    assert_eq!(intact, "false");
    let problems = browser
        .js("return [...document.querySelectorAll('#verify-result li.problem')].map(li => ({kind: li.dataset.kind, seq: li.dataset.seq, segment: li.dataset.segment, offset: li.dataset.offset, text: li.textContent}))")
        .await;
    let first = &problems[0];
    assert_eq!(first["kind"], "hash_mismatch", "{problems}");
    assert_eq!(first["seq"], "3");
    assert_eq!(first["segment"], "00000000000000000000.seg");
    assert_eq!(first["offset"], tampered_offset.to_string());
    let text = browser
        .js("return document.getElementById('verify-result').textContent")
        .await;
    assert!(
        text.as_str().unwrap().contains(&format!("first breaks at seq 3 in 00000000000000000000.seg, byte {tampered_offset} (hash_mismatch)")),
        "{text}"
    );
    browser.screenshot("4-tampered").await;
    browser.assert_no_csp_violation().await;

    // The key lives in session storage only; signing out forgets it.
    let stored = browser
        .js("return sessionStorage.getItem('chainlog.apiKey')")
        .await;
    assert_eq!(stored, forged_read.as_str());
    browser.click("#sign-out").await;
    let stored = browser
        .js("return sessionStorage.getItem('chainlog.apiKey')")
        .await;
    assert_eq!(stored, Value::Null);
    let _ = browser.session("DELETE", "", Value::Null).await;
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}

/// The fixture's events per hour: (bucket start, total, failures).
fn fixture_hours() -> Vec<(String, u64, u64)> {
    let mut hours: Vec<(String, u64, u64)> = Vec::new();
    for f in fixture() {
        let start = format!("2026-03-09T{:02}:00:00Z", 8 + f.minute / 60);
        let failed = u64::from(f.event == "auth.login_failed");
        match hours.last_mut() {
            Some(h) if h.0 == start => {
                h.1 += 1;
                h.2 += failed;
            }
            _ => hours.push((start, 1, failed)),
        }
    }
    hours
}

/// Counts of a top panel's names, highest first.
fn fixture_top(name: impl Fn(&Fixture) -> &str) -> Value {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for f in fixture() {
        *counts.entry(name(&f).to_string()).or_default() += 1;
    }
    let mut list: Vec<(String, u64)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    json!(list
        .into_iter()
        .map(|(n, c)| json!([n, c.to_string()]))
        .collect::<Vec<_>>())
}

/// Share of a screenshot's pixels within 40 of `rgb` in each channel, and
/// the number of distinct colours (a blank page has one or two).
fn pixels_like(png: &[u8], rgb: [u8; 3]) -> (f64, usize) {
    let (w, h, pixels) = browser::decode_png(png);
    assert!(w > 0 && h > 0);
    let near = pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 40))
        .count();
    let colours: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    (near as f64 / pixels.len() as f64, colours.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_charts_narrows_orders_proves_and_shows_lag() {
    if !ensure_browser("dashboard") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_key(&data, "acme", "admin");
    let append = create_key(&data, "acme", "append");
    let secret = support::checkpoint_key(tmp.path());
    let server = TestServer::start(
        &data,
        &[
            "--reads-per-key",
            "1000",
            "--checkpoint-key",
            secret.to_str().unwrap(),
        ],
    );
    append_fixture(&server, &append).await;
    // A SIEM destination nobody listens on: it falls behind.
    let dead = free_port();
    let response = Client::new()
        .put(format!("{}/v1/workspaces/acme/deliveries/siem", server.url))
        .header("Authorization", format!("Bearer {admin}"))
        .header("Content-Type", "application/json")
        .body(
            json!({"kind": "webhook", "url": format!("http://127.0.0.1:{dead}/hook")}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );

    let browser = Browser::start().await;
    browser.resize(1280, 1000).await;
    browser.goto(&server.url).await;
    browser.sign_in(&admin).await;
    // The admin sees the evidence button and the deliveries with their lag.
    browser
        .wait_for(
            "the deliveries panel",
            "return document.getElementById('deliveries').dataset.loaded",
        )
        .await;
    let deliveries = browser
        .js("return [...document.querySelectorAll('#deliveries-table tr.delivery')].map(tr => [...tr.children].map(td => td.textContent))")
        .await;
    let row = &deliveries[0];
    assert_eq!(deliveries.as_array().unwrap().len(), 1, "{deliveries}");
    assert_eq!((&row[0], &row[1]), (&json!("siem"), &json!("webhook")));
    let behind = row[2].as_str().unwrap();
    assert!(
        behind == "—" || behind.parse::<u64>().is_ok(),
        "records behind: {behind}"
    );
    assert_eq!(
        browser
            .js("return document.getElementById('evidence').hidden")
            .await,
        false
    );

    // The fixture's day only: the audit records of today fall outside.
    browser.type_into("#f-until", "2026-03-10T00:00:00Z").await;
    browser.click_and_reload("#apply").await;
    let hours = fixture_hours();
    let bars = browser
        .js("return [...document.querySelectorAll('#chart g.bucket')].map(g => [g.dataset.start, Number(g.dataset.total), Number(g.dataset.failures), g.querySelectorAll('rect.fail').length, g.querySelectorAll('rect.ok').length])")
        .await;
    let expected: Vec<Value> = hours
        .iter()
        .map(|(start, total, failures)| {
            json!([
                start,
                total,
                failures,
                u64::from(*failures > 0),
                u64::from(total > failures)
            ])
        })
        .collect();
    assert_eq!(bars, json!(expected));
    assert_eq!(hours.len(), 4);
    let svg_bucket = browser
        .js("return document.querySelector('#chart svg').dataset.bucket")
        .await;
    assert_eq!(svg_bucket, "hour");
    let count = browser
        .js("const c = document.getElementById('count'); return [c.dataset.total, c.textContent]")
        .await;
    assert_eq!(count, json!(["40", "40 events"]));
    let top = |id: &str| {
        format!("return [...document.querySelectorAll('#{id} li')].map(li => [li.dataset.name, li.dataset.count])")
    };
    assert_eq!(
        browser.js(&top("top-actors")).await,
        fixture_top(|f| f.actor)
    );
    assert_eq!(
        browser.js(&top("top-events")).await,
        fixture_top(|f| f.event)
    );
    let wide = browser.screenshot("5-chart-1280").await;
    let (red, colours) = pixels_like(&wide, [0xc4, 0x32, 0x0a]);
    assert!(colours > 50, "{colours} colours: blank?");
    assert!(red > 0.0005, "failure segments drawn: {red}");

    // Drag across the second and third bars: 09:00 to 11:00.
    browser
        .drag_and_reload(
            "#chart g.bucket[data-index='1'] rect.hit",
            "#chart g.bucket[data-index='2'] rect.hit",
        )
        .await;
    let range = browser
        .js("return ['f-since', 'f-until', 'f-range'].map(id => document.getElementById(id).value)")
        .await;
    assert_eq!(
        range,
        json!(["2026-03-09T09:00:00Z", "2026-03-09T11:00:00Z", "custom"])
    );
    let in_range = |lo: u32, hi: u32| -> Vec<u64> {
        fixture()
            .iter()
            .enumerate()
            .filter(|(_, f)| (lo..hi).contains(&f.minute))
            .map(|(i, _)| i as u64 + 2)
            .rev()
            .collect()
    };
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    assert_eq!(shown, in_range(60, 180));
    let total = browser
        .js("return document.getElementById('count').dataset.total")
        .await;
    assert_eq!(total, (hours[1].1 + hours[2].1).to_string());
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#chart g.bucket').length")
            .await,
        2
    );

    // Click the first of the two: 09:00 to 10:00.
    browser
        .click_and_reload("#chart g.bucket[data-index='0'] rect.hit")
        .await;
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    assert_eq!(shown, in_range(60, 120));
    assert_eq!(
        browser
            .js("return document.getElementById('f-until').value")
            .await,
        "2026-03-09T10:00:00Z"
    );

    // A late event, sent after the others but timed within the hour: last
    // by arrival, between 09:35 and 09:30 by event time.
    let response = Client::new()
        .post(format!("{}/v1/workspaces/acme/events", server.url))
        .header("Authorization", format!("Bearer {append}"))
        .header("Content-Type", "application/json")
        .body(json!({"timestamp": "2026-03-09T09:30:30Z", "event": "node.added", "actor": "late-bot"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let receipt: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let late = receipt["receipts"][0]["seq"].as_u64().unwrap();

    // Oldest first, then by event time.
    let order = |value: &str| {
        format!("const o = document.getElementById('order'); o.value = '{value}'; o.dispatchEvent(new Event('change')); return true")
    };
    browser.js_and_reload(&order("seq-asc")).await;
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    let mut ascending = in_range(60, 120);
    ascending.reverse();
    ascending.push(late);
    assert_eq!(shown, ascending);
    assert_eq!(
        browser
            .js("return document.getElementById('count').dataset.total")
            .await,
        "13"
    );
    browser.js_and_reload(&order("time-desc")).await;
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    // Newest first: 09:55 … 09:35 (five rows), the late one, 09:30 … 09:00.
    let mut by_time = in_range(60, 120);
    by_time.insert(5, late);
    assert_eq!(shown, by_time);
    browser.js_and_reload(&order("time-asc")).await;
    let shown: Vec<u64> = browser.rows().await.iter().map(|r| r.0).collect();
    by_time.reverse();
    assert_eq!(shown, by_time, "oldest event time first");

    // The inclusion proof of a row, downloaded from its detail, checks.
    let seq = in_range(60, 120)[3];
    browser
        .js(&format!(
            "document.querySelector('#audit-table tr.event[data-seq=\"{seq}\"]').click(); return true"
        ))
        .await;
    browser.click("#audit-table tr.details button.proof").await;
    let text = browser
        .wait_for(
            "the proof",
            &format!("const p = document.getElementById('proof-data'); return p.dataset.seq === '{seq}' && p.textContent"),
        )
        .await;
    let proof: InclusionProof = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(proof.seq, seq);
    assert!(proof.verify(), "{proof:?}");
    let detail = browser
        .js("return document.querySelector('#audit-table tr.details pre').textContent")
        .await;
    let leaf = serde_json::to_value(&proof).unwrap()["leaf"].clone();
    assert!(
        detail.as_str().unwrap().contains(leaf.as_str().unwrap()),
        "the proof's leaf is the row's hash: {detail} {leaf}"
    );
    let mut forged = proof.clone();
    forged.seq += 1;
    assert!(!forged.verify());

    // An evidence pack of the range, for the admin.
    browser.click("#evidence").await;
    let result = browser
        .wait_for(
            "the evidence pack",
            "return document.getElementById('evidence').dataset.result",
        )
        .await;
    let page = browser.js("return document.body.innerText").await;
    assert_eq!(result, "200", "{}", page.as_str().unwrap_or(""));
    let bytes: u64 = browser
        .js("return document.getElementById('evidence').dataset.bytes")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 1000, "{bytes} bytes");

    // The destination nobody listens on has every record still to send.
    let behind = browser
        .wait_for(
            "the delivery's lag",
            "document.getElementById('deliveries-refresh').click(); const tr = document.querySelector('#deliveries-table tr.delivery'); const n = Number(tr.dataset.recordsBehind); return n > 0 && [n, tr.children[3].textContent]",
        )
        .await;
    assert!(behind[0].as_u64().unwrap() >= 42, "{behind}");
    assert!(
        behind[1].as_str().unwrap().parse::<u64>().is_ok(),
        "{behind}"
    );

    // A phone's width: the chart fits, nothing overflows sideways.
    browser.resize(390, 900).await;
    let fits = browser
        .js("const s = document.querySelector('#chart svg').getBoundingClientRect(); return [s.right <= window.innerWidth, s.width > 100, document.documentElement.scrollWidth <= window.innerWidth]")
        .await;
    assert_eq!(fits, json!([true, true, true]));
    let narrow = browser.screenshot("6-chart-390").await;
    let (_, colours) = pixels_like(&narrow, [0xc4, 0x32, 0x0a]);
    assert!(colours > 50, "{colours} colours: blank?");
    // All time: the pack starts at the first matching event.
    browser.resize(1280, 1000).await;
    browser.click_and_reload("#clear").await;
    browser
        .js("delete document.getElementById('evidence').dataset.result; document.getElementById('evidence').click(); return true")
        .await;
    let result = browser
        .wait_for(
            "the evidence pack of all time",
            "return document.getElementById('evidence').dataset.result",
        )
        .await;
    assert_eq!(result, "200");
    browser.assert_no_csp_violation().await;

    let _ = browser.session("DELETE", "", Value::Null).await;
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
}
