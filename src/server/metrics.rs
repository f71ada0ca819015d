//! `GET /metrics`: the server's counters in the Prometheus text exposition
//! format (version 0.0.4), served only on its own listener
//! ([`crate::server::ServerConfig::metrics_listen`]), never on the API's.
//!
//! The exposition carries workspace names and sizes of every tenant, so it
//! takes no API key (a workspace's key must not see other workspaces) and
//! is meant for a loopback or private address that only the monitoring
//! system reaches (docs/HTTP.md, docs/SECURITY.md).
//!
//! Counting is cheap: the engine's counters are atomics
//! ([`crate::storage::stats`]); the request counts take one short lock per
//! request. The per-workspace figures are read when scraped, from the
//! workspaces that are open (a scrape opens none).
//!
//! The format is written by hand, a few dozen lines: the families here are
//! fixed, and label values are workspace names (`[a-z0-9_-]`), route
//! templates and status codes, which need no escaping but are escaped anyway.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

use crate::server::deliveries;
use crate::server::slots::{Slots, Usage};
use crate::server::workspace::Open;
use crate::server::AppState;
use crate::storage::stats::{self, SYNC_BUCKETS_US};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters the request path updates.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By (route, method, status).
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    /// By (event type, reason).
    refusals: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Connections open on the API listener.
    connections: Arc<AtomicUsize>,
    /// Connections accepted on the API listener.
    connections_accepted: AtomicU64,
}

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// A connection was accepted: counted open until the guard drops.
    pub(crate) fn connection(&self) -> OpenConnection {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.connections.clone())
    }

    /// A refused request (`auth.failed`, `access.denied`) and its reason.
    pub(crate) fn refusal(&self, event_type: &'static str, reason: &'static str) {
        *self
            .refusals
            .lock()
            .entry((event_type, reason))
            .or_default() += 1;
    }

    fn request(&self, route: &'static str, method: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .entry((route, method, status.as_u16()))
            .or_default() += 1;
    }
}

/// The route template a path belongs to, so that the request counts have a
/// bounded set of labels (`other` for every path no route serves).
fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", ""] => "/",
        ["", "healthz"] => "/healthz",
        ["", "v1", "key"] => "/v1/key",
        ["", "v1", "workspaces", _, rest @ ..] => match rest {
            ["events"] => "/v1/workspaces/{w}/events",
            ["events", _] => "/v1/workspaces/{w}/events/{seq}",
            ["export"] => "/v1/workspaces/{w}/export",
            ["verify"] => "/v1/workspaces/{w}/verify",
            ["checkpoint"] => "/v1/workspaces/{w}/checkpoint",
            ["keys"] => "/v1/workspaces/{w}/keys",
            ["keys", _] => "/v1/workspaces/{w}/keys/{id}",
            ["keys", _, "rotate"] => "/v1/workspaces/{w}/keys/{id}/rotate",
            ["deliveries"] => "/v1/workspaces/{w}/deliveries",
            ["deliveries", _] => "/v1/workspaces/{w}/deliveries/{name}",
            _ => "other",
        },
        _ => "other",
    }
}

fn method_of(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Middleware: counts every answer of the API by route, method and status.
pub(crate) async fn track(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_of(request.uri().path());
    let method = method_of(request.method());
    let response = next.run(request).await;
    state.metrics.request(route, method, response.status());
    response
}

/// The metrics listener's routes: `GET /metrics`, and 404 for the rest.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only GET /metrics is served here\n") })
        .with_state(state)
}

