//! Read access as events: who read which log, with which filters, how many
//! rows and bytes, from where.
//!
//! Reading an audit log is itself audited (PCI DSS 10.2.1.3 asks for it):
//! a query, an export, a verification, a key listing, a signed checkpoint
//! or a sign-in (`GET /v1/key`) becomes an `access.*` event in the log that was read
//! (a sign-in: the key's workspace's log, else the server's), written by the
//! server (appender `chainlog`, actor `apikey:<id>`). So that reading does
//! not flood the log, each key's first [`AuditPolicy::reads_per_key`]
//! reads of a log in a window (see [`super::audit`]) are recorded one by
//! one; later ones are counted, and when the window ends (or the server
//! stops) one `access.read_summary` per key and log records exactly how
//! many reads, rows and bytes, by kind and by address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::event::{Event, Outcome, Timestamp};
use crate::log::Log;
use crate::server::api::Caller;
use crate::server::audit::{AuditPolicy, Summary, Target, MAX_LISTED_ADDRESSES};
use crate::server::keys::ApiKey;
use crate::server::windows::{Ended, Tally, WindowCounts, Windows};
use crate::server::AppState;

/// Event type of the per-window count of a key's reads not recorded one by
/// one.
pub const EVENT_READ_SUMMARY: &str = "access.read_summary";
/// Longest filter text (the query string) copied into an event.
const MAX_FILTER_CHARS: usize = 1024;

/// What was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReadKind {
    /// `GET …/events` or `GET …/events/{seq}` (and the server log's events).
    Query,
    /// `GET …/export`.
    Export,
    /// `GET …/verify`.
    Verify,
    /// `GET …/keys`.
    KeyList,
    /// `GET /v1/key`: the dashboard's sign-in.
    SignIn,
    /// `GET …/checkpoint`: the log's signed head.
    Checkpoint,
    /// `GET …/events/stream`: a live tail, recorded when it ends.
    Tail,
    /// `GET …/evidence`: an evidence pack, recorded when it ends.
    Evidence,
}

impl ReadKind {
    /// The event type recording one read of this kind.
    pub fn event_type(self) -> &'static str {
        match self {
            ReadKind::Query => "access.query",
            ReadKind::Export => "access.export",
            ReadKind::Verify => "access.verify",
            ReadKind::KeyList => "access.key_list",
            ReadKind::SignIn => "access.sign_in",
            ReadKind::Checkpoint => "access.checkpoint",
            ReadKind::Tail => "access.tail",
            ReadKind::Evidence => "access.evidence",
        }
    }
}

/// One read.
#[derive(Debug, Clone)]
pub struct Read {
    /// What was read.
    pub kind: ReadKind,
    /// The reading key's id.
    pub key_id: String,
    /// The client's address.
    pub ip: IpAddr,
    /// The request's path.
    pub path: String,
    /// The query string as sent (the filters), if any.
    pub filters: Option<String>,
    /// Rows (events, keys) in the answer.
    pub rows: u64,
    /// Bytes of the answer's body handed to the connection.
    pub bytes: u64,
    /// More context (an export's end, a verification's result).
    pub extra: Map<String, Value>,
}

impl Read {
    /// The event recording this read.
    pub fn to_event(&self) -> Event {
        let mut event = Event::new(
            Timestamp::now(),
            self.kind.event_type(),
            format!("apikey:{}", self.key_id),
        );
        event.source_ip = Some(self.ip);
        event.outcome = Outcome::Success;
        let c = &mut event.context;
        c.insert("key_id".into(), self.key_id.clone().into());
        c.insert(
            "path".into(),
            self.path.chars().take(512).collect::<String>().into(),
        );
        if let Some(filters) = &self.filters {
            c.insert(
                "filters".into(),
                filters
                    .chars()
                    .take(MAX_FILTER_CHARS)
                    .collect::<String>()
                    .into(),
            );
        }
        c.insert("rows".into(), self.rows.into());
        c.insert("bytes".into(), self.bytes.into());
        for (k, v) in &self.extra {
            c.insert(k.clone(), v.clone());
        }
        event
    }
}

#[derive(Debug, Default)]
struct ReadCounted {
    reads: u64,
    rows: u64,
    bytes: u64,
    by_kind: BTreeMap<&'static str, u64>,
    addresses: Tally,
}

#[derive(Debug, Default)]
struct ReadWindow {
    recorded: BTreeMap<(Target, String), u32>,
    counted: BTreeMap<(Target, String), ReadCounted>,
}

impl WindowCounts for ReadWindow {
    fn is_empty(&self) -> bool {
        self.counted.is_empty()
    }
}

/// Decides which reads are recorded one by one, and counts the rest.
#[derive(Debug)]
pub struct ReadLimiter {
    per_key: u32,
    windows: Mutex<Windows<ReadWindow>>,
}

impl ReadLimiter {
    /// A limiter whose windows start at `epoch`.
    pub fn new(policy: &AuditPolicy, epoch: Instant) -> Self {
        ReadLimiter {
            per_key: policy.reads_per_key,
            windows: Mutex::new(Windows::new(epoch, policy.window)),
        }
    }

    /// Notes a read at `now`: true when it is to be recorded on its own,
    /// false when it was counted for a summary.
    pub fn admit(&self, read: &Read, target: &Target, now: Instant) -> bool {
        let mut windows = self.windows.lock();
        let window = windows.at(now);
        let key = (target.clone(), read.key_id.clone());
        let recorded = window.recorded.entry(key.clone()).or_default();
        if *recorded < self.per_key {
            *recorded += 1;
            return true;
        }
        let c = window.counted.entry(key).or_default();
        c.reads += 1;
        c.rows += read.rows;
        c.bytes += read.bytes;
        *c.by_kind.entry(read.kind.event_type()).or_default() += 1;
        c.addresses.add(&read.ip.to_string(), MAX_LISTED_ADDRESSES);
        false
    }

