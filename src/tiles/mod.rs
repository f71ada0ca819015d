//! Merkle tree tiles beside the segments (the C2SP `tlog-tiles` layout), and
//! inclusion and consistency proofs generated from them.
//!
//! The tree is RFC 6962's over the records' chain hashes (see [`crate::hash::merkle`]).
//! Its interior is stored in *tiles*: tile `(L, N)` holds the hashes at tree
//! level `8L`, positions `256N ..= 256N + 255` (level 0: leaf hashes). A tile
//! whose positions are not all in the tree yet is *partial* and is stored
//! under its width (`.p/W`). Tiles live under `DIR/tile/`; level-0 tiles are
//! packed 256 to a file (`tile/leaves/P`), since a file per 256 records made
//! file creation the largest cost of appending. The writer collects the
//! tiles' hashes as it appends (`SegmentTree`), and a background thread
//! writes them when the segment is sealed, so appends never wait for them
//! and nothing is read or hashed twice. `docs/FORMAT.md` ("Tiles") has the
//! layout.
//!
//! Tiles are derived data, like the indexes: a missing tile is rebuilt from
//! the segments' stored chain hashes (level 0) or from the tiles below it,
//! and nothing read from a tile is trusted. Every proof is checked against a
//! trusted root before it is returned: the root of the current tree, computed
//! as [`Log::tree_head`] does (the active segment's link block and records),
//! or a checkpoint's signed root. When the check fails, the tiles the proof
//! used are rebuilt (first from the tiles below, then from the segments) and
//! the proof is made again; a proof that still fails is an error, never an
//! answer.
//!
//! Proof generation implements [`SubtreeSource`] over four sources, cheapest
//! first: the frontier of the active segment's link block (every perfect
//! subtree left of the active segment that a proof about newer records
//! needs), the frontier of the oldest retained segment's link block (what
//! retention leaves of the deleted records' tree), the tiles (for subtrees
//! inside the sealed segments), and the active segment's records, hashed in
//! memory (for subtrees after the last sealed segment). A subtree that
//! straddles the active segment's start is the node hash of its two halves.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::segment::{self, Scanner, SegmentHeader, Step, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::Checkpoint;
use crate::hash::merkle::{leaf_hash, node_hash, Frontier, Hash};
use crate::hash::proof::{self, ProofError, SubtreeSource};
use crate::index;
use crate::log::{Log, Snapshot, TreeHead};
use crate::storage::{read_full_at, Storage, StorageFile};

/// Tree levels one tile spans: a full tile holds 2^8 hashes.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;
/// Bytes of a full tile: 256 hashes of 32 bytes.
pub const FULL_TILE_BYTES: usize = TILE_WIDTH * 32;
/// The tiles' directory, inside the log's directory.
pub const TILE_DIR: &str = "tile";
/// Tile levels used: level `L` holds tree level `8L`, and level 7 (tree
/// level 56) is the highest a tree of up to 2^64 leaves has.
pub const TILE_LEVELS: u8 = 8;
/// The directory of the leaf packs, inside [`TILE_DIR`].
pub const LEAF_PACK_DIR: &str = "leaves";
/// Level-0 tiles per leaf pack.
pub const PACK_TILES: u64 = 256;
/// Tiles a prover keeps in memory (with their inner levels, 16 KiB each).
const CACHE_TILES: usize = 1024;
/// Seqs read from the segments per step of a deep rebuild.
const REBUILD_CHUNK: u64 = 1 << 16;

/// `N` written in groups of three digits, all but the last prefixed with `x`
/// (`1234067` is `x001/x234/067`), as tile paths spell tile indexes.
fn index_path(index: u64) -> String {
    let mut n = index;
    let mut digits = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        digits = format!("x{:03}/{digits}", n % 1000);
    }
    digits
}

/// The path of a tile of level 1 or more, relative to the log's directory:
/// `tile/<L>/<N>` for a full tile and `tile/<L>/<N>.p/<W>` for a partial one
/// of `W` hashes, with `N` written in groups of three digits, all but the
/// last prefixed with `x` (`1234067` is `x001/x234/067`). Level-0 tiles are
/// stored packed, 256 to a file ([`leaf_pack_path`]); for them this is only
/// the C2SP name, which messages use.
pub fn tile_path(level: u8, index: u64, width: usize) -> String {
    let digits = index_path(index);
    if width < TILE_WIDTH {
        format!("{TILE_DIR}/{level}/{digits}.p/{width}")
    } else {
        format!("{TILE_DIR}/{level}/{digits}")
    }
}

/// The path of leaf pack `pack`, relative to the log's directory:
/// `tile/leaves/<P>`, which holds level-0 tiles `256P ..= 256P + 255` one
/// after the other (tile `(0, N)` at byte `8192 × (N mod 256)`), as far as
/// they are known.
pub fn leaf_pack_path(pack: u64) -> String {
    format!("{TILE_DIR}/{LEAF_PACK_DIR}/{}", index_path(pack))
}

/// Parses a tile path as written by [`tile_path`] (and only that spelling):
/// the level, index and width.
pub fn parse_tile_path(path: &str) -> Option<(u8, u64, usize)> {
    let rest = path.strip_prefix(TILE_DIR)?.strip_prefix('/')?;
    let (level, rest) = rest.split_once('/')?;
    let level: u8 = level.parse().ok().filter(|&l| l < TILE_LEVELS)?;
    let (digits, width) = match rest.split_once(".p/") {
        Some((digits, width)) => (digits, width.parse::<usize>().ok()?),
        None => (rest, TILE_WIDTH),
    };
    let index = parse_index_path(digits)?;
    ((1..=TILE_WIDTH).contains(&width) && tile_path(level, index, width) == path)
        .then_some((level, index, width))
}

/// Parses a leaf pack path as written by [`leaf_pack_path`]: the pack's number.
pub fn parse_leaf_pack_path(path: &str) -> Option<u64> {
    let digits = path
        .strip_prefix(TILE_DIR)?
        .strip_prefix('/')?
        .strip_prefix(LEAF_PACK_DIR)?
        .strip_prefix('/')?;
    let pack = parse_index_path(digits)?;
    (leaf_pack_path(pack) == path).then_some(pack)
}

/// The number [`index_path`] spells, or `None`.
fn parse_index_path(digits: &str) -> Option<u64> {
    let mut index: u64 = 0;
    for group in digits.split('/') {
        let group = group.strip_prefix('x').unwrap_or(group);
        if group.len() != 3 || !group.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index
            .checked_mul(1000)?
            .checked_add(group.parse::<u64>().ok()?)?;
    }
    Some(index)
}

/// The root of a perfect subtree over `hashes` (a power of two of them).
fn perfect_root(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut row: Vec<Hash> = hashes.to_vec();
    let mut len = row.len();
    while len > 1 {
        for i in 0..len / 2 {
            row[i] = node_hash(&row[2 * i], &row[2 * i + 1]);
        }
        len /= 2;
    }
    row[0]
}

/// The first leaf after the span of tile `(level, index)`, capped at
/// `u64::MAX`.
fn span_end(level: u8, index: u64) -> u64 {
    let end = (u128::from(index) + 1) << (TILE_HEIGHT * (u32::from(level) + 1));
    u64::try_from(end).unwrap_or(u64::MAX)
}

/// The first leaf of tile `(level, index)`, capped at `u64::MAX`.
fn span_start(level: u8, index: u64) -> u64 {
    let start = u128::from(index) << (TILE_HEIGHT * (u32::from(level) + 1));
    u64::try_from(start).unwrap_or(u64::MAX)
}

/// Hashes the partial tile at level `level` holds in a tree of `size` leaves.
fn partial_width(size: u64, level: u8) -> usize {
    ((size >> (TILE_HEIGHT * u32::from(level))) & (TILE_WIDTH as u64 - 1)) as usize
}

/// The perfect subtrees of a frontier by (tree level, index).
fn frontier_map(frontier: &Frontier) -> HashMap<(u8, u64), Hash> {
    let size = frontier.size();
    let mut hashes = frontier.hashes().iter();
    let mut map = HashMap::new();
    for level in (0..64u8).rev() {
        if (size >> level) & 1 == 1 {
            if let Some(h) = hashes.next() {
                map.insert((level, (size >> level) - 1), *h);
            }
        }
    }
    map
}

/// Whether the first `prefix.len()` hashes of tile `(level, size >> 8(level+1))`
/// agree with the frontier of a tree of `size` leaves: every hash in them is
/// under exactly one of the frontier's subtrees.
fn prefix_matches(
    level: u8,
    size: u64,
    prefix: &[Hash],
    frontier: &HashMap<(u8, u64), Hash>,
) -> bool {
    let mut at = 0;
    for bit in (0..TILE_HEIGHT).rev() {
        if prefix.len() & (1 << bit) == 0 {
            continue;
        }
        let Some(part) = prefix.get(at..at + (1 << bit)) else {
            return false;
        };
        let tree_level = (TILE_HEIGHT * u32::from(level) + bit) as u8;
        let index = (size >> tree_level) - 1;
        if frontier.get(&(tree_level, index)) != Some(&perfect_root(part)) {
            return false;
        }
        at += 1 << bit;
    }
    at == prefix.len()
}

