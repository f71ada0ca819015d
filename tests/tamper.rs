//! Tamper detection: the verifier reports each kind of damage or forgery
//! with the right kind, seq, segment and byte offset.
//!
//! One log of four segments is built once; every case works on a fresh copy
//! of its files on a simulated disk (and a few on real files).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/segment_image.rs"]
mod segment_image;
use segment_image::{data_end, fix_frame_crc, fix_header_crc, fix_trailer_crc, frames, FrameAt};

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use chainlog::event::encode_record;
use chainlog::format::frame::{self, FRAME_HEADER_BYTES};
use chainlog::format::segment::{
    self, data_end_limit, MIN_SEGMENT_BYTES, TRAILER_AREA_BYTES, TRAILER_BYTES,
};
use chainlog::hash::chain::{ChainHash, LogId};
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, FsStorage, Storage, StorageFile};
use chainlog::verify::{verify_dir, verify_dir_with, Problem, ProblemKind, Report, VerifyOptions};
use chainlog::{Durability, Event, Log, Options, Outcome, Receipt, Timestamp};
use serde_json::Value;

const DIR: &str = "/log";

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn options() -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability: Durability::None,
        ..Options::default()
    }
}

/// An audit event of about 1 KiB.
fn event(i: u64) -> Event {
    let kinds = [
        "pcap.download",
        "incident.opened",
        "apikey.rotated",
        "auth.login_failed",
        "node.added",
    ];
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_760_000_000_000_000_000 + i as i64 * 1_000_000_007),
        kinds[i as usize % kinds.len()],
        format!("user{}@acme.io", i % 13),
    );
    e.node = Some(format!("nyc-edge-{:02}", i % 7));
    e.resource = (i % 3 == 0).then(|| format!("{:08x}", i * 2_654_435_761 % (1 << 32)));
    e.source_ip = Some(if i % 4 == 0 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ))
    } else {
        IpAddr::V4(format!("203.0.113.{}", i % 250).parse().unwrap())
    });
    e.outcome = if i % 5 == 3 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    e.context.insert("i".into(), i.into());
    e.context.insert("bytes".into(), (i * 18_231).into());
    e.context.insert(
        "pad".into(),
        Value::String("x".repeat(900 + (i % 50) as usize)),
    );
    e
}

// ---------------------------------------------------------------------------
// The log under test, and copies of it.

struct Built {
    files: Vec<(PathBuf, Vec<u8>)>,
    bases: Vec<u64>,
    receipts: Vec<Receipt>,
    log_id: LogId,
}

/// Builds a log of `segments` segments (the last one unsealed) with `event`.
fn build(segments: usize, event: fn(u64) -> Event) -> Built {
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    let mut receipts = Vec::new();
    let mut i = 0;
    while log.state().segments < segments {
        receipts.push(log.append(&event(i)).unwrap());
        i += 1;
    }
    // A few dozen records in the newest segment.
    for _ in 0..40 {
        receipts.push(log.append(&event(i)).unwrap());
        i += 1;
    }
    let log_id = log.log_id();
    log.close().unwrap();
    let mut bases: Vec<u64> = disk
        .list(dir())
        .unwrap()
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    bases.sort_unstable();
    assert_eq!(bases.len(), segments);
    let files = bases
        .iter()
        .map(|&b| {
            let path = dir().join(segment::file_name(b));
            let bytes = disk.read_file(&path).unwrap();
            (path, bytes)
        })
        .collect();
    Built {
        files,
        bases,
        receipts,
        log_id,
    }
}

fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| build(4, event))
}

impl Built {
    fn restore(&self) -> SimDisk {
        let disk = SimDisk::new();
        for (path, bytes) in &self.files {
            let f = disk.create_new(path).unwrap();
            f.write_all_at(bytes, 0).unwrap();
            f.sync_data().unwrap();
        }
        disk.sync_dir(dir()).unwrap();
        disk
    }

