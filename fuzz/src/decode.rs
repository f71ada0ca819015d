//! The `decode` target: arbitrary bytes through every decoder.
//!
//! Each decoder must return a typed result and never panic; what decodes
//! must encode back to the same bytes where the format is canonical; and a
//! length field, however large, must not make a reader allocate by it (the
//! fuzzer's `-malloc_limit_mb` catches that). The bytes are also a segment
//! file: the verifier and recovery must agree on it.

use std::path::Path;
use std::sync::Arc;

use chainlog::event::record::{encode_provenance, Origin};
use chainlog::event::{decode_record, encode_record, Timestamp};
use chainlog::format::frame::{self, FRAME_ALIGN, FRAME_HEADER_BYTES};
use chainlog::format::segment::{
    self, data_end_limit, Scanner, SegmentHeader, SegmentTrailer, Step, HEADER_BYTES,
    MIN_SEGMENT_BYTES, TRAILER_AREA_BYTES, TRAILER_BYTES,
};
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use chainlog::index::{self, Field, IndexReader, MemoryFile};
use chainlog::limits::MAX_RECORD_BYTES;
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{Storage, StorageFile};
use chainlog::verify::{verify_dir, Report};
use chainlog::{Error, Log, Options};

use super::common::dir;

/// In a compact segment input, the bytes after this mark go to the trailer
/// area of a [`MIN_SEGMENT_BYTES`] segment; the bytes before it start the
/// file. So a small input can stand for a whole sealed segment.
pub const TRAILER_AREA_MARK: &[u8; 8] = b"@TRAILR@";

