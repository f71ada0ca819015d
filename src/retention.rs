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

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{EncodeRecord, Event, Timestamp};
use crate::format::segment;
use crate::hash::chain::ChainHash;
use crate::index;
use crate::log::{Log, Receipt};
use crate::storage::{read_exact_at, write_file_atomic};

/// Event type of the retention checkpoint record.
pub const RETENTION_EVENT: &str = "log.retention";
/// Event type recorded when a legal hold is set.
pub const HOLD_SET_EVENT: &str = "log.hold_set";
/// Event type recorded when a legal hold is released.
pub const HOLD_RELEASED_EVENT: &str = "log.hold_released";
/// Actor of the records the log writes itself.
pub const SYSTEM_ACTOR: &str = "system";
/// The file in a log directory that holds the current legal hold.
pub const HOLD_FILE_NAME: &str = "legal-hold.json";

/// When sealed segments may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Delete segments whose newest event is older than this. Default 90 days.
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
    /// The cut-off time used (events older than this were eligible).
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
/// of all segment files, the active one included.
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
        let too_old = cutoff.is_some_and(|c| seg.max_timestamp < c);
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

/// What a retention run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// The segments deleted, oldest first (empty when nothing was due).
    pub deleted: Vec<DeletedSegment>,
    /// Segments due under the policy but kept because the filter of
    /// [`Log::apply_retention_filtered`] did not let them go: the first it
    /// refused and every due segment after it, oldest first. Always empty
    /// for [`Log::apply_retention`].
    pub kept: Vec<DeletedSegment>,
    /// The `log.retention` record appended before deleting.
    pub record: Option<Receipt>,
}

/// How many of `due` (oldest first) to delete: the longest run from the
/// front whose base seqs are all in `may_delete`. Deletion stays a prefix,
/// so the retained log has no gap.
pub fn deletable_prefix(due: &[DeletedSegment], may_delete: &BTreeSet<u64>) -> usize {
    due.iter()
        .take_while(|s| may_delete.contains(&s.base_seq))
        .count()
}

impl Log {
    /// The sealed segments `policy` would delete now, oldest first.
    pub fn plan_retention(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<DeletedSegment>> {
        let snap = self.snapshot()?;
        let mut sealed = Vec::new();
        let mut total_bytes = 0;
        for &base in &snap.segments {
            let name = segment::file_name(base);
            let path = snap.dir.join(&name);
            let file = snap
                .storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let bytes = file.size().map_err(|e| Error::io(&path, e))?;
            total_bytes += bytes;
            if base >= snap.active_base {
                continue; // the active segment is never deleted
            }
            let header = segment::read_header(&*file, &name)?;
            let trailer =
                segment::read_trailer(&*file, &name, header.segment_bytes)?.ok_or_else(|| {
                    Error::Corrupted {
                        file: name.clone(),
                        offset: segment::data_end_limit(header.segment_bytes),
                        reason: "a segment before the newest has no trailer".into(),
                    }
                })?;
            sealed.push(DeletedSegment {
                file: name,
                base_seq: base,
                last_seq: trailer.last_seq,
                record_count: trailer.record_count,
                prev_hash: header.prev_hash,
                last_hash: trailer.last_hash,
                min_timestamp: trailer.min_timestamp,
                max_timestamp: trailer.max_timestamp,
                bytes,
            });
        }
        let count = plan(policy, &sealed, total_bytes, now);
        sealed.truncate(count);
        Ok(sealed)
    }

    /// Applies `policy`: appends a `log.retention` checkpoint record (and
    /// syncs it), then deletes the planned segments oldest first, then syncs
    /// the directory. A crash at any point leaves a log that opens and
    /// verifies: the record is durable before anything is deleted, and it
    /// accounts for every start the log can have while deleting.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<RetentionOutcome> {
        self.apply_retention_filtered(policy, now, |due| {
            Ok(due.iter().map(|s| s.base_seq).collect())
        })
    }

