//! SIEM deliveries: owns `DIR/deliveries/` (each workspace's destinations
//! and their positions) and a task per destination in `chainlog serve`. Uses
//! the library's log and query, and the server's workspaces, parameters and API helpers.
//!
//! [`config`] is the destinations' file; [`worker`] sends matching records
//! in seq order, at least once, storing its [`position`] after each
//! acknowledged batch; [`send`] holds the webhook and Splunk HEC senders;
//! [`render`] the formats. The configuration file is the one source of
//! truth: the API (`PUT/DELETE …/deliveries/{name}`) and `chainlog
//! delivery` both change it under its lock, and a running server reads it
//! again every [`WATCH_INTERVAL`] (at once after a change through the API),
//! starting, restarting (a changed destination) and stopping tasks to match.

pub mod config;
pub mod position;
pub mod render;
pub mod send;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::event::Timestamp;
use crate::server::workspace::WorkspaceNameError;
use crate::server::AppState;
use crate::storage::perms::UnsafeFileError;

use self::config::Destination;

/// How often a running server reads the deliveries files again.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Event type: a destination keeps failing.
pub const EVENT_DELIVERY_FAILING: &str = "delivery.failing";
/// Event type: a failing destination acknowledged a batch again.
pub const EVENT_DELIVERY_RECOVERED: &str = "delivery.recovered";
/// Event type: a destination was added or changed (through the API).
pub const EVENT_DELIVERY_CONFIGURED: &str = "delivery.configured";
/// Event type: a destination was removed (through the API).
pub const EVENT_DELIVERY_REMOVED: &str = "delivery.removed";

