//! The streaming verifier: recomputes the whole chain from the segment files.
//!
//! It trusts nothing it reads. Each segment is checked on its own, starting
//! from its header's link hash: the header (magic, version, checksum, base
//! seq against the file name), every frame (CRC, seq continuity, the
//! recomputed chain hash against the stored one, the record's encoding),
//! that nothing but zeros follows the data, the trailer of a sealed segment
//! and the link block. Then the segments are linked in order: same log id,
//! each base seq right after the previous segment's last record, each link
//! hash equal to the previous segment's last hash. Because segments are
//! independent until that last step, they are verified in parallel
//! ([`VerifyOptions::threads`]) with the same report as one thread. Each
//! frame is checked against the hash stored in the frame before it, so a
//! segment's frames can be checked from any frame on: with a thread to
//! spare per segment, each segment is checked in two halves at once.
//!
//! A log that starts after seq 0 must be accounted for by a `log.retention`
//! record in the chain, and no retention record may fall inside a legal
//! hold. Against a signed [`Checkpoint`], the verifier also rebuilds the
//! Merkle tree and checks the log's size, root and chain head at the
//! checkpoint's size: a truncated, forked or rewritten log fails.
//!
//! Each problem is reported with its kind, seq, segment file and byte
//! offset, and verification goes on after it, so one damaged record is one
//! problem, not a cascade. Memory is bounded: frames stream through a fixed
//! buffer, segments are verified a few at a time, and at most
//! [`MAX_REPORTED_PROBLEMS`] problems are kept (the rest are counted).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::{RecordSummary, Timestamp};
use crate::format::frame::{Frame, FRAME_ALIGN, MAX_FRAME_BYTES};
use crate::format::segment::{
    self, data_end_limit, Scanner, SegmentHeader, SegmentTrailer, Step, HEADER_BYTES,
    LINK_BLOCK_AT, TRAILER_BYTES,
};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::checkpoint::Checkpoint;
use crate::hash::merkle::{self, Frontier};
use crate::retention::{RetentionRecord, HOLD_RELEASED_EVENT, HOLD_SET_EVENT, RETENTION_EVENT};
use crate::storage::{read_full_at, Storage, StorageFile};

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
    /// The checkpoint comparison, when one was given.
    pub checkpoint: Option<CheckpointResult>,
    /// Problems found, in file order.
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_REPORTED_PROBLEMS`].
    pub problems_omitted: u64,
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
    let tree_size = options.checkpoint.as_ref().map(|c| c.size);
    let mut linker = Linker::new(options.checkpoint.clone());
    let last = bases.len() - 1;
    // Segments are verified a batch at a time so memory stays bounded by the
    // batch, not the log; results are linked in order.
    for (batch_no, batch) in bases.chunks(threads * 2).enumerate() {
        let first_index = batch_no * threads * 2;
        let jobs: Vec<(usize, u64)> = batch
            .iter()
            .enumerate()
            .map(|(i, &b)| (first_index + i, b))
            .collect();
        let results = run_batch(storage, dir, &jobs, last, tree_size, threads)?;
        for result in results {
            linker.link(result);
            progress(linker.report.bytes);
        }
    }
    Ok(linker.finish())
}

fn run_batch(
    storage: &dyn Storage,
    dir: &Path,
    jobs: &[(usize, u64)],
    last: usize,
    tree_size: Option<u64>,
    threads: usize,
) -> Result<Vec<SegmentResult>> {
    // With a thread to spare for each segment (a small log, or the last
    // batch), each segment's frames are checked in two halves at once. The
    // tree of a checkpoint check is built in order, so it is not split.
    let split = tree_size.is_none() && jobs.len() * 2 <= threads;
    let verify_one = |&(index, base): &(usize, u64)| -> Result<SegmentResult> {
        let name = segment::file_name(base);
        let path = dir.join(&name);
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        SegmentCheck::run(file, &name, base, index == last, tree_size, split)
    };
    if threads == 1 || jobs.len() == 1 {
        return jobs.iter().map(verify_one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<parking_lot::Mutex<Option<Result<SegmentResult>>>> =
        jobs.iter().map(|_| parking_lot::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                *slots[i].lock() = Some(verify_one(job));
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|| Err(Error::InvalidOptions("a verifier thread stopped".into())))
        })
        .collect()
}

/// What verifying one segment on its own found.
struct SegmentResult {
    name: String,
    bytes: u64,
    /// None when the header is unreadable: nothing in the segment can be placed.
    header: Option<SegmentHeader>,
    problems: Vec<Problem>,
    records: u64,
    last_seq: Option<u64>,
    last_hash: Option<ChainHash>,
    torn_tail: Option<TornTail>,
    /// The link block's frontier (tree over the records before the segment).
    start_frontier: Option<Frontier>,
    /// The start frontier extended by this segment's records (checkpoint mode).
    end_frontier: Option<Frontier>,
    /// Root and head when the tree reached the checkpoint's size in here.
    at_checkpoint: Option<([u8; 32], Option<ChainHash>)>,
    /// Records the log wrote about itself, in chain order.
    events: Vec<(u64, LogEvent)>,
}

/// A record the verifier interprets.
enum LogEvent {
    /// A `log.retention` record (or why its context does not parse).
    Retention(std::result::Result<RetentionRecord, String>),
    /// A legal hold set (`true`) or released.
    Hold(bool),
}

/// The per-segment verifier.
struct SegmentCheck {
    r: SegmentResult,
    expected_seq: u64,
    head: ChainHash,
    min_ts: Option<Timestamp>,
    max_ts: Option<Timestamp>,
    tree: Option<Frontier>,
    tree_size: Option<u64>,
}

impl SegmentCheck {
    fn new(name: &str, bytes: u64, base: u64, tree_size: Option<u64>) -> Self {
        SegmentCheck {
            r: SegmentResult {
                name: name.to_string(),
                bytes,
                header: None,
                problems: Vec::new(),
                records: 0,
                last_seq: None,
                last_hash: None,
                torn_tail: None,
                start_frontier: None,
                end_frontier: None,
                at_checkpoint: None,
                events: Vec::new(),
            },
            expected_seq: base,
            head: ChainHash::default(),
            min_ts: None,
            max_ts: None,
            tree: None,
            tree_size,
        }
    }

    fn run(
        file: Arc<dyn StorageFile>,
        name: &str,
        base: u64,
        last: bool,
        tree_size: Option<u64>,
        split: bool,
    ) -> Result<SegmentResult> {
        let len = file.size().map_err(|e| Error::io(name, e))?;
        let mut check = SegmentCheck::new(name, len, base, tree_size);
        let mut raw = [0; HEADER_BYTES as usize];
        let read = read_full_at(&*file, &mut raw, 0).map_err(|e| Error::io(name, e))?;
        let header = if read < raw.len() {
            Err(Error::Corrupted {
                file: name.to_string(),
                offset: 0,
                reason: format!("file is only {len} bytes"),
            })
        } else {
            SegmentHeader::decode(&raw, name)
        };
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                check.problem(ProblemKind::HeaderCorrupt, None, 0, e.to_string());
                return Ok(check.r);
            }
        };
        check.r.header = Some(header);
        check.expected_seq = header.base_seq;
        check.head = header.prev_hash;
        if header.base_seq != base {
            let detail = format!(
                "header says base seq {}, the file name says {base}",
                header.base_seq
            );
            check.problem(
                ProblemKind::MisnamedSegment,
                Some(header.base_seq),
                40,
                detail,
            );
        }
        if len != header.segment_bytes {
            let detail = format!(
                "file is {len} bytes, its header says {}",
                header.segment_bytes
            );
            check.problem(
                ProblemKind::WrongSize,
                None,
                len.min(header.segment_bytes),
                detail,
            );
            return Ok(check.r);
        }
        let trailer = check.trailer_area(&*file, &header)?;
        if tree_size.is_some() {
            check.tree = check.r.start_frontier.clone();
            check.note_tree_size();
        }
        let sealed = !matches!(trailer, Ok(None));
        let limit = data_end_limit(header.segment_bytes);
        let may_be_torn = last && !sealed;
        let split_at = if split {
            find_split(&file, name, limit)?
        } else {
            None
        };
        let end = match split_at {
            Some(at) => check.frames_in_halves(file, limit, may_be_torn, at)?,
            None => {
                check
                    .frames(file, HEADER_BYTES, limit, may_be_torn, None)?
                    .0
            }
        };
        check.check_trailer(&header, trailer, end, last);
        check.r.end_frontier = check.tree.take();
        Ok(check.r)
    }

    fn problem(&mut self, kind: ProblemKind, seq: Option<u64>, offset: u64, detail: String) {
        if self.r.problems.len() < MAX_REPORTED_PROBLEMS {
            self.r.problems.push(Problem {
                kind,
                seq,
                segment: self.r.name.clone(),
                offset,
                detail,
            });
        }
    }

    /// Reads the trailer area; checks the link block and the zeros after it.
    /// Returns the trailer's decoding (`Ok(None)`: unsealed).
    fn trailer_area(
        &mut self,
        file: &dyn StorageFile,
        header: &SegmentHeader,
    ) -> Result<Result<Option<SegmentTrailer>>> {
        let at = data_end_limit(header.segment_bytes);
        let mut area = vec![0; segment::TRAILER_AREA_BYTES as usize];
        let n = read_full_at(file, &mut area, at).map_err(|e| Error::io(&self.r.name, e))?;
        area.truncate(n);
        let mut raw = [0; TRAILER_BYTES];
        raw.copy_from_slice(&area[..TRAILER_BYTES]);
        let trailer = SegmentTrailer::decode(&raw, &self.r.name, at);
        let link_at = at + LINK_BLOCK_AT as u64;
        match segment::decode_link_block(&area[LINK_BLOCK_AT..], &self.r.name, link_at) {
            Ok((frontier, len)) => {
                if frontier.size() != header.base_seq {
                    let detail = format!(
                        "link block covers {} records, the segment starts at seq {}",
                        frontier.size(),
                        header.base_seq
                    );
                    self.problem(
                        ProblemKind::TreeMismatch,
                        Some(header.base_seq),
                        link_at,
                        detail,
                    );
                } else {
                    self.r.start_frontier = Some(frontier);
                }
                let rest = LINK_BLOCK_AT + len;
                if let Some(i) = area[rest..].iter().position(|&b| b != 0) {
                    let detail =
                        "non-zero bytes in the unused part of the trailer area".to_string();
                    self.problem(
                        ProblemKind::UnexpectedBytes,
                        None,
                        at + (rest + i) as u64,
                        detail,
                    );
                }
            }
            Err(e) => self.problem(
                ProblemKind::TreeMismatch,
                Some(header.base_seq),
                link_at,
                e.to_string(),
            ),
        }
        Ok(trailer)
    }

    fn note_tree_size(&mut self) {
        if let (Some(tree), Some(size)) = (&self.tree, self.tree_size) {
            if tree.size() == size && self.r.at_checkpoint.is_none() {
                let head = if size == self.r.header.map_or(0, |h| h.base_seq) {
                    None // the head before this segment is checked by the linker
                } else {
                    self.r.last_hash
                };
                self.r.at_checkpoint = Some((tree.root(), head));
            }
        }
    }

    /// Checks the frames in two halves at once: this thread from the start
    /// up to and including the frame at `split`, another from the frame
    /// after it, starting from that frame's stored hash and seq, which is
    /// where checking the frame at `split` leaves this one. Returns the
    /// offset where the data ends. If this half never meets a frame at
    /// `split` (it lies inside a frame, or damage skips it), this half
    /// checks the rest itself and the other's work is dropped.
    fn frames_in_halves(
        &mut self,
        file: Arc<dyn StorageFile>,
        limit: u64,
        may_be_torn: bool,
        split: SplitPoint,
    ) -> Result<u64> {
        let (first, second) = std::thread::scope(|scope| {
            let file_b = file.clone();
            let name = self.r.name.clone();
            let header = self.r.header;
            let second = scope.spawn(move || {
                let mut rest = SegmentCheck::new(&name, 0, split.seq, None);
                // The records' layout is the segment header's version.
                rest.r.header = header;
                rest.head = split.hash;
                rest.expected_seq = split.seq.saturating_add(1);
                let end = rest.frames(file_b, split.end, limit, may_be_torn, None)?;
                Ok((rest, end.0))
            });
            let first = self.frames(file, HEADER_BYTES, limit, may_be_torn, Some(split.at));
            (first, second.join())
        });
        let (end, met) = first?;
        // A panic in the other half is a bug: it goes on as one here.
        let second: Result<(SegmentCheck, u64)> =
            second.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if !met {
            return Ok(end);
        }
        let (rest, end) = second?;
        self.absorb(rest);
        Ok(end)
    }

    /// Appends what checking the frames after this half found.
    fn absorb(&mut self, rest: SegmentCheck) {
        for p in rest.r.problems {
            if self.r.problems.len() < MAX_REPORTED_PROBLEMS {
                self.r.problems.push(p);
            }
        }
        self.r.records += rest.r.records;
        if rest.r.last_seq.is_some() {
            self.r.last_seq = rest.r.last_seq;
            self.r.last_hash = rest.r.last_hash;
        }
        self.r.torn_tail = rest.r.torn_tail;
        self.r.events.extend(rest.r.events);
        self.min_ts = match (self.min_ts, rest.min_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ts = self.max_ts.max(rest.max_ts);
        self.expected_seq = rest.expected_seq;
        self.head = rest.head;
    }

    /// Checks every frame from `start`; returns the offset where the data
    /// ends, or, with `stop_at`, where it stopped right after checking a
    /// frame at that offset (and whether it did).
    fn frames(
        &mut self,
        file: Arc<dyn StorageFile>,
        start: u64,
        limit: u64,
        may_be_torn: bool,
        stop_at: Option<u64>,
    ) -> Result<(u64, bool)> {
        let name = self.r.name.clone();
        let mut scan = Scanner::new(file, &name, start, limit);
        loop {
            // At the stop, the frame there alone, not the one after it too.
            let step = if stop_at == Some(scan.position()) {
                (scan.next_step()?, None)
            } else {
                scan.next_pair()?
            };
            let (offset, bad) = match step {
                (Step::Frame { offset, frame }, Some((next_offset, next))) => {
                    // The second record chains from the first's stored hash,
                    // as `frame` continues from it, so both hash at once.
                    let (computed, next_computed) = ChainHash::next_pair(
                        (&self.head, frame.seq, frame.record),
                        (&frame.hash, next.seq, next.record),
                    );
                    self.frame(offset, &frame, computed);
                    self.frame(next_offset, &next, next_computed);
                    if stop_at == Some(next_offset) {
                        return Ok((scan.position(), true));
                    }
                    continue;
                }
                (Step::Frame { offset, frame }, None) => {
                    let computed = self.head.next(frame.seq, frame.record);
                    self.frame(offset, &frame, computed);
                    if stop_at == Some(offset) {
                        return Ok((scan.position(), true));
                    }
                    continue;
                }
                (Step::End { offset }, _) => (offset, None),
                (Step::Bad { offset, error }, _) => (offset, Some(error)),
            };
            // The end marker or a bad frame: anything non-zero after it?
            let (found, damage_end) = scan.find_valid_after(0)?;
            match found {
                Some((next_offset, next_seq)) => {
                    let detail = match &bad {
                        Some(e) => format!("{e}; valid frames resume at byte {next_offset} (seq {next_seq})"),
                        None => format!("zeroed frame; valid frames resume at byte {next_offset} (seq {next_seq})"),
                    };
                    self.problem(
                        ProblemKind::FrameCorrupt,
                        Some(self.expected_seq),
                        offset,
                        detail,
                    );
                    scan.seek(next_offset);
                }
                None if damage_end > offset => {
                    if may_be_torn {
                        self.r.torn_tail = Some(TornTail {
                            segment: name.clone(),
                            offset,
                            bytes: damage_end - offset,
                        });
                    } else {
                        let (kind, detail) = match &bad {
                            Some(e) => (ProblemKind::FrameCorrupt, format!("{e}; no valid frame follows")),
                            None => (
                                ProblemKind::UnexpectedBytes,
                                format!("non-zero bytes after the end of the data, up to byte {damage_end}"),
                            ),
                        };
                        self.problem(kind, Some(self.expected_seq), offset, detail);
                    }
                    return Ok((offset, false));
                }
                None => return Ok((offset, false)),
            }
        }
    }

    /// Checks a valid frame whose chain hash, recomputed from the previous
    /// frame's stored hash, is `computed`.
    fn frame(&mut self, offset: u64, frame: &Frame<'_>, computed: ChainHash) {
        let (seq, stored, record) = (frame.seq, frame.hash, frame.record);
        let expected = self.expected_seq;
        if seq != expected {
            let detail = if seq < expected {
                format!("seq {seq} where {expected} was expected: a record is duplicated or out of order")
            } else {
                format!(
                    "seq {seq} where {expected} was expected: records {expected}..{} are missing",
                    seq - 1
                )
            };
            self.problem(ProblemKind::SeqMismatch, Some(seq), offset, detail);
        }
        if computed != stored {
            let detail = format!("stored hash {stored}, recomputed {computed}");
            self.problem(ProblemKind::HashMismatch, Some(seq), offset, detail);
        }
        // Frames are read only after the header was (it gives their layout).
        let version = self.r.header.map_or(0, |h| h.version);
        match RecordSummary::decode(version, record) {
            Ok(summary) => {
                let ts = summary.timestamp;
                self.min_ts = Some(self.min_ts.map_or(ts, |m| m.min(ts)));
                self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
                match summary.event_type {
                    t if t == RETENTION_EVENT.as_bytes() => {
                        // The same parse as from the text: the context is valid UTF-8.
                        let parsed =
                            serde_json::from_slice::<RetentionRecord>(summary.context_json)
                                .map_err(|e| e.to_string());
                        self.r.events.push((seq, LogEvent::Retention(parsed)));
                    }
                    t if t == HOLD_SET_EVENT.as_bytes() => {
                        self.r.events.push((seq, LogEvent::Hold(true)));
                    }
                    t if t == HOLD_RELEASED_EVENT.as_bytes() => {
                        self.r.events.push((seq, LogEvent::Hold(false)));
                    }
                    _ => {}
                }
            }
            Err(e) => self.problem(
                ProblemKind::RecordMalformed,
                Some(seq),
                offset,
                e.to_string(),
            ),
        }
        // Continue from what is stored, so one bad record is one problem.
        self.head = stored;
        // A forged seq of u64::MAX must be reported, not overflow.
        self.expected_seq = seq.saturating_add(1);
        self.r.records += 1;
        self.r.last_seq = Some(seq);
        self.r.last_hash = Some(stored);
        if let Some(tree) = &mut self.tree {
            tree.push(&stored.0);
            self.note_tree_size();
        }
    }

    fn check_trailer(
        &mut self,
        header: &SegmentHeader,
        trailer: Result<Option<SegmentTrailer>>,
        end: u64,
        last: bool,
    ) {
        let at = data_end_limit(header.segment_bytes);
        let t = match trailer {
            Ok(Some(t)) => t,
            Ok(None) => {
                if !last {
                    let detail = "segment is followed by another but has no trailer".to_string();
                    self.problem(ProblemKind::NotSealed, self.r.last_seq, at, detail);
                }
                return;
            }
            Err(e) => {
                self.problem(
                    ProblemKind::TrailerMismatch,
                    self.r.last_seq,
                    at,
                    e.to_string(),
                );
                return;
            }
        };
        let mut wrong = Vec::new();
        if t.record_count != self.r.records {
            wrong.push(format!(
                "count {} (frames: {})",
                t.record_count, self.r.records
            ));
        }
        if Some(t.last_seq) != self.r.last_seq {
            wrong.push(format!("last seq {}", t.last_seq));
        }
        if Some(t.last_hash) != self.r.last_hash {
            wrong.push(format!("last hash {}", t.last_hash));
        }
        if Some(t.min_timestamp) != self.min_ts || Some(t.max_timestamp) != self.max_ts {
            wrong.push(format!(
                "time span {}..{}",
                t.min_timestamp, t.max_timestamp
            ));
        }
        if t.data_end != end {
            wrong.push(format!("data end {}", t.data_end));
        }
        if !wrong.is_empty() {
            let detail = format!("trailer disagrees with the frames: {}", wrong.join(", "));
            self.problem(ProblemKind::TrailerMismatch, self.r.last_seq, at, detail);
        }
    }
}

/// Where a segment's frames are split between two threads: a valid frame
/// near the middle of the data area.
#[derive(Debug, Clone, Copy)]
struct SplitPoint {
    /// The frame's offset.
    at: u64,
    /// Just past it, where the second half starts.
    end: u64,
    seq: u64,
    hash: ChainHash,
}

/// The first valid frame at or after the middle of the data area, looking
/// no further than one largest frame. Any valid-looking frame will do (it
/// may even lie inside a record): the first half only stops there if it
/// meets a frame at that offset itself.
fn find_split(file: &Arc<dyn StorageFile>, name: &str, limit: u64) -> Result<Option<SplitPoint>> {
    let middle = (HEADER_BYTES + limit) / 2 / FRAME_ALIGN as u64 * FRAME_ALIGN as u64;
    let search_end = limit.min(middle + MAX_FRAME_BYTES as u64);
    let mut scan = Scanner::new(file.clone(), name, middle, limit);
    let mut at = middle;
    while at < search_end {
        scan.seek(at);
        if let Step::Frame { frame, .. } = scan.next_step()? {
            return Ok(Some(SplitPoint {
                at,
                end: at + frame.padded_len() as u64,
                seq: frame.seq,
                hash: frame.hash,
            }));
        }
        at += FRAME_ALIGN as u64;
    }
    Ok(None)
}

/// Links per-segment results in log order.
struct Linker {
    report: Report,
    checkpoint: Option<Checkpoint>,
    log_id: Option<LogId>,
    /// Seq and hash the next segment must continue from, once known.
    expected: Option<(u64, ChainHash)>,
    /// The previous segment's end frontier (checkpoint mode).
    tree: Option<Frontier>,
    /// The log's start (seq, link hash) while no retention record accounts for it.
    unaccounted_start: Option<(u64, ChainHash, String)>,
    held: bool,
    at_checkpoint: Option<([u8; 32], Option<ChainHash>)>,
    first: bool,
}

impl Linker {
    fn new(checkpoint: Option<Checkpoint>) -> Self {
        Linker {
            report: Report {
                log_id: None,
                segments: 0,
                records: 0,
                bytes: 0,
                first_seq: None,
                last_seq: None,
                head: None,
                torn_tail: None,
                checkpoint: None,
                problems: Vec::new(),
                problems_omitted: 0,
            },
            checkpoint,
            log_id: None,
            expected: None,
            tree: None,
            unaccounted_start: None,
            held: false,
            at_checkpoint: None,
            first: true,
        }
    }

    fn problem(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        segment: &str,
        offset: u64,
        detail: String,
    ) {
        self.report.push(Problem {
            kind,
            seq,
            segment: segment.to_string(),
            offset,
            detail,
        });
    }

    fn link(&mut self, r: SegmentResult) {
        self.report.segments += 1;
        self.report.bytes += r.bytes;
        let first = std::mem::replace(&mut self.first, false);
        if let Some(h) = &r.header {
            self.link_header(h, &r, first);
        } else {
            // Nothing in the segment can be placed: the next one links to nothing.
            self.expected = None;
            self.tree = None;
        }
        for p in r.problems {
            self.report.push(p);
        }
        for (seq, event) in &r.events {
            let seq = *seq;
            match event {
                LogEvent::Retention(Ok(rec)) => {
                    if self.held {
                        let detail =
                            "a retention record while a legal hold was in force".to_string();
                        self.problem(
                            ProblemKind::RetentionDuringHold,
                            Some(seq),
                            &r.name,
                            0,
                            detail,
                        );
                    }
                    if let Some((start, prev, _)) = &self.unaccounted_start {
                        if rec.accounts_for(*start, prev) {
                            self.unaccounted_start = None;
                        }
                    }
                }
                LogEvent::Retention(Err(e)) => {
                    let detail = format!("log.retention record with a malformed context: {e}");
                    self.problem(ProblemKind::RecordMalformed, Some(seq), &r.name, 0, detail);
                }
                LogEvent::Hold(set) => self.held = *set,
            }
        }
        if r.records > 0 {
            self.report.records += r.records;
            self.report.last_seq = r.last_seq;
            self.report.head = r.last_hash;
        }
        if r.torn_tail.is_some() {
            self.report.torn_tail = r.torn_tail;
        }
        if let Some(h) = &r.header {
            match (r.last_seq, r.last_hash) {
                (Some(seq), Some(hash)) => self.expected = Some((seq.saturating_add(1), hash)),
                _ => self.expected = Some((h.base_seq, h.prev_hash)),
            }
        }
        if self.at_checkpoint.is_none() {
            if let Some((root, head)) = r.at_checkpoint {
                // A checkpoint at a segment boundary: its head is the previous segment's last hash.
                let head =
                    head.or_else(|| r.header.filter(|h| h.base_seq > 0).map(|h| h.prev_hash));
                self.at_checkpoint = Some((root, head));
            }
        }
        self.tree = r.end_frontier;
    }

    fn link_header(&mut self, h: &SegmentHeader, r: &SegmentResult, first: bool) {
        match self.log_id {
            None => {
                self.log_id = Some(h.log_id);
                self.report.log_id = Some(h.log_id.to_string());
            }
            Some(id) if id != h.log_id => {
                let detail = format!("segment belongs to log {}, not {id}", h.log_id);
                self.problem(ProblemKind::WrongLog, Some(h.base_seq), &r.name, 24, detail);
            }
            Some(_) => {}
        }
        if first {
            self.report.first_seq = Some(h.base_seq);
            if h.base_seq == 0 {
                let genesis = ChainHash::genesis(&h.log_id);
                if h.prev_hash != genesis {
                    let detail = format!(
                        "the first segment links to {}, not the genesis hash {genesis}",
                        h.prev_hash
                    );
                    self.problem(ProblemKind::LinkMismatch, Some(0), &r.name, 48, detail);
                }
            } else {
                self.unaccounted_start = Some((h.base_seq, h.prev_hash, r.name.clone()));
            }
        }
        if let Some((seq, hash)) = self.expected {
            if h.base_seq != seq {
                let detail = if h.base_seq > seq {
                    format!("records {seq}..{} are missing", h.base_seq - 1)
                } else {
                    format!(
                        "segment starts at seq {}, but seq {seq} was expected",
                        h.base_seq
                    )
                };
                self.problem(ProblemKind::MissingRecords, Some(seq), &r.name, 40, detail);
            }
            if h.prev_hash != hash {
                let detail = format!(
                    "segment links to {}, but the previous record's hash is {hash}",
                    h.prev_hash
                );
                self.problem(
                    ProblemKind::LinkMismatch,
                    Some(h.base_seq),
                    &r.name,
                    48,
                    detail,
                );
            }
        }
        if let (Some(prev_end), Some(start)) = (&self.tree, &r.start_frontier) {
            if prev_end != start {
                let detail =
                    "the link block's tree frontier does not match the records before the segment"
                        .to_string();
                let at = data_end_limit(h.segment_bytes) + LINK_BLOCK_AT as u64;
                self.problem(
                    ProblemKind::TreeMismatch,
                    Some(h.base_seq),
                    &r.name,
                    at,
                    detail,
                );
            }
        }
    }

    fn finish(mut self) -> Report {
        if let Some((start, _, name)) = self.unaccounted_start.take() {
            let detail = format!(
                "the log starts at seq {start}, and no retention record in the chain accounts for the records before it"
            );
            self.problem(ProblemKind::MissingRecords, Some(0), &name, 0, detail);
        }
        if let Some(cp) = self.checkpoint.take() {
            let matched = self.check_checkpoint(&cp);
            self.report.checkpoint = Some(CheckpointResult {
                size: cp.size,
                matched,
            });
        }
        self.report
    }

    fn check_checkpoint(&mut self, cp: &Checkpoint) -> bool {
        let mismatch = |this: &mut Self, seq: Option<u64>, detail: String| {
            this.problem(ProblemKind::CheckpointMismatch, seq, "", 0, detail);
            false
        };
        if let Some(id) = self.log_id {
            if !cp.origin.ends_with(&format!("/{id}")) {
                return mismatch(
                    self,
                    None,
                    format!("the checkpoint is for {:?}, not log {id}", cp.origin),
                );
            }
        }
        let size = self
            .report
            .last_seq
            .map_or(self.report.first_seq.unwrap_or(0), |s| s.saturating_add(1));
        if size < cp.size {
            let detail = format!(
                "truncated: the log has {size} records, the checkpoint was signed at {}",
                cp.size
            );
            return mismatch(self, Some(size), detail);
        }
        if cp.size == 0 {
            return cp.root == merkle::empty_root()
                || mismatch(
                    self,
                    None,
                    "the checkpoint's empty-tree root is wrong".into(),
                );
        }
        let Some((root, head)) = self.at_checkpoint else {
            let detail = format!(
                "the records before seq {} were deleted by retention, so this checkpoint (size {}) cannot be checked; use a newer one",
                self.report.first_seq.unwrap_or(0),
                cp.size
            );
            return mismatch(self, Some(cp.size - 1), detail);
        };
        if root != cp.root || (cp.head.is_some() && head != cp.head) {
            let detail = format!(
                "forked or rewritten: at size {} the log's tree root or chain head differs from the signed checkpoint's",
                cp.size
            );
            return mismatch(self, Some(cp.size - 1), detail);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::frame;
    use crate::storage::sim::SimDisk;
    use crate::storage::Storage;
    use crate::{Event, Log, Options};

    type Damage<'a> = dyn Fn(&mut Vec<u8>) + 'a;

    /// What a check of a segment's frames found, for comparing two checks.
    type Found = (
        Vec<Problem>,
        u64,
        Option<u64>,
        Option<ChainHash>,
        Option<TornTail>,
        u64,
    );

    fn found(check: SegmentCheck, end: u64) -> Found {
        let r = check.r;
        (
            r.problems,
            r.records,
            r.last_seq,
            r.last_hash,
            r.torn_tail,
            end,
        )
    }

    /// A one-segment log (unsealed, so that damage at its end is a torn tail).
    fn segment() -> (SegmentHeader, Vec<u8>) {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        let options = Options {
            segment_bytes: segment::MIN_SEGMENT_BYTES,
            ..Options::default()
        };
        let log = Log::create_in(Arc::new(disk.clone()), dir, options).unwrap();
        for i in 0..150 {
            let mut e = Event::new(Timestamp::from_unix_nanos(i), "test.event", "alice");
            e.context
                .insert("pad".into(), "x".repeat(i as usize * 7 % 400).into());
            log.append(&e).unwrap();
        }
        log.close().unwrap();
        let path = dir.join(segment::file_name(0));
        let image = disk.read_file(&path).unwrap();
        let file = disk.open(&path, false).unwrap();
        let header = segment::read_header(&*file, "s").unwrap();
        (header, image)
    }

    fn frame_offsets(image: &[u8], limit: u64) -> Vec<u64> {
        let mut at = HEADER_BYTES;
        let mut out = Vec::new();
        while let Ok(Some(f)) = frame::decode(&image[at as usize..limit as usize]) {
            out.push(at);
            at += f.padded_len() as u64;
        }
        out
    }

    fn check_serial(file: &Arc<dyn StorageFile>, h: &SegmentHeader, limit: u64) -> Found {
        let mut check = SegmentCheck::new("s", 0, h.base_seq, None);
        check.head = h.prev_hash;
        let (end, _) = check
            .frames(file.clone(), HEADER_BYTES, limit, true, None)
            .unwrap();
        found(check, end)
    }

    fn check_halves(
        file: &Arc<dyn StorageFile>,
        h: &SegmentHeader,
        limit: u64,
        split: SplitPoint,
    ) -> Found {
        let mut check = SegmentCheck::new("s", 0, h.base_seq, None);
        check.head = h.prev_hash;
        let end = check
            .frames_in_halves(file.clone(), limit, true, split)
            .unwrap();
        found(check, end)
    }

    #[test]
    fn halves_agree_with_one_pass_wherever_the_split_falls() {
        let (h, clean) = segment();
        let limit = data_end_limit(h.segment_bytes);
        let offsets = frame_offsets(&clean, limit);
        assert!(offsets.len() > 100);
        let mid = offsets.len() / 2;
        // Damage: none; a bad CRC before, at and after the split; a zeroed
        // frame; a torn tail.
        let damages: Vec<Box<Damage<'_>>> = vec![
            Box::new(|_| {}),
            Box::new(|img| img[offsets[mid - 3] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid + 1] as usize + 60] ^= 1),
            Box::new(|img| img[offsets[mid - 1] as usize..offsets[mid] as usize].fill(0)),
            Box::new(|img| {
                let last = offsets[offsets.len() - 1] as usize;
                img[last + 20..last + 30].fill(0xee);
            }),
        ];
        for (d, damage) in damages.iter().enumerate() {
            let mut image = clean.clone();
            damage(&mut image);
            let disk = SimDisk::new();
            let file = disk.create_new(Path::new("/s")).unwrap();
            file.write_all_at(&image, 0).unwrap();
            let serial = check_serial(&file, &h, limit);
            if d > 0 {
                assert!(
                    !serial.0.is_empty() || serial.4.is_some(),
                    "damage {d} unseen"
                );
            }
            // Splits at frames (met) and inside them (never met: the first
            // half checks everything), with the seq and hash a split search
            // would have read there.
            for at in [
                offsets[mid - 1],
                offsets[mid],
                offsets[mid] + 8,
                offsets[mid + 2] + 48,
            ] {
                let split = match frame::decode(&image[at as usize..limit as usize]) {
                    Ok(Some(f)) => SplitPoint {
                        at,
                        end: at + f.padded_len() as u64,
                        seq: f.seq,
                        hash: f.hash,
                    },
                    _ => SplitPoint {
                        at,
                        end: at + 8,
                        seq: 7,
                        hash: ChainHash([9; 32]),
                    },
                };
                assert_eq!(
                    check_halves(&file, &h, limit, split),
                    serial,
                    "damage {d}, split at {at}"
                );
            }
        }
    }
}
