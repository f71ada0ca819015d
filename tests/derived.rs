//! Derived data cannot lie: a query trusts an index that passes its CRCs,
//! so the verifier compares every sealed segment's index with one rebuilt
//! from the frames, and the stored tiles with the tree it computes. A
//! consistently forged index or tile fails `verify`; a missing or torn one
//! does not; and over any log `verify` calls intact, a query gives what a
//! full scan gives.

use std::path::{Path, PathBuf};
use std::process::Command;

use chainlog::format::segment::MIN_SEGMENT_BYTES;
use chainlog::hash::checkpoint::NoteSigner;
use chainlog::query::{EventPattern, Filter, Query};
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir, verify_dir_with, ProblemKind, Report, VerifyOptions};
use chainlog::{ChainHash, Durability, Event, Log, Options, Record, Timestamp};
use proptest::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_chainlog");
const ACTORS: [&str; 4] = ["alice@acme.io", "bob@acme.io", "deploy-bot", "rare@acme.io"];
const EVENTS: [&str; 3] = ["pcap.download", "auth.login", "node.added"];

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::None,
        index_block_bytes: 1024,
        ..Options::default()
    }
}

fn event(i: u64) -> Event {
    let ts = 1_700_000_000_000_000_000 + i as i64 * 60_000_000_000;
    // "rare" appears 8 times in the first segment, in different blocks.
    let actor = if i % 40 == 7 && i < 320 {
        ACTORS[3]
    } else {
        ACTORS[(i % 3) as usize]
    };
    let mut e = Event::new(
        Timestamp::from_unix_nanos(ts),
        EVENTS[(i % 3) as usize],
        actor,
    );
    e.node = (i % 4 != 0).then(|| format!("node-{}", i % 5));
    e.context.insert("i".into(), i.into());
    e.context.insert("pad".into(), "x".repeat(120).into());
    e
}

