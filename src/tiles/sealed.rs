//! The tiles of a segment as it is appended ([`SegmentTree`]) and their
//! writing when it is sealed ([`build_sealed`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::hash::chain::ChainHash;
use crate::hash::merkle::{Frontier, Hash};
use crate::storage::Storage;

use super::store::TileStore;
use super::{
    frontier_map, partial_width, prefix_matches, TileError, TileFiles, TILE_DIR, TILE_HEIGHT,
    TILE_LEVELS, TILE_WIDTH,
};

/// The Merkle tree as a segment is appended: the frontier over every record
/// so far, and the hashes this segment's records complete at the tile levels
/// (tree levels 0, 8, 16, ...), kept for the segment's tiles. The writer
/// pushes each record's chain hash as it appends, so that a seal needs
/// neither a second read of the segment nor a second hashing of its tree.
#[derive(Debug, Clone)]
pub(crate) struct SegmentTree {
    /// The tree before the segment (its link block).
    pub(crate) start: Frontier,
    /// The tree including the segment's records so far.
    pub(crate) frontier: Frontier,
    /// `levels[L]`: the hashes at tree level `8L` that this segment's
    /// records completed, in order; the first has index `start.size() >> 8L`.
    pub(crate) levels: Vec<Vec<Hash>>,
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
pub(crate) fn verified_prefix(
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
