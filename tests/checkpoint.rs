//! Signed checkpoints catch what a hash chain alone cannot: truncation of the
//! newest records, a rewrite with every later hash recomputed, and a fork.
//! The signed note and the tree hash are also checked with Go's
//! golang.org/x/mod/sumdb (an outside implementation), when Go is installed
//! (`scripts/test.sh` installs it and sets CHAINLOG_REQUIRE_GO=1).

#[path = "support/go.rs"]
mod go_support;
#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

use std::path::{Path, PathBuf};
use std::process::Command;

use chainlog::format::segment::{HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner};
use chainlog::hash::merkle::Frontier;
use chainlog::storage::FsStorage;
use chainlog::verify::{verify_dir_with, ProblemKind, Report, VerifyOptions};
use chainlog::{ChainHash, Durability, Event, Log, Options, Timestamp};

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::None,
        ..Options::default()
    }
}

fn event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000_000),
        "node.added",
        format!("ops{}@acme.io", i % 3),
    );
    e.context.insert("i".into(), i.into());
    e
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed("audit.acme.io", [42; 32]).unwrap()
}

fn verify(dir: &Path, checkpoint: &Checkpoint, threads: usize) -> Report {
    let options = VerifyOptions {
        threads,
        checkpoint: Some(checkpoint.clone()),
    };
    verify_dir_with(&FsStorage, dir, &options, &mut |_| {}).unwrap()
}

fn mismatch(report: &Report) -> Option<&chainlog::verify::Problem> {
    report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::CheckpointMismatch)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Builds a log of `n` records over several segments; returns it with the receipts' hashes.
fn build(dir: &Path, n: u64) -> (Log, Vec<ChainHash>) {
    let log = Log::create(dir, options()).unwrap();
    let hashes = (0..n)
        .map(|i| log.append(&event(i)).unwrap().hash)
        .collect();
    (log, hashes)
}

#[test]
fn tree_head_is_the_rfc6962_root_over_chain_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, hashes) = build(dir.path(), 2500);
    assert!(log.state().segments > 2);
    let mut f = Frontier::new();
    for h in &hashes {
        f.push(&h.0);
    }
    let head = log.tree_head().unwrap();
    assert_eq!(head.size, 2500);
    assert_eq!(head.root, f.root());
    assert_eq!(head.head, hashes.last().copied());
    // After reopening (the frontier comes from the active segment's link block).
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.tree_head().unwrap().root, f.root());
}

#[test]
fn an_intact_log_matches_its_checkpoint_then_and_later() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = build(dir.path(), 1800);
    let cp = log.checkpoint("chainlog").unwrap();
    assert!(cp.origin.ends_with(&log.log_id().to_string()));
    for i in 1800..2600 {
        log.append(&event(i)).unwrap();
    }
    drop(log);
    for threads in [1, 4] {
        let report = verify(dir.path(), &cp, threads);
        assert!(report.is_intact(), "{:#?}", report.problems);
        assert_eq!(report.checkpoint.as_ref().map(|c| c.matched), Some(true));
    }
}

#[test]
fn truncation_below_the_checkpoint_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = build(dir.path(), 2000);
    let cp = log.checkpoint("chainlog").unwrap();
    drop(log);
    // Drop the newest segment entirely: the chain alone is still consistent.
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let plain = chainlog::verify::verify_dir(&FsStorage, dir.path(), &mut |_| {}).unwrap();
    assert!(
        plain.is_intact(),
        "a chain alone cannot see truncation: {:?}",
        plain.problems
    );
    let report = verify(dir.path(), &cp, 2);
    let p = mismatch(&report).expect("truncation caught");
    assert!(p.detail.contains("truncated"), "{}", p.detail);
}