/// A closed log of `n` records over several sealed segments, their indexes
/// and tiles written.
fn build(dir: &Path, n: u64) -> PathBuf {
    let log = Log::create(dir, options()).unwrap();
    let events: Vec<Event> = (0..n).map(event).collect();
    for chunk in events.chunks(50) {
        log.append_batch(chunk).unwrap();
    }
    log.close().unwrap();
    dir.join(chainlog::index::file_name(0))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Section `i`'s (offset, length) from the table (docs/FORMAT.md, "Index file").
fn section(b: &[u8], i: usize) -> (usize, usize) {
    let e = 76 + 16 * i;
    (u32_at(b, e) as usize, u32_at(b, e + 4) as usize)
}

/// Directory `dir_section`'s entries: (value, offset of the entry's fixed
/// part), as far as they lie in the file (a forged byte may break them).
fn entries(b: &[u8], dir_section: usize) -> Vec<(String, usize)> {
    let (at, len) = section(b, dir_section);
    let end = (at + len).min(b.len());
    let mut pos = at;
    let mut out = Vec::new();
    while pos + 2 <= end {
        let n = u16::from_le_bytes([b[pos], b[pos + 1]]) as usize;
        if pos + 2 + n + 16 > end {
            break;
        }
        let value = String::from_utf8_lossy(&b[pos + 2..pos + 2 + n]).into_owned();
        out.push((value, pos + 2 + n));
        pos += 2 + n + 16;
    }
    out
}

/// Recomputes every CRC of an index file, as a forger would: each posting
/// list's (in its directory entry), each section's, the header's.
fn recompute_crcs(b: &mut [u8]) {
    let (postings_at, _) = section(b, 6);
    for dir in 3..=5 {
        for (_, fixed) in entries(b, dir) {
            let (at, len) = (u32_at(b, fixed) as usize, u32_at(b, fixed + 4) as usize);
            let start = postings_at.saturating_add(at).min(b.len());
            let end = start.saturating_add(len).min(b.len());
            let crc = crc32c::crc32c(&b[start..end]);
            put_u32(b, fixed + 12, crc);
        }
    }
    for i in 0..7 {
        let (at, len) = section(b, i);
        let end = at.saturating_add(len).min(b.len());
        let crc = crc32c::crc32c(&b[at.min(end)..end]);
        put_u32(b, 76 + 16 * i + 8, crc);
    }
    let crc = crc32c::crc32c(&b[..188]);
    put_u32(b, 188, crc);
}

/// Rewrites `actor`'s posting list to name one block it is not in, with
/// every CRC recomputed.
fn forge_posting_list(idx: &Path, actor: &str) {
    let mut b = std::fs::read(idx).unwrap();
    let (_, fixed) = entries(&b, 3)
        .into_iter()
        .find(|(v, _)| v == actor)
        .unwrap();
    let (postings_at, _) = section(&b, 6);
    let at = postings_at + u32_at(&b, fixed) as usize;
    let first_block = b[at];
    assert!(first_block < 0x80);
    // One block, encoded in one byte: the block after its first one.
    b[at] = first_block + 1;
    put_u32(&mut b, fixed + 4, 1);
    put_u32(&mut b, fixed + 8, 1);
    recompute_crcs(&mut b);
    std::fs::write(idx, b).unwrap();
}

fn query_seqs(log: &Log, q: &Query) -> Vec<u64> {
    log.query(q).unwrap().map(|m| m.unwrap().seq).collect()
}

fn scan_seqs(log: &Log, q: &Query) -> Vec<u64> {
    let all: Vec<Record> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    all.iter()
        .filter(|r| {
            let mut bytes = Vec::new();
            chainlog::event::encode_record(&r.event, &mut bytes).unwrap();
            let view = chainlog::event::record::decode_record(1, &bytes).unwrap();
            q.filter.matches(&view)
        })
        .map(|r| r.seq)
        .collect()
}

fn actor_query(actor: &str) -> Query {
    Query {
        filter: Filter {
            actors: vec![actor.to_string()],
            ..Filter::default()
        },
        ..Query::default()
    }
}

fn kinds(report: &Report) -> Vec<ProblemKind> {
    report.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn a_consistently_forged_posting_list_fails_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = build(tmp.path(), 1200);
    let clean = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(clean.is_intact(), "{:#?}", clean.problems);
    assert!(clean.derived.indexes_checked >= 2, "{:?}", clean.derived);

    forge_posting_list(&idx, ACTORS[3]);
    // The forgery works on queries: the index passes its CRCs and hides rows.
    let log = Log::open(
        tmp.path(),
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    let q = actor_query(ACTORS[3]);
    let (got, all) = (query_seqs(&log, &q), scan_seqs(&log, &q));
    assert_eq!(all.len(), 8);
    assert!(got.len() < all.len(), "query {got:?}, scan {all:?}");
    drop(log);

    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(!report.is_intact());
    assert_eq!(kinds(&report), vec![ProblemKind::IndexMismatch]);
    let p = &report.problems[0];
    assert_eq!(p.segment, chainlog::index::file_name(0));
    assert_eq!(p.seq, None);
    assert!(p.detail.contains("actor directory"), "{}", p.detail);
}

#[test]
fn missing_and_torn_indexes_are_not_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = build(tmp.path(), 1200);
    let second = tmp.path().join(chainlog::index::file_name({
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".idx"))
            .collect();
        names.sort();
        names[1].trim_end_matches(".idx").parse().unwrap()
    }));
    // A torn posting list (its CRC fails: a reader rebuilds) and a lost file.
    let mut b = std::fs::read(&idx).unwrap();
    let (postings_at, _) = section(&b, 6);
    b[postings_at] ^= 0x01;
    std::fs::write(&idx, &b).unwrap();
    std::fs::remove_file(&second).unwrap();
    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert!(
        report.derived.indexes_unchecked >= 1,
        "{:?}",
        report.derived
    );
    // A torn header: the whole file is untrusted, so unchecked.
    b[20] ^= 0x01;
    std::fs::write(&idx, &b).unwrap();
    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert!(
        report.derived.indexes_unchecked >= 2,
        "{:?}",
        report.derived
    );
}

#[test]
fn the_head_of_an_empty_log_is_its_genesis_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::create(tmp.path(), options()).unwrap();
    let id = log.state().log_id;
    log.close().unwrap();
    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact());
    assert_eq!(report.head, Some(ChainHash::genesis(&id)));
}

/// Leaf pack 0 of the log in `dir`.
fn leaf_pack(dir: &Path) -> PathBuf {
    dir.join(chainlog::tiles::leaf_pack_path(0))
}

