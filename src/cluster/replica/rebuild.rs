//! Rebuilding a log directory from the pieces in the bucket, up to a head,
//! by the reader's rule of docs/CLUSTER.md: at each position below the
//! head's size, the piece of the highest epoch not above the head's that
//! starts there. Every frame is checked (CRC, seq, chain hash recomputed),
//! every header and link block against what came before, and the Merkle
//! root and last hash against the head's: the bucket is never trusted.
//!
//! `Replay` keeps its place, so a follower extends it head after head.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::pieces::{parse_piece_file_name, piece_dir, piece_file_name, Piece, PieceRange};
use crate::archive::{newest_manifest, Bucket};
use crate::cluster::{ClusterError, Head};
use crate::format::frame;
use crate::format::segment::{
    self, data_end_limit, SegmentHeader, SegmentTrailer, HEADER_BYTES, LINK_BLOCK_AT, TRAILER_BYTES,
};
use crate::hash::chain::ChainHash;
use crate::hash::merkle::Frontier;

/// The largest piece read (a whole segment of the largest size, and its
/// piece framing).
const MAX_PIECE_BYTES: usize = (segment::MAX_SEGMENT_BYTES as usize) + (1 << 16);

/// The segment being rebuilt.
#[derive(Debug)]
struct Current {
    base: u64,
    file: File,
    segment_bytes: u64,
    /// Where the next frame goes.
    data_end: u64,
    sealed: bool,
}

/// A log directory rebuilt from the bucket, and where it stands.
#[derive(Debug)]
pub(crate) struct Replay {
    dir: PathBuf,
    /// The log id, as the heads' checkpoints name it.
    log_id: String,
    current: Option<Current>,
    next_seq: u64,
    chain_head: Option<ChainHash>,
    frontier: Frontier,
    /// Piece names listed per segment folder during one [`Replay::advance`].
    listed: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Pieces and archived segments read, and bytes downloaded.
    pub(crate) pieces_read: u64,
    pub(crate) segments_read: u64,
    pub(crate) bytes_read: u64,
}

/// Where a replay ended: what the uploader continues from.
#[derive(Debug, Clone)]
pub(crate) struct ReplayEnd {
    /// The newest segment's base seq, and where its next frame goes (`None`
    /// when it is sealed or there is none).
    pub(crate) active: Option<(u64, u64)>,
    /// Records rebuilt.
    pub(crate) next_seq: u64,
    /// The Merkle tree over them.
    pub(crate) frontier: Frontier,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ClusterError {
    move |source| ClusterError::Io { context, source }
}

fn mismatch(head: &Head, reason: String) -> ClusterError {
    ClusterError::HeadMismatch {
        size: head.size,
        root: head.root,
        reason,
    }
}

/// The log id a head's checkpoint origin (`<prefix>/<log id>`) names.
pub(crate) fn head_log_id(head: &Head) -> Result<String, ClusterError> {
    let origin = head.checkpoint.lines().next().unwrap_or_default();
    origin
        .rsplit_once('/')
        .map(|(_, id)| id.to_string())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| mismatch(head, format!("its origin {origin:?} names no log id")))
}