#[test]
fn a_rewrite_with_recomputed_hashes_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = build(dir.path(), 1200);
    let cp = log.checkpoint("chainlog").unwrap();
    let log_id = log.log_id();
    drop(log);
    // The attacker rebuilds the whole log with one event changed: every hash
    // is recomputed, so the chain verifies, but they cannot sign.
    let forged = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..1200)
        .map(|i| {
            let mut e = event(i);
            if i == 700 {
                e.actor = "mallory@acme.io".into();
            }
            e
        })
        .collect();
    let rewrite = rewrite_with_log_id(forged.path(), log_id, &events);
    assert!(rewrite.is_intact(), "{:?}", rewrite.problems);
    let report = verify(forged.path(), &cp, 2);
    let p = mismatch(&report).expect("rewrite caught");
    assert!(p.detail.contains("forked or rewritten"), "{}", p.detail);
}

/// Writes `events` as a log with the given id (what an attacker with disk
/// access could do): creates a log, then patches the id into every header
/// and recomputes all hashes, CRCs and link blocks by re-appending.
fn rewrite_with_log_id(dir: &Path, log_id: chainlog::LogId, events: &[Event]) -> Report {
    // Easiest faithful forgery: a real log, then rewrite headers and frames.
    let log = Log::create(dir, options()).unwrap();
    for e in events {
        log.append(e).unwrap();
    }
    drop(log);
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let mut prev = ChainHash::genesis(&log_id);
    let mut frontier = Frontier::new();
    for path in &segs {
        let mut bytes = std::fs::read(path).unwrap();
        let mut header_bytes = [0u8; 128];
        header_bytes.copy_from_slice(&bytes[..128]);
        let mut header =
            chainlog::format::segment::SegmentHeader::decode(&header_bytes, "x").unwrap();
        header.log_id = log_id;
        header.prev_hash = prev;
        bytes[..128].copy_from_slice(&header.encode());
        let link_at = (header.segment_bytes - 4096) as usize + 96;
        let link = chainlog::format::segment::encode_link_block(&frontier);
        bytes[link_at..link_at + link.len()].copy_from_slice(&link);
        let mut at = HEADER_BYTES as usize;
        let mut last = None;
        while let Ok(Some(frame)) = chainlog::format::frame::decode(&bytes[at..]) {
            let (seq, len) = (frame.seq, frame.padded_len());
            prev = chainlog::format::frame::link(&mut bytes[at..], seq, &prev);
            frontier.push(&prev.0);
            last = Some(prev);
            at += len;
        }
        let trailer_at = (header.segment_bytes - 4096) as usize;
        let mut raw = [0u8; 96];
        raw.copy_from_slice(&bytes[trailer_at..trailer_at + 96]);
        if let Some(mut t) =
            chainlog::format::segment::SegmentTrailer::decode(&raw, "x", 0).unwrap()
        {
            t.last_hash = last.unwrap();
            bytes[trailer_at..trailer_at + 96].copy_from_slice(&t.encode());
        }
        std::fs::write(path, &bytes).unwrap();
    }
    chainlog::verify::verify_dir(&FsStorage, dir, &mut |_| {}).unwrap()
}

#[test]
fn a_fork_from_another_log_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = build(dir.path(), 900);
    let cp = log.checkpoint("chainlog").unwrap();
    drop(log);
    let other = tempfile::tempdir().unwrap();
    let (fork, _) = build(other.path(), 1500);
    drop(fork);
    let report = verify(other.path(), &cp, 1);
    assert!(mismatch(&report).is_some(), "{:?}", report.problems);
    // Even with the other log's segments swapped into this directory.
    let swapped = tempfile::tempdir().unwrap();
    copy_dir(other.path(), swapped.path());
    let report = verify(swapped.path(), &cp, 1);
    assert!(mismatch(&report).is_some());
}

