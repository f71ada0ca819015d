//! What the dashboard draws: `GET …/events/summary` (matching events per hour
//! or day with their failures, the top actors and event types, the total) and
//! `GET …/events/{seq}/proof` (a record's inclusion proof in the current tree).

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::event::{Outcome, Timestamp};
use crate::log::Log;
use crate::query::proofs::ProveError;
use crate::server::error::ApiError;
use crate::server::keys::Scope;
use crate::server::params::{self, Endpoint};
use crate::server::reads::{record_read, ReadKind};

use super::*;

/// Names listed in each top panel.
pub(crate) const TOP_NAMES: usize = 10;
/// Most buckets in one answer: hourly buckets over a longer span are
/// answered per day instead.
pub(crate) const MAX_BUCKETS: i64 = 24 * 92;
/// Longest span (in hours) that `bucket=auto` draws per hour.
const AUTO_HOURLY_SPAN_HOURS: i64 = 72;

const HOUR_NANOS: i64 = 3_600_000_000_000;
const DAY_NANOS: i64 = 24 * HOUR_NANOS;

/// The bucket width asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketWidth {
    Hour,
    Day,
    /// Hour when the matches span at most three days, else day.
    Auto,
}

/// One bar of the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Bucket {
    /// Its start, RFC 3339 UTC.
    pub start: String,
    pub total: u64,
    pub failures: u64,
}

/// One line of a top panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Named {
    pub name: String,
    pub count: u64,
}

/// The answer of `GET …/events/summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SummaryBody {
    pub total: u64,
    pub failures: u64,
    /// `hour` or `day`: the width used.
    pub bucket: &'static str,
    /// Every bucket from the first match's to the last's, empty ones included.
    pub buckets: Vec<Bucket>,
    pub top_actors: Vec<Named>,
    pub top_events: Vec<Named>,
    /// Earliest and latest matching event time (`null` when nothing matches).
    pub first: Option<String>,
    pub last: Option<String>,
}

/// Counts matches one by one.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    total: u64,
    failures: u64,
    /// Hour index (nanos / hour) to (total, failures).
    hours: BTreeMap<i64, (u64, u64)>,
    actors: HashMap<String, u64>,
    events: HashMap<String, u64>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

fn top(counts: HashMap<String, u64>) -> Vec<Named> {
    let mut all: Vec<Named> = counts
        .into_iter()
        .map(|(name, count)| Named { name, count })
        .collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    all.truncate(TOP_NAMES);
    all
}

