//! A cluster of `chainlog serve --bucket` processes on loopback, for the
//! multi-process tests of issue 16 (tests/cluster_failover.rs) and the
//! cluster figures (tests/cluster_figures.rs).
//!
//! Every node is the `chainlog` binary cargo built for the tests, with its
//! own data directory, node id, free port and `--advertise` URL, the same
//! `keys.json` (made with `chainlog apikey create` in one directory and
//! copied) and the same checkpoint key. The bucket is the binary's shared
//! Ceph radosgw (support/ceph.rs), bucket `audit` (no Object Lock: on Ceph
//! 16 a versioned bucket ignores the conditions), under a fresh prefix per
//! test. The nodes reach radosgw through a [`Proxy`] the test can switch to
//! refuse connections (a bucket outage); the test itself reads the bucket
//! directly.
//!
//! It brings the support modules it uses as its own (`cluster::{ceph, s3,
//! tools, server, proxy}`); a test binary declares `mod cluster;` and
//! imports them at its root (`use cluster::{ceph, s3, tools};`: ceph.rs
//! names `crate::s3` and `crate::tools`).
#![allow(dead_code)]

#[path = "ceph.rs"]
pub mod ceph;
#[path = "proxy.rs"]
pub mod proxy;
#[path = "s3.rs"]
pub mod s3;
#[path = "server.rs"]
pub mod server;
#[path = "tools.rs"]
pub mod tools;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStoreExt as _;
use serde_json::Value;

use ceph::CephServer;
use proxy::Proxy;
use s3::TestS3;
use server::{checkpoint_key, create_key, spawn_listening};

/// The bucket the cluster writes (no Object Lock).
pub const BUCKET: &str = s3::BUCKET;
/// The header marking a request another node forwarded (docs/HTTP.md): a
/// node that does not hold the workspace answers it 503 instead of
/// forwarding it again.
pub const FORWARDED_HEADER: &str = "x-chainlog-forwarded";

/// The settings every node of a cluster gets.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--lease-ttl`: short, so that the tests are quick.
    pub lease_ttl: Duration,
    /// `--flush-interval`.
    pub flush_interval: Duration,
    /// `--ack-timeout`.
    pub ack_timeout: Duration,
    /// `--request-timeout`, which also bounds a forwarded request: a
    /// request forwarded to a frozen holder waits that long.
    pub request_timeout: Duration,
    /// `--segment-bytes`: small in the tests, because a `--from` reader
    /// rebuilds (and verifies) whole segment files.
    pub segment_bytes: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            lease_ttl: Duration::from_secs(3),
            flush_interval: Duration::from_millis(250),
            ack_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            segment_bytes: 1 << 20,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// One `chainlog serve` process.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    pub data: PathBuf,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl Node {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node runs").id()
    }

    /// Whether the process is still there (not killed, not exited).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// What the node wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (its sockets stay open, its clock runs).
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn cont(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A lease object as the test reads it (docs/CLUSTER.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSeen {
    pub holder: String,
    pub epoch: u64,
    pub expires_at_ms: u64,
}

/// A published head as the test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadSeen {
    pub epoch: u64,
    pub size: u64,
    pub root: String,
    pub checkpoint: String,
}

/// A record as `chainlog export --from` reads it from the bucket.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    pub hash: String,
    /// `context.tag`, which the load client sets on every event it sends.
    pub tag: Option<String>,
}

