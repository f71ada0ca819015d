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

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.screenshots {
            let png = self.session("GET", "/screenshot", Value::Null).await;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png.as_str().unwrap())
                .unwrap();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
        }
    }

    /// The table's rows: seq and the seven cells' text.
    async fn rows(&self) -> Vec<(u64, Vec<String>)> {
        let rows = self
            .js("return [...document.querySelectorAll('#audit-table tbody tr.event')].map(tr => [Number(tr.dataset.seq), [...tr.children].map(td => td.textContent)])")
            .await;
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let cells = r[1]
                    .as_array()
                    .unwrap()
                    .iter()
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
        let script = format!(
            "return (document.body.dataset.loaded || '') !== {before} && document.body.dataset.loaded"
        );
        self.wait_for("the table to reload", &script).await;
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
    let http = Client::new();
    let events: Vec<Value> = fixture()
        .iter()
        .map(|f| {
            json!({"timestamp": timestamp(f.minute), "event": f.event, "actor": f.actor,
                   "node": f.node, "resource": f.resource, "ip": "198.51.100.7",
                   "outcome": if f.event == "auth.login_failed" { "failure" } else { "success" }})
        })
        .collect();
    let response = http
        .post(format!("{}/v1/workspaces/acme/events", server.url))
        .header("Authorization", format!("Bearer {append}"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&events).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
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
    // The 43 rows, then the first page's query and the two filtered ones.
    assert_eq!(browser.rows().await.len(), 46);
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
            // filters, the clear, the filtered page) and two exports.
            .starts_with("Chain intact: 50 records in 1 segment"),
        "{text}"
    );
    browser.screenshot("3-verified").await;

    // Clearing the filters brings every row back, with the verification's.
    browser.click_and_reload("#clear").await;
    assert_eq!(browser.rows().await.len(), 51);

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
