//! Damage classification (issue 14, findings 4, 5, 6 and 9): verify and
//! recovery judge damage by one rule. A property test throws random damage
//! at a segment and holds them to each other; each finding has a named
//! regression test, in the library and through the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/stdin.rs"]
mod stdin;
use stdin::output_with_stdin;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use chainlog::event::record::decode_record;
use chainlog::format::frame;
use chainlog::format::segment::{
    self, data_end_limit, SegmentTrailer, HEADER_BYTES, LINK_BLOCK_AT, MIN_SEGMENT_BYTES,
    TRAILER_BYTES,
};
use chainlog::hash::checkpoint::Checkpoint;
use chainlog::log::cut;
use chainlog::storage::sim::SimDisk;
use chainlog::storage::Storage;
use chainlog::verify::{verify_dir, verify_dir_with, ProblemKind, Report, VerifyOptions};
use chainlog::{Durability, Error, Event, Log, Options, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

const DIR: &str = "/log";
const BIN: &str = env!("CARGO_BIN_EXE_chainlog");

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::Always,
        ..Options::default()
    }
}

fn event(i: u64, pad: usize) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000),
        "test.event",
        format!("user{}", i % 7),
    );
    if pad > 0 {
        e.context
            .insert("pad".into(), Value::String("p".repeat(pad)));
    }
    e
}

fn seg_path(base: u64) -> PathBuf {
    dir().join(segment::file_name(base))
}

fn verify(disk: &SimDisk) -> Report {
    verify_dir(disk, dir(), &mut |_| {}).unwrap()
}

/// The bytes of a one-segment log's only segment, and its frames
/// (offset, padded length).
#[derive(Debug)]
struct Image {
    bytes: Vec<u8>,
    frames: Vec<(u64, u64)>,
    sealed: bool,
}

impl Image {
    fn end(&self) -> u64 {
        self.frames
            .last()
            .map_or(HEADER_BYTES, |&(at, len)| at + len)
    }

    /// A fresh disk holding just this segment, durable.
    fn disk(&self) -> SimDisk {
        let disk = SimDisk::new();
        disk.create_dir_all(dir()).unwrap();
        let f = disk.create_new(&seg_path(0)).unwrap();
        f.write_all_at(&self.bytes, 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(dir()).unwrap();
        disk
    }

    /// The trailer the frames imply (what a seal writes).
    fn implied_trailer(&self) -> [u8; TRAILER_BYTES] {
        let mut t: Option<SegmentTrailer> = None;
        for &(at, len) in &self.frames {
            let f = frame::decode(&self.bytes[at as usize..(at + len) as usize])
                .unwrap()
                .unwrap();
            let view = decode_record(2, f.record).unwrap();
            let (ts, received) = (view.timestamp, view.received_at.unwrap());
            let prev = t.take();
            t = Some(SegmentTrailer {
                record_count: prev.map_or(0, |p| p.record_count) + 1,
                last_seq: f.seq,
                last_hash: f.hash,
                min_timestamp: prev.map_or(ts, |p| p.min_timestamp.min(ts)),
                max_timestamp: prev.map_or(ts, |p| p.max_timestamp.max(ts)),
                data_end: at + len,
                last_received_at: received,
            });
        }
        t.unwrap().encode()
    }
}

fn frames_of(bytes: &[u8]) -> Vec<(u64, u64)> {
    let limit = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let mut at = HEADER_BYTES as usize;
    let mut out = Vec::new();
    while let Ok(Some(f)) = frame::decode(&bytes[at..limit]) {
        out.push((at as u64, f.padded_len() as u64));
        at += f.padded_len();
    }
    out
}

/// An unsealed newest segment of 24 records of varied sizes.
fn active_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let disk = SimDisk::new();
        let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
        for i in 0..24 {
            log.append(&event(i, (i as usize * 397) % 1500)).unwrap();
        }
        log.close().unwrap();
        let bytes = disk.read_file(&seg_path(0)).unwrap();
        Image {
            frames: frames_of(&bytes),
            bytes,
            sealed: false,
        }
    })
}

