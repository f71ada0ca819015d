//! Derived data checked against the segments: an index or a tile is never
//! trusted for integrity, but a query trusts an index that passes its CRCs,
//! so the verifier rebuilds each sealed segment's index and compares it
//! with the `.idx` file, and (when it builds the tree, against a
//! checkpoint) compares the stored tiles with the hashes the records give.
//!
//! A missing, torn (CRC-failing) or stale index is what a crash or an older
//! writer leaves: readers rebuild it, so it is counted, not reported. A
//! trusted part that differs is [`ProblemKind::IndexMismatch`]; a stored
//! tile hash that differs is [`ProblemKind::TileMismatch`] (tiles are never
//! trusted by proofs, but a wrong one is still a written lie).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{Problem, ProblemKind, SegmentResult, MAX_REPORTED_PROBLEMS};
use crate::error::{Error, Result};
use crate::format::segment::{self, Scanner, Step, HEADER_BYTES};
use crate::hash::merkle::Hash;
use crate::index::{self, IndexComparison, IndexReader};
use crate::storage::{read_full_at, Storage, StorageFile};
use crate::tiles::{
    leaf_pack_path, read_hashes, tile_path, SegmentTree, PACK_TILES, TILE_HEIGHT, TILE_LEVELS,
    TILE_WIDTH,
};

/// What the verifier did with the derived files (indexes and tiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DerivedChecks {
    /// Sealed segments whose `.idx` was compared with the index rebuilt
    /// from the segment's frames.
    pub indexes_checked: u64,
    /// Sealed segments whose `.idx` is missing, torn (fails a CRC) or stale
    /// (describes another state of the segment), or that were not compared
    /// because the segment itself has a problem: readers rebuild those.
    pub indexes_unchecked: u64,
    /// Stored tile hashes compared with the computed ones (with a checkpoint).
    pub tile_hashes_checked: u64,
}

impl DerivedChecks {
    pub(crate) fn add(&mut self, other: &DerivedChecks) {
        self.indexes_checked += other.indexes_checked;
        self.indexes_unchecked += other.indexes_unchecked;
        self.tile_hashes_checked += other.tile_hashes_checked;
    }
}

/// A stored index larger than this many times the rebuilt one (plus a
/// MiB) is not read: no writer made it, so it differs.
const MAX_INDEX_GROWTH: u64 = 16;

/// Checks the derived files of the segment `r` describes, after its own
/// check: its index when it is sealed, and with `tiles` the stored tile
/// hashes its records complete. Nothing is compared for a segment with a
/// problem: its frames are not a truth to compare with.
pub(crate) fn check_segment(
    storage: &dyn Storage,
    dir: &Path,
    file: &Arc<dyn StorageFile>,
    r: &mut SegmentResult,
    tiles: bool,
) -> Result<()> {
    let Some(header) = r.header else {
        return Ok(());
    };
    let idx_name = index::file_name(header.base_seq);
    let idx_path = dir.join(&idx_name);
    if !r.problems.is_empty() {
        // The index the scan built is not compared: it need not wait, in
        // memory, for the segment's turn to be linked.
        r.index = None;
        if storage.open(&idx_path, false).is_ok() {
            r.derived.indexes_unchecked += 1;
        }
        return Ok(());
    }
    let trailer = match segment::read_trailer(&**file, &r.name, header.segment_bytes) {
        Ok(t) => t,
        Err(e) if e.is_corruption() => None,
        Err(e) => return Err(e),
    };
    if let Some(trailer) = trailer {
        if let Some(problem) = check_index(storage, &idx_path, &idx_name, file, r, &trailer)? {
            push(r, problem);
        }
    }
    r.index = None;
    if tiles {
        check_tiles(storage, dir, file, r)?;
    }
    Ok(())
}

fn push(r: &mut SegmentResult, problem: Problem) {
    if r.problems.len() < MAX_REPORTED_PROBLEMS {
        r.problems.push(problem);
    }
}

