//! The streaming verifier: recomputes the whole chain from the segment files.
//!
//! It trusts nothing it reads. For every segment it checks the header (magic,
//! version, checksum, log id, base seq against the file name and the previous
//! segment, link hash against the previous segment's last hash), every frame
//! (CRC, seq continuity, the recomputed chain hash against the stored one,
//! the record's encoding), that nothing but zeros follows the data, and the
//! trailer of every sealed segment. Each problem is reported with its kind,
//! seq, segment file and byte offset, and verification goes on after it, so
//! one damaged record is one problem, not a cascade.
//!
//! Memory is bounded: frames are streamed through a fixed buffer, and at most
//! [`MAX_REPORTED_PROBLEMS`] problems are kept (the rest are counted).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::chain::{ChainHash, LogId};
use crate::error::{Error, Result};
use crate::event::{RecordView, Timestamp};
use crate::segment::{
    self, data_end_limit, Scanner, SegmentHeader, Step, HEADER_BYTES, TRAILER_AREA_BYTES,
    TRAILER_BYTES,
};
use crate::storage::{read_exact_at, read_full_at, Storage, StorageFile};

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
    /// Records are missing between segments (a segment was deleted or renamed).
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
    /// The last record's hash (recomputed).
    pub head: Option<ChainHash>,
    /// A torn tail in the newest segment, if any.
    pub torn_tail: Option<TornTail>,
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
}

/// Verifies the log in `dir` on `storage`. `progress` is called with the
/// bytes read so far. An `Err` means the verifier could not read (I/O); every
/// kind of damage is a [`Problem`] in the report instead.
pub fn verify_dir(
    storage: &dyn Storage,
    dir: &Path,
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
    let mut v = Verifier {
        report: Report {
            log_id: None,
            segments: 0,
            records: 0,
            bytes: 0,
            first_seq: None,
            last_seq: None,
            head: None,
            torn_tail: None,
            problems: Vec::new(),
            problems_omitted: 0,
        },
        log_id: None,
        expected_seq: None,
        head: None,
    };
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let name = segment::file_name(base);
        let path = dir.join(&name);
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        v.segment(file, &name, base, i == 0, i == last)?;
        v.report.segments += 1;
        progress(v.report.bytes);
    }
    Ok(v.report)
}

struct Verifier {
    report: Report,
    log_id: Option<LogId>,
    /// The seq the next frame should have, once known.
    expected_seq: Option<u64>,
    /// The hash the next record chains from, once known.
    head: Option<ChainHash>,
}

/// Per-segment tallies, checked against the trailer.
struct Tally {
    count: u64,
    last_seq: Option<u64>,
    last_hash: Option<ChainHash>,
    min_ts: Option<Timestamp>,
    max_ts: Option<Timestamp>,
    /// Offset just past the last frame.
    end: u64,
}

impl Verifier {
    fn problem(
        &mut self,
        kind: ProblemKind,
        seq: Option<u64>,
        segment: &str,
        offset: u64,
        detail: String,
    ) {
        if self.report.problems.len() < MAX_REPORTED_PROBLEMS {
            self.report.problems.push(Problem {
                kind,
                seq,
                segment: segment.to_string(),
                offset,
                detail,
            });
        } else {
            self.report.problems_omitted += 1;
        }
    }

