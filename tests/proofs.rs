//! Merkle proofs from the tiles: inclusion and consistency proofs from real
//! logs of many segments, checked against an in-memory RFC 6962 tree and
//! against Go's golang.org/x/mod/sumdb/tlog (an outside implementation, when
//! Go is installed; `scripts/test.sh` installs it and sets
//! CHAINLOG_REQUIRE_GO=1); damaged and missing tiles; retention; bundles;
//! and the consistency proof `verify --checkpoint` prints.

#[path = "support/go.rs"]
mod go_support;
#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use chainlog::event::encode_record;
use chainlog::format::segment::MIN_SEGMENT_BYTES;
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner};
use chainlog::hash::merkle::{Frontier, Hash};
use chainlog::hash::proof::{self, MemoryTree, SubtreeSource};
use chainlog::query::bundle::{self, RowProblemKind};
use chainlog::query::export::{ExportFormat, ExportOptions, Exporter};
use chainlog::query::proofs::{ConsistencyProof, InclusionProof, ProveError};
use chainlog::retention::RetentionPolicy;
use chainlog::tiles;
use chainlog::{ChainHash, Durability, Event, Log, Options, Timestamp};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::None,
        ..Options::default()
    }
}

fn read_only() -> Options {
    Options {
        read_only: true,
        ..options()
    }
}

fn event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000_000),
        if i % 4 == 0 {
            "pcap.download"
        } else {
            "node.added"
        },
        format!("ops{}@acme.io", i % 3),
    );
    e.context.insert("i".into(), i.into());
    e
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("audit.acme.io", [42; 32]).unwrap()
}

/// Appends events `from..to` in batches; returns their chain hashes.
fn append(log: &Log, from: u64, to: u64) -> Vec<ChainHash> {
    let mut hashes = Vec::new();
    let mut i = from;
    while i < to {
        let end = (i + 500).min(to);
        let batch: Vec<Event> = (i..end).map(event).collect();
        hashes.extend(log.append_batch(&batch).unwrap().iter().map(|r| r.hash));
        i = end;
    }
    hashes
}

/// A closed log of `n` records over many 128 KiB segments (with their tiles
/// written), and the records' chain hashes.
fn build(dir: &Path, n: u64) -> Vec<ChainHash> {
    let log = Log::create(dir, options()).unwrap();
    let hashes = append(&log, 0, n);
    log.close().unwrap(); // waits for the sealed segments' tiles
    hashes
}

fn reference(hashes: &[ChainHash]) -> MemoryTree {
    let leaves: Vec<[u8; 32]> = hashes.iter().map(|h| h.0).collect();
    MemoryTree::new(&leaves)
}

fn root(tree: &mut MemoryTree, size: u64) -> Hash {
    proof::tree_root(tree, size).unwrap()
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            chainlog::format::segment::parse_file_name(&name)
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Every tile file, by its path relative to the log directory.
fn tile_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &dir.join("tile"), &mut out);
    out.sort();
    out
}

/// Leaf hashes in a full leaf pack.
const PACK_LEAVES: u64 = 256 * 256;

/// What tile file `path` must hold, from the in-memory tree (`len` bytes of
/// it for a leaf pack, which holds leaf hashes as far as they are known).
fn expected_tile(tree: &mut MemoryTree, path: &str, len: usize) -> Vec<u8> {
    if let Some(pack) = tiles::parse_leaf_pack_path(path) {
        assert!(
            len % 32 == 0 && len as u64 <= PACK_LEAVES * 32,
            "{path}: {len} bytes"
        );
        return (0..len as u64 / 32)
            .flat_map(|k| tree.subtree(0, pack * PACK_LEAVES + k).unwrap())
            .collect();
    }
    let (level, index, width) = tiles::parse_tile_path(path).expect(path);
    assert!(level > 0, "level-0 tiles are packed: {path}");
    (0..width as u64)
        .flat_map(|k| tree.subtree(8 * level, index * 256 + k).unwrap())
        .collect()
}

fn check_tiles_on_disk(dir: &Path, tree: &mut MemoryTree) -> usize {
    let files = tile_files(dir);
    for f in &files {
        assert!(!f.contains(".tmp"), "a temporary tile was left: {f}");
        let got = std::fs::read(dir.join(f)).unwrap();
        assert!(
            got == expected_tile(tree, f, got.len()),
            "tile {f} is wrong"
        );
    }
    files.len()
}

/// Leaf hashes stored in the leaf packs.
fn packed_leaves(dir: &Path) -> u64 {
    tile_files(dir)
        .iter()
        .filter(|f| tiles::parse_leaf_pack_path(f).is_some())
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len() / 32)
        .sum()
}

