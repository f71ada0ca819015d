//! Refused requests as events, with a bound on how fast they can grow a log.
//!
//! Each address (an IPv4 address, or an IPv6 /64, since one host holds a
//! whole /64) gets a one-minute window from its first failure. The first
//! [`INDIVIDUAL_FAILURES_PER_WINDOW`] failures in the window are recorded
//! one by one; later ones are only counted, per target log, and when the
//! window ends (or the server stops) each target log with counted failures
//! gets one `auth.failed_summary` event with the count. So an address adds
//! at most 10 + (one per target log) events a minute, however fast it
//! fails. At most [`MAX_TRACKED_ADDRESSES`] addresses are tracked; failures
//! from further addresses share one window of their own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::event::{Event, Outcome, Timestamp};

/// Failures recorded one by one per address and window.
pub const INDIVIDUAL_FAILURES_PER_WINDOW: u32 = 10;
/// The window's length.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once.
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;
/// Event type of a missing or invalid key.
pub const EVENT_AUTH_FAILED: &str = "auth.failed";
/// Event type of a valid key used where it may not be.
pub const EVENT_ACCESS_DENIED: &str = "access.denied";
/// Event type of the per-window count of failures not recorded one by one.
pub const EVENT_FAILED_SUMMARY: &str = "auth.failed_summary";
/// Longest request path copied into an event.
const MAX_PATH_CHARS: usize = 512;

/// Where a failure is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The existing workspace the request named.
    Workspace(String),
    /// The server's own log.
    Server,
}

/// One refused request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// [`EVENT_AUTH_FAILED`] or [`EVENT_ACCESS_DENIED`].
    pub event_type: &'static str,
    /// The client's address.
    pub ip: IpAddr,
    /// The id of the key presented, when it had one.
    pub key_id: Option<String>,
    /// Why it was refused (`missing_key`, `wrong_secret`, `other_workspace`, …).
    pub reason: &'static str,
    /// The request's method.
    pub method: String,
    /// The request's path (cut to 512 characters).
    pub path: String,
    /// More context (the workspace, scopes).
    pub extra: Map<String, Value>,
}

impl Failure {
    /// The event recording this failure.
    pub fn to_event(&self) -> Event {
        let actor = match &self.key_id {
            Some(id) => format!("apikey:{id}"),
            None => "anonymous".to_string(),
        };
        let mut event = Event::new(Timestamp::now(), self.event_type, actor);
        event.source_ip = Some(self.ip);
        event.outcome = Outcome::Failure;
        let c = &mut event.context;
        c.insert("reason".into(), self.reason.into());
        c.insert("method".into(), self.method.clone().into());
        c.insert("path".into(), cut(&self.path).into());
        if let Some(id) = &self.key_id {
            c.insert("key_id".into(), id.clone().into());
        }
        for (k, v) in &self.extra {
            c.insert(k.clone(), v.clone());
        }
        event
    }
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_PATH_CHARS).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddrKey {
    V4(u32),
    V6Net(u64),
    Overflow,
}

fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => AddrKey::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => AddrKey::V4(u32::from(v4)),
            None => AddrKey::V6Net((u128::from(v6) >> 64) as u64),
        },
    }
}

#[derive(Debug, Default)]
struct Counted {
    count: u64,
    by_event: BTreeMap<&'static str, u64>,
    last_method: String,
    last_path: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    started_at: Timestamp,
    first_ip: IpAddr,
    logged: u32,
    counted: BTreeMap<Target, Counted>,
}

/// The count of failures an address's window did not record one by one,
/// for one target log.
#[derive(Debug)]
pub struct Summary {
    /// The log to write it to.
    pub target: Target,
    /// Its event.
    pub event: Event,
}

/// Decides which failures are recorded one by one, and counts the rest.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    windows: Mutex<HashMap<AddrKey, Window>>,
}

impl FailureLimiter {
    /// A limiter with no windows.
    pub fn new() -> Self {
        FailureLimiter::default()
    }