/// A tile's hashes and the levels inside it: `levels[k][j]` is the root of
/// hashes `j << k ..= ((j + 1) << k) - 1`, when all of them are there.
#[derive(Debug)]
struct TileTree {
    levels: Vec<Vec<Hash>>,
}

impl TileTree {
    fn new(hashes: Vec<Hash>) -> Self {
        let mut levels = vec![hashes];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let row: Vec<Hash> = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(row);
        }
        TileTree { levels }
    }

    fn width(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    fn subtree(&self, level: u32, index: usize) -> Option<Hash> {
        self.levels.get(level as usize)?.get(index).copied()
    }

    /// The root of a full tile.
    fn root(&self) -> Option<Hash> {
        (self.width() == TILE_WIDTH)
            .then(|| self.subtree(TILE_HEIGHT, 0))
            .flatten()
    }
}

/// Why a tree hash could not be had (the [`SubtreeSource`] error of a [`Prover`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// The records it covers were deleted by retention and no stored tile or
    /// link block holds it.
    #[error("{0}")]
    Unavailable(String),
    /// Reading the log failed.
    #[error(transparent)]
    Log(Error),
}

impl From<Error> for TileError {
    fn from(e: Error) -> Self {
        TileError::Log(e)
    }
}

/// Tile files in a log directory.
struct TileFiles {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

/// `count` hashes at byte `offset` of `file`, or `None` if they are not all there.
fn read_hashes(file: &dyn StorageFile, offset: u64, count: usize) -> Option<Vec<Hash>> {
    let mut bytes = vec![0; count * 32];
    if read_full_at(file, &mut bytes, offset).ok()? != bytes.len() {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0; 32];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

/// Distinguishes temporary tile files written at the same time.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TileFiles {
    fn path(&self, level: u8, index: u64, width: usize) -> PathBuf {
        self.dir.join(tile_path(level, index, width))
    }

    fn read_exact(&self, path: &Path, width: usize) -> Option<Vec<Hash>> {
        let file = self.storage.open(path, false).ok()?;
        if file.size().ok()? != (width * 32) as u64 {
            return None;
        }
        read_hashes(&*file, 0, width)
    }

    /// The widest stored version of tile `(level, index)` with at least
    /// `min_width` hashes: the full tile, or a partial one.
    fn read(&self, level: u8, index: u64, min_width: usize) -> Option<Vec<Hash>> {
        if level == 0 {
            return self.read_leaves(index, min_width);
        }
        if let Some(h) = self.read_exact(&self.path(level, index, TILE_WIDTH), TILE_WIDTH) {
            return Some(h);
        }
        if min_width >= TILE_WIDTH {
            return None;
        }
        let full = tile_path(level, index, TILE_WIDTH);
        let partials = self.dir.join(format!("{full}.p"));
        let mut widths: Vec<usize> = self
            .storage
            .list(&partials)
            .ok()?
            .iter()
            .filter_map(|name| {
                name.parse::<usize>()
                    .ok()
                    .filter(|w| w.to_string() == *name)
            })
            .filter(|&w| w >= min_width.max(1) && w < TILE_WIDTH)
            .collect();
        widths.sort_unstable_by(|a, b| b.cmp(a));
        widths
            .into_iter()
            .find_map(|w| self.read_exact(&partials.join(w.to_string()), w))
    }

    /// Level-0 tile `index` from its leaf pack: as many of its hashes as
    /// the pack holds (at least `min_width`).
    fn read_leaves(&self, index: u64, min_width: usize) -> Option<Vec<Hash>> {
        let path = self.dir.join(leaf_pack_path(index / PACK_TILES));
        let file = self.storage.open(&path, false).ok()?;
        let start = (index % PACK_TILES) * FULL_TILE_BYTES as u64;
        let stored = file.size().ok()?.saturating_sub(start) / 32;
        let width = stored.min(TILE_WIDTH as u64) as usize;
        if width < min_width.max(1) {
            return None;
        }
        read_hashes(&*file, start, width)
    }

    /// Writes a tile: into its leaf pack for level 0, else as its own file.
    /// Not synced: a lost or torn tile is rebuilt.
    fn write(&self, level: u8, index: u64, hashes: &[Hash]) -> Result<()> {
        if level == 0 {
            self.write_leaves(index * TILE_WIDTH as u64, hashes)
        } else {
            self.write_file(level, index, hashes)
        }
    }

    /// Writes the leaf hashes of positions `first ..` into their leaf packs,
    /// in place (one write per pack). A pack is written without a temporary
    /// file: a reader that sees part of a write gets hashes that fail the
    /// root check, and rebuilds them.
    fn write_leaves(&self, first: u64, hashes: &[Hash]) -> Result<()> {
        const PACK_LEAVES: u64 = PACK_TILES * TILE_WIDTH as u64;
        let mut at = 0;
        while at < hashes.len() {
            let pos = first + at as u64;
            let in_pack = (PACK_LEAVES - pos % PACK_LEAVES) as usize;
            let run = &hashes[at..hashes.len().min(at + in_pack)];
            let path = self.dir.join(leaf_pack_path(pos / PACK_LEAVES));
            let io = |e| Error::io(&path, e);
            let file = match self.storage.open(&path, true) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(parent) = path.parent() {
                        self.storage.create_dir_all(parent).map_err(io)?;
                    }
                    match self.storage.create_new(&path) {
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            self.storage.open(&path, true).map_err(io)?
                        }
                        other => other.map_err(io)?,
                    }
                }
                Err(e) => return Err(io(e)),
            };
            let bytes: Vec<u8> = run.iter().flatten().copied().collect();
            file.write_all_at(&bytes, (pos % PACK_LEAVES) * 32)
                .map_err(io)?;
            at += run.len();
        }
        Ok(())
    }

    /// Writes a tile file under a temporary name and renames it into place.
    fn write_file(&self, level: u8, index: u64, hashes: &[Hash]) -> Result<()> {
        let path = self.path(level, index, hashes.len());
        let io = |e| Error::io(&path, e);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        self.storage.create_dir_all(parent).map_err(io)?;
        let temp = parent.join(format!(
            "{}.tmp{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        let written = self
            .storage
            .create_new(&temp)
            .and_then(|f| f.write_all_at(&bytes, 0))
            .and_then(|()| self.storage.rename(&temp, &path));
        if let Err(e) = written {
            let _ = self.storage.remove(&temp);
            return Err(io(e));
        }
        Ok(())
    }
}

/// Builds tiles from leaf hashes in order, from any starting size.
///
/// Each level keeps the hashes of its current, incomplete tile. A level
/// whose first hashes are not known (the builder started in the middle of
/// its tile and was not given them) completes that tile without emitting it,
/// and the tile above learns that one of its hashes is unknown.
struct TileBuilder {
    size: u64,
    levels: Vec<Vec<Hash>>,
    known: Vec<bool>,
    max_level: u8,
}

impl TileBuilder {
    /// A builder for a tree that has `size` leaves so far, emitting tiles up
    /// to `max_level`. The tiles under way are unknown (and not emitted).
    fn new(size: u64, max_level: u8) -> Self {
        // An unknown prefix is held as zeros, so that tiles complete where they should.
        let levels: Vec<Vec<Hash>> = (0..=max_level)
            .map(|l| vec![[0; 32]; partial_width(size, l)])
            .collect();
        let known = (0..=max_level)
            .map(|l| partial_width(size, l) == 0)
            .collect();
        TileBuilder {
            size,
            levels,
            known,
            max_level,
        }
    }

    /// Adds the next leaf; `emit(level, index, hashes)` gets each tile it completes.
    fn push(&mut self, leaf: Hash, emit: &mut dyn FnMut(u8, u64, &[Hash])) {
        let mut hash = leaf;
        let mut pos = self.size;
        let mut level = 0u8;
        loop {
            let l = usize::from(level);
            self.levels[l].push(hash);
            if self.levels[l].len() < TILE_WIDTH {
                break;
            }
            let known = self.known[l];
            let index = pos >> TILE_HEIGHT;
            if known {
                emit(level, index, &self.levels[l]);
            }
            let root = if known {
                perfect_root(&self.levels[l])
            } else {
                [0; 32]
            };
            self.levels[l].clear();
            self.known[l] = true;
            if level == self.max_level {
                break;
            }
            self.known[l + 1] &= known;
            hash = root;
            pos >>= TILE_HEIGHT;
            level += 1;
        }
        self.size += 1;
    }

    /// The partial tiles of the tree so far that are known: `(level, index, hashes)`.
    fn partial_tiles(&self) -> Vec<(u8, u64, &[Hash])> {
        (0..=self.max_level)
            .filter(|&l| self.known[usize::from(l)] && !self.levels[usize::from(l)].is_empty())
            .map(|l| {
                let index = self.size >> (TILE_HEIGHT * (u32::from(l) + 1));
                (l, index, self.levels[usize::from(l)].as_slice())
            })
            .collect()
    }
}

/// A sealed segment opened for reading stored hashes.
struct OpenSegment {
    base: u64,
    file: Arc<dyn StorageFile>,
    name: String,
    header: SegmentHeader,
    trailer: segment::SegmentTrailer,
    /// Block offsets and first seqs, from the segment's index.
    blocks: Option<Arc<Blocks>>,
}

/// A segment's block offsets and each block's first seq.
type Blocks = (Vec<u64>, Vec<u64>);

/// Segments a reader keeps open (with their block tables).
const OPEN_SEGMENTS: usize = 64;

/// Reads the stored chain hashes of records in sealed segments.
struct SegmentHashes {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Every segment of the log, ascending.
    bases: Vec<u64>,
    block_bytes: u32,
    write_index: bool,
    open: HashMap<u64, OpenSegment>,
    /// The segment [`SegmentHashes::segment_for`] returned last.
    current: u64,
    bytes_read: u64,
}

impl SegmentHashes {
    fn corrupt(seg: &OpenSegment, offset: u64, reason: String) -> Error {
        Error::Corrupted {
            file: seg.name.clone(),
            offset,
            reason,
        }
    }

    /// Opens the sealed segment holding `seq`.
    fn segment_for(&mut self, seq: u64) -> std::result::Result<&mut OpenSegment, TileError> {
        let at = self.bases.partition_point(|&b| b <= seq);
        let Some(&base) = at.checked_sub(1).and_then(|i| self.bases.get(i)) else {
            return Err(TileError::Unavailable(format!(
                "record {seq} was deleted by retention"
            )));
        };
        if !self.open.contains_key(&base) {
            let name = segment::file_name(base);
            let path = self.dir.join(&name);
            let file = self
                .storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let header = segment::read_header(&*file, &name)?;
            let trailer =
                segment::read_trailer(&*file, &name, header.segment_bytes)?.ok_or_else(|| {
                    Error::Corrupted {
                        file: name.clone(),
                        offset: segment::data_end_limit(header.segment_bytes),
                        reason: "a segment before the newest has no trailer".into(),
                    }
                })?;
            if self.open.len() >= OPEN_SEGMENTS {
                self.open.clear();
            }
            self.open.insert(
                base,
                OpenSegment {
                    base,
                    file,
                    name,
                    header,
                    trailer,
                    blocks: None,
                },
            );
        }
        self.current = base;
        self.open
            .get_mut(&base)
            .ok_or_else(|| TileError::Unavailable("no segment".into()))
    }

    /// The block offsets and first seqs of the open segment, from its index
    /// (rebuilt when missing or damaged).
    fn blocks(&mut self) -> Result<Arc<Blocks>> {
        let (storage, dir) = (&*self.storage, self.dir.as_path());
        let (block_bytes, write) = (self.block_bytes, self.write_index);
        let Some(seg) = self.open.get_mut(&self.current) else {
            return Ok(Arc::default());
        };
        if let Some(blocks) = &seg.blocks {
            return Ok(blocks.clone());
        }
        let load = |rebuild: bool| -> Result<Blocks> {
            let mut reader = if rebuild {
                index::rebuild(
                    storage,
                    dir,
                    seg.file.clone(),
                    seg.base,
                    &seg.trailer,
                    block_bytes,
                    write,
                )?
            } else {
                index::load_or_rebuild(
                    storage,
                    dir,
                    seg.file.clone(),
                    seg.base,
                    &seg.trailer,
                    block_bytes,
                    write,
                )?
            };
            Ok((reader.offsets()?, reader.first_seqs()?))
        };
        let blocks = Arc::new(match load(false) {
            Err(e) if e.is_corruption() => load(true)?,
            other => other?,
        });
        seg.blocks = Some(blocks.clone());
        Ok(blocks)
    }

    /// Calls `f` with the stored hash of every seq in `lo..hi`, in order.
    fn for_each(
        &mut self,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(u64, &ChainHash),
    ) -> std::result::Result<(), TileError> {
        let mut seq = lo;
        let mut trust_index = true;
        while seq < hi {
            let (base, last_seq, data_end) = {
                let seg = self.segment_for(seq)?;
                (seg.base, seg.trailer.last_seq, seg.trailer.data_end)
            };
            if seq > last_seq {
                let seg = self.segment_for(seq)?;
                return Err(Self::corrupt(
                    seg,
                    data_end,
                    format!(
                        "record {seq} is missing: the segment ends at seq {last_seq} and no segment starts after it"
                    ),
                )
                .into());
            }
            // Seek with the index, and read only up to the block that ends the range.
            let (start, limit) = if trust_index {
                let blocks = self.blocks()?;
                let (offsets, firsts) = (&blocks.0, &blocks.1);
                let first_block = firsts.partition_point(|&s| s <= seq).saturating_sub(1);
                let end_block = firsts.partition_point(|&s| s < hi.min(last_seq + 1));
                (
                    offsets.get(first_block).copied().unwrap_or(HEADER_BYTES),
                    offsets.get(end_block).copied().unwrap_or(data_end),
                )
            } else {
                (HEADER_BYTES, data_end)
            };
            let seg = self.segment_for(seq)?;
            let mut scan = Scanner::new(seg.file.clone(), &seg.name, start, limit);
            let stop = hi.min(last_seq + 1);
            let mut failure = None;
            while seq < stop {
                match scan.next_step()? {
                    Step::Frame { offset, frame } => {
                        if frame.seq < seq {
                            continue;
                        }
                        if frame.seq != seq {
                            failure =
                                Some((offset, format!("expected seq {seq}, found {}", frame.seq)));
                            break;
                        }
                        f(seq, &frame.hash);
                        seq += 1;
                    }
                    Step::End { offset } => {
                        failure = Some((offset, format!("record {seq} not found")));
                        break;
                    }
                    Step::Bad { offset, error } => {
                        failure = Some((offset, error.to_string()));
                        break;
                    }
                }
            }
            self.bytes_read += scan.bytes_read();
            if let Some((offset, reason)) = failure {
                if trust_index {
                    // A damaged index may point anywhere: scan from the start.
                    trust_index = false;
                    continue;
                }
                let seg = self.segment_for(base)?;
                return Err(Self::corrupt(seg, offset, reason).into());
            }
            trust_index = true;
        }
        Ok(())
    }

    /// The link block's frontier of the sealed segment holding record `seq`:
    /// the tree of the records before that segment.
    fn start_frontier(&mut self, seq: u64) -> std::result::Result<Frontier, TileError> {
        let seg = self.segment_for(seq)?;
        Ok(segment::read_start_frontier(
            &*seg.file,
            &seg.name,
            &seg.header,
        )?)
    }

    fn hash_at(&mut self, seq: u64) -> std::result::Result<ChainHash, TileError> {
        let mut found = ChainHash::default();
        self.for_each(seq, seq + 1, &mut |_, h| found = *h)?;
        Ok(found)
    }

    /// The hash record `seq` chains from.
    fn prev_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, TileError> {
        let seg = self.segment_for(seq)?;
        if seg.base == seq {
            return Ok(seg.header.prev_hash);
        }
        self.hash_at(seq - 1)
    }
}

/// Tiles of the sealed part of the tree, read from disk or rebuilt.
struct TileStore {
    files: TileFiles,
    segments: SegmentHashes,
    /// Leaves below this are in sealed segments; tiles are only used for them.
    sealed_end: u64,
    /// The oldest retained record.
    first_seq: u64,
    write_tiles: bool,
    cache: HashMap<(u8, u64), Arc<TileTree>>,
    /// Rebuilt in this session (from the tiles below, or for level 0 from the segments).
    fresh: HashSet<(u8, u64)>,
    /// Rebuilt from the segments in this session.
    solid: HashSet<(u8, u64)>,
    /// Not to be used: damaged, and not rebuildable (retention deleted its records).
    blocked: HashSet<(u8, u64)>,
    /// Tiles used since the last [`TileStore::used`] reset.
    used: BTreeSet<(u8, u64)>,
    stats: ProofStats,
}

impl TileStore {
    /// A store over the sealed segments of `dir` below `sealed_end`, that
    /// writes the tiles it rebuilds.
    fn for_sealed(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        sealed_end: u64,
        block_bytes: u32,
    ) -> Result<TileStore> {
        let mut bases: Vec<u64> = storage
            .list(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .iter()
            .filter_map(|n| segment::parse_file_name(n))
            .collect();
        bases.sort_unstable();
        Ok(TileStore::new(
            storage,
            dir,
            bases,
            block_bytes,
            true,
            sealed_end,
        ))
    }

    /// A store over the segments `bases` (ascending) of `dir`, whose sealed
    /// part ends at `sealed_end`; `write_index` lets it write the index
    /// files it rebuilds. Tiles are derived: even a read-only open writes
    /// back the ones it had to rebuild, so later readers need not.
    fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        bases: Vec<u64>,
        block_bytes: u32,
        write_index: bool,
        sealed_end: u64,
    ) -> TileStore {
        TileStore {
            files: TileFiles {
                storage: storage.clone(),
                dir: dir.clone(),
            },
            first_seq: bases.first().copied().unwrap_or(sealed_end),
            segments: SegmentHashes {
                storage,
                dir,
                bases,
                block_bytes,
                write_index,
                open: HashMap::new(),
                current: 0,
                bytes_read: 0,
            },
            sealed_end,
            write_tiles: true,
            cache: HashMap::new(),
            fresh: HashSet::new(),
            solid: HashSet::new(),
            blocked: HashSet::new(),
            used: BTreeSet::new(),
            stats: ProofStats::default(),
        }
    }

    /// The most hashes tile `(level, index)` has below `sealed_end`.
    fn max_width(&self, level: u8, index: u64) -> usize {
        let available = self.sealed_end >> (TILE_HEIGHT * u32::from(level));
        let start = index.saturating_mul(TILE_WIDTH as u64);
        available.saturating_sub(start).min(TILE_WIDTH as u64) as usize
    }

    fn remember(&mut self, key: (u8, u64), tile: Arc<TileTree>) {
        if self.cache.len() >= CACHE_TILES {
            self.cache.clear();
        }
        self.cache.insert(key, tile);
    }

    /// Tile `(level, index)` with at least `min_width` hashes.
    fn tile(
        &mut self,
        level: u8,
        index: u64,
        min_width: usize,
    ) -> std::result::Result<Arc<TileTree>, TileError> {
        let key = (level, index);
        if self.blocked.contains(&key) {
            return Err(TileError::Unavailable(format!(
                "tile {} is damaged and its records were deleted by retention",
                tile_path(level, index, TILE_WIDTH)
            )));
        }
        let max = self.max_width(level, index);
        if min_width == 0 || min_width > max {
            return Err(TileError::Unavailable(format!(
                "tile {} has no {min_width} hashes in the sealed segments",
                tile_path(level, index, TILE_WIDTH)
            )));
        }
        self.used.insert(key);
        if let Some(t) = self.cache.get(&key).filter(|t| t.width() >= min_width) {
            return Ok(t.clone());
        }
        if let Some(mut hashes) = self.files.read(level, index, min_width) {
            self.stats.tiles_read += 1;
            self.stats.tile_bytes_read += hashes.len() as u64 * 32;
            // A tile newer than this view of the log: its prefix is ours.
            hashes.truncate(max);
            let tile = Arc::new(TileTree::new(hashes));
            self.remember(key, tile.clone());
            return Ok(tile);
        }
        self.rebuild_shallow(level, index)
    }

    fn write(&mut self, level: u8, index: u64, hashes: &[Hash]) {
        if self.write_tiles {
            // A tile that cannot be written is rebuilt next time.
            let _ = self.files.write(level, index, hashes);
        }
    }

    /// Rebuilds tile `(level, index)` as far as the sealed segments go: level
    /// 0 from the segments' stored hashes, higher levels from the roots of
    /// the tiles below.
    fn rebuild_shallow(
        &mut self,
        level: u8,
        index: u64,
    ) -> std::result::Result<Arc<TileTree>, TileError> {
        let key = (level, index);
        let width = self.max_width(level, index);
        let mut hashes = Vec::with_capacity(width);
        if level == 0 {
            let start = index * TILE_WIDTH as u64;
            if start < self.first_seq {
                return Err(TileError::Unavailable(format!(
                    "tile {} covers records deleted by retention",
                    tile_path(level, index, width)
                )));
            }
            let before = self.segments.bytes_read;
            self.segments
                .for_each(start, start + width as u64, &mut |_, h| {
                    hashes.push(leaf_hash(&h.0))
                })?;
            self.stats.segment_bytes_read += self.segments.bytes_read - before;
        } else {
            for q in 0..width as u64 {
                let child = self.tile(level - 1, index * TILE_WIDTH as u64 + q, TILE_WIDTH)?;
                let root = child
                    .root()
                    .ok_or_else(|| TileError::Unavailable("a full tile has no root".into()))?;
                hashes.push(root);
            }
        }
        self.write(level, index, &hashes);
        self.stats.tiles_rebuilt += 1;
        self.fresh.insert(key);
        if level == 0 {
            self.solid.insert(key);
        }
        self.used.insert(key);
        let tile = Arc::new(TileTree::new(hashes));
        self.remember(key, tile.clone());
        Ok(tile)
    }

    /// Rebuilds tile `(level, index)` and every tile under it from the
    /// segments' stored hashes, trusting no tile.
    fn rebuild_deep(&mut self, level: u8, index: u64) -> std::result::Result<(), TileError> {
        let lo = span_start(level, index);
        let hi = span_end(level, index).min(self.sealed_end);
        if lo < self.first_seq {
            return Err(TileError::Unavailable(format!(
                "tile {} covers records deleted by retention",
                tile_path(level, index, TILE_WIDTH)
            )));
        }
        let mut builder = TileBuilder::new(lo, level);
        let mut emitted: Vec<(u8, u64, Vec<Hash>)> = Vec::new();
        let mut seq = lo;
        while seq < hi {
            let end = (seq + REBUILD_CHUNK).min(hi);
            let before = self.segments.bytes_read;
            let mut leaves = Vec::with_capacity((end - seq) as usize);
            self.segments
                .for_each(seq, end, &mut |_, h| leaves.push(leaf_hash(&h.0)))?;
            self.stats.segment_bytes_read += self.segments.bytes_read - before;
            for leaf in leaves {
                builder.push(leaf, &mut |l, i, hashes| {
                    emitted.push((l, i, hashes.to_vec()))
                });
            }
            for (l, i, hashes) in emitted.drain(..) {
                self.store_rebuilt(l, i, hashes, level, index);
            }
            seq = end;
        }
        let partials: Vec<(u8, u64, Vec<Hash>)> = builder
            .partial_tiles()
            .into_iter()
            .map(|(l, i, h)| (l, i, h.to_vec()))
            .collect();
        for (l, i, hashes) in partials {
            self.store_rebuilt(l, i, hashes, level, index);
        }
        Ok(())
    }

    fn store_rebuilt(&mut self, l: u8, i: u64, hashes: Vec<Hash>, level: u8, index: u64) {
        self.write(l, i, &hashes);
        self.stats.tiles_rebuilt += 1;
        self.solid.insert((l, i));
        self.fresh.insert((l, i));
        if (l, i) == (level, index) || l > 0 {
            self.remember((l, i), Arc::new(TileTree::new(hashes)));
        } else {
            // Re-read from the file just written (or rebuilt again) when needed.
            self.cache.remove(&(l, i));
            self.fresh.remove(&(l, i));
            self.solid.remove(&(l, i));
        }
    }

    /// Rebuilds the suspects that were read from disk, lowest level first,
    /// each from the tiles below it.
    fn repair_shallow(&mut self, suspects: &[(u8, u64)]) -> Result<bool> {
        let mut repaired = false;
        let mut sorted = suspects.to_vec();
        sorted.sort_unstable();
        for (level, index) in sorted {
            if self.fresh.contains(&(level, index)) || self.blocked.contains(&(level, index)) {
                continue;
            }
            self.cache.remove(&(level, index));
            repaired = true;
            match self.rebuild_shallow(level, index) {
                Ok(_) => {}
                Err(TileError::Unavailable(_)) => {
                    self.blocked.insert((level, index));
                }
                Err(TileError::Log(e)) => return Err(e),
            }
        }
        Ok(repaired)
    }

    /// Rebuilds the suspects from the segments, highest level first (which
    /// rebuilds the tiles under each too).
    fn repair_deep(&mut self, suspects: &[(u8, u64)]) -> Result<bool> {
        let mut repaired = false;
        let mut sorted = suspects.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for (level, index) in sorted {
            if self.solid.contains(&(level, index)) || self.blocked.contains(&(level, index)) {
                continue;
            }
            repaired = true;
            match self.rebuild_deep(level, index) {
                Ok(()) => {
                    self.solid.insert((level, index));
                }
                Err(TileError::Unavailable(_)) => {
                    self.blocked.insert((level, index));
                    self.cache.remove(&(level, index));
                }
                Err(TileError::Log(e)) => return Err(e),
            }
        }
        Ok(repaired)
    }
}

/// What proof generation read and rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProofStats {
    /// Tile files read.
    pub tiles_read: u64,
    /// Bytes of tile files read.
    pub tile_bytes_read: u64,
    /// Tiles rebuilt (and written back) because they were missing or wrong.
    pub tiles_rebuilt: u64,
    /// Bytes of segments read to rebuild tiles or to find stored hashes.
    pub segment_bytes_read: u64,
}

