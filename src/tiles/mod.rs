//! Merkle tree tiles beside the segments (the C2SP `tlog-tiles` layout): their
//! paths, writing them as segments are sealed, and reading and rebuilding
//! them. Uses [`crate::index`], [`mod@crate::format`], [`crate::storage`] and
//! [`crate::hash`]; the prover over a live log that reads them belongs to
//! the query layer, above the log.
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
//! as [`crate::Log::tree_head`] does (the active segment's link block and records),
//! or a checkpoint's signed root. When the check fails, the tiles the proof
//! used are rebuilt (first from the tiles below, then from the segments) and
//! the proof is made again; a proof that still fails is an error, never an
//! answer.
//!
//! Proof generation implements [`crate::hash::proof::SubtreeSource`] over four sources, cheapest
//! first: the frontier of the active segment's link block (every perfect
//! subtree left of the active segment that a proof about newer records
//! needs), the frontier of the oldest retained segment's link block (what
//! retention leaves of the deleted records' tree), the tiles (for subtrees
//! inside the sealed segments), and the active segment's records, hashed in
//! memory (for subtrees after the last sealed segment). A subtree that
//! straddles the active segment's start is the node hash of its two halves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::merkle::{node_hash, Frontier, Hash};
use crate::storage::{read_full_at, Storage, StorageFile};

pub(crate) mod sealed;
pub(crate) mod store;

pub(crate) use sealed::{build_sealed, SegmentTree};

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
pub(crate) const CACHE_TILES: usize = 1024;
/// Seqs read from the segments per step of a deep rebuild.
pub(crate) const REBUILD_CHUNK: u64 = 1 << 16;

/// `N` written in groups of three digits, all but the last prefixed with `x`
/// (`1234067` is `x001/x234/067`), as tile paths spell tile indexes.
pub(crate) fn index_path(index: u64) -> String {
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
pub(crate) fn parse_index_path(digits: &str) -> Option<u64> {
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
pub(crate) fn perfect_root(hashes: &[Hash]) -> Hash {
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
pub(crate) fn span_end(level: u8, index: u64) -> u64 {
    let end = (u128::from(index) + 1) << (TILE_HEIGHT * (u32::from(level) + 1));
    u64::try_from(end).unwrap_or(u64::MAX)
}

/// The first leaf of tile `(level, index)`, capped at `u64::MAX`.
pub(crate) fn span_start(level: u8, index: u64) -> u64 {
    let start = u128::from(index) << (TILE_HEIGHT * (u32::from(level) + 1));
    u64::try_from(start).unwrap_or(u64::MAX)
}

/// Hashes the partial tile at level `level` holds in a tree of `size` leaves.
pub(crate) fn partial_width(size: u64, level: u8) -> usize {
    ((size >> (TILE_HEIGHT * u32::from(level))) & (TILE_WIDTH as u64 - 1)) as usize
}

/// The perfect subtrees of a frontier by (tree level, index).
pub(crate) fn frontier_map(frontier: &Frontier) -> HashMap<(u8, u64), Hash> {
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
pub(crate) fn prefix_matches(
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
pub(crate) struct TileTree {
    pub(crate) levels: Vec<Vec<Hash>>,
}

impl TileTree {
    pub(crate) fn new(hashes: Vec<Hash>) -> Self {
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

    pub(crate) fn width(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    pub(crate) fn subtree(&self, level: u32, index: usize) -> Option<Hash> {
        self.levels.get(level as usize)?.get(index).copied()
    }

    /// The root of a full tile.
    pub(crate) fn root(&self) -> Option<Hash> {
        (self.width() == TILE_WIDTH)
            .then(|| self.subtree(TILE_HEIGHT, 0))
            .flatten()
    }
}

/// Why a tree hash could not be had (the [`crate::hash::proof::SubtreeSource`] error of
/// the query layer's prover).
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
pub(crate) struct TileFiles {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
}

/// `count` hashes at byte `offset` of `file`, or `None` if they are not all there.
pub(crate) fn read_hashes(file: &dyn StorageFile, offset: u64, count: usize) -> Option<Vec<Hash>> {
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
    pub(crate) fn path(&self, level: u8, index: u64, width: usize) -> PathBuf {
        self.dir.join(tile_path(level, index, width))
    }

    pub(crate) fn read_exact(&self, path: &Path, width: usize) -> Option<Vec<Hash>> {
        let file = self.storage.open(path, false).ok()?;
        if file.size().ok()? != (width * 32) as u64 {
            return None;
        }
        read_hashes(&*file, 0, width)
    }

    /// The widest stored version of tile `(level, index)` with at least
    /// `min_width` hashes: the full tile, or a partial one.
    pub(crate) fn read(&self, level: u8, index: u64, min_width: usize) -> Option<Vec<Hash>> {
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
    pub(crate) fn read_leaves(&self, index: u64, min_width: usize) -> Option<Vec<Hash>> {
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
    pub(crate) fn write(&self, level: u8, index: u64, hashes: &[Hash]) -> Result<()> {
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
    pub(crate) fn write_leaves(&self, first: u64, hashes: &[Hash]) -> Result<()> {
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
    pub(crate) fn write_file(&self, level: u8, index: u64, hashes: &[Hash]) -> Result<()> {
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
pub(crate) struct TileBuilder {
    pub(crate) size: u64,
    pub(crate) levels: Vec<Vec<Hash>>,
    pub(crate) known: Vec<bool>,
    pub(crate) max_level: u8,
}

impl TileBuilder {
    /// A builder for a tree that has `size` leaves so far, emitting tiles up
    /// to `max_level`. The tiles under way are unknown (and not emitted).
    pub(crate) fn new(size: u64, max_level: u8) -> Self {
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
    pub(crate) fn push(&mut self, leaf: Hash, emit: &mut dyn FnMut(u8, u64, &[Hash])) {
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
    pub(crate) fn partial_tiles(&self) -> Vec<(u8, u64, &[Hash])> {
        (0..=self.max_level)
            .filter(|&l| self.known[usize::from(l)] && !self.levels[usize::from(l)].is_empty())
            .map(|l| {
                let index = self.size >> (TILE_HEIGHT * (u32::from(l) + 1));
                (l, index, self.levels[usize::from(l)].as_slice())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::chain::ChainHash;
    use crate::hash::merkle::leaf_hash;
    use crate::hash::proof::{MemoryTree, SubtreeSource};

    #[test]
    pub(crate) fn tile_paths_follow_c2sp() {
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

    pub(crate) fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&i.to_le_bytes());
                h
            })
            .collect()
    }

    #[test]
    pub(crate) fn builder_tiles_hold_the_trees_stored_hashes() {
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
    pub(crate) fn sealed_segments_build_the_trees_tiles() {
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
    pub(crate) fn a_builder_without_the_first_hashes_skips_those_tiles() {
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
    pub(crate) fn prefixes_are_checked_against_the_frontier() {
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
