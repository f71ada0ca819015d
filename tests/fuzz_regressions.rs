//! What the fuzz targets in `fuzz/` found, each input a named test, and the
//! committed seed corpus replayed through the targets' checks.
//!
//! The checks live in `fuzz/src/` and are compiled into this test as a
//! module, so an input replays here through exactly the code the fuzzer
//! ran, on the stable toolchain, without libFuzzer. To replay a crash file
//! the fuzzer wrote, point `CHAINLOG_FUZZ_REPLAY` at it:
//! `CHAINLOG_FUZZ_REPLAY=fuzz/artifacts/model/crash-… cargo test --test fuzz_regressions replay`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(
    dead_code,
    reason = "helpers the fuzz targets use and these tests do not"
)]
#[path = "../fuzz/src/lib.rs"]
mod chainlog_fuzz;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chainlog::event::encode_record;
use chainlog::format::segment::{self, data_end_limit, SegmentTrailer, Step, HEADER_BYTES};
use chainlog::hash::checkpoint::{Checkpoint, NoteSigner};
use chainlog::index;
use chainlog::storage::Storage;
use chainlog::{Durability, Event, Log, Timestamp};

use chainlog_fuzz::common::{dir, empty_log_disk, options, storage};
use chainlog_fuzz::decode::{compact, expand};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn run_target(target: &str, data: &[u8]) {
    match target {
        "decode" => chainlog_fuzz::decode::run(data),
        "recovery" => chainlog_fuzz::recovery::run(data),
        "model" => chainlog_fuzz::model::run(data),
        "ingest" => chainlog_fuzz::ingest::run(data),
        other => panic!("no fuzz target {other}"),
    }
}

const TARGETS: [&str; 4] = ["decode", "recovery", "model", "ingest"];

/// Every committed seed passes its target's checks.
#[test]
fn seed_corpus_passes() {
    let mut seeds = 0;
    for target in TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            run_target(target, &data);
            seeds += 1;
        }
    }
    eprintln!("{seeds} seeds replayed");
}

/// Replays the file named by `CHAINLOG_FUZZ_REPLAY` (a crash input under
/// `fuzz/artifacts/<target>/`) through its target; passes when unset.
#[test]
fn replay() {
    let Some(path) = std::env::var_os("CHAINLOG_FUZZ_REPLAY") else {
        return;
    };
    let path = PathBuf::from(path);
    let target = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .filter(|t| TARGETS.contains(t))
        .expect("the input lies in a directory named after its target")
        .to_string();
    run_target(&target, &std::fs::read(&path).unwrap());
}

/// The `ingest` seeds that are events in the usual form reach the borrowed
/// reader (so the fuzzer starts from inputs where the two paths meet),
/// and the rest are declined.
#[test]
fn ingest_seeds_reach_the_borrowed_reader() {
    for (seed, taken) in [
        ("usual", true),
        ("escapes", true),
        ("numbers", false),
        ("duplicate-keys", false),
        ("deep-and-private", false),
        ("invalid", false),
        ("unknown-field", false),
    ] {
        let text = std::fs::read_to_string(corpus_dir("ingest").join(seed)).unwrap();
        assert_eq!(chainlog_fuzz::ingest::compare(&text), taken, "{seed}");
    }
    let numbers = std::fs::read_to_string(corpus_dir("ingest").join("numbers")).unwrap();
    // Without the one number serde_json refuses, the rest is taken.
    assert!(chainlog_fuzz::ingest::compare(
        &numbers.replace(",1e400", "")
    ));
}

// ---------------------------------------------------------------------------
// Regressions: one test per bug a fuzz target found.

/// The process's peak virtual memory size (Linux: `VmPeak`).
fn vm_peak_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// An index of a few records, each with a node, as the library writes it.
fn sample_index() -> Vec<u8> {
    let mut builder = index::IndexBuilder::new(0, 512);
    let mut offset = HEADER_BYTES;
    for i in 0..20 {
        let e = sample_event(i);
        let mut record = Vec::new();
        encode_record(&e, &mut record).unwrap();
        let view = chainlog::event::decode_record(1, &record).unwrap();
        let frame_len = chainlog::format::frame::padded_len(record.len()) as u64;
        builder.add(
            offset,
            frame_len,
            i,
            chainlog::ChainHash([i as u8; 32]),
            &view,
        );
        offset += frame_len;
    }
    builder.encode()
}

