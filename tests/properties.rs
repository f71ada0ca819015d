//! Property tests: random events round-trip exactly; random operation
//! sequences with crashes agree with a simple model; no single flipped byte
//! of a segment file goes unnoticed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chainlog::event::encode_record;
use chainlog::format::frame::{self, FRAME_HEADER_BYTES};
use chainlog::format::segment::{self, data_end_limit, HEADER_BYTES, MIN_SEGMENT_BYTES};
use chainlog::hash::chain::ChainHash;
use chainlog::limits::{MAX_ACTOR_BYTES, MAX_EVENT_TYPE_BYTES, MAX_NODE_BYTES};
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, Storage, StorageFile};
use chainlog::verify::{verify_dir, Report};
use chainlog::{Durability, Event, Log, Options, Outcome, Record, Timestamp};
use proptest::prelude::*;
use serde_json::{Map, Value};

const DIR: &str = "/log";

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn options(durability: Durability) -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability,
        ..Options::default()
    }
}

fn record_bytes(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut out,
    )
    .unwrap();
    encode_record(e, &mut out).unwrap();
    out
}

fn verify(storage: &dyn Storage) -> Report {
    verify_dir(storage, dir(), &mut |_| {}).unwrap()
}

/// The simulated disk with index files refused: they are derived data
/// written by a background thread, whose timing would make the pending
/// writes (and so a failing case) differ from run to run.
#[derive(Debug, Clone)]
struct SegmentsOnly(SimDisk);

fn refuse_non_segment(path: &Path) -> io::Result<()> {
    match segment::parse_file_name(path.file_name().and_then(|n| n.to_str()).unwrap_or("")) {
        Some(_) => Ok(()),
        None if path.to_string_lossy().ends_with(segment::TEMP_SUFFIX) => Ok(()),
        None => Err(io::Error::new(io::ErrorKind::Unsupported, "segments only")),
    }
}

impl Storage for SegmentsOnly {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn now(&self) -> chainlog::Timestamp {
        self.0.now()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        refuse_non_segment(path)?;
        self.0.create_new(path)
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        refuse_non_segment(path)?;
        self.0.open(path, write)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        refuse_non_segment(from)?;
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        refuse_non_segment(path)?;
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.0.lock_dir(dir)
    }
}

// ---------------------------------------------------------------------------
// Strategies.

fn text(max_bytes: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9@._-]{1,24}",
        // Any characters but control and invisible format characters:
        // accents, CJK, emoji.
        4 => "[^\\p{Cc}\\p{Cf}]{1,40}",
        1 => Just("m".repeat(max_bytes)),
        1 => Just("é".repeat(max_bytes / 2)),
    ]
    .prop_filter("within the limit", move |s| s.len() <= max_bytes)
}

fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_-]{1,12}(\\.[a-z0-9_-]{1,12}){1,3}",
        1 => Just(format!("{}.{}", "a".repeat(63), "b".repeat(64))),
    ]
    .prop_filter("within the limit", |s| s.len() <= MAX_EVENT_TYPE_BYTES)
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        // Any characters, control characters included (JSON escapes them).
        ".{0,16}".prop_map(Value::from),
        "[\\x00-\\x1f\"\\\\/]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((".{0,8}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|o| Some(IpAddr::V4(Ipv4Addr::from(o)))),
        any::<[u8; 16]>().prop_map(|o| Some(IpAddr::V6(Ipv6Addr::from(o)))),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        any::<i64>(),
        event_type(),
        text(MAX_ACTOR_BYTES),
        proptest::option::of(text(MAX_NODE_BYTES)),
        proptest::option::of(text(chainlog::limits::MAX_RESOURCE_BYTES)),
        ip(),
        any::<bool>(),
        prop::collection::vec(("[a-z_]{1,10}", json()), 0..5),
    )
        .prop_map(
            |(nanos, event_type, actor, node, resource, source_ip, failed, context)| Event {
                timestamp: Timestamp::from_unix_nanos(nanos),
                event_type,
                actor,
                node,
                resource,
                source_ip,
                outcome: if failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                context: context.into_iter().collect::<Map<String, Value>>(),
            },
        )
}

