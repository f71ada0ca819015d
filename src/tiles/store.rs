//! Reading the tree's hashes: from the segments' stored chain hashes
//! ([`SegmentHashes`]) and from the tiles, with rebuilds ([`TileStore`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::segment::{self, Scanner, SegmentHeader, Step, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::hash::merkle::{leaf_hash, Frontier, Hash};
use crate::index;
use crate::storage::{Storage, StorageFile};

use super::{
    span_end, span_start, tile_path, ProofStats, TileBuilder, TileError, TileFiles, TileTree,
    CACHE_TILES, REBUILD_CHUNK, TILE_HEIGHT, TILE_WIDTH,
};

/// A sealed segment opened for reading stored hashes.
pub(crate) struct OpenSegment {
    pub(crate) base: u64,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) name: String,
    pub(crate) header: SegmentHeader,
    pub(crate) trailer: segment::SegmentTrailer,
    /// Block offsets and first seqs, from the segment's index.
    pub(crate) blocks: Option<Arc<Blocks>>,
}

/// A segment's block offsets and each block's first seq.
pub(crate) type Blocks = (Vec<u64>, Vec<u64>);

/// Segments a reader keeps open (with their block tables).
pub(crate) const OPEN_SEGMENTS: usize = 64;

/// Reads the stored chain hashes of records in sealed segments.
pub(crate) struct SegmentHashes {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    /// Every segment of the log, ascending.
    pub(crate) bases: Vec<u64>,
    pub(crate) block_bytes: u32,
    pub(crate) write_index: bool,
    pub(crate) open: HashMap<u64, OpenSegment>,
    /// The segment [`SegmentHashes::segment_for`] returned last.
    pub(crate) current: u64,
    pub(crate) bytes_read: u64,
}

impl SegmentHashes {
    pub(crate) fn corrupt(seg: &OpenSegment, offset: u64, reason: String) -> Error {
        Error::Corrupted {
            file: seg.name.clone(),
            offset,
            reason,
        }
    }

    /// Opens the sealed segment holding `seq`.
    pub(crate) fn segment_for(
        &mut self,
        seq: u64,
    ) -> std::result::Result<&mut OpenSegment, TileError> {
        let at = self.bases.partition_point(|&b| b <= seq);
        let Some(&base) = at.checked_sub(1).and_then(|i| self.bases.get(i)) else {
            return Err(TileError::Unavailable(format!(
                "record {seq} was deleted by retention"
            )));
        };
        if !self.open.contains_key(&base) {
            let (name, file) = segment::open_for_reading(&*self.storage, &self.dir, base)?;
            let header = segment::read_header(&*file, &name)?;
            let trailer = segment::read_sealed_trailer(&*file, &name, header.segment_bytes)?;
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
    pub(crate) fn blocks(&mut self) -> Result<Arc<Blocks>> {
        let (storage, dir) = (&*self.storage, self.dir.as_path());
        let (block_bytes, write) = (self.block_bytes, self.write_index);
        let Some(seg) = self.open.get_mut(&self.current) else {
            return Ok(Arc::default());
        };
        if let Some(blocks) = &seg.blocks {
            return Ok(blocks.clone());
        }
        let load = |rebuild: bool| -> Result<Blocks> {
            let read = if rebuild {
                index::rebuild
            } else {
                index::load_or_rebuild
            };
            let mut reader = read(
                storage,
                dir,
                seg.file.clone(),
                seg.base,
                &seg.trailer,
                block_bytes,
                write,
            )?;
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
    pub(crate) fn for_each(
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
    pub(crate) fn start_frontier(&mut self, seq: u64) -> std::result::Result<Frontier, TileError> {
        let seg = self.segment_for(seq)?;
        Ok(segment::read_start_frontier(
            &*seg.file,
            &seg.name,
            &seg.header,
        )?)
    }

    pub(crate) fn hash_at(&mut self, seq: u64) -> std::result::Result<ChainHash, TileError> {
        let mut found = ChainHash::default();
        self.for_each(seq, seq + 1, &mut |_, h| found = *h)?;
        Ok(found)
    }

    /// The hash record `seq` chains from.
    pub(crate) fn prev_hash(&mut self, seq: u64) -> std::result::Result<ChainHash, TileError> {
        let seg = self.segment_for(seq)?;
        if seg.base == seq {
            return Ok(seg.header.prev_hash);
        }
        self.hash_at(seq - 1)
    }
}

/// Tiles of the sealed part of the tree, read from disk or rebuilt.
pub(crate) struct TileStore {
    pub(crate) files: TileFiles,
    pub(crate) segments: SegmentHashes,
    /// Leaves below this are in sealed segments; tiles are only used for them.
    pub(crate) sealed_end: u64,
    /// The oldest retained record.
    pub(crate) first_seq: u64,
    pub(crate) write_tiles: bool,
    pub(crate) cache: HashMap<(u8, u64), Arc<TileTree>>,
    /// Rebuilt in this session (from the tiles below, or for level 0 from the segments).
    pub(crate) fresh: HashSet<(u8, u64)>,
    /// Rebuilt from the segments in this session.
    pub(crate) solid: HashSet<(u8, u64)>,
    /// Not to be used: damaged, and not rebuildable (retention deleted its records).
    pub(crate) blocked: HashSet<(u8, u64)>,
    /// Tiles used since the last [`TileStore::used`] reset.
    pub(crate) used: BTreeSet<(u8, u64)>,
    pub(crate) stats: ProofStats,
}

impl TileStore {
    /// A store over the sealed segments of `dir` below `sealed_end`, that
    /// writes the tiles it rebuilds.
    pub(crate) fn for_sealed(
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
    pub(crate) fn new(
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
    pub(crate) fn max_width(&self, level: u8, index: u64) -> usize {
        let available = self.sealed_end >> (TILE_HEIGHT * u32::from(level));
        let start = index.saturating_mul(TILE_WIDTH as u64);
        available.saturating_sub(start).min(TILE_WIDTH as u64) as usize
    }

    pub(crate) fn remember(&mut self, key: (u8, u64), tile: Arc<TileTree>) {
        if self.cache.len() >= CACHE_TILES {
            self.cache.clear();
        }
        self.cache.insert(key, tile);
    }

    /// Tile `(level, index)` with at least `min_width` hashes.
    pub(crate) fn tile(
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

    pub(crate) fn write(&mut self, level: u8, index: u64, hashes: &[Hash]) {
        if self.write_tiles {
            // A tile that cannot be written is rebuilt next time.
            let _ = self.files.write(level, index, hashes);
        }
    }

    /// Rebuilds tile `(level, index)` as far as the sealed segments go: level
    /// 0 from the segments' stored hashes, higher levels from the roots of
    /// the tiles below.
    pub(crate) fn rebuild_shallow(
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
    pub(crate) fn rebuild_deep(
        &mut self,
        level: u8,
        index: u64,
    ) -> std::result::Result<(), TileError> {
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

    pub(crate) fn store_rebuilt(
        &mut self,
        l: u8,
        i: u64,
        hashes: Vec<Hash>,
        level: u8,
        index: u64,
    ) {
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
    pub(crate) fn repair_shallow(&mut self, suspects: &[(u8, u64)]) -> Result<bool> {
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
    pub(crate) fn repair_deep(&mut self, suspects: &[(u8, u64)]) -> Result<bool> {
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