    fn image(&self, segment: usize) -> Vec<u8> {
        self.files[segment].1.clone()
    }

    fn name(&self, segment: usize) -> String {
        segment::file_name(self.bases[segment])
    }

    fn path(&self, segment: usize) -> PathBuf {
        self.files[segment].0.clone()
    }
}

/// Replaces a segment file's contents (both images).
fn put(disk: &SimDisk, path: &Path, image: &[u8]) {
    disk.tamper(path, 0, image).unwrap();
}

fn verify(storage: &dyn Storage) -> Report {
    let report = verify_dir(storage, dir(), &mut |_| {}).unwrap();
    // With a spare thread per segment, each segment's frames are checked in
    // two halves at once: every damage must read the same that way.
    let options = VerifyOptions {
        threads: 8,
        checkpoint: None,
    };
    let split = verify_dir_with(storage, dir(), &options, &mut |_| {}).unwrap();
    assert_eq!(split, report, "verified in halves");
    report
}

/// Applies `damage` to a copy of segment `segment` and verifies.
fn verify_damaged(segment: usize, damage: impl FnOnce(&mut Vec<u8>)) -> Report {
    let b = built();
    let disk = b.restore();
    let mut image = b.image(segment);
    damage(&mut image);
    assert_eq!(image.len() as u64, MIN_SEGMENT_BYTES, "keep the file size");
    put(&disk, &b.path(segment), &image);
    verify(&disk)
}

#[track_caller]
fn assert_problem(p: &Problem, kind: ProblemKind, seq: Option<u64>, segment: &str, offset: u64) {
    assert_eq!(
        (p.kind, p.seq, p.segment.as_str(), p.offset),
        (kind, seq, segment, offset),
        "{p:#?}"
    );
}

#[track_caller]
fn has(report: &Report, kind: ProblemKind, seq: Option<u64>) -> bool {
    report
        .problems
        .iter()
        .any(|p| p.kind == kind && (seq.is_none() || p.seq == seq))
}

/// A frame in the middle of sealed segment 1.
fn middle_of_segment_1() -> (usize, FrameAt) {
    let f = frames(&built().image(1));
    (1, f[f.len() / 2])
}

// ---------------------------------------------------------------------------
// Intact.

#[test]
fn intact_log_verifies_clean() {
    let b = built();
    let disk = b.restore();
    let report = verify(&disk);
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.segments, 4);
    assert_eq!(report.records, b.receipts.len() as u64);
    assert_eq!(report.first_seq, Some(0));
    assert_eq!(report.last_seq, Some(b.receipts.len() as u64 - 1));
    assert_eq!(report.head, Some(b.receipts.last().unwrap().hash));
    assert_eq!(report.log_id, Some(b.log_id.to_string()));
    // Segments are where the test expects them.
    for (i, (_, image)) in b.files.iter().enumerate() {
        let f = frames(image);
        assert_eq!(f[0].seq, b.bases[i]);
        assert!(f.len() > 20, "segment {i} has {} frames", f.len());
    }
}

// ---------------------------------------------------------------------------
// Frames.

#[test]
fn modified_record_with_crc_fixed_is_a_hash_mismatch() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        // A byte inside the context's padding: still a valid record.
        let at = f.offset + f.len - 16;
        assert_eq!(img[at], b'x');
        img[at] = b'y';
        fix_frame_crc(img, f.offset);
    });
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert_problem(
        &report.problems[0],
        ProblemKind::HashMismatch,
        Some(f.seq),
        &built().name(s),
        f.offset as u64,
    );
}