/// The block size of the index file a query would trust for the sealed
/// segment at `base` with `trailer` (the one to compare with), or `None`
/// when there is none (missing, torn or stale: readers rebuild those).
pub(crate) fn index_block_bytes(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    trailer: &segment::SegmentTrailer,
) -> Result<Option<u32>> {
    let idx_name = index::file_name(base);
    let idx_path = dir.join(&idx_name);
    let idx_file = match storage.open(&idx_path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&idx_path, e)),
    };
    Ok(match IndexReader::open(idx_file, &idx_name) {
        Ok(reader) if index::describes(reader.header(), base, trailer) => {
            Some(reader.header().block_bytes)
        }
        _ => None,
    })
}

/// Compares the stored index of a sealed segment with the one rebuilt from
/// its frames (with the stored `block_bytes`, so a truthful index is equal).
fn check_index(
    storage: &dyn Storage,
    idx_path: &Path,
    idx_name: &str,
    file: &Arc<dyn StorageFile>,
    r: &mut SegmentResult,
    trailer: &segment::SegmentTrailer,
) -> Result<Option<Problem>> {
    let base = r.header.map_or(0, |h| h.base_seq);
    let idx_file = match storage.open(idx_path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.derived.indexes_unchecked += 1;
            return Ok(None);
        }
        Err(e) => return Err(Error::io(idx_path, e)),
    };
    // The same acceptance test a query applies before trusting the file.
    let header = match IndexReader::open(idx_file.clone(), idx_name) {
        Ok(reader) if index::describes(reader.header(), base, trailer) => *reader.header(),
        _ => {
            r.derived.indexes_unchecked += 1;
            return Ok(None);
        }
    };
    // The index the frame scan built, when it indexed exactly the frames
    // the trailer counts; otherwise (the segment was checked in two halves
    // and the second could not be indexed) it is built by reading them again.
    let built = r
        .index
        .take()
        .filter(|b| b.block_bytes() == header.block_bytes && b.matches(trailer));
    let rebuilt = match built {
        Some(builder) => Ok(builder.encode()),
        None => index::build_sealed(file.clone(), base, trailer, header.block_bytes),
    };
    let expected = match rebuilt {
        Ok(bytes) => bytes,
        // The segment's own check found nothing, so this is not expected;
        // without a rebuilt index there is nothing to compare.
        Err(e) if e.is_corruption() => {
            r.derived.indexes_unchecked += 1;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mismatch = |detail: String, offset: u64| Problem {
        kind: ProblemKind::IndexMismatch,
        seq: None,
        segment: idx_name.to_string(),
        offset,
        detail,
    };
    r.derived.indexes_checked += 1;
    let len = idx_file.size().map_err(|e| Error::io(idx_path, e))?;
    if len > (expected.len() as u64).saturating_mul(MAX_INDEX_GROWTH) + (1 << 20) {
        let detail = format!(
            "the index of {} is {len} bytes; rebuilt from the segment it is {}",
            r.name,
            expected.len()
        );
        return Ok(Some(mismatch(detail, 0)));
    }
    let mut stored = vec![0; len as usize];
    let n = read_full_at(&*idx_file, &mut stored, 0).map_err(|e| Error::io(idx_path, e))?;
    stored.truncate(n);
    Ok(match index::compare(&stored, &expected) {
        IndexComparison::Same => None,
        IndexComparison::Torn => {
            // Counted as checked: its trusted parts agree.
            None
        }
        IndexComparison::Differs { part, offset } => {
            let detail = format!(
                "the index of {} differs from the index rebuilt from its frames, first in the {part}: a query trusting it would return wrong rows",
                r.name
            );
            Some(mismatch(detail, offset))
        }
    })
}

/// Compares the stored tile hashes this segment's records complete (its
/// leaf hashes in the leaf packs, and the hashes at levels 8, 16, … in the
/// full and partial tiles present) with those computed from the records'
/// stored chain hashes and the segment's link block. Hashes not stored
/// (past a file's end, or all zero: a leaf pack not yet written there) are
/// not compared. One problem per tile file, at its first differing hash.
fn check_tiles(
    storage: &dyn Storage,
    dir: &Path,
    file: &Arc<dyn StorageFile>,
    r: &mut SegmentResult,
) -> Result<()> {
    let (Some(header), Some(start)) = (r.header, r.start_frontier.clone()) else {
        return Ok(());
    };
    if r.records == 0 {
        return Ok(());
    }
    let mut tree = SegmentTree::new(start);
    let limit = segment::data_end_limit(header.segment_bytes);
    let mut scan = Scanner::new(file.clone(), &r.name, HEADER_BYTES, limit);
    while let Step::Frame { frame, .. } = scan.next_step()? {
        tree.push(&frame.hash);
    }
    let base = tree.start.size();
    let mut problems = Vec::new();
    let mut checked = 0;
    if let Some(leaves) = tree.levels.first() {
        checked += check_leaf_packs(storage, dir, base, leaves, &mut problems)?;
    }
    for (level, hashes) in tree.levels.iter().enumerate().skip(1) {
        let Ok(level) = u8::try_from(level) else {
            break;
        };
        if level >= TILE_LEVELS || hashes.is_empty() {
            continue;
        }
        let first = base >> (TILE_HEIGHT * u32::from(level));
        checked += check_level(storage, dir, level, first, hashes, &mut problems)?;
    }
    r.derived.tile_hashes_checked += checked;
    for p in problems {
        push(r, p);
    }
    Ok(())
}

fn tile_problem(path: String, seq: Option<u64>, offset: u64, detail: String) -> Problem {
    Problem {
        kind: ProblemKind::TileMismatch,
        seq,
        segment: path,
        offset,
        detail,
    }
}

/// Leaf hashes of positions `first ..` against the leaf packs.
fn check_leaf_packs(
    storage: &dyn Storage,
    dir: &Path,
    first: u64,
    leaves: &[Hash],
    problems: &mut Vec<Problem>,
) -> Result<u64> {
    const PACK_LEAVES: u64 = PACK_TILES * TILE_WIDTH as u64;
    let mut checked = 0;
    let mut at = 0;
    while at < leaves.len() {
        let pos = first + at as u64;
        let in_pack = (PACK_LEAVES - pos % PACK_LEAVES) as usize;
        let run = &leaves[at..leaves.len().min(at + in_pack)];
        at += run.len();
        let rel = leaf_pack_path(pos / PACK_LEAVES);
        let path = dir.join(&rel);
        let pack = match storage.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let offset = (pos % PACK_LEAVES) * 32;
        let size = pack.size().map_err(|e| Error::io(&path, e))?;
        let stored_count = (size.saturating_sub(offset) / 32).min(run.len() as u64) as usize;
        let Some(stored) = read_hashes(&*pack, offset, stored_count) else {
            continue;
        };
        for (i, (got, want)) in stored.iter().zip(run).enumerate() {
            if *got == [0; 32] {
                continue;
            }
            checked += 1;
            if got != want {
                let seq = pos + i as u64;
                let detail = format!(
                    "the stored leaf hash of seq {seq} differs from the hash of the record's chain hash"
                );
                problems.push(tile_problem(rel, Some(seq), offset + i as u64 * 32, detail));
                break;
            }
        }
    }
    Ok(checked)
}

/// Hashes of tree level `8 × level`, positions `first ..`, against the full
/// and partial tiles stored for them.
fn check_level(
    storage: &dyn Storage,
    dir: &Path,
    level: u8,
    first: u64,
    hashes: &[Hash],
    problems: &mut Vec<Problem>,
) -> Result<u64> {
    let width = TILE_WIDTH as u64;
    let end = first + hashes.len() as u64;
    let mut checked = 0;
    let mut index = first / width;
    while index * width < end {
        let tile_start = index * width;
        let full = tile_path(level, index, TILE_WIDTH);
        let mut files = vec![(full.clone(), TILE_WIDTH)];
        if let Ok(names) = storage.list(&dir.join(format!("{full}.p"))) {
            let mut widths: Vec<usize> = names
                .iter()
                .filter_map(|n| n.parse::<usize>().ok().filter(|w| w.to_string() == *n))
                .filter(|w| (1..TILE_WIDTH).contains(w))
                .collect();
            widths.sort_unstable();
            files.extend(widths.into_iter().map(|w| (tile_path(level, index, w), w)));
        }
        for (rel, w) in files {
            let path = dir.join(&rel);
            let tile = match storage.open(&path, false) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            // A file of another size is ignored by readers, as here.
            if tile.size().map_err(|e| Error::io(&path, e))? != (w * 32) as u64 {
                continue;
            }
            let lo = first.max(tile_start);
            let hi = end.min(tile_start + w as u64);
            if lo >= hi {
                continue;
            }
            let offset = (lo - tile_start) * 32;
            let Some(stored) = read_hashes(&*tile, offset, (hi - lo) as usize) else {
                continue;
            };
            let want = &hashes[(lo - first) as usize..(hi - first) as usize];
            for (i, (got, want)) in stored.iter().zip(want).enumerate() {
                checked += 1;
                if got != want {
                    let detail = format!(
                        "the stored hash at tree level {}, index {}, differs from the one computed from the records",
                        u32::from(level) * TILE_HEIGHT,
                        lo + i as u64
                    );
                    problems.push(tile_problem(rel, None, offset + i as u64 * 32, detail));
                    break;
                }
            }
        }
        index += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;
    use crate::verify::test_logs;
    use crate::verify::SegmentCheck;
    use crate::{Event, Timestamp};

    /// The index the frame scan builds is, byte for byte, the one a second
    /// pass over the segment builds: on one thread and in two halves, with
    /// names beyond ASCII (the decoder's slow path) and without a node.
    #[test]
    fn the_scan_builds_the_index_a_second_pass_builds() {
        let disk = SimDisk::new();
        let dir = Path::new(test_logs::DIR);
        let log = test_logs::small_segments(&disk);
        let mut i = 0;
        while log.state().segments < 4 {
            let actor = ["alice", "bob", "zoë", "李"][i % 4];
            let mut e = Event::new(Timestamp::from_unix_nanos(i as i64 % 97), "a.b", actor);
            if i % 3 > 0 {
                e.node = Some(format!("n{}", i % 5));
            }
            e.context
                .insert("pad".into(), "x".repeat(i * 13 % 300).into());
            log.append(&e).unwrap();
            i += 1;
        }
        log.close().unwrap();
        let mut bases: Vec<u64> = disk
            .list(dir)
            .unwrap()
            .iter()
            .filter_map(|n| segment::parse_file_name(n))
            .collect();
        bases.sort_unstable();
        let mut compared = 0;
        for &base in &bases[..bases.len() - 1] {
            let name = segment::file_name(base);
            let file = disk.open(&dir.join(&name), false).unwrap();
            let header = segment::read_header(&*file, &name).unwrap();
            let trailer = segment::read_trailer(&*file, &name, header.segment_bytes)
                .unwrap()
                .unwrap();
            for split in [false, true] {
                let r = SegmentCheck::run(
                    &disk,
                    dir,
                    file.clone(),
                    &name,
                    base,
                    false,
                    None,
                    split,
                    false,
                )
                .unwrap();
                assert!(r.problems.is_empty(), "{:?}", r.problems);
                let built = r.index.expect("a sealed segment with an index file");
                assert!(built.matches(&trailer));
                let again =
                    index::build_sealed(file.clone(), base, &trailer, built.block_bytes()).unwrap();
                assert!(built.encode() == again, "segment {base}, split {split}");
                compared += 1;
            }
        }
        assert!(compared >= 6);
    }
}
