//! Refused requests as events, with bounds on how fast they can grow a log.
//!
//! Time is cut into fixed windows (a minute by default) from the server's start. Within
//! a window a refusal without a valid key (`auth.failed`, `request.refused`)
//! is recorded one by one only while three budgets all have room: its
//! address's (an IPv4 address, or an IPv6 /64, since one host holds a whole
//! /64), its target log's and the server's as a whole ([`AuditPolicy`]).
//! Past any of them it is only counted, and when the window ends (or the
//! server stops) each target log with counted refusals gets one
//! `auth.failed_summary` event whose counts are exact: in total, by event,
//! by reason, by the budget that was full, and by address (the first
//! [`MAX_LISTED_ADDRESSES`] addresses by name, the rest as one number).
//!
//! A valid key used outside its workspace or scope (`access.denied`) is a
//! security event: it never touches those budgets and is recorded one by
//! one up to [`AuditPolicy::security_events_per_key`] per key and window
//! (a bound against a stolen key flooding the log), past which each target
//! log gets one exact `access.denied_summary` per key and window.
//! At most [`MAX_TRACKED_ADDRESSES`] addresses are tracked in a window;
//! further addresses share one budget of their own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::event::{Event, Outcome, Timestamp};
use crate::server::windows::{Ended, Tally, WindowCounts, Windows};

/// Failures recorded one by one per address and window.
pub const INDIVIDUAL_FAILURES_PER_WINDOW: u32 = 10;
/// The window's default length ([`AuditPolicy::window`]).
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
    /// [`EVENT_AUTH_FAILED`], [`EVENT_ACCESS_DENIED`] or
    /// [`EVENT_REQUEST_REFUSED`].
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
    /// The key's id when this is a security event: a valid key used outside
    /// its workspace or scope.
    pub fn security_key(&self) -> Option<&str> {
        match self.event_type {
            EVENT_ACCESS_DENIED => self.key_id.as_deref(),
            _ => None,
        }
    }

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

/// Event type of a request refused before any key was looked at (no such
/// route, method not allowed, request head too large or malformed).
pub const EVENT_REQUEST_REFUSED: &str = "request.refused";
/// Event type of the per-window count of a key's security events not
/// recorded one by one.
pub const EVENT_DENIED_SUMMARY: &str = "access.denied_summary";
/// Addresses named in a summary; the others are counted together.
pub const MAX_LISTED_ADDRESSES: usize = 32;
/// Paths named in a security summary; the others are counted together.
pub const MAX_LISTED_PATHS: usize = 32;

/// What the server records about refusals and reads, and how much of it
/// one by one. Each budget counts events recorded one by one in a window
/// ([`AuditPolicy::window`]); what is over a budget is counted exactly in
/// summary events instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPolicy {
    /// The length of the windows the budgets count in, from the server's
    /// start. Default [`FAILURE_WINDOW`], one minute.
    pub window: Duration,
    /// Refusals without a valid key recorded one by one per client address.
    /// Default 10.
    pub refusals_per_address: u32,
    /// Refusals without a valid key recorded one by one per target log (a
    /// workspace's, or the server's). Default 100.
    pub refusals_per_log: u32,
    /// Refusals without a valid key recorded one by one in all logs
    /// together. Default 1,000.
    pub refusals_total: u32,
    /// Security events (a valid key outside its workspace or scope)
    /// recorded one by one per key. Default 1,000.
    pub security_events_per_key: u32,
    /// Reads (queries, exports, verifications, key listings, sign-ins)
    /// recorded one by one per key and log. Default 10.
    pub reads_per_key: u32,
    /// Workspaces whose admin keys may read the server's log; `None`: every
    /// admin key. Default `None`.
    pub server_log_readers: Option<Vec<String>>,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            window: FAILURE_WINDOW,
            refusals_per_address: INDIVIDUAL_FAILURES_PER_WINDOW,
            refusals_per_log: 100,
            refusals_total: 1000,
            security_events_per_key: 1000,
            reads_per_key: 10,
            server_log_readers: None,
        }
    }
}

/// Refusals without a valid key counted for one target log in a window.
#[derive(Debug, Default)]
struct Counted {
    count: u64,
    by_event: BTreeMap<&'static str, u64>,
    by_reason: BTreeMap<&'static str, u64>,
    over_address_budget: u64,
    over_log_budget: u64,
    over_total_budget: u64,
    addresses: Tally,
    first_ip: Option<IpAddr>,
    last_method: String,
    last_path: String,
}

