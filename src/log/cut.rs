//! The operator's way out of corruption in the newest segment: a recorded
//! cut (`chainlog recover --cut-at`).
//!
//! Recovery never cuts corruption on its own (a bad frame followed by valid
//! ones may be an attack, or the only copy of records). An operator who has
//! looked at the damage can cut the newest segment at a frame boundary: the
//! cut bytes are kept in `quarantine/<segment>-<offset>.bin`, and the engine
//! record `log.recovery_cut` is written where the cut starts, so the chain
//! itself says what was cut, how much, and which records it dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::event::record::{self, Origin};
use crate::event::{EncodeRecord, EngineEvent, Event, RecordSummary, Timestamp};
use crate::format::damage::{self, DataEnd};
use crate::format::frame::{self, FRAME_ALIGN};
use crate::format::segment::{
    self, data_end_limit, Scanner, SegmentTrailer, Step, HEADER_BYTES, TRAILER_BYTES,
};
use crate::hash::chain::ChainHash;
use crate::retention::SYSTEM_ACTOR;
use crate::storage::{read_full_at, Storage};

/// The event type of the record a cut leaves.
pub const RECOVERY_CUT_EVENT: &str = "log.recovery_cut";
/// The folder (in the log directory) the cut bytes are kept in.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A valid frame in the region a cut removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedRecord {
    /// Where the frame starts.
    pub offset: u64,
    /// Its seq.
    pub seq: u64,
    /// Its stored chain hash.
    pub hash: ChainHash,
    /// Its event type (`None` when the record bytes do not decode).
    pub event: Option<String>,
    /// Its actor (`None` when the record bytes do not decode).
    pub actor: Option<String>,
}

/// What a cut at an offset would do; [`plan_cut`] makes one, [`apply_cut`]
/// carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CutPlan {
    /// The newest segment's file name.
    pub segment: String,
    /// Where the cut starts (a frame boundary).
    pub cut_at: u64,
    /// Just past the last non-zero byte of the data area: the cut removes
    /// `cut_at .. cut_end`.
    pub cut_end: u64,
    /// Whether the segment's trailer is non-zero (it is zeroed too: it
    /// describes frames the cut removes).
    pub trailer: bool,
    /// Valid frames in the cut region, in file order.
    pub dropped: Vec<DroppedRecord>,
    /// The seq the `log.recovery_cut` record gets.
    pub record_seq: u64,
    /// How the segment's data ends before the cut (where verify and
    /// recovery stop).
    #[serde(skip)]
    pub damage: DataEnd,
    /// The chain hash the cut record links from.
    #[serde(skip)]
    prev_hash: ChainHash,
}

impl CutPlan {
    /// Bytes the cut removes from the data area.
    pub fn cut_bytes(&self) -> u64 {
        self.cut_end - self.cut_at
    }
}

/// What [`apply_cut`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CutOutcome {
    /// The quarantine file holding the cut bytes.
    pub quarantine: PathBuf,
    /// SHA-256 of those bytes, hex.
    pub quarantine_sha256: String,
    /// The `log.recovery_cut` record's seq.
    pub seq: u64,
    /// Its chain hash.
    pub hash: ChainHash,
}