/// Found by `decode` (crash input `oom-f68a606b…`, 446 bytes: an index
/// file whose section table, with a valid header CRC, gives the node
/// directory a length of 1,497,713,451 bytes). `IndexReader::section`
/// allocated a buffer of the length the table states, before learning that
/// the file is 446 bytes long: libFuzzer stopped at `malloc(1497713451)`.
/// A damaged (or hostile) index must cost a `Corrupted` error and a rebuild,
/// never memory in proportion to a length field (DESIGN.md invariant 8).
#[test]
fn index_section_past_the_end_of_the_file_is_refused_without_allocating_it() {
    let mut bytes = sample_index();
    // Section 5, the node directory: entry at 76 + 5 * 16 = offset, length.
    let entry = 76 + 5 * 16;
    bytes[entry + 4..entry + 8].copy_from_slice(&1_497_713_451u32.to_le_bytes());
    chainlog_fuzz::decode::fix_index_crcs(&mut bytes);
    let len = bytes.len();
    let before = vm_peak_bytes();
    let result = index::IndexReader::open(Arc::new(index::MemoryFile(bytes)), "x.idx")
        .and_then(|mut reader| reader.blocks_matching(index::Field::Node, &|_| true));
    let grown = vm_peak_bytes().saturating_sub(before);
    match result {
        Err(e) => assert!(e.is_corruption(), "expected corruption, got {e}"),
        Ok(blocks) => panic!("a section past the end of the file was read: {blocks:?}"),
    }
    assert!(
        grown < 256 << 20,
        "reading an index of {len} bytes reserved {} MiB",
        grown >> 20
    );
}

/// Found by `model` (crash input `crash-48195ed9…`): under
/// `Durability::Always`, an append's `fdatasync` fails (EIO); the handle
/// zeroes the unsynced range `[durable end, write end)` so that a reopen
/// recovers to the last durable record, but that zeroing write itself fails
/// part-way (the disk is full). The zeroed prefix is then a hole with valid
/// frames of the failed batch after it, and the next open refuses the log
/// as corrupt ("invalid frame followed by a valid frame"), although nothing
/// but the library's own unfinished cleanup is wrong with it: every
/// acknowledged record is intact, and the log can no longer be opened.
#[test]
fn failed_sync_then_a_failed_zeroing_leaves_a_log_that_opens() {
    let disk = empty_log_disk();
    let log = Log::open_in(storage(&disk), dir(), options(Durability::Always)).unwrap();
    let durable: Vec<Event> = (0..5).map(sample_event).collect();
    let receipts = log.append_batch(&durable).unwrap();
    // A batch of seven; the disk has room for it and for one frame more.
    let batch: Vec<Event> = (5..12).map(sample_event).collect();
    let frame_len = |e: &Event| {
        let mut r = Vec::new();
        chainlog::event::record::encode_provenance(
            chainlog::storage::sim::SIM_CLOCK_START,
            chainlog::event::Origin::Client,
            chainlog::log::DEFAULT_APPENDER,
            &mut r,
        )
        .unwrap();
        encode_record(e, &mut r).unwrap();
        chainlog::format::frame::padded_len(r.len()) as u64
    };
    let batch_bytes: u64 = batch.iter().map(frame_len).sum();
    disk.set_write_budget(Some(batch_bytes + frame_len(&batch[0])));
    disk.fail_next_syncs(1);
    let err = log.append_batch(&batch).unwrap_err();
    assert!(matches!(err, chainlog::Error::Io { .. }), "{err}");
    drop(log);
    disk.set_write_budget(None);

    // No power loss: the process goes on (or restarts) and reopens.
    let log = Log::open_in(storage(&disk), dir(), options(Durability::Always))
        .unwrap_or_else(|e| panic!("the log does not reopen after a failed sync: {e}"));
    let records: Vec<_> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
    assert!(records.len() >= receipts.len(), "durable records lost");
    for (r, want) in records.iter().zip(&receipts) {
        assert_eq!((r.seq, r.hash), (want.seq, want.hash));
    }
    // Whatever of the failed batch survived is a prefix of it.
    for (r, e) in records[receipts.len()..].iter().zip(&batch) {
        assert_eq!(&r.event, e);
    }
    drop(log);
    let report = chainlog::verify::verify_dir(&disk, dir(), &mut |_| {}).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
}