/// A key's security events counted for one target log in a window.
#[derive(Debug, Default)]
struct DeniedCounted {
    count: u64,
    by_reason: BTreeMap<&'static str, u64>,
    paths: Tally,
    addresses: Tally,
    first_ip: Option<IpAddr>,
}

/// One window's budgets and counts.
#[derive(Debug, Default)]
struct Window {
    per_address: HashMap<AddrKey, u32>,
    per_log: HashMap<Target, u32>,
    total: u32,
    per_key: HashMap<String, u32>,
    counted: BTreeMap<Target, Counted>,
    denied: BTreeMap<(Target, String), DeniedCounted>,
}

impl WindowCounts for Window {
    fn is_empty(&self) -> bool {
        self.counted.is_empty() && self.denied.is_empty()
    }
}

/// A summary event and the log to write it to.
#[derive(Debug)]
pub struct Summary {
    /// The log to write it to.
    pub target: Target,
    /// Its event.
    pub event: Event,
}

/// Decides which refusals are recorded one by one, and counts the rest.
#[derive(Debug)]
pub struct FailureLimiter {
    policy: AuditPolicy,
    windows: Mutex<Windows<Window>>,
}

impl FailureLimiter {
    /// A limiter whose windows start at `epoch`.
    pub fn new(policy: AuditPolicy, epoch: Instant) -> Self {
        FailureLimiter {
            windows: Mutex::new(Windows::new(epoch, policy.window)),
            policy,
        }
    }

    /// Notes a refusal at `now`: true when it is to be recorded on its
    /// own, false when it was counted for a summary.
    pub fn admit(&self, failure: &Failure, target: &Target, now: Instant) -> bool {
        let mut windows = self.windows.lock();
        let window = windows.at(now);
        if let Some(key_id) = failure.security_key() {
            let recorded = window.per_key.entry(key_id.to_string()).or_default();
            if *recorded < self.policy.security_events_per_key {
                *recorded += 1;
                return true;
            }
            let c = window
                .denied
                .entry((target.clone(), key_id.to_string()))
                .or_default();
            c.count += 1;
            *c.by_reason.entry(failure.reason).or_default() += 1;
            c.paths.add(&cut(&failure.path), MAX_LISTED_PATHS);
            c.addresses
                .add(&failure.ip.to_string(), MAX_LISTED_ADDRESSES);
            c.first_ip.get_or_insert(failure.ip);
            return false;
        }
        let mut key = addr_key(failure.ip);
        if !window.per_address.contains_key(&key)
            && window.per_address.len() >= MAX_TRACKED_ADDRESSES
        {
            key = AddrKey::Overflow;
        }
        let by_address = window.per_address.get(&key).copied().unwrap_or(0);
        let by_log = window.per_log.get(target).copied().unwrap_or(0);
        let full = if by_address >= self.policy.refusals_per_address {
            Some(0)
        } else if by_log >= self.policy.refusals_per_log {
            Some(1)
        } else if window.total >= self.policy.refusals_total {
            Some(2)
        } else {
            None
        };
        let Some(full) = full else {
            *window.per_address.entry(key).or_default() += 1;
            *window.per_log.entry(target.clone()).or_default() += 1;
            window.total += 1;
            return true;
        };
        let c = window.counted.entry(target.clone()).or_default();
        c.count += 1;
        *c.by_event.entry(failure.event_type).or_default() += 1;
        *c.by_reason.entry(failure.reason).or_default() += 1;
        match full {
            0 => c.over_address_budget += 1,
            1 => c.over_log_budget += 1,
            _ => c.over_total_budget += 1,
        }
        c.addresses
            .add(&address_name(key, failure.ip), MAX_LISTED_ADDRESSES);
        c.first_ip.get_or_insert(failure.ip);
        c.last_method.clone_from(&failure.method);
        c.last_path = cut(&failure.path);
        false
    }