/// Plans a cut of the newest segment of the log in `dir` at `offset`,
/// which must be the start of a frame in the segment's valid prefix, or the
/// position where the valid prefix ends. Reads only.
pub fn plan_cut(storage: &dyn Storage, dir: &Path, offset: u64) -> Result<CutPlan> {
    let bases = crate::log::list_segments(storage, dir)?;
    let Some(&base) = bases.last() else {
        return Err(Error::NotFound(dir.to_path_buf()));
    };
    let (name, file) = segment::open_for_reading(storage, dir, base)?;
    let header = segment::read_header(&*file, &name)?;
    let limit = data_end_limit(header.segment_bytes);
    let mut scan = Scanner::new(file.clone(), &name, HEADER_BYTES, limit);
    // The valid prefix: frames in seq order from the base.
    let mut boundaries = Vec::new();
    let mut expected = header.base_seq;
    let mut prev = header.prev_hash;
    let mut prev_at_offset = None;
    loop {
        match scan.next_step()? {
            Step::Frame { offset: at, frame } if frame.seq == expected => {
                if at == offset {
                    prev_at_offset = Some((expected, prev));
                }
                boundaries.push(at);
                expected += 1;
                prev = frame.hash;
            }
            Step::Frame { offset: at, .. } => {
                // A seq out of order ends the prefix a cut can keep.
                scan.seek(at);
                break;
            }
            Step::End { .. } | Step::Bad { .. } => break,
        }
    }
    let end = scan.position();
    if offset == end {
        prev_at_offset = Some((expected, prev));
    }
    let Some((record_seq, prev_hash)) = prev_at_offset else {
        return Err(Error::InvalidOptions(format!(
            "{offset} is not a cut point in {name}: a cut starts at a frame of the valid prefix ({} frames, from byte {HEADER_BYTES}) or where it ends (byte {end})",
            boundaries.len()
        )));
    };
    let scanned = damage::scan_data_end(&mut scan, expected)?;
    let data_end = damage::classify_data(&scanned, expected, true);
    let cut_end = scanned.nonzero_end.max(end);
    let mut trailer_bytes = [0; TRAILER_BYTES];
    read_full_at(&*file, &mut trailer_bytes, limit).map_err(|e| Error::io(dir.join(&name), e))?;
    let trailer = trailer_bytes.iter().any(|&b| b != 0);
    if cut_end <= offset && !trailer {
        return Err(Error::InvalidOptions(format!(
            "nothing to cut in {name} from byte {offset}: only zeros follow"
        )));
    }
    let dropped = frames_in(&file, &name, header.version, offset, cut_end)?;
    Ok(CutPlan {
        segment: name,
        cut_at: offset,
        cut_end: cut_end.max(offset),
        trailer,
        dropped,
        record_seq,
        damage: data_end,
        prev_hash,
    })
}

/// Every valid frame at an 8-aligned offset in `from .. to`.
fn frames_in(
    file: &Arc<dyn crate::storage::StorageFile>,
    name: &str,
    version: u16,
    from: u64,
    to: u64,
) -> Result<Vec<DroppedRecord>> {
    let mut scan = Scanner::new(file.clone(), name, from, to);
    let mut found = Vec::new();
    let mut at = from;
    while at < to {
        scan.seek(at);
        if let Step::Frame { frame, .. } = scan.next_step()? {
            let view = record::decode_record(version, frame.record).ok();
            found.push(DroppedRecord {
                offset: at,
                seq: frame.seq,
                hash: frame.hash,
                event: view.map(|v| v.event_type.to_string()),
                actor: view.map(|v| v.actor.to_string()),
            });
            at += frame.padded_len() as u64;
        } else {
            at += FRAME_ALIGN as u64;
        }
    }
    Ok(found)
}