/// A proof request that cannot be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] Error),
    /// The seq or size is not in the log, or the request is inconsistent.
    #[error("{0}")]
    OutOfRange(String),
    /// The proof needs hashes of records that retention deleted.
    #[error("{0}")]
    Unavailable(String),
    /// The log's tree does not match the root or checkpoint given: it was
    /// truncated, rewritten or forked, or it is another log.
    #[error("{0}")]
    Mismatch(String),
}

impl From<TileError> for ProveError {
    fn from(e: TileError) -> Self {
        match e {
            TileError::Unavailable(why) => ProveError::Unavailable(why),
            TileError::Log(e) => ProveError::Log(e),
        }
    }
}

impl From<ProofError<TileError>> for ProveError {
    fn from(e: ProofError<TileError>) -> Self {
        match e {
            ProofError::OutOfRange(why) => ProveError::OutOfRange(why.to_string()),
            ProofError::Source(e) => e.into(),
        }
    }
}

/// Hashes as lowercase hex in JSON.
mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::hash::merkle::Hash;

    /// 64 lowercase hex digits.
    pub fn encode(h: &Hash) -> String {
        crate::hash::chain::ChainHash(*h).to_hex()
    }

    /// A hash from 64 hex digits.
    pub fn decode(text: &str) -> Option<Hash> {
        text.parse::<crate::hash::chain::ChainHash>()
            .ok()
            .map(|h| h.0)
    }

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }

    pub mod list {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        use crate::hash::merkle::Hash;

        pub fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(hashes.len()))?;
            for h in hashes {
                seq.serialize_element(&super::encode(h))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
            let texts = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
            texts
                .iter()
                .map(|t| {
                    super::decode(t)
                        .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
                })
                .collect()
        }
    }
}

