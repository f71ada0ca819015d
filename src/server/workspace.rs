//! Workspaces: one log each, under `DIR/workspaces/<name>/`, plus the
//! server's own log `DIR/server-log/` for refused requests that target no
//! existing workspace.
//!
//! Logs are opened on first use and kept open (with
//! [`Durability::Always`]): concurrent appends to a workspace share its
//! `fdatasync`s through the library's group commit. Each open workspace
//! log has its `Committer`, started with it and stopped before it
//! closes, through which `POST …/events` appends.
//!
//! Serving from a bucket ([`crate::server::cluster`]), a workspace's log is
//! a replicated writer's (appends answered once in the bucket) or a
//! follower's (read-only); the directory is a cache of the bucket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Error;
use crate::log::{Durability, Log, Options};
#[cfg(feature = "s3")]
use crate::server::cluster;
use crate::server::commit::Committer;

/// The folder under the data directory that holds the workspaces.
pub const WORKSPACES_DIR_NAME: &str = "workspaces";
/// The server's own log, under the data directory.
pub const SERVER_LOG_DIR_NAME: &str = "server-log";
/// Longest workspace name.
pub const MAX_WORKSPACE_NAME_BYTES: usize = 63;

/// A workspace name that is not `[a-z0-9][a-z0-9_-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workspace name {shown:?}: a workspace name is 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit")]
pub struct WorkspaceNameError {
    /// The name, cut to 80 characters.
    pub shown: String,
}

/// Checks a workspace name: `[a-z0-9][a-z0-9_-]{0,62}`. Nothing else can
/// reach the file system, so `..`, `/`, `%2e`, upper case and the empty
/// name are all refused.
pub fn validate_workspace_name(name: &str) -> Result<(), WorkspaceNameError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_WORKSPACE_NAME_BYTES
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(WorkspaceNameError {
            shown: name.chars().take(80).collect(),
        })
    }
}

/// An open workspace: its log and the commit queue in front of it.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) log: Arc<Log>,
    pub(crate) committer: Arc<Committer>,
    /// Served from a bucket: the replicated writer or the follower.
    #[cfg(feature = "s3")]
    pub(crate) held: Option<cluster::Held>,
}

impl Open {
    /// The copy a request gets: a follower's log at its newest head, and
    /// no share of the replicated writer or the follower, which only the
    /// map holds (their bucket connections must not be dropped last by a
    /// request on the async runtime).
    fn fresh(mut self) -> Open {
        #[cfg(feature = "s3")]
        if let Some(cluster::Held::Reader(follower)) = self.held.take() {
            if let Ok((log, _)) = follower.log() {
                self.log = log;
            }
        }
        #[cfg(feature = "s3")]
        {
            self.held = None;
        }
        self
    }
}

/// The open logs of a data directory.
#[derive(Debug)]
pub struct Workspaces {
    data_dir: PathBuf,
    logs: Mutex<HashMap<String, Open>>,
    server_log: Mutex<Option<Arc<Log>>>,
    /// Held while a log is opened or created, so two requests never race
    /// to create the same one: one lock per log (the server's log under
    /// the empty name), so that a slow open (a takeover rebuilding from a
    /// bucket) holds up no other log.
    opening: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Serving from a bucket.
    #[cfg(feature = "s3")]
    cluster: Option<Arc<cluster::Cluster>>,
}

/// How the server opens (or creates) the log in `dir`: durably, and with
/// the segment size the log already has (one made with `chainlog init
/// --segment-bytes` keeps its size).
fn options(dir: &Path) -> Result<Options, Error> {
    let mut options = Options {
        durability: Durability::Always,
        ..Options::default()
    };
    if let Some(bytes) = Log::newest_segment_bytes(dir)? {
        options.segment_bytes = bytes;
    }
    Ok(options)
}

impl Workspaces {
    /// The workspaces of the data directory `data_dir`.
    pub fn new(data_dir: &Path) -> Workspaces {
        Workspaces {
            data_dir: data_dir.to_path_buf(),
            logs: Mutex::new(HashMap::new()),
            server_log: Mutex::new(None),
            opening: Mutex::new(HashMap::new()),
            #[cfg(feature = "s3")]
            cluster: None,
        }
    }

    /// The same, serving every workspace from the bucket of `cluster`.
    #[cfg(feature = "s3")]
    pub(crate) fn with_cluster(mut self, cluster: Arc<cluster::Cluster>) -> Workspaces {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster the workspaces are served from, if any.
    #[cfg(feature = "s3")]
    pub(crate) fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether the logs are read-only replicas: the server then records its
    /// own events (refusals, reads) in its own log.
    fn read_only(&self) -> bool {
        #[cfg(feature = "s3")]
        if let Some(cluster) = &self.cluster {
            return cluster.is_read_only();
        }
        false
    }

    /// A workspace's log directory (the name must be valid).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(WORKSPACES_DIR_NAME).join(name)
    }

    /// The server log's directory.
    pub fn server_log_dir(&self) -> PathBuf {
        self.data_dir.join(SERVER_LOG_DIR_NAME)
    }

