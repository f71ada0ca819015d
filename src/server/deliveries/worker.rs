//! A destination's task in `chainlog serve`: read, send, acknowledge,
//! store the position, in that order.
//!
//! From its position the task reads matching records up to the log's
//! durable end, [`Destination::batch`] at a time, renders them and sends
//! them. Only once the destination acknowledged the batch is the new
//! position stored (durably); a crash in between sends the batch again
//! after the restart: at least once, in seq order. Records that do not
//! match move the position too, stored at most every
//! [`IDLE_POSITION_INTERVAL`]. When caught up, the task sleeps until the
//! log reports new durable records, or [`RECHECK`] passes.
//!
//! A failed request is retried with exponential backoff and jitter
//! ([`backoff`]), never skipped. After [`FAILING_AFTER_FAILURES`]
//! failures in a row, or failures for longer than [`FAILING_AFTER`], or at
//! the first refusal (a 4xx other than 408 and 429), the task appends one
//! `delivery.failing` event to the workspace's log; the first success
//! after that appends `delivery.recovered`. A refused batch is retried
//! every [`BACKOFF_MAX`], so that a receiver fixed later gets it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::event::{Event, Outcome, Timestamp};
use crate::log::{DurableListener, Log};
use crate::server::api::read_batch;
use crate::server::AppState;

use super::config::Destination;
use super::position::{self, Position};
use super::render::render;
use super::send::{SendError, Sender};
use super::{Status, EVENT_DELIVERY_FAILING, EVENT_DELIVERY_RECOVERED};

/// The first retry's delay (before jitter).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// The longest delay between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Failures in a row that make a destination failing.
pub const FAILING_AFTER_FAILURES: u32 = 5;
/// How long failures in a row make a destination failing, however few.
pub const FAILING_AFTER: Duration = Duration::from_secs(60);
/// Longest a caught-up task sleeps before looking at the durable end.
pub const RECHECK: Duration = Duration::from_millis(100);
/// How often a position moved only past records that did not match is
/// stored.
pub const IDLE_POSITION_INTERVAL: Duration = Duration::from_secs(1);
/// How often a task waits for a workspace that has no log yet.
const NO_LOG_RECHECK: Duration = Duration::from_secs(1);

/// The delay before try `failures + 1`: [`BACKOFF_FIRST`] doubled per
/// failure up to [`BACKOFF_MAX`], of which a random half is taken off
/// (so that destinations failing together do not retry together).
pub fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let full = doubled.min(BACKOFF_MAX);
    let mut r = [0u8; 4];
    let _ = getrandom::getrandom(&mut r);
    let fraction = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
    full.mul_f64(0.5 + 0.5 * fraction)
}

/// One running destination.
pub(super) struct Worker {
    pub state: Arc<AppState>,
    pub workspace: String,
    pub destination: Destination,
    pub status: Arc<Mutex<Status>>,
}

impl Worker {
    fn data_dir(&self) -> std::path::PathBuf {
        self.state.deliveries.data_dir.clone()
    }

