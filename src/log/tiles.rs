//! Rebuilding a live log's tiles from its segments.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::hash::merkle::leaf_hash;

use crate::log::Log;
use crate::tiles::store::SegmentHashes;
use crate::tiles::{TileBuilder, TileError, TileFiles, REBUILD_CHUNK, TILE_LEVELS};

/// What [`Log::rebuild_tiles`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// Records whose hashes were read.
    pub records: u64,
    /// Tile files written.
    pub tiles_written: u64,
}

impl Log {
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