/// Found by `decode` (crash input `crash-4a641ab5…`, with CRCs recomputed:
/// a segment whose second frame has seq 18446744073709551615 and a valid
/// CRC). The verifier reports the seq mismatch, then sets the next expected
/// seq to `seq + 1`, which overflows: a panic wherever overflow checks are on
/// (debug builds, the tests, the fuzzer), and a silent wrap to 0 in release
/// builds. The verifier must report damage, however odd, and never panic.
#[test]
fn verify_reports_a_frame_with_the_largest_seq_instead_of_overflowing() {
    let disk = empty_log_disk();
    let log = Log::open_in(storage(&disk), dir(), options(Durability::Always)).unwrap();
    log.append_batch(&[sample_event(0), sample_event(1)])
        .unwrap();
    log.close().unwrap();
    let path = dir().join(segment::file_name(0));
    let mut image = disk.read_file(&path).unwrap();
    // The second frame: seq u64::MAX, CRC recomputed (a forger's edit).
    let mut scan = segment::Scanner::new(
        disk.open(&path, false).unwrap(),
        "seg",
        HEADER_BYTES,
        data_end_limit(segment::MIN_SEGMENT_BYTES),
    );
    let _ = scan.next_step().unwrap();
    let second = scan.position() as usize;
    image[second + 8..second + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    chainlog_fuzz::decode::fix_segment_crcs(&mut image);
    disk.tamper(&path, 0, &image).unwrap();

    let report = std::thread::spawn(move || {
        chainlog::verify::verify_dir(&disk, dir(), &mut |_| {}).unwrap()
    })
    .join()
    .unwrap_or_else(|_| panic!("the verifier panicked on a frame with seq u64::MAX"));
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == chainlog::verify::ProblemKind::SeqMismatch),
        "{:?}",
        report.problems
    );
}

// ---------------------------------------------------------------------------
// The seed corpus, written by the library itself.

fn sample_event(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_773_049_934_000_000_000 + i as i64 * 1_000_000_007),
        ["pcap.download", "incident.opened", "auth.login_failed"][i as usize % 3],
        ["alice@acme.io", "deploy-bot", "system"][i as usize % 3],
    );
    if i % 2 == 0 {
        e.node = Some("nyc-edge-01".into());
        e.source_ip = Some("203.0.113.42".parse().unwrap());
    }
    if i % 3 == 1 {
        e.resource = Some("a3f7c2b1".into());
        e.outcome = chainlog::Outcome::Failure;
    }
    e.context.insert("bytes".into(), (18231 + i).into());
    e
}

/// Pseudo-random bytes for seeds (xorshift64), the same on every run.
struct Noise(u64);