pub use hex_hashes::{decode as hash_from_hex, encode as hash_to_hex};

/// Proof that the record at `seq`, whose chain hash is `leaf`, is in the tree
/// of `tree_size` records with root `root` (RFC 6962 audit path, leaf first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// The record's seq: its leaf index.
    pub seq: u64,
    /// Records in the tree.
    pub tree_size: u64,
    /// The record's chain hash: the leaf's data.
    pub leaf: ChainHash,
    /// The tree's root.
    #[serde(with = "hex_hashes")]
    pub root: Hash,
    /// The audit path, from the leaf up.
    #[serde(with = "hex_hashes::list")]
    pub proof: Vec<Hash>,
}

impl InclusionProof {
    /// Whether the proof shows `leaf` at `seq` in the tree with `root`.
    pub fn verify(&self) -> bool {
        proof::verify_inclusion(
            &self.leaf.0,
            self.seq,
            self.tree_size,
            &self.proof,
            &self.root,
        )
    }
}

/// Proof that the tree of `new_size` records with root `new_root` extends the
/// tree of `old_size` records with root `old_root` (RFC 6962).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Records in the older tree.
    pub old_size: u64,
    /// Records in the newer tree.
    pub new_size: u64,
    /// The older tree's root.
    #[serde(with = "hex_hashes")]
    pub old_root: Hash,
    /// The newer tree's root.
    #[serde(with = "hex_hashes")]
    pub new_root: Hash,
    /// The proof's hashes.
    #[serde(with = "hex_hashes::list")]
    pub proof: Vec<Hash>,
}