// ---------------------------------------------------------------------------
// Round trip.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn events_round_trip(
        events in prop::collection::vec(event(), 1..40),
        batch_sizes in prop::collection::vec(1usize..6, 1..40),
        from in any::<prop::sample::Index>(),
    ) {
        let disk = SimDisk::new();
        let storage = Arc::new(SegmentsOnly(disk.clone()));
        let log = Log::create_in(storage.clone(), DIR, options(Durability::None)).unwrap();
        let mut receipts = Vec::new();
        let mut rest = &events[..];
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let (batch, tail) = rest.split_at(n);
            if n == 1 {
                receipts.push(log.append(&batch[0]).unwrap());
            } else {
                receipts.extend(log.append_batch(batch).unwrap());
            }
            rest = tail;
        }
        // What the reader sees before a reopen...
        let before: Vec<Record> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
        log.close().unwrap();
        let log = Log::open_in(storage.clone(), DIR, options(Durability::Always)).unwrap();
        // ... and after it: exactly what was appended.
        let records: Vec<Record> = log.iter_from(0).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&records, &before);
        prop_assert_eq!(records.len(), events.len());
        let mut head = ChainHash::genesis(&log.log_id());
        for (i, (r, e)) in records.iter().zip(&events).enumerate() {
            prop_assert_eq!(r.seq, i as u64);
            prop_assert_eq!(&r.event, e);
            head = head.next(i as u64, &record_bytes(e));
            prop_assert_eq!(r.hash, head);
            prop_assert_eq!(r.hash, receipts[i].hash);
        }
        let from = from.index(events.len());
        let tail: Vec<u64> = log.iter_from(from as u64).map(|r| r.unwrap().seq).collect();
        prop_assert_eq!(tail, (from as u64..events.len() as u64).collect::<Vec<_>>());
        drop(log);
        let report = verify(&disk);
        prop_assert!(report.is_intact(), "{:#?}", report.problems);
        prop_assert_eq!(report.records, events.len() as u64);
        prop_assert_eq!(report.head, Some(head));
    }
}

// ---------------------------------------------------------------------------
// Operations against a model, with crashes.

#[derive(Debug, Clone)]
enum Op {
    /// Append one event with this many bytes of context.
    Append(u16),
    /// Append a batch of events with these context sizes.
    Batch(Vec<u16>),
    Sync,
    /// Power loss: everything unsynced is lost.
    Crash,
    /// Power loss part-way through the pending writes.
    CrashAt(prop::sample::Index, prop::sample::Index),
    /// Close and open again.
    Reopen,
    /// Read from a seq.
    Read(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    let size = 0u16..20_000;
    prop_oneof![
        6 => size.clone().prop_map(Op::Append),
        3 => prop::collection::vec(size, 2..6).prop_map(Op::Batch),
        2 => Just(Op::Sync),
        1 => Just(Op::Crash),
        2 => (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(i, b)| Op::CrashAt(i, b)),
        1 => Just(Op::Reopen),
        2 => any::<prop::sample::Index>().prop_map(Op::Read),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Always),
        Just(Durability::None),
        (1_000u64..50_000).prop_map(|max_bytes| Durability::Batch {
            max_delay: Duration::from_secs(3600),
            max_bytes,
        }),
    ]
}

fn sized_event(n: u64, context_bytes: u16) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_760_000_000_000_000_000 + n as i64 * 1_000),
        "config.changed",
        format!("actor{}", n % 17),
    );
    e.context.insert("n".into(), n.into());
    e.context.insert(
        "blob".into(),
        Value::String("b".repeat(usize::from(context_bytes))),
    );
    e
}

struct Model {
    disk: SimDisk,
    storage: Arc<SegmentsOnly>,
    durability: Durability,
    log: Option<Log>,
    /// What the log holds, in order, with the hashes the receipts gave.
    appended: Vec<(Event, ChainHash)>,
    /// Records below this must survive a crash.
    durable: usize,
    /// Events made so far (for distinct contents).
    made: u64,
}

impl Model {
    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn head(&self) -> ChainHash {
        self.appended
            .last()
            .map_or_else(|| ChainHash::genesis(&self.log().log_id()), |(_, h)| *h)
    }

    fn append(&mut self, sizes: &[u16]) -> Result<(), TestCaseError> {
        let events: Vec<Event> = sizes
            .iter()
            .map(|&s| {
                self.made += 1;
                sized_event(self.made, s)
            })
            .collect();
        let receipts = if events.len() == 1 {
            vec![self.log().append(&events[0]).unwrap()]
        } else {
            self.log().append_batch(&events).unwrap()
        };
        for (e, r) in events.into_iter().zip(receipts) {
            let seq = self.appended.len() as u64;
            prop_assert_eq!(r.seq, seq);
            prop_assert_eq!(r.hash, self.head().next(seq, &record_bytes(&e)));
            self.appended.push((e, r.hash));
        }
        if self.durability == Durability::Always {
            self.durable = self.appended.len();
        }
        Ok(())
    }