#[test]
fn a_forged_leaf_hash_fails_verify_against_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path(), 1200);
    let log = Log::open(tmp.path(), options()).unwrap();
    let signer = NoteSigner::from_seed("audit.acme.io", [42; 32]).unwrap();
    let cp = log.checkpoint("chainlog").unwrap();
    let signed = cp.sign(&signer).unwrap();
    let cp = chainlog::hash::checkpoint::Checkpoint::open(&signed, &signer.verifier()).unwrap();
    log.close().unwrap();
    let options = VerifyOptions {
        threads: 2,
        checkpoint: Some(cp),
    };
    let clean = verify_dir_with(&FsStorage, tmp.path(), &options, &mut |_| {}).unwrap();
    assert!(clean.is_intact(), "{:#?}", clean.problems);
    assert!(clean.derived.tile_hashes_checked > 0, "{:?}", clean.derived);

    // Leaf 5's stored hash replaced by leaf 6's: a well-formed lie.
    let pack = leaf_pack(tmp.path());
    let mut b = std::fs::read(&pack).unwrap();
    let six: Vec<u8> = b[6 * 32..7 * 32].to_vec();
    b[5 * 32..6 * 32].copy_from_slice(&six);
    std::fs::write(&pack, &b).unwrap();
    let report = verify_dir_with(&FsStorage, tmp.path(), &options, &mut |_| {}).unwrap();
    assert_eq!(kinds(&report), vec![ProblemKind::TileMismatch]);
    assert_eq!(report.problems[0].seq, Some(5));
    assert_eq!(report.problems[0].offset, 5 * 32);
    assert_eq!(
        report.problems[0].segment,
        chainlog::tiles::leaf_pack_path(0)
    );
    // Without a checkpoint the tree is not built, and tiles are not read.
    let plain = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(plain.is_intact(), "{:#?}", plain.problems);
}

/// A random forgery of a random index file: a byte flipped (CRCs
/// recomputed or not), or a posting list rewritten to name another block.
#[derive(Debug, Clone)]
enum Forgery {
    Byte {
        file: usize,
        byte: usize,
        xor: u8,
        recompute: bool,
    },
    Posting {
        file: usize,
        dir: usize,
        entry: usize,
        block: u8,
    },
}

fn forgery() -> impl Strategy<Value = Option<Forgery>> {
    let byte = (0..8usize, any::<usize>(), 1..=255u8, any::<bool>()).prop_map(
        |(file, byte, xor, recompute)| Forgery::Byte {
            file,
            byte,
            xor,
            recompute,
        },
    );
    let posting =
        (0..8usize, 3..=5usize, any::<usize>(), 0..24u8).prop_map(|(file, dir, entry, block)| {
            Forgery::Posting {
                file,
                dir,
                entry,
                block,
            }
        });
    proptest::option::weighted(0.9, prop_oneof![byte, posting])
}

/// Applies `f` to the index files `indexes`.
fn apply(f: &Forgery, indexes: &[PathBuf]) {
    match *f {
        Forgery::Byte {
            file,
            byte,
            xor,
            recompute,
        } => {
            let idx = &indexes[file % indexes.len()];
            let mut b = std::fs::read(idx).unwrap();
            // Past the magic and version, which a reader checks first.
            let at = 12 + byte % (b.len() - 12);
            b[at] ^= xor;
            if recompute && at >= 192 {
                recompute_crcs(&mut b);
            } else if recompute {
                let crc = crc32c::crc32c(&b[..188]);
                put_u32(&mut b, 188, crc);
            }
            std::fs::write(idx, b).unwrap();
        }
        Forgery::Posting {
            file,
            dir,
            entry,
            block,
        } => {
            let idx = &indexes[file % indexes.len()];
            let mut b = std::fs::read(idx).unwrap();
            let list = entries(&b, dir);
            if list.is_empty() {
                return;
            }
            let fixed = list[entry % list.len()].1;
            let (postings_at, _) = section(&b, 6);
            let at = postings_at + u32_at(&b, fixed) as usize;
            if at >= b.len() {
                return;
            }
            b[at] = block;
            put_u32(&mut b, fixed + 4, 1);
            put_u32(&mut b, fixed + 8, 1);
            recompute_crcs(&mut b);
            std::fs::write(idx, b).unwrap();
        }
    }
}