    fn segment(
        &mut self,
        file: Arc<dyn StorageFile>,
        name: &str,
        base: u64,
        first: bool,
        last: bool,
    ) -> Result<()> {
        let len = file.size().map_err(|e| Error::io(name, e))?;
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
                self.problem(ProblemKind::HeaderCorrupt, None, name, 0, e.to_string());
                // Nothing in this segment can be placed in the chain.
                self.report.bytes += len;
                self.expected_seq = None;
                self.head = None;
                return Ok(());
            }
        };
        self.check_header(&header, name, base, first);
        if len != header.segment_bytes {
            let detail = format!(
                "file is {len} bytes, its header says {}",
                header.segment_bytes
            );
            self.problem(
                ProblemKind::WrongSize,
                None,
                name,
                len.min(header.segment_bytes),
                detail,
            );
        }
        let limit = data_end_limit(header.segment_bytes).min(len);
        // Only the newest, unsealed segment can end in a torn write.
        let sealed = segment::read_trailer(&*file, name, header.segment_bytes)
            .map(|t| t.is_some())
            .unwrap_or(true);
        let tally = self.frames(file.clone(), name, limit, last && !sealed)?;
        self.trailer(&*file, name, &header, len, &tally, last)?;
        self.report.bytes += len;
        Ok(())
    }

    fn check_header(&mut self, header: &SegmentHeader, name: &str, base: u64, first: bool) {
        match self.log_id {
            None => {
                self.log_id = Some(header.log_id);
                self.report.log_id = Some(header.log_id.to_string());
            }
            Some(id) if id != header.log_id => {
                let detail = format!("segment belongs to log {}, not {id}", header.log_id);
                self.problem(
                    ProblemKind::WrongLog,
                    Some(header.base_seq),
                    name,
                    16,
                    detail,
                );
            }
            Some(_) => {}
        }
        if header.base_seq != base {
            let detail = format!(
                "header says base seq {}, the file name says {base}",
                header.base_seq
            );
            self.problem(
                ProblemKind::MisnamedSegment,
                Some(header.base_seq),
                name,
                40,
                detail,
            );
        }
        if first {
            self.report.first_seq = Some(header.base_seq);
            if header.base_seq == 0 {
                self.head = Some(ChainHash::genesis(&header.log_id));
            } else {
                let detail = format!(
                    "the log starts at seq {}: the segments before it are missing",
                    header.base_seq
                );
                self.problem(ProblemKind::MissingRecords, Some(0), name, 0, detail);
                self.head = Some(header.prev_hash);
            }
            self.expected_seq = Some(header.base_seq);
        }
        if let Some(expected) = self.expected_seq {
            if header.base_seq != expected {
                let detail = if header.base_seq > expected {
                    format!("records {expected}..{} are missing", header.base_seq - 1)
                } else {
                    format!(
                        "segment starts at seq {}, but seq {expected} was expected",
                        header.base_seq
                    )
                };
                self.problem(
                    ProblemKind::MissingRecords,
                    Some(expected),
                    name,
                    40,
                    detail,
                );
            }
        }
        if let Some(head) = self.head {
            if header.prev_hash != head {
                let detail = format!(
                    "segment links to {}, but the previous record's hash is {head}",
                    header.prev_hash
                );
                self.problem(
                    ProblemKind::LinkMismatch,
                    Some(header.base_seq),
                    name,
                    48,
                    detail,
                );
            }
        }
        self.expected_seq = Some(header.base_seq);
        self.head = Some(header.prev_hash);
    }

    fn frames(
        &mut self,
        file: Arc<dyn StorageFile>,
        name: &str,
        limit: u64,
        may_be_torn: bool,
    ) -> Result<Tally> {
        let mut tally = Tally {
            count: 0,
            last_seq: None,
            last_hash: None,
            min_ts: None,
            max_ts: None,
            end: HEADER_BYTES,
        };
        let mut scan = Scanner::new(file, name, HEADER_BYTES, limit);
        loop {
            let (offset, bad) = match scan.next_step()? {
                Step::Frame { offset, frame } => {
                    let (seq, stored, record) = (frame.seq, frame.hash, frame.record.to_vec());
                    self.frame(name, offset, seq, stored, &record, &mut tally);
                    continue;
                }
                Step::End { offset } => (offset, None),
                Step::Bad { offset, error } => (offset, Some(error)),
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
                        self.expected_seq,
                        name,
                        offset,
                        detail,
                    );
                    scan.seek(next_offset);
                }
                None if damage_end > offset => {
                    tally.end = offset;
                    if may_be_torn {
                        self.report.torn_tail = Some(TornTail {
                            segment: name.to_string(),
                            offset,
                            bytes: damage_end - offset,
                        });
                    } else {
                        let detail = match &bad {
                            Some(e) => format!("{e}; no valid frame follows"),
                            None => format!(
                                "non-zero bytes after the end of the data, up to byte {damage_end}"
                            ),
                        };
                        let kind = if bad.is_some() {
                            ProblemKind::FrameCorrupt
                        } else {
                            ProblemKind::UnexpectedBytes
                        };
                        self.problem(kind, self.expected_seq, name, offset, detail);
                    }
                    return Ok(tally);
                }
                None => {
                    tally.end = offset;
                    return Ok(tally);
                }
            }
        }
    }

    fn frame(
        &mut self,
        name: &str,
        offset: u64,
        seq: u64,
        stored: ChainHash,
        record: &[u8],
        tally: &mut Tally,
    ) {
        if let Some(expected) = self.expected_seq {
            if seq != expected {
                let detail = if seq < expected {
                    format!(
                        "seq {seq} after seq {}: a record is duplicated or out of order",
                        expected - 1
                    )
                } else {
                    format!("seq {seq} where {expected} was expected: records {expected}..{} are missing", seq - 1)
                };
                self.problem(ProblemKind::SeqMismatch, Some(seq), name, offset, detail);
            }
        }
        if let Some(prev) = self.head {
            let computed = prev.next(seq, record);
            if computed != stored {
                let detail = format!("stored hash {stored}, recomputed {computed}");
                self.problem(ProblemKind::HashMismatch, Some(seq), name, offset, detail);
            }
        }
        match RecordView::decode(record) {
            Ok(view) => {
                let ts = view.timestamp;
                tally.min_ts = Some(tally.min_ts.map_or(ts, |m| m.min(ts)));
                tally.max_ts = Some(tally.max_ts.map_or(ts, |m| m.max(ts)));
            }
            Err(e) => self.problem(
                ProblemKind::RecordMalformed,
                Some(seq),
                name,
                offset,
                e.to_string(),
            ),
        }
        // Continue from what is stored, so one bad record is one problem.
        self.head = Some(stored);
        self.expected_seq = Some(seq + 1);
        tally.count += 1;
        tally.last_seq = Some(seq);
        tally.last_hash = Some(stored);
        self.report.records += 1;
        self.report.last_seq = Some(seq);
        self.report.head = Some(stored);
    }

    fn trailer(
        &mut self,
        file: &dyn StorageFile,
        name: &str,
        header: &SegmentHeader,
        len: u64,
        tally: &Tally,
        last: bool,
    ) -> Result<()> {
        let at = data_end_limit(header.segment_bytes);
        if len < header.segment_bytes {
            return Ok(()); // already reported as WrongSize
        }
        let mut area = vec![0; TRAILER_AREA_BYTES as usize];
        read_exact_at(file, &mut area, at).map_err(|e| Error::io(name, e))?;
        if area[TRAILER_BYTES..].iter().any(|&b| b != 0) {
            let detail = "non-zero bytes in the reserved part of the trailer area".to_string();
            self.problem(
                ProblemKind::UnexpectedBytes,
                None,
                name,
                at + TRAILER_BYTES as u64,
                detail,
            );
        }
        let mut raw = [0; TRAILER_BYTES];
        raw.copy_from_slice(&area[..TRAILER_BYTES]);
        let trailer = match segment::SegmentTrailer::decode(&raw, name, at) {
            Ok(t) => t,
            Err(e) => {
                self.problem(
                    ProblemKind::TrailerMismatch,
                    tally.last_seq,
                    name,
                    at,
                    e.to_string(),
                );
                return Ok(());
            }
        };
        let Some(t) = trailer else {
            if !last {
                let detail = "segment is followed by another but has no trailer".to_string();
                self.problem(ProblemKind::NotSealed, tally.last_seq, name, at, detail);
            }
            return Ok(());
        };
        let mut wrong = Vec::new();
        if t.record_count != tally.count {
            wrong.push(format!(
                "count {} (frames: {})",
                t.record_count, tally.count
            ));
        }
        if Some(t.last_seq) != tally.last_seq {
            wrong.push(format!("last seq {}", t.last_seq));
        }
        if Some(t.last_hash) != tally.last_hash {
            wrong.push(format!("last hash {}", t.last_hash));
        }
        if Some(t.min_timestamp) != tally.min_ts || Some(t.max_timestamp) != tally.max_ts {
            wrong.push(format!(
                "time span {}..{}",
                t.min_timestamp, t.max_timestamp
            ));
        }
        if t.data_end != tally.end {
            wrong.push(format!("data end {}", t.data_end));
        }
        if !wrong.is_empty() {
            let detail = format!("trailer disagrees with the frames: {}", wrong.join(", "));
            self.problem(
                ProblemKind::TrailerMismatch,
                tally.last_seq,
                name,
                at,
                detail,
            );
        }
        Ok(())
    }
}