    /// Ends the windows that are over at `now` (and the current one too
    /// with `all`) and returns their summaries.
    pub fn take_due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let ended = self.windows.lock().take_due(now, all);
        ended.into_iter().flat_map(|w| self.summaries(w)).collect()
    }

    /// One ended window's summary events.
    fn summaries(&self, ended: Ended<Window>) -> Vec<Summary> {
        let mut summaries = Vec::new();
        for (target, c) in ended.counts.counted {
            let mut event = Event::new(Timestamp::now(), EVENT_FAILED_SUMMARY, "system");
            event.source_ip = c.first_ip;
            event.outcome = Outcome::Failure;
            let x = &mut event.context;
            x.insert("failures".into(), c.count.into());
            x.insert("by_event".into(), json!(c.by_event));
            x.insert("by_reason".into(), json!(c.by_reason));
            x.insert(
                "over_budget".into(),
                json!({
                    "address": c.over_address_budget,
                    "log": c.over_log_budget,
                    "total": c.over_total_budget,
                }),
            );
            x.insert("addresses".into(), json!(c.addresses.listed));
            x.insert(
                "failures_from_unlisted_addresses".into(),
                c.addresses.unlisted.into(),
            );
            x.insert("window_start".into(), ended.start.clone().into());
            x.insert("window_end".into(), ended.end.clone().into());
            x.insert(
                "budgets".into(),
                json!({
                    "per_address": self.policy.refusals_per_address,
                    "per_log": self.policy.refusals_per_log,
                    "total": self.policy.refusals_total,
                }),
            );
            x.insert("last_method".into(), c.last_method.into());
            x.insert("last_path".into(), c.last_path.into());
            summaries.push(Summary { target, event });
        }
        for ((target, key_id), c) in ended.counts.denied {
            let mut event = Event::new(
                Timestamp::now(),
                EVENT_DENIED_SUMMARY,
                format!("apikey:{key_id}"),
            );
            event.source_ip = c.first_ip;
            event.outcome = Outcome::Failure;
            let x = &mut event.context;
            x.insert("key_id".into(), key_id.into());
            x.insert("attempts".into(), c.count.into());
            x.insert("by_reason".into(), json!(c.by_reason));
            x.insert("paths".into(), json!(c.paths.listed));
            x.insert("attempts_at_unlisted_paths".into(), c.paths.unlisted.into());
            x.insert("addresses".into(), json!(c.addresses.listed));
            x.insert(
                "attempts_from_unlisted_addresses".into(),
                c.addresses.unlisted.into(),
            );
            x.insert(
                "recorded_individually".into(),
                self.policy.security_events_per_key.into(),
            );
            x.insert("window_start".into(), ended.start.clone().into());
            x.insert("window_end".into(), ended.end.clone().into());
            summaries.push(Summary { target, event });
        }
        summaries
    }
}

