//! Retention: which sealed segments may go, and the checkpoint record that
//! keeps the rest verifiable.
//!
//! Only whole sealed segments are deleted, oldest first, never the active
//! one. Before deleting, the log appends a `log.retention` record (actor
//! `system`) whose context says where the retained log starts (the first
//! retained seq and the hash it chains from) and what each deleted segment
//! held. The verifier accepts a log that starts after seq 0 only if such a
//! record, itself in the chain, accounts for the start.
//!
//! A legal hold blocks all deletion while set; setting and releasing it are
//! events in the chain (`log.hold_set`, `log.hold_released`), and the
//! verifier reports a retention record that falls inside a hold.
//!
//! This module holds the policy, the records and the plan, which the
//! verifier reads too; the log's retention runs are in `log/retention.rs`.
//! Uses [`crate::event`], [`crate::error`] and [`crate::hash`].

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;
use crate::hash::chain::ChainHash;

/// Event type of the retention checkpoint record.
pub const RETENTION_EVENT: &str = "log.retention";
/// Event type recorded when a legal hold is set.
pub const HOLD_SET_EVENT: &str = "log.hold_set";
/// Event type recorded when a legal hold is released.
pub const HOLD_RELEASED_EVENT: &str = "log.hold_released";
/// Actor of the records the log writes itself.
pub const SYSTEM_ACTOR: &str = "system";
/// Event type of the first record after a migration to the current format
/// (`{"from_version":1}`), the first record of the first version 2 segment.
pub const MIGRATED_EVENT: &str = "log.migrated";
/// The file in a log directory that holds the current legal hold.
pub const HOLD_FILE_NAME: &str = "legal-hold.json";

/// When sealed segments may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Delete segments received longer ago than this: a version 2 segment
    /// whose last record's time of receipt (the engine's clock) is older, a
    /// version 1 segment (no receipt times) whose newest event time is.
    /// Default 90 days.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while all segment files together exceed
    /// this many bytes. Default none.
    pub max_bytes: Option<u64>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age: Some(Duration::from_secs(90 * 86_400)),
            max_bytes: None,
        }
    }
}

/// What a deleted segment held, as recorded in the retention record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedSegment {
    /// The segment's file name.
    pub file: String,
    /// Its first seq.
    pub base_seq: u64,
    /// Its last seq.
    pub last_seq: u64,
    /// Its records.
    pub record_count: u64,
    /// The hash its first record chained from.
    pub prev_hash: ChainHash,
    /// Its last record's hash.
    pub last_hash: ChainHash,
    /// Its earliest event time.
    pub min_timestamp: Timestamp,
    /// Its latest event time.
    pub max_timestamp: Timestamp,
    /// Its file size.
    pub bytes: u64,
    /// When the engine received its last record, the latest time of
    /// receipt in it (version 2 segments; absent for version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_received_at: Option<Timestamp>,
}

impl DeletedSegment {
    /// The time age-based retention judges the segment by: its latest time
    /// of receipt, or (version 1) its latest event time.
    pub fn age_time(&self) -> Timestamp {
        self.max_received_at.unwrap_or(self.max_timestamp)
    }
}

/// The context of a `log.retention` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRecord {
    /// The oldest seq kept.
    pub first_retained_seq: u64,
    /// The hash the record at `first_retained_seq` chains from.
    pub first_retained_prev_hash: ChainHash,
    /// The segments deleted, oldest first.
    pub deleted: Vec<DeletedSegment>,
    /// The cut-off time used: segments whose [`DeletedSegment::age_time`]
    /// is older were eligible; `None` when a deletion was for size.
    pub cutoff: Option<Timestamp>,
    /// The policy applied.
    pub policy: RetentionPolicy,
}

impl RetentionRecord {
    /// Whether this record accounts for a log that starts at `base_seq`,
    /// chaining from `prev_hash`: it is where the retained log starts, or
    /// the start of a segment it deleted (a retention run that crashed
    /// before deleting it).
    pub fn accounts_for(&self, base_seq: u64, prev_hash: &ChainHash) -> bool {
        (self.first_retained_seq == base_seq && &self.first_retained_prev_hash == prev_hash)
            || self
                .deleted
                .iter()
                .any(|d| d.base_seq == base_seq && &d.prev_hash == prev_hash)
    }
}

/// Which of `sealed` (oldest first, all sealed, the active segment not
/// among them) to delete: a count from the front. `total_bytes` is the size
/// of all segment files, the active one included; `now` is the engine's
/// clock. A segment is too old when its [`DeletedSegment::age_time`] is
/// before `now - max_age`: an event dated far in the future does not keep
/// a version 2 segment.
pub fn plan(
    policy: &RetentionPolicy,
    sealed: &[DeletedSegment],
    total_bytes: u64,
    now: Timestamp,
) -> usize {
    let cutoff = cutoff(policy, now);
    let mut remaining = total_bytes;
    let mut count = 0;
    for seg in sealed {
        let too_old = cutoff.is_some_and(|c| seg.age_time() < c);
        let too_big = policy.max_bytes.is_some_and(|max| remaining > max);
        if !(too_old || too_big) {
            break;
        }
        remaining = remaining.saturating_sub(seg.bytes);
        count += 1;
    }
    count
}