impl ConsistencyProof {
    /// Whether the proof shows the new tree extends the old one.
    pub fn verify(&self) -> bool {
        proof::verify_consistency(
            self.old_size,
            self.new_size,
            &self.old_root,
            &self.new_root,
            &self.proof,
        )
    }
}

/// The active segment's records, hashed in memory: the part of the tree the
/// tiles do not cover yet.
struct ActiveTree {
    /// Seq of its first record (the active segment's base).
    start: u64,
    chain: Vec<ChainHash>,
    /// `levels[l][i - first(l)]`: the perfect subtree at level `l`, index `i`,
    /// for those inside `start..start + chain.len()`.
    levels: Vec<Vec<Hash>>,
}

impl ActiveTree {
    fn first_index(&self, level: u8) -> u64 {
        let size = 1u128 << level;
        ((u128::from(self.start) + size - 1) >> level) as u64
    }

    fn new(start: u64, chain: Vec<ChainHash>) -> Self {
        let mut tree = ActiveTree {
            start,
            levels: vec![chain.iter().map(|h| leaf_hash(&h.0)).collect()],
            chain,
        };
        let end = u128::from(start) + tree.chain.len() as u128;
        for level in 1..64u8 {
            let first = tree.first_index(level);
            let last = (end >> level) as u64; // exclusive
            if first >= last {
                break;
            }
            let below_first = tree.first_index(level - 1);
            let below = &tree.levels[usize::from(level - 1)];
            let row: Vec<Hash> = (first..last)
                .map(|i| {
                    let l = (2 * i - below_first) as usize;
                    node_hash(&below[l], &below[l + 1])
                })
                .collect();
            tree.levels.push(row);
        }
        tree
    }

    fn subtree(&self, level: u8, index: u64) -> Option<Hash> {
        let first = self.first_index(level);
        let row = self.levels.get(usize::from(level))?;
        row.get(usize::try_from(index.checked_sub(first)?).ok()?)
            .copied()
    }
}

/// A perfect subtree from the active segment's link block and records
/// alone (`None` if it needs anything else).
fn edge_subtree(
    frontier_sealed: &HashMap<(u8, u64), Hash>,
    active: &ActiveTree,
    sealed_end: u64,
    level: u8,
    index: u64,
) -> Option<Hash> {
    let lo = u128::from(index) << level;
    let hi = lo + (1u128 << level);
    if lo >= u128::from(sealed_end) {
        active.subtree(level, index)
    } else if hi <= u128::from(sealed_end) {
        frontier_sealed.get(&(level, index)).copied()
    } else {
        let left = edge_subtree(frontier_sealed, active, sealed_end, level - 1, 2 * index)?;
        let right = edge_subtree(
            frontier_sealed,
            active,
            sealed_end,
            level - 1,
            2 * index + 1,
        )?;
        Some(node_hash(&left, &right))
    }
}

/// Generates inclusion and consistency proofs for one view of a log, from
/// its tiles; see the module docs. Get one from [`Log::prover`] and keep it
/// for many proofs (a bundle): tiles read are cached.
pub struct Prover {
    log_id: crate::hash::chain::LogId,
    /// Records in this view of the log.
    size: u64,
    root: Hash,
    head: Option<ChainHash>,
    /// The active segment's base: tiles cover the records before it.
    sealed_end: u64,
    /// The active segment's `prev_hash`.
    active_prev: ChainHash,
    first_seq: u64,
    frontier_sealed: HashMap<(u8, u64), Hash>,
    frontier_first: HashMap<(u8, u64), Hash>,
    active: ActiveTree,
    store: TileStore,
    /// Roots checked against this log: `(size, root)`.
    checked_roots: HashSet<(u64, Hash)>,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("log_id", &self.log_id)
            .field("size", &self.size)
            .field("sealed_end", &self.sealed_end)
            .field("first_seq", &self.first_seq)
            .finish()
    }
}

impl Prover {
    fn new(snap: Snapshot, log_id: crate::hash::chain::LogId) -> Result<Self> {
        let (storage, dir) = (snap.storage.clone(), snap.dir.clone());
        let sealed_end = snap.active_base;
        let name = segment::file_name(sealed_end);
        let path = dir.join(&name);
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let header = segment::read_header(&*file, &name)?;
        let start_frontier = segment::read_start_frontier(&*file, &name, &header)?;
        // The active segment's records, as `Log::tree_head` reads them.
        let mut chain = Vec::new();
        let mut scan = Scanner::new(file.clone(), &name, HEADER_BYTES, snap.active_end);
        loop {
            match scan.next_step()? {
                Step::Frame { offset, frame } => {
                    let expected = sealed_end + chain.len() as u64;
                    if frame.seq != expected {
                        return Err(Error::Corrupted {
                            file: name,
                            offset,
                            reason: format!("frame has seq {}, expected {expected}", frame.seq),
                        });
                    }
                    chain.push(frame.hash);
                }
                Step::End { .. } => break,
                Step::Bad { offset, error } => {
                    return Err(Error::Corrupted {
                        file: name,
                        offset,
                        reason: error.to_string(),
                    })
                }
            }
        }
        let covered = sealed_end + chain.len() as u64;
        if covered != snap.next_seq {
            return Err(Error::Corrupted {
                file: name,
                offset: snap.active_end,
                reason: format!(
                    "the tree covers {covered} records, the log has {}",
                    snap.next_seq
                ),
            });
        }
        let frontier_sealed = frontier_map(&start_frontier);
        let active = ActiveTree::new(sealed_end, chain);
        // The current root from the link block and the active segment's
        // records alone, as `Log::tree_head` computes it: each subtree of the
        // tree's decomposition is one of the link block's, or in the active
        // segment, or the node hash of two such halves.
        let mut parts = Vec::new();
        for level in (0..64u8).rev() {
            if (snap.next_seq >> level) & 1 == 1 {
                let index = (snap.next_seq >> level) - 1;
                let part = edge_subtree(&frontier_sealed, &active, sealed_end, level, index)
                    .ok_or_else(|| Error::Corrupted {
                        file: name.clone(),
                        offset: 0,
                        reason: "the link block does not cover the tree".into(),
                    })?;
                parts.push(part);
            }
        }
        let root = match parts.split_last() {
            None => crate::hash::merkle::empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        };
        let first_seq = snap.segments.first().copied().unwrap_or(sealed_end);
        let frontier_first = if first_seq == sealed_end {
            frontier_map(&start_frontier)
        } else {
            let name = segment::file_name(first_seq);
            let path = dir.join(&name);
            let file = storage
                .open(&path, false)
                .map_err(|e| Error::io(&path, e))?;
            let header = segment::read_header(&*file, &name)?;
            frontier_map(&segment::read_start_frontier(&*file, &name, &header)?)
        };
        let head = active
            .chain
            .last()
            .copied()
            .or_else(|| (snap.next_seq > 0).then_some(header.prev_hash));
        let store = TileStore::new(
            storage,
            dir,
            snap.segments.clone(),
            snap.index_block_bytes,
            !snap.read_only,
            sealed_end,
        );
        Ok(Prover {
            log_id,
            size: snap.next_seq,
            root,
            head,
            sealed_end,
            active_prev: header.prev_hash,
            first_seq,
            frontier_sealed,
            frontier_first,
            active,
            store,
            checked_roots: HashSet::new(),
        })
    }

