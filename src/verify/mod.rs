//! The streaming verifier: recomputes the whole chain from the segment files.
//!
//! It trusts nothing it reads. Each segment is checked on its own, starting
//! from its header's link hash: the header (magic, version, checksum, base
//! seq against the file name), every frame (CRC, seq continuity, the
//! recomputed chain hash against the stored one, the record's encoding),
//! that nothing but zeros follows the data, the trailer of a sealed segment
//! and the link block. Then the segments are linked in order: same log id,
//! each base seq right after the previous segment's last record, each link
//! hash equal to the previous segment's last hash, and the newest segment's
//! link block equal to the one before it extended by that segment's records
//! (a checkpoint of the current tree starts from it). Because segments are
//! independent until that last step, they are verified in parallel
//! ([`VerifyOptions::threads`]) with the same report as one thread. Each
//! frame is checked against the hash stored in the frame before it, so a
//! segment's frames can be checked from any frame on: with a thread to
//! spare per segment, each segment is checked in two halves at once.
//!
//! A log that starts after seq 0 must be accounted for by a `log.retention`
//! record in the chain, every engine record must pass its schema, and no
//! retention record may fall inside a legal hold (`engine.rs`). Derived
//! files are checked too (`derived.rs`): each sealed segment's index is
//! rebuilt, from the same frame scan, and compared with its `.idx`, and with
//! a checkpoint the stored tiles with the computed tree. Against a signed
//! [`Checkpoint`], the verifier also rebuilds the Merkle tree and checks the
//! log's size, root and chain head at the checkpoint's size: a truncated,
//! forked or rewritten log fails.
//!
//! Each problem is reported with its kind, seq, segment file and byte
//! offset, and verification goes on after it, so one damaged record is one
//! problem, not a cascade. Memory is bounded: frames stream through a fixed
//! buffer, segments are verified a few at a time, and at most
//! [`MAX_REPORTED_PROBLEMS`] problems are kept (the rest are counted).
//!
//! The parts: `segment_check.rs` checks one segment, `split.rs` checks one
//! in two halves at once, `linker.rs` links the results in order, and this
//! file holds the report's types and runs the segments on the threads.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::segment;
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::Checkpoint;
use crate::hash::merkle;
use crate::storage::Storage;

mod derived;
mod engine;
mod linker;
mod pool;
mod segment_check;
mod split;

use linker::Linker;
use segment_check::{SegmentCheck, SegmentResult};

pub use derived::DerivedChecks;

/// Problems kept in a report; more are only counted.
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

/// What kind of damage or tampering was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A segment header fails its magic, version or checksum.
    HeaderCorrupt,
    /// A segment belongs to a different log (its log id differs).
    WrongLog,
    /// A segment's file name does not match its header's base seq.
    MisnamedSegment,
    /// Records are missing: between segments (a segment was deleted or
    /// renamed), or before the first one with no retention record
    /// accounting for them.
    MissingRecords,
    /// A segment's link hash is not the previous segment's last hash.
    LinkMismatch,
    /// A frame fails its CRC or length checks (or was zeroed).
    FrameCorrupt,
    /// A frame's seq is not the next one: a record was deleted, duplicated,
    /// reordered or inserted.
    SeqMismatch,
    /// A record's recomputed chain hash differs from the stored one: the
    /// record (or its stored hash) was modified.
    HashMismatch,
    /// The record bytes have a valid CRC but do not decode.
    RecordMalformed,
    /// Non-zero bytes where only zeros may be (after the data, in padding
    /// or the trailer area).
    UnexpectedBytes,
    /// A segment other than the newest has no trailer.
    NotSealed,
    /// A trailer fails its checks or disagrees with the frames.
    TrailerMismatch,
    /// A segment file is not the size its header says.
    WrongSize,
    /// A link block (the Merkle frontier at a segment's start) is damaged or
    /// does not match the records before the segment.
    TreeMismatch,
    /// A retention record falls while a legal hold was in force.
    RetentionDuringHold,
    /// The log does not match the signed checkpoint: it is shorter
    /// (truncated), or has a different root or chain head (forked or
    /// rewritten), or is another log.
    CheckpointMismatch,
    /// A sealed segment's index file passes its CRCs (so a query trusts
    /// it) but differs from the index rebuilt from the segment's frames:
    /// queries would return wrong rows. `segment` names the `.idx` file.
    IndexMismatch,
    /// A stored tile or leaf-pack hash differs from the hash computed from
    /// the records (checked when the tree is built, with a checkpoint).
    /// `segment` names the tile file.
    TileMismatch,
    /// An engine record (`log.*`) breaks its schema or the hold state
    /// machine (see `docs/FORMAT.md`, "Records the log writes itself").
    EngineRecordInvalid,
}

/// One problem found by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The seq concerned, when known.
    pub seq: Option<u64>,
    /// The segment file.
    pub segment: String,
    /// Byte offset in that file.
    pub offset: u64,
    /// A sentence for people.
    pub detail: String,
}

/// An incomplete frame at the end of the newest segment: what a crash leaves,
/// cut on the next open. Not tampering, so not a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The segment file.
    pub segment: String,
    /// Where the valid data ends.
    pub offset: u64,
    /// Bytes of the torn frame.
    pub bytes: u64,
}

/// A seal (trailer) of the newest segment that a crash interrupted: every
/// byte is zero or what the frames imply, or a whole trailer reached the disk
/// ahead of frames it counts. Cut on the next open. Not tampering, so not a
/// problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornSeal {
    /// The segment file.
    pub segment: String,
    /// Where the trailer starts.
    pub offset: u64,
}

/// How the log compared with a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointResult {
    /// The checkpoint's size.
    pub size: u64,
    /// Whether the log, at that size, has the checkpoint's root and head.
    pub matched: bool,
}