/// The byte range of level-0 tile `index` in its leaf pack, and the pack.
fn leaf_tile(dir: &Path, index: u64) -> (PathBuf, std::ops::Range<usize>) {
    let pack = dir.join(tiles::leaf_pack_path(index / 256));
    let start = (index % 256) as usize * 8192;
    (pack, start..start + 8192)
}

/// Flips a byte of level-0 tile `index`, `at` bytes into it.
fn flip_leaf_tile(dir: &Path, index: u64, at: usize) {
    let (pack, range) = leaf_tile(dir, index);
    flip(&pack, range.start + at);
}

// ---------------------------------------------------------------------------
// Go's tlog, an outside implementation.

fn go() -> Option<PathBuf> {
    go_support::notecheck("proofs")
}

/// Runs notecheck with `args` and the leaves on stdin; returns its stdout.
fn notecheck(tool: &Path, args: &[&str], leaves: &[ChainHash]) -> Result<String, String> {
    let input: String = leaves.iter().map(|h| format!("{h}\n")).collect();
    let out = output_with_stdin(Command::new(tool).args(args), input.as_bytes());
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------------------

#[test]
fn proofs_from_tiles_match_rfc6962_and_gos_tlog() {
    let dir = tempfile::tempdir().unwrap();
    // Over 65,536 records, so that the tree has level-2 tiles, in ~60 segments.
    let n = 70_000u64;
    let hashes = build(dir.path(), n);
    let mut tree = reference(&hashes);
    let bases = segment_bases(dir.path());
    assert!(bases.len() > 30, "{} segments", bases.len());
    let sealed_end = *bases.last().unwrap();
    // The tiles the seals wrote are exactly the tree's stored hashes.
    let count = check_tiles_on_disk(dir.path(), &mut tree);
    assert_eq!(
        packed_leaves(dir.path()),
        sealed_end,
        "every sealed leaf is packed"
    );
    // Two leaf packs, level-1 tile 0 full and 1 partial, level 2 partial.
    assert!(count >= 5, "{count} tile files");
    assert!(dir.path().join("tile/2/000.p/1").exists());

    let log = Log::open(dir.path(), read_only()).unwrap();
    let mut prover = log.prover().unwrap();
    assert_eq!(prover.tree_head().size, n);
    assert_eq!(prover.tree_head().root, root(&mut tree, n));
    let mut sizes = vec![
        1,
        2,
        255,
        256,
        257,
        bases[1],
        bases[1] + 1,
        65_535,
        65_536,
        65_537,
        sealed_end - 1,
        sealed_end,
        sealed_end + 1,
        n - 1,
        n,
    ];
    sizes.sort_unstable();
    for &size in &sizes {
        let r = root(&mut tree, size);
        let mut seqs = vec![0, size / 2, size - 1, 255.min(size - 1), 256.min(size - 1)];
        seqs.extend(bases.iter().copied().filter(|&b| b < size).step_by(7));
        for seq in seqs {
            let p = prover.inclusion(seq, size, &r).unwrap();
            assert_eq!(p.leaf, hashes[seq as usize]);
            assert_eq!(
                p.proof,
                proof::inclusion_proof(&mut tree, seq, size).unwrap(),
                "seq {seq} in {size}"
            );
            assert!(p.verify());
        }
        for &old in sizes.iter().filter(|&&o| o <= size) {
            let p = prover
                .consistency(old, &root(&mut tree, old), size, &r)
                .unwrap();
            assert_eq!(
                p.proof,
                proof::consistency_proof(&mut tree, old, size).unwrap(),
                "{old} -> {size}"
            );
            assert!(p.verify());
        }
    }
    // An intact log's tiles are used as they are: nothing was rebuilt.
    assert_eq!(prover.stats().tiles_rebuilt, 0, "{:?}", prover.stats());

    // One proof reads O(log n) tiles: at most two per tile level.
    for (seq, size) in [
        (12_345, n),
        (100, sealed_end),
        (65_535, 65_537),
        (69_000, n),
    ] {
        let mut fresh = log.prover().unwrap();
        let r = root(&mut tree, size);
        fresh.inclusion(seq, size, &r).unwrap();
        let stats = fresh.stats();
        assert!(stats.tiles_read <= 6, "seq {seq} of {size}: {stats:?}");
        assert!(stats.tile_bytes_read <= 6 * 8192, "{stats:?}");
    }

    let Some(tool) = go() else { return };
    let d = dir.path().to_str().unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, json: String| {
        let path = files.path().join(name);
        std::fs::write(&path, json).unwrap();
        path.to_str().unwrap().to_string()
    };
    // Go recomputes every tile file from the leaves.
    let checked = notecheck(&tool, &["tiles", d], &hashes).unwrap();
    assert_eq!(checked.trim(), count.to_string());
    // Inclusion: checked with CheckRecord, and made again with ProveRecord,
    // from the leaves and from our tiles (which Go authenticates).
    for (seq, size, use_tiles) in [
        (1234, sealed_end, true),
        (65_535, 65_537, true),
        (sealed_end - 1, sealed_end, true),
        (0, 65_536, true),
        (n - 1, n, false),
        (5, n, false),
        (sealed_end + 3, sealed_end + 10, false),
    ] {
        let p = prover.inclusion(seq, size, &root(&mut tree, size)).unwrap();
        let path = file("inclusion.json", serde_json::to_string(&p).unwrap());
        let mut args = vec!["inclusion", path.as_str()];
        if use_tiles {
            args.push(d);
        }
        let out = notecheck(&tool, &args, &hashes)
            .unwrap_or_else(|e| panic!("Go rejected the inclusion proof of {seq} in {size}: {e}"));
        assert_eq!(out.trim(), "ok");
        // A wrong proof fails in Go too.
        let mut bad = p.clone();
        bad.proof[0][0] ^= 1;
        let path = file("bad.json", serde_json::to_string(&bad).unwrap());
        assert!(notecheck(&tool, &["inclusion", path.as_str()], &hashes).is_err());
    }
    for (old, new, use_tiles) in [
        (1000, sealed_end, true),
        (65_536, sealed_end, true),
        (1, 65_537, true),
        (sealed_end, n, false),
        (300, n, false),
    ] {
        let p = prover
            .consistency(old, &root(&mut tree, old), new, &root(&mut tree, new))
            .unwrap();
        let path = file("consistency.json", serde_json::to_string(&p).unwrap());
        let mut args = vec!["consistency", path.as_str()];
        if use_tiles {
            args.push(d);
        }
        let out = notecheck(&tool, &args, &hashes)
            .unwrap_or_else(|e| panic!("Go rejected the consistency proof {old} -> {new}: {e}"));
        assert_eq!(out.trim(), "ok");
        let mut bad = p.clone();
        bad.old_size += 1;
        let path = file("bad.json", serde_json::to_string(&bad).unwrap());
        assert!(notecheck(&tool, &["consistency", path.as_str()], &hashes).is_err());
    }
    let _ = std::fs::remove_file(tool);
}

/// Every inclusion and consistency proof over a sample of sizes equals the
/// reference proof; returns how many tiles the prover rebuilt.
fn all_proofs_are_right(log: &Log, tree: &mut MemoryTree, n: u64, first: u64) -> u64 {
    let mut prover = log.prover().unwrap();
    let sizes = [first + 1, n / 3, n / 2 + 17, n - 300, n - 1, n];
    for size in sizes {
        let r = root(tree, size);
        let some = [first, size / 2, size - 1, (size / 2) | 255, first + 256];
        let fixed = [1000, 1100, 1300, 2600, 5200].map(|s| first + s);
        for seq in some.into_iter().chain(fixed) {
            if seq >= size || seq < first {
                continue;
            }
            let p = prover
                .inclusion(seq, size, &r)
                .unwrap_or_else(|e| panic!("seq {seq} of {size} (first {first}): {e}"));
            assert_eq!(p.proof, proof::inclusion_proof(tree, seq, size).unwrap());
            assert!(p.verify());
        }
        for old in [first, first + 1, (first + size) / 2, size - 1] {
            if old > size || old < first {
                continue;
            }
            let p = prover.consistency(old, &root(tree, old), size, &r).unwrap();
            assert_eq!(p.proof, proof::consistency_proof(tree, old, size).unwrap());
        }
    }
    prover.stats().tiles_rebuilt
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let path = e.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn missing_or_damaged_tiles_are_rebuilt_and_never_give_a_wrong_proof() {
    let dir = tempfile::tempdir().unwrap();
    let n = 9_000;
    let hashes = build(dir.path(), n);
    let mut tree = reference(&hashes);
    let d = dir.path();
    let log = Log::open(d, options()).unwrap();
    assert_eq!(all_proofs_are_right(&log, &mut tree, n, 0), 0);

    // Each kind of damage, then every proof again: right, and the tiles rebuilt.
    let (pack0, tile10) = leaf_tile(d, 10);
    // The widest partial level-1 tile: the one proofs read.
    let partial1 = tile_files(d)
        .into_iter()
        .filter(|f| f.starts_with("tile/1/000.p/"))
        .max_by_key(|f| tiles::parse_tile_path(f).unwrap().2)
        .unwrap();
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage> = vec![
        (
            "a level-0 tile changed",
            Box::new(|| flip_leaf_tile(d, 10, 100)),
        ),
        (
            "every level-0 tile changed",
            Box::new(|| {
                let len = std::fs::metadata(&pack0).unwrap().len() as usize;
                for at in (31..len).step_by(8192) {
                    flip(&pack0, at);
                }
            }),
        ),
        (
            "a level-1 tile changed",
            Box::new(|| flip(&d.join(&partial1), 33)),
        ),
        (
            "level-0 and level-1 tiles changed together",
            Box::new(|| {
                flip_leaf_tile(d, 3, 7);
                flip(&d.join(&partial1), 3 * 32 + 1);
            }),
        ),
        (
            "a leaf pack truncated in the middle of a tile",
            Box::new(|| {
                let bytes = std::fs::read(&pack0).unwrap();
                std::fs::write(&pack0, &bytes[..tile10.start + 1000]).unwrap();
            }),
        ),
        (
            "two level-0 tiles swapped",
            Box::new(|| {
                let mut bytes = std::fs::read(&pack0).unwrap();
                let (_, four) = leaf_tile(d, 4);
                let (first, second) = bytes[four.start..].split_at_mut(8192);
                first.swap_with_slice(&mut second[..8192]);
                std::fs::write(&pack0, bytes).unwrap();
            }),
        ),
        (
            "every tile replaced by zeros",
            Box::new(|| {
                for f in tile_files(d) {
                    let len = std::fs::metadata(d.join(&f)).unwrap().len();
                    std::fs::write(d.join(&f), vec![0; len as usize]).unwrap();
                }
            }),
        ),
        (
            "every tile deleted",
            Box::new(|| std::fs::remove_dir_all(d.join("tile")).unwrap()),
        ),
    ];
    for (what, damage) in damages {
        damage();
        let rebuilt = all_proofs_are_right(&log, &mut tree, n, 0);
        assert!(rebuilt > 0, "{what}: nothing was rebuilt");
        // A second prover finds the repaired tiles on disk.
        assert_eq!(all_proofs_are_right(&log, &mut tree, n, 0), 0, "{what}");
    }
    // What was rebuilt is right (every file on disk is what Go's tlog would write).
    check_tiles_on_disk(d, &mut tree);
    drop(log);

    // Through the command line too (a read-only process), against a checkpoint.
    let cp = {
        let log = Log::open(d, read_only()).unwrap();
        log.checkpoint("chainlog").unwrap()
    };
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("cp"), cp.sign(&signer()).unwrap()).unwrap();
    std::fs::write(files.path().join("key.pub"), signer().verifier().to_text()).unwrap();
    flip_leaf_tile(d, 20, 64);
    // Tiles 21 and after are cut off.
    let bytes = std::fs::read(&pack0).unwrap();
    std::fs::write(&pack0, &bytes[..leaf_tile(d, 21).1.start]).unwrap();
    for seq in [5120u64, 5400, 8999] {
        let out = cli(
            &[
                "--dir",
                d.to_str().unwrap(),
                "prove",
                "inclusion",
                "--seq",
                &seq.to_string(),
                "--checkpoint",
                files.path().join("cp").to_str().unwrap(),
                "--public-key",
                files.path().join("key.pub").to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.code, 0, "{out:?}");
        let p: InclusionProof = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(p.proof, proof::inclusion_proof(&mut tree, seq, n).unwrap());
        assert_eq!(p.root, cp.root);
    }
    check_tiles_on_disk(d, &mut tree);
}

#[test]
fn a_log_that_does_not_match_gives_no_proof() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = build(dir.path(), 3000);
    let mut tree = reference(&hashes);
    let log = Log::open(dir.path(), read_only()).unwrap();
    let mut prover = log.prover().unwrap();
    // A root the log does not have, at a size it has: no proof, an error.
    let mut wrong = root(&mut tree, 2000);
    wrong[0] ^= 1;
    assert!(matches!(
        prover.inclusion(10, 2000, &wrong),
        Err(ProveError::Mismatch(_))
    ));
    assert!(matches!(
        prover.consistency(1000, &root(&mut tree, 1000), 2000, &wrong),
        Err(ProveError::Mismatch(_))
    ));
    assert!(matches!(
        prover.consistency(1000, &wrong, 3000, &root(&mut tree, 3000)),
        Err(ProveError::Mismatch(_))
    ));
    // A wrong root is found without rebuilding anything.
    assert_eq!(prover.stats().tiles_rebuilt, 0);
    // A tree larger than the log: truncated.
    assert!(matches!(
        prover.inclusion(10, 3001, &root(&mut tree, 3000)),
        Err(ProveError::Mismatch(_))
    ));
    assert!(matches!(
        prover.inclusion(3000, 3000, &root(&mut tree, 3000)),
        Err(ProveError::OutOfRange(_))
    ));
    // Another log's checkpoint.
    let other = tempfile::tempdir().unwrap();
    build(other.path(), 100);
    let foreign = Log::open(other.path(), read_only())
        .unwrap()
        .checkpoint("chainlog")
        .unwrap();
    assert!(matches!(
        log.prove_inclusion(3, Some(&foreign)),
        Err(ProveError::Mismatch(_))
    ));
    // The right checkpoint works.
    let cp = log.checkpoint("chainlog").unwrap();
    let p = log.prove_inclusion(2999, Some(&cp)).unwrap();
    assert!(p.verify());
    assert_eq!(p.root, root(&mut tree, 3000));
}

#[test]
fn proofs_for_the_records_retention_kept_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut hashes = build(d, 12_000);
    let log = Log::open(d, options()).unwrap();
    let before = log.checkpoint("chainlog").unwrap();
    let early = {
        // A checkpoint from long before retention (at 2,000 records).
        let mut f = Frontier::new();
        for h in &hashes[..2000] {
            f.push(&h.0);
        }
        Checkpoint {
            origin: before.origin.clone(),
            size: 2000,
            root: f.root(),
            head: Some(hashes[1999]),
        }
    };
    let tiles_before = tile_files(d);
    let packed_before = packed_leaves(d);
    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(4 * MIN_SEGMENT_BYTES),
    };
    let outcome = log.apply_retention(&policy).unwrap();
    assert!(!outcome.deleted.is_empty());
    hashes.push(outcome.record.unwrap().hash);
    let n0 = hashes.len() as u64;
    hashes.extend(append(&log, n0, n0 + 700));
    let n = hashes.len() as u64;
    log.close().unwrap();
    let first = segment_bases(d)[0];
    assert!(first > 5000, "retention kept from seq {first}");
    // Retention deletes segments, not tiles.
    let after = tile_files(d);
    assert!(packed_before > 10_000, "{packed_before} leaves packed");
    assert!(tiles_before.iter().all(|f| after.contains(f)));
    assert!(packed_leaves(d) >= packed_before);

    let mut tree = reference(&hashes);
    let log = Log::open(d, options()).unwrap();
    assert_eq!(all_proofs_are_right(&log, &mut tree, n, first), 0);
    // A monitor's checkpoint from before retention still gets its proof.
    let p = log.prove_consistency(&early, None).unwrap();
    assert!(p.verify());
    assert_eq!(
        p.proof,
        proof::consistency_proof(&mut tree, 2000, n).unwrap()
    );
    let p = log.prove_inclusion(first + 10, Some(&before)).unwrap();
    assert!(p.verify());
    // A record retention deleted has no proof.
    assert!(matches!(
        log.prove_inclusion(first - 1, None),
        Err(ProveError::Unavailable(_))
    ));

    let saved = tempfile::tempdir().unwrap();
    copy_tree(&d.join("tile"), &saved.path().join("tile"));
    // Without the tiles over the deleted records, the remaining records'
    // proofs come from the link block of the oldest segment.
    for f in &after {
        if tiles::parse_leaf_pack_path(f).is_some() {
            // Packs cannot lose a prefix: zero the level-0 tiles instead.
            let mut bytes = std::fs::read(d.join(f)).unwrap();
            bytes[..(first as usize / 256) * 8192].fill(0);
            std::fs::write(d.join(f), bytes).unwrap();
            continue;
        }
        let (level, index, _) = tiles::parse_tile_path(f).unwrap();
        let span = 1u64 << (8 * (u32::from(level) + 1));
        if (index + 1) * span <= first + 256 {
            std::fs::remove_file(d.join(f)).unwrap();
        }
    }
    all_proofs_are_right(&log, &mut tree, n, first);
    // Without any tile at all.
    std::fs::remove_dir_all(d.join("tile")).unwrap();
    all_proofs_are_right(&log, &mut tree, n, first);
    // Damaged tiles over the deleted records cannot be rebuilt: still no
    // wrong proof. (The tiles are back first, as retention left them.)
    std::fs::remove_dir_all(d.join("tile")).unwrap();
    copy_tree(&saved.path().join("tile"), &d.join("tile"));
    flip_leaf_tile(d, first / 256, 5);
    flip_leaf_tile(d, first / 256 - 1, 5);
    let level1 = tile_files(d)
        .into_iter()
        .filter(|f| f.starts_with("tile/1/000"))
        .max_by_key(|f| tiles::parse_tile_path(f).unwrap().2)
        .unwrap();
    flip(&d.join(level1), 32 * (first as usize / 256 - 2) + 9);
    all_proofs_are_right(&log, &mut tree, n, first);
    std::fs::remove_dir_all(d.join("tile")).unwrap();
    // ... and the old checkpoint's consistency proof now needs hashes that are gone.
    match log.prove_consistency(&early, None) {
        Err(ProveError::Unavailable(_)) => {}
        Ok(p) => assert_eq!(
            p.proof,
            proof::consistency_proof(&mut tree, 2000, n).unwrap()
        ),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------
// The command line: bundles, and verify's consistency proof.

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn cli(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A log with a signed checkpoint at `at` records, then `n` records in all;
/// returns the log's hashes and the paths of the checkpoint and public key.
struct Fixture {
    dir: tempfile::TempDir,
    hashes: Vec<ChainHash>,
    checkpoint: PathBuf,
    public_key: PathBuf,
}

impl Fixture {
    fn new(at: u64, n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("log"), options()).unwrap();
        let mut hashes = append(&log, 0, at);
        let note = log.checkpoint("chainlog").unwrap().sign(&signer()).unwrap();
        hashes.extend(append(&log, at, n));
        log.close().unwrap();
        let checkpoint = dir.path().join("old.checkpoint");
        std::fs::write(&checkpoint, note).unwrap();
        let public_key = dir.path().join("key.pub");
        std::fs::write(&public_key, signer().verifier().to_text()).unwrap();
        Fixture {
            dir,
            hashes,
            checkpoint,
            public_key,
        }
    }

    fn log(&self) -> String {
        self.dir.path().join("log").to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn check(&self, bundle: &str) -> Run {
        cli(
            &[
                "check-bundle",
                bundle,
                "--public-key",
                self.public_key.to_str().unwrap(),
            ],
            None,
        )
    }
}

/// The export row fields of `record` at `seq` with `hash`, as JSON.
fn event_json(seq: u64, hash: &ChainHash, record: &[u8]) -> Value {
    let view = chainlog::event::decode_record(2, record).unwrap();
    let mut out = Vec::new();
    let mut ex = Exporter::new(&mut out, ExportOptions::new(ExportFormat::JsonLines)).unwrap();
    ex.write_view(seq, hash, &view).unwrap();
    drop(ex);
    serde_json::from_slice(&out).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn bundles_check_out_offline_and_every_kind_of_tampering_is_named() {
    let fx = Fixture::new(2500, 3200);
    let bundle_path = fx.path("bundle.json");
    let out = cli(
        &[
            "--dir",
            &fx.log(),
            "export",
            "--format",
            "bundle",
            "--actor",
            "ops1@acme.io",
            "--checkpoint",
            fx.checkpoint.to_str().unwrap(),
            "--output",
            &bundle_path,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(&bundle_path).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle["format"], "chainlog-bundle/v1");
    let rows = bundle["rows"].as_array().unwrap().clone();
    // Every ops1 record below the checkpoint's size, and none after it.
    let expected: Vec<u64> = (0..2500).filter(|i| i % 3 == 1).collect();
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, expected);
    // Each row's hash is recomputed from its content, and its event is the
    // normal export row.
    for row in &rows {
        let seq = row["seq"].as_u64().unwrap();
        let prev: ChainHash = row["prev_hash"].as_str().unwrap().parse().unwrap();
        let record = base64::engine::general_purpose::STANDARD
            .decode(row["record"].as_str().unwrap())
            .unwrap();
        assert_eq!(prev.next(seq, &record), fx.hashes[seq as usize]);
        assert_eq!(row["event"]["actor"], "ops1@acme.io");
        assert_eq!(row["event"]["seq"], seq);
    }
    let ok = fx.check(&bundle_path);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout
            .contains(&format!("bundle intact: {} rows", rows.len())),
        "{ok:?}"
    );
    // The library's checker agrees.
    let report = bundle::check(
        std::fs::File::open(&bundle_path).unwrap(),
        &signer().verifier(),
    )
    .unwrap();
    assert!(report.is_intact());
    assert_eq!(report.rows, rows.len() as u64);
    assert_eq!(report.tree_size, 2500);

    let write = |name: &str, value: &Value| {
        let path = fx.path(name);
        std::fs::write(&path, serde_json::to_string(value).unwrap()).unwrap();
        path
    };
    let expect_row_problem = |name: &str, value: &Value, seq: u64, kind: &str| {
        let path = write(name, value);
        let out = fx.check(&path);
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert!(
            out.stdout.contains(&format!("{kind}: seq {seq} ")),
            "{name}: {out:?}"
        );
        out
    };

    // A changed row: an event field edited.
    let mut changed = bundle.clone();
    let seq5 = rows[5]["seq"].as_u64().unwrap();
    changed["rows"][5]["event"]["actor"] = "mallory@acme.io".into();
    expect_row_problem("changed.json", &changed, seq5, "event_mismatch");
    // The row's provenance is checked against the record bytes too.
    for (field, value) in [
        ("appender", json!("someone-else")),
        ("origin", json!("engine")),
        ("received_at", json!("2020-01-01T00:00:00Z")),
        ("received_at", Value::Null),
    ] {
        let mut changed = bundle.clone();
        assert!(rows[5]["event"][field].is_string(), "{}", rows[5]["event"]);
        changed["rows"][5]["event"][field] = value;
        let out = expect_row_problem("changed.json", &changed, seq5, "event_mismatch");
        assert!(out.stdout.contains(field), "{field}: {out:?}");
    }
    // A changed record (the bytes) with the hash left alone.
    let mut changed = bundle.clone();
    let mut record = base64::engine::general_purpose::STANDARD
        .decode(rows[6]["record"].as_str().unwrap())
        .unwrap();
    let last = record.len() - 2;
    record[last] ^= 0x01;
    changed["rows"][6]["record"] = b64(&record).into();
    let out = expect_row_problem(
        "changed_bytes.json",
        &changed,
        rows[6]["seq"].as_u64().unwrap(),
        "hash_mismatch",
    );
    assert!(!out.stdout.contains("not_included"), "{out:?}");

    // A forged row: new record bytes, a recomputed hash, consistent event
    // fields; only the proof gives it away.
    let mut forged = bundle.clone();
    let seq7 = rows[7]["seq"].as_u64().unwrap();
    let prev: ChainHash = rows[7]["prev_hash"].as_str().unwrap().parse().unwrap();
    let mut fake = event(seq7);
    fake.actor = "ops1@acme.io".into();
    fake.context.insert("forged".into(), true.into());
    let mut bytes = Vec::new();
    chainlog::event::record::encode_provenance(
        Timestamp::from_unix_nanos(1),
        chainlog::event::Origin::Client,
        "forger",
        &mut bytes,
    )
    .unwrap();
    encode_record(&fake, &mut bytes).unwrap();
    let hash = prev.next(seq7, &bytes);
    forged["rows"][7]["record"] = b64(&bytes).into();
    forged["rows"][7]["hash"] = hash.to_hex().into();
    forged["rows"][7]["event"] = event_json(seq7, &hash, &bytes);
    let out = expect_row_problem("forged.json", &forged, seq7, "not_included");
    assert!(!out.stdout.contains("hash_mismatch"), "{out:?}");
    assert!(!out.stdout.contains("event_mismatch"), "{out:?}");

    // A row moved to another seq.
    let mut moved = bundle.clone();
    let seq3 = rows[3]["seq"].as_u64().unwrap();
    moved["rows"][3]["seq"] = (seq3 + 1).into();
    moved["rows"][3]["event"]["seq"] = (seq3 + 1).into();
    expect_row_problem("moved.json", &moved, seq3 + 1, "hash_mismatch");
    // ... even with a hash that fits the new seq: then it is not in the tree there.
    let prev: ChainHash = rows[3]["prev_hash"].as_str().unwrap().parse().unwrap();
    let record = base64::engine::general_purpose::STANDARD
        .decode(rows[3]["record"].as_str().unwrap())
        .unwrap();
    let rehashed = prev.next(seq3 + 1, &record);
    moved["rows"][3]["hash"] = rehashed.to_hex().into();
    moved["rows"][3]["event"] = event_json(seq3 + 1, &rehashed, &record);
    expect_row_problem("moved2.json", &moved, seq3 + 1, "not_included");

    // The library names the row too.
    let report = bundle::check(
        std::fs::File::open(fx.path("forged.json")).unwrap(),
        &signer().verifier(),
    )
    .unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].seq, seq7);
    assert_eq!(report.problems[0].row, 7);
    assert_eq!(report.problems[0].kind, RowProblemKind::NotIncluded);

    // A checkpoint signed by another key (say, over a forged root).
    let other = NoteSigner::from_seed("audit.acme.io", [7; 32]).unwrap();
    let mut cp = bundle::parse_unverified(bundle["checkpoint"].as_str().unwrap()).unwrap();
    let mut resigned = bundle.clone();
    resigned["checkpoint"] = cp.sign(&other).unwrap().into();
    let out = fx.check(&write("other_key.json", &resigned));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no signature by key"), "{out:?}");
    cp.root[0] ^= 1;
    let mut changed_note = bundle.clone();
    let note = bundle["checkpoint"].as_str().unwrap();
    let sig = &note[note.rfind("\n\n").unwrap()..];
    changed_note["checkpoint"] = format!("{}{}", cp.body().trim_end_matches('\n'), sig).into();
    let out = fx.check(&write("changed_note.json", &changed_note));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("does not verify"), "{out:?}");

    // Garbled files: exit 2.
    let half = fx.path("half.json");
    std::fs::write(&half, &text[..text.len() / 2]).unwrap();
    let junk = fx.path("junk.json");
    std::fs::write(&junk, "this is not a bundle").unwrap();
    let mut v2 = bundle.clone();
    v2["format"] = "chainlog-bundle/v2".into();
    let mut no_rows = bundle.clone();
    no_rows.as_object_mut().unwrap().remove("rows");
    let mut bad_hash = bundle.clone();
    bad_hash["rows"][0]["hash"] = "xyz".into();
    for path in [
        half,
        junk,
        write("v2.json", &v2),
        write("no_rows.json", &no_rows),
        write("bad_hash.json", &bad_hash),
    ] {
        let out = fx.check(&path);
        assert_eq!(out.code, 2, "{path}: {out:?}");
        assert!(out.stderr.contains("not a chainlog bundle"), "{out:?}");
    }

    // Exporting against another log's checkpoint fails (exit 1).
    let other_log = tempfile::tempdir().unwrap();
    build(other_log.path(), 10);
    let out = cli(
        &[
            "--dir",
            other_log.path().to_str().unwrap(),
            "export",
            "--format",
            "bundle",
            "--checkpoint",
            fx.checkpoint.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    // And --format bundle needs a checkpoint.
    let out = cli(&["--dir", &fx.log(), "export", "--format", "bundle"], None);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn verify_against_an_old_checkpoint_prints_the_consistency_proof() {
    let fx = Fixture::new(1800, 4100);
    let args = [
        "--dir",
        &fx.log(),
        "verify",
        "--checkpoint",
        fx.checkpoint.to_str().unwrap(),
        "--public-key",
        fx.public_key.to_str().unwrap(),
    ];
    let out = cli(&args, None);
    assert_eq!(out.code, 0, "{out:?}");
    let last = out.stdout.lines().last().unwrap();
    let p: ConsistencyProof = serde_json::from_str(last).unwrap();
    let log = Log::open(fx.log(), read_only()).unwrap();
    let head = log.tree_head().unwrap();
    assert_eq!((p.old_size, p.new_size), (1800, 4100));
    assert_eq!(p.new_root, head.root);
    assert!(p.verify());
    let mut tree = reference(&fx.hashes);
    assert_eq!(p.old_root, root(&mut tree, 1800));
    assert_eq!(
        p.proof,
        proof::consistency_proof(&mut tree, 1800, 4100).unwrap()
    );
    // In --json, as the report's "consistency".
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = cli(&json_args, None);
    assert_eq!(out.code, 0, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let again: ConsistencyProof = serde_json::from_value(report["consistency"].clone()).unwrap();
    assert_eq!(again, p);

    // `prove consistency` with two checkpoints gives the same proof.
    let new = fx.path("new.checkpoint");
    std::fs::write(
        &new,
        log.checkpoint("chainlog").unwrap().sign(&signer()).unwrap(),
    )
    .unwrap();
    let out = cli(
        &[
            "--dir",
            &fx.log(),
            "prove",
            "consistency",
            "--old",
            fx.checkpoint.to_str().unwrap(),
            "--new",
            &new,
            "--public-key",
            fx.public_key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let proved: ConsistencyProof = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(proved, p);
    // Old and new swapped: not a consistency proof request the log can answer.
    let out = cli(
        &[
            "--dir",
            &fx.log(),
            "prove",
            "consistency",
            "--old",
            &new,
            "--new",
            fx.checkpoint.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");

    // A log that has not grown: no proof line.
    let out = cli(
        &[
            "--dir",
            &fx.log(),
            "verify",
            "--checkpoint",
            &new,
            "--public-key",
            fx.public_key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("old_size"), "{out:?}");

    // `prove inclusion` against the current tree.
    let out = cli(
        &["--dir", &fx.log(), "prove", "inclusion", "--seq", "4000"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let inc: InclusionProof = serde_json::from_str(out.stdout.trim()).unwrap();
    assert!(inc.verify());
    assert_eq!(inc.root, head.root);
    assert_eq!(inc.leaf, fx.hashes[4000]);
    let out = cli(
        &["--dir", &fx.log(), "prove", "inclusion", "--seq", "4100"],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn tiles_are_written_when_segments_seal_beside_an_open_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), options()).unwrap();
    let hashes = append(&log, 0, 5000);
    let bases: Vec<u64> = segment_bases(dir.path());
    let sealed_end = *bases.last().unwrap();
    // Written in the background: wait for the last seal's leaf hashes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while packed_leaves(dir.path()) < sealed_end {
        assert!(
            std::time::Instant::now() < deadline,
            "{} leaves packed, {sealed_end} sealed",
            packed_leaves(dir.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Proofs from the open log, as it grows (some records in the active segment).
    let mut hashes = hashes;
    for extra in [0u64, 1, 999] {
        let n = hashes.len() as u64;
        hashes.extend(append(&log, n, n + extra));
        let n = hashes.len() as u64;
        let mut tree = reference(&hashes);
        for seq in [n / 3, sealed_end - 1, n - 1] {
            let p = log.prove_inclusion(seq, None).unwrap();
            assert_eq!(p.proof, proof::inclusion_proof(&mut tree, seq, n).unwrap());
            assert_eq!(p.root, log.tree_head().unwrap().root);
        }
    }
    drop(log);
}