    /// The tree head of this view of the log (as [`Log::tree_head`]).
    pub fn tree_head(&self) -> TreeHead {
        TreeHead {
            size: self.size,
            root: self.root,
            head: self.head,
        }
    }

    /// The oldest retained seq.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// What the prover has read and rebuilt so far.
    pub fn stats(&self) -> ProofStats {
        let mut stats = self.store.stats;
        stats.segment_bytes_read = self.store.segments.bytes_read;
        stats
    }

    fn check_seq(&self, seq: u64) -> std::result::Result<(), ProveError> {
        if seq >= self.size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the log (it has {} records)",
                self.size
            )));
        }
        if seq < self.first_seq {
            return Err(ProveError::Unavailable(format!(
                "record {seq} was deleted by retention (the log starts at seq {})",
                self.first_seq
            )));
        }
        Ok(())
    }

    /// The stored chain hash of record `seq`.
    pub fn stored_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, ProveError> {
        self.check_seq(seq)?;
        if seq >= self.sealed_end {
            return Ok(self.active.chain[(seq - self.sealed_end) as usize]);
        }
        Ok(self.store.segments.hash_at(seq)?)
    }

    /// The chain hash record `seq` chains from: the stored hash of the record
    /// before it, or its segment header's `prev_hash` for a segment's first.
    pub fn prev_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, ProveError> {
        self.check_seq(seq)?;
        if seq == self.sealed_end {
            return Ok(self.active_prev);
        }
        if seq > self.sealed_end {
            return Ok(self.active.chain[(seq - self.sealed_end - 1) as usize]);
        }
        Ok(self.store.segments.prev_hash(seq)?)
    }

    fn truncated(&self, size: u64) -> ProveError {
        ProveError::Mismatch(format!(
            "truncated: the log has {} records, the tree asked for has {size}",
            self.size
        ))
    }

    /// Runs `attempt` until it returns a value; after each failure, rebuilds
    /// the tiles it used (from the tiles below, then from the segments).
    /// `Ok(None)` when the tiles rebuilt from the segments still fail.
    fn with_repairs<T>(
        &mut self,
        mut attempt: impl FnMut(&mut Self) -> std::result::Result<Option<T>, ProveError>,
    ) -> std::result::Result<Option<T>, ProveError> {
        for round in 0..6 {
            self.store.used.clear();
            if let Some(value) = attempt(self)? {
                return Ok(Some(value));
            }
            let suspects: Vec<(u8, u64)> = self.store.used.iter().copied().collect();
            let repaired = if round == 0 {
                self.store.repair_shallow(&suspects)?
            } else {
                self.store.repair_deep(&suspects)?
            };
            if !repaired && round > 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Checks that the log's tree of `size` records has root `root`
    /// ([`ProveError::Mismatch`] if not).
    pub fn check_root(&mut self, size: u64, root: &Hash) -> std::result::Result<(), ProveError> {
        if size > self.size {
            return Err(self.truncated(size));
        }
        if self.checked_roots.contains(&(size, *root)) {
            return Ok(());
        }
        let mismatch = || {
            ProveError::Mismatch(format!(
                "forked or rewritten: at size {size} the log's tree root is not {}",
                hash_to_hex(root)
            ))
        };
        // The tiles first (O(log n) of them); a root they do not give is
        // recomputed from what the log trusts, so that a damaged tile costs
        // only that, and a wrong root no rebuilding at all.
        self.store.used.clear();
        if proof::tree_root(self, size).is_ok_and(|ours| ours == *root) {
            self.checked_roots.insert((size, *root));
            return Ok(());
        }
        match self.trusted_root(size)? {
            Some(trusted) if trusted == *root => {}
            Some(_) => return Err(mismatch()),
            None => {
                // Before the oldest retained record only the tiles are left.
                let matched = self.with_repairs(|p| {
                    let ours = proof::tree_root(p, size)?;
                    Ok((ours == *root).then_some(()))
                })?;
                if matched.is_none() {
                    return Err(mismatch());
                }
            }
        }
        self.checked_roots.insert((size, *root));
        Ok(())
    }

    /// The root of the tree of `size` records as a checkpoint is checked:
    /// from the link block of the segment that holds record `size` (or the
    /// last one) and the stored hashes after it, reading at most one
    /// segment and no tile. `None` when that segment was deleted by retention.
    fn trusted_root(&mut self, size: u64) -> std::result::Result<Option<Hash>, ProveError> {
        if size >= self.sealed_end {
            // Every subtree of the decomposition is in the active segment's
            // link block, or in its records, or made of those.
            let mut parts = Vec::new();
            for level in (0..64u8).rev() {
                if (size >> level) & 1 == 1 {
                    let index = (size >> level) - 1;
                    match edge_subtree(
                        &self.frontier_sealed,
                        &self.active,
                        self.sealed_end,
                        level,
                        index,
                    ) {
                        Some(h) => parts.push(h),
                        None => return Ok(None),
                    }
                }
            }
            return Ok(Some(match parts.split_last() {
                None => crate::hash::merkle::empty_root(),
                Some((last, rest)) => rest
                    .iter()
                    .rev()
                    .fold(*last, |acc, left| node_hash(left, &acc)),
            }));
        }
        if size < self.first_seq {
            return Ok(None);
        }
        let mut frontier = self.store.segments.start_frontier(size)?;
        let from = frontier.size();
        self.store
            .segments
            .for_each(from, size, &mut |_, h| frontier.push(&h.0))?;
        Ok(Some(frontier.root()))
    }

    /// Checks a checkpoint against the log: its origin names this log, and
    /// at its size the tree root and the chain head are the checkpoint's.
    pub fn check_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> std::result::Result<(), ProveError> {
        let id = self.log_id.to_string();
        if !checkpoint.origin.ends_with(&format!("/{id}")) {
            return Err(ProveError::Mismatch(format!(
                "the checkpoint is for {:?}, not log {id}",
                checkpoint.origin
            )));
        }
        self.check_root(checkpoint.size, &checkpoint.root)?;
        if let Some(head) = checkpoint.head {
            if let Some(last) = checkpoint
                .size
                .checked_sub(1)
                .filter(|&l| l >= self.first_seq)
            {
                if self.stored_hash(last)? != head {
                    return Err(ProveError::Mismatch(format!(
                        "forked or rewritten: record {last}'s hash is not the checkpoint's chain head {head}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The inclusion proof of record `seq` in the tree of `size` records
    /// with root `root`, checked before it is returned.
    pub fn inclusion(
        &mut self,
        seq: u64,
        size: u64,
        root: &Hash,
    ) -> std::result::Result<InclusionProof, ProveError> {
        if size > self.size {
            return Err(self.truncated(size));
        }
        if seq >= size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the tree of {size} records"
            )));
        }
        let leaf = self.stored_hash(seq)?;
        self.check_root(size, root)?;
        self.inclusion_of(seq, leaf, size, root)
    }

    /// [`Prover::inclusion`] for a leaf whose stored hash the caller has
    /// (read with the record), against a root already checked or to check.
    pub fn inclusion_of(
        &mut self,
        seq: u64,
        leaf: ChainHash,
        size: u64,
        root: &Hash,
    ) -> std::result::Result<InclusionProof, ProveError> {
        if seq >= size || size > self.size {
            return Err(ProveError::OutOfRange(format!(
                "seq {seq} is not in the tree of {size} records"
            )));
        }
        self.check_root(size, root)?;
        let proof = self.with_repairs(|p| {
            let path = proof::inclusion_proof(p, seq, size)?;
            Ok(proof::verify_inclusion(&leaf.0, seq, size, &path, root).then_some(path))
        })?;
        let proof = proof.ok_or_else(|| {
            ProveError::Mismatch(format!(
                "record {seq} (hash {leaf}) is not in the tree of {size} records with root {}: the log was rewritten",
                hash_to_hex(root)
            ))
        })?;
        Ok(InclusionProof {
            seq,
            tree_size: size,
            leaf,
            root: *root,
            proof,
        })
    }

    /// The consistency proof from the tree of `old_size` records with root
    /// `old_root` to the tree of `new_size` with `new_root`, after checking
    /// both roots against the log.
    pub fn consistency(
        &mut self,
        old_size: u64,
        old_root: &Hash,
        new_size: u64,
        new_root: &Hash,
    ) -> std::result::Result<ConsistencyProof, ProveError> {
        if old_size > new_size {
            return Err(ProveError::OutOfRange(format!(
                "the old tree ({old_size} records) is larger than the new one ({new_size})"
            )));
        }
        self.check_root(new_size, new_root)?;
        self.check_root(old_size, old_root).map_err(|e| match e {
            ProveError::Mismatch(_) => ProveError::Mismatch(format!(
                "forked or rewritten: the log's tree at size {old_size} does not have the old root {}",
                hash_to_hex(old_root)
            )),
            other => other,
        })?;
        let proof = self.with_repairs(|p| {
            let path = proof::consistency_proof(p, old_size, new_size)?;
            let ok = proof::verify_consistency(old_size, new_size, old_root, new_root, &path);
            Ok(ok.then_some(path))
        })?;
        let proof = proof.ok_or_else(|| {
            ProveError::Mismatch(format!(
                "the log's tree of {new_size} records does not extend its tree of {old_size}"
            ))
        })?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            old_root: *old_root,
            new_root: *new_root,
            proof,
        })
    }

    /// A perfect subtree from the tiles.
    fn tile_subtree(&mut self, level: u8, index: u64) -> std::result::Result<Hash, TileError> {
        let tile_level = level / TILE_HEIGHT as u8;
        let within = u32::from(level % TILE_HEIGHT as u8);
        let position = index << within;
        let tile_index = position >> TILE_HEIGHT;
        let offset = (position & (TILE_WIDTH as u64 - 1)) as usize;
        let tile = self
            .store
            .tile(tile_level, tile_index, offset + (1 << within))?;
        tile.subtree(within, offset >> within).ok_or_else(|| {
            TileError::Unavailable(format!("no subtree at level {level}, index {index}"))
        })
    }

    fn halves(&mut self, level: u8, index: u64) -> std::result::Result<Hash, TileError> {
        let left = self.subtree(level - 1, 2 * index)?;
        let right = self.subtree(level - 1, 2 * index + 1)?;
        Ok(node_hash(&left, &right))
    }
}

impl SubtreeSource for Prover {
    type Error = TileError;

    fn subtree(&mut self, level: u8, index: u64) -> std::result::Result<Hash, TileError> {
        let lo = u128::from(index) << level;
        let hi = lo + (1u128 << level);
        if hi > u128::from(self.size) {
            return Err(TileError::Unavailable(format!(
                "no subtree at level {level}, index {index} in a tree of {} records",
                self.size
            )));
        }
        let (lo, hi) = (lo as u64, hi as u64);
        if lo >= self.sealed_end {
            return self.active.subtree(level, index).ok_or_else(|| {
                TileError::Unavailable(format!("no subtree at level {level}, index {index}"))
            });
        }
        if hi > self.sealed_end {
            return self.halves(level, index);
        }
        if let Some(h) = self.frontier_sealed.get(&(level, index)) {
            return Ok(*h);
        }
        if let Some(h) = self.frontier_first.get(&(level, index)) {
            return Ok(*h);
        }
        match self.tile_subtree(level, index) {
            // A tile over records retention deleted, missing or damaged: what
            // is left of the subtree comes from the tiles below it, and from
            // the segments for a single record.
            Err(TileError::Unavailable(_)) if hi > self.first_seq => {
                if level == 0 {
                    let h = self.store.segments.hash_at(lo)?;
                    Ok(leaf_hash(&h.0))
                } else {
                    self.halves(level, index)
                }
            }
            other => other,
        }
    }
}

/// The Merkle tree as a segment is appended: the frontier over every record
/// so far, and the hashes this segment's records complete at the tile levels
/// (tree levels 0, 8, 16, ...), kept for the segment's tiles. The writer
/// pushes each record's chain hash as it appends, so that a seal needs
/// neither a second read of the segment nor a second hashing of its tree.
#[derive(Debug, Clone)]
pub(crate) struct SegmentTree {
    /// The tree before the segment (its link block).
    start: Frontier,
    /// The tree including the segment's records so far.
    frontier: Frontier,
    /// `levels[L]`: the hashes at tree level `8L` that this segment's
    /// records completed, in order; the first has index `start.size() >> 8L`.
    levels: Vec<Vec<Hash>>,
}

impl SegmentTree {
    /// The tree of a segment with no records yet, after `start`.
    pub(crate) fn new(start: Frontier) -> Self {
        SegmentTree {
            frontier: start.clone(),
            start,
            levels: Vec::new(),
        }
    }

    /// Adds the next record's chain hash.
    pub(crate) fn push(&mut self, hash: &ChainHash) {
        let levels = &mut self.levels;
        self.frontier.push_with(&hash.0, |height, node| {
            if height % TILE_HEIGHT == 0 {
                let level = (height / TILE_HEIGHT) as usize;
                if levels.len() <= level {
                    levels.resize_with(level + 1, Vec::new);
                }
                levels[level].push(*node);
            }
        });
    }

    /// The tree including the segment's records so far.
    pub(crate) fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Takes the tile-level hashes out (for [`build_sealed`]), leaving the
    /// frontiers.
    pub(crate) fn take_hashes(&mut self) -> SegmentTree {
        SegmentTree {
            start: self.start.clone(),
            frontier: self.frontier.clone(),
            levels: std::mem::take(&mut self.levels),
        }
    }
}

/// Writes the tiles of a segment just sealed from the hashes its appends
/// collected (see [`SegmentTree`]): its leaf hashes into the leaf packs, and
/// at each higher level the tiles its records complete and the partial tile
/// at its end. A tile that began before the segment gets its first hashes
/// from the stored partial tile, checked against the segment's link block
/// (and rebuilt when it does not match). Runs in the background after the
/// seal (see [`Log`]'s indexer), after the previous seal's build.
pub(crate) fn build_sealed(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    tree: &SegmentTree,
    block_bytes: u32,
) -> Result<()> {
    let base = tree.start.size();
    let tile_dir = dir.join(TILE_DIR);
    storage
        .create_dir_all(&tile_dir)
        .map_err(|e| Error::io(&tile_dir, e))?;
    let files = TileFiles {
        storage: storage.clone(),
        dir: dir.clone(),
    };
    let mut failed = None;
    if let Some(leaves) = tree.levels.first() {
        if let Err(e) = files.write_leaves(base, leaves) {
            failed.get_or_insert(e);
        }
    }
    let frontier = frontier_map(&tree.start);
    let mut store = None;
    for (level, hashes) in tree.levels.iter().enumerate().skip(1) {
        let Ok(level) = u8::try_from(level) else {
            break;
        };
        if hashes.is_empty() || level >= TILE_LEVELS {
            continue;
        }
        let first = base >> (TILE_HEIGHT * u32::from(level));
        let mut index = first >> TILE_HEIGHT;
        let width = partial_width(base, level);
        let mut tile = if width == 0 {
            Some(Vec::with_capacity(TILE_WIDTH))
        } else {
            let store = match &mut store {
                Some(store) => store,
                None => store.insert(TileStore::for_sealed(
                    storage.clone(),
                    dir.clone(),
                    base,
                    block_bytes,
                )?),
            };
            verified_prefix(store, level, index, width, base, &frontier)?
        };
        let mut pos = first;
        for hash in hashes {
            // A tile whose first hashes cannot be had is left to be rebuilt.
            if let Some(t) = &mut tile {
                t.push(*hash);
            }
            pos += 1;
            if pos % TILE_WIDTH as u64 == 0 {
                if let Some(t) = tile.take() {
                    if let Err(e) = files.write(level, index, &t) {
                        failed.get_or_insert(e);
                    }
                }
                tile = Some(Vec::with_capacity(TILE_WIDTH));
                index += 1;
            }
        }
        if let Some(t) = tile.filter(|t| !t.is_empty()) {
            if let Err(e) = files.write(level, index, &t) {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The first `width` hashes of tile `(level, index)` at tree size `size`,
/// checked against the frontier of that size; rebuilt when they do not
/// match, `None` when they cannot be had.
fn verified_prefix(
    store: &mut TileStore,
    level: u8,
    index: u64,
    width: usize,
    size: u64,
    frontier: &HashMap<(u8, u64), Hash>,
) -> Result<Option<Vec<Hash>>> {
    for round in 0..3 {
        let tile = match round {
            0 => store.tile(level, index, width),
            1 => store.rebuild_shallow(level, index),
            _ => store
                .rebuild_deep(level, index)
                .and_then(|()| store.tile(level, index, width)),
        };
        match tile {
            Ok(tile) => {
                if let Some(prefix) = tile.levels.first().and_then(|h| h.get(..width)) {
                    if prefix_matches(level, size, prefix, frontier) {
                        return Ok(Some(prefix.to_vec()));
                    }
                }
            }
            Err(TileError::Unavailable(_)) => return Ok(None),
            Err(TileError::Log(e)) => return Err(e),
        }
        store.cache.remove(&(level, index));
    }
    Ok(None)
}

/// What [`Log::rebuild_tiles`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Records whose hashes were read.
    pub records: u64,
    /// Tile files written.
    pub tiles_written: u64,
}

impl Log {
    /// A prover over the log as it is now (see [`Prover`]). Reads the active
    /// segment's records once, as [`Log::tree_head`] does.
    pub fn prover(&self) -> Result<Prover> {
        Prover::new(self.snapshot()?, self.log_id())
    }

    /// The inclusion proof of record `seq` in the tree a checkpoint signs
    /// (checked against the log first: origin, root and chain head), or in
    /// the current tree when `checkpoint` is `None`.
    pub fn prove_inclusion(
        &self,
        seq: u64,
        checkpoint: Option<&Checkpoint>,
    ) -> std::result::Result<InclusionProof, ProveError> {
        let mut prover = self.prover()?;
        let (size, root) = match checkpoint {
            Some(cp) => {
                prover.check_checkpoint(cp)?;
                (cp.size, cp.root)
            }
            None => {
                let head = prover.tree_head();
                (head.size, head.root)
            }
        };
        prover.inclusion(seq, size, &root)
    }

    /// The consistency proof from the tree checkpoint `old` signs to the one
    /// `new` signs, or to the current tree when `new` is `None`; both are
    /// checked against the log first.
    pub fn prove_consistency(
        &self,
        old: &Checkpoint,
        new: Option<&Checkpoint>,
    ) -> std::result::Result<ConsistencyProof, ProveError> {
        let mut prover = self.prover()?;
        let (new_size, new_root) = match new {
            Some(cp) => {
                prover.check_checkpoint(cp)?;
                (cp.size, cp.root)
            }
            None => {
                let head = prover.tree_head();
                (head.size, head.root)
            }
        };
        let id = self.log_id().to_string();
        if !old.origin.ends_with(&format!("/{id}")) {
            return Err(ProveError::Mismatch(format!(
                "the old checkpoint is for {:?}, not log {id}",
                old.origin
            )));
        }
        prover.consistency(old.size, &old.root, new_size, &new_root)
    }

    /// Rebuilds every tile over the sealed segments from their stored
    /// hashes, overwriting what is there (the tiles that straddle the oldest
    /// retained record are kept as they are: their first hashes are gone).
    pub fn rebuild_tiles(&self) -> Result<RebuildStats> {
        let snap = self.snapshot()?;
        let first = snap.segments.first().copied().unwrap_or(snap.active_base);
        let sealed_end = snap.active_base;
        let files = TileFiles {
            storage: snap.storage.clone(),
            dir: snap.dir.clone(),
        };
        let mut segments = SegmentHashes {
            storage: snap.storage.clone(),
            dir: snap.dir.clone(),
            bases: snap.segments.clone(),
            block_bytes: snap.index_block_bytes,
            write_index: !snap.read_only,
            open: HashMap::new(),
            current: 0,
            bytes_read: 0,
        };
        let mut builder = TileBuilder::new(first, TILE_LEVELS - 1);
        let mut stats = RebuildStats::default();
        let mut failed = None;
        let mut seq = first;
        while seq < sealed_end {
            let end = (seq + REBUILD_CHUNK).min(sealed_end);
            let mut leaves = Vec::with_capacity((end - seq) as usize);
            segments
                .for_each(seq, end, &mut |_, h| leaves.push(leaf_hash(&h.0)))
                .map_err(|e| match e {
                    TileError::Log(e) => e,
                    TileError::Unavailable(why) => Error::InvalidOptions(why),
                })?;
            for leaf in leaves {
                builder.push(leaf, &mut |l, i, hashes| {
                    stats.tiles_written += 1;
                    if let Err(e) = files.write(l, i, hashes) {
                        failed.get_or_insert(e);
                    }
                });
            }
            stats.records += end - seq;
            seq = end;
        }
        for (l, i, hashes) in builder.partial_tiles() {
            stats.tiles_written += 1;
            if let Err(e) = files.write(l, i, hashes) {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(stats), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::proof::MemoryTree;

    #[test]
    fn tile_paths_follow_c2sp() {
        assert_eq!(tile_path(0, 0, 256), "tile/0/000");
        assert_eq!(tile_path(1, 1234067, 256), "tile/1/x001/x234/067");
        assert_eq!(tile_path(0, 1234067, 8), "tile/0/x001/x234/067.p/8");
        assert_eq!(tile_path(2, 1000, 1), "tile/2/x001/000.p/1");
        for (l, n, w) in [
            (0, 0, 256),
            (1, 1234067, 256),
            (0, 1234067, 8),
            (7, 999, 255),
        ] {
            assert_eq!(parse_tile_path(&tile_path(l, n, w)), Some((l, n, w)));
        }
        for bad in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/8/001",
            "tile/0/001.p/08",
            "tiles/0/001",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
        assert_eq!(leaf_pack_path(0), "tile/leaves/000");
        assert_eq!(leaf_pack_path(4321), "tile/leaves/x004/321");
        assert_eq!(parse_leaf_pack_path("tile/leaves/x004/321"), Some(4321));
        for bad in [
            "tile/leaves/1",
            "tile/leaves/x000/001",
            "tile/0/000",
            "tile/leaves/",
        ] {
            assert_eq!(parse_leaf_pack_path(bad), None, "{bad}");
        }
    }

    fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&i.to_le_bytes());
                h
            })
            .collect()
    }

    #[test]
    fn builder_tiles_hold_the_trees_stored_hashes() {
        let data = leaves(70_000);
        let mut tree = MemoryTree::new(&data);
        let mut tiles: HashMap<(u8, u64), Vec<Hash>> = HashMap::new();
        let mut b = TileBuilder::new(0, TILE_LEVELS - 1);
        for leaf in &data {
            b.push(leaf_hash(leaf), &mut |l, i, h| {
                tiles.insert((l, i), h.to_vec());
            });
        }
        for (l, i, h) in b.partial_tiles() {
            tiles.insert((l, i), h.to_vec());
        }
        for (&(l, i), hashes) in &tiles {
            for (k, h) in hashes.iter().enumerate() {
                let want = tree.subtree(8 * l, i * 256 + k as u64).unwrap();
                assert_eq!(*h, want, "tile ({l}, {i}) hash {k}");
            }
        }
        assert_eq!(tiles[&(0, 273)].len(), 70_000 % 256);
        assert_eq!(tiles[&(1, 1)].len(), 273 - 256);
        assert_eq!(tiles[&(2, 0)].len(), 1);
    }

    /// Segments sealed one after another, each building its tiles from the
    /// hashes its appends collected and the previous seal's partial tiles.
    #[test]
    fn sealed_segments_build_the_trees_tiles() {
        let data = leaves(140_000);
        let mut tree = MemoryTree::new(&data);
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::FsStorage);
        let cuts = [0u64, 1, 300, 513, 65_535, 65_536, 65_800, 131_071, 140_000];
        let mut start = Frontier::new();
        for w in cuts.windows(2) {
            let mut seg = SegmentTree::new(start.clone());
            for leaf in &data[w[0] as usize..w[1] as usize] {
                seg.push(&ChainHash(*leaf));
            }
            start = seg.frontier().clone();
            let sealed = seg.take_hashes();
            build_sealed(storage.clone(), dir.path().to_path_buf(), &sealed, 4096).unwrap();
        }
        let mut whole = Frontier::new();
        for leaf in &data {
            whole.push(leaf);
        }
        assert_eq!(start, whole);
        let files = TileFiles {
            storage,
            dir: dir.path().to_path_buf(),
        };
        let n = data.len() as u64;
        for level in 0..3u8 {
            let hashes_at_level = n >> (8 * u32::from(level));
            for index in 0..=hashes_at_level / 256 {
                let width = (hashes_at_level - index * 256).min(256) as usize;
                if width == 0 {
                    continue;
                }
                let got = files.read(level, index, width).unwrap_or_else(|| {
                    panic!("tile ({level}, {index}) of width {width} is missing")
                });
                assert_eq!(got.len(), width, "tile ({level}, {index})");
                for (k, h) in got.iter().enumerate() {
                    let want = tree.subtree(8 * level, index * 256 + k as u64).unwrap();
                    assert_eq!(*h, want, "tile ({level}, {index}) hash {k}");
                }
            }
        }
        // 140,000 leaves: three leaf packs, the last one partial.
        let pack = |p| std::fs::metadata(dir.path().join(leaf_pack_path(p))).map(|m| m.len());
        assert_eq!(pack(0).unwrap(), 65_536 * 32);
        assert_eq!(pack(2).unwrap(), (140_000 - 131_072) * 32);
        assert!(pack(3).is_err());
    }

    #[test]
    fn a_builder_without_the_first_hashes_skips_those_tiles() {
        let data = leaves(1000);
        let mut emitted = Vec::new();
        let mut b = TileBuilder::new(100, 1);
        for leaf in &data[100..] {
            b.push(leaf_hash(leaf), &mut |l, i, _| emitted.push((l, i)));
        }
        assert_eq!(emitted, vec![(0, 1), (0, 2)]);
        let partial: Vec<(u8, u64)> = b.partial_tiles().iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            partial,
            vec![(0, 3)],
            "level 1 is unknown: its first hash is"
        );
    }

    #[test]
    fn prefixes_are_checked_against_the_frontier() {
        let data = leaves(600);
        let mut tree = MemoryTree::new(&data);
        let mut f = Frontier::new();
        for d in &data[..555] {
            f.push(d);
        }
        let map = frontier_map(&f);
        let prefix: Vec<Hash> = (512..555).map(|i| tree.subtree(0, i).unwrap()).collect();
        assert!(prefix_matches(0, 555, &prefix, &map));
        let upper: Vec<Hash> = (0..2).map(|i| tree.subtree(8, i).unwrap()).collect();
        assert!(prefix_matches(1, 555, &upper, &map));
        for k in 0..prefix.len() {
            let mut bad = prefix.clone();
            bad[k][0] ^= 1;
            assert!(!prefix_matches(0, 555, &bad, &map), "hash {k}");
        }
        assert!(!prefix_matches(0, 555, &prefix[1..], &map));
    }
}