    async fn store(&self, position: &Position) -> Result<(), String> {
        let (dir, w, name, p) = (
            self.data_dir(),
            self.workspace.clone(),
            self.destination.name.clone(),
            position.clone(),
        );
        tokio::task::spawn_blocking(move || position::store(&dir, &w, &name, &p))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Appends a `delivery.*` event to the workspace's log; its seq.
    async fn record(&self, log: &Arc<Log>, event: Event) -> Option<u64> {
        let log = log.clone();
        let appended = tokio::task::spawn_blocking(move || log.append(&event)).await;
        match appended {
            Ok(Ok(receipt)) => Some(receipt.seq),
            Ok(Err(e)) => {
                eprintln!(
                    "chainlog serve: recording a delivery event in workspace {} failed: {e}",
                    self.workspace
                );
                None
            }
            Err(_) => None,
        }
    }

    fn event(&self, event_type: &str, outcome: Outcome, position: &Position) -> Event {
        let mut event = Event::new(Timestamp::now(), event_type, "system");
        event.outcome = outcome;
        event.resource = Some(self.destination.name.clone());
        let c = &mut event.context;
        c.insert("destination".into(), self.destination.name.clone().into());
        c.insert("kind".into(), self.destination.kind.as_str().into());
        c.insert("next_seq".into(), position.next_seq.into());
        c.insert(
            "consecutive_failures".into(),
            position.consecutive_failures.into(),
        );
        if let Some(since) = &position.failing_since {
            c.insert("failing_since".into(), since.clone().into());
        }
        if let Some(e) = &position.last_error {
            c.insert("last_error".into(), e.clone().into());
        }
        event
    }

    fn publish(&self, position: &Position, oldest_pending: Option<Timestamp>) {
        let mut s = self.status.lock();
        s.next_seq = position.next_seq;
        s.delivered = position.delivered;
        s.consecutive_failures = position.consecutive_failures;
        s.failing_since = position.failing_since.clone();
        s.failing = position.failing_event_seq.is_some();
        s.last_error = position.last_error.clone();
        s.oldest_pending = oldest_pending;
    }

    /// Stops the destination for good (until its configuration changes),
    /// recording why.
    async fn halt(&self, log: Option<&Arc<Log>>, reason: String) {
        eprintln!(
            "chainlog serve: delivery {} of workspace {} stopped: {reason}",
            self.destination.name, self.workspace
        );
        self.status.lock().stopped = Some(reason.clone());
        if let Some(log) = log {
            let position = Position {
                last_error: Some(reason),
                ..Position::default()
            };
            let event = self.event(EVENT_DELIVERY_FAILING, Outcome::Failure, &position);
            self.record(log, event).await;
        }
    }

    /// The workspace's log, waiting for it to exist.
    async fn open_log(&self) -> Arc<Log> {
        loop {
            let (st, w) = (self.state.clone(), self.workspace.clone());
            let opened = tokio::task::spawn_blocking(move || st.workspaces.open(&w, false)).await;
            match opened {
                Ok(Ok(Some(log))) => return log,
                Ok(Err(e)) => {
                    self.status.lock().last_error = Some(format!("opening the log: {e}"));
                }
                _ => {}
            }
            tokio::time::sleep(NO_LOG_RECHECK).await;
        }
    }

    /// Runs until aborted.
    pub(super) async fn run(self) {
        let log = self.open_log().await;
        let sender = match Sender::new(&self.destination) {
            Ok(sender) => sender,
            Err(e) => return self.halt(Some(&log), e.to_string()).await,
        };
        let (dir, w, name) = (
            self.data_dir(),
            self.workspace.clone(),
            self.destination.name.clone(),
        );
        let stored = tokio::task::spawn_blocking(move || position::load(&dir, &w, &name)).await;
        let mut position = match stored {
            Ok(Ok(Some(p))) if p.id == self.destination.id => p,
            Ok(Ok(_)) => Position {
                id: self.destination.id.clone(),
                next_seq: self.destination.start_seq.unwrap_or(0),
                ..Position::default()
            },
            Ok(Err(e)) => return self.halt(Some(&log), e.to_string()).await,
            Err(e) => return self.halt(Some(&log), e.to_string()).await,
        };
        let query = match self.destination.query() {
            Ok(q) => q,
            Err(e) => return self.halt(Some(&log), e.to_string()).await,
        };
        self.publish(&position, None);
        let notify = Arc::new(Notify::new());
        let listener: Arc<DurableListener> = {
            let notify = notify.clone();
            Arc::new(move |_| notify.notify_one())
        };
        log.on_durable(&listener);
        let mut stored_seq = position.next_seq;
        let mut stored_at = Instant::now();
        loop {
            let durable = log.durable_next_seq();
            if position.next_seq >= durable {
                if stored_seq != position.next_seq
                    && stored_at.elapsed() >= IDLE_POSITION_INTERVAL
                    && self.store(&position).await.is_ok()
                {
                    stored_seq = position.next_seq;
                    stored_at = Instant::now();
                }
                self.publish(&position, None);
                tokio::select! {
                    () = notify.notified() => {}
                    () = tokio::time::sleep(RECHECK) => {}
                }
                continue;
            }
            let mut q = query.clone();
            q.from_seq = Some(position.next_seq);
            q.limit = Some(u64::from(self.destination.batch()));
            let reader = log.clone();
            let batch = tokio::task::spawn_blocking(move || read_batch(&reader, &q)).await;
            let (rows, full) = match batch {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => return self.halt(Some(&log), format!("reading the log: {e}")).await,
                Err(e) => return self.halt(Some(&log), format!("reading the log: {e}")).await,
            };
            let all_kept = rows.iter().all(|(seq, _)| *seq < durable);
            let parsed: Result<Vec<(u64, Value)>, _> = rows
                .into_iter()
                .filter(|(seq, _)| *seq < durable)
                .map(|(seq, row)| serde_json::from_str(&row).map(|v| (seq, v)))
                .collect();
            // Rows are the exporter's JSON; one that does not parse stops
            // the destination rather than be skipped.
            let rows = match parsed {
                Ok(rows) => rows,
                Err(e) => {
                    return self
                        .halt(Some(&log), format!("a row is not JSON: {e}"))
                        .await
                }
            };
            let next = match rows.last() {
                Some((last, _)) if full && all_kept => last + 1,
                _ => durable,
            };
            if rows.is_empty() {
                position.next_seq = next;
                continue;
            }
            let oldest = rows[0]
                .1
                .get("received_at")
                .and_then(Value::as_str)
                .and_then(|t| Timestamp::parse_rfc3339(t).ok());
            self.publish(&position, oldest);
            let mut rendered = Vec::with_capacity(rows.len());
            for (_, row) in &rows {
                match render(self.destination.format, &self.workspace, row) {
                    Ok(r) => rendered.push(r),
                    Err(e) => return self.halt(Some(&log), e.to_string()).await,
                }
            }
            let values: Vec<Value> = rows.into_iter().map(|(_, v)| v).collect();
            let count = values.len() as u64;
            let mut first_failure: Option<Instant> = None;
            loop {
                match sender
                    .send(&self.workspace, &values, rendered.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        self.status.lock().failures_total += 1;
                        let now = Instant::now();
                        let began = *first_failure.get_or_insert(now);
                        position.consecutive_failures += 1;
                        position.last_error = Some(e.to_string());
                        if position.failing_since.is_none() {
                            position.failing_since = Some(Timestamp::now().to_rfc3339());
                        }
                        let refused = matches!(e, SendError::Refused(_));
                        let failing = refused
                            || position.consecutive_failures >= FAILING_AFTER_FAILURES
                            || now.duration_since(began) >= FAILING_AFTER;
                        if failing && position.failing_event_seq.is_none() {
                            eprintln!(
                                "chainlog serve: delivery {} of workspace {} is failing: {e}",
                                self.destination.name, self.workspace
                            );
                            let event =
                                self.event(EVENT_DELIVERY_FAILING, Outcome::Failure, &position);
                            // The status says failing before the event is in
                            // the log: whoever reads the event finds it so.
                            self.publish(&position, oldest);
                            self.status.lock().failing = true;
                            position.failing_event_seq = self.record(&log, event).await;
                        }
                        let _ = self.store(&position).await;
                        self.publish(&position, oldest);
                        let delay = if refused {
                            BACKOFF_MAX
                        } else {
                            backoff(position.consecutive_failures)
                        };
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            if position.failing_event_seq.is_some() {
                // As above: the status has recovered before the event says so.
                self.status.lock().failing = false;
                let mut event = self.event(EVENT_DELIVERY_RECOVERED, Outcome::Success, &position);
                event.context.insert(
                    "failing_event_seq".into(),
                    json!(position.failing_event_seq),
                );
                self.record(&log, event).await;
            }
            position.next_seq = next;
            position.delivered += count;
            position.consecutive_failures = 0;
            position.failing_since = None;
            position.failing_event_seq = None;
            position.last_error = None;
            if let Err(e) = self.store(&position).await {
                return self
                    .halt(Some(&log), format!("storing the position: {e}"))
                    .await;
            }
            stored_seq = position.next_seq;
            stored_at = Instant::now();
            self.publish(&position, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        for failures in 1..40 {
            let d = backoff(failures);
            let full = BACKOFF_FIRST
                .saturating_mul(1 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(
                d >= full / 2 && d <= full,
                "{failures}: {d:?} against {full:?}"
            );
        }
        assert!(backoff(30) <= BACKOFF_MAX);
    }
}
