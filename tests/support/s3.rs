//! A real S3 server for the tests that use one (tests/archive.rs,
//! tests/lake.rs): `s3s-fs` (which checks request signatures), installed by
//! `scripts/s3-server.sh install`, on a free loopback port with a fresh root
//! directory, killed on drop.
//!
//! Without the binary, [`S3Server::start`] returns `None` after a loud
//! note, unless `CHAINLOG_REQUIRE_S3` is set (as `scripts/test.sh` does),
//! when it panics.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chainlog::archive::ArchiveTarget;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "chainlog-test";
pub const SECRET_KEY: &str = "chainlog-test-secret";
pub const BUCKET: &str = "audit";

/// Where `s3s-fs` is: on PATH, or in cargo's bin directory.
pub fn s3s_fs_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// A running `s3s-fs` with its own root directory; killed on drop.
pub struct S3Server {
    binary: PathBuf,
    root: TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a server, or returns `None` (after a loud note) when the
    /// binary is missing and `CHAINLOG_REQUIRE_S3` is unset.
    pub fn start() -> Option<S3Server> {
        let Some(binary) = s3s_fs_binary() else {
            if std::env::var_os("CHAINLOG_REQUIRE_S3").is_some() {
                panic!("s3s-fs is not installed and CHAINLOG_REQUIRE_S3 is set: run scripts/s3-server.sh install");
            }
            eprintln!(
                "\n*** SKIPPED: s3s-fs is not installed, so the S3 archive tests did not run. ***\n*** Install it with scripts/s3-server.sh install (scripts/test.sh does). ***\n"
            );
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let mut server = S3Server {
            binary,
            root,
            port: 0,
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// (Re)starts the server on a free loopback port, on the same root.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..20 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&self.binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(self.root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start s3s-fs");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start");
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The directory holding the objects under `prefix`.
    pub fn objects_dir(&self, prefix: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }

    /// The object files under `prefix`, relative, sorted, read from the
    /// server's directory (so, also while the server is down).
    pub fn files(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(
                        path.strip_prefix(base)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        let base = self.objects_dir(prefix);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }
}

impl TestS3 for S3Server {
    fn name(&self) -> &'static str {
        "s3s-fs"
    }

    fn port(&self) -> u16 {
        self.port
    }
}

/// What the tests need of an S3 server, whichever it is (s3s-fs here, Ceph's
/// radosgw in support/ceph.rs): both use [`ACCESS_KEY`], [`SECRET_KEY`] and
/// the bucket [`BUCKET`]. Objects are read, changed and listed through the
/// S3 API, as someone with write access to the bucket would.
pub trait TestS3 {
    /// The server's name, for messages.
    fn name(&self) -> &'static str;

    /// Its loopback port.
    fn port(&self) -> u16;

    /// `http://127.0.0.1:PORT`.
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The bucket for Object Lock: [`BUCKET`] on s3s-fs (which ignores the
    /// lock headers).
    fn locked_bucket(&self) -> &'static str {
        BUCKET
    }

    fn target(&self, prefix: &str) -> ArchiveTarget {
        ArchiveTarget::parse(&format!("s3://{BUCKET}/{prefix}"))
            .unwrap()
            .with_endpoint(Some(self.endpoint()))
    }

    /// `chainlog ARGS` with the server's endpoint and credentials in the
    /// environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chainlog"));
        command
            .args(args)
            .env_remove("CHAINLOG_DIR")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.env())
            .stdin(Stdio::null());
        command
    }

    /// The credentials, region and endpoint a `chainlog` process needs.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// The keys under `prefix/` of [`BUCKET`], relative to it, sorted.
    fn objects(&self, prefix: &str) -> Vec<String> {
        self.objects_in(BUCKET, prefix)
    }

    /// The keys under `prefix/` of `bucket`, relative to it, sorted.
    fn objects_in(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (store, runtime) = client(&self.endpoint(), bucket);
        let base = format!("{}/", prefix.trim_end_matches('/'));
        let mut keys = Vec::new();
        let mut dirs = vec![object_store::path::Path::from(prefix)];
        while let Some(dir) = dirs.pop() {
            let listed = runtime
                .block_on(store.list_with_delimiter(Some(&dir)))
                .unwrap_or_else(|e| panic!("listing {dir}: {e}"));
            dirs.extend(listed.common_prefixes);
            keys.extend(listed.objects.into_iter().filter_map(|meta| {
                meta.location
                    .as_ref()
                    .strip_prefix(&base)
                    .map(str::to_string)
            }));
        }
        keys.sort();
        keys
    }

    /// The whole object `key` (under the bucket).
    fn read_object(&self, key: &str) -> Vec<u8> {
        let (store, runtime) = client(&self.endpoint(), BUCKET);
        let path = object_store::path::Path::from(key);
        runtime
            .block_on(async { store.get(&path).await?.bytes().await })
            .unwrap_or_else(|e| panic!("reading {key}: {e}"))
            .to_vec()
    }

    /// Writes `key` over whatever is there (plain PUT).
    fn write_object(&self, key: &str, bytes: Vec<u8>) {
        let (store, runtime) = client(&self.endpoint(), BUCKET);
        let path = object_store::path::Path::from(key);
        runtime
            .block_on(store.put(&path, PutPayload::from(bytes)))
            .unwrap_or_else(|e| panic!("writing {key}: {e}"));
    }

    fn delete_object(&self, key: &str) {
        let (store, runtime) = client(&self.endpoint(), BUCKET);
        let path = object_store::path::Path::from(key);
        runtime
            .block_on(store.delete(&path))
            .unwrap_or_else(|e| panic!("deleting {key}: {e}"));
    }
}

/// A plain object_store client for `bucket` at `endpoint`, with the test
/// credentials, and a runtime to drive it.
pub fn client(endpoint: &str, bucket: &str) -> (AmazonS3, tokio::runtime::Runtime) {
    let store = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (store, runtime)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sets the credentials for library calls in this process (every test
/// uses the same ones).
pub fn library_credentials() {
    // Every test sets the same values, so concurrent tests agree.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
}
