//! Syslog delivery against a real receiver: rsyslog from Debian's packages
//! (installed by scripts/syslog-server.sh), with its GnuTLS driver, run in
//! the foreground on loopback ports with its own configuration. Every
//! CloudTrail row is sent over TLS, half as CEF and half as JSON, in
//! batches; rsyslog writes each message it parsed to a file, and each must
//! be there once, in order, byte for byte, with rsyslog's reading of the
//! structured data carrying seq, hash and workspace. Plain TCP framing is
//! checked the same way; a wrong CA or server name is refused.
//!
//! If rsyslog cannot be installed the test is skipped with a loud note,
//! unless CHAINLOG_REQUIRE_SYSLOG is set (scripts/test.sh sets it).
#![cfg(feature = "server")]

#[path = "support/delivery.rs"]
mod delivery;
#[path = "support/server.rs"]
mod support;
#[path = "support/tools.rs"]
mod tools;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chainlog::delivery::syslog::{message, SyslogOptions, BOM};
use chainlog::delivery::syslog_send::{SendError, SyslogSender, SyslogTarget};
use chainlog::delivery::{render, Format};
use serde_json::Value;

/// A workspace name that needs escaping in structured data.
const WORKSPACE: &str = "ops\"team]\\";
/// The same, as a PARAM-VALUE.
const WORKSPACE_ESCAPED: &str = "ops\\\"team\\]\\\\";
/// How long rsyslog may take to start or to write what it received, on a
/// loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/syslog-server.sh")
}