fn filter() -> impl Strategy<Value = Query> {
    (
        proptest::collection::vec(0..ACTORS.len(), 0..3),
        proptest::collection::vec(0..EVENTS.len(), 0..2),
        proptest::collection::vec(0..5u64, 0..2),
    )
        .prop_map(|(actors, events, nodes)| Query {
            filter: Filter {
                actors: actors.into_iter().map(|i| ACTORS[i].to_string()).collect(),
                event_types: events
                    .into_iter()
                    .map(|i| EventPattern::Exact(EVENTS[i].into()))
                    .collect(),
                nodes: nodes.into_iter().map(|n| format!("node-{n}")).collect(),
                ..Filter::default()
            },
            ..Query::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Over any log verify calls intact, whatever was done to its indexes,
    /// queries give what a full scan gives.
    #[test]
    fn an_intact_verdict_means_queries_are_right(
        forged in forgery(),
        queries in proptest::collection::vec(filter(), 6),
    ) {
        use std::sync::OnceLock;
        static CLEAN: OnceLock<tempfile::TempDir> = OnceLock::new();
        let clean = CLEAN.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            build(dir.path(), 1200);
            dir
        });
        let tmp = tempfile::tempdir().unwrap();
        let mut indexes = Vec::new();
        for entry in std::fs::read_dir(clean.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_owned();
                std::fs::copy(&path, tmp.path().join(&name)).unwrap();
                if name.to_string_lossy().ends_with(".idx") {
                    indexes.push(tmp.path().join(name));
                }
            }
        }
        indexes.sort();
        if let Some(f) = &forged {
            apply(f, &indexes);
        }
        let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
        let log = Log::open(tmp.path(), Options { read_only: true, ..options() }).unwrap();
        let mut wrong = false;
        for q in &queries {
            // A damaged index may make a query fail; it must never answer wrong.
            let got: Result<Vec<u64>, _> = log
                .query(q)
                .and_then(|it| it.map(|m| m.map(|m| m.seq)).collect());
            if let Ok(got) = got {
                wrong |= got != scan_seqs(&log, q);
            }
        }
        prop_assert!(
            !(wrong && report.is_intact()),
            "queries answered wrong over a log verify calls intact: {forged:?}"
        );
        if forged.is_none() {
            prop_assert!(report.is_intact() && !wrong);
        }
    }
}

// The CLI, as an auditor runs it.

fn chainlog(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("CHAINLOG_DIR")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cli_verify_fails_on_a_forged_index_that_fools_query() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = build(tmp.path(), 1200);
    let (code, out, _) = chainlog(
        tmp.path(),
        &["query", "--actor", ACTORS[3], "--format", "jsonl"],
    );
    assert_eq!((code, out.lines().count()), (0, 8));
    forge_posting_list(&idx, ACTORS[3]);
    let (code, out, err) = chainlog(
        tmp.path(),
        &["query", "--actor", ACTORS[3], "--format", "jsonl"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().count() < 8,
        "the forgery hides rows from queries"
    );
    let (code, out, err) = chainlog(tmp.path(), &["verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("index_mismatch"), "{out}");
    let (code, out, _) = chainlog(tmp.path(), &["verify", "--json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"][0]["kind"], "index_mismatch");
    assert_eq!(report["problems"][0]["seq"], serde_json::Value::Null);
}

#[test]
fn cli_verify_checkpoint_reports_a_forged_tile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    build(&dir, 1200);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (key, public, cp) = (
        tmp.path().join("key"),
        tmp.path().join("key.pub"),
        tmp.path().join("cp"),
    );
    let (code, _, err) = chainlog(
        &dir,
        &[
            "-q",
            "keygen",
            "--secret-key",
            &s(&key),
            "--public-key",
            &s(&public),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = chainlog(
        &dir,
        &["-q", "checkpoint", "--secret-key", &s(&key), "-o", &s(&cp)],
    );
    assert_eq!(code, 0, "{err}");
    let verify = [
        "verify",
        "--checkpoint",
        &s(&cp),
        "--public-key",
        &s(&public),
    ];
    let (code, out, err) = chainlog(&dir, &verify);
    assert_eq!(code, 0, "{out}{err}");
    let pack = leaf_pack(&dir);
    let mut b = std::fs::read(&pack).unwrap();
    b[40] ^= 0x80;
    std::fs::write(&pack, &b).unwrap();
    let (code, out, err) = chainlog(&dir, &verify);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("tile_mismatch"), "{out}");
}

#[test]
fn cli_verify_and_stats_agree_on_the_head_of_a_new_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = chainlog(tmp.path(), &["init"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = chainlog(tmp.path(), &["stats", "--json"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (code, out, _) = chainlog(tmp.path(), &["verify", "--json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(stats["head"].is_string(), "{stats}");
    assert_eq!(report["head"], stats["head"]);
}