/// Carries out `plan` (from [`plan_cut`], re-checked here under the
/// writer's lock): keeps the cut bytes in the quarantine folder (file and
/// folder synced), then writes the `log.recovery_cut` record at the cut
/// followed by zeros over the rest of the old bytes (and the trailer), and
/// syncs. When the record does not fit after the cut, the kept frames are
/// sealed and the record is the first of a new segment.
pub fn apply_cut(storage: &dyn Storage, dir: &Path, plan: &CutPlan) -> Result<CutOutcome> {
    let _lock = storage.lock_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        _ => Error::io(dir, e),
    })?;
    // The log may have changed since the plan was shown.
    let fresh = plan_cut(storage, dir, plan.cut_at)?;
    if fresh != *plan {
        return Err(Error::InvalidOptions(
            "the segment changed since the cut was planned; plan it again".into(),
        ));
    }
    let path = dir.join(&plan.segment);
    let file = storage.open(&path, true).map_err(|e| Error::io(&path, e))?;
    let mut cut = vec![0; plan.cut_bytes() as usize];
    read_full_at(&*file, &mut cut, plan.cut_at).map_err(|e| Error::io(&path, e))?;
    let sha = hex(&Sha256::digest(&cut));

    // 1. Keep the bytes, durably, before anything is overwritten.
    let qdir = dir.join(QUARANTINE_DIR);
    let qdir_is_new = !storage
        .list(dir)
        .map_err(|e| Error::io(dir, e))?
        .iter()
        .any(|n| n == QUARANTINE_DIR);
    storage
        .create_dir_all(&qdir)
        .map_err(|e| Error::io(&qdir, e))?;
    if qdir_is_new {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let existing = storage.list(&qdir).map_err(|e| Error::io(&qdir, e))?;
    let stem = format!("{}-{}", plan.segment, plan.cut_at);
    // A second cut at the same place (after a crash mid-cut) keeps the first copy.
    let qname = (0..)
        .map(|k| match k {
            0 => format!("{stem}.bin"),
            k => format!("{stem}.{k}.bin"),
        })
        .find(|n| !existing.contains(n))
        .unwrap_or_else(|| format!("{stem}.bin"));
    crate::storage::write_file_atomic(storage, &qdir, &qname, &cut)?;

    // 2. The record that says so, where the cut starts.
    let dropped: Vec<serde_json::Value> = plan
        .dropped
        .iter()
        .map(|d| serde_json::json!({"seq": d.seq, "hash": d.hash.to_string()}))
        .collect();
    let context = serde_json::json!({
        "segment": plan.segment,
        "cut_at": plan.cut_at,
        "cut_bytes": plan.cut_bytes(),
        "quarantine": qname,
        "quarantine_sha256": sha,
        "dropped": dropped,
    });
    let mut event = Event::new(Timestamp::now(), RECOVERY_CUT_EVENT, SYSTEM_ACTOR);
    event.context = match context {
        serde_json::Value::Object(map) => map,
        _ => return Err(Error::InvalidOptions("cut record context".into())),
    };
    let header = segment::read_header(&*file, &plan.segment)?;
    let mut buf = Vec::new();
    let start = frame::begin(&mut buf);
    let too_many = |e| {
        Error::InvalidOptions(format!(
            "the cut drops too many records to list in one record ({} frames): {e}",
            plan.dropped.len()
        ))
    };
    if header.version >= 2 {
        // An engine record, which no public append path can write; its time
        // of receipt never goes back from the records it follows.
        let received_at = storage.now().max(last_received_at(
            &file,
            &plan.segment,
            &header,
            plan.cut_at,
        )?);
        record::encode_provenance(received_at, Origin::Engine, SYSTEM_ACTOR, &mut buf)
            .map_err(too_many)?;
    }
    EngineEvent(&event)
        .encode_record(&mut buf)
        .map_err(too_many)?;
    frame::finish(&mut buf, start);
    let hash = frame::link(&mut buf, plan.record_seq, &plan.prev_hash);
    let limit = data_end_limit(header.segment_bytes);
    let io = |e| Error::io(&path, e);
    let fits = plan.cut_at + buf.len() as u64 <= limit;
    // The record and the zeros after it in one write (or zeros alone when
    // the record goes to a new segment), then the trailer.
    let mut cover = if fits { buf.clone() } else { Vec::new() };
    cover.resize(cover.len().max(plan.cut_bytes() as usize), 0);
    file.write_all_at(&cover, plan.cut_at).map_err(io)?;
    if plan.trailer {
        file.write_all_at(&[0; TRAILER_BYTES], limit).map_err(io)?;
    }
    file.sync_data().map_err(io)?;
    if !fits {
        // No room after the cut: the kept frames are sealed, and the record
        // starts the next segment (chained and linked as any roll).
        let (trailer, frontier) = kept_prefix(&file, &plan.segment, &header, plan.cut_at)?;
        file.write_all_at(&trailer.encode(), limit).map_err(io)?;
        file.sync_data().map_err(io)?;
        let next = segment::SegmentHeader {
            version: header.version,
            log_id: header.log_id,
            base_seq: plan.record_seq,
            prev_hash: plan.prev_hash,
            segment_bytes: header.segment_bytes,
            created_at: Timestamp::now(),
        };
        let new_file = segment::create(storage, dir, &next, &frontier)?;
        let new_path = dir.join(segment::file_name(plan.record_seq));
        new_file
            .write_all_at(&buf, HEADER_BYTES)
            .and_then(|()| new_file.sync_data())
            .map_err(|e| Error::io(&new_path, e))?;
    }
    // A sealed segment's derived index described the old frames.
    let index = dir.join(crate::index::file_name(
        segment::parse_file_name(&plan.segment).unwrap_or(0),
    ));
    match storage.remove(&index) {
        Ok(()) => storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&index, e)),
    }
    Ok(CutOutcome {
        quarantine: qdir.join(qname),
        quarantine_sha256: sha,
        seq: plan.record_seq,
        hash,
    })
}