    /// The workspace's log when it is open already (no I/O), to write the
    /// server's own events in; `None` on a read-only replica.
    pub fn cached(&self, name: &str) -> Option<Arc<Log>> {
        if self.read_only() {
            return None;
        }
        self.logs.lock().get(name).map(|open| open.log.clone())
    }

    /// The workspace's log, opened if needed, to write the server's own
    /// events in; `None` when the workspace does not exist (and `create` is
    /// false), and on a read-only replica. Blocking. A cluster node writes
    /// only in the workspaces it holds: it never takes one over for its own
    /// events (they go to the server's log instead).
    pub fn open(&self, name: &str, create: bool) -> Result<Option<Arc<Log>>, Error> {
        if self.read_only() {
            return Ok(None);
        }
        #[cfg(feature = "s3")]
        if self.cluster.is_some() {
            return Ok(self.logs.lock().get(name).map(|open| open.log.clone()));
        }
        Ok(self.open_workspace(name, create)?.map(|open| open.log))
    }

    /// The workspace's log and commit queue when they are open already.
    pub(crate) fn cached_open(&self, name: &str) -> Option<Open> {
        self.logs.lock().get(name).cloned().map(Open::fresh)
    }

    /// The open workspaces, by name.
    pub(crate) fn open_list(&self) -> Vec<(String, Open)> {
        let mut open: Vec<(String, Open)> = self
            .logs
            .lock()
            .iter()
            .map(|(name, open)| (name.clone(), open.clone().fresh()))
            .collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        open
    }

    /// The replicated writers held here, by name (call it off the async
    /// runtime: the last share of a writer may go with the list).
    #[cfg(feature = "s3")]
    pub(crate) fn writers(&self) -> Vec<(String, Arc<crate::cluster::Replicated>)> {
        self.logs
            .lock()
            .iter()
            .filter_map(|(name, open)| match &open.held {
                Some(cluster::Held::Writer(replica)) => Some((name.clone(), replica.clone())),
                _ => None,
            })
            .collect()
    }

    /// The workspace's log and commit queue, opening the log if needed;
    /// `None` as for [`Workspaces::open`]. Blocking.
    pub(crate) fn open_workspace(&self, name: &str, create: bool) -> Result<Option<Open>, Error> {
        if let Some(open) = self.cached_open(name) {
            return Ok(Some(open));
        }
        if validate_workspace_name(name).is_err() {
            return Ok(None);
        }
        let opening = self.opening_lock(name);
        let _opening = opening.lock();
        if let Some(open) = self.cached_open(name) {
            return Ok(Some(open));
        }
        let dir = self.dir(name);
        #[cfg(feature = "s3")]
        if let Some(cluster) = &self.cluster {
            return self
                .open_from_bucket(cluster, name, &dir, create)
                .map_err(|e| Error::io(&dir, std::io::Error::other(e.to_string())));
        }
        // Only look in a directory that exists: opening takes a lock file,
        // which would create an empty directory's worth of litter.
        let log = if dir.is_dir() {
            match Log::open(&dir, options(&dir)?) {
                Ok(log) => Some(log),
                Err(Error::NotFound(_)) if create => Some(Log::create(&dir, options(&dir)?)?),
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            }
        } else if create {
            Some(Log::create(&dir, options(&dir)?)?)
        } else {
            None
        };
        let Some(log) = log else { return Ok(None) };
        let log = Arc::new(log);
        let open = Open {
            committer: Arc::new(Committer::start(name, log.clone())?),
            log,
            #[cfg(feature = "s3")]
            held: None,
        };
        self.logs.lock().insert(name.to_string(), open.clone());
        Ok(Some(open))
    }

    /// Opens `name` from the cluster's bucket (with `opening` held).
    #[cfg(feature = "s3")]
    fn open_from_bucket(
        &self,
        cluster: &cluster::Cluster,
        name: &str,
        dir: &Path,
        create: bool,
    ) -> Result<Option<Open>, crate::cluster::ClusterError> {
        let Some(opened) = cluster.open(name, dir, create)? else {
            return Ok(None);
        };
        let committer = Committer::start_replicated(name, opened.log.clone(), opened.replication)?;
        let open = Open {
            committer: Arc::new(committer),
            log: opened.log,
            held: Some(opened.held),
        };
        self.logs.lock().insert(name.to_string(), open.clone());
        Ok(Some(Open { held: None, ..open }))
    }

    /// Takes workspace `name` over from the bucket when it exists there and
    /// is not open here: true when it is held here now. Blocking.
    #[cfg(feature = "s3")]
    pub(crate) fn take(&self, name: &str) -> Result<bool, crate::cluster::ClusterError> {
        let Some(cluster) = &self.cluster else {
            return Ok(false);
        };
        if self.logs.lock().contains_key(name) {
            return Ok(true);
        }
        let opening = self.opening_lock(name);
        let _opening = opening.lock();
        if self.logs.lock().contains_key(name) {
            return Ok(true);
        }
        Ok(self
            .open_from_bucket(cluster, name, &self.dir(name), false)?
            .is_some())
    }