    /// Opens the log again after a crash or close and checks it against
    /// the model; the model becomes what survived.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.log = None;
        let log = Log::open_in(self.storage.clone(), DIR, options(self.durability))
            .map_err(|e| TestCaseError::fail(format!("open failed: {e}")))?;
        let records: Vec<Record> = log
            .iter_from(0)
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
        let n = records.len();
        prop_assert!(
            n >= self.durable,
            "{} records after recovery, {} were durable",
            n,
            self.durable
        );
        prop_assert!(
            n <= self.appended.len(),
            "{} records, {} appended",
            n,
            self.appended.len()
        );
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.seq, i as u64);
            prop_assert_eq!(&r.event, &self.appended[i].0);
            prop_assert_eq!(r.hash, self.appended[i].1);
        }
        prop_assert_eq!(log.state().next_seq, n as u64);
        let report = verify(&self.disk);
        prop_assert!(
            report.is_intact() && report.torn_tail.is_none(),
            "{:#?} {:?}",
            report.problems,
            report.torn_tail
        );
        prop_assert_eq!(report.records, n as u64);
        self.appended.truncate(n);
        // Recovery makes what it accepted durable.
        self.durable = n;
        self.log = Some(log);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(size) => self.append(&[*size])?,
            Op::Batch(sizes) => self.append(sizes)?,
            Op::Sync => {
                self.log().sync().unwrap();
                self.durable = self.appended.len();
            }
            Op::Crash => {
                self.disk.crash();
                self.reopen()?;
            }
            Op::CrashAt(i, b) => {
                let pending = self.disk.pending_writes();
                let i = i.index(pending.len() + 1);
                let b = pending.get(i).map_or(0, |&len| b.index(len + 1));
                self.disk.crash_at(i, b);
                self.reopen()?;
            }
            Op::Reopen => {
                self.log.take().unwrap().close().unwrap();
                self.durable = self.appended.len();
                self.reopen()?;
            }
            Op::Read(from) => {
                let from = from.index(self.appended.len() + 1);
                let records: Vec<Record> = self
                    .log()
                    .iter_from(from as u64)
                    .collect::<Result<_, _>>()
                    .unwrap();
                prop_assert_eq!(records.len(), self.appended.len() - from);
                for (j, r) in records.iter().enumerate() {
                    prop_assert_eq!(r.seq, (from + j) as u64);
                    prop_assert_eq!(&r.event, &self.appended[from + j].0);
                }
            }
        }
        // The log's own claim of durability is what a crash must honour.
        let claim = self.log().state().durable_next_seq as usize;
        prop_assert!(claim <= self.appended.len());
        self.durable = self.durable.max(claim);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn operations_agree_with_the_model(
        durability in durability(),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        let disk = SimDisk::new();
        let storage = Arc::new(SegmentsOnly(disk.clone()));
        let log = Log::create_in(storage.clone(), DIR, options(durability)).unwrap();
        let mut model = Model {
            disk,
            storage,
            durability,
            log: Some(log),
            appended: Vec::new(),
            durable: 0,
            made: 0,
        };
        for op in &ops {
            model.apply(op)?;
        }
        // A last crash: what was durable is still there.
        model.disk.crash();
        model.reopen()?;
    }
}

// ---------------------------------------------------------------------------
// Single flipped bytes.

/// A one-segment log image and where its frames are.
struct Image {
    bytes: Vec<u8>,
    frames: Vec<(usize, usize)>,
    /// The segment is sealed (it is the newest, and full).
    sealed: bool,
}

impl Image {
    fn data_end(&self) -> usize {
        let (at, len) = *self.frames.last().unwrap();
        at + len
    }
}

fn small(i: u64) -> Event {
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_760_000_000_000_000_000 + i as i64),
        "auth.login_failed",
        "mallory",
    );
    e.source_ip = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)));
    e.outcome = Outcome::Failure;
    e
}

fn image_of(disk: &SimDisk, base: u64, sealed: bool) -> Image {
    let bytes = disk
        .read_file(&dir().join(segment::file_name(base)))
        .unwrap();
    let limit = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let mut frames = Vec::new();
    let mut at = HEADER_BYTES as usize;
    while at + FRAME_HEADER_BYTES <= limit {
        let Some(f) = frame::decode(&bytes[at..limit]).unwrap() else {
            break;
        };
        frames.push((at, f.padded_len()));
        at += f.padded_len();
    }
    Image {
        bytes,
        frames,
        sealed,
    }
}

/// An active segment of a few small records.
fn active_image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let disk = SimDisk::new();
        let log = Log::create_in(
            Arc::new(SegmentsOnly(disk.clone())),
            DIR,
            options(Durability::None),
        )
        .unwrap();
        for i in 0..6 {
            log.append(&small(i)).unwrap();
        }
        log.close().unwrap();
        image_of(&disk, 0, false)
    })
}

