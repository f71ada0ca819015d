//! Workspaces: one log each, under `DIR/workspaces/<name>/`, plus the
//! server's own log `DIR/server-log/` for refused requests that target no
//! existing workspace.
//!
//! Logs are opened on first use and kept open (with
//! [`Durability::Always`]): concurrent appends to a workspace share its
//! `fdatasync`s through the library's group commit. Each open workspace
//! log has its `Committer`, started with it and stopped before it
//! closes, through which `POST …/events` appends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Error;
use crate::log::{Durability, Log, Options};
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
}

/// The open logs of a data directory.
#[derive(Debug)]
pub struct Workspaces {
    data_dir: PathBuf,
    logs: Mutex<HashMap<String, Open>>,
    server_log: Mutex<Option<Arc<Log>>>,
    /// Held while a log is opened or created, so two requests never race
    /// to create the same one.
    opening: Mutex<()>,
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
            opening: Mutex::new(()),
        }
    }

    /// A workspace's log directory (the name must be valid).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(WORKSPACES_DIR_NAME).join(name)
    }

    /// The server log's directory.
    pub fn server_log_dir(&self) -> PathBuf {
        self.data_dir.join(SERVER_LOG_DIR_NAME)
    }

    /// The workspace's log when it is open already (no I/O).
    pub fn cached(&self, name: &str) -> Option<Arc<Log>> {
        self.logs.lock().get(name).map(|open| open.log.clone())
    }

    /// The workspace's log, opened if needed; `None` when the workspace
    /// does not exist (and `create` is false). Blocking.
    pub fn open(&self, name: &str, create: bool) -> Result<Option<Arc<Log>>, Error> {
        Ok(self.open_workspace(name, create)?.map(|open| open.log))
    }

    /// The workspace's log and commit queue when they are open already.
    pub(crate) fn cached_open(&self, name: &str) -> Option<Open> {
        self.logs.lock().get(name).cloned()
    }

    /// The open workspaces, by name.
    pub(crate) fn open_list(&self) -> Vec<(String, Open)> {
        let mut open: Vec<(String, Open)> = self
            .logs
            .lock()
            .iter()
            .map(|(name, open)| (name.clone(), open.clone()))
            .collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        open
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
        let _opening = self.opening.lock();
        if let Some(open) = self.cached_open(name) {
            return Ok(Some(open));
        }
        let dir = self.dir(name);
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
        };
        self.logs.lock().insert(name.to_string(), open.clone());
        Ok(Some(open))
    }

    /// The server's own log, created on first use. Blocking.
    pub fn server_log(&self) -> Result<Arc<Log>, Error> {
        if let Some(log) = self.server_log.lock().clone() {
            return Ok(log);
        }
        let _opening = self.opening.lock();
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
        let mut logs: Vec<(String, Arc<Log>)> = open
            .into_iter()
            .map(|(name, workspace)| (name, workspace.log))
            .collect();
        if let Some(log) = self.server_log.lock().take() {
            logs.push((SERVER_LOG_DIR_NAME.to_string(), log));
        }
        let deadline = Instant::now() + grace;
        let mut failures = Vec::new();
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
