//! The uploader thread of a [`super::Replicated`] log: the whole write path
//! to the bucket in the order it happens.
//!
//! 1. Wait for the flush interval, or less once `flush_bytes` are pending
//!    (a waiter says so), renewing the lease every third of its TTL.
//! 2. Read the frames written since the last piece from the segment files
//!    (write-through: every visible record is in the file), check each (CRC,
//!    seq, chain hash), extend the Merkle frontier with it, and cut pieces:
//!    one per segment touched, with the header and link block in a
//!    segment's first, and the trailer once the segment is sealed.
//! 3. PUT each piece create-only. A failed PUT is retried later with the
//!    same bytes (the key is create-only: a retry with other bytes would be
//!    refused); nothing new is cut until it lands.
//! 4. Publish the head by compare-and-swap: a checkpoint of the frontier,
//!    signed, with the consistency proof from the previous head computed
//!    from the previous frontier and the new leaves.
//! 5. Check the lease is still valid by the holder's clock, then
//!    acknowledge: waiters for records below the head's size return.
//!
//! A refused head (a newer epoch published) or a lost lease fences the
//! writer: every wait fails with [`ClusterError::LeaseLost`] from then on.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::archiver::Archiver;
use super::pieces::{Piece, PieceRange};
use super::ReplicationOptions;
use crate::archive::{Bucket, Conditional};
use crate::cluster::head::{publish_head, Head, PublishedHead};
use crate::cluster::lease::Lease;
use crate::cluster::{ClusterError, LEASE_OBJECT};
use crate::format::frame::{self, FrameError};
use crate::format::segment::{
    self, data_end_limit, SegmentTrailer, HEADER_BYTES, LINK_BLOCK_AT, MAX_LINK_BLOCK_BYTES,
    TRAILER_BYTES,
};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::merkle::{leaf_hash, node_hash, Frontier, Hash};
use crate::hash::proof::{consistency_proof, SubtreeSource};
use crate::log::Log;
use crate::query::proofs::ConsistencyProof;

/// Frame bytes in one piece at most: a larger backlog is cut in several.
const MAX_PIECE_FRAME_BYTES: u64 = 8 << 20;
/// Bytes read from a segment file at a time.
const READ_BYTES: u64 = 1 << 20;

/// What the waiters and the uploader share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Signalled when the replicated size moves or the writer is fenced.
    pub(super) changed: Condvar,
    /// Wakes the uploader.
    pub(super) wake: Condvar,
}

/// The replication state the waiters see.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Records below this are under a published head.
    pub(super) replicated_next: u64,
    /// The newest head published.
    pub(super) head: Option<Head>,
    /// Set once the writer was fenced: the error every wait returns.
    pub(super) fenced: Option<Fenced>,
    /// The last failure of a request (cleared by a round that succeeds).
    pub(super) last_error: Option<String>,
    /// Upload now rather than at the end of the interval.
    pub(super) flush_now: bool,
    /// Stop after uploading what is pending.
    pub(super) stop: bool,
    /// PUT requests made (pieces and heads).
    pub(super) puts: u64,
    /// The segment and offset the written pieces' frames end at.
    pub(super) uploaded_at: (u64, u64),
    /// Sealed segments archived as whole objects.
    pub(super) archived_segments: u64,
    /// The last archiving failure (retried at the next seal).
    pub(super) archive_error: Option<String>,
}

/// Why the writer stopped.
#[derive(Debug, Clone)]
pub(super) struct Fenced {
    pub(super) url: String,
    pub(super) epoch: u64,
    pub(super) why: String,
}

impl Fenced {
    pub(super) fn error(&self) -> ClusterError {
        ClusterError::LeaseLost {
            url: self.url.clone(),
            epoch: self.epoch,
            now: self.why.clone(),
        }
    }
}

/// A piece cut and not yet written.
#[derive(Debug)]
struct Cut {
    piece: Piece,
    bytes: Vec<u8>,
    /// The chain hash of its last record (the one before it if it has none).
    last_hash: ChainHash,
    /// The segment and offset its frames end at.
    end: (u64, u64),
}

/// The segment being uploaded.
#[derive(Debug)]
struct Upload {
    base: u64,
    file: File,
    segment_bytes: u64,
    /// Where the next frame to upload starts.
    end: u64,
    header_sent: bool,
    /// Its trailer is in a piece (cut): the next records are in the next segment.
    sealed: bool,
}