    /// Notes a failure at `now`: true when it is to be recorded on its
    /// own, false when it was counted for a summary.
    pub fn admit(&self, failure: &Failure, target: &Target, now: Instant) -> bool {
        let mut windows = self.windows.lock();
        let mut key = addr_key(failure.ip);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED_ADDRESSES {
            key = AddrKey::Overflow;
        }
        let window = windows.entry(key).or_insert_with(|| Window {
            started: now,
            started_at: Timestamp::now(),
            first_ip: failure.ip,
            logged: 0,
            counted: BTreeMap::new(),
        });
        if window.logged < INDIVIDUAL_FAILURES_PER_WINDOW {
            window.logged += 1;
            return true;
        }
        let counted = window.counted.entry(target.clone()).or_default();
        counted.count += 1;
        *counted.by_event.entry(failure.event_type).or_default() += 1;
        counted.last_method.clone_from(&failure.method);
        counted.last_path = cut(&failure.path);
        false
    }

    /// Ends the windows that are over at `now` (all of them with `all`)
    /// and returns their summaries.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let mut windows = self.windows.lock();
        let due: Vec<AddrKey> = windows
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.started) >= FAILURE_WINDOW)
            .map(|(k, _)| *k)
            .collect();
        let mut summaries = Vec::new();
        for key in due {
            let Some(window) = windows.remove(&key) else {
                continue;
            };
            let ended_at = Timestamp::from_unix_nanos(
                window
                    .started_at
                    .unix_nanos()
                    .saturating_add(FAILURE_WINDOW.as_nanos() as i64),
            );
            for (target, counted) in window.counted {
                let mut event = Event::new(Timestamp::now(), EVENT_FAILED_SUMMARY, "system");
                event.source_ip = Some(window.first_ip);
                event.outcome = Outcome::Failure;
                let network = match key {
                    AddrKey::V4(_) => window.first_ip.to_string(),
                    AddrKey::V6Net(net) => {
                        let addr = std::net::Ipv6Addr::from(u128::from(net) << 64);
                        format!("{addr}/64")
                    }
                    AddrKey::Overflow => "many addresses (tracking limit reached)".into(),
                };
                let c = &mut event.context;
                c.insert("failures".into(), counted.count.into());
                c.insert("by_event".into(), json!(counted.by_event));
                c.insert("addresses".into(), network.into());
                c.insert("window_start".into(), window.started_at.to_string().into());
                c.insert("window_end".into(), ended_at.to_string().into());
                c.insert(
                    "recorded_individually".into(),
                    INDIVIDUAL_FAILURES_PER_WINDOW.into(),
                );
                c.insert("last_method".into(), counted.last_method.into());
                c.insert("last_path".into(), counted.last_path.into());
                summaries.push(Summary { target, event });
            }
        }
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(ip: &str) -> Failure {
        Failure {
            event_type: EVENT_AUTH_FAILED,
            ip: ip.parse().unwrap(),
            key_id: None,
            reason: "missing_key",
            method: "GET".into(),
            path: "/v1/workspaces/acme/events".into(),
            extra: Map::new(),
        }
    }

    #[test]
    fn a_flood_becomes_one_summary_per_window_and_target() {
        let limiter = FailureLimiter::new();
        let t0 = Instant::now();
        let ws = Target::Workspace("acme".into());
        let admitted = (0..100)
            .filter(|_| limiter.admit(&failure("203.0.113.9"), &ws, t0))
            .count();
        assert_eq!(admitted, 10);
        assert!(!limiter.admit(&failure("203.0.113.9"), &Target::Server, t0));
        // Another address has its own window; an IPv6 /64 is one address.
        assert!(limiter.admit(&failure("198.51.100.1"), &ws, t0));
        for i in 0..12 {
            let _ = limiter.admit(&failure(&format!("2001:db8::{i}")), &ws, t0);
        }
        assert!(limiter
            .take_due(t0 + Duration::from_secs(59), false)
            .is_empty());
        let mut due = limiter.take_due(t0 + FAILURE_WINDOW, false);
        due.sort_by(|a, b| a.target.cmp(&b.target));
        let counts: Vec<(Target, u64)> = due
            .iter()
            .map(|s| {
                (
                    s.target.clone(),
                    s.event.context["failures"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.contains(&(ws.clone(), 90)));
        assert!(counts.contains(&(Target::Server, 1)));
        assert!(counts.contains(&(ws.clone(), 2)));
        assert!(due
            .iter()
            .all(|s| s.event.event_type == EVENT_FAILED_SUMMARY));
        // The windows are gone: a new minute starts afresh.
        assert!(limiter.admit(&failure("203.0.113.9"), &ws, t0 + FAILURE_WINDOW));
        assert!(limiter.take_due(t0, true).is_empty());
    }
}