    /// Stops serving workspace `name` (its writer was fenced): its commit
    /// queue is closed and the writer closed on a thread of its own, once
    /// the requests using its log let go of it (or after 10 s, dropped).
    #[cfg(feature = "s3")]
    pub(crate) fn let_go(&self, name: &str) {
        let Some(open) = self.logs.lock().remove(name) else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name(format!("let-go-{name}"))
            .spawn(move || {
                open.committer.close();
                if let Some(cluster::Held::Writer(replica)) = open.held {
                    drop(open.log);
                    if let Err(e) = close_replica(replica, Duration::from_secs(10)) {
                        eprintln!("chainlog serve: closing a fenced workspace: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("chainlog serve: letting go of workspace {name}: {e}");
        }
    }

    /// The lock held while the log `name` is opened.
    fn opening_lock(&self, name: &str) -> Arc<Mutex<()>> {
        self.opening
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The server's own log, created on first use. Blocking.
    pub fn server_log(&self) -> Result<Arc<Log>, Error> {
        if let Some(log) = self.server_log.lock().clone() {
            return Ok(log);
        }
        let opening = self.opening_lock("");
        let _opening = opening.lock();
        if let Some(log) = self.server_log.lock().clone() {
            return Ok(log);
        }
        let dir = self.server_log_dir();
        let log = match Log::open(&dir, options(&dir)?) {
            Ok(log) => log,
            Err(Error::NotFound(_)) => Log::create(&dir, options(&dir)?)?,
            Err(e) => return Err(e),
        };
        let log = Arc::new(log);
        *self.server_log.lock() = Some(log.clone());
        Ok(log)
    }

    /// Closes every open log (syncing it), waiting up to `grace` for
    /// requests still holding one. A log still in use after that is synced
    /// instead. Returns what failed, by log. Blocking.
    ///
    /// Each commit queue is closed first: what it holds is appended (and
    /// synced) and its thread lets go of the log.
    pub fn close_all(&self, grace: Duration) -> Vec<(String, Error)> {
        let open: Vec<(String, Open)> = self.logs.lock().drain().collect();
        for (_, workspace) in &open {
            workspace.committer.close();
        }
        let deadline = Instant::now() + grace;
        let mut failures = Vec::new();
        let mut logs: Vec<(String, Arc<Log>)> = Vec::new();
        for (name, workspace) in open {
            #[cfg(feature = "s3")]
            match workspace.held {
                Some(cluster::Held::Writer(replica)) => {
                    drop(workspace.log);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Err(e) = close_replica(replica, left) {
                        failures.push((
                            name,
                            Error::io(self.dir(""), std::io::Error::other(e.to_string())),
                        ));
                    }
                    continue;
                }
                // A follower's log is read-only: nothing to sync.
                Some(cluster::Held::Reader(_)) => continue,
                None => {}
            }
            logs.push((name, workspace.log));
        }
        if let Some(log) = self.server_log.lock().take() {
            logs.push((SERVER_LOG_DIR_NAME.to_string(), log));
        }
        for (name, mut log) in logs {
            let result = loop {
                match Arc::try_unwrap(log) {
                    Ok(owned) => break owned.close(),
                    Err(shared) if Instant::now() >= deadline => break shared.sync(),
                    Err(shared) => {
                        log = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            };
            if let Err(e) = result {
                failures.push((name, e));
            }
        }
        failures
    }
}

/// Closes a replicated writer (uploading what is pending, releasing its
/// lease) once nothing else holds it, waiting up to `grace`; after that it
/// is dropped (its lease then expires).
#[cfg(feature = "s3")]
fn close_replica(
    mut replica: Arc<crate::cluster::Replicated>,
    grace: Duration,
) -> Result<(), crate::cluster::ClusterError> {
    let deadline = Instant::now() + grace;
    loop {
        match Arc::try_unwrap(replica) {
            Ok(owned) => return owned.close(),
            Err(shared) if Instant::now() >= deadline => {
                drop(shared);
                return Ok(());
            }
            Err(shared) => {
                replica = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names() {
        for good in ["a", "acme", "acme-prod_2", "0", &"a".repeat(63)] {
            assert!(validate_workspace_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/a",
            "%2e%2e",
            "Acme",
            "-a",
            "_a",
            "a.b",
            "a b",
            "a\0",
            &"a".repeat(64),
            "é",
        ] {
            assert!(validate_workspace_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn open_never_creates_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspaces::new(dir.path());
        assert!(ws.open("acme", false).unwrap().is_none());
        assert!(!ws.dir("acme").exists());
        let log = ws.open("acme", true).unwrap().unwrap();
        log.append(&crate::Event::new(crate::Timestamp::now(), "a.b", "x"))
            .unwrap();
        drop(log);
        assert!(ws.close_all(Duration::from_secs(1)).is_empty());
        let again = Workspaces::new(dir.path());
        assert_eq!(
            again.open("acme", false).unwrap().unwrap().state().next_seq,
            1
        );
    }
}