    /// [`Log::apply_retention`], deleting only segments that `may_delete`
    /// lets go. It is called once, with the segments due under `policy`
    /// (oldest first, never empty), and returns the base seqs of those that
    /// may be deleted, such as those confirmed archived
    /// (`archive::apply_retention_archived`, with the cargo feature `s3`).
    /// The due segments are deleted from the oldest up to the first one it
    /// does not return; that one and all due after it are kept
    /// ([`RetentionOutcome::kept`]), as deleting past it would leave a gap
    /// in the log.
    ///
    /// A legal hold refuses the run before `may_delete` is called, and an
    /// error from `may_delete` ends the run with nothing deleted. It runs
    /// while other retention runs and hold changes wait.
    pub fn apply_retention_filtered<E, F>(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        may_delete: F,
    ) -> std::result::Result<RetentionOutcome, E>
    where
        E: From<Error>,
        F: FnOnce(&[DeletedSegment]) -> std::result::Result<BTreeSet<u64>, E>,
    {
        let _running = self.retention_lock();
        if let Some(hold) = self.hold()? {
            return Err(Error::LegalHold {
                actor: hold.actor,
                reason: hold.reason,
                since: hold.since,
            }
            .into());
        }
        let mut deleted = self.plan_retention(policy, now)?;
        let kept = if deleted.is_empty() {
            Vec::new()
        } else {
            let count = deletable_prefix(&deleted, &may_delete(&deleted)?);
            deleted.split_off(count)
        };
        let Some(last) = deleted.last() else {
            return Ok(RetentionOutcome {
                deleted,
                kept,
                record: None,
            });
        };
        let snap = self.snapshot()?;
        let first_retained_seq = last.last_seq + 1;
        let record = RetentionRecord {
            first_retained_seq,
            first_retained_prev_hash: last.last_hash,
            deleted: deleted.clone(),
            cutoff: cutoff(policy, now),
            policy: *policy,
        };
        let mut event = Event::new(Timestamp::now(), RETENTION_EVENT, SYSTEM_ACTOR);
        event.context = match serde_json::to_value(&record) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(
                    Error::InvalidOptions("retention record does not serialize".into()).into(),
                )
            }
        };
        let receipt = self.append_engine(&event)?;
        self.sync()?;
        let storage = &*snap.storage;
        for seg in &deleted {
            let index = snap.dir.join(index::file_name(seg.base_seq));
            match storage.remove(&index) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(index, e).into()),
            }
            let path = snap.dir.join(&seg.file);
            storage.remove(&path).map_err(|e| Error::io(&path, e))?;
            self.forget_segments(&[seg.base_seq]);
        }
        storage
            .sync_dir(&snap.dir)
            .map_err(|e| Error::io(&snap.dir, e))?;
        Ok(RetentionOutcome {
            deleted,
            kept,
            record: Some(receipt),
        })
    }

    /// The legal hold in force, if any.
    pub fn hold(&self) -> Result<Option<LegalHold>> {
        let snap = self.snapshot()?;
        let path = snap.dir.join(HOLD_FILE_NAME);
        let file = match snap.storage.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let len = file.size().map_err(|e| Error::io(&path, e))?;
        if len > 64 * 1024 {
            return Err(Error::Corrupted {
                file: HOLD_FILE_NAME.into(),
                offset: 0,
                reason: "legal hold file is too large".into(),
            });
        }
        let mut bytes = vec![0; len as usize];
        read_exact_at(&*file, &mut bytes, 0).map_err(|e| Error::io(&path, e))?;
        // An unreadable hold file still blocks retention: fail closed.
        let hold = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupted {
            file: HOLD_FILE_NAME.into(),
            offset: 0,
            reason: format!("legal hold file does not parse ({e}); retention stays blocked"),
        })?;
        Ok(Some(hold))
    }

    /// Sets a legal hold: no segment is deleted until it is released. The
    /// hold file is written (and synced) before the `log.hold_set` record is
    /// appended, so a crash in between leaves the log held.
    pub fn set_hold(&self, actor: &str, reason: &str) -> Result<Receipt> {
        let _running = self.retention_lock();
        if self.hold()?.is_some() {
            return Err(Error::HoldState("a legal hold is already set"));
        }
        let mut event = Event::new(Timestamp::now(), HOLD_SET_EVENT, actor);
        event.context.insert("reason".into(), reason.into());
        // Checked before the hold file is written: a refused event holds nothing.
        crate::event::EngineEvent(&event).encode_record(&mut Vec::new())?;
        let hold = LegalHold {
            actor: actor.to_string(),
            reason: reason.to_string(),
            since: event.timestamp,
        };
        let bytes = serde_json::to_vec(&hold).map_err(|e| Error::InvalidOptions(e.to_string()))?;
        let snap = self.snapshot()?;
        write_file_atomic(&*snap.storage, &snap.dir, HOLD_FILE_NAME, &bytes)?;
        let receipt = self.append_engine(&event)?;
        self.sync()?;
        Ok(receipt)
    }

    /// Releases the legal hold. The `log.hold_released` record is appended
    /// (and synced) before the hold file is removed.
    pub fn release_hold(&self, actor: &str, reason: &str) -> Result<Receipt> {
        let _running = self.retention_lock();
        if self.hold()?.is_none() {
            return Err(Error::HoldState("no legal hold is set"));
        }
        let mut event = Event::new(Timestamp::now(), HOLD_RELEASED_EVENT, actor);
        event.context.insert("reason".into(), reason.into());
        let receipt = self.append_engine(&event)?;
        self.sync()?;
        let snap = self.snapshot()?;
        let path = snap.dir.join(HOLD_FILE_NAME);
        snap.storage
            .remove(&path)
            .map_err(|e| Error::io(&path, e))?;
        snap.storage
            .sync_dir(&snap.dir)
            .map_err(|e| Error::io(&snap.dir, e))?;
        Ok(receipt)
    }
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
        }
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
