//! Retention runs on a live log: planning, deleting whole sealed segments
//! after appending the `log.retention` record, and legal holds. The policy,
//! the records and the plan are in [`crate::retention`].

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::event::record::RECORD_V2;
use crate::event::{EncodeRecord, Event, Timestamp};
use crate::format::segment;
use crate::index;
use crate::log::{Log, Receipt};
use crate::retention::{
    cutoff, deletable_prefix, plan, DeletedSegment, LegalHold, RetentionPolicy, RetentionRecord,
    HOLD_FILE_NAME, HOLD_RELEASED_EVENT, HOLD_SET_EVENT, RETENTION_EVENT, SYSTEM_ACTOR,
};
use crate::storage::{read_exact_at, write_file_atomic};

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

impl Log {
    /// The engine's clock ([`crate::storage::Storage::now`]): what the
    /// next record's `received_at` is based on, and the "now" of age-based
    /// retention.
    pub fn engine_now(&self) -> Timestamp {
        self.inner.storage.now()
    }

    /// The sealed segments `policy` would delete now (by the engine's
    /// clock, [`Log::engine_now`]), oldest first.
    pub fn plan_retention(&self, policy: &RetentionPolicy) -> Result<Vec<DeletedSegment>> {
        self.plan_retention_at(policy, self.engine_now())
    }

    fn plan_retention_at(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<DeletedSegment>> {
        let snap = self.snapshot()?;
        let mut sealed = Vec::new();
        let mut total_bytes = 0;
        for &base in &snap.segments {
            let (name, file) = segment::open_for_reading(&*snap.storage, &snap.dir, base)?;
            let bytes = file
                .size()
                .map_err(|e| Error::io(snap.dir.join(&name), e))?;
            total_bytes += bytes;
            if base >= snap.active_base {
                continue; // the active segment is never deleted
            }
            let header = segment::read_header(&*file, &name)?;
            let trailer = segment::read_sealed_trailer(&*file, &name, header.segment_bytes)?;
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
                max_received_at: (header.version >= RECORD_V2).then_some(trailer.last_received_at),
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
    ///
    /// Age is judged by the engine's clock against each segment's latest
    /// time of receipt (version 1 segments: latest event time), never by
    /// the times clients gave their events.
    pub fn apply_retention(&self, policy: &RetentionPolicy) -> Result<RetentionOutcome> {
        self.apply_retention_filtered(policy, |due| Ok(due.iter().map(|s| s.base_seq).collect()))
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
        // One reading of the engine's clock plans the run and states its
        // cutoff; the record's own received_at is no earlier than it.
        let now = self.engine_now();
        let mut deleted = self.plan_retention_at(policy, now)?;
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
        // The record states a cutoff only when it explains every deletion
        // (each segment's age time is older) and is not after the record's
        // own time of receipt (no earlier than `now`): the verifier checks
        // both. A run that deleted for size says null.
        let cutoff =
            cutoff(policy, now).filter(|&c| c <= now && deleted.iter().all(|d| d.age_time() < c));
        let record = RetentionRecord {
            first_retained_seq,
            first_retained_prev_hash: last.last_hash,
            deleted: deleted.clone(),
            cutoff,
            policy: *policy,
        };
        // Dated by the engine's clock too: in a version 1 segment the
        // verifier holds the cutoff against this time.
        let mut event = Event::new(now, RETENTION_EVENT, SYSTEM_ACTOR);
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