#[test]
fn checkpoint_at_a_segment_boundary_and_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path(), options()).unwrap();
    let empty = log.checkpoint("chainlog").unwrap();
    assert_eq!(empty.size, 0);
    let mut at_boundary = None;
    for i in 0..3000 {
        log.append(&event(i)).unwrap();
        let state = log.state();
        if at_boundary.is_none() && state.segments == 2 {
            // The first record of the second segment was just appended: a
            // checkpoint of everything before it sits exactly on the boundary.
            at_boundary = Some(i);
        }
    }
    let boundary = at_boundary.unwrap();
    drop(log);
    let report = verify(dir.path(), &empty, 1);
    assert!(report.is_intact(), "{:?}", report.problems);
    // Rebuild the boundary checkpoint from the receipts of a fresh reading.
    let log = Log::open(
        dir.path(),
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    let mut f = Frontier::new();
    let mut head = None;
    for r in log.iter_from(0).take(boundary as usize) {
        let r = r.unwrap();
        f.push(&r.hash.0);
        head = Some(r.hash);
    }
    let cp = Checkpoint {
        origin: format!("chainlog/{}", log.log_id()),
        size: boundary,
        root: f.root(),
        head,
    };
    let report = verify(dir.path(), &cp, 2);
    assert!(report.is_intact(), "{:?}", report.problems);
}

fn go() -> Option<PathBuf> {
    go_support::notecheck("checkpoint")
}

#[test]
fn go_sumdb_note_and_tlog_agree() {
    let Some(notecheck) = go() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (log, hashes) = build(dir.path(), 1500);
    let cp = log.checkpoint("chainlog").unwrap();
    let note = cp.sign(&signer()).unwrap();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("key.pub"), signer().verifier().to_text()).unwrap();
    std::fs::write(files.path().join("cp"), &note).unwrap();
    let out = Command::new(&notecheck)
        .arg("note")
        .arg(files.path().join("key.pub"))
        .arg(files.path().join("cp"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Go rejected the note: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), cp.body());

    // A changed byte fails in Go too.
    std::fs::write(files.path().join("bad"), note.replacen("1500", "1499", 1)).unwrap();
    let out = Command::new(&notecheck)
        .arg("note")
        .arg(files.path().join("key.pub"))
        .arg(files.path().join("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Go's RFC 6962 tree hash over the same leaves equals ours.
    let leaves: String = hashes.iter().map(|h| format!("{h}\n")).collect();
    let out = output_with_stdin(Command::new(&notecheck).arg("root"), leaves.as_bytes());
    assert!(out.status.success());
    let go_root = String::from_utf8(out.stdout).unwrap();
    let ours: String = cp.root.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(go_root.trim(), ours);
    let _ = std::fs::remove_file(notecheck);
}

#[test]
fn the_log_writes_signed_checkpoints_on_a_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let schedule = chainlog::log::CheckpointSchedule {
        dir: out.path().join("checkpoints"),
        signer: signer(),
        origin_prefix: "chainlog".into(),
        every_records: Some(400),
        every: None,
    };
    let log = Log::create(
        dir.path(),
        Options {
            checkpoints: Some(schedule),
            ..options()
        },
    )
    .unwrap();
    let latest = out.path().join("checkpoints/latest.checkpoint");
    let wait_for = |size: u64| -> Checkpoint {
        // The checkpointer polls; give it a moment to catch up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(note) = std::fs::read_to_string(&latest) {
                let cp = Checkpoint::open(&note, &signer().verifier()).unwrap();
                if cp.size >= size {
                    return cp;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint of size {size}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Fewer new records than the schedule's 400: no checkpoint yet.
    for i in 0..300 {
        log.append(&event(i)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!latest.exists(), "a checkpoint before 400 records");
    // Then one per 400 records, each round waited for.
    let mut cp = None;
    for round in 0..4u64 {
        for i in 0..400 {
            log.append(&event(300 + round * 400 + i)).unwrap();
        }
        cp = Some(wait_for(300 + round * 400 + 100));
    }
    let cp = cp.unwrap();
    assert!(log.last_maintenance_error().is_none());
    drop(log);
    let written = std::fs::read_dir(out.path().join("checkpoints"))
        .unwrap()
        .count();
    assert!(
        written >= 5,
        "one file per checkpoint plus latest: {written}"
    );
    let report = verify(dir.path(), &cp, 2);
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.checkpoint.map(|c| c.matched), Some(true));
}
