//! Helpers shared by the server's tests: start `chainlog serve` on a free
//! loopback port, create keys with `chainlog apikey`, raw HTTP requests.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `command` and returns its output; fails the test, with the
/// command's standard error, unless it exits 0.
pub fn succeed(command: &mut Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `chainlog` binary.
pub fn chainlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chainlog"))
}

/// A running `chainlog serve`.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// The data directory.
    pub data: PathBuf,
    stderr_path: PathBuf,
}

impl TestServer {
    /// Starts `chainlog serve --data DATA --listen 127.0.0.1:0 EXTRA…` and
    /// waits for its "listening on" line.
    pub fn start(data: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_with_env(data, extra, &[])
    }

    /// [`TestServer::start`] with these environment variables set.
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, String)]) -> TestServer {
        std::fs::create_dir_all(data).unwrap();
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path = data.with_extension(format!("stderr.{n}"));
        let mut command = chainlog();
        command
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (child, first) = spawn_listening(command, &stderr_path);
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let addr: SocketAddr = url.rsplit("://").next().unwrap().parse().unwrap();
        TestServer {
            child: Some(child),
            url,
            addr,
            data: data.to_path_buf(),
            stderr_path,
        }
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The metrics listener's address, when started with
    /// `--metrics-listen` (read from the line it writes to stderr before
    /// its first line of stdout).
    pub fn metrics_addr(&self) -> SocketAddr {
        let stderr = self.stderr();
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("chainlog serve: metrics at http://"))
            .unwrap_or_else(|| panic!("no metrics address in {stderr:?}"));
        line.trim_end_matches("/metrics").parse().unwrap()
    }

    /// `GET /metrics` from the metrics listener: the exposition text.
    pub fn scrape(&self) -> String {
        let (status, body) = raw_get(self.metrics_addr(), "/metrics", None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit; returns the
    /// status and what the server wrote to stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = terminate(&mut child);
        (status, self.stderr())
    }
}

/// Spawns `command` (stdout piped, stderr to `stderr_path`) and waits up to
/// 30 s for its first line of stdout (`listening on …`); keeps draining
/// stdout so the process never blocks on a full pipe.
pub fn spawn_listening(mut command: Command, stderr_path: &Path) -> (Child, String) {
    let stderr = File::create(stderr_path).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start chainlog");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => (child, line),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "chainlog did not start: {}",
                std::fs::read_to_string(stderr_path).unwrap_or_default()
            );
        }
    }
}

/// Sends SIGTERM to `child` and waits (up to 30 s) for it to exit.
pub fn terminate(child: &mut Child) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chainlog did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates workspace `workspace`'s log under `data` with the smallest
/// segments, so that a test fills several of them; returns the segment size.
pub fn small_segment_workspace(data: &Path, workspace: &str) -> u64 {
    let small = ::chainlog::format::segment::MIN_SEGMENT_BYTES;
    let options = ::chainlog::Options {
        segment_bytes: small,
        ..::chainlog::Options::default()
    };
    ::chainlog::Log::create(data.join("workspaces").join(workspace), options)
        .unwrap()
        .close()
        .unwrap();
    small
}

/// A fresh data directory (in a temporary folder, removed on drop) with an
/// admin key for `workspace`: the start of most server tests.
pub fn data_with_admin(workspace: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_key(&data, workspace, "admin");
    (dir, data, admin)
}

/// `chainlog apikey create`; returns the key (the last line of stdout).
pub fn create_key(data: &Path, workspace: &str, scope: &str) -> String {
    let out = chainlog()
        .args(["apikey", "create", "--data"])
        .arg(data)
        .args([
            "--workspace",
            workspace,
            "--scope",
            scope,
            "--actor",
            "test-admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apikey create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().to_string();
    assert!(key.starts_with("clk_"), "{stdout}");
    key
}

/// The key id inside a key's text.
pub fn key_id(key: &str) -> &str {
    &key[4..20]
}

/// Sends `request` as is over a new connection and returns the status and
/// body (the request should say `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (413) and close before it read everything.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A GET with an optional key, as raw bytes.
pub fn raw_get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// A certificate for `localhost` and 127.0.0.1, signed by a test CA.
pub struct TestCertificate {
    /// The CA's certificate, for the client's roots.
    pub ca_cert: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes a [`TestCertificate`] under `dir` with the `openssl` command;
/// `None` (after saying why on stderr) where that command cannot.
pub fn test_certificate(dir: &Path) -> Option<TestCertificate> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (ca_cert, ca_key, csr, ext) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("leaf.csr"),
        dir.join("leaf.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let steps: Vec<Vec<String>> = vec![
        [
            &[
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=chainlog test CA",
            ][..],
            &ec[..],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca_cert)])
        .collect(),
        [&["req", "-subj", "/CN=localhost"][..], &ec[..]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&key), "-out".into(), p(&csr)])
            .collect(),
        [
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &p(&csr),
            "-CA",
            &p(&ca_cert),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&cert),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for step in steps {
        match Command::new("openssl").args(&step).output() {
            Ok(out) if out.status.success() => {}
            other => {
                eprintln!("NOTE: openssl could not make a test certificate ({other:?})");
                return None;
            }
        }
    }
    Some(TestCertificate { ca_cert, cert, key })
}

/// A TLS connection to `addr` as `localhost`, trusting only `ca_cert`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_cert: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, RootCertStore};
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The value of sample `name` with exactly these labels in a Prometheus
/// text exposition, read plainly (tests/server_metrics.rs checks the
/// format itself with prometheus_client's parser).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample, got) = match series.split_once('{') {
                Some((sample, rest)) => (sample, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let got: Vec<&str> = if got.is_empty() {
                Vec::new()
            } else {
                got.split(',').collect()
            };
            let same = sample == name
                && got.len() == want.len()
                && want.iter().all(|w| got.contains(&w.as_str()));
            if same {
                value.parse().ok()
            } else {
                None
            }
        })
}

/// POSTs `body` as `content_type` with `key`; returns the status and the
/// answer as JSON (a string when it is not JSON).
pub async fn post_body(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = client
        .post(url)
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let answer = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, answer)
}

/// A request with a JSON body (or none) and an optional key; the status and
/// the body parsed as JSON (`Null` when it is not JSON).
pub fn json_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let kind = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/json\r\n".to_string()
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_request(addr, request.as_bytes());
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// A checkpoint signing key pair made by `chainlog keygen` in `dir`
/// (`cp.key`, `cp.pub`, name `audit.example`); the secret key's path (for
/// `serve --checkpoint-key`).
pub fn checkpoint_key(dir: &Path) -> PathBuf {
    let (secret, public) = (dir.join("cp.key"), dir.join("cp.pub"));
    let out = chainlog()
        .args(["keygen", "--name", "audit.example", "--secret-key"])
        .arg(&secret)
        .arg("--public-key")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    secret
}