impl Noise {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A `decode` seed for the record decoder: the first byte picks the layout
/// (`0`: version 1, the event body alone; `1`: version 2, the provenance
/// prefix then the body), the rest is the record.
fn record_seed(version: u16, record: &[u8]) -> Vec<u8> {
    let mut seed = vec![(version == 2) as u8];
    seed.extend_from_slice(record);
    seed
}

/// A version 2 record as the engine writes its own (origin 1): the
/// provenance prefix, then the body of `event`, whose reserved type no
/// public encoder takes (so it is encoded under a client type of the same
/// length and renamed).
fn engine_record(event: &Event) -> Vec<u8> {
    use chainlog::event::record::{encode_provenance, Origin};
    let mut out = Vec::new();
    let received_at = Timestamp::from_unix_nanos(1_773_049_935_000_000_000);
    encode_provenance(received_at, Origin::Engine, "chainlog", &mut out).unwrap();
    let body = out.len();
    let mut client = event.clone();
    client.event_type = event.event_type.replacen("log.", "lxg.", 1);
    encode_record(&client, &mut out).unwrap();
    // The type follows the timestamp, outcome, ip kind (no ip) and its length.
    let type_at = body + 8 + 1 + 1 + 2;
    assert_eq!(&out[type_at..type_at + 4], b"lxg.");
    out[type_at + 1] = b'o';
    out
}

/// A segment of a log whose first five records retention deleted: it
/// starts at seq 5 with the `log.retention` record that accounts for that,
/// then a legal hold set and released, then an ordinary event. Compact
/// form, verified intact.
fn retained_segment() -> Vec<u8> {
    use chainlog::retention::{
        DeletedSegment, RetentionPolicy, RetentionRecord, HOLD_RELEASED_EVENT, HOLD_SET_EVENT,
        RETENTION_EVENT, SYSTEM_ACTOR,
    };
    let log_id = chainlog_fuzz::common::LOG_ID;
    let mut head = chainlog::ChainHash::genesis(&log_id);
    let mut frontier = chainlog::hash::merkle::Frontier::new();
    for seq in 0..5 {
        head = head.next(seq, format!("deleted record {seq}").as_bytes());
        frontier.push(&head.0);
    }
    let header = segment::SegmentHeader {
        version: segment::FORMAT_VERSION,
        log_id,
        base_seq: 5,
        prev_hash: head,
        segment_bytes: segment::MIN_SEGMENT_BYTES,
        created_at: Timestamp::from_unix_nanos(1_773_049_934_000_000_000),
    };
    let disk = chainlog::storage::sim::SimDisk::new();
    segment::create(&disk, dir(), &header, &frontier).unwrap();
    let at = Timestamp::from_unix_nanos(1_773_049_935_000_000_000);
    let record = RetentionRecord {
        first_retained_seq: 5,
        first_retained_prev_hash: head,
        deleted: vec![DeletedSegment {
            file: segment::file_name(0),
            base_seq: 0,
            last_seq: 4,
            record_count: 5,
            prev_hash: chainlog::ChainHash::genesis(&log_id),
            last_hash: head,
            // A day before the cutoff: the deleted records were that old.
            min_timestamp: Timestamp::from_unix_nanos(at.unix_nanos() - 86_400_000_000_000),
            max_timestamp: Timestamp::from_unix_nanos(at.unix_nanos() - 86_400_000_000_000),
            bytes: segment::MIN_SEGMENT_BYTES,
            max_received_at: None,
        }],
        cutoff: Some(at),
        policy: RetentionPolicy::default(),
    };
    let mut retention = Event::new(at, RETENTION_EVENT, SYSTEM_ACTOR);
    retention.context = serde_json::to_value(&record)
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    let mut hold = Event::new(at, HOLD_SET_EVENT, "alice@acme.io");
    hold.context.insert("reason".into(), "incident 42".into());
    let mut release = Event::new(at, HOLD_RELEASED_EVENT, "alice@acme.io");
    release.context.insert("reason".into(), "closed".into());
    // No append path takes an engine record (issue 14, finding 1): they
    // are framed here as the engine frames them, with a client's event after.
    use chainlog::event::record::{encode_provenance, Origin};
    use chainlog::format::frame;
    let mut client = Vec::new();
    encode_provenance(at, Origin::Client, "alice-key", &mut client).unwrap();
    encode_record(&sample_event(8), &mut client).unwrap();
    let records = [
        engine_record(&retention),
        engine_record(&hold),
        engine_record(&release),
        client,
    ];
    let file = disk.open(&dir().join(segment::file_name(5)), true).unwrap();
    let (mut offset, mut prev) = (HEADER_BYTES, head);
    for (seq, record) in (5..).zip(&records) {
        let mut out = Vec::new();
        let start = frame::begin(&mut out);
        out.extend_from_slice(record);
        frame::finish(&mut out, start);
        prev = frame::link(&mut out, seq, &prev);
        file.write_all_at(&out, offset).unwrap();
        offset += out.len() as u64;
    }
    file.sync_data().unwrap();
    let report = chainlog::verify::verify_dir(&disk, dir(), &mut |_| {}).unwrap();
    assert!(report.is_intact() && report.records == 4, "{report:?}");
    compact(&disk.read_file(&dir().join(segment::file_name(5))).unwrap())
}

/// The `decode` seeds cover version 2: a sealed segment, records with
/// provenance, and engine records, as `write_seed_corpus` wrote them.
#[test]
fn decode_seeds_cover_version_2() {
    use chainlog::event::record::Origin;
    let seed = |name: &str| std::fs::read(corpus_dir("decode").join(name)).unwrap();
    let origins_in = |name: &str| {
        let file = expand(&seed(name));
        assert_eq!(u16::from_le_bytes([file[8], file[9]]), 2, "{name}");
        let disk = chainlog::storage::sim::SimDisk::new();
        let path = dir().join(segment::file_name(0));
        let f = disk.create_new(&path).unwrap();
        f.write_all_at(&file, 0).unwrap();
        let limit = data_end_limit(file.len() as u64);
        let mut scan = segment::Scanner::new(f, "seed", HEADER_BYTES, limit);
        let mut origins = Vec::new();
        while let Step::Frame { frame, .. } = scan.next_step().unwrap() {
            let view = chainlog::event::decode_record(2, frame.record).unwrap();
            assert!(view.received_at.is_some() && view.appender.is_some());
            origins.push(view.origin);
        }
        (file, origins)
    };
    let (sealed, origins) = origins_in("segment-sealed");
    let at = data_end_limit(sealed.len() as u64) as usize;
    assert_eq!(&sealed[at..at + 8], &segment::TRAILER_MAGIC);
    assert_eq!(origins, vec![Origin::Client; 6]);
    let (_, origins) = origins_in("segment-retained");
    assert_eq!(origins[..3], [Origin::Engine; 3]);
    assert_eq!(origins[3], Origin::Client);
    for (name, origin) in [
        ("record-v2", Origin::Client),
        ("record-v2-engine", Origin::Engine),
    ] {
        let bytes = seed(name);
        assert_eq!(bytes[0] & 1, 1, "{name} picks version 2");
        let view = chainlog::event::decode_record(2, &bytes[1..]).unwrap();
        assert_eq!(view.origin, origin, "{name}");
    }
}

/// Rewrites the seed corpus in `fuzz/corpus/` (run by hand after a format
/// change: `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`).
/// The segments and records it writes are in the current format (version
/// 2: records with provenance, engine records, a sealed segment); the
/// `decode/v1-*` seeds were written by it before version 2 and are kept so
/// that the fuzzer goes on reading version 1.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    // decode: a segment the library wrote (compact form: see
    // `chainlog_fuzz::decode::expand`), the same segment sealed, its index,
    // records of both versions (a client's and the engine's), a
    // checkpoint, a signed note and keys.
    let disk = empty_log_disk();
    let log = Log::open_in(storage(&disk), dir(), options(Durability::Always)).unwrap();
    let events: Vec<Event> = (0..6).map(sample_event).collect();
    let receipts = log.append_batch(&events).unwrap();
    log.close().unwrap();
    let path = dir().join(segment::file_name(0));
    let mut file = disk.read_file(&path).unwrap();
    write_seed("decode", "segment-active", &compact(&file));

