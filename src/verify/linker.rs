//! Links the per-segment results in log order: same log id, each segment
//! continuing the seq and the chain of the one before, the tree frontier
//! (when the tree is built), the engine records' hold state machine and the
//! log's accounted-for start; then the comparison with a checkpoint.

use super::segment_check::SegmentResult;
use super::{engine, CheckpointResult, DerivedChecks, Problem, ProblemKind, Report};
use crate::event::Timestamp;
use crate::format::segment::{data_end_limit, SegmentHeader, LINK_BLOCK_AT};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::checkpoint::Checkpoint;
use crate::hash::merkle::{self, Frontier};

/// Links per-segment results in log order.
pub(super) struct Linker {
    pub(super) report: Report,
    pub(super) checkpoint: Option<Checkpoint>,
    pub(super) log_id: Option<LogId>,
    /// Seq and hash the next segment must continue from, once known.
    pub(super) expected: Option<(u64, ChainHash)>,
    /// The previous segment's end frontier (checkpoint mode).
    pub(super) tree: Option<Frontier>,
    /// The log's start (seq, link hash) while no retention record accounts for it.
    pub(super) unaccounted_start: Option<(u64, ChainHash, String)>,
    /// The legal hold as the engine records so far say.
    pub(super) hold: engine::HoldState,
    pub(super) at_checkpoint: Option<([u8; 32], Option<ChainHash>)>,
    pub(super) first: bool,
    /// The last time of receipt seen in an earlier segment.
    pub(super) last_received: Option<Timestamp>,
    /// The newest format version seen so far: versions never go back.
    pub(super) version: u16,
}

impl Linker {
    pub(super) fn new(checkpoint: Option<Checkpoint>) -> Self {
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
                torn_seal: None,
                checkpoint: None,
                problems: Vec::new(),
                problems_omitted: 0,
                derived: DerivedChecks::default(),
            },
            checkpoint,
            log_id: None,
            expected: None,
            tree: None,
            unaccounted_start: None,
            hold: engine::HoldState::at_start(0),
            at_checkpoint: None,
            first: true,
            last_received: None,
            version: 0,
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

    pub(super) fn link(&mut self, r: SegmentResult) {
        let problems_before = self.problem_count();
        self.report.segments += 1;
        self.report.bytes += r.bytes;
        if let (Some(prev), Some((first, seq, offset))) = (self.last_received, r.first_received) {
            if first < prev {
                let detail = format!(
                    "received_at {} is before the previous segment's last record's {}",
                    first.to_rfc3339(),
                    prev.to_rfc3339()
                );
                self.problem(
                    ProblemKind::RecordMalformed,
                    Some(seq),
                    &r.name,
                    offset,
                    detail,
                );
            }
        }
        if r.last_received.is_some() {
            self.last_received = r.last_received;
        }
        self.report.derived.add(&r.derived);
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
        for rec in &r.events {
            self.engine_record(rec, &r.name);
        }
        if r.records > 0 {
            self.report.records += r.records;
            self.report.last_seq = r.last_seq;
            self.report.head = r.last_hash;
        }
        if r.torn_tail.is_some() {
            self.report.torn_tail = r.torn_tail;
        }
        if r.torn_seal.is_some() {
            self.report.torn_seal = r.torn_seal;
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
        // Without a checkpoint the end frontier only serves the newest
        // segment's link block (FORMAT.md, verifying step 2.7), which is not
        // also held against a segment that has a problem of its own.
        let plain = self.checkpoint.is_none();
        self.tree = if plain && self.problem_count() > problems_before {
            None
        } else {
            r.end_frontier
        };
    }

    fn problem_count(&self) -> u64 {
        self.report.problems.len() as u64 + self.report.problems_omitted
    }

    /// An engine record, in chain order: its schema, the hold state machine,
    /// and whether it accounts for the log's start.
    fn engine_record(&mut self, rec: &engine::EngineRecord, segment: &str) {
        if let Some(why) = &rec.invalid {
            let kind = ProblemKind::EngineRecordInvalid;
            self.problem(kind, Some(rec.seq), segment, rec.offset, why.clone());
        }
        if let Some((kind, detail)) = self.hold.apply(rec) {
            self.problem(kind, Some(rec.seq), segment, rec.offset, detail);
        }
        if let engine::EngineKind::Retention(Some(ret)) = &rec.kind {
            if let Some((start, prev, _)) = &self.unaccounted_start {
                if ret.accounts_for(*start, prev) {
                    self.unaccounted_start = None;
                }
            }
        }
    }

    fn link_header(&mut self, h: &SegmentHeader, r: &SegmentResult, first: bool) {
        let problems_before = self.problem_count();
        if h.version < self.version {
            let detail = format!(
                "a version {} segment after a version {} one: versions never go back",
                h.version, self.version
            );
            self.problem(
                ProblemKind::HeaderCorrupt,
                Some(h.base_seq),
                &r.name,
                8,
                detail,
            );
        }
        self.version = self.version.max(h.version);
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
            self.hold = engine::HoldState::at_start(h.base_seq);
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
        // Without a checkpoint, a segment that does not follow the one before
        // it (a gap, another log, a broken link: reported above) is not also
        // a tree problem.
        let linked = self.checkpoint.is_some() || self.problem_count() == problems_before;
        if let (Some(prev_end), Some(start), true) = (&self.tree, &r.start_frontier, linked) {
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

    pub(super) fn finish(mut self) -> Report {
        if self.report.head.is_none() {
            // No record: the head is what the next record chains from (the
            // genesis hash for a new log).
            self.report.head = self.expected.map(|(_, hash)| hash);
        }
        if let Some((start, _, name)) = self.unaccounted_start.take() {
            let detail = format!(
                "the log starts at seq {start}, and no retention record in the chain accounts for the records before it"
            );
            self.problem(ProblemKind::MissingRecords, Some(0), &name, 0, detail);
        }
        if let Some(cp) = self.checkpoint.take() {
            // The tree is only as good as every link block it went through:
            // no match beside a tree, link or checkpoint problem.
            let tree_problem = self.report.problems_omitted > 0
                || self.report.problems.iter().any(|p| {
                    matches!(
                        p.kind,
                        ProblemKind::TreeMismatch
                            | ProblemKind::LinkMismatch
                            | ProblemKind::MissingRecords
                            | ProblemKind::CheckpointMismatch
                    )
                });
            let matched = self.check_checkpoint(&cp) && !tree_problem;
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