/// The outcome of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The log's id (from the first readable segment header).
    pub log_id: Option<String>,
    /// Segment files checked.
    pub segments: u64,
    /// Records whose frames were read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// First seq in the log.
    pub first_seq: Option<u64>,
    /// Last seq in the log.
    pub last_seq: Option<u64>,
    /// The last record's stored hash.
    pub head: Option<ChainHash>,
    /// A torn tail in the newest segment, if any.
    pub torn_tail: Option<TornTail>,
    /// A torn seal of the newest segment, if any.
    pub torn_seal: Option<TornSeal>,
    /// The checkpoint comparison, when one was given.
    pub checkpoint: Option<CheckpointResult>,
    /// Problems found, in file order.
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`].
    pub problems_omitted: u64,
    /// What was done with the derived files (indexes, tiles).
    pub derived: DerivedChecks,
}

impl Report {
    /// True when no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }

    fn push(&mut self, problem: Problem) {
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// How to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Segments verified at once. Default: the number of cores.
    pub threads: usize,
    /// Also check the log against this checkpoint (whose signature the
    /// caller has checked, e.g. with [`Checkpoint::open`]). Default none.
    pub checkpoint: Option<Checkpoint>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            checkpoint: None,
        }
    }
}

/// Verifies the log in `dir` on one thread; see [`verify_dir_with`].
pub fn verify_dir(
    storage: &dyn Storage,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Report> {
    let options = VerifyOptions {
        threads: 1,
        checkpoint: None,
    };
    verify_dir_with(storage, dir, &options, progress)
}

/// Verifies the log in `dir` on `storage`. `progress` is called with the
/// bytes read so far. An `Err` means the verifier could not read (I/O); every
/// kind of damage is a [`Problem`] in the report instead.
pub fn verify_dir_with(
    storage: &dyn Storage,
    dir: &Path,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Report> {
    let tree_size = options.checkpoint.as_ref().map(|c| c.size);
    Ok(check_segments(storage, dir, options, tree_size, progress)?.finish())
}

/// A tree head rebuilt by hashing the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuiltHead {
    /// RFC 6962 root over the first `size` chain hashes.
    pub root: [u8; 32],
    /// The chain hash of record `size - 1` (none at size 0).
    pub head: Option<ChainHash>,
}

/// The Merkle tree head of the log in `dir` at `size` records, computed by
/// hashing the records from the oldest retained segment's link block on, in
/// a full verification. `Ok(None)` for the head when the tree never reached
/// `size` (it is beyond the log, or before its first retained record).
/// A caller must not use the head unless the report is intact.
pub fn verified_tree_head(
    storage: &dyn Storage,
    dir: &Path,
    size: u64,
    threads: usize,
) -> Result<(Report, Option<RebuiltHead>)> {
    let options = VerifyOptions {
        threads,
        checkpoint: None,
    };
    let linker = check_segments(storage, dir, &options, Some(size), &mut |_| {})?;
    let at = if size == 0 {
        Some((merkle::empty_root(), None))
    } else {
        linker.at_checkpoint
    };
    let at = at.map(|(root, head)| RebuiltHead { root, head });
    Ok((linker.finish(), at))
}

fn check_segments(
    storage: &dyn Storage,
    dir: &Path,
    options: &VerifyOptions,
    tree_size: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<Linker> {
    let names = storage.list(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(dir.to_path_buf()),
        _ => Error::io(dir, e),
    })?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        return Err(Error::NotFound(dir.to_path_buf()));
    }
    let threads = options.threads.max(1);
    let mut linker = Linker::new(options.checkpoint.clone());
    let count = bases.len();
    let last = count - 1;
    let verify_one = |index: usize| -> Result<SegmentResult> {
        let base = bases[index];
        let (name, file) = segment::open_for_reading(&*storage, dir, base)?;
        // With a thread to spare for it (a small log, or the last
        // segments), a segment's frames are checked in two halves at once.
        // A tree is built in order, so a segment that builds one is not
        // split: with a checkpoint, every segment; without, the segment
        // before the newest, which extends its link block's frontier by its
        // records for the linker to compare with the newest's link block (a
        // checkpoint of the current tree starts from that block).
        let end_frontier = index + 1 == last;
        let split = tree_size.is_none() && !end_frontier && (count - index) * 2 <= threads;
        let mut r = SegmentCheck::run(
            storage,
            dir,
            file.clone(),
            &name,
            base,
            index == last,
            tree_size,
            split,
            end_frontier,
        )?;
        derived::check_segment(storage, dir, &file, &mut r, tree_size.is_some())?;
        Ok(r)
    };
    // At most two segments per thread are checked ahead of the linker, so
    // memory stays bounded by the threads, not the log.
    pool::in_order(count, threads, threads * 2, verify_one, |result| {
        linker.link(result);
        progress(linker.report.bytes);
        Ok(())
    })?;
    Ok(linker)
}

/// Logs for the verifier's unit tests.
#[cfg(test)]
pub(crate) mod test_logs {
    use std::path::Path;
    use std::sync::Arc;

    use crate::format::segment;
    use crate::storage::sim::SimDisk;
    use crate::{Log, Options};

    /// Where [`small_segments`] puts its log.
    pub(crate) const DIR: &str = "/log";

    /// A new log at [`DIR`] on `disk` with the smallest segments, so that a
    /// test fills several.
    pub(crate) fn small_segments(disk: &SimDisk) -> Log {
        let options = Options {
            segment_bytes: segment::MIN_SEGMENT_BYTES,
            ..Options::default()
        };
        Log::create_in(Arc::new(disk.clone()), Path::new(DIR), options).unwrap()
    }
}
