//! Migration to the current format: `chainlog migrate DIR`.
//!
//! The chain is unchanged (its definition hashes each record's bytes
//! whatever their layout), so checkpoints signed before a migration still
//! verify after it. Migrating recovers the log as an open does (cutting a
//! torn tail), verifies all of it (a damaged log is refused, changing
//! nothing more), seals the newest older-format segment when it holds
//! records (an empty one is replaced, atomically, by a current-format
//! segment with the same base seq and link), starts a current-format
//! segment and appends the engine record `log.migrated`
//! `{"from_version":N}` as its first record.

use std::path::Path;
use std::sync::Arc;

use super::{Active, Inner, Log, Options, Receipt, ZeroAhead};
use crate::error::{Error, Result};
use crate::event::{Event, Timestamp};
use crate::format::segment::{self, SegmentHeader, FORMAT_VERSION, HEADER_BYTES};
use crate::retention::{MIGRATED_EVENT, SYSTEM_ACTOR};
use crate::storage::{FsStorage, Storage};

/// What [`Log::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The newest segment's format version before the migration.
    pub from_version: u16,
    /// The `log.migrated` record; `None` when the log already had the
    /// current format (nothing was changed).
    pub record: Option<Receipt>,
}

impl Log {
    /// Migrates the log in `dir` on the real disk to the current format;
    /// see [`Log::migrate_in`].
    pub fn migrate(dir: impl AsRef<Path>, options: Options) -> Result<Migration> {
        Log::migrate_in(Arc::new(FsStorage), dir, options)
    }

    /// Migrates the log in `dir` to the current format, with `options` for
    /// the segments it writes from now on: recovers it as an open does,
    /// verifies all of it, seals its newest older-format segment (or
    /// replaces an empty one by a current-format segment with the same base
    /// seq and link), and appends the engine record `log.migrated`
    /// `{"from_version":N}` as the first record of a current-format segment.
    /// The chain is unchanged, so checkpoints signed before still verify. A log that is not intact is refused with
    /// [`Error::Corrupted`] naming the first problem; one already in the
    /// current format is left as it is.
    pub fn migrate_in(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Migration> {
        let dir = dir.as_ref();
        if options.read_only {
            return Err(Error::ReadOnly);
        }
        let log = Log::open_for(storage.clone(), dir, options, true)?;
        // Under the writer lock: nothing changes the log while it is read.
        let report = crate::verify::verify_dir(&*storage, dir, &mut |_| {})?;
        if let Some(first) = report.problems.first() {
            return Err(Error::Corrupted {
                file: first.segment.clone(),
                offset: first.offset,
                reason: format!(
                    "the log is not intact ({} problems, the first: {}); nothing was migrated (run `chainlog verify` for the report)",
                    report.problems.len() as u64 + report.problems_omitted,
                    first.detail
                ),
            });
        }
        let from_version = log.inner.writer.lock().active.header.version;
        if from_version == FORMAT_VERSION {
            log.close()?;
            return Ok(Migration {
                from_version,
                record: None,
            });
        }
        log.inner.start_current_segment()?;
        let mut event = Event::new(Timestamp::now(), MIGRATED_EVENT, SYSTEM_ACTOR);
        event
            .context
            .insert("from_version".into(), from_version.into());
        let record = log.append_engine(&event)?;
        log.close()?;
        Ok(Migration {
            from_version,
            record: Some(record),
        })
    }
}

impl Inner {
    /// Makes the newest segment one of the current format: rolls over one
    /// holding records (sealing it), or replaces an empty one.
    fn start_current_segment(&self) -> Result<()> {
        let mut w = self.writer.lock();
        self.check_poison()?;
        if w.active.count > 0 {
            return self.roll(&mut w);
        }
        // An empty segment: the same base seq and link, the current version;
        // the create's rename replaces the file atomically.
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            created_at: Timestamp::now(),
            ..w.active.header
        };
        let mut slot = self.write_slot.lock();
        let start_frontier = slot.tree.frontier().clone();
        let file = segment::create(&*self.storage, &self.dir, &header, &start_frontier)?;
        slot.writeback_at = HEADER_BYTES;
        slot.zero_ahead = ZeroAhead::new(HEADER_BYTES);
        drop(slot);
        w.active = Active::new(file, header);
        self.publish(&w);
        Ok(())
    }
}