/// rsyslog, installed; false (after a loud note) when it cannot be and
/// is not required.
fn rsyslog_installed() -> bool {
    tools::install(
        "scripts/syslog-server.sh",
        &["install"],
        "CHAINLOG_REQUIRE_SYSLOG",
        "rsyslog (rsyslog, rsyslog-gnutls)",
    )
    .is_some()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running rsyslogd, killed when dropped.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    tls: String,
    tcp: String,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rsyslog {
    fn start(dir: &Path, cert: &support::TestCertificate) -> Rsyslog {
        let (tls_port, tcp_port) = (free_port(), free_port());
        let p = |p: &Path| p.to_str().unwrap().to_string();
        let out = Command::new(script())
            .args([
                "config",
                &p(dir),
                &tls_port.to_string(),
                &tcp_port.to_string(),
            ])
            .args([p(&cert.ca_cert), p(&cert.cert), p(&cert.key)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let mut words = line.split_whitespace();
        let child = Command::new(words.next().unwrap())
            .args(words)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut server = Rsyslog {
            child,
            dir: dir.to_path_buf(),
            tls: format!("127.0.0.1:{tls_port}"),
            tcp: format!("127.0.0.1:{tcp_port}"),
        };
        // Listening once both ports accept (the TLS input starts later:
        // it loads the certificate first). The probe of the TLS port only
        // makes rsyslog log a handshake that did not happen.
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&server.tcp).is_err() || TcpStream::connect(&server.tls).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("rsyslogd exited ({status}): {}", server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// Every message rsyslog wrote, once the one whose MSG is `sentinel`
    /// is there.
    fn received_until(&self, sentinel: &str) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(self.dir.join("received.jsonl")).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.iter().any(|l| l["msg"] == sentinel) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslog did not write {sentinel:?}; {} lines; stderr: {}",
                lines.len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A message whose MSG is `text`, to mark the end of a run.
fn sentinel(text: &str) -> Vec<u8> {
    format!("<110>1 - - chainlog - sentinel - {text}").into_bytes()
}

/// What rsyslog should have parsed out of `sent`: its structured data and
/// its MSG (`body`, after a BOM if there is one).
fn expected_sd(sent: &[u8], body: &[u8]) -> String {
    let text = String::from_utf8(sent.to_vec()).unwrap();
    let start = text.find(" [").unwrap() + 1;
    let end = sent.len()
        - body.len()
        - 1
        - if sent[..sent.len() - body.len()].ends_with(BOM) {
            3
        } else {
            0
        };
    text[start..end].to_string()
}

#[tokio::test]
async fn rsyslog_receives_every_row_once_in_order() {
    if !rsyslog_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(cert) = support::test_certificate(dir.path()) else {
        panic!("openssl could not make the test certificate");
    };
    let server = Rsyslog::start(dir.path(), &cert);
    let log_dir = tempfile::tempdir().unwrap();
    let mut rows = delivery::cloudtrail_rows(log_dir.path());
    // One row that is not ASCII, for the BOM.
    rows[7]["actor"] = Value::from("ünïcode|actor=x");

    let options = SyslogOptions::default().with_hostname("audit-1").unwrap();
    let (cef, json) = (
        options.clone().with_body(Format::Cef),
        options.with_body(Format::Json),
    );
    let half = rows.len() / 2;
    let mut sent = Vec::new();
    let mut bodies = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let options = if i < half { &cef } else { &json };
        sent.push(message(options, WORKSPACE, row).unwrap());
        bodies.push(render(options.body, WORKSPACE, row).unwrap());
    }
    let target = SyslogTarget::tls(&server.tls, &cert.ca_cert, "127.0.0.1");
    let started = Instant::now();
    let mut sender = SyslogSender::connect(&target).await.unwrap();
    for batch in sent.chunks(100) {
        sender.send(batch).await.unwrap();
    }
    sender.send(&[sentinel("end of tls")]).await.unwrap();
    let sent_in = started.elapsed();
    sender.close().await.unwrap();
    let received = server.received_until("end of tls");
    let bytes: usize = sent.iter().map(Vec::len).sum();
    eprintln!(
        "{} messages ({} bytes on average) over TLS: written in {sent_in:?}, all in rsyslog's file after {:?}",
        sent.len(),
        bytes / sent.len(),
        started.elapsed()
    );
    assert_eq!(received.len(), sent.len() + 1, "each message exactly once");
    for (i, line) in received[..sent.len()].iter().enumerate() {
        let (row, want) = (&rows[i], &sent[i]);
        assert_eq!(line["input"], "tls");
        assert_eq!(
            line["raw"].as_str().unwrap().as_bytes(),
            &want[..],
            "message {i} changed"
        );
        let sd = line["sd"].as_str().unwrap();
        assert_eq!(sd, expected_sd(want, &bodies[i]), "message {i}");
        let seq = row["seq"].as_u64().unwrap();
        let hash = row["hash"].as_str().unwrap();
        assert!(sd.contains(&format!("seq=\"{seq}\"")), "{sd}");
        assert!(sd.contains(&format!("hash=\"{hash}\"")), "{sd}");
        assert!(
            sd.contains(&format!("workspace=\"{WORKSPACE_ESCAPED}\"")),
            "{sd}"
        );
        let msg = line["msg"].as_str().unwrap().as_bytes();
        let msg = msg.strip_prefix(BOM).unwrap_or(msg);
        assert_eq!(msg, &bodies[i][..], "message {i}'s MSG");
        if i < half {
            let cef = std::str::from_utf8(msg).unwrap();
            assert!(
                cef.contains(&format!(" cn1={seq} ")) && cef.contains(&format!(" cs2={hash} ")),
                "{cef}"
            );
        } else {
            let json: Value = serde_json::from_slice(msg).unwrap();
            assert_eq!(
                (json["seq"].as_u64(), json["hash"].as_str()),
                (Some(seq), Some(hash))
            );
            assert_eq!(json["workspace"], WORKSPACE);
        }
    }
    assert!(
        sent[7].windows(3).any(|w| w == BOM),
        "the non-ASCII MSG has a BOM"
    );
    drop(server);
}

#[tokio::test]
async fn plain_tcp_framing_and_refused_certificates() {
    if !rsyslog_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (Some(cert), Some(other_ca)) = (
        support::test_certificate(dir.path()),
        support::test_certificate(other.path()),
    ) else {
        panic!("openssl could not make the test certificates");
    };
    let server = Rsyslog::start(dir.path(), &cert);

    // A CA that did not sign rsyslog's certificate, and a name it does not
    // carry: both refused in the handshake.
    let wrong_ca = SyslogTarget::tls(&server.tls, &other_ca.ca_cert, "127.0.0.1");
    let e = SyslogSender::connect(&wrong_ca).await.unwrap_err();
    assert!(e.is_certificate_error(), "{e}");
    let wrong_name = SyslogTarget::tls(&server.tls, &cert.ca_cert, "syslog.example.com");
    let e = SyslogSender::connect(&wrong_name).await.unwrap_err();
    assert!(e.is_certificate_error(), "{e}");

    // A receiver that accepts and never answers the handshake: a timeout,
    // not a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut quiet = SyslogTarget::tls(
        &silent.local_addr().unwrap().to_string(),
        &cert.ca_cert,
        "127.0.0.1",
    );
    quiet.timeout = Duration::from_millis(500);
    let e = SyslogSender::connect(&quiet).await.unwrap_err();
    assert!(
        matches!(
            e,
            SendError::Timeout {
                what: "connect",
                ..
            }
        ),
        "{e}"
    );
    drop(silent);

    // Plain TCP, messages with spaces, brackets and digits where a
    // non-transparent framing would split them.
    let log_dir = tempfile::tempdir().unwrap();
    let rows = delivery::cloudtrail_rows(log_dir.path());
    let options = SyslogOptions::default().with_body(Format::Json);
    let sent: Vec<Vec<u8>> = rows[..50]
        .iter()
        .map(|r| message(&options, "acme", r).unwrap())
        .collect();
    let mut sender = SyslogSender::connect(&SyslogTarget::tcp(&server.tcp))
        .await
        .unwrap();
    sender.send(&sent).await.unwrap();
    sender.send(&[sentinel("end of tcp")]).await.unwrap();
    sender.close().await.unwrap();
    let received = server.received_until("end of tcp");
    assert_eq!(
        received.len(),
        sent.len() + 1,
        "nothing from the refused connections"
    );
    for (line, want) in received.iter().zip(&sent) {
        assert_eq!(line["input"], "tcp");
        assert_eq!(line["raw"].as_str().unwrap().as_bytes(), &want[..]);
    }
}
