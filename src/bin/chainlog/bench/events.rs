//! Synthetic audit events of a realistic shape and size, for benchmarks.
//!
//! A few busy actors (people, bots, `system`) make most events and many rare
//! actors make the rest; event types are dotted; most events touch a node,
//! many a resource; sources are IPv4 or IPv6 (none for `system`); the
//! context is a small JSON object, padded with a `detail` string so that the
//! encoded record is about the requested size (±15%).
//!
//! The generator is deterministic (SplitMix64 from a seed), so every run and
//! every peer sees the same events. Shared by `chainlog bench` and the
//! criterion benches (which include this file by path).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chainlog::event::encode_record;
use chainlog::{Event, Outcome, Timestamp};
use serde_json::{Map, Value};

/// Actors that make most events, with their weights.
const BUSY_ACTORS: [(&str, u32); 8] = [
    ("system", 22),
    ("deploy-bot", 16),
    ("monitoring-bot", 14),
    ("alice@acme.io", 12),
    ("bob@acme.io", 10),
    ("carol@acme.io", 8),
    ("ci-runner", 6),
    ("dave@acme.io", 4),
];
/// Share of events (in percent) made by a rare actor.
const RARE_ACTOR_PERCENT: u64 = 20;
/// Number of distinct rare actors.
pub const RARE_ACTORS: u64 = 20_000;

const EVENT_TYPES: [&str; 20] = [
    "auth.login",
    "auth.login_failed",
    "auth.logout",
    "pcap.download",
    "pcap.requested",
    "incident.opened",
    "incident.updated",
    "incident.resolved",
    "node.added",
    "node.removed",
    "node.rebooted",
    "apikey.created",
    "apikey.rotated",
    "apikey.revoked",
    "maintenance.started",
    "maintenance.ended",
    "config.changed",
    "workspace.member_added",
    "alert.acknowledged",
    "report.exported",
];
const CITIES: [&str; 8] = ["nyc", "fra", "ams", "sin", "sjc", "lon", "tyo", "syd"];
const ROLES: [&str; 2] = ["edge", "core"];
const WORDS: [&str; 16] = [
    "approved",
    "by",
    "change",
    "board",
    "uplink",
    "xe-0/0/1",
    "scheduled",
    "rotation",
    "after",
    "customer",
    "ticket",
    "request",
    "rollback",
    "window",
    "capture",
    "filter",
];

/// The `k`-th rare actor (`k < RARE_ACTORS`).
pub fn rare_actor(k: u64) -> String {
    format!("user{k:05}@customer{}.example", k % 97)
}

/// A deterministic stream of events.
pub struct EventGen {
    state: u64,
    timestamp_nanos: i64,
    target_bytes: usize,
}

