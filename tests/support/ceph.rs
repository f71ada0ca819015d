//! Ceph's radosgw for the tests: an S3 server that enforces conditional
//! writes atomically (tests/cluster_lease.rs), and the second server the
//! archive tests run against (tests/archive.rs). `scripts/ceph-server.sh
//! start DIR` brings up one monitor, one in-memory OSD and radosgw on a free
//! loopback port, with the same credentials and bucket as s3s-fs
//! (support/s3.rs).
//!
//! [`CephServer::shared`] is the one `scripts/test.sh` started for every
//! test binary (it exports [`SHARED_PORT_VAR`]; so every prefix a test
//! writes must be unique across test binaries: start it with the file's
//! name), or else one started for this binary; [`CephServer::start`] one for
//! a test that stops it. A server started here has a `ceph-server.sh stop-on-eof
//! DIR` child holds the read end of a pipe whose write end this process
//! holds: when the server is dropped, or the test process ends however it
//! ends, the daemons are stopped and DIR removed.
//!
//! Without the Debian packages (and when they cannot be installed), the
//! tests are skipped after a loud note, unless `CHAINLOG_REQUIRE_CEPH` is set
//! (as `scripts/test.sh` does), when they fail.
//!
//! A test binary using this declares `mod s3;` and `mod tools;` (from
//! support/s3.rs and support/tools.rs) at its root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::s3::TestS3;
use crate::tools;

pub const REQUIRE_VAR: &str = "CHAINLOG_REQUIRE_CEPH";
/// The port of a radosgw that `scripts/test.sh` started for all test
/// binaries, and stops after them.
pub const SHARED_PORT_VAR: &str = "CHAINLOG_CEPH_PORT";
/// The bucket anyone may write (see scripts/ceph-server.sh).
pub const OPEN_BUCKET: &str = "audit-open";
/// The bucket with Object Lock enabled, hence versioned: where Ceph 16
/// ignores `If-None-Match` and refuses every `If-Match`.
pub const LOCKED_BUCKET: &str = "audit-locked";

/// A running one-node Ceph with radosgw.
pub struct CephServer {
    dir: PathBuf,
    pub port: u16,
    /// How long `ceph-server.sh start` took, by its own count.
    pub startup_ms: u64,
    /// `ceph-server.sh stop-on-eof DIR`, reading our end of its stdin.
    watcher: Option<Child>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-server.sh")
}

impl CephServer {
    /// Starts a fresh server, stopped when dropped; `None` (after a loud
    /// note) without Ceph and without `CHAINLOG_REQUIRE_CEPH`.
    pub fn start() -> Option<CephServer> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chainlog-ceph-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let dir_text = dir.to_str().unwrap().to_string();
        // First the watcher, so that nothing outlives this process.
        let mut watcher = Command::new(script())
            .args(["stop-on-eof", &dir_text])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ceph-server.sh stop-on-eof");
        let out = tools::install(
            "scripts/ceph-server.sh",
            &["start", &dir_text],
            REQUIRE_VAR,
            "Ceph (Debian's ceph-mon, ceph-osd and radosgw)",
        );
        let Some(out) = out else {
            drop(watcher.stdin.take());
            let _ = watcher.wait();
            return None;
        };
        let value = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("ceph-server.sh start printed no {name}=: {out}"))
                .to_string()
        };
        let server = CephServer {
            dir,
            port: value("PORT").parse().unwrap(),
            startup_ms: value("STARTUP_MS").parse().unwrap(),
            watcher: Some(watcher),
        };
        eprintln!(
            "Ceph radosgw on {} (started in {} ms)",
            server.endpoint(),
            server.startup_ms
        );
        Some(server)
    }

    /// The server of every test binary (`scripts/test.sh`'s, see
    /// [`SHARED_PORT_VAR`]), else this binary's, started by the first caller.
    pub fn shared() -> Option<&'static CephServer> {
        static SHARED: OnceLock<Option<CephServer>> = OnceLock::new();
        SHARED
            .get_or_init(|| CephServer::started_by_script().or_else(CephServer::start))
            .as_ref()
    }

    /// The server `scripts/test.sh` started, if it did: not stopped here.
    fn started_by_script() -> Option<CephServer> {
        let port = std::env::var(SHARED_PORT_VAR).ok()?;
        let port = port
            .parse()
            .unwrap_or_else(|_| panic!("{SHARED_PORT_VAR}={port:?} is not a port"));
        eprintln!("Ceph radosgw on 127.0.0.1:{port} (scripts/test.sh's)");
        Some(CephServer {
            dir: PathBuf::new(),
            port,
            startup_ms: 0,
            watcher: None,
        })
    }

    /// The directory holding its configuration, pid files and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl TestS3 for CephServer {
    fn name(&self) -> &'static str {
        "ceph"
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn locked_bucket(&self) -> &'static str {
        LOCKED_BUCKET
    }
}

impl Drop for CephServer {
    fn drop(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            drop(watcher.stdin.take()); // EOF: the watcher stops the daemons
            let _ = watcher.wait();
        }
    }
}

/// One test body, two tests: `NAME::s3s_fs` against a fresh s3s-fs and
/// `NAME::ceph` against the binary's Ceph radosgw.
#[allow(unused_macros)]
macro_rules! on_both_servers {
    ($(#[$attr:meta])* fn $name:ident($server:ident: &dyn TestS3) $body:block) => {
        $(#[$attr])*
        mod $name {
            use super::*;

            fn body($server: &dyn TestS3) $body

            #[test]
            fn s3s_fs() {
                if let Some(server) = S3Server::start() {
                    body(&server);
                }
            }

            #[test]
            fn ceph() {
                if let Some(server) = CephServer::shared() {
                    body(server);
                }
            }
        }
    };
}