/// A sealed newest segment (the segment after it was never created).
fn sealed_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let disk = SimDisk::new();
        let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
        let mut i = 0;
        while log.state().segments == 1 {
            log.append(&event(i, 9000)).unwrap();
            i += 1;
        }
        log.close().unwrap();
        let bytes = disk.read_file(&seg_path(0)).unwrap();
        let image = Image {
            frames: frames_of(&bytes),
            bytes,
            sealed: true,
        };
        let at = data_end_limit(MIN_SEGMENT_BYTES) as usize;
        assert_eq!(image.bytes[at..at + TRAILER_BYTES], image.implied_trailer());
        image
    })
}

// ---------------------------------------------------------------------------
// The property: one rule.

/// Random damage of the kinds a crash, a bug or an attacker leaves.
#[derive(Debug, Clone)]
enum Damage {
    /// The last `k` frames unwritten, then a prefix of the first of them
    /// written (a torn append of a prefix).
    TornPrefix { k: usize, keep: u64 },
    /// The last `k` frames unwritten, then some of their 512-byte sectors
    /// persisted anyway, in any order (out-of-order page persistence).
    OutOfOrder { k: usize, sectors: u64 },
    /// The first `len` bytes of frame `from` written at `at` past the end
    /// (the remains of an overwritten record).
    Remnant { from: usize, len: u64, gap: u64 },
    /// Some of the implied trailer's bytes written (a torn seal), on an
    /// unsealed segment; or some zeroed, on a sealed one.
    TornSeal { mask: [u64; 2] },
    /// Arbitrary bytes at an arbitrary offset of the data area or trailer.
    Garbage { at: u64, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (1usize..4, any::<u64>()).prop_map(|(k, keep)| Damage::TornPrefix { k, keep }),
        (1usize..5, any::<u64>()).prop_map(|(k, sectors)| Damage::OutOfOrder { k, sectors }),
        (any::<usize>(), 1u64..400, 0u64..64).prop_map(|(from, len, gap)| Damage::Remnant {
            from,
            len,
            gap
        }),
        any::<[u64; 2]>().prop_map(|mask| Damage::TornSeal { mask }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 1..48))
            .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
    ]
}

fn apply(image: &Image, damage: &Damage) -> Vec<u8> {
    let mut b = image.bytes.clone();
    let n = image.frames.len();
    let end = image.end();
    let limit = data_end_limit(MIN_SEGMENT_BYTES);
    match damage {
        Damage::TornPrefix { k, keep } => {
            let (start, len) = image.frames[n - k.min(&(n - 1))];
            b[start as usize..end as usize].fill(0);
            let keep = keep % len;
            b[start as usize..(start + keep) as usize]
                .copy_from_slice(&image.bytes[start as usize..(start + keep) as usize]);
        }
        Damage::OutOfOrder { k, sectors } => {
            let (start, _) = image.frames[n - k.min(&(n - 1))];
            b[start as usize..end as usize].fill(0);
            // Sectors of 512 bytes in the region, each kept by one bit.
            let first = start / 512;
            for (i, sector) in (first..end.div_ceil(512)).enumerate() {
                if sectors >> (i % 64) & 1 == 1 {
                    let from = (sector * 512).max(start) as usize;
                    let to = ((sector + 1) * 512).min(end) as usize;
                    b[from..to].copy_from_slice(&image.bytes[from..to]);
                }
            }
        }
        Damage::Remnant { from, len, gap } => {
            let (src, src_len) = image.frames[from % n];
            let len = (*len).min(src_len) as usize;
            let at = (end + gap * 8) as usize;
            b[at..at + len].copy_from_slice(&image.bytes[src as usize..src as usize + len]);
        }
        Damage::TornSeal { mask } => {
            let at = limit as usize;
            let implied = image.implied_trailer();
            for i in 0..TRAILER_BYTES {
                let bit = mask[i / 64] >> (i % 64) & 1 == 1;
                b[at + i] = match (image.sealed, bit) {
                    (true, true) => 0,
                    (false, true) => implied[i],
                    (_, false) => b[at + i],
                };
            }
        }
        Damage::Garbage { at, bytes } => {
            let span = limit + TRAILER_BYTES as u64 - HEADER_BYTES;
            let at = (HEADER_BYTES + at % span) as usize;
            let len = bytes.len().min(b.len() - at);
            b[at..at + len].copy_from_slice(&bytes[..len]);
        }
    }
    b
}

