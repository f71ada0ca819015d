//! One segment checked on its own: its header against its file name and
//! size, its trailer area (the link block and the zeros after it), every
//! frame (CRC, seq, recomputed chain hash, the record's rules), and the
//! seal, classified with the debris after the frames by the rule recovery
//! uses ([`damage`]). What it finds goes to the [`Linker`](super::linker)
//! as a [`SegmentResult`].

use std::path::Path;
use std::sync::Arc;

use super::{
    derived, engine, DerivedChecks, Problem, ProblemKind, TornSeal, TornTail, MAX_REPORTED_PROBLEMS,
};
use crate::error::{Error, Result};
use crate::event::{RecordSummary, Timestamp};
use crate::format::damage::{self, Corruption, DataEnd, SealState};
use crate::format::frame::{Frame, FrameError};
use crate::format::segment::{
    self, data_end_limit, Scanner, SegmentHeader, SegmentTrailer, Step, HEADER_BYTES,
    LINK_BLOCK_AT, TRAILER_BYTES,
};
use crate::hash::chain::ChainHash;
use crate::hash::merkle::Frontier;
use crate::index::{IndexBuilder, IndexedFields};
use crate::storage::{read_full_at, Storage, StorageFile};

use super::split::{data_end_hint, find_split};

/// What verifying one segment on its own found.
pub(super) struct SegmentResult {
    pub(super) name: String,
    pub(super) bytes: u64,
    /// None when the header is unreadable: nothing in the segment can be placed.
    pub(super) header: Option<SegmentHeader>,
    pub(super) problems: Vec<Problem>,
    pub(super) records: u64,
    pub(super) last_seq: Option<u64>,
    pub(super) last_hash: Option<ChainHash>,
    pub(super) torn_tail: Option<TornTail>,
    pub(super) torn_seal: Option<TornSeal>,
    /// The link block's frontier (tree over the records before the segment).
    pub(super) start_frontier: Option<Frontier>,
    /// The start frontier extended by this segment's records (checkpoint mode).
    pub(super) end_frontier: Option<Frontier>,
    /// Root and head when the tree reached the checkpoint's size in here.
    pub(super) at_checkpoint: Option<([u8; 32], Option<ChainHash>)>,
    /// Records the log wrote about itself, in chain order.
    pub(super) events: Vec<engine::EngineRecord>,
    /// What checking the segment's derived files did.
    pub(super) derived: DerivedChecks,
    /// The first record's time of receipt, with its seq and offset (version 2).
    pub(super) first_received: Option<(Timestamp, u64, u64)>,
    /// The last record's time of receipt (version 2).
    pub(super) last_received: Option<Timestamp>,
    /// The index built from the frames as they are checked, when the
    /// segment is sealed and has an index file to compare it with
    /// (`derived.rs`); `None` once a frame cannot be indexed.
    pub(super) index: Option<IndexBuilder>,
}

/// The per-segment verifier.
pub(super) struct SegmentCheck {
    pub(super) r: SegmentResult,
    pub(super) expected_seq: u64,
    pub(super) head: ChainHash,
    pub(super) min_ts: Option<Timestamp>,
    pub(super) max_ts: Option<Timestamp>,
    pub(super) tree: Option<Frontier>,
    pub(super) tree_size: Option<u64>,
    /// Debris after the frames that is a torn tail if the segment may have
    /// one (decided once the seal is classified): (offset, end, frame error).
    pub(super) tail: Option<(u64, u64, Option<FrameError>)>,
    /// The trailer's bytes as found.
    pub(super) trailer_bytes: [u8; TRAILER_BYTES],
}