    /// Ends the windows that are over at `now` (and the current one too
    /// with `all`) and returns their summaries.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let ended = self.windows.lock().take_due(now, all);
        ended.into_iter().flat_map(|w| self.summaries(w)).collect()
    }

    /// One ended window's summary events.
    fn summaries(&self, ended: Ended<ReadWindow>) -> Vec<Summary> {
        let mut summaries = Vec::new();
        for ((target, key_id), c) in ended.counts.counted {
            let mut event = Event::new(
                Timestamp::now(),
                EVENT_READ_SUMMARY,
                format!("apikey:{key_id}"),
            );
            let x = &mut event.context;
            x.insert("key_id".into(), key_id.into());
            x.insert("reads".into(), c.reads.into());
            x.insert("rows".into(), c.rows.into());
            x.insert("bytes".into(), c.bytes.into());
            x.insert("by_kind".into(), json!(c.by_kind));
            x.insert("addresses".into(), json!(c.addresses.listed));
            x.insert(
                "reads_from_unlisted_addresses".into(),
                c.addresses.unlisted.into(),
            );
            x.insert("recorded_individually".into(), self.per_key.into());
            x.insert("window_start".into(), ended.start.clone().into());
            x.insert("window_end".into(), ended.end.clone().into());
            summaries.push(Summary { target, event });
        }
        summaries
    }
}

impl Caller {
    /// A read of `rows` rows in `bytes` bytes by this request's `key`.
    pub(crate) fn read(&self, key: &ApiKey, kind: ReadKind, rows: u64, bytes: usize) -> Read {
        Read {
            kind,
            key_id: key.id.clone(),
            ip: self.ip,
            path: self.path.clone(),
            filters: None,
            rows,
            bytes: bytes as u64,
            extra: Map::new(),
        }
    }
}

/// Where a read of `workspace` (the server's log with `None`) is recorded,
/// and that log. Blocking.
fn target_log(state: &AppState, workspace: Option<&str>) -> Option<(Target, Arc<Log>)> {
    if let Some(w) = workspace {
        if let Ok(Some(log)) = state.workspaces.open(w, false) {
            return Some((Target::Workspace(w.to_string()), log));
        }
    }
    state
        .workspaces
        .server_log()
        .ok()
        .map(|log| (Target::Server, log))
}

/// Records `read` of `workspace` (the server's log with `None`), or counts
/// it. Blocking; a failure to record is written to stderr.
pub(crate) fn record_read_blocking(state: &AppState, workspace: Option<&str>, read: &Read) {
    let Some((target, log)) = target_log(state, workspace) else {
        eprintln!("chainlog serve: recording a read failed: no log to record it in");
        return;
    };
    if !state.reads.admit(read, &target, Instant::now()) {
        return;
    }
    if let Err(e) = log.append(&read.to_event()) {
        eprintln!("chainlog serve: recording a read failed: {e}");
    }
}

/// [`record_read_blocking`] on a blocking thread.
pub(crate) async fn record_read(state: &Arc<AppState>, workspace: Option<&str>, read: Read) {
    let (state, workspace) = (state.clone(), workspace.map(str::to_string));
    let _ = tokio::task::spawn_blocking(move || {
        record_read_blocking(&state, workspace.as_deref(), &read);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: ReadKind, key: &str, rows: u64, bytes: u64) -> Read {
        Read {
            kind,
            key_id: key.into(),
            ip: "192.0.2.7".parse().unwrap(),
            path: "/v1/workspaces/acme/events".into(),
            filters: Some("actor=alice".into()),
            rows,
            bytes,
            extra: Map::new(),
        }
    }

    #[test]
    fn later_reads_are_counted_exactly_per_key_and_log() {
        let t0 = Instant::now();
        let policy = AuditPolicy {
            reads_per_key: 2,
            ..AuditPolicy::default()
        };
        let limiter = ReadLimiter::new(&policy, t0);
        let acme = Target::Workspace("acme".into());
        assert!(limiter.admit(&read(ReadKind::Query, "k1", 5, 50), &acme, t0));
        assert!(limiter.admit(&read(ReadKind::Export, "k1", 5, 50), &acme, t0));
        assert!(!limiter.admit(&read(ReadKind::Query, "k1", 7, 70), &acme, t0));
        assert!(!limiter.admit(&read(ReadKind::Export, "k1", 1000, 9), &acme, t0));
        // Another key, or another log, has its own count.
        assert!(limiter.admit(&read(ReadKind::Query, "k2", 1, 1), &acme, t0));
        assert!(limiter.admit(&read(ReadKind::Query, "k1", 1, 1), &Target::Server, t0));
        let due = limiter.take_due(t0 + crate::server::audit::FAILURE_WINDOW, false);
        assert_eq!(due.len(), 1);
        let c = &due[0].event.context;
        assert_eq!(due[0].target, acme);
        assert_eq!(c["reads"], 2);
        assert_eq!(c["rows"], 1007);
        assert_eq!(c["bytes"], 79);
        assert_eq!(c["by_kind"], json!({"access.export": 1, "access.query": 1}));
        assert!(limiter.take_due(t0, true).is_empty());
        let event = read(ReadKind::Verify, "k9", 3, 4).to_event();
        assert_eq!(event.event_type, "access.verify");
        assert_eq!(event.actor, "apikey:k9");
        assert_eq!(event.context["filters"], "actor=alice");
    }
}