    let seg = disk.open(&path, false).unwrap();
    let limit = data_end_limit(chainlog::format::segment::MIN_SEGMENT_BYTES);
    let mut scan = segment::Scanner::new(seg.clone(), "seed", HEADER_BYTES, limit);
    let mut times = Vec::new();
    let mut last_received_at = Timestamp::default();
    let data_end = loop {
        match scan.next_step().unwrap() {
            Step::Frame { frame, .. } => {
                let view = chainlog::event::decode_record(2, frame.record).unwrap();
                times.push(view.timestamp);
                last_received_at = view.received_at.unwrap();
            }
            Step::End { offset } => break offset,
            Step::Bad { offset, error } => panic!("bad frame at {offset}: {error}"),
        }
    };
    let trailer = SegmentTrailer {
        record_count: events.len() as u64,
        last_seq: receipts.last().unwrap().seq,
        last_hash: receipts.last().unwrap().hash,
        min_timestamp: *times.iter().min().unwrap(),
        max_timestamp: *times.iter().max().unwrap(),
        data_end,
        last_received_at,
    };
    let at = limit as usize;
    file[at..at + segment::TRAILER_BYTES].copy_from_slice(&trailer.encode());
    write_seed("decode", "segment-sealed", &compact(&file));
    for seed in ["segment-active", "segment-sealed"] {
        let bytes = std::fs::read(corpus_dir("decode").join(seed)).unwrap();
        assert_eq!(
            expand(&bytes),
            if seed == "segment-sealed" {
                file.clone()
            } else {
                disk.read_file(&path).unwrap()
            }
        );
        let disk = chainlog::storage::sim::SimDisk::new();
        let f = disk.create_new(&path).unwrap();
        f.write_all_at(&expand(&bytes), 0).unwrap();
        let report = chainlog::verify::verify_dir(&disk, dir(), &mut |_| {}).unwrap();
        assert!(
            report.is_intact() && report.records == 6,
            "{seed}: {report:?}"
        );
    }

    write_seed("decode", "segment-retained", &retained_segment());

    let idx = index::build_sealed(seg, 0, &trailer, 512).unwrap();
    write_seed("decode", "index", &idx);