async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    // Log sizes come from directory listings: off the async workers.
    match tokio::task::spawn_blocking(move || render(&state)).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            eprintln!("chainlog serve: rendering the metrics: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Writes one family: its help, its type, and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Bytes of the files directly in `dir` (a log's segments and indexes).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Open file descriptors of this process (Linux; 0 elsewhere).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// A gauge with `value` of every open workspace.
fn workspace_gauge(
    f: &mut Family<'_>,
    open: &[(String, Open)],
    name: &str,
    help: &str,
    value: fn(&Open) -> u64,
) {
    f.head(name, "gauge", help);
    for (w, o) in open {
        f.sample(name, &[("workspace", w.as_str())], value(o));
    }
}

/// A gauge with `value` of every workspace's slot usage, by kind.
fn slot_gauge(
    f: &mut Family<'_>,
    all: &[&Slots],
    name: &str,
    help: &str,
    value: fn(&Usage) -> usize,
) {
    f.head(name, "gauge", help);
    for slots in all {
        for (w, usage) in slots.usage() {
            let labels = [("kind", slots.kind()), ("workspace", w.as_str())];
            f.sample(name, &labels, value(&usage));
        }
    }
}

fn slot_families(f: &mut Family<'_>, all: &[&Slots]) {
    slot_gauge(
        f,
        all,
        "chainlog_slots_running",
        "Exports streaming and verifications running, per workspace.",
        |u| u.running,
    );
    slot_gauge(
        f,
        all,
        "chainlog_slots_queued",
        "Requests waiting for a slot, per workspace.",
        |u| u.queued,
    );
    f.head(
        "chainlog_slots_refused_total",
        "counter",
        "Requests answered 503 for want of a slot.",
    );
    for slots in all {
        f.sample(
            "chainlog_slots_refused_total",
            &[("kind", slots.kind())],
            slots.refused(),
        );
    }
}

/// The whole exposition.
pub(crate) fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(8192);
    let f = &mut Family { out: &mut out };
    let m = &state.metrics;

    f.head(
        "chainlog_http_requests_total",
        "counter",
        "API requests answered, by route, method and status.",
    );
    for ((route, method, status), n) in m.requests.lock().iter() {
        let status = status.to_string();
        let labels = [("route", *route), ("method", *method), ("status", &status)];
        f.sample("chainlog_http_requests_total", &labels, n);
    }
    f.head(
        "chainlog_refusals_total",
        "counter",
        "Requests refused for a missing, invalid or insufficient key, by event type and reason.",
    );
    for ((event, reason), n) in m.refusals.lock().iter() {
        let labels = [("event", *event), ("reason", *reason)];
        f.sample("chainlog_refusals_total", &labels, n);
    }
    f.head(
        "chainlog_connections_open",
        "gauge",
        "Connections open on the API listener.",
    );
    f.sample(
        "chainlog_connections_open",
        &[],
        m.connections.load(Ordering::Relaxed),
    );
    f.head(
        "chainlog_connections_accepted_total",
        "counter",
        "Connections accepted on the API listener (those over the limit are closed at once).",
    );
    f.sample(
        "chainlog_connections_accepted_total",
        &[],
        m.connections_accepted.load(Ordering::Relaxed),
    );
    slot_families(
        f,
        &[
            &state.export_slots,
            &state.verify_slots,
            &state.query_slots,
            &state.tail_slots,
        ],
    );

    let engine = stats::snapshot();
    f.head(
        "chainlog_records_appended_total",
        "counter",
        "Records appended to any log of this process (events, refusals, the engine's own).",
    );
    f.sample(
        "chainlog_records_appended_total",
        &[],
        engine.records_appended,
    );
    f.head(
        "chainlog_record_bytes_appended_total",
        "counter",
        "Bytes of those records as framed on disk.",
    );
    f.sample(
        "chainlog_record_bytes_appended_total",
        &[],
        engine.record_bytes_appended,
    );
    f.head(
        "chainlog_fdatasync_seconds",
        "histogram",
        "fdatasync calls of the storage engine and their latency.",
    );
    let mut cumulative = 0;
    for (i, bound_us) in SYNC_BUCKETS_US.iter().enumerate() {
        cumulative += engine.sync_buckets[i];
        let le = format!("{}", *bound_us as f64 / 1e6);
        f.sample(
            "chainlog_fdatasync_seconds_bucket",
            &[("le", &le)],
            cumulative,
        );
    }
    cumulative += engine.sync_buckets[SYNC_BUCKETS_US.len()];
    // Counted from the buckets, so that +Inf and _count agree exactly.
    f.sample(
        "chainlog_fdatasync_seconds_bucket",
        &[("le", "+Inf")],
        cumulative,
    );
    f.sample(
        "chainlog_fdatasync_seconds_sum",
        &[],
        engine.sync_ns as f64 / 1e9,
    );
    f.sample("chainlog_fdatasync_seconds_count", &[], cumulative);

    let open = state.workspaces.open_list();
    f.head(
        "chainlog_workspaces_open",
        "gauge",
        "Workspace logs open (opened by an authorized request, kept open).",
    );
    f.sample("chainlog_workspaces_open", &[], open.len());
    workspace_gauge(
        f,
        &open,
        "chainlog_commit_queue_depth",
        "Append requests waiting in a workspace's commit queue.",
        |o| o.committer.depth() as u64,
    );
    workspace_gauge(
        f,
        &open,
        "chainlog_workspace_records",
        "Records retained in an open workspace's log.",
        |o| {
            let s = o.log.state();
            s.next_seq.saturating_sub(s.first_seq)
        },
    );
    workspace_gauge(
        f,
        &open,
        "chainlog_workspace_bytes",
        "Bytes of an open workspace's log directory (segments, preallocated, and indexes).",
        |o| dir_bytes(o.log.dir()),
    );
    delivery_families(f, state);
    f.head(
        "process_open_fds",
        "gauge",
        "Open file descriptors of the server process.",
    );
    f.sample("process_open_fds", &[], open_fds());
    out
}