/// What went wrong with deliveries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A field of a destination is invalid.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A destination of the file is invalid.
    #[error("destination {name:?}: {reason}")]
    InDestination {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Two destinations share a name.
    #[error("a destination named {0:?} exists already")]
    Exists(String),
    /// No destination has that name.
    #[error("no destination named {0:?}")]
    NotFound(String),
    /// Too many destinations.
    #[error("a workspace has at most {0} destinations")]
    TooMany(usize),
    /// A row does not fit the format.
    #[error("rendering a row: {0}")]
    Row(#[from] crate::delivery::RenderError),
    /// A record could not be rendered.
    #[error("rendering a record: {0}")]
    Render(&'static str),
    /// The deliveries file is unreadable or invalid.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A position file is damaged.
    #[error("position {path}: {reason}")]
    BadPosition {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is unsafe (owner, mode, link).
    #[error(transparent)]
    Unsafe(#[from] UnsafeFileError),
    /// An invalid workspace name.
    #[error(transparent)]
    Workspace(#[from] WorkspaceNameError),
    /// The change could not be recorded in the workspace's log, so it was
    /// not made.
    #[error("the change was not recorded in the workspace's log, so it was not made: {0}")]
    NotRecorded(crate::Error),
    /// Reading or locking failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("writing: {0}")]
    Write(String),
    /// The TLS configuration is unusable (CA file).
    #[error("TLS: {0}")]
    Tls(String),
}

/// What a running destination reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Every record before this seq was delivered (or did not match).
    pub next_seq: u64,
    /// Records delivered since the destination was created.
    pub delivered: u64,
    /// Failed requests since the server started.
    pub failures_total: u64,
    /// Failed requests in a row, up to now.
    pub consecutive_failures: u32,
    /// When the current run of failures began.
    pub failing_since: Option<String>,
    /// Whether `delivery.failing` was recorded for the current run.
    pub failing: bool,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// When the oldest record being sent was received.
    pub oldest_pending: Option<Timestamp>,
    /// Why the destination does not run, when it stopped for good.
    pub stopped: Option<String>,
}

struct Running {
    destination: Destination,
    status: Arc<Mutex<Status>>,
    task: JoinHandle<()>,
}

/// The running destinations of a server.
pub(crate) struct Deliveries {
    pub(crate) data_dir: PathBuf,
    running: Mutex<BTreeMap<(String, String), Running>>,
    /// Woken after a change through the API.
    changed: Notify,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// One destination's status with its lag, as the API, the metrics and the
/// CLI show it.
#[derive(Debug, Clone)]
pub struct Lag {
    /// Records between the position and the log's durable end.
    pub records_behind: u64,
    /// Seconds since the oldest record not yet delivered was received.
    pub seconds_behind: f64,
}

impl Deliveries {
    pub(crate) fn new(data_dir: PathBuf) -> Deliveries {
        Deliveries {
            data_dir,
            running: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        }
    }

    /// Makes the supervisor read the files again now.
    pub(crate) fn poke(&self) {
        self.changed.notify_one();
    }

    /// The running destinations' statuses, of one workspace or all.
    pub(crate) fn statuses(&self, workspace: Option<&str>) -> Vec<(String, Destination, Status)> {
        self.running
            .lock()
            .iter()
            .filter(|((w, _), _)| workspace.is_none_or(|want| want == w))
            .map(|((w, _), r)| (w.clone(), r.destination.clone(), r.status.lock().clone()))
            .collect()
    }

    /// Stops every task (at shutdown), so that none holds a log.
    pub(crate) async fn stop_all(&self) {
        let running: Vec<Running> = std::mem::take(&mut *self.running.lock())
            .into_values()
            .collect();
        for r in running {
            r.task.abort();
            let _ = r.task.await;
        }
    }
}

/// The lag of a destination at `status` against `durable_end`.
pub fn lag(status: &Status, durable_end: u64, now: Timestamp) -> Lag {
    let records_behind = durable_end.saturating_sub(status.next_seq);
    let seconds_behind = match status.oldest_pending {
        Some(t) if records_behind > 0 => {
            (now.unix_nanos().saturating_sub(t.unix_nanos())).max(0) as f64 / 1e9
        }
        _ => 0.0,
    };
    Lag {
        records_behind,
        seconds_behind,
    }
}

/// A destination and its status as JSON (the API's and the CLI's shape).
pub fn status_json(destination: &Destination, status: Option<&Status>, lag: Option<&Lag>) -> Value {
    let mut shown = destination.redacted();
    let state = match status {
        None => json!({"running": false}),
        Some(s) => json!({
            "running": s.stopped.is_none(),
            "stopped": s.stopped,
            "next_seq": s.next_seq,
            "delivered": s.delivered,
            "consecutive_failures": s.consecutive_failures,
            "failing": s.failing,
            "failing_since": s.failing_since,
            "last_error": s.last_error,
            "records_behind": lag.map(|l| l.records_behind),
            "seconds_behind": lag.map(|l| l.seconds_behind),
        }),
    };
    if let Some(map) = shown.as_object_mut() {
        map.insert("status".into(), state);
    }
    shown
}

/// Reads every deliveries file and makes the running tasks match, every
/// [`WATCH_INTERVAL`] and after each change through the API, until
/// aborted.
pub(crate) async fn supervise(state: Arc<AppState>) {
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let dir = state.deliveries.data_dir.clone();
        let read = tokio::task::spawn_blocking(move || {
            config::configured_workspaces(&dir)
                .into_iter()
                .map(|w| {
                    let loaded = config::load(&dir, &w);
                    (w, loaded)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut wanted: BTreeMap<(String, String), Destination> = BTreeMap::new();
        let mut unreadable = Vec::new();
        for (w, loaded) in read {
            match loaded {
                Ok(list) => {
                    refused.remove(&w);
                    for d in list {
                        wanted.insert((w.clone(), d.name.clone()), d);
                    }
                }
                Err(e) => {
                    // The destinations as last read keep running.
                    let reason = e.to_string();
                    if refused.get(&w) != Some(&reason) {
                        eprintln!("chainlog serve: deliveries of workspace {w}: {reason} (the destinations as last read keep running)");
                        refused.insert(w.clone(), reason);
                    }
                    unreadable.push(w);
                }
            }
        }
        let mut stopping = Vec::new();
        {
            let mut running = state.deliveries.running.lock();
            let keys: Vec<(String, String)> = running.keys().cloned().collect();
            for key in keys {
                if unreadable.contains(&key.0) {
                    continue;
                }
                let same = wanted
                    .get(&key)
                    .is_some_and(|d| running.get(&key).is_some_and(|r| &r.destination == d));
                if !same {
                    if let Some(r) = running.remove(&key) {
                        r.task.abort();
                        stopping.push(r.task);
                    }
                }
            }
        }
        // A changed destination's old task ends before the new one starts,
        // so that two never send at once.
        for task in stopping {
            let _ = task.await;
        }
        {
            let mut running = state.deliveries.running.lock();
            for (key, d) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                let status = Arc::new(Mutex::new(Status::default()));
                let task = tokio::spawn(
                    worker::Worker {
                        state: state.clone(),
                        workspace: key.0.clone(),
                        destination: d.clone(),
                        status: status.clone(),
                    }
                    .run(),
                );
                running.insert(
                    key,
                    Running {
                        destination: d,
                        status,
                        task,
                    },
                );
            }
        }
        tokio::select! {
            () = state.deliveries.changed.notified() => {}
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}