    let mut record = Vec::new();
    encode_record(&events[0], &mut record).unwrap();
    write_seed("decode", "record-v1", &record_seed(1, &record));
    // The record as the log stored it, provenance and all.
    let mut stored = Vec::new();
    let seg = disk.open(&path, false).unwrap();
    let mut scan = segment::Scanner::new(seg, "seed", HEADER_BYTES, limit);
    if let Step::Frame { frame, .. } = scan.next_step().unwrap() {
        stored.extend_from_slice(frame.record);
    }
    assert_eq!(&stored[stored.len() - record.len()..], &record[..]);
    write_seed("decode", "record-v2", &record_seed(2, &stored));
    let mut hold = Event::new(
        Timestamp::from_unix_nanos(1_773_049_935_000_000_000),
        chainlog::retention::HOLD_SET_EVENT,
        "counsel@acme.io",
    );
    hold.context.insert("reason".into(), "incident 42".into());
    write_seed(
        "decode",
        "record-v2-engine",
        &record_seed(2, &engine_record(&hold)),
    );

    let signer = NoteSigner::from_seed("audit.example", [7; 32]).unwrap();
    let checkpoint = Checkpoint {
        origin: "chainlog/42424242424242424242424242424242".into(),
        size: 6,
        root: [9; 32],
        head: Some(receipts.last().unwrap().hash),
    };
    write_seed("decode", "checkpoint-body", checkpoint.body().as_bytes());
    write_seed(
        "decode",
        "checkpoint-signed",
        checkpoint.sign(&signer).unwrap().as_bytes(),
    );
    write_seed(
        "decode",
        "key-verifier",
        signer.verifier().to_text().as_bytes(),
    );
    write_seed("decode", "key-signer", signer.to_secret_text().as_bytes());

    // recovery: a few records then each kind of damage (the first bytes
    // choose the record count, batches and sizes; see the target's docs),
    // and the same followed by pseudo-random bytes, long enough for a
    // garbage tail or tamper of some size.
    let records = [
        12u8, 1, 0x00, 2, 0xc3, 0x40, 0x10, 3, 0x25, 0x08, 0x31, 0x13,
    ];
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for (mode, name) in [(0u8, "garbage-tail"), (1, "torn-appends"), (2, "tamper")] {
        let mut input = records.to_vec();
        input.push(mode);
        input.extend_from_slice(&[
            0x40, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
            0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14,
        ]);
        write_seed("recovery", name, &input);
        let mut long = vec![30, mode];
        long[1] = 3; // batches of four
        long.extend(noise.bytes(60));
        long.push(mode);
        long.extend(noise.bytes(700));
        write_seed("recovery", &format!("{name}-long"), &long);
    }

    // model: op sequences (the first byte picks the policy; then one byte
    // per op, op = byte % 10, followed by its arguments), and longer
    // pseudo-random ones.
    let always = [
        0u8, 0, 0xc1, 0x10, 0x20, 1, 0x03, 3, 4, 0, 0, 0, 0x41, 0, 0xc0, 0xff, 0x7f, 4, 7, 0, 0, 0,
        0, 5, 0, 0, 7, 0, 0, 0, 0,
    ];
    write_seed("model", "always-append-crash-read", &always);
    let none = [
        1u8, 0, 0x11, 1, 0x22, 3, 5, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 5, 1, 3, 0, 0, 0, 40, 0, 0, 0,
        1, 7, 0, 0, 0, 0,
    ];
    write_seed("model", "none-torn-write", &none);
    let faults = [
        2u8, 0x10, 0, 0, 0x30, 8, 0, 0x05, 9, 0x00, 0x10, 0, 0, 0, 0x44, 6, 0, 0, 0x06, 4, 5, 0, 7,
        0, 0, 0, 0,
    ];
    write_seed("model", "batch-faults", &faults);
    let reopen = [
        1u8, 3, 11, 0, 0, 0, 0xc2, 0xff, 0xff, 0xc2, 0xff, 0xff, 0xc2, 0xff, 0xff, 0xc2, 0xff,
        0xff, 0xc2, 0xff, 0xff, 6, 1, 3, 11, 0, 0, 0, 0xc2, 0xff, 0xff, 6, 0,
    ];
    write_seed("model", "rolls-and-reopens", &reopen);
    for policy in 0..3u8 {
        let mut long = vec![policy];
        long.extend(noise.bytes(600));
        write_seed("model", &format!("random-{policy}"), &long);
    }
}