/// Verify and recovery agree: an intact report is an open that changes
/// the file exactly when it notes a torn tail or seal, cutting just those;
/// a report with problems is an open that refuses and changes nothing.
fn holds_to_one_rule(image: &Image, bytes: &[u8]) -> Result<(), TestCaseError> {
    let disk = Image {
        bytes: bytes.to_vec(),
        frames: Vec::new(),
        sealed: image.sealed,
    }
    .disk();
    let report = verify(&disk);
    let before = disk.read_file(&seg_path(0)).unwrap();
    let open = Log::open_in(Arc::new(disk.clone()), DIR, options());
    let after = disk.read_file(&seg_path(0)).unwrap();
    if !report.is_intact() {
        match open {
            Err(Error::Corrupted { .. }) | Err(Error::ChecksumMismatch { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("open failed with {e}"))),
            Ok(_) => {
                return Err(TestCaseError::fail(format!(
                    "verify found {:?}, yet open accepted it",
                    report.problems
                )))
            }
        }
        prop_assert!(after == before, "a refused open changed the segment");
        return Ok(());
    }
    let log = open.map_err(|e| TestCaseError::fail(format!("verify: intact; open: {e}")))?;
    prop_assert_eq!(
        log.state().next_seq,
        report.last_seq.map_or(0, |s| s + 1),
        "open and verify disagree on the records"
    );
    drop(log);
    let mut expect = before.clone();
    if let Some(t) = &report.torn_tail {
        expect[t.offset as usize..(t.offset + t.bytes) as usize].fill(0);
    }
    if let Some(s) = &report.torn_seal {
        expect[s.offset as usize..s.offset as usize + TRAILER_BYTES].fill(0);
    }
    prop_assert!(
        after == expect,
        "open changed other bytes than the torn tail/seal verify noted ({:?}, {:?})",
        report.torn_tail,
        report.torn_seal
    );
    let again = verify(&disk);
    prop_assert!(
        again.is_intact() && again.torn_tail.is_none() && again.torn_seal.is_none(),
        "after recovery: {again:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn verify_and_recovery_classify_damage_alike(sealed in any::<bool>(), damage in damage()) {
        let image = if sealed { sealed_image() } else { active_image() };
        let bytes = apply(image, &damage);
        holds_to_one_rule(image, &bytes)?;
    }
}

/// The kinds of damage the property is about all occur, each with both
/// outcomes where both are possible (so the property is not vacuous).
#[test]
fn the_damage_kinds_reach_each_outcome() {
    let image = active_image();
    let classify = |d: Damage| {
        let disk = Image {
            bytes: apply(image, &d),
            frames: Vec::new(),
            sealed: false,
        }
        .disk();
        let r = verify(&disk);
        (r.is_intact(), r.torn_tail.is_some(), r.torn_seal.is_some())
    };
    // A prefix of the next frame: a torn tail.
    assert_eq!(
        classify(Damage::TornPrefix { k: 1, keep: 30 }),
        (true, true, false)
    );
    // Frames persisted after a lost one: corruption.
    assert!(
        !classify(Damage::OutOfOrder { k: 4, sectors: !1 }).0,
        "a lost sector before whole frames is corruption"
    );
    // An older record's remains: corruption.
    assert!(
        !classify(Damage::Remnant {
            from: 3,
            len: 100,
            gap: 0
        })
        .0
    );
    // Eight bytes of it (not reaching the seq field): a torn tail.
    assert_eq!(
        classify(Damage::Remnant {
            from: 3,
            len: 8,
            gap: 0
        }),
        (true, true, false)
    );
    // Part of the seal: a torn seal.
    assert_eq!(
        classify(Damage::TornSeal { mask: [0xffff, 0] }),
        (true, false, true)
    );
}