#[test]
fn modified_record_without_crc_fix_is_a_corrupt_frame() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        img[f.offset + 60] ^= 0x01;
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::FrameCorrupt,
        Some(f.seq),
        &built().name(s),
        f.offset as u64,
    );
    // The records after it are still checked: only the damaged one is lost.
    assert!(
        report.records >= built().receipts.len() as u64 - 1,
        "{}",
        report.records
    );

    // A reader gets every record before it, then an error naming the
    // segment and the frame (the log opens: only its newest segment is
    // read on open).
    let b = built();
    let disk = b.restore();
    let mut image = b.image(s);
    image[f.offset + 60] ^= 0x01;
    put(&disk, &b.path(s), &image);
    let log = Log::open_in(
        Arc::new(disk),
        DIR,
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    let mut read = 0;
    let err = log
        .iter_from(0)
        .find_map(|r| match r {
            Ok(_) => {
                read += 1;
                None
            }
            Err(e) => Some(e),
        })
        .expect("reading a damaged frame must fail");
    assert_eq!(read, f.seq);
    match err {
        chainlog::Error::Corrupted { file, offset, .. } => {
            assert_eq!(
                (file.as_str(), offset),
                (b.name(s).as_str(), f.offset as u64)
            );
        }
        other => panic!("expected Corrupted, got {other}"),
    }
}

#[test]
fn modified_stored_hash_is_a_hash_mismatch() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        img[f.offset + 16 + 5] ^= 0x80;
        fix_frame_crc(img, f.offset);
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::HashMismatch,
        Some(f.seq),
        &built().name(s),
        f.offset as u64,
    );
    // The next record chains from the true hash, not the stored one.
    assert!(report
        .problems
        .iter()
        .all(|p| p.kind == ProblemKind::HashMismatch
            && (p.seq == Some(f.seq) || p.seq == Some(f.seq + 1))));
}

#[test]
fn deleted_record_is_detected_where_the_chain_breaks() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        // Remove the frame, shift the rest down, zero what is left over.
        let end = data_end(img);
        img.copy_within(f.offset + f.len..end, f.offset);
        img[end - f.len..end].fill(0);
    });
    let name = built().name(s);
    assert_problem(
        &report.problems[0],
        ProblemKind::SeqMismatch,
        Some(f.seq + 1),
        &name,
        f.offset as u64,
    );
    assert_problem(
        &report.problems[1],
        ProblemKind::HashMismatch,
        Some(f.seq + 1),
        &name,
        f.offset as u64,
    );
    // The sealed segment's trailer no longer matches its frames.
    assert!(
        has(&report, ProblemKind::TrailerMismatch, None),
        "{:#?}",
        report.problems
    );
    assert_eq!(report.records, built().receipts.len() as u64 - 1);
}

#[test]
fn duplicated_record_is_detected() {
    // In the newest segment, which has room to grow.
    let b = built();
    let s = 3;
    let fs = frames(&b.image(s));
    let f = fs[fs.len() / 2];
    let report = verify_damaged(s, |img| {
        let end = data_end(img);
        img.copy_within(f.offset..end, f.offset + f.len);
    });
    let at = (f.offset + f.len) as u64;
    let name = b.name(s);
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
    assert_problem(
        &report.problems[0],
        ProblemKind::SeqMismatch,
        Some(f.seq),
        &name,
        at,
    );
    assert_problem(
        &report.problems[1],
        ProblemKind::HashMismatch,
        Some(f.seq),
        &name,
        at,
    );
}

#[test]
fn swapped_records_are_detected() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        let g = frames(img)
            .into_iter()
            .find(|g| g.seq == f.seq + 1)
            .unwrap();
        let first = img[f.offset..f.offset + f.len].to_vec();
        let second = img[g.offset..g.offset + g.len].to_vec();
        img[f.offset..f.offset + g.len].copy_from_slice(&second);
        img[f.offset + g.len..f.offset + g.len + f.len].copy_from_slice(&first);
    });
    let name = built().name(s);
    assert_problem(
        &report.problems[0],
        ProblemKind::SeqMismatch,
        Some(f.seq + 1),
        &name,
        f.offset as u64,
    );
    assert!(has(&report, ProblemKind::HashMismatch, Some(f.seq + 1)));
    assert!(has(&report, ProblemKind::SeqMismatch, Some(f.seq)));
    // No frame is damaged: it is the order that is wrong.
    assert!(!has(&report, ProblemKind::FrameCorrupt, None));
}