impl Replay {
    /// An empty replay into `dir` (created; it must hold no segment).
    pub(crate) fn new(dir: &Path, log_id: String) -> Result<Replay, ClusterError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Replay {
            dir: dir.to_path_buf(),
            log_id,
            current: None,
            next_seq: 0,
            chain_head: None,
            frontier: Frontier::new(),
            listed: BTreeMap::new(),
            pieces_read: 0,
            segments_read: 0,
            bytes_read: 0,
        })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies the pieces that lead to `head` (checked by the caller), then
    /// checks the tree against it. On an error the replay is left where it
    /// failed: start a new one.
    pub(crate) fn advance(&mut self, bucket: &Bucket, head: &Head) -> Result<(), ClusterError> {
        if head_log_id(head)? != self.log_id {
            return Err(mismatch(head, format!("it is not log {}", self.log_id)));
        }
        if head.size < self.next_seq {
            return Err(mismatch(
                head,
                format!("{} records were rebuilt already", self.next_seq),
            ));
        }
        self.listed.clear();
        if self.current.is_none() && self.next_seq == 0 {
            self.apply_archived(bucket, head)?;
        }
        loop {
            let p = self.next_seq;
            let (base, new_segment) = match &self.current {
                Some(c) if !c.sealed => (c.base, false),
                _ => (p, true),
            };
            if new_segment && p == head.size {
                break;
            }
            let Some(piece) = self.best_piece(bucket, base, p, head.epoch)? else {
                if p == head.size {
                    break;
                }
                return Err(mismatch(
                    head,
                    format!(
                        "no piece at seq {p} in {} of an epoch up to {}",
                        bucket.url(&piece_dir(base)),
                        head.epoch
                    ),
                ));
            };
            if p == head.size && piece.next_seq > p {
                // Frames beyond the head: not published (yet, or ever).
                break;
            }
            if piece.next_seq > head.size {
                return Err(mismatch(
                    head,
                    format!(
                        "the piece {} runs past the head, to seq {}",
                        bucket.url(&piece.key()),
                        piece.next_seq
                    ),
                ));
            }
            let url = bucket.url(&piece.key());
            self.apply(&piece, new_segment)
                .map_err(|reason| mismatch(head, format!("{url}: {reason}")))?;
        }
        if self.next_seq != head.size || self.frontier.root() != head.root.0 {
            return Err(mismatch(
                head,
                format!(
                    "the pieces give {} records with root {}",
                    self.next_seq,
                    ChainHash(self.frontier.root())
                ),
            ));
        }
        if let Some(c) = &self.current {
            c.file
                .sync_data()
                .map_err(io(format!("syncing {}", self.dir.display())))?;
        }
        Ok(())
    }

    /// Applies the sealed segments the newest archive manifest names, whole
    /// (each checked against the manifest's SHA-256, then exactly as a
    /// piece holding all of it), while they lie below the head.
    fn apply_archived(&mut self, bucket: &Bucket, head: &Head) -> Result<(), ClusterError> {
        let Some((key, manifest)) = newest_manifest(bucket)? else {
            return Ok(());
        };
        if manifest.log_id != self.log_id {
            return Err(mismatch(
                head,
                format!("{} is for log {}", bucket.url(&key), manifest.log_id),
            ));
        }
        for entry in &manifest.segments {
            if entry.base_seq != self.next_seq || entry.last_seq >= head.size {
                break;
            }
            let url = bucket.url(&entry.segment.name);
            let bytes = bucket.get(&entry.segment.name)?;
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            if ChainHash(digest).to_hex() != entry.segment.sha256 {
                return Err(mismatch(head, format!("{url} differs from its manifest")));
            }
            let piece = segment_as_piece(entry.base_seq, &bytes)
                .map_err(|reason| mismatch(head, format!("{url}: {reason}")))?;
            self.apply(&piece, true)
                .map_err(|reason| mismatch(head, format!("{url}: {reason}")))?;
            if !self.current.as_ref().is_some_and(|c| c.sealed) {
                return Err(mismatch(head, format!("{url} is not sealed")));
            }
            self.segments_read += 1;
            self.bytes_read += bytes.len() as u64;
        }
        Ok(())
    }

    /// Where the replay stands.
    pub(crate) fn end(&self) -> ReplayEnd {
        ReplayEnd {
            active: self
                .current
                .as_ref()
                .filter(|c| !c.sealed)
                .map(|c| (c.base, c.data_end)),
            next_seq: self.next_seq,
            frontier: self.frontier.clone(),
        }
    }

    /// The piece of the highest epoch up to `max_epoch` starting at `p` in
    /// segment `base`: first a GET of the head's own epoch's (the usual
    /// case), else from a listing of the folder.
    fn best_piece(
        &mut self,
        bucket: &Bucket,
        base: u64,
        p: u64,
        max_epoch: u64,
    ) -> Result<Option<Piece>, ClusterError> {
        let dir = piece_dir(base);
        if let Some(piece) =
            self.read_piece(bucket, &format!("{dir}/{}", piece_file_name(p, max_epoch)))?
        {
            return Ok(Some(piece));
        }
        let listed = match self.listed.entry(base) {
            std::collections::btree_map::Entry::Occupied(found) => found.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => slot.insert(
                bucket
                    .list(&dir)?
                    .into_iter()
                    .filter_map(|(name, _)| parse_piece_file_name(&name))
                    .collect(),
            ),
        };
        let best = listed
            .iter()
            .filter(|&&(first, epoch)| first == p && epoch <= max_epoch)
            .map(|&(_, epoch)| epoch)
            .max();
        match best {
            Some(epoch) => self.read_piece(bucket, &format!("{dir}/{}", piece_file_name(p, epoch))),
            None => Ok(None),
        }
    }

    fn read_piece(&mut self, bucket: &Bucket, key: &str) -> Result<Option<Piece>, ClusterError> {
        let Some(found) = bucket.get_versioned(key)? else {
            return Ok(None);
        };
        let url = bucket.url(key);
        if found.bytes.len() > MAX_PIECE_BYTES {
            return Err(ClusterError::Malformed {
                url,
                reason: format!("{} bytes", found.bytes.len()),
            });
        }
        let piece = Piece::decode(&found.bytes).map_err(|problem| ClusterError::BadPiece {
            url: url.clone(),
            problem,
        })?;
        if piece.key() != key {
            return Err(ClusterError::Malformed {
                url,
                reason: "its fields name another key".into(),
            });
        }
        self.pieces_read += 1;
        self.bytes_read += found.bytes.len() as u64;
        Ok(Some(piece))
    }

    /// Checks `piece` against what the replay holds and writes it.
    fn apply(&mut self, piece: &Piece, new_segment: bool) -> Result<(), String> {
        let limit = data_end_limit(piece.segment_bytes);
        let link_at = limit + LINK_BLOCK_AT as u64;
        let (mut header, mut frames, mut trailer, mut link) = (None, None, None, None);
        for range in &piece.ranges {
            let slot = match range.offset {
                0 => &mut header,
                at if at == limit => &mut trailer,
                at if at == link_at => &mut link,
                at if at < limit => &mut frames,
                at => return Err(format!("a range at {at}, in no part of a segment")),
            };
            if slot.replace(range).is_some() {
                return Err("two ranges for one part of the segment".into());
            }
        }
        if new_segment {
            let (Some(header_range), Some(link)) = (header, link) else {
                return Err("the first piece of a segment lacks its header or link block".into());
            };
            let header = self.check_header(piece, &header_range.bytes)?;
            let (frontier, len) = segment::decode_link_block(&link.bytes, "piece", link.offset)
                .map_err(|e| e.to_string())?;
            if len != link.bytes.len() || frontier != self.frontier {
                return Err("its link block is not the tree before the segment".into());
            }
            let name = segment::file_name(piece.base_seq);
            let path = self.dir.join(&name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            file.set_len(header.segment_bytes)
                .map_err(|e| format!("sizing {}: {e}", path.display()))?;
            write(&file, 0, &header_range.bytes)?;
            write(&file, link.offset, &link.bytes)?;
            if self.chain_head.is_none() {
                self.chain_head = Some(header.prev_hash);
            }
            self.current = Some(Current {
                base: piece.base_seq,
                file,
                segment_bytes: header.segment_bytes,
                data_end: HEADER_BYTES,
                sealed: false,
            });
        } else if header.is_some() || link.is_some() {
            return Err("a header or link block in a piece that continues a segment".into());
        }
        let Some(c) = self.current.as_mut() else {
            return Err("no segment to continue".into());
        };
        if c.segment_bytes != piece.segment_bytes || c.base != piece.base_seq {
            return Err("it names another segment size or base".into());
        }
        let mut head = self.chain_head.ok_or("no chain head")?;
        let mut seq = piece.first_seq;
        if let Some(frames) = frames {
            if frames.offset != c.data_end || frames.end() > limit {
                return Err(format!(
                    "frames at {} (+{}), the segment's data ends at {}",
                    frames.offset,
                    frames.bytes.len(),
                    c.data_end
                ));
            }
            let mut at = 0;
            while at < frames.bytes.len() {
                let offset = frames.offset + at as u64;
                let frame = match frame::decode(&frames.bytes[at..]) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Err(format!("a zero frame header at {offset}")),
                    Err(e) => return Err(format!("the frame at {offset}: {e}")),
                };
                let expected = head.next(seq, frame.record);
                if frame.seq != seq || frame.hash != expected {
                    return Err(format!(
                        "the frame at {offset} is seq {} with hash {}; expected seq {seq} with hash {expected}",
                        frame.seq, frame.hash
                    ));
                }
                self.frontier.push(&frame.hash.0);
                head = frame.hash;
                seq += 1;
                at += frame.padded_len();
            }
            write(&c.file, frames.offset, &frames.bytes)?;
            c.data_end = frames.end();
        }
        if seq != piece.next_seq {
            return Err(format!(
                "its frames end at seq {seq}, it says {}",
                piece.next_seq
            ));
        }
        self.chain_head = Some(head);
        self.next_seq = seq;
        if let Some(trailer) = trailer {
            let raw: &[u8; TRAILER_BYTES] = trailer
                .bytes
                .as_slice()
                .try_into()
                .map_err(|_| "a trailer range of the wrong length")?;
            let t: SegmentTrailer = SegmentTrailer::decode(raw, "piece", limit)
                .map_err(|e| e.to_string())?
                .ok_or("an empty trailer")?;
            if t.record_count != seq - c.base
                || t.last_seq + 1 != seq
                || t.last_hash != head
                || t.data_end != c.data_end
            {
                return Err("its trailer does not describe the segment's frames".into());
            }
            write(&c.file, limit, &trailer.bytes)?;
            c.file
                .sync_data()
                .map_err(|e| format!("syncing a sealed segment: {e}"))?;
            c.sealed = true;
        }
        if !new_segment && piece.next_seq == piece.first_seq && !c.sealed {
            return Err("a piece with nothing in it".into());
        }
        Ok(())
    }

    fn check_header(&self, piece: &Piece, bytes: &[u8]) -> Result<SegmentHeader, String> {
        let raw: &[u8; HEADER_BYTES as usize] = bytes
            .try_into()
            .map_err(|_| "a header range of the wrong length")?;
        let header = SegmentHeader::decode(raw, &segment::file_name(piece.base_seq))
            .map_err(|e| e.to_string())?;
        let prev = match self.chain_head {
            Some(h) => h,
            None if piece.base_seq == 0 => ChainHash::genesis(&header.log_id),
            // The first segment rebuilt may follow retained-away ones only
            // when its frontier says so; pieces start at seq 0 today.
            None => return Err("the first piece does not start the log".into()),
        };
        if header.log_id.to_string() != self.log_id
            || header.base_seq != piece.base_seq
            || header.segment_bytes != piece.segment_bytes
            || header.prev_hash != prev
            || header.version != segment::FORMAT_VERSION
        {
            return Err("its segment header does not continue the log".into());
        }
        Ok(header)
    }
}

