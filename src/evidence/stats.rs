//! What the report and `access/summary.json` say about a period, gathered
//! row by row with bounded memory.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::event::{Outcome, RecordView};

/// Actors counted one by one; further actors are counted as one.
pub const MAX_TRACKED_ACTORS: usize = 100_000;
/// Failures listed one by one in the report; all are counted.
pub const MAX_LISTED_FAILURES: usize = 1_000;
/// Access events listed one by one per kind in `access/summary.json`; all are counted.
pub const MAX_LISTED_ACCESS: usize = 10_000;
/// The actor that stands for those past [`MAX_TRACKED_ACTORS`].
const OTHER_ACTORS: &str = "(other actors)";

/// One event as listed in the pack's summaries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedEvent {
    /// Its seq.
    pub seq: u64,
    /// Its event time.
    pub timestamp: String,
    /// Its event type.
    pub event: String,
    /// Who.
    pub actor: String,
    /// From where.
    pub ip: Option<String>,
    /// Success or failure.
    pub outcome: &'static str,
    /// Its context (what was read, why it was refused, which key).
    pub context: Value,
}

/// A kind of access event, counted and listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccessKind {
    /// Events of this kind.
    pub total: u64,
    /// By event type.
    pub by_event: BTreeMap<String, u64>,
    /// By source address (`-` when none).
    pub by_ip: BTreeMap<String, u64>,
    /// The first [`MAX_LISTED_ACCESS`], in seq order.
    pub listed: Vec<ListedEvent>,
    /// Those not listed.
    pub not_listed: u64,
}

impl AccessKind {
    fn add(&mut self, seq: u64, view: &RecordView<'_>) {
        self.total += 1;
        *self
            .by_event
            .entry(view.event_type.to_string())
            .or_default() += 1;
        let ip = view
            .source_ip
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        if self.by_ip.len() < MAX_LISTED_ACCESS || self.by_ip.contains_key(&ip) {
            *self.by_ip.entry(ip).or_default() += 1;
        }
        if self.listed.len() < MAX_LISTED_ACCESS {
            self.listed.push(listed(seq, view));
        } else {
            self.not_listed += 1;
        }
    }
}

pub(crate) fn listed(seq: u64, view: &RecordView<'_>) -> ListedEvent {
    ListedEvent {
        seq,
        timestamp: view.timestamp.to_string(),
        event: view.event_type.to_string(),
        actor: view.actor.to_string(),
        ip: view.source_ip.map(|ip| ip.to_string()),
        outcome: view.outcome.as_str(),
        context: serde_json::from_str(view.context_json).unwrap_or(Value::Null),
    }
}

/// `access/summary.json`: who used the log in the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccessSummary {
    /// Reads of the log: queries, exports, verifications, checkpoints,
    /// key listings, sign-ins, tails (`access.*`, and their summaries).
    pub reads: AccessKind,
    /// Failed sign-ins and invalid keys (`auth.failed`, its summaries,
    /// and any `auth.*` event that failed).
    pub failed_sign_ins: AccessKind,
    /// Refused requests: valid keys used outside their workspace or scope
    /// (`access.denied`), and refused paths and methods (`request.refused`).
    pub refusals: AccessKind,
    /// API key creations, rotations, revocations and other changes (`apikey.*`).
    pub key_changes: AccessKind,
    /// The engine's own records (`log.*`): retention, legal hold, recovery cuts.
    pub engine: AccessKind,
}

/// Events per day, and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// Events.
    pub events: u64,
    /// Failed events.
    pub failures: u64,
}

/// What the report shows about the rows of a pack.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeriodStats {
    /// Rows.
    pub rows: u64,
    /// Rows whose event time is inside the period.
    pub rows_in_period: u64,
    /// Failed rows.
    pub failures: u64,
    /// By category (the event type before its first dot).
    pub by_category: BTreeMap<String, u64>,
    /// By day (UTC, `YYYY-MM-DD`).
    pub by_day: BTreeMap<String, DayCount>,
    /// By actor (at most [`MAX_TRACKED_ACTORS`] by name).
    pub by_actor: HashMap<String, u64>,
    /// The first [`MAX_LISTED_FAILURES`] failures.
    pub failure_list: Vec<ListedEvent>,
    /// Access to the log.
    pub access: AccessSummary,
}

impl PeriodStats {
    /// Counts one row; `in_period` says whether its time is in the period.
    pub fn add(&mut self, seq: u64, view: &RecordView<'_>, in_period: bool) {
        self.rows += 1;
        self.rows_in_period += u64::from(in_period);
        let failed = view.outcome == Outcome::Failure;
        let category = view.event_type.split('.').next().unwrap_or(view.event_type);
        *self.by_category.entry(category.to_string()).or_default() += 1;
        let time = view.timestamp.to_string();
        let day = self.by_day.entry(time[..10.min(time.len())].to_string());
        let day = day.or_default();
        day.events += 1;
        day.failures += u64::from(failed);
        let actor =
            if self.by_actor.len() < MAX_TRACKED_ACTORS || self.by_actor.contains_key(view.actor) {
                view.actor
            } else {
                OTHER_ACTORS
            };
        *self.by_actor.entry(actor.to_string()).or_default() += 1;
        if failed {
            self.failures += 1;
            if self.failure_list.len() < MAX_LISTED_FAILURES {
                self.failure_list.push(listed(seq, view));
            }
        }
        let t = view.event_type;
        let access = &mut self.access;
        if t.starts_with("apikey.") {
            access.key_changes.add(seq, view);
        } else if t.starts_with("log.") {
            access.engine.add(seq, view);
        } else if t.starts_with("access.denied") || t == "request.refused" {
            access.refusals.add(seq, view);
        } else if t.starts_with("access.") {
            access.reads.add(seq, view);
        } else if t.starts_with("auth.failed") || (t.starts_with("auth.") && failed) {
            access.failed_sign_ins.add(seq, view);
        }
    }

    /// The `n` actors with the most events, most first (ties by name).
    pub fn top_actors(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            self.by_actor.iter().map(|(a, c)| (a.clone(), *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}