/// Events older than the returned time are past `policy.max_age`.
pub fn cutoff(policy: &RetentionPolicy, now: Timestamp) -> Option<Timestamp> {
    policy.max_age.map(|age| {
        let nanos = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(nanos))
    })
}

/// The legal hold file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// Who set it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it was set.
    pub since: Timestamp,
}

/// How many of `due` (oldest first) to delete: the longest run from the
/// front whose base seqs are all in `may_delete`. Deletion stays a prefix,
/// so the retained log has no gap.
pub fn deletable_prefix(due: &[DeletedSegment], may_delete: &BTreeSet<u64>) -> usize {
    due.iter()
        .take_while(|s| may_delete.contains(&s.base_seq))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;

    fn seg(base: u64, max_day: i64, bytes: u64) -> DeletedSegment {
        DeletedSegment {
            file: format!("{base:020}.seg"),
            base_seq: base,
            last_seq: base + 9,
            record_count: 10,
            prev_hash: ChainHash([base as u8; 32]),
            last_hash: ChainHash([base as u8 + 1; 32]),
            min_timestamp: Timestamp::from_unix_nanos((max_day - 1) * DAY),
            max_timestamp: Timestamp::from_unix_nanos(max_day * DAY),
            bytes,
            max_received_at: None,
        }
    }

    #[test]
    fn age_is_the_time_of_receipt_when_recorded() {
        let now = Timestamp::from_unix_nanos(200 * DAY);
        // Received on day 10 but dated in 2261: old enough by receipt.
        let mut future = seg(0, 106_000, 100);
        future.max_received_at = Some(Timestamp::from_unix_nanos(10 * DAY));
        // Dated day 10 but received on day 150: kept.
        let mut late = seg(10, 10, 100);
        late.max_received_at = Some(Timestamp::from_unix_nanos(150 * DAY));
        let policy = RetentionPolicy::default();
        assert_eq!(plan(&policy, &[future.clone(), late.clone()], 200, now), 1);
        assert_eq!(plan(&policy, &[late, future], 200, now), 0);
        // The record round-trips the field, and omits it for version 1.
        let json = serde_json::to_value(seg(20, 1, 1)).unwrap();
        assert!(json.get("max_received_at").is_none(), "{json}");
    }

    #[test]
    fn age_deletes_a_prefix_of_old_segments() {
        let now = Timestamp::from_unix_nanos(200 * DAY);
        let sealed = [
            seg(0, 10, 100),
            seg(10, 50, 100),
            seg(20, 150, 100),
            seg(30, 40, 100),
        ];
        let policy = RetentionPolicy::default();
        // Segments ending on day 10 and 50 are older than 90 days; the one ending
        // on day 150 is not, and the older one after it stays too (oldest first).
        assert_eq!(plan(&policy, &sealed, 500, now), 2);
        let never = RetentionPolicy {
            max_age: None,
            max_bytes: None,
        };
        assert_eq!(plan(&never, &sealed, 500, now), 0);
    }

    #[test]
    fn size_deletes_until_under_the_limit() {
        let now = Timestamp::from_unix_nanos(0);
        let sealed = [seg(0, 10, 100), seg(10, 50, 100), seg(20, 150, 100)];
        let policy = RetentionPolicy {
            max_age: None,
            max_bytes: Some(250),
        };
        assert_eq!(plan(&policy, &sealed, 400, now), 2);
        let policy = RetentionPolicy {
            max_age: None,
            max_bytes: Some(10),
        };
        assert_eq!(
            plan(&policy, &sealed, 400, now),
            3,
            "never more than the sealed ones"
        );
    }

    #[test]
    fn deletion_stops_at_the_first_segment_not_allowed() {
        let due = [seg(0, 1, 1), seg(10, 2, 1), seg(20, 3, 1), seg(30, 4, 1)];
        let allow = |bases: &[u64]| bases.iter().copied().collect::<BTreeSet<u64>>();
        assert_eq!(deletable_prefix(&due, &allow(&[0, 10, 20, 30, 40])), 4);
        assert_eq!(
            deletable_prefix(&due, &allow(&[0, 10, 30])),
            2,
            "30 is allowed, but deleting it would leave a gap at 20"
        );
        assert_eq!(deletable_prefix(&due, &allow(&[10, 20])), 0);
        assert_eq!(deletable_prefix(&due, &allow(&[])), 0);
        assert_eq!(deletable_prefix(&[], &allow(&[0])), 0);
    }

    #[test]
    fn records_account_for_starts() {
        let r = RetentionRecord {
            first_retained_seq: 20,
            first_retained_prev_hash: ChainHash([7; 32]),
            deleted: vec![seg(0, 1, 1), seg(10, 2, 1)],
            cutoff: None,
            policy: RetentionPolicy::default(),
        };
        assert!(r.accounts_for(20, &ChainHash([7; 32])));
        assert!(r.accounts_for(10, &ChainHash([10; 32])));
        assert!(!r.accounts_for(20, &ChainHash([8; 32])));
        assert!(!r.accounts_for(30, &ChainHash([7; 32])));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RetentionRecord>(&json).unwrap(), r);
    }
}