/// The trailer sealing the frames before `cut_at` (at least one), and the
/// Merkle frontier after them.
fn kept_prefix(
    file: &Arc<dyn crate::storage::StorageFile>,
    name: &str,
    header: &segment::SegmentHeader,
    cut_at: u64,
) -> Result<(SegmentTrailer, crate::hash::merkle::Frontier)> {
    let mut frontier = segment::read_start_frontier(&**file, name, header)?;
    let mut scan = Scanner::new(file.clone(), name, HEADER_BYTES, cut_at);
    let mut t: Option<SegmentTrailer> = None;
    while let Step::Frame { offset, frame } = scan.next_step()? {
        let summary = summary_at(header, name, offset, frame.record)?;
        let (ts, received) = (summary.timestamp, summary.received_at.unwrap_or_default());
        frontier.push(&frame.hash.0);
        let end = offset + frame.padded_len() as u64;
        t = Some(match t {
            None => SegmentTrailer {
                record_count: 1,
                last_seq: frame.seq,
                last_hash: frame.hash,
                min_timestamp: ts,
                max_timestamp: ts,
                data_end: end,
                last_received_at: received,
            },
            Some(t) => SegmentTrailer {
                record_count: t.record_count + 1,
                last_seq: frame.seq,
                last_hash: frame.hash,
                min_timestamp: t.min_timestamp.min(ts),
                max_timestamp: t.max_timestamp.max(ts),
                data_end: end,
                last_received_at: received,
            },
        });
    }
    let t =
        t.ok_or_else(|| Error::InvalidOptions(format!("no room for the cut record in {name}")))?;
    Ok((t, frontier))
}

/// The time of receipt of the last frame before `cut_at` (the epoch when
/// there is none, or in a version 1 segment).
fn last_received_at(
    file: &Arc<dyn crate::storage::StorageFile>,
    name: &str,
    header: &segment::SegmentHeader,
    cut_at: u64,
) -> Result<Timestamp> {
    let mut scan = Scanner::new(file.clone(), name, HEADER_BYTES, cut_at);
    let mut last = Timestamp::default();
    while let Step::Frame { offset, frame } = scan.next_step()? {
        let summary = summary_at(header, name, offset, frame.record)?;
        last = summary.received_at.unwrap_or(last);
    }
    Ok(last)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Says where a refusal to open points the operator.
pub(super) fn refusal_hint(file: &str, at: u64) -> String {
    format!(
        "recovery will not cut it: look at the damage, then `chainlog recover --cut-at {at}` (newest segment {file}) cuts it with a record of what was dropped"
    )
}

/// The record summary of the frame at `offset`; a record the rules refuse is
/// corruption there.
fn summary_at<'a>(
    header: &segment::SegmentHeader,
    name: &str,
    offset: u64,
    record: &'a [u8],
) -> Result<RecordSummary<'a>> {
    RecordSummary::decode(header.version, record).map_err(|e| Error::Corrupted {
        file: name.to_string(),
        offset,
        reason: e.to_string(),
    })
}