/// Each running SIEM destination's lag and counts.
fn delivery_families(f: &mut Family<'_>, state: &AppState) {
    let statuses = state.deliveries.statuses(None);
    let now = crate::event::Timestamp::now();
    let rows: Vec<_> = statuses
        .iter()
        .map(|(w, d, s)| {
            let end = state
                .workspaces
                .cached(w)
                .map_or(s.next_seq, |log| log.durable_next_seq());
            (w.as_str(), d, s, deliveries::lag(s, end, now))
        })
        .collect();
    let families: [(&str, &str, &str); 5] = [
        ("chainlog_delivery_lag_records", "gauge", "Records of the workspace's log a destination has not yet passed (delivered or skipped as not matching)."),
        ("chainlog_delivery_lag_seconds", "gauge", "Seconds since the oldest record a destination has not yet acknowledged was received (0 when caught up)."),
        ("chainlog_delivery_records_total", "counter", "Records a destination acknowledged since it was created."),
        ("chainlog_delivery_failures_total", "counter", "Requests to a destination that failed, since the server started."),
        ("chainlog_delivery_failing", "gauge", "1 while a destination is failing (delivery.failing recorded, not yet recovered) or stopped."),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        f.head(name, kind, help);
        for (w, d, s, lag) in &rows {
            let labels = [
                ("workspace", *w),
                ("destination", d.name.as_str()),
                ("kind", d.kind.as_str()),
            ];
            let value = match i {
                0 => lag.records_behind as f64,
                1 => lag.seconds_behind,
                2 => s.delivered as f64,
                3 => s.failures_total as f64,
                _ => f64::from(u8::from(s.failing || s.stopped.is_some())),
            };
            f.sample(name, &labels, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_have_bounded_labels() {
        assert_eq!(route_of("/"), "/");
        assert_eq!(
            route_of("/v1/workspaces/acme/events"),
            "/v1/workspaces/{w}/events"
        );
        assert_eq!(
            route_of("/v1/workspaces/acme/events/7"),
            "/v1/workspaces/{w}/events/{seq}"
        );
        assert_eq!(
            route_of("/v1/workspaces/a/keys/k1/rotate"),
            "/v1/workspaces/{w}/keys/{id}/rotate"
        );
        assert_eq!(route_of("/v1/workspaces/a/b/c/d/e"), "other");
        assert_eq!(route_of("/etc/passwd"), "other");
        assert_eq!(method_of(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