#[test]
fn inserted_forged_record_is_detected() {
    let b = built();
    let s = 3;
    let fs = frames(&b.image(s));
    let f = fs[fs.len() / 2];
    // A well-formed frame with the seq it would have, a valid CRC and a
    // made-up hash.
    let mut forged = Vec::new();
    let start = frame::begin(&mut forged);
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut forged,
    )
    .unwrap();
    encode_record(&event(1_000_000), &mut forged).unwrap();
    frame::finish(&mut forged, start);
    frame::link(&mut forged, f.seq, &ChainHash([0x42; 32]));
    forged[16..48].copy_from_slice(&[0x17; 32]);
    fix_frame_crc(&mut forged, 0);
    assert!(frame::decode(&forged).unwrap().is_some());
    let report = verify_damaged(s, |img| {
        let end = data_end(img);
        img.copy_within(f.offset..end, f.offset + forged.len());
        img[f.offset..f.offset + forged.len()].copy_from_slice(&forged);
    });
    let name = b.name(s);
    assert_problem(
        &report.problems[0],
        ProblemKind::HashMismatch,
        Some(f.seq),
        &name,
        f.offset as u64,
    );
    assert!(!has(&report, ProblemKind::FrameCorrupt, None));
    // The genuine record after it no longer follows.
    assert!(has(&report, ProblemKind::SeqMismatch, Some(f.seq)));
}

#[test]
fn forged_record_with_a_correct_hash_still_breaks_the_chain_after_it() {
    // A forger who recomputes the inserted record's hash correctly (as
    // anyone can) still breaks the link to the genuine record after it.
    let b = built();
    let s = 3;
    let fs = frames(&b.image(s));
    let f = fs[fs.len() / 2];
    let prev = b.receipts[f.seq as usize - 1].hash;
    let mut forged = Vec::new();
    let start = frame::begin(&mut forged);
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut forged,
    )
    .unwrap();
    encode_record(&event(1_000_000), &mut forged).unwrap();
    frame::finish(&mut forged, start);
    frame::link(&mut forged, f.seq, &prev);
    let report = verify_damaged(s, |img| {
        let end = data_end(img);
        img.copy_within(f.offset..end, f.offset + forged.len());
        img[f.offset..f.offset + forged.len()].copy_from_slice(&forged);
    });
    let at = (f.offset + forged.len()) as u64;
    assert_problem(
        &report.problems[0],
        ProblemKind::SeqMismatch,
        Some(f.seq),
        &b.name(s),
        at,
    );
    assert!(has(&report, ProblemKind::HashMismatch, Some(f.seq)));
}

#[test]
fn damage_to_any_of_consecutive_frames_is_reported_alike() {
    // The verifier hashes frames two at a time: damage to the first or the
    // second of a pair, or to a frame hashed alone, must read the same.
    let b = built();
    let f = frames(&b.image(1));
    let name = b.name(1);
    let last = f[f.len() - 1];
    let trailer_at = data_end_limit(MIN_SEGMENT_BYTES);
    for k in f.len() / 2..f.len() / 2 + 4 {
        let (at, next) = (f[k], f[k + 1]);
        // A changed record with a fixed CRC: only its hash is wrong.
        let report = verify_damaged(1, |img| {
            img[at.offset + FRAME_HEADER_BYTES + 20] ^= 0x01;
            fix_frame_crc(img, at.offset);
        });
        assert_eq!(
            report.problems.len(),
            1,
            "frame {k}: {:#?}",
            report.problems
        );
        assert_problem(
            &report.problems[0],
            ProblemKind::HashMismatch,
            Some(at.seq),
            &name,
            at.offset as u64,
        );
        // A broken CRC: the frame is corrupt, the next one, checked against
        // the last good frame, misses a seq and a link, and the trailer
        // counts a frame more than the valid ones.
        let report = verify_damaged(1, |img| {
            img[at.offset + FRAME_HEADER_BYTES + 20] ^= 0x01;
        });
        let seen: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.kind, p.seq, p.offset))
            .collect();
        assert_eq!(
            seen,
            vec![
                (ProblemKind::FrameCorrupt, Some(at.seq), at.offset as u64),
                (ProblemKind::SeqMismatch, Some(next.seq), next.offset as u64),
                (
                    ProblemKind::HashMismatch,
                    Some(next.seq),
                    next.offset as u64
                ),
                (ProblemKind::TrailerMismatch, Some(last.seq), trailer_at),
            ],
            "frame {k}"
        );
    }
}