/// Where the uploader starts: what the bucket holds under the head.
#[derive(Debug)]
pub(super) struct Start {
    pub(super) dir: PathBuf,
    /// The newest segment and where its next frame goes, when it is not sealed.
    pub(super) active: Option<(u64, u64)>,
    pub(super) next_seq: u64,
    pub(super) chain_head: ChainHash,
    pub(super) frontier: Frontier,
    pub(super) published: Option<PublishedHead>,
}

/// The uploader's own state (its thread owns it).
pub(super) struct Uploader {
    log: Arc<Log>,
    bucket: Arc<Bucket>,
    lease: Lease,
    signer: NoteSigner,
    options: ReplicationOptions,
    shared: Arc<Shared>,
    dir: PathBuf,
    origin: String,
    upload: Option<Upload>,
    /// Records cut into pieces, and the chain and tree over them.
    cut_next: u64,
    cut_hash: ChainHash,
    /// Pieces cut and not yet written, oldest first.
    pending: Vec<Cut>,
    /// Records in written pieces.
    uploaded_next: u64,
    uploaded_frontier: Frontier,
    uploaded_hash: ChainHash,
    published: Option<PublishedHead>,
    published_frontier: Frontier,
    /// Leaf hashes from the published size on (for the next proof).
    leaves: Vec<Hash>,
    leaves_uploaded: usize,
    next_renew: Instant,
    /// The newest segment whose trailer is in a written piece, until a head
    /// is published after it.
    sealed_uploaded: Option<u64>,
    archiver: Archiver,
}

impl Uploader {
    pub(super) fn new(
        log: Arc<Log>,
        lease: Lease,
        signer: NoteSigner,
        options: ReplicationOptions,
        shared: Arc<Shared>,
        start: Start,
    ) -> Result<Uploader, ClusterError> {
        let bucket = lease.bucket().clone();
        let origin = format!("{}/{}", options.origin_prefix, log.log_id());
        let upload = match start.active {
            Some((base, end)) => Some(open_upload(&start.dir, base, end, true)?),
            None => None,
        };
        let renew_every = Duration::from_millis(lease_ttl_ms(&lease) / 3);
        let archiver = Archiver::start(start.dir.clone(), bucket.target().clone(), shared.clone());
        Ok(Uploader {
            log,
            bucket,
            lease,
            signer,
            options,
            shared,
            dir: start.dir,
            origin,
            upload,
            cut_next: start.next_seq,
            cut_hash: start.chain_head,
            pending: Vec::new(),
            uploaded_next: start.next_seq,
            uploaded_frontier: start.frontier.clone(),
            uploaded_hash: start.chain_head,
            published_frontier: start.frontier,
            published: start.published,
            leaves: Vec::new(),
            leaves_uploaded: 0,
            next_renew: Instant::now() + renew_every,
            sealed_uploaded: None,
            archiver,
        })
    }

    /// The thread's body: rounds until stopped (after a last round) or
    /// fenced. Returns the lease, and the last round's error when stopped.
    pub(super) fn run(mut self) -> (Lease, Option<ClusterError>) {
        let failed = self.rounds();
        self.archiver.finish();
        (self.lease, failed)
    }

    fn rounds(&mut self) -> Option<ClusterError> {
        let mut last_round = Instant::now();
        loop {
            let (stopping, flush) = {
                let mut state = self.shared.state.lock();
                let due = last_round + self.options.flush_interval;
                loop {
                    let now = Instant::now();
                    if state.stop
                        || state.fenced.is_some()
                        || state.flush_now
                        || now >= due
                        || now >= self.next_renew
                    {
                        break;
                    }
                    let until = due.min(self.next_renew);
                    self.shared.wake.wait_until(&mut state, until);
                }
                if state.fenced.is_some() {
                    return None;
                }
                let flush = state.flush_now || Instant::now() >= due;
                state.flush_now = false;
                (state.stop, flush)
            };
            if Instant::now() >= self.next_renew {
                if let Err(e) = self.renew() {
                    self.failed(e);
                }
            }
            if flush || stopping {
                last_round = Instant::now();
                match self.round() {
                    Ok(()) => self.shared.state.lock().last_error = None,
                    Err(e) if stopping => return Some(e),
                    Err(e) => self.failed(e),
                }
            }
            if stopping {
                return None;
            }
        }
    }

    /// Renews the lease; after a failure, tries again after a tenth of the
    /// TTL (at most a second).
    fn renew(&mut self) -> Result<(), ClusterError> {
        let ttl_ms = lease_ttl_ms(&self.lease);
        let result = self.lease.renew();
        let next_ms = if result.is_ok() {
            ttl_ms / 3
        } else {
            (ttl_ms / 10).min(1_000)
        };
        self.next_renew = Instant::now() + Duration::from_millis(next_ms);
        result
    }

