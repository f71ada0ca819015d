//! Reading: snapshots for queries and the record iterator.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event;
use crate::format::segment::{self, data_end_limit, Scanner, SegmentHeader, Step, HEADER_BYTES};
use crate::storage::{Storage, StorageFile};

use super::*;

/// A consistent view of the log for a query: what exists and is visible.
pub(crate) struct Snapshot {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segments: Vec<u64>,
    pub(crate) next_seq: u64,
    pub(crate) active_base: u64,
    pub(crate) active_end: u64,
    pub(crate) index_block_bytes: u32,
    pub(crate) read_only: bool,
    pub(crate) log: LogRef,
}

/// A handle on the log's shared state, for queries that outlive a borrow.
pub(crate) struct LogRef(Arc<Inner>);

impl LogRef {
    /// The active segment's index up to at least `limit`, as index file
    /// bytes: the one the indexer thread keeps from the frames the open
    /// read and those written since.
    pub(crate) fn active_index(
        &self,
        file: Arc<dyn StorageFile>,
        header: &SegmentHeader,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let block_bytes = self.0.options.index_block_bytes;
        let sent = self.0.write_slot.lock().feed.handed_over(&self.0.index);
        self.0
            .index
            .encode_to(sent, &file, header.base_seq, block_bytes, limit)
    }
}

impl Log {
    /// Iterates over records from `seq` (clamped to the first retained
    /// record) up to the newest visible one, including records appended while
    /// iterating. Under [`Durability::Always`] readers see only durable
    /// records; under the relaxed policies, every record once written.
    pub fn iter_from(&self, seq: u64) -> Records {
        Records {
            inner: self.inner.clone(),
            next: seq,
            visible_next: 0,
            cursor: None,
        }
    }

    /// Serializes retention runs and legal-hold changes.
    pub(crate) fn retention_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.retention_lock.lock()
    }

    /// Drops deleted segments from what readers see.
    pub(crate) fn forget_segments(&self, bases: &[u64]) {
        self.inner
            .view
            .write()
            .segments
            .retain(|b| !bases.contains(b));
    }

    /// What readers can see now (buffered frames are written first).
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.inner.write_visible()?;
        let view = self.inner.view.read();
        Ok(Snapshot {
            dir: self.inner.dir.clone(),
            storage: self.inner.storage.clone(),
            segments: view.segments.clone(),
            next_seq: view.next_seq,
            active_base: view.active_base,
            active_end: view.active_end,
            index_block_bytes: self.inner.options.index_block_bytes,
            read_only: self.inner.options.read_only,
            log: LogRef(self.inner.clone()),
        })
    }
}

/// Iterator over records, from [`Log::iter_from`].
pub struct Records {
    inner: Arc<Inner>,
    next: u64,
    /// Cached bound: records below it are visible.
    visible_next: u64,
    cursor: Option<Cursor>,
}

struct Cursor {
    base: u64,
    /// The segment's format version: its records' layout.
    version: u16,
    scanner: Scanner,
    name: String,
    /// Where frames end once the segment is sealed.
    sealed_limit: u64,
}

impl Records {
    fn corrupt(&self, offset: u64, reason: String) -> Error {
        let name = self
            .cursor
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        Error::Corrupted {
            file: name,
            offset,
            reason,
        }
    }

    fn step(&mut self) -> Result<Option<Record>> {
        loop {
            if self.next >= self.visible_next {
                if self.next >= self.inner.view.read().next_seq {
                    return Ok(None);
                }
                self.inner.write_visible()?;
                let view = self.inner.view.read();
                self.visible_next = view.next_seq;
                if self.next >= self.visible_next {
                    return Ok(None);
                }
                let first = view.segments.first().copied().unwrap_or(0);
                if self.next < first {
                    self.next = first;
                }
                if let Some(c) = &mut self.cursor {
                    let limit = if c.base == view.active_base {
                        view.active_end
                    } else {
                        c.sealed_limit
                    };
                    c.scanner.extend_limit(limit);
                }
            }
            if self.cursor.is_none() {
                self.cursor = Some(self.open_cursor()?);
            }
            let Some(cursor) = self.cursor.as_mut() else {
                return Ok(None);
            };
            match cursor.scanner.next_step()? {
                Step::Frame { offset, frame } => {
                    if frame.seq < self.next {
                        continue;
                    }
                    if frame.seq != self.next {
                        let reason = format!("expected seq {}, found {}", self.next, frame.seq);
                        return Err(self.corrupt(offset, reason));
                    }
                    let record = event::decode_record(cursor.version, frame.record)
                        .and_then(|v| Record::from_view(frame.seq, frame.hash, &v));
                    let record = record.map_err(|e| self.corrupt(offset, e.to_string()))?;
                    self.next += 1;
                    return Ok(Some(record));
                }
                Step::End { offset } => {
                    // The visible record `next` is not in this segment: it
                    // must start the next one.
                    let base = cursor.base;
                    let view = self.inner.view.read();
                    let next_segment = view.segments.iter().copied().find(|&b| b > base);
                    drop(view);
                    // If no segment starts at `next` (one was removed behind
                    // the log's back), reopening a cursor would pick this
                    // segment again and loop forever: that is an error.
                    match next_segment {
                        None => {
                            let reason = format!("seq {} is visible but not found", self.next);
                            return Err(self.corrupt(offset, reason));
                        }
                        Some(next_base) if next_base > self.next => {
                            let reason = format!(
                                "seq {} is missing: this segment ends before it and the next one starts at seq {next_base}",
                                self.next
                            );
                            return Err(self.corrupt(offset, reason));
                        }
                        Some(_) => {}
                    }
                    self.cursor = None;
                }
                Step::Bad { offset, error } => return Err(self.corrupt(offset, error.to_string())),
            }
        }
    }

    fn open_cursor(&self) -> Result<Cursor> {
        let view = self.inner.view.read();
        let idx = view.segments.partition_point(|&b| b <= self.next);
        let Some(&base) = idx.checked_sub(1).and_then(|i| view.segments.get(i)) else {
            return Err(Error::SeqOutOfRange {
                seq: self.next,
                first: view.segments.first().copied().unwrap_or(0),
                next: view.next_seq,
            });
        };
        let active = (view.active_base, view.active_end);
        drop(view);
        let name = segment::file_name(base);
        let path = self.inner.dir.join(&name);
        let file = self
            .inner
            .storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let header = segment::read_header(&*file, &name)?;
        let sealed_limit = data_end_limit(header.segment_bytes);
        let limit = if base == active.0 {
            active.1
        } else {
            sealed_limit
        };
        Ok(Cursor {
            base,
            version: header.version,
            scanner: Scanner::new(file, &name, HEADER_BYTES, limit),
            name,
            sealed_limit,
        })
    }
}

impl Iterator for Records {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error rather than repeat it forever.
                self.visible_next = 0;
                self.next = u64::MAX;
                Some(Err(e))
            }
        }
    }
}