/// N nodes over one bucket prefix.
pub struct Cluster {
    pub ceph: &'static CephServer,
    /// Between the nodes and radosgw.
    pub proxy: Proxy,
    /// The cluster's prefix in [`BUCKET`]: workspace W is under
    /// `PREFIX/ws/W/`.
    pub prefix: String,
    pub options: ClusterOptions,
    /// Workspace → its admin key.
    pub keys: BTreeMap<String, String>,
    /// The checkpoint key (`chainlog keygen`) and its public half.
    pub checkpoint_key: PathBuf,
    pub checkpoint_pub: PathBuf,
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `nodes` nodes (`node-0`, `node-1`, …) under a fresh prefix
    /// `TEST-PID-MS` (`test` starts with the test file's name: Ceph may be
    /// shared by all test binaries), with an admin key for each workspace, and waits
    /// until each has registered itself in the bucket.
    pub fn start(
        ceph: &'static CephServer,
        test: &str,
        nodes: usize,
        workspaces: &[String],
        options: ClusterOptions,
    ) -> Cluster {
        s3::library_credentials();
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        // `apikey create` records the key in the workspace's log there, a
        // preallocated 64 MiB segment: only keys.json is kept.
        let keys = workspaces
            .iter()
            .map(|w| {
                let key = create_key(&keys_dir, w, "admin");
                std::fs::remove_dir_all(keys_dir.join("workspaces").join(w)).unwrap();
                (w.clone(), key)
            })
            .collect();
        let checkpoint_key = checkpoint_key(dir.path());
        let checkpoint_pub = dir.path().join("cp.pub");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let mut cluster = Cluster {
            ceph,
            proxy: Proxy::start(ceph.port),
            prefix: format!("{test}-{}-{stamp}", std::process::id()),
            options,
            keys,
            checkpoint_key,
            checkpoint_pub,
            nodes: Vec::new(),
            dir,
        };
        for i in 0..nodes {
            cluster.add_node(&format!("node-{i}"));
        }
        cluster.wait_registered(nodes);
        cluster
    }

    /// The admin key of workspace `w`.
    pub fn key(&self, w: &str) -> &str {
        &self.keys[w]
    }

    /// `s3://audit/PREFIX`.
    pub fn url(&self) -> String {
        format!("s3://{BUCKET}/{}", self.prefix)
    }

    /// `s3://audit/PREFIX/ws/W`: where `chainlog verify --from` reads W.
    pub fn workspace_url(&self, w: &str) -> String {
        format!("{}/ws/{w}", self.url())
    }

    fn node_dir(&self, id: &str) -> PathBuf {
        let data = self.dir.path().join(id);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::copy(
            self.dir.path().join("keys/keys.json"),
            data.join("keys.json"),
        )
        .unwrap();
        data
    }

    /// Starts a writer node `id` (`serve --bucket`), and returns its index.
    pub fn add_node(&mut self, id: &str) -> usize {
        let data = self.node_dir(id);
        let o = self.options.clone();
        let node = self.spawn(
            id,
            &data,
            &[
                "--node-id",
                id,
                "--checkpoint-key",
                self.checkpoint_key.to_str().unwrap(),
                "--lease-ttl",
                &ms(o.lease_ttl),
                "--flush-interval",
                &ms(o.flush_interval),
                "--ack-timeout",
                &ms(o.ack_timeout),
                "--request-timeout",
                &o.request_timeout.as_secs().to_string(),
                "--segment-bytes",
                &o.segment_bytes.to_string(),
            ],
            true,
        );
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a read-only replica `id` (`serve --read-only --bucket`),
    /// polling the bucket every `poll_interval`; returns its index.
    pub fn add_read_only(&mut self, id: &str, poll_interval: Duration) -> usize {
        let data = self.node_dir(id);
        let node = self.spawn(
            id,
            &data,
            &[
                "--read-only",
                "--checkpoint-vkey",
                self.checkpoint_pub.to_str().unwrap(),
                "--poll-interval",
                &ms(poll_interval),
            ],
            false,
        );
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn spawn(&self, id: &str, data: &Path, extra: &[&str], advertise: bool) -> Node {
        // A free port, chosen here because --advertise must name it.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut command = Command::new(env!("CARGO_BIN_EXE_chainlog"));
        command
            .args(["serve", "--bucket", &self.url(), "--endpoint"])
            .arg(self.proxy.endpoint())
            .arg("--data")
            .arg(data)
            .args(["--listen", &addr.to_string()])
            .args(extra)
            .env_remove("CHAINLOG_DIR")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.ceph.env())
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint());
        if advertise {
            command.args(["--advertise", &format!("http://{addr}")]);
        }
        let stderr_path = self.dir.path().join(format!("{id}.stderr"));
        let (child, first) = spawn_listening(command, &stderr_path);
        assert!(
            first.starts_with("listening on "),
            "{id}: unexpected first line {first:?}"
        );
        Node {
            id: id.to_string(),
            addr,
            data: data.to_path_buf(),
            child: Some(child),
            stderr_path,
        }
    }