// ---------------------------------------------------------------------------
// Finding 4: a torn seal is not tampering.

#[test]
fn finding_4_a_torn_seal_is_a_note_and_recovery_cuts_it() {
    let image = sealed_image();
    let at = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let mut bytes = image.bytes.clone();
    // The trailer's second half never reached the disk.
    bytes[at + 48..at + TRAILER_BYTES].fill(0);
    let disk = Image {
        bytes,
        frames: Vec::new(),
        sealed: true,
    }
    .disk();
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
    let seal = report.torn_seal.expect("a torn seal noted");
    assert_eq!(seal.offset, at as u64);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    assert_eq!(log.state().next_seq, image.frames.len() as u64);
    drop(log);
    let after = disk.read_file(&seg_path(0)).unwrap();
    assert!(after[at..at + TRAILER_BYTES].iter().all(|&b| b == 0));
    let again = verify(&disk);
    assert!(again.is_intact() && again.torn_seal.is_none(), "{again:#?}");
}

// ---------------------------------------------------------------------------
// Finding 5: recovery does not erase what verify calls corruption.

/// Garbage at the end of the data, then a valid copy of an older frame.
fn garbage_then_an_older_frame(image: &Image) -> (Vec<u8>, u64) {
    let mut bytes = image.bytes.clone();
    let end = image.end();
    let garbage: Vec<u8> = (0..40u32).map(|i| (i * 37 % 251) as u8 | 0x80).collect();
    bytes[end as usize..end as usize + 40].copy_from_slice(&garbage);
    let (src, len) = image.frames[2];
    let to = end as usize + 48;
    bytes[to..to + len as usize].copy_from_slice(&image.bytes[src as usize..(src + len) as usize]);
    (bytes, end)
}

#[test]
fn finding_5_garbage_then_an_older_frame_is_corruption_to_both() {
    let image = active_image();
    let (bytes, end) = garbage_then_an_older_frame(image);
    let disk = Image {
        bytes,
        frames: Vec::new(),
        sealed: false,
    }
    .disk();
    let report = verify(&disk);
    let first = report.problems.first().expect("verify reports the damage");
    assert_eq!(
        (first.kind, first.offset),
        (ProblemKind::FrameCorrupt, end),
        "{first:?}"
    );
    let before = disk.read_file(&seg_path(0)).unwrap();
    match Log::open_in(Arc::new(disk.clone()), DIR, options()) {
        Err(Error::Corrupted { offset, reason, .. }) => {
            assert_eq!(offset, end);
            assert!(reason.contains("recover --cut-at"), "{reason}");
        }
        Err(e) => panic!("expected Corrupted, got {e}"),
        Ok(_) => panic!("recovery accepted (and would have zeroed) what verify calls corruption"),
    }
    assert!(
        disk.read_file(&seg_path(0)).unwrap() == before,
        "open changed the segment"
    );
}

// ---------------------------------------------------------------------------
// Finding 6: a checkpoint signs only a root computed from the records.

/// A closed log on a simulated disk: records padded by `pad` bytes until a
/// second segment starts, then one small record in it.
fn two_segments(pad: usize) -> SimDisk {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    let mut i = 0;
    while log.state().segments < 2 {
        log.append(&event(i, pad)).unwrap();
        i += 1;
    }
    log.append(&event(i, 10)).unwrap();
    log.close().unwrap();
    disk
}

/// The base seq of the newest segment on `disk`.
fn newest_base(disk: &SimDisk) -> u64 {
    let names = disk.list(dir()).unwrap();
    names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .max()
        .unwrap()
}