/// A sealed segment, the newest of its log (a crash came between sealing
/// it and creating the next), with a gap of zeros after its data.
fn sealed_image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let disk = SimDisk::new();
        let log = Log::create_in(
            Arc::new(SegmentsOnly(disk.clone())),
            DIR,
            options(Durability::None),
        )
        .unwrap();
        // Three big records and a few small ones, then one that does not
        // fit: the segment is sealed and the next one started.
        let big = |i: u64| {
            let mut e = small(i);
            e.context
                .insert("pad".into(), Value::String("q".repeat(40_000)));
            e
        };
        for i in 0..3 {
            log.append(&big(i)).unwrap();
        }
        for i in 3..8 {
            log.append(&small(i)).unwrap();
        }
        log.append(&big(8)).unwrap();
        assert_eq!(log.state().segments, 2);
        log.close().unwrap();
        let image = image_of(&disk, 0, true);
        assert!(data_end_limit(MIN_SEGMENT_BYTES) as usize - image.data_end() > 64);
        image
    })
}

/// What verify and open make of `image` with byte `at` xor-ed with `mask`.
fn flip(image: &Image, at: usize, mask: u8) -> Result<(), String> {
    let disk = SimDisk::new();
    let path = dir().join(segment::file_name(0));
    let mut bytes = image.bytes.clone();
    bytes[at] ^= mask;
    let f = disk.create_new(&path).unwrap();
    f.write_all_at(&bytes, 0).unwrap();
    f.sync_data().unwrap();
    disk.sync_dir(dir()).unwrap();
    let report = verify(&disk);
    let open = Log::open_in(
        Arc::new(SegmentsOnly(disk.clone())),
        DIR,
        options(Durability::Always),
    );
    if !report.is_intact() {
        return Ok(());
    }
    if let Some(torn) = &report.torn_tail {
        // Only the end of the newest, unsealed segment can look torn: its
        // last frame or what follows it. That is what a crash leaves.
        let last_frame = image.frames.last().unwrap().0;
        if !image.sealed && at >= last_frame && torn.offset as usize >= last_frame {
            return Ok(());
        }
        return Err(format!(
            "flip at {at} reported only as a torn tail: {torn:?}"
        ));
    }
    if let Some(seal) = &report.torn_seal {
        // A trailer byte flipped to zero is what a torn seal looks like
        // (each byte zero or the byte the frames imply): the trailer only
        // repeats the frames, so nothing is lost, and the note says so.
        let trailer = data_end_limit(MIN_SEGMENT_BYTES) as usize;
        if image.sealed && (trailer..trailer + 96).contains(&at) && bytes[at] == 0 {
            return Ok(());
        }
        // In an unsealed segment, a trailer byte set to the very byte the
        // frames imply there (one chance in 256 per flip, as the hashes
        // vary) is exactly what a seal torn after one byte leaves: a note,
        // and nothing is lost. The verifier only calls it that when the byte
        // matches (tests/damage.rs checks the rule itself).
        if !image.sealed && (trailer..trailer + 96).contains(&at) {
            return Ok(());
        }
        return Err(format!(
            "flip at {at} reported only as a torn seal: {seal:?}"
        ));
    }
    if open.is_err() {
        return Ok(());
    }
    Err(format!(
        "flip of byte {at} with {mask:#04x} went unnoticed (sealed: {})",
        image.sealed
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_flipped_byte_is_noticed(
        sealed in any::<bool>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let image = if sealed { sealed_image() } else { active_image() };
        let at = at.index(image.bytes.len());
        if let Err(e) = flip(image, at, mask) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Every byte of the places where a format gap would hide: the header, a
/// whole frame, the end of the data, the last bytes before the trailer area
/// (where no frame header fits), the trailer and the trailer area's end.
fn critical_offsets(image: &Image) -> Vec<usize> {
    let limit = data_end_limit(MIN_SEGMENT_BYTES) as usize;
    let trailer = limit;
    let end = image.data_end();
    // The smallest frame, whole.
    let (frame, frame_len) = *image.frames.iter().min_by_key(|f| f.1).unwrap();
    let mut at: Vec<usize> = (0..HEADER_BYTES as usize).collect();
    at.extend(frame..frame + frame_len);
    at.extend(end.saturating_sub(24)..end + 56);
    at.extend(limit - 56..limit);
    at.extend(trailer..trailer + 96);
    at.extend([trailer + 96, trailer + 97, MIN_SEGMENT_BYTES as usize - 1]);
    at.sort_unstable();
    at.dedup();
    at
}

#[test]
fn every_critical_byte_of_an_active_segment_is_covered() {
    let image = active_image();
    let failures: Vec<String> = critical_offsets(image)
        .into_iter()
        .filter_map(|at| flip(image, at, 0x20).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_critical_byte_of_a_sealed_segment_is_covered() {
    let image = sealed_image();
    let failures: Vec<String> = critical_offsets(image)
        .into_iter()
        .filter_map(|at| flip(image, at, 0x01).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