#[test]
fn zeroed_frame_in_a_sealed_segment_is_corrupt() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        img[f.offset..f.offset + f.len].fill(0);
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::FrameCorrupt,
        Some(f.seq),
        &built().name(s),
        f.offset as u64,
    );
}

#[test]
fn record_that_does_not_decode_is_malformed() {
    let (s, f) = middle_of_segment_1();
    let report = verify_damaged(s, |img| {
        // Outcome code 7: the CRC is fixed, the hash is not.
        img[f.offset + 48 + 8] = 7;
        fix_frame_crc(img, f.offset);
    });
    assert!(
        has(&report, ProblemKind::RecordMalformed, Some(f.seq)),
        "{:#?}",
        report.problems
    );
    assert!(has(&report, ProblemKind::HashMismatch, Some(f.seq)));
}

// ---------------------------------------------------------------------------
// Segments.

#[test]
fn missing_middle_segment_is_reported() {
    let b = built();
    let disk = b.restore();
    disk.remove(&b.path(1)).unwrap();
    let report = verify(&disk);
    let missing = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::MissingRecords)
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_problem(
        missing,
        ProblemKind::MissingRecords,
        Some(b.bases[1]),
        &b.name(2),
        40,
    );
    assert!(
        missing
            .detail
            .contains(&format!("{}..{}", b.bases[1], b.bases[2] - 1)),
        "{}",
        missing.detail
    );
    let link = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::LinkMismatch)
        .unwrap();
    assert_problem(
        link,
        ProblemKind::LinkMismatch,
        Some(b.bases[2]),
        &b.name(2),
        48,
    );
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
}

#[test]
fn missing_first_segment_is_reported() {
    let b = built();
    let disk = b.restore();
    disk.remove(&b.path(0)).unwrap();
    let report = verify(&disk);
    assert_problem(
        &report.problems[0],
        ProblemKind::MissingRecords,
        Some(0),
        &b.name(1),
        0,
    );
}

#[test]
fn renamed_segment_is_reported() {
    let b = built();
    let disk = b.restore();
    let new_name = segment::file_name(b.bases[1] + 1);
    disk.rename(&b.path(1), &dir().join(&new_name)).unwrap();
    let report = verify(&disk);
    assert_problem(
        &report.problems[0],
        ProblemKind::MisnamedSegment,
        Some(b.bases[1]),
        &new_name,
        40,
    );
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);

    // Renamed past its successors: out of order as well.
    let disk = b.restore();
    let new_name = segment::file_name(b.bases[3] + 1000);
    disk.rename(&b.path(1), &dir().join(&new_name)).unwrap();
    let report = verify(&disk);
    assert!(has(&report, ProblemKind::MisnamedSegment, Some(b.bases[1])));
    assert!(has(&report, ProblemKind::MissingRecords, Some(b.bases[1])));
}