/// Runs every decoder on `data`, and again on `data` with its checksums
/// recomputed (a random mutation almost never passes a CRC-32C, and the
/// checks behind one deserve fuzzing as much as the checksum itself).
pub fn run(data: &[u8]) {
    record(data);
    frame(data);
    checkpoint(data);
    for fixed in [false, true] {
        let mut raw = data.to_vec();
        let mut whole = expand(data);
        let mut idx = data.to_vec();
        if fixed {
            fix_segment_crcs(&mut raw);
            fix_segment_crcs(&mut whole);
            fix_index_crcs(&mut idx);
        }
        header_and_trailer(&raw);
        scanner(&raw);
        index(&idx);
        segment_file(raw);
        segment_file(whole);
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put_crc(b: &mut [u8], from: usize, to: usize) {
    let crc = crc32c::crc32c(&b[from..to]);
    b[to..to + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes, per `docs/FORMAT.md`, the segment header's CRC, the CRC of
/// each frame from byte 128 for as long as the length fields make sense,
/// and, in a whole segment, the trailer's and the link block's.
pub fn fix_segment_crcs(file: &mut [u8]) {
    if file.len() < HEADER_BYTES as usize {
        return;
    }
    put_crc(file, 0, HEADER_BYTES as usize - 4);
    let whole = file.len() as u64 == MIN_SEGMENT_BYTES;
    let limit = if whole {
        data_end_limit(MIN_SEGMENT_BYTES) as usize
    } else {
        file.len()
    };
    let mut pos = HEADER_BYTES as usize;
    while pos + FRAME_HEADER_BYTES <= limit {
        let len = u32_at(file, pos + 4).unwrap_or(0) as usize;
        if len == 0 || len > MAX_RECORD_BYTES || pos + frame::padded_len(len) > limit {
            break;
        }
        let crc = crc32c::crc32c(&file[pos + 4..pos + FRAME_HEADER_BYTES + len]);
        file[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos += frame::padded_len(len);
    }
    if whole {
        let t = limit;
        if file[t..t + 8] == segment::TRAILER_MAGIC {
            put_crc(file, t, t + TRAILER_BYTES - 4);
        }
        let link = t + TRAILER_BYTES;
        if let Some(count) = u32_at(file, link + 8).filter(|&c| c <= 64) {
            put_crc(file, link, link + 16 + 32 * count as usize);
        }
    }
}

/// Recomputes an index file's section CRCs (for sections inside the file)
/// and then its header CRC.
pub fn fix_index_crcs(file: &mut [u8]) {
    const TABLE_AT: usize = 76;
    if file.len() < index::INDEX_HEADER_BYTES {
        return;
    }
    for i in 0..7 {
        let entry = TABLE_AT + 16 * i;
        let (Some(at), Some(len)) = (u32_at(file, entry), u32_at(file, entry + 4)) else {
            return;
        };
        let (at, len) = (at as usize, len as usize);
        if let Some(section) = file.get(at..at.saturating_add(len)) {
            let crc = crc32c::crc32c(section);
            file[entry + 8..entry + 12].copy_from_slice(&crc.to_le_bytes());
        }
    }
    put_crc(file, 0, index::INDEX_HEADER_BYTES - 4);
}

fn record(data: &[u8]) {
    // The first byte picks the layout (1 or 2), the rest is the record.
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let version = 1 + u16::from(pick & 1);
    let Ok(view) = decode_record(version, data) else {
        return;
    };
    assert!(data.len() <= MAX_RECORD_BYTES);
    let Ok(event) = view.to_event() else {
        return;
    };
    let mut again = Vec::new();
    if version == 2 {
        let appender = view.appender.expect("a v2 record has an appender");
        if view.origin != Origin::Client
            || encode_provenance(Timestamp::default(), Origin::Client, appender, &mut again)
                .is_err()
        {
            return;
        }
    }
    if encode_record(&event, &mut again).is_ok() {
        let back = decode_record(version, &again)
            .and_then(|v| v.to_event())
            .expect("an encoded event decodes");
        assert_eq!(back, event, "the record codec does not round-trip");
    }
}

fn frame(data: &[u8]) {
    match frame::decode(data) {
        Ok(Some(f)) => {
            assert!((1..=MAX_RECORD_BYTES).contains(&f.record.len()));
            assert!(f.padded_len() <= data.len());
            assert_eq!(f.padded_len() % FRAME_ALIGN, 0);
        }
        Ok(None) => assert!(data[..FRAME_HEADER_BYTES].iter().all(|&b| b == 0)),
        Err(_) => {}
    }
}

fn padded<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut b = [0; N];
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    b
}

fn header_and_trailer(data: &[u8]) {
    let h: [u8; HEADER_BYTES as usize] = padded(data);
    if let Ok(header) = SegmentHeader::decode(&h, "fuzz.seg") {
        assert_eq!(header.encode(), h, "a decoded header encodes differently");
    }
    let t: [u8; TRAILER_BYTES] = padded(data);
    if let Ok(Some(trailer)) = SegmentTrailer::decode(&t, "fuzz.seg", 0) {
        assert_eq!(trailer.encode(), t, "a decoded trailer encodes differently");
    }
    let tail = data.get(HEADER_BYTES as usize..).unwrap_or(&[]);
    let t: [u8; TRAILER_BYTES] = padded(tail);
    let _ = SegmentTrailer::decode(&t, "fuzz.seg", 0);
}

/// Walks the bytes as a segment the way the verifier does: frame after
/// frame, and past a bad one to the next valid frame.
fn scanner(data: &[u8]) {
    let file: Arc<dyn StorageFile> = Arc::new(MemoryFile(data.to_vec()));
    for limit in [data.len() as u64, data_end_limit(MIN_SEGMENT_BYTES)] {
        let mut scan = Scanner::new(file.clone(), "fuzz.seg", HEADER_BYTES, limit);
        for _ in 0..100_000 {
            let pos = scan.position();
            match scan.next_step().expect("a memory file never fails a read") {
                Step::Frame { offset, frame } => {
                    assert_eq!(offset, pos);
                    let end = offset + frame.padded_len() as u64;
                    assert!(end <= limit, "a frame ends past the scan limit");
                    assert_eq!(scan.position(), end);
                }
                Step::End { offset } | Step::Bad { offset, .. } => {
                    assert_eq!(offset, pos);
                    let min_seq = u64::from(data.get(9).copied().unwrap_or(0));
                    let (found, damage_end) = scan
                        .find_valid_after(min_seq)
                        .expect("a memory file never fails a read");
                    assert_eq!(scan.position(), pos, "find_valid_after moved the scanner");
                    assert!(damage_end <= limit.max(pos));
                    match found {
                        Some((at, seq)) => {
                            assert!(at > pos && at < limit && at % FRAME_ALIGN as u64 == 0);
                            assert!(seq >= min_seq);
                            scan.seek(at);
                        }
                        None => break,
                    }
                }
            }
        }
    }
}

fn index(data: &[u8]) {
    let Ok(mut reader) = IndexReader::open(Arc::new(MemoryFile(data.to_vec())), "fuzz.idx") else {
        return;
    };
    let blocks = reader.header().block_count;
    if let Ok(offsets) = reader.offsets() {
        assert_eq!(offsets.len() as u64, u64::from(blocks));
    }
    if let Ok(seqs) = reader.first_seqs() {
        assert_eq!(seqs.len() as u64, u64::from(blocks));
    }
    if let Ok(times) = reader.times() {
        assert_eq!(times.len() as u64, u64::from(blocks));
    }
    for field in [Field::Actor, Field::EventType, Field::Node] {
        if let Ok(found) = reader.blocks_matching(field, &|_| true) {
            assert!(found.windows(2).all(|w| w[0] < w[1]));
            assert!(found.iter().all(|&b| b < blocks));
        }
    }
}

fn checkpoint(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(cp) = Checkpoint::parse_body(&text) {
        assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp));
    }
    if let Ok(v) = NoteVerifier::parse(&text) {
        assert_eq!(NoteVerifier::parse(&v.to_text()), Ok(v));
    }
    if let Ok(s) = NoteSigner::parse(&text) {
        let again = NoteSigner::parse(&s.to_secret_text()).expect("a printed key parses");
        assert_eq!(again.to_secret_text(), s.to_secret_text());
        assert_eq!((again.name(), again.id()), (s.name(), s.id()));
    }
    let signer = NoteSigner::from_seed("fuzz.example", [7; 32]).expect("a valid key name");
    let verifier = signer.verifier();
    let _ = verifier.open_note(&text);
    let _ = Checkpoint::open(&text, &verifier);
    if let Ok(note) = signer.sign_note(&text) {
        assert_eq!(
            verifier.open_note(&note),
            Ok(&*text),
            "a signed note does not open"
        );
    }
}

/// A whole [`MIN_SEGMENT_BYTES`] segment from a compact input: the bytes
/// before [`TRAILER_AREA_MARK`] start the file, those after it start the
/// trailer area, and everything else is zero.
pub fn expand(data: &[u8]) -> Vec<u8> {
    let mark = data
        .windows(TRAILER_AREA_MARK.len())
        .position(|w| w == TRAILER_AREA_MARK);
    let (prefix, area) = match mark {
        Some(at) => (&data[..at], &data[at + TRAILER_AREA_MARK.len()..]),
        None => (data, &[][..]),
    };
    let limit = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let mut file = vec![0; MIN_SEGMENT_BYTES as usize];
    let p = prefix.len().min(limit);
    file[..p].copy_from_slice(&prefix[..p]);
    let a = area.len().min(TRAILER_AREA_BYTES as usize);
    file[limit..limit + a].copy_from_slice(&area[..a]);
    file
}

/// The inverse of [`expand`] for a segment of [`MIN_SEGMENT_BYTES`]: the
/// data area without its trailing zeros, the mark, and the trailer area
/// without its trailing zeros. For writing seed inputs.
pub fn compact(file: &[u8]) -> Vec<u8> {
    let limit = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let trim = |b: &[u8]| b.len() - b.iter().rev().take_while(|&&x| x == 0).count();
    let data = &file[..limit];
    let area = &file[limit..];
    let mut out = data[..trim(data)].to_vec();
    let area_len = trim(area);
    if area_len > 0 {
        out.extend_from_slice(TRAILER_AREA_MARK);
        out.extend_from_slice(&area[..area_len]);
    }
    out
}

fn put_file(disk: &SimDisk, path: &Path, bytes: &[u8]) {
    let f = disk.create_new(path).expect("a new file on an empty disk");
    f.write_all_at(bytes, 0)
        .expect("the simulated disk has room");
    f.sync_data().expect("no sync fault is armed");
    disk.sync_dir(dir()).expect("the simulated disk syncs");
}

fn verify(disk: &SimDisk) -> Report {
    verify_dir(disk, dir(), &mut |_| {}).expect("the verifier reads a simulated disk")
}

/// Recovery may refuse a damaged log, but only as corruption.
fn assert_refusal(e: &Error) {
    assert!(
        e.is_corruption()
            || matches!(
                e,
                Error::UnsupportedVersion { .. } | Error::MigrationNeeded { .. }
            ),
        "open failed with something other than corruption: {e:?}"
    );
}

/// The bytes as the only segment of a log: the verifier must not fail, and
/// when it finds the log intact, recovery must open it and read back what
/// the verifier counted, and leave it intact.
fn segment_file(file: Vec<u8>) {
    let base = SegmentHeader::decode(&padded(&file), "fuzz.seg").map_or(0, |h| h.base_seq);
    let path = dir().join(segment::file_name(base));
    let disk = SimDisk::new();
    put_file(&disk, &path, &file);
    let report = verify(&disk);
    let storage = super::common::storage(&disk);
    let options = |read_only| Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        read_only,
        ..Options::default()
    };

    match Log::open_in(storage.clone(), dir(), options(true)) {
        Ok(log) => {
            let records: Vec<_> = log.iter_from(0).take(100_000).collect();
            if report.is_intact() {
                let records: Vec<_> = records
                    .into_iter()
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| panic!("verify says intact, reading fails: {e}"));
                assert_eq!(records.len() as u64, report.records, "record count");
                // With no records, the head is the hash the next record
                // chains from (the newest segment's link), as stats says.
                let head = records.last().map_or(log.state().head, |r| r.hash);
                assert_eq!(Some(head), report.head, "head");
                assert_eq!(
                    records.first().map(|r| r.seq),
                    report.first_seq.filter(|_| report.records > 0)
                );
            }
        }
        Err(e) => {
            assert!(
                !report.is_intact(),
                "verify says intact, read-only open fails: {e}"
            );
            assert_refusal(&e);
        }
    }
    assert_eq!(
        disk.read_file(&path).as_deref(),
        Some(&file[..]),
        "a read-only open wrote"
    );

    match Log::open_in(storage, dir(), options(false)) {
        Ok(log) => {
            let state = log.state();
            log.close()
                .expect("closing on a simulated disk without faults");
            if report.is_intact() {
                let after = verify(&disk);
                assert!(
                    after.is_intact(),
                    "intact before open, not after: {:?}",
                    after.problems
                );
                assert_eq!(after.torn_tail, None, "open left a torn tail");
                assert_eq!(
                    after.records, report.records,
                    "open changed the record count"
                );
                assert_eq!(after.head, report.head);
                assert_eq!(state.next_seq - state.first_seq, report.records);
            }
        }
        Err(e) => {
            // An older format is readable but refused for writing.
            let older = matches!(e, Error::MigrationNeeded { .. });
            assert!(
                older || !report.is_intact(),
                "verify says intact, open fails: {e}"
            );
            assert_refusal(&e);
            assert_eq!(
                disk.read_file(&path).as_deref(),
                Some(&file[..]),
                "a refused open changed the segment"
            );
        }
    }
}