impl SegmentCheck {
    pub(super) fn new(name: &str, bytes: u64, base: u64, tree_size: Option<u64>) -> Self {
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
                torn_seal: None,
                start_frontier: None,
                end_frontier: None,
                at_checkpoint: None,
                events: Vec::new(),
                first_received: None,
                last_received: None,
                derived: DerivedChecks::default(),
                index: None,
            },
            expected_seq: base,
            head: ChainHash::default(),
            min_ts: None,
            max_ts: None,
            tree: None,
            tree_size,
            tail: None,
            trailer_bytes: [0; TRAILER_BYTES],
        }
    }

    /// Checks the segment file `name` (named for `base`); `last` when it is
    /// the newest. With `tree_size` the tree is built up to a checkpoint's
    /// size; with `end_frontier` only this segment's end frontier (for the
    /// linker to hold the next link block to); with `split` the frames are
    /// checked in two halves at once.
    #[expect(
        clippy::too_many_arguments,
        reason = "the segment, where it sits in the log, and how to check it"
    )]
    pub(super) fn run(
        storage: &dyn Storage,
        dir: &Path,
        file: Arc<dyn StorageFile>,
        name: &str,
        base: u64,
        last: bool,
        tree_size: Option<u64>,
        split: bool,
        end_frontier: bool,
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
        if let Ok(Some(t)) = &trailer {
            // Built during the frame scan, so comparing the index costs no
            // second read of the segment.
            if let Some(block_bytes) = derived::index_block_bytes(storage, dir, header.base_seq, t)?
            {
                check.r.index = Some(IndexBuilder::new(header.base_seq, block_bytes));
            }
        }
        if tree_size.is_some() || end_frontier {
            check.tree = check.r.start_frontier.clone();
            check.note_tree_size();
        }
        let limit = data_end_limit(header.segment_bytes);
        let split_at = if split {
            let sealed_end = trailer
                .as_ref()
                .ok()
                .and_then(|t| t.as_ref().map(|t| t.data_end));
            let data_end = data_end_hint(&file, name, limit, sealed_end)?;
            find_split(&file, name, limit, data_end)?
        } else {
            None
        };
        let end = match split_at {
            Some(at) => check.frames_in_halves(file, limit, at)?,
            None => check.frames(file, HEADER_BYTES, limit, None)?.0,
        };
        check.check_trailer(&header, trailer, end, last);
        check.r.end_frontier = check.tree.take();
        if tree_size.is_none() && !check.r.problems.is_empty() {
            // Damage here is already reported: the newest segment's link
            // block is not also held against frames known to be wrong.
            check.r.end_frontier = None;
        }
        Ok(check.r)
    }

    pub(super) fn problem(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        offset: u64,
        detail: String,
    ) {
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
        self.trailer_bytes = raw;
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

    /// Times of receipt never go back along the chain (the engine writes
    /// `max(now, previous)`).
    pub(super) fn note_received(&mut self, received: Timestamp, seq: u64, offset: u64) {
        match self.r.last_received {
            Some(prev) if received < prev => {
                let detail = format!(
                    "received_at {} is before the previous record's {}",
                    received.to_rfc3339(),
                    prev.to_rfc3339()
                );
                self.problem(ProblemKind::RecordMalformed, Some(seq), offset, detail);
            }
            _ => {}
        }
        if self.r.first_received.is_none() {
            self.r.first_received = Some((received, seq, offset));
        }
        self.r.last_received = Some(received);
    }

    /// Checks every frame from `start`; returns the offset where the data
    /// ends, or, with `stop_at`, where it stopped right after checking a
    /// frame at that offset (and whether it did).
    pub(super) fn frames(
        &mut self,
        file: Arc<dyn StorageFile>,
        start: u64,
        limit: u64,
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
            // The end marker or a bad frame: what follows is classified by
            // the rule recovery uses too. Whether debris may be a torn tail
            // depends on the seal, known only after the frames.
            let expected = self.expected_seq;
            let scanned = damage::scan_data_end(&mut scan, expected)?;
            let what = bad
                .as_ref()
                .map_or_else(|| "zeroed frame".to_string(), |e| e.to_string());
            match damage::classify_data(&scanned, expected, true) {
                DataEnd::Clean { .. } => return Ok((offset, false)),
                DataEnd::TornTail { at, end } => {
                    self.tail = Some((at, end, bad));
                    return Ok((offset, false));
                }
                DataEnd::Corrupt {
                    cause: cause @ Corruption::ValidFramesResume { offset: next, .. },
                    ..
                } => {
                    let detail = format!("{what}; {cause}");
                    self.problem(ProblemKind::FrameCorrupt, Some(expected), offset, detail);
                    scan.seek(next);
                }
                DataEnd::Corrupt { cause, .. } => {
                    let detail = format!("{what}; {cause}");
                    self.problem(ProblemKind::FrameCorrupt, Some(expected), offset, detail);
                    return Ok((offset, false));
                }
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
                if let Some(received) = summary.received_at {
                    self.note_received(received, seq, offset);
                }
                if let Some(rec) = engine::classify(&summary, seq, offset, &self.r.name) {
                    self.r.events.push(rec);
                }
                if let Some(index) = &mut self.r.index {
                    let fields = IndexedFields::of_summary(&summary);
                    index.add_fields(offset, frame.padded_len() as u64, seq, stored, &fields);
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

    /// Classifies the seal and the debris after the frames together, by the
    /// rule recovery uses ([`damage`]).
    fn check_trailer(
        &mut self,
        header: &SegmentHeader,
        trailer: Result<Option<SegmentTrailer>>,
        end: u64,
        last: bool,
    ) {
        let at = data_end_limit(header.segment_bytes);
        let implied = match (self.r.last_seq, self.r.last_hash, self.min_ts, self.max_ts) {
            (Some(last_seq), Some(last_hash), Some(min_timestamp), Some(max_timestamp)) => Some(
                SegmentTrailer {
                    record_count: self.r.records,
                    last_seq,
                    last_hash,
                    min_timestamp,
                    max_timestamp,
                    data_end: end,
                    last_received_at: self.r.last_received.unwrap_or_default(),
                }
                .encode(),
            ),
            _ => None,
        };
        let seal = damage::classify_seal(&self.trailer_bytes, implied.as_ref(), last);
        if let Some((offset, tail_end, bad)) = self.tail.take() {
            if last && seal.allows_torn_tail() {
                self.r.torn_tail = Some(TornTail {
                    segment: self.r.name.clone(),
                    offset,
                    bytes: tail_end - offset,
                });
            } else {
                let cause = Corruption::NotTornable { end: tail_end };
                let (kind, detail) = match &bad {
                    Some(e) => (ProblemKind::FrameCorrupt, format!("{e}; {cause}")),
                    None => (
                        ProblemKind::UnexpectedBytes,
                        format!("non-zero bytes after the end of the data; {cause}"),
                    ),
                };
                self.problem(kind, Some(self.expected_seq), offset, detail);
            }
        }
        match seal {
            SealState::Sealed => return,
            SealState::TornSeal => {
                self.r.torn_seal = Some(TornSeal {
                    segment: self.r.name.clone(),
                    offset: at,
                });
                return;
            }
            SealState::Unsealed | SealState::Mismatch => {}
        }
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
        if wrong.is_empty() {
            wrong.push("its bytes are not the trailer the frames imply".to_string());
        }
        let detail = format!("trailer disagrees with the frames: {}", wrong.join(", "));
        self.problem(ProblemKind::TrailerMismatch, self.r.last_seq, at, detail);
    }
}