fn address_name(key: AddrKey, ip: IpAddr) -> String {
    match key {
        AddrKey::V4(_) => ip.to_string(),
        AddrKey::V6Net(net) => {
            let addr = std::net::Ipv6Addr::from(u128::from(net) << 64);
            format!("{addr}/64")
        }
        AddrKey::Overflow => "other addresses (tracking limit reached)".into(),
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

    fn denied(ip: &str, key: &str) -> Failure {
        Failure {
            event_type: EVENT_ACCESS_DENIED,
            key_id: Some(key.into()),
            reason: "other_workspace",
            ..failure(ip)
        }
    }

    /// The sum of a JSON object's members, all counts.
    fn sum_of_members(object: &serde_json::Value) -> u64 {
        let members = object.as_object().unwrap().values();
        members.map(|v| v.as_u64().unwrap()).sum()
    }

    fn count(summaries: &[Summary], target: &Target, field: &str) -> u64 {
        summaries
            .iter()
            .filter(|s| &s.target == target && s.event.context.contains_key(field))
            .map(|s| s.event.context[field].as_u64().unwrap())
            .sum()
    }

    #[test]
    fn a_flood_becomes_one_summary_per_window_and_target() {
        let t0 = Instant::now();
        let limiter = FailureLimiter::new(AuditPolicy::default(), t0);
        let ws = Target::Workspace("acme".into());
        let admitted = (0..100)
            .filter(|_| limiter.admit(&failure("203.0.113.9"), &ws, t0))
            .count();
        assert_eq!(admitted, 10);
        assert!(!limiter.admit(&failure("203.0.113.9"), &Target::Server, t0));
        // Another address has its own budget; an IPv6 /64 is one address.
        assert!(limiter.admit(&failure("198.51.100.1"), &ws, t0));
        for i in 0..12 {
            let _ = limiter.admit(&failure(&format!("2001:db8::{i}")), &ws, t0);
        }
        assert!(limiter
            .take_due(t0 + Duration::from_secs(59), false)
            .is_empty());
        let due = limiter.take_due(t0 + FAILURE_WINDOW, false);
        assert_eq!(due.len(), 2, "{due:?}");
        assert_eq!(count(&due, &ws, "failures"), 92);
        assert_eq!(count(&due, &Target::Server, "failures"), 1);
        let acme = due.iter().find(|s| s.target == ws).unwrap();
        assert_eq!(
            acme.event.context["addresses"],
            json!({"203.0.113.9": 90, "2001:db8::/64": 2})
        );
        assert!(due
            .iter()
            .all(|s| s.event.event_type == EVENT_FAILED_SUMMARY));
        // The window is over: a new minute starts afresh.
        assert!(limiter.admit(&failure("203.0.113.9"), &ws, t0 + FAILURE_WINDOW));
        assert!(limiter.take_due(t0 + FAILURE_WINDOW, true).is_empty());
    }

    #[test]
    fn many_addresses_meet_the_log_and_total_budgets_and_are_counted_exactly() {
        let t0 = Instant::now();
        let policy = AuditPolicy {
            refusals_per_address: 2,
            refusals_per_log: 5,
            refusals_total: 8,
            ..AuditPolicy::default()
        };
        let limiter = FailureLimiter::new(policy, t0);
        let (a, b) = (Target::Workspace("a".into()), Target::Workspace("b".into()));
        let mut recorded = BTreeMap::new();
        for i in 0..50u32 {
            let ip = format!("10.0.{}.{}", i / 200, i % 200);
            for target in [&a, &b] {
                for _ in 0..3 {
                    if limiter.admit(&failure(&ip), target, t0) {
                        *recorded.entry(target.clone()).or_insert(0u64) += 1;
                    }
                }
            }
        }
        // 5 in a (its budget), then 3 in b (the total's rest).
        assert_eq!(recorded[&a], 5);
        assert_eq!(recorded[&b], 3);
        let due = limiter.take_due(t0, true);
        assert_eq!(due.len(), 2);
        assert_eq!(count(&due, &a, "failures"), 150 - 5);
        assert_eq!(count(&due, &b, "failures"), 150 - 3);
        let sa = &due.iter().find(|s| s.target == a).unwrap().event.context;
        // Every failure not recorded is over one budget (address, log or
        // total), and is counted under its address or as unlisted.
        assert_eq!(sum_of_members(&sa["over_budget"]), 145);
        let addresses = &sa["addresses"];
        assert_eq!(addresses.as_object().unwrap().len(), MAX_LISTED_ADDRESSES);
        let unlisted = sa["failures_from_unlisted_addresses"].as_u64().unwrap();
        assert_eq!(sum_of_members(addresses) + unlisted, 145);
    }

    #[test]
    fn security_events_ignore_cheap_budgets_and_have_their_own() {
        let t0 = Instant::now();
        let policy = AuditPolicy {
            refusals_per_address: 1,
            refusals_per_log: 1,
            refusals_total: 1,
            security_events_per_key: 3,
            ..AuditPolicy::default()
        };
        let limiter = FailureLimiter::new(policy, t0);
        let ws = Target::Workspace("b".into());
        for _ in 0..20 {
            let _ = limiter.admit(&failure("192.0.2.1"), &ws, t0);
        }
        let admitted = (0..5)
            .filter(|_| limiter.admit(&denied("192.0.2.1", "k1"), &ws, t0))
            .count();
        assert_eq!(admitted, 3);
        // Another key has its own bound.
        assert!(limiter.admit(&denied("192.0.2.1", "k2"), &ws, t0));
        let due = limiter.take_due(t0, true);
        let s = due
            .iter()
            .find(|s| s.event.event_type == EVENT_DENIED_SUMMARY)
            .unwrap();
        assert_eq!(s.event.context["attempts"], 2);
        assert_eq!(s.event.context["key_id"], "k1");
        assert_eq!(
            s.event.context["paths"],
            json!({"/v1/workspaces/acme/events": 2})
        );
        assert_eq!(count(&due, &ws, "failures"), 19);
    }
}