    /// The node `id`.
    pub fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node's stderr, for a failure's message.
    pub fn stderrs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.id, n.stderr()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (up to 30 s) until `n` nodes have written
    /// `PREFIX/nodes/<id>.json`, so that placement sees all of them.
    pub fn wait_registered(&self, n: usize) {
        let prefix = format!("{}/nodes", self.prefix);
        self.wait_for(Duration::from_secs(30), "the nodes to register", || {
            (self.ceph.objects(&prefix).len() >= n).then_some(())
        });
    }

    /// Polls `check` every 50 ms until it gives a value or `timeout` runs
    /// out (then fails the test with the nodes' stderr).
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}\n{}",
                self.stderrs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The object `PREFIX/KEY`, read directly from radosgw; None when
    /// there is none.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        get_object(&self.ceph.endpoint(), &format!("{}/{key}", self.prefix))
    }

    /// Workspace `w`'s lease object.
    pub fn lease(&self, w: &str) -> Option<LeaseSeen> {
        let bytes = self.object(&format!("ws/{w}/lease.json"))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        Some(LeaseSeen {
            holder: v["holder"].as_str().unwrap().to_string(),
            epoch: v["epoch"].as_u64().unwrap(),
            expires_at_ms: v["expires_at_ms"].as_u64().unwrap(),
        })
    }

    /// Workspace `w`'s published head.
    pub fn head(&self, w: &str) -> Option<HeadSeen> {
        head_at(
            &self.ceph.endpoint(),
            &format!("{}/ws/{w}/head.json", self.prefix),
        )
    }

    /// `chainlog ARGS` with radosgw's endpoint and the test credentials,
    /// and the `--from` readers' cache in a directory of its own, removed
    /// afterwards (a workspace's rebuilt segment takes 64 MiB).
    pub fn cli(&self, args: &[&str]) -> Output {
        let cache = tempfile::tempdir_in(self.dir.path()).unwrap();
        self.ceph
            .command(args)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap()
    }

    /// `chainlog COMMAND… --from s3://…/ws/W --checkpoint-public-key KEY`
    /// (reading up to the published head); its stdout, or a failed test
    /// with its stderr.
    pub fn read_from(&self, w: &str, command: &[&str]) -> String {
        let (url, key) = (self.workspace_url(w), self.checkpoint_pub.to_str().unwrap());
        let mut args = command.to_vec();
        args.extend(["--from", &url, "--checkpoint-public-key", key]);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every record of `w` up to its published head, as `chainlog export
    /// --format jsonl --from` reads it from the bucket.
    pub fn export(&self, w: &str) -> Vec<Row> {
        self.read_from(w, &["export", "--format", "jsonl"])
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                Row {
                    seq: v["seq"].as_u64().unwrap(),
                    hash: v["hash"].as_str().unwrap().to_string(),
                    tag: v["context"]["tag"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// `chainlog verify --from s3://…/ws/W`, against the published head's
    /// checkpoint (so a truncated log fails too); panics unless intact.
    pub fn verify(&self, w: &str) -> String {
        let head = self.head(w).unwrap_or_else(|| panic!("{w} has no head"));
        let checkpoint = self.write_file(&format!("{w}.checkpoint"), &head.checkpoint);
        let key = self.checkpoint_pub.to_str().unwrap();
        let checkpoint = checkpoint.to_str().unwrap();
        self.read_from(
            w,
            &["verify", "--checkpoint", checkpoint, "--public-key", key],
        )
    }

    /// A file in the test's directory holding `text`.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The object `key` of [`BUCKET`] at `endpoint`; None when there is none.
pub fn get_object(endpoint: &str, key: &str) -> Option<Vec<u8>> {
    let (store, runtime) = s3::client(endpoint, BUCKET);
    let path = object_store::path::Path::from(key);
    match runtime.block_on(async { store.get(&path).await?.bytes().await }) {
        Ok(bytes) => Some(bytes.to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading {key}: {e}"),
    }
}

fn parse_head(bytes: &[u8]) -> HeadSeen {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    HeadSeen {
        epoch: v["epoch"].as_u64().unwrap(),
        size: v["size"].as_u64().unwrap(),
        root: v["root"].as_str().unwrap().to_string(),
        checkpoint: v["checkpoint"].as_str().unwrap().to_string(),
    }
}

fn head_at(endpoint: &str, key: &str) -> Option<HeadSeen> {
    get_object(endpoint, key).map(|b| parse_head(&b))
}

/// Polls a workspace's `head.json` every 20 ms from a thread and keeps
/// every distinct head it sees.
pub struct HeadWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<HeadSeen>>,
}

impl HeadWatch {
    pub fn start(cluster: &Cluster, w: &str) -> HeadWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (endpoint, key) = (
            cluster.ceph.endpoint(),
            format!("{}/ws/{w}/head.json", cluster.prefix),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (store, runtime) = s3::client(&endpoint, BUCKET);
            let path = object_store::path::Path::from(key);
            let mut seen: Vec<HeadSeen> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match runtime.block_on(async { store.get(&path).await?.bytes().await }) {
                    Ok(bytes) => {
                        let head = parse_head(&bytes);
                        if seen.last() != Some(&head) {
                            seen.push(head);
                        }
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => panic!("polling the head: {e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        HeadWatch { stop, thread }
    }

    /// Stops polling; the heads seen, in the order seen.
    pub fn finish(self) -> Vec<HeadSeen> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// One answer to one POST of the load client.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub client: usize,
    pub target: SocketAddr,
    pub sent_at: Instant,
    pub done_at: Instant,
    /// The HTTP status, or None when the connection failed.
    pub status: Option<u16>,
    /// The answer's body, or the connection error.
    pub body: String,
    /// With a 201: `(seq, hash)` of each event, in the order sent.
    pub receipts: Vec<(u64, String)>,
    /// The tags of the events sent (`context.tag`).
    pub tags: Vec<String>,
}

impl Outcome {
    pub fn latency(&self) -> Duration {
        self.done_at - self.sent_at
    }
}

/// A JSON event tagged `tag` (in `context.tag`).
pub fn event_json(tag: &str) -> String {
    format!(
        r#"{{"event":"pcap.download","actor":"load@acme.io","node":"nyc-edge-01","resource":"a3f7c2b1","ip":"203.0.113.42","context":{{"bytes":18231,"tag":"{tag}"}}}}"#
    )
}

/// POSTs `body` to `POST /v1/workspaces/W/events` at `addr` on a fresh
/// connection, with `extra` headers; the status and body, or the error.
pub fn post_events(
    addr: SocketAddr,
    w: &str,
    key: &str,
    body: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let headers: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "POST /v1/workspaces/{w}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    // A forwarded answer streams on, in chunks.
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut chunks: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = chunks.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        body.push_str(&rest[..n]);
        chunks = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    body
}

/// `GET PATH` at `addr` with `key`; the status and body parsed as JSON
/// (Null when it is not).
pub fn get_json(addr: SocketAddr, path: &str, key: &str) -> (u16, Value) {
    let (status, body) = server::raw_get(addr, path, Some(key));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The receipts of a 201's body.
pub fn receipts(body: &str) -> Vec<(u64, String)> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["receipts"]
        .as_array()
        .unwrap_or_else(|| panic!("no receipts in {body}"))
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Clients POSTing batches of tagged events to a workspace from threads,
/// recording every answer.
pub struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a [`Load`] sends.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The nodes to send to: client `c` starts at `targets[c % len]` and
    /// moves to the next when a connection fails.
    pub targets: Vec<SocketAddr>,
    pub workspace: String,
    pub key: String,
    pub clients: usize,
    /// Events per POST.
    pub batch: usize,
    /// Tags are `TAG-CLIENT-REQUEST-I`.
    pub tag: String,
    /// A client starts a POST every `interval` (when the last one was
    /// answered in time); zero: as fast as answers come.
    pub interval: Duration,
    /// How long a POST may take.
    pub timeout: Duration,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..spec.clients)
            .map(|client| {
                let (spec, stop, acknowledged, outcomes) = (
                    spec.clone(),
                    stop.clone(),
                    acknowledged.clone(),
                    outcomes.clone(),
                );
                std::thread::spawn(move || {
                    let mut target = client % spec.targets.len();
                    let mut request = 0u64;
                    let mut next = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        if !spec.interval.is_zero() {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            next = next.max(now) + spec.interval;
                        }
                        let tags: Vec<String> = (0..spec.batch)
                            .map(|i| format!("{}-{client}-{request}-{i}", spec.tag))
                            .collect();
                        request += 1;
                        let items: Vec<String> = tags.iter().map(|t| event_json(t)).collect();
                        let body = format!("[{}]", items.join(","));
                        let addr = spec.targets[target];
                        let sent_at = Instant::now();
                        let answer =
                            post_events(addr, &spec.workspace, &spec.key, &body, &[], spec.timeout);
                        let done_at = Instant::now();
                        let (status, body) = match answer {
                            Ok((status, body)) => (Some(status), body),
                            Err(e) => {
                                target = (target + 1) % spec.targets.len();
                                (None, e.to_string())
                            }
                        };
                        let got = if status == Some(201) {
                            receipts(&body)
                        } else {
                            Vec::new()
                        };
                        acknowledged.fetch_add(got.len() as u64, Ordering::SeqCst);
                        outcomes.lock().unwrap().push(Outcome {
                            client,
                            target: addr,
                            sent_at,
                            done_at,
                            status,
                            body: if status == Some(201) {
                                String::new()
                            } else {
                                body
                            },
                            receipts: got,
                            tags,
                        });
                        if status != Some(201) {
                            // Not a busy loop of refusals while a node
                            // takes over.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            outcomes,
            threads,
        }
    }

    /// Events acknowledged (201) so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// The answers so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) until at least `n` more events than now
    /// are acknowledged; false if they were not.
    pub fn wait_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.acknowledged() + n;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The answers other than 201 so far, by status (or `connection`),
    /// each with the last body seen: for a failure's message.
    pub fn errors(&self) -> BTreeMap<String, (usize, String)> {
        let mut errors: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for o in self.outcomes.lock().unwrap().iter() {
            if o.status != Some(201) {
                let kind = o.status.map_or("connection".into(), |s| s.to_string());
                let entry = errors.entry(kind).or_default();
                entry.0 += 1;
                entry.1 = o.body.clone();
            }
        }
        errors
    }

    /// Waits as [`Load::wait_more`]; fails the test, with the errors seen
    /// and the nodes' stderr, if the events were not acknowledged.
    pub fn expect_more(&self, n: u64, timeout: Duration, what: &str, cluster: &Cluster) {
        if !self.wait_more(n, timeout) {
            panic!(
                "{what}: fewer than {n} events acknowledged in {timeout:?}; answers other than \
                 201: {:?}\n{}",
                self.errors(),
                cluster.stderrs()
            );
        }
    }

    /// Stops the clients (each finishes its POST) and returns every answer.
    pub fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

/// Every `(seq, hash)` receipt of `outcomes`, by seq; panics if a seq was
/// receipted twice with different hashes (a fork a client saw).
pub fn receipted(outcomes: &[Outcome]) -> BTreeMap<u64, (String, String)> {
    let mut map = BTreeMap::new();
    for o in outcomes {
        for ((seq, hash), tag) in o.receipts.iter().zip(&o.tags) {
            if let Some((old_hash, old_tag)) = map.insert(*seq, (hash.clone(), tag.clone())) {
                panic!("seq {seq} receipted twice: {old_hash} ({old_tag}) and {hash} ({tag})");
            }
        }
    }
    map
}

/// Asserts that every receipt is in `rows` with its hash and its event
/// (by tag); returns how many rows have no receipt.
pub fn assert_receipts_present(receipts: &BTreeMap<u64, (String, String)>, rows: &[Row]) -> usize {
    let by_seq: BTreeMap<u64, &Row> = rows.iter().map(|r| (r.seq, r)).collect();
    for (seq, (hash, tag)) in receipts {
        let row = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("receipted seq {seq} ({tag}) is not in the bucket"));
        assert_eq!(
            &row.hash, hash,
            "seq {seq}: hash in the bucket differs from the receipt"
        );
        assert_eq!(
            row.tag.as_deref(),
            Some(tag.as_str()),
            "seq {seq}: another event"
        );
    }
    rows.iter()
        .filter(|r| !receipts.contains_key(&r.seq))
        .count()
}

/// The `p` quantile (0..=1) of `values`, or zero when empty.
pub fn quantile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}