/// A two-segment log whose newest segment's link block is forged (a
/// subtree root changed, its CRC fixed).
fn forged_link_block() -> SimDisk {
    let disk = two_segments(9000);
    let newest = newest_base(&disk);
    let path = seg_path(newest);
    let image = disk.read_file(&path).unwrap();
    let at = (data_end_limit(MIN_SEGMENT_BYTES) as usize) + LINK_BLOCK_AT;
    let count = u32::from_le_bytes(image[at + 8..at + 12].try_into().unwrap()) as usize;
    assert!(count > 0);
    let mut block = image[at..at + 16 + count * 32 + 4].to_vec();
    block[16] ^= 0x55;
    let crc = crc32c::crc32c(&block[..16 + count * 32]);
    let n = block.len();
    block[n - 4..].copy_from_slice(&crc.to_le_bytes());
    disk.tamper(&path, at as u64, &block).unwrap();
    disk
}

#[test]
fn finding_6_checkpoint_refuses_a_forged_link_block() {
    let disk = forged_link_block();
    let log = Log::open_in(
        Arc::new(disk.clone()),
        DIR,
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    match log.checkpoint("example.com/log") {
        Err(Error::Unverified {
            problems, first, ..
        }) => {
            assert!(problems >= 1);
            assert!(first.contains("TreeMismatch"), "{first}");
        }
        Err(e) => panic!("expected Unverified, got {e}"),
        Ok(cp) => panic!("signed a root built from a forged link block: {cp:?}"),
    }
    // What the old checkpoint signed (the tree from the newest link block):
    // verify must never call that a match beside the tree problem it finds.
    let head = log.tree_head().unwrap();
    let forged = Checkpoint {
        origin: format!("example.com/log/{}", log.log_id()),
        size: head.size,
        root: head.root,
        head: head.head,
    };
    let report = verify_dir_with(
        &disk,
        dir(),
        &VerifyOptions {
            threads: 1,
            checkpoint: Some(forged),
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::TreeMismatch),
        "{:#?}",
        report.problems
    );
    assert!(
        !report.checkpoint.unwrap().matched,
        "matched beside a tree_mismatch"
    );
}

/// Plain `verify` (no checkpoint) holds the newest segment's link block
/// against the frontier of the segment before it extended by that
/// segment's records, on one thread and on several.
#[test]
fn finding_6_plain_verify_catches_a_forged_link_block_in_the_newest_segment() {
    let disk = forged_link_block();
    let newest = newest_base(&disk);
    let link_at = data_end_limit(MIN_SEGMENT_BYTES) + LINK_BLOCK_AT as u64;
    for threads in [1, 2, 4] {
        let report = verify_dir_with(
            &disk,
            dir(),
            &VerifyOptions {
                threads,
                checkpoint: None,
            },
            &mut |_| {},
        )
        .unwrap();
        let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::TreeMismatch], "{threads} threads");
        let p = &report.problems[0];
        assert_eq!(p.segment, segment::file_name(newest));
        assert_eq!(p.offset, link_at);
        assert_eq!(p.seq, Some(newest));
    }
}

/// Damage in the segment before the newest is reported once: its frames
/// are not also used to hold the newest segment's link block to account.
#[test]
fn damage_before_the_newest_segment_is_not_also_a_link_block_problem() {
    let disk = two_segments(3000);
    assert!(verify(&disk).is_intact());
    // Zero the second frame of the first segment: records go missing.
    let path = seg_path(0);
    let image = disk.read_file(&path).unwrap();
    let first = frame::decode(&image[HEADER_BYTES as usize..])
        .unwrap()
        .unwrap();
    let at = HEADER_BYTES + first.padded_len() as u64;
    let second = frame::decode(&image[at as usize..]).unwrap().unwrap();
    disk.tamper(&path, at, &vec![0; second.padded_len()])
        .unwrap();
    let report = verify(&disk);
    assert!(!report.is_intact());
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind != ProblemKind::TreeMismatch && p.segment == segment::file_name(0)),
        "{:#?}",
        report.problems
    );
}