#[test]
fn segment_from_another_log_is_reported() {
    // The same events in a log of its own: same seqs, same segment names,
    // different log id and chain.
    static OTHER: OnceLock<Built> = OnceLock::new();
    let other = OTHER.get_or_init(|| build(4, event));
    let b = built();
    assert_eq!(other.bases, b.bases);
    assert_ne!(other.log_id, b.log_id);
    let disk = b.restore();
    put(&disk, &b.path(1), &other.image(1));
    let report = verify(&disk);
    let name = b.name(1);
    // Offset 24: the header's log id.
    assert_problem(
        &report.problems[0],
        ProblemKind::WrongLog,
        Some(b.bases[1]),
        &name,
        24,
    );
    assert_problem(
        &report.problems[1],
        ProblemKind::LinkMismatch,
        Some(b.bases[1]),
        &name,
        48,
    );
    // And the segment after it does not link to the foreign one.
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::LinkMismatch && p.segment == b.name(2)));
}

#[test]
fn modified_header_is_reported() {
    let b = built();
    for (s, at) in [(1, 45), (1, 85), (2, 0), (2, 100), (0, 20)] {
        let report = verify_damaged(s, |img| img[at] ^= 0x10);
        assert_problem(
            &report.problems[0],
            ProblemKind::HeaderCorrupt,
            None,
            &b.name(s),
            0,
        );
    }
    // The header's base seq changed and its CRC recomputed.
    let report = verify_damaged(2, |img| {
        img[40] ^= 0x01;
        fix_header_crc(img);
    });
    assert!(
        has(&report, ProblemKind::MisnamedSegment, None),
        "{:#?}",
        report.problems
    );
}

