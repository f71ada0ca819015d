//! The tree head and signed checkpoints of the visible records, and the checkpoint schedule.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::segment;
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::Checkpoint;

use super::*;

/// The Merkle tree over the visible records: what a checkpoint signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Records appended since the log was created.
    pub size: u64,
    /// RFC 6962 root over their chain hashes.
    pub root: [u8; 32],
    /// The chain hash of the last record (none for an empty log).
    pub head: Option<ChainHash>,
}

impl Log {
    /// The tree head of the visible log. Hashes only the active segment's
    /// records: the tree over everything before it is the segment's start
    /// frontier.
    pub fn tree_head(&self) -> Result<TreeHead> {
        self.inner.tree_head()
    }

    /// An unsigned checkpoint of the visible log, with origin
    /// `<origin_prefix>/<log id>`. The whole log is verified first and its
    /// Merkle tree rebuilt from the records: problems, or a tree that
    /// differs from the log's own, fail with [`Error::Unverified`]. (It reads
    /// the whole log: a cost proportional to its size.)
    pub fn checkpoint(&self, origin_prefix: &str) -> Result<Checkpoint> {
        self.inner.checkpoint(origin_prefix)
    }

    /// Where a read-only open stopped reading because the newest segment
    /// is corrupt (a writer's open refuses instead); `None` when intact.
    pub fn damage(&self) -> Option<Damage> {
        self.inner.damage.lock().clone()
    }

    /// The last error of automatic maintenance (retention after a roll,
    /// scheduled checkpoints), which has no caller to return it to.
    pub fn last_maintenance_error(&self) -> Option<String> {
        self.inner.maintenance.lock().clone()
    }
}

impl Inner {
    fn tree_head(&self) -> Result<TreeHead> {
        self.write_visible()?;
        let (next_seq, head, base, end) = {
            let view = self.view.read();
            (view.next_seq, view.head, view.active_base, view.active_end)
        };
        let (name, file) = segment::open_for_reading(&*self.storage, &self.dir, base)?;
        let frontier = read_frontier(file, &name, end)?;
        if frontier.size() != next_seq {
            return Err(Error::Corrupted {
                file: name,
                offset: end,
                reason: format!(
                    "the tree covers {} records, the log has {next_seq}",
                    frontier.size()
                ),
            });
        }
        Ok(TreeHead {
            size: next_seq,
            root: frontier.root(),
            head: (next_seq > 0).then_some(head),
        })
    }

    /// A checkpoint signs only a root computed by hashing the records: the
    /// log is verified, its tree rebuilt from the oldest retained segment's
    /// link block, and both must agree with the log's own tree head.
    fn checkpoint(&self, origin_prefix: &str) -> Result<Checkpoint> {
        let tree = self.tree_head()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (report, verified) =
            crate::verify::verified_tree_head(&*self.storage, &self.dir, tree.size, threads)?;
        let refuse = |problems: u64, first: String| Error::Unverified {
            dir: self.dir.clone(),
            problems,
            first,
        };
        if !report.is_intact() {
            let first = report.problems.first().map_or_else(String::new, |p| {
                format!(
                    "{:?} in {} at byte {}: {}",
                    p.kind, p.segment, p.offset, p.detail
                )
            });
            return Err(refuse(
                report.problems.len() as u64 + report.problems_omitted,
                first,
            ));
        }
        match verified {
            Some(v) if v.root == tree.root && (tree.size == 0 || v.head == tree.head) => {}
            _ => {
                return Err(refuse(
                    1,
                    format!(
                    "the tree rebuilt from the records differs from the log's tree head at size {}",
                    tree.size
                ),
                ))
            }
        }
        Ok(Checkpoint {
            origin: format!("{origin_prefix}/{}", self.log_id),
            size: tree.size,
            root: tree.root,
            head: tree.head,
        })
    }

    /// Writes a signed checkpoint of the visible log to `schedule.dir`.
    fn write_checkpoint(&self, schedule: &CheckpointSchedule) -> Result<u64> {
        let checkpoint = self.checkpoint(&schedule.origin_prefix)?;
        let note = checkpoint
            .sign(&schedule.signer)
            .map_err(|e| Error::InvalidOptions(e.to_string()))?;
        let storage = &*self.storage;
        storage
            .create_dir_all(&schedule.dir)
            .map_err(|e| Error::io(&schedule.dir, e))?;
        let name = format!("{:020}.checkpoint", checkpoint.size);
        crate::storage::write_file_atomic(storage, &schedule.dir, &name, note.as_bytes())?;
        crate::storage::write_file_atomic(
            storage,
            &schedule.dir,
            "latest.checkpoint",
            note.as_bytes(),
        )?;
        Ok(checkpoint.size)
    }

    /// The scheduled checkpointer: polls the log's size and writes a
    /// checkpoint when enough records or time have passed since the last.
    pub(super) fn run_checkpointer(&self, schedule: &CheckpointSchedule) {
        const POLL: Duration = Duration::from_millis(50);
        let mut last_size = self.view.read().next_seq;
        let mut last_at = Instant::now();
        while !self.closing.load(Ordering::SeqCst) {
            {
                let mut sync = self.sync.lock();
                self.flusher_wake.wait_for(&mut sync, POLL);
            }
            let size = self.view.read().next_seq;
            let by_count = schedule
                .every_records
                .is_some_and(|n| size >= last_size + n.max(1));
            let by_time =
                schedule.every.is_some_and(|t| last_at.elapsed() >= t) && size > last_size;
            if by_count || by_time {
                match self.write_checkpoint(schedule) {
                    Ok(written) => last_size = written,
                    Err(e) => *self.maintenance.lock() = Some(format!("scheduled checkpoint: {e}")),
                }
                last_at = Instant::now();
            }
        }
    }
}
