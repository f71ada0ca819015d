//! Recovery of the newest segment on open, by the one damage rule
//! ([`crate::format::damage`]) the verifier uses too: a torn tail or a torn
//! seal is cut (zeroed); corruption is refused with nothing changed, and a
//! pointer to the operator's recorded cut (`chainlog recover --cut-at`).
//! A read-only open never refuses corruption: it reads the valid prefix and
//! says where it stops ([`Damage`]).

use std::path::Path;

use serde::Serialize;

use super::cut::refusal_hint;
use super::{Active, Newest, Options};
use crate::error::{Error, Result};
use crate::event::RecordSummary;
use crate::format::damage::{self, DataEnd, SealState};
use crate::format::segment::{
    self, data_end_limit, Scanner, SegmentTrailer, Step, HEADER_BYTES, TRAILER_BYTES,
};
use crate::index::{IndexBuilder, IndexedFields};
use crate::storage::{read_full_at, Storage};
use crate::tiles::SegmentTree;

/// Where a read-only open of a damaged newest segment stops reading: the
/// records before `offset` are read, nothing after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The newest segment's file name.
    pub segment: String,
    /// Where the valid prefix ends.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Opens the newest segment and finds where its data ends.
/// Returns it with the chain head (the last record's stored hash, or the
/// segment's link hash when it has no records), its Merkle tree (for a
/// writer; read-only, the tree before the segment) and its index, and,
/// read-only, where damage stops the reading.
pub(super) fn recover_active(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    options: &Options,
    refuse_older: bool,
) -> Result<(Newest, Option<Damage>)> {
    let read_only = options.read_only;
    let name = segment::file_name(base);
    let path = dir.join(&name);
    let file = storage
        .open(&path, !read_only)
        .map_err(|e| Error::io(&path, e))?;
    let header = segment::read_header(&*file, &name)?;
    // Appends write the current record layout: an older newest segment
    // needs `chainlog migrate` first (before recovery changes anything).
    if refuse_older && header.version != segment::FORMAT_VERSION {
        return Err(Error::MigrationNeeded {
            dir: dir.to_path_buf(),
            version: header.version,
        });
    }
    if header.base_seq != base {
        return Err(Error::Corrupted {
            file: name,
            offset: 0,
            reason: format!(
                "header says base seq {}, the name says {base}",
                header.base_seq
            ),
        });
    }
    let len = file.size().map_err(|e| Error::io(&path, e))?;
    if len < header.segment_bytes {
        return Err(Error::Corrupted {
            file: name,
            offset: len,
            reason: format!(
                "file is {len} bytes, its header says {}",
                header.segment_bytes
            ),
        });
    }
    let trailer_at = data_end_limit(header.segment_bytes);
    let mut found_trailer = [0; TRAILER_BYTES];
    read_full_at(&*file, &mut found_trailer, trailer_at).map_err(|e| Error::io(&path, e))?;
    let start_frontier = segment::read_start_frontier(&*file, &name, &header)?;
    let mut active = Active::new(file.clone(), header);
    let mut tree = SegmentTree::new(start_frontier);
    let mut index = IndexBuilder::new(base, options.index_block_bytes);
    let mut head = header.prev_hash;
    // The frames are read even when the segment is sealed: a trailer can
    // reach the disk without the frames it describes (a seal whose
    // `fdatasync` was torn by a crash), and then the frames are the truth.
    let mut scan = Scanner::new(file.clone(), &name, HEADER_BYTES, trailer_at);
    // A valid frame that cannot continue the chain here (wrong seq, a record
    // that does not decode) ends the prefix: corruption, not debris.
    let mut stopped: Option<(u64, String)> = None;
    let mut bad_frame = None;
    loop {
        match scan.next_step()? {
            Step::Frame { offset, frame } => {
                let expected = base + active.count;
                if frame.seq != expected {
                    stopped = Some((
                        offset,
                        format!("frame has seq {}, expected {expected}", frame.seq),
                    ));
                    break;
                }
                // The same checks as a full decode, without building the
                // fields: open needs the timestamp and what the index posts.
                match RecordSummary::decode(header.version, frame.record) {
                    Ok(summary) => {
                        active.note_timestamp(summary.timestamp);
                        if let Some(received_at) = summary.received_at {
                            active.last_received_at = received_at;
                        }
                        let fields = IndexedFields::of_summary(&summary);
                        let len = frame.padded_len() as u64;
                        index.add_fields(offset, len, frame.seq, frame.hash, &fields);
                    }
                    Err(e) => {
                        stopped = Some((offset, format!("record at seq {expected}: {e}")));
                        break;
                    }
                }
                if !read_only {
                    // Only a writer extends the tree (seals, tiles): a
                    // read-only open skips its hashing.
                    tree.push(&frame.hash);
                }
                head = frame.hash;
            }
            Step::End { .. } => break,
            Step::Bad { error, .. } => {
                bad_frame = Some(error);
                break;
            }
        }
    }
    let expected = base + active.count;
    let implied = (active.count > 0).then(|| {
        SegmentTrailer {
            record_count: active.count,
            last_seq: expected - 1,
            last_hash: head,
            min_timestamp: active.min_ts,
            max_timestamp: active.max_ts,
            data_end: scan.position(),
            last_received_at: active.last_received_at,
        }
        .encode()
    });
    let end = match &stopped {
        Some((offset, _)) => *offset,
        None => scan.position(),
    };
    active.write_at = end;
    active.written_at = end;
    let seal = damage::classify_seal(&found_trailer, implied.as_ref(), true);
    let data = match &stopped {
        Some(_) => None,
        None => {
            let scanned = damage::scan_data_end(&mut scan, expected)?;
            Some(damage::classify_data(
                &scanned,
                expected,
                seal.allows_torn_tail(),
            ))
        }
    };
    // Corruption: refuse to write (nothing changed), or read up to it.
    let corruption = match (&stopped, data) {
        (Some((offset, why)), _) => Some((*offset, why.clone())),
        (None, Some(DataEnd::Corrupt { at, cause })) => {
            let what = bad_frame
                .as_ref()
                .map_or_else(|| "zeroed or missing frame".to_string(), |e| e.to_string());
            Some((at, format!("{what}; {cause}")))
        }
        _ if seal == SealState::Mismatch => Some((
            trailer_at,
            "the trailer disagrees with the frames, and is not a torn seal".to_string(),
        )),
        _ => None,
    };
    if let Some((offset, reason)) = corruption {
        if !read_only {
            // A cut starts at a frame boundary: for a bad trailer, the data's end.
            let cut_at = offset.min(end);
            return Err(Error::Corrupted {
                reason: format!("{reason}; {}", refusal_hint(&name, cut_at)),
                file: name,
                offset,
            });
        }
        let damage = Damage {
            segment: name,
            offset,
            reason,
        };
        return Ok((
            Newest {
                active,
                head,
                tree,
                index,
            },
            Some(damage),
        ));
    }
    active.sealed = seal == SealState::Sealed;
    if !read_only {
        if let Some(DataEnd::TornTail { at, end }) = data {
            // Cut the torn tail: zero it so that new frames never sit before
            // stale bytes.
            let zeros = vec![0; (end - at) as usize];
            file.write_all_at(&zeros, at)
                .map_err(|e| Error::io(&path, e))?;
        }
        if seal == SealState::TornSeal {
            file.write_all_at(&[0; TRAILER_BYTES], trailer_at)
                .map_err(|e| Error::io(&path, e))?;
        }
        // Whatever recovery accepted (even what a failed sync of an earlier
        // handle left in the page cache) is made durable before anything is
        // appended after it.
        file.sync_data().map_err(|e| Error::io(&path, e))?;
    }
    Ok((
        Newest {
            active,
            head,
            tree,
            index,
        },
        None,
    ))
}