#[test]
fn modified_link_hash_is_reported() {
    let b = built();
    // The first segment's genesis link, with and without the CRC fixed.
    let report = verify_damaged(0, |img| {
        img[50] ^= 0x01;
        fix_header_crc(img);
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::LinkMismatch,
        Some(0),
        &b.name(0),
        48,
    );
    let report = verify_damaged(0, |img| img[50] ^= 0x01);
    assert_problem(
        &report.problems[0],
        ProblemKind::HeaderCorrupt,
        None,
        &b.name(0),
        0,
    );
    // A later segment's link.
    let report = verify_damaged(2, |img| {
        img[79] ^= 0x01;
        fix_header_crc(img);
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::LinkMismatch,
        Some(b.bases[2]),
        &b.name(2),
        48,
    );
}

#[test]
fn modified_trailer_is_reported() {
    let b = built();
    let at = data_end_limit(MIN_SEGMENT_BYTES);
    // Any byte of the trailer, CRC not fixed.
    for byte in [0, 9, 20, 30, 60, 70, 75, 85, 94] {
        let report = verify_damaged(1, |img| img[at as usize + byte] ^= 0x04);
        assert_eq!(
            report.problems.len(),
            1,
            "byte {byte}: {:#?}",
            report.problems
        );
        assert_eq!(
            report.problems[0].kind,
            ProblemKind::TrailerMismatch,
            "byte {byte}"
        );
        assert_eq!(report.problems[0].segment, b.name(1));
        assert!(report.problems[0].offset >= at && report.problems[0].offset < at + 96);
    }
    // A field changed and the CRC recomputed: the trailer disagrees with the
    // frames (count, last seq, last hash, time span, data end).
    for field in [8, 16, 24, 56, 64, 72] {
        let report = verify_damaged(1, |img| {
            img[at as usize + field] ^= 0x01;
            fix_trailer_crc(img);
        });
        assert_problem(
            &report.problems[0],
            ProblemKind::TrailerMismatch,
            report.problems[0].seq,
            &b.name(1),
            at,
        );
        assert_eq!(
            report.problems.len(),
            1,
            "field {field}: {:#?}",
            report.problems
        );
    }
    // A removed trailer: a segment that is followed by another must be sealed.
    let report = verify_damaged(1, |img| {
        img[at as usize..at as usize + TRAILER_BYTES].fill(0)
    });
    assert_problem(
        &report.problems[0],
        ProblemKind::NotSealed,
        Some(b.bases[2] - 1),
        &b.name(1),
        at,
    );
}

#[test]
fn bytes_after_the_data_are_reported() {
    let b = built();
    let image = b.image(1);
    let end = data_end(&image) as u64;
    let limit = data_end_limit(MIN_SEGMENT_BYTES);
    assert!(limit - end > 100, "the test needs a gap after the data");
    // Just after the data (where it reads as a bad frame header), further
    // after it, and in the last bytes before the trailer area where no
    // frame header fits.
    for at in [end, end + 7, end + 53, limit - 48, limit - 41, limit - 1] {
        let report = verify_damaged(1, |img| img[at as usize] = 0x01);
        assert_eq!(
            report.problems.len(),
            1,
            "byte {at}: {:#?}",
            report.problems
        );
        let kind = if at < end + FRAME_HEADER_BYTES as u64 {
            ProblemKind::FrameCorrupt
        } else {
            ProblemKind::UnexpectedBytes
        };
        assert_problem(&report.problems[0], kind, Some(b.bases[2]), &b.name(1), end);
    }
    // In the trailer area: the link block (the Merkle frontier before the
    // segment) follows the trailer; after it, only zeros.
    let link_at = limit + TRAILER_BYTES as u64;
    let link_len = 16 + 32 * u64::from(b.bases[1].count_ones()) + 4;
    for at in [link_at, link_at + 9, link_at + link_len - 1] {
        let report = verify_damaged(1, |img| img[at as usize] ^= 0x01);
        assert_eq!(
            report.problems.len(),
            1,
            "byte {at}: {:#?}",
            report.problems
        );
        assert_problem(
            &report.problems[0],
            ProblemKind::TreeMismatch,
            Some(b.bases[1]),
            &b.name(1),
            link_at,
        );
    }
    for at in [
        link_at + link_len,
        link_at + link_len + 100,
        MIN_SEGMENT_BYTES - 1,
    ] {
        let report = verify_damaged(1, |img| img[at as usize] = 0x01);
        assert_eq!(
            report.problems.len(),
            1,
            "byte {at}: {:#?}",
            report.problems
        );
        assert_problem(
            &report.problems[0],
            ProblemKind::UnexpectedBytes,
            None,
            &b.name(1),
            at,
        );
    }
    // The same in the newest, unsealed segment: after the data it reads as
    // a torn write (recovery cuts it); in the trailer area it is damage.
    let end3 = data_end(&b.image(3)) as u64;
    let report = verify_damaged(3, |img| img[end3 as usize + 100] = 0x01);
    assert!(report.is_intact(), "{:#?}", report.problems);
    let torn = report.torn_tail.unwrap();
    assert_eq!(
        (torn.segment.as_str(), torn.offset),
        (b.name(3).as_str(), end3)
    );
    let report = verify_damaged(3, |img| {
        img[(MIN_SEGMENT_BYTES - TRAILER_AREA_BYTES / 2) as usize] = 0x01
    });
    assert!(
        has(&report, ProblemKind::UnexpectedBytes, None),
        "{:#?}",
        report.problems
    );
}

#[test]
fn wrong_size_segment_is_reported() {
    let b = built();
    let disk = b.restore();
    // A segment cut short.
    let path = b.path(1);
    disk.remove(&path).unwrap();
    let f = disk.create_new(&path).unwrap();
    f.write_all_at(&b.image(1)[..100_000], 0).unwrap();
    let report = verify(&disk);
    assert!(
        has(&report, ProblemKind::WrongSize, None),
        "{:#?}",
        report.problems
    );
}

// ---------------------------------------------------------------------------
// Real files, and bounded resources.

#[test]
fn tampering_on_real_files_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::create(tmp.path(), options()).unwrap();
    let mut receipts = Vec::new();
    let mut i = 0;
    while log.state().segments < 3 {
        receipts.push(log.append(&event(i)).unwrap());
        i += 1;
    }
    log.close().unwrap();
    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.head, Some(receipts.last().unwrap().hash));

    // Modify one record of the first segment, with its CRC fixed.
    let path = tmp.path().join(segment::file_name(0));
    let mut image = std::fs::read(&path).unwrap();
    let f = frames(&image)[5];
    image[f.offset + f.len - 16] = b'z';
    fix_frame_crc(&mut image, f.offset);
    std::fs::write(&path, &image).unwrap();
    let report = verify_dir(&FsStorage, tmp.path(), &mut |_| {}).unwrap();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert_problem(
        &report.problems[0],
        ProblemKind::HashMismatch,
        Some(5),
        &segment::file_name(0),
        f.offset as u64,
    );
    // Records still read (the reader trusts stored hashes; verify does not).
    let log = Log::open(
        tmp.path(),
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(log.iter_from(0).count(), receipts.len());
}

/// Counts open files and the largest single read.
#[derive(Debug, Clone)]
struct Metered {
    disk: SimDisk,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    max_read: Arc<AtomicU64>,
}

#[derive(Debug)]
struct MeteredFile {
    file: Arc<dyn StorageFile>,
    meter: Metered,
}

impl Drop for MeteredFile {
    fn drop(&mut self) {
        self.meter.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StorageFile for MeteredFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.meter
            .max_read
            .fetch_max(buf.len() as u64, Ordering::SeqCst);
        self.file.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.file.allocate(len)
    }
}

impl Storage for Metered {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn now(&self) -> chainlog::Timestamp {
        self.disk.now()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.disk.create_new(path)
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.disk.open(path, write)?;
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open.fetch_max(now, Ordering::SeqCst);
        Ok(Arc::new(MeteredFile {
            file,
            meter: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.disk.lock_dir(dir)
    }
}

#[test]
fn verifier_streams_a_log_of_twenty_segments() {
    // Large records fill segments quickly.
    fn big(i: u64) -> Event {
        let mut e = Event::new(
            Timestamp::from_unix_nanos(1_760_000_000_000_000_000 + i as i64),
            "pcap.download",
            "alice@acme.io",
        );
        e.context
            .insert("pcap".into(), Value::String(format!("{i:x}").repeat(2_000)));
        e
    }
    let disk = SimDisk::new();
    let log = Log::create_in(Arc::new(disk.clone()), DIR, options()).unwrap();
    let mut last = None;
    let mut i = 0;
    while log.state().segments < 20 {
        let batch: Vec<Event> = (i..i + 5).map(big).collect();
        last = log.append_batch(&batch).unwrap().pop();
        i += 5;
    }
    log.close().unwrap();
    let meter = Metered {
        disk: disk.clone(),
        open: Arc::new(AtomicUsize::new(0)),
        max_open: Arc::new(AtomicUsize::new(0)),
        max_read: Arc::new(AtomicU64::new(0)),
    };
    let mut progress = Vec::new();
    let report = verify_dir(&meter, dir(), &mut |bytes| progress.push(bytes)).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.segments, 20);
    assert_eq!(report.records, i);
    assert_eq!(report.head, Some(last.unwrap().hash));
    assert_eq!(report.bytes, 20 * MIN_SEGMENT_BYTES);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    // Streaming: a bounded number of files open at once, reads no larger
    // than one segment, whatever the number of segments.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        meter.max_open.load(Ordering::SeqCst) <= cores + 1,
        "{} files open at once",
        meter.max_open.load(Ordering::SeqCst)
    );
    assert!(meter.max_read.load(Ordering::SeqCst) <= MIN_SEGMENT_BYTES);
    assert_eq!(meter.open.load(Ordering::SeqCst), 0, "files left open");

    // Damage in many places: every problem is found and reported once, and
    // the report stays bounded.
    let names: Vec<String> = disk
        .list(dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    for name in &names {
        let path = dir().join(name);
        let image = disk.read_file(&path).unwrap();
        let f = frames(&image)[1];
        disk.tamper(&path, f.offset as u64 + 100, b"#").unwrap();
    }
    let report = verify_dir(&disk, dir(), &mut |_| {}).unwrap();
    let corrupt = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::FrameCorrupt)
        .count();
    assert_eq!(corrupt, 20, "{:#?}", report.problems);
}