impl EventGen {
    /// Events whose encoded records average about `target_bytes`.
    pub fn new(seed: u64, target_bytes: usize) -> Self {
        EventGen {
            state: seed,
            // 2026-03-09T00:00:00Z.
            timestamp_nanos: 1_773_014_400_000_000_000,
            target_bytes,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }

    fn actor(&mut self) -> String {
        if self.below(100) < RARE_ACTOR_PERCENT {
            let k = self.below(RARE_ACTORS);
            return rare_actor(k);
        }
        let total: u32 = BUSY_ACTORS.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(u64::from(total)) as u32;
        for (name, weight) in BUSY_ACTORS {
            if pick < weight {
                return name.to_string();
            }
            pick -= weight;
        }
        BUSY_ACTORS[0].0.to_string()
    }

    fn ip(&mut self) -> IpAddr {
        match self.below(10) {
            0..=2 => Ipv6Addr::new(
                0x2001,
                0xdb8,
                self.below(0x10000) as u16,
                0,
                0,
                0,
                0,
                self.below(0x10000) as u16,
            )
            .into(),
            3..=5 => Ipv4Addr::new(10, 20, self.below(256) as u8, self.below(256) as u8).into(),
            6..=7 => Ipv4Addr::new(203, 0, 113, self.below(256) as u8).into(),
            _ => Ipv4Addr::new(198, 51, 100, self.below(256) as u8).into(),
        }
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        // Mostly increasing time, with some events arriving late.
        self.timestamp_nanos += self.below(2_000_000) as i64;
        let late = if self.below(10) == 0 {
            self.below(500_000_000) as i64
        } else {
            0
        };
        let timestamp = Timestamp::from_unix_nanos(self.timestamp_nanos - late);
        let event_type = EVENT_TYPES[self.below(EVENT_TYPES.len() as u64) as usize];
        let actor = self.actor();
        let mut event = Event::new(timestamp, event_type, actor);
        if self.below(10) < 8 {
            let city = CITIES[self.below(CITIES.len() as u64) as usize];
            let role = ROLES[self.below(2) as usize];
            event.node = Some(format!("{city}-{role}-{:02}", 1 + self.below(24)));
        }
        let category = event_type.split('.').next().unwrap_or("");
        event.resource = match category {
            "incident" => Some(format!("INC-{}", 1000 + self.below(9000))),
            "maintenance" => Some(format!("MW-{}", 1000 + self.below(9000))),
            "apikey" => Some(format!("key_{}", self.hex(4))),
            "pcap" | "report" => Some(self.hex(8)),
            _ => None,
        };
        if event.actor != "system" {
            event.source_ip = Some(self.ip());
        }
        if event_type == "auth.login_failed" || self.below(100) < 2 {
            event.outcome = Outcome::Failure;
        }
        let mut context = Map::new();
        context.insert("request_id".into(), format!("req_{}", self.hex(16)).into());
        match category {
            "pcap" => {
                context.insert("sha256".into(), self.hex(64).into());
                context.insert("bytes".into(), self.below(50_000_000).into());
            }
            "incident" => {
                context.insert(
                    "severity".into(),
                    ["low", "medium", "high"][self.below(3) as usize].into(),
                );
                context.insert("peak_pps".into(), self.below(2_000_000).into());
            }
            "config" => {
                context.insert("key".into(), "bgp.hold_time_s".into());
                context.insert("old".into(), 90.into());
                context.insert("new".into(), (10 + self.below(80)).into());
            }
            "auth" => {
                context.insert(
                    "method".into(),
                    ["password+totp", "sso", "api_key"][self.below(3) as usize].into(),
                );
            }
            _ => {
                context.insert("region".into(), CITIES[self.below(8) as usize].into());
            }
        }
        event.context = context;
        self.pad(&mut event);
        event
    }

    /// Adds a `detail` string so the record is about the target size.
    fn pad(&mut self, event: &mut Event) {
        let jitter = self.below(31) as i64 - 15;
        let target = (self.target_bytes as i64 * (100 + jitter) / 100) as usize;
        let mut record = Vec::with_capacity(512);
        if encode_record(event, &mut record).is_err() {
            return;
        }
        // `,"detail":""` adds 12 bytes around the text.
        let Some(text_len) = target.checked_sub(record.len() + 12) else {
            return;
        };
        let mut text = String::with_capacity(text_len + 16);
        while text.len() < text_len {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
        }
        text.truncate(text_len);
        event.context.insert("detail".into(), Value::String(text));
    }
}

impl Iterator for EventGen {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        Some(self.next_event())
    }
}

/// Encoded record bytes of each event.
pub fn encode_all(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| {
            let mut record = Vec::with_capacity(512);
            // The bytes the engine stores: the provenance prefix a log with
            // the default appender writes, then the event body. Generated
            // events are valid; an invalid one would be a bare prefix here.
            let _ = chainlog::event::record::encode_provenance(
                chainlog::Timestamp::now(),
                chainlog::event::Origin::Client,
                chainlog::log::DEFAULT_APPENDER,
                &mut record,
            );
            let _ = encode_record(e, &mut record);
            record
        })
        .collect()
}