impl Summary {
    pub(crate) fn add(&mut self, at: Timestamp, outcome: Outcome, actor: &str, event: &str) {
        let failed = u64::from(outcome == Outcome::Failure);
        self.total += 1;
        self.failures += failed;
        let slot = self
            .hours
            .entry(at.unix_nanos().div_euclid(HOUR_NANOS))
            .or_default();
        slot.0 += 1;
        slot.1 += failed;
        *self.actors.entry(actor.to_string()).or_default() += 1;
        *self.events.entry(event.to_string()).or_default() += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    pub(crate) fn finish(self, width: BucketWidth) -> SummaryBody {
        let span_hours = match (self.hours.keys().next(), self.hours.keys().next_back()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        let hourly = match width {
            BucketWidth::Hour => span_hours <= MAX_BUCKETS,
            BucketWidth::Day => false,
            BucketWidth::Auto => span_hours <= AUTO_HOURLY_SPAN_HOURS,
        };
        let step = if hourly { HOUR_NANOS } else { DAY_NANOS };
        let mut widths: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for (hour, (total, failures)) in &self.hours {
            let slot = widths
                .entry((hour * HOUR_NANOS).div_euclid(step))
                .or_default();
            slot.0 += total;
            slot.1 += failures;
        }
        let mut buckets = Vec::new();
        if let (Some(&a), Some(&b)) = (widths.keys().next(), widths.keys().next_back()) {
            for i in a..=b {
                let (total, failures) = widths.get(&i).copied().unwrap_or_default();
                buckets.push(Bucket {
                    start: Timestamp::from_unix_nanos(i * step).to_rfc3339(),
                    total,
                    failures,
                });
            }
        }
        SummaryBody {
            total: self.total,
            failures: self.failures,
            bucket: if hourly { "hour" } else { "day" },
            buckets,
            top_actors: top(self.actors),
            top_events: top(self.events),
            first: self.first.map(Timestamp::to_rfc3339),
            last: self.last.map(Timestamp::to_rfc3339),
        }
    }
}

fn summarize(
    log: &Log,
    query: &crate::query::Query,
    width: BucketWidth,
) -> Result<SummaryBody, ApiError> {
    let mut summary = Summary::default();
    let matches = log
        .query(query)
        .map_err(|e| ApiError::from_log("summarizing events", &e))?;
    for m in matches {
        let m = m.map_err(|e| ApiError::from_log("summarizing events", &e))?;
        let v = m
            .view()
            .map_err(|e| ApiError::from_log("summarizing events", &e))?;
        summary.add(v.timestamp, v.outcome, v.actor, v.event_type);
    }
    Ok(summary.finish(width))
}

pub(super) async fn get_summary(
    State(state): State<Shared>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let mut pairs = query_pairs(&uri)?;
    let mut width = BucketWidth::Auto;
    let mut bad_value = None;
    let mut through = None;
    pairs.retain(|(name, value)| {
        if name == "through" {
            match value.parse::<u64>() {
                Ok(seq) => through = Some(seq),
                Err(_) => {
                    bad_value = Some(format!(
                        "`through`: {:?} is not a seq",
                        value.chars().take(100).collect::<String>()
                    ))
                }
            }
            return false;
        }
        if name != "bucket" {
            return true;
        }
        match value.as_str() {
            "hour" => width = BucketWidth::Hour,
            "day" => width = BucketWidth::Day,
            "auto" | "" => width = BucketWidth::Auto,
            other => {
                bad_value = Some(format!(
                    "`bucket`: expected hour, day or auto, got {:?}",
                    other.chars().take(100).collect::<String>()
                ))
            }
        }
        false
    });
    if let Some(detail) = bad_value {
        return Err(ApiError::bad_request("invalid_parameter", detail));
    }
    let mut parsed = params::parse(&pairs, Endpoint::Summary, Timestamp::now())?;
    // Counting down from `through` leaves out what was appended after the
    // page the caller shows (its own read records among them).
    parsed.query.reverse = true;
    parsed.query.from_seq = through;
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let body = blocking(move || {
        let _permit = permit;
        summarize(&log, &parsed.query, width)
    })
    .await??;
    let body =
        serde_json::to_string(&body).map_err(|e| ApiError::internal("summarizing events", &e))?;
    let mut read = caller.read(&key, ReadKind::Query, 0, body.len());
    read.filters = uri.query().map(str::to_string);
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

pub(super) async fn get_proof(
    State(state): State<Shared>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (w, key) = authorize_workspace(&state, &caller, Scope::Read).await?;
    let seq = read::path_seq(&caller)?;
    let log = workspace_log(&state, &w, &key).await?;
    let permit = match state.query_slots.acquire(&w).await {
        Ok(permit) => permit,
        Err(busy) => return Ok(busy.into_response()),
    };
    let proof = blocking(move || {
        let _permit = permit;
        log.prove_inclusion(seq, None)
    })
    .await?;
    let proof = match proof {
        Ok(proof) => proof,
        Err(ProveError::OutOfRange(detail)) => {
            return Err(ApiError::not_found("event_not_found", detail))
        }
        Err(ProveError::Unavailable(detail)) => {
            return Err(ApiError::not_found("proof_unavailable", detail))
        }
        Err(ProveError::Log(e)) => return Err(ApiError::from_log("proving inclusion", &e)),
        Err(other) => return Err(ApiError::internal("proving inclusion", &other)),
    };
    let body =
        serde_json::to_string(&proof).map_err(|e| ApiError::internal("proving inclusion", &e))?;
    let read = caller.read(&key, ReadKind::Query, 1, body.len());
    record_read(&state, Some(&w), read).await;
    Ok(json_response(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn counts_per_hour_with_empty_hours_and_top_names() {
        let mut s = Summary::default();
        s.add(at("2026-03-09T08:05:00Z"), Outcome::Success, "alice", "a.b");
        s.add(at("2026-03-09T08:55:00Z"), Outcome::Failure, "bob", "a.b");
        s.add(at("2026-03-09T10:00:00Z"), Outcome::Failure, "alice", "c.d");
        let body = s.finish(BucketWidth::Auto);
        assert_eq!((body.total, body.failures, body.bucket), (3, 2, "hour"));
        let bars: Vec<_> = body
            .buckets
            .iter()
            .map(|b| (b.start.as_str(), b.total, b.failures))
            .collect();
        assert_eq!(
            bars,
            [
                ("2026-03-09T08:00:00Z", 2, 1),
                ("2026-03-09T09:00:00Z", 0, 0),
                ("2026-03-09T10:00:00Z", 1, 1)
            ]
        );
        assert_eq!(
            body.top_actors[0],
            Named {
                name: "alice".into(),
                count: 2
            }
        );
        assert_eq!(
            body.top_events[1],
            Named {
                name: "c.d".into(),
                count: 1
            }
        );
        assert_eq!(body.first.as_deref(), Some("2026-03-09T08:05:00Z"));
    }

    #[test]
    fn long_spans_are_drawn_per_day() {
        let mut s = Summary::default();
        s.add(at("2026-03-01T23:00:00Z"), Outcome::Success, "a", "e");
        s.add(at("2026-03-09T01:00:00Z"), Outcome::Success, "a", "e");
        let auto = s.finish(BucketWidth::Auto);
        assert_eq!(auto.bucket, "day");
        assert_eq!(auto.buckets.len(), 9);
        assert_eq!(auto.buckets[0].start, "2026-03-01T00:00:00Z");
        let empty = Summary::default().finish(BucketWidth::Hour);
        assert!(empty.buckets.is_empty() && empty.first.is_none());
    }
}
