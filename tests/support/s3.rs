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

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the objects under `prefix`.
    pub fn objects_dir(&self, prefix: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }

    /// The object files under `prefix`, relative, sorted.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
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

    pub fn target(&self, prefix: &str) -> ArchiveTarget {
        ArchiveTarget::parse(&format!("s3://{BUCKET}/{prefix}"))
            .unwrap()
            .with_endpoint(Some(self.endpoint()))
    }

    /// `chainlog ARGS` with the server's endpoint and credentials in the
    /// environment.
    pub fn command(&self, args: &[&str]) -> Command {
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
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
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