    /// Records a failure: fencing ones stop the writer, others are kept for
    /// the waiters' timeout message and retried.
    fn failed(&mut self, e: ClusterError) {
        let fence = match &e {
            ClusterError::LeaseLost { .. }
            | ClusterError::StaleEpoch { .. }
            | ClusterError::HeadMoved { .. } => true,
            ClusterError::LeaseExpired { .. } => {
                // Renew now; if that is refused, the lease is lost.
                match self.renew() {
                    Err(lost @ ClusterError::LeaseLost { .. }) => {
                        return self.fence(&lost);
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if fence {
            self.fence(&e);
        } else {
            self.shared.state.lock().last_error = Some(e.to_string());
        }
    }

    fn fence(&self, e: &ClusterError) {
        let mut state = self.shared.state.lock();
        if state.fenced.is_none() {
            state.fenced = Some(Fenced {
                url: self.bucket.url(LEASE_OBJECT),
                epoch: self.lease.epoch(),
                why: format!("the writer was fenced: {e}"),
            });
        }
        self.shared.changed.notify_all();
    }

    /// Cut, write, publish, acknowledge.
    fn round(&mut self) -> Result<(), ClusterError> {
        if self.pending.is_empty() {
            let target = self.log.state().next_seq;
            self.cut(target)?;
        }
        while let Some(cut) = self.pending.first() {
            let key = cut.piece.key();
            let written = self.bucket.put_create(&key, cut.bytes.clone())?;
            self.shared.state.lock().puts += 1;
            if written == Conditional::Refused {
                return Err(ClusterError::LeaseLost {
                    url: self.bucket.url(&key),
                    epoch: self.lease.epoch(),
                    now: "another piece of this epoch is at the key".into(),
                });
            }
            let cut = self.pending.remove(0);
            self.note_uploaded(&cut);
        }
        self.publish()
    }

    fn note_uploaded(&mut self, cut: &Cut) {
        let records = (cut.piece.next_seq - cut.piece.first_seq) as usize;
        for hash in &self.leaves[self.leaves_uploaded..self.leaves_uploaded + records] {
            self.uploaded_frontier.push(hash);
        }
        self.leaves_uploaded += records;
        self.uploaded_next = cut.piece.next_seq;
        self.uploaded_hash = cut.last_hash;
        self.shared.state.lock().uploaded_at = cut.end;
        let trailer_at = data_end_limit(cut.piece.segment_bytes);
        if cut.piece.ranges.iter().any(|r| r.offset == trailer_at) {
            self.sealed_uploaded = Some(cut.piece.base_seq);
        }
    }

    fn publish(&mut self) -> Result<(), ClusterError> {
        let old_size = self.published.as_ref().map_or(0, |p| p.head.size);
        if self.uploaded_next <= old_size && self.published.is_some() {
            // Published before, maybe not acknowledged (the lease check
            // failed then): acknowledge once it passes.
            return self.acknowledge();
        }
        let size = self.uploaded_next;
        let root = self.uploaded_frontier.root();
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            head: (size > 0).then_some(self.uploaded_hash),
        };
        let note = checkpoint
            .sign(&self.signer)
            .map_err(crate::cluster::HeadProblem::from)?;
        let old_root = self.published_frontier.root();
        let leaves = &self.leaves[..self.leaves_uploaded];
        let proof = consistency_proof(
            &mut RoundTree {
                old: &self.published_frontier,
                leaves,
            },
            old_size,
            size,
        )
        .map_err(|_| ClusterError::Invalid {
            what: "consistency proof",
            reason: "the uploader's tree cannot give it".into(),
        })?;
        let consistency =
            (self.published.is_some() && size > old_size).then_some(ConsistencyProof {
                old_size,
                new_size: size,
                old_root,
                new_root: root,
                proof,
            });
        let head = Head::new(self.lease.epoch(), &checkpoint, note, consistency);
        let published = publish_head(&self.lease, self.published.as_ref(), head)?;
        self.shared.state.lock().puts += 1;
        self.published = Some(published.clone());
        self.published_frontier = self.uploaded_frontier.clone();
        self.leaves.drain(..self.leaves_uploaded);
        self.leaves_uploaded = 0;
        if let Some(base) = self.sealed_uploaded.take() {
            self.archiver.archive_up_to(base);
        }
        self.acknowledge()
    }

    /// Lets the waiters for records below the published head go, once the
    /// lease is still valid: nothing is acknowledged that a new holder may
    /// not have seen.
    fn acknowledge(&mut self) -> Result<(), ClusterError> {
        let Some(published) = &self.published else {
            return Ok(());
        };
        let mut state = self.shared.state.lock();
        if state.replicated_next >= published.head.size && state.head.is_some() {
            return Ok(());
        }
        drop(state);
        self.lease.check_valid()?;
        state = self.shared.state.lock();
        state.replicated_next = published.head.size;
        state.head = Some(published.head.clone());
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Cuts pieces for records up to `target`, and for a seal.
    fn cut(&mut self, target: u64) -> Result<(), ClusterError> {
        let mut cut_bytes = 0;
        loop {
            let upload = match self.upload.take() {
                Some(u) if !u.sealed => u,
                _ => {
                    if self.cut_next >= target {
                        return Ok(());
                    }
                    open_upload(&self.dir, self.cut_next, HEADER_BYTES, false)?
                }
            };
            if let Some(cut) = self.cut_piece(upload, target)? {
                cut_bytes += cut.bytes.len() as u64;
                self.pending.push(cut);
            }
            let upload = self.upload.as_ref();
            let more = upload.is_some_and(|u| u.sealed) && self.cut_next < target;
            if !more || cut_bytes >= MAX_PIECE_FRAME_BYTES {
                return Ok(());
            }
        }
    }

    /// One piece of `upload`'s segment: its header and link block if not
    /// sent, frames up to `target` (or the piece limit), its trailer once
    /// sealed. Leaves the segment in `self.upload`.
    fn cut_piece(&mut self, mut u: Upload, target: u64) -> Result<Option<Cut>, ClusterError> {
        let name = segment::file_name(u.base);
        let path = self.dir.join(&name);
        let read = |file: &File, at: u64, len: u64| -> Result<Vec<u8>, ClusterError> {
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, at)
                .map_err(|source| ClusterError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })?;
            Ok(buf)
        };
        let limit = data_end_limit(u.segment_bytes);
        // In file order: header, frames, trailer, link block.
        let mut ranges = Vec::new();
        let mut link = None;
        if !u.header_sent {
            ranges.push(PieceRange {
                offset: 0,
                bytes: read(&u.file, 0, HEADER_BYTES)?,
            });
            let at = limit + LINK_BLOCK_AT as u64;
            let block = read(&u.file, at, MAX_LINK_BLOCK_BYTES as u64)?;
            let (_, len) = segment::decode_link_block(&block, &name, at)?;
            link = Some(PieceRange {
                offset: at,
                bytes: block[..len].to_vec(),
            });
        }
        let first = self.cut_next;
        let start = u.end;
        let mut frames = Vec::new();
        let mut seq = first;
        let mut head = self.cut_hash;
        let mut data_ended = false;
        while seq < target && (frames.len() as u64) < MAX_PIECE_FRAME_BYTES {
            let at = start + frames.len() as u64;
            let len = READ_BYTES.min(limit - at);
            if len < frame::FRAME_HEADER_BYTES as u64 {
                data_ended = true;
                break;
            }
            let chunk = read(&u.file, at, len)?;
            let mut used = 0;
            while seq < target && used + frame::FRAME_HEADER_BYTES <= chunk.len() {
                match frame::decode(&chunk[used..]) {
                    Ok(Some(f)) => {
                        let expected = head.next(seq, f.record);
                        if f.seq != seq || f.hash != expected {
                            return Err(crate::Error::Corrupted {
                                file: name.clone(),
                                offset: at + used as u64,
                                reason: format!("the frame is not seq {seq} with hash {expected}"),
                            }
                            .into());
                        }
                        self.leaves.push(f.hash.0);
                        head = f.hash;
                        seq += 1;
                        used += f.padded_len();
                    }
                    Ok(None) => {
                        data_ended = true;
                        break;
                    }
                    Err(FrameError::Truncated { .. }) if used > 0 => break,
                    Err(e) => {
                        return Err(crate::Error::Corrupted {
                            file: name.clone(),
                            offset: at + used as u64,
                            reason: e.to_string(),
                        }
                        .into())
                    }
                }
            }
            frames.extend_from_slice(&chunk[..used]);
            if data_ended || used == 0 {
                data_ended = true;
                break;
            }
        }
        if !frames.is_empty() {
            ranges.push(PieceRange {
                offset: start,
                bytes: frames.clone(),
            });
        }
        u.end = start + frames.len() as u64;
        if seq < target || data_ended {
            // The frames ran out before the records visible: the segment
            // was sealed (its trailer is written before the next segment
            // takes records).
            let raw = read(&u.file, limit, TRAILER_BYTES as u64)?;
            let mut t = [0; TRAILER_BYTES];
            t.copy_from_slice(&raw);
            match SegmentTrailer::decode(&t, &name, limit)? {
                Some(trailer) if trailer.data_end == u.end && trailer.last_seq + 1 == seq => {
                    ranges.push(PieceRange {
                        offset: limit,
                        bytes: raw,
                    });
                    u.sealed = true;
                }
                Some(_) => {
                    return Err(crate::Error::Corrupted {
                        file: name,
                        offset: limit,
                        reason: "the trailer does not match the frames".into(),
                    }
                    .into())
                }
                None if seq < target => {
                    return Err(crate::Error::Corrupted {
                        file: name,
                        offset: u.end,
                        reason: format!(
                        "records up to {target} are visible, the segment's frames end at seq {seq}"
                    ),
                    }
                    .into())
                }
                None => {}
            }
        }
        ranges.extend(link);
        u.header_sent = true;
        let piece = (!ranges.is_empty()).then(|| {
            let piece = Piece {
                base_seq: u.base,
                epoch: self.lease.epoch(),
                first_seq: first,
                next_seq: seq,
                segment_bytes: u.segment_bytes,
                ranges,
            };
            let bytes = piece.encode();
            Cut {
                piece,
                bytes,
                last_hash: head,
                end: (u.base, u.end),
            }
        });
        self.cut_next = seq;
        self.cut_hash = head;
        self.upload = Some(u);
        Ok(piece)
    }
}

fn lease_ttl_ms(lease: &Lease) -> u64 {
    let r = lease.record();
    r.expires_at_ms.saturating_sub(r.renewed_at_ms).max(3)
}

/// Opens segment `base` of `dir` for uploading from `end`.
fn open_upload(
    dir: &std::path::Path,
    base: u64,
    end: u64,
    header_sent: bool,
) -> Result<Upload, ClusterError> {
    let name = segment::file_name(base);
    let path = dir.join(&name);
    let file = File::open(&path).map_err(|source| ClusterError::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    let mut raw = [0; HEADER_BYTES as usize];
    file.read_exact_at(&mut raw, 0)
        .map_err(|source| ClusterError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
    let header = segment::SegmentHeader::decode(&raw, &name)?;
    Ok(Upload {
        base,
        file,
        segment_bytes: header.segment_bytes,
        end,
        header_sent,
        sealed: false,
    })
}

/// The subtrees a consistency proof from the published tree needs: those
/// of the old tree are its frontier's, the rest are over the new leaves.
struct RoundTree<'a> {
    old: &'a Frontier,
    leaves: &'a [Hash],
}

impl SubtreeSource for RoundTree<'_> {
    type Error = ();

    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, ()> {
        let width = 1u64.checked_shl(u32::from(level)).ok_or(())?;
        let lo = index.checked_mul(width).ok_or(())?;
        let m = self.old.size();
        if lo >= m {
            let from = usize::try_from(lo - m).map_err(|_| ())?;
            let to = from + usize::try_from(width).map_err(|_| ())?;
            return self.leaves.get(from..to).map(perfect_root).ok_or(());
        }
        let mut offset = 0;
        let mut hashes = self.old.hashes().iter();
        for bit in (0..64).rev() {
            let size = 1u64 << bit;
            if m & size == 0 {
                continue;
            }
            let hash = hashes.next().ok_or(())?;
            if offset == lo && size == width {
                return Ok(*hash);
            }
            offset += size;
        }
        Err(())
    }
}

/// The root of a perfect tree over chain hashes (a power of two of them).
fn perfect_root(leaves: &[Hash]) -> Hash {
    if leaves.len() == 1 {
        return leaf_hash(&leaves[0]);
    }
    let half = leaves.len() / 2;
    node_hash(
        &perfect_root(&leaves[..half]),
        &perfect_root(&leaves[half..]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::proof::{tree_root, MemoryTree};

    /// The proof from the old frontier and the new leaves is the one the
    /// whole tree gives, for every pair of sizes up to 40.
    #[test]
    fn round_proofs_equal_whole_tree_proofs() {
        let hashes: Vec<Hash> = (0..40u8).map(|i| [i; 32]).collect();
        let mut whole = MemoryTree::new(&hashes);
        for m in 1..40 {
            let mut old = Frontier::new();
            for h in &hashes[..m] {
                old.push(h);
            }
            for n in m + 1..=40 {
                let mut round = RoundTree {
                    old: &old,
                    leaves: &hashes[m..n],
                };
                assert_eq!(
                    consistency_proof(&mut round, m as u64, n as u64).unwrap(),
                    consistency_proof(&mut whole, m as u64, n as u64).unwrap(),
                    "{m} -> {n}"
                );
            }
            assert_eq!(old.root(), tree_root(&mut whole, m as u64).unwrap());
        }
    }
}