/// A whole sealed segment file as the one piece that would give it.
fn segment_as_piece(base_seq: u64, bytes: &[u8]) -> Result<Piece, String> {
    let name = segment::file_name(base_seq);
    let raw: &[u8; HEADER_BYTES as usize] = bytes
        .get(..HEADER_BYTES as usize)
        .and_then(|b| b.try_into().ok())
        .ok_or("shorter than a header")?;
    let header = SegmentHeader::decode(raw, &name).map_err(|e| e.to_string())?;
    let limit = data_end_limit(header.segment_bytes);
    if bytes.len() as u64 != header.segment_bytes {
        return Err(format!(
            "{} bytes, its header says {}",
            bytes.len(),
            header.segment_bytes
        ));
    }
    let at = |from: u64, len: usize| bytes[from as usize..from as usize + len].to_vec();
    let trailer_raw: [u8; TRAILER_BYTES] = bytes[limit as usize..limit as usize + TRAILER_BYTES]
        .try_into()
        .map_err(|_| "no trailer")?;
    let trailer = SegmentTrailer::decode(&trailer_raw, &name, limit)
        .map_err(|e| e.to_string())?
        .ok_or("not sealed")?;
    let link_at = limit + LINK_BLOCK_AT as u64;
    let (_, link_len) = segment::decode_link_block(&bytes[link_at as usize..], &name, link_at)
        .map_err(|e| e.to_string())?;
    if trailer.data_end <= HEADER_BYTES || trailer.data_end > limit {
        return Err("its trailer's data end is out of range".into());
    }
    let ranges = vec![
        PieceRange {
            offset: 0,
            bytes: at(0, HEADER_BYTES as usize),
        },
        PieceRange {
            offset: HEADER_BYTES,
            bytes: at(HEADER_BYTES, (trailer.data_end - HEADER_BYTES) as usize),
        },
        PieceRange {
            offset: limit,
            bytes: trailer_raw.to_vec(),
        },
        PieceRange {
            offset: link_at,
            bytes: at(link_at, link_len),
        },
    ];
    Ok(Piece {
        base_seq,
        epoch: 1,
        first_seq: base_seq,
        next_seq: trailer.last_seq + 1,
        segment_bytes: header.segment_bytes,
        ranges,
    })
}

fn write(file: &File, at: u64, bytes: &[u8]) -> Result<(), String> {
    file.write_all_at(bytes, at)
        .map_err(|e| format!("writing the rebuilt segment: {e}"))
}