#[test]
fn finding_6_checkpoint_of_an_intact_log_is_the_verified_root() {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    for i in 0..30 {
        log.append(&event(i, 6000)).unwrap();
    }
    assert!(log.state().segments > 1);
    let cp = log.checkpoint("example.com/log").unwrap();
    assert_eq!(cp.size, 30);
    let report = verify_dir_with(
        &disk,
        dir(),
        &VerifyOptions {
            threads: 2,
            checkpoint: Some(cp),
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(
        report.is_intact() && report.checkpoint.as_ref().unwrap().matched,
        "{report:#?}"
    );
}

// ---------------------------------------------------------------------------
// Finding 9: an out-of-order torn write has a way out.

/// Frame 20's first sector never persisted; the frames after it did.
fn out_of_order(image: &Image) -> (Vec<u8>, u64) {
    let mut bytes = image.bytes.clone();
    let (at, _) = image.frames[20];
    bytes[at as usize..at as usize + 48].fill(0);
    (bytes, at)
}

#[test]
fn finding_9_an_out_of_order_torn_write_is_read_and_cut_by_the_operator() {
    let image = active_image();
    let (bytes, at) = out_of_order(image);
    let disk = Image {
        bytes,
        frames: Vec::new(),
        sealed: false,
    }
    .disk();
    // Verify and a writer's open call it corruption...
    let report = verify(&disk);
    assert_eq!(report.problems[0].kind, ProblemKind::FrameCorrupt);
    assert_eq!(report.problems[0].offset, at);
    assert!(report.problems[0].detail.contains("valid frames resume at"));
    let err = Log::open_in(Arc::new(disk.clone()), DIR, options()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { offset, .. } if *offset == at),
        "{err}"
    );
    // ...readers still read the prefix and say where it stops...
    let reader = Log::open_in(
        Arc::new(disk.clone()),
        DIR,
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(reader.damage().unwrap().offset, at);
    assert_eq!(reader.iter_from(0).count(), 20);
    drop(reader);
    // ...and the operator's cut drops exactly the frames after it, keeps
    // their bytes, and records itself in the chain.
    let plan = cut::plan_cut(&disk, dir(), at).unwrap();
    let dropped: Vec<u64> = plan.dropped.iter().map(|d| d.seq).collect();
    assert_eq!(dropped, (21..image.frames.len() as u64).collect::<Vec<_>>());
    assert!(plan
        .dropped
        .iter()
        .all(|d| d.event.as_deref() == Some("test.event")));
    let before = disk.read_file(&seg_path(0)).unwrap();
    let done = cut::apply_cut(&disk, dir(), &plan).unwrap();
    disk.crash(); // everything the cut wrote was synced
    let kept = disk.read_file(&done.quarantine).unwrap();
    assert_eq!(kept, &before[at as usize..plan.cut_end as usize]);
    assert_eq!(done.seq, 20);
    let log = Log::open_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 21);
    let last = &records[20];
    assert_eq!(last.event.event_type, cut::RECOVERY_CUT_EVENT);
    assert_eq!(last.hash, done.hash);
    let ctx = &last.event.context;
    assert_eq!(ctx["cut_at"], at);
    assert_eq!(ctx["cut_bytes"], plan.cut_bytes());
    assert_eq!(ctx["quarantine_sha256"], done.quarantine_sha256.as_str());
    assert_eq!(ctx["dropped"].as_array().unwrap().len(), dropped.len());
    log.append(&event(99, 0)).unwrap();
    drop(log);
    let report = verify(&disk);
    assert!(
        report.is_intact() && report.torn_tail.is_none(),
        "{report:#?}"
    );
}

#[test]
fn a_cut_must_start_at_a_frame_boundary_of_the_valid_prefix() {
    let image = active_image();
    let (bytes, at) = out_of_order(image);
    let disk = Image {
        bytes,
        frames: Vec::new(),
        sealed: false,
    }
    .disk();
    for bad in [at + 8, image.frames[5].0 + 8, image.frames[22].0, 0] {
        let err = cut::plan_cut(&disk, dir(), bad).unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{bad}: {err}");
    }
    // An earlier boundary drops the frames from there too.
    let plan = cut::plan_cut(&disk, dir(), image.frames[18].0).unwrap();
    assert_eq!(plan.dropped.first().map(|d| d.seq), Some(18));
}

// ---------------------------------------------------------------------------
// The same findings through the CLI, on a real directory.

fn chainlog(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A real log directory holding `bytes` as its only segment.
fn real_log(bytes: &[u8]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(segment::file_name(0)), bytes).unwrap();
    tmp
}

#[test]
fn cli_finding_4_verify_exits_0_on_a_torn_seal() {
    let image = sealed_image();
    let at = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let mut bytes = image.bytes.clone();
    bytes[at + 40..at + TRAILER_BYTES].fill(0);
    let tmp = real_log(&bytes);
    let (code, out, err) = chainlog(tmp.path(), &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("torn seal"), "{out}{err}");
}

#[test]
fn cli_finding_5_append_refuses_and_changes_nothing() {
    let (bytes, end) = garbage_then_an_older_frame(active_image());
    let tmp = real_log(&bytes);
    let (code, _, _) = chainlog(tmp.path(), &["verify"]);
    assert_eq!(code, 1);
    let out = output_with_stdin(
        Command::new(BIN).arg("--dir").arg(tmp.path()).arg("append"),
        br#"{"event":"a.b","actor":"x","timestamp":"2026-01-01T00:00:00Z"}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("--cut-at {end}")), "{err}");
    let after = std::fs::read(tmp.path().join(segment::file_name(0))).unwrap();
    assert!(after == bytes, "append changed the segment");
}

#[test]
fn cli_finding_6_checkpoint_refuses_a_forged_link_block() {
    let disk = forged_link_block();
    let tmp = tempfile::tempdir().unwrap();
    for name in disk.list(dir()).unwrap() {
        if segment::parse_file_name(&name).is_some() {
            std::fs::write(
                tmp.path().join(&name),
                disk.read_file(&dir().join(&name)).unwrap(),
            )
            .unwrap();
        }
    }
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("k.secret");
    let (code, out, err) = chainlog(
        tmp.path(),
        &[
            "keygen",
            "--name",
            "testkey",
            "--secret-key",
            secret.to_str().unwrap(),
            "--public-key",
            keys.path().join("k.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = chainlog(
        tmp.path(),
        &["checkpoint", "--secret-key", secret.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "a note was printed: {out}");
    assert!(err.contains("refusing to sign"), "{err}");
}

#[test]
fn cli_finding_9_readers_read_the_prefix_and_recover_cuts() {
    let image = active_image();
    let (bytes, at) = out_of_order(image);
    let tmp = real_log(&bytes);
    let (code, out, err) = chainlog(tmp.path(), &["cat"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 20);
    assert!(err.contains(&format!("damaged at byte {at}")), "{err}");
    let (code, out, err) = chainlog(tmp.path(), &["export", "--format", "jsonl"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 20);
    let (code, _, _) = chainlog(tmp.path(), &["verify"]);
    assert_eq!(code, 1);
    // Without --yes: shows, changes nothing.
    let at_s = at.to_string();
    let (code, out, err) = chainlog(tmp.path(), &["recover", "--cut-at", &at_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("drops seq 21"), "{out}");
    let seg = tmp.path().join(segment::file_name(0));
    assert!(std::fs::read(&seg).unwrap() == bytes);
    let (code, out, err) = chainlog(tmp.path(), &["recover", "--cut-at", &at_s, "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let quarantine = tmp
        .path()
        .join("quarantine")
        .join(format!("{}-{at}.bin", segment::file_name(0)));
    assert!(quarantine.exists(), "{out}");
    let (code, out, err) = chainlog(tmp.path(), &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = chainlog(tmp.path(), &["cat", "--from", "20"]);
    assert_eq!(code, 0);
    assert!(out.contains("log.recovery_cut"), "{out}");
}
