//! What the fuzz targets share: reading choices out of the fuzz input,
//! making events, and a fresh log on a simulated disk with a fixed log id
//! (so that an input replays to the same bytes, hashes included, in any
//! process).

use std::io;
use std::path::Path;
use std::sync::Arc;

use chainlog::event::encode_record;
use chainlog::format::frame::padded_len;
use chainlog::format::segment::{self, SegmentHeader, MIN_SEGMENT_BYTES};
use chainlog::hash::chain::{ChainHash, LogId};
use chainlog::hash::merkle::Frontier;
use chainlog::storage::sim::SimDisk;
use chainlog::storage::{DirLock, Storage, StorageFile};
use chainlog::{Durability, Event, Options, Outcome, Timestamp, WriteBehind};

/// The log directory on every simulated disk.
pub const DIR: &str = "/log";

/// The log id of every log the targets create.
pub const LOG_ID: LogId = LogId([0x42; 16]);

/// The log directory as a path.
pub fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Choices read off the front of the fuzz input; once it is used up every
/// read returns zeros, so any input is a complete program.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads choices from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// One byte (0 when the input is used up).
    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        u64::from(self.u32()) % n
    }

    /// Up to `max` bytes: a length byte, then that many bytes (fewer when
    /// the input runs out).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = usize::from(self.u16()) % (max + 1);
        let n = want.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }
}

/// An event chosen by the input: small ones mostly, some with a context of
/// up to `max_pad` bytes so that segments fill and roll.
pub fn event(input: &mut Input<'_>, i: u64, max_pad: usize) -> Event {
    let kind = input.u8();
    let mut e = Event::new(
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + (i as i64) * 1_000_003),
        ["pcap.download", "incident.opened", "auth.login_failed"][usize::from(kind % 3)],
        format!("actor-{}", kind % 7),
    );
    if kind & 0x08 != 0 {
        e.outcome = Outcome::Failure;
        e.source_ip = Some(std::net::Ipv4Addr::new(203, 0, 113, kind).into());
    }
    if kind & 0x10 != 0 {
        e.node = Some(format!("nyc-edge-{:02}", kind % 13));
    }
    if kind & 0x20 != 0 {
        e.context.insert("seq_hint".into(), i.into());
    }
    if kind & 0xc0 == 0xc0 && max_pad > 0 {
        let pad = usize::from(input.u16()) % max_pad;
        e.context
            .insert("pad".into(), serde_json::Value::String("p".repeat(pad)));
    }
    e
}

/// The stored record bytes of `event`.
pub fn record_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    chainlog::event::record::encode_provenance(
        chainlog::storage::sim::SIM_CLOCK_START,
        chainlog::event::Origin::Client,
        chainlog::log::DEFAULT_APPENDER,
        &mut out,
    )
    .expect("a valid appender");
    encode_record(event, &mut out).expect("the fuzz targets make only valid events");
    out
}

/// Bytes `event`'s frame takes in a segment.
pub fn frame_bytes(event: &Event) -> u64 {
    padded_len(record_bytes(event).len()) as u64
}

/// The chain hashes of `events` appended in order to a log with [`LOG_ID`].
pub fn chain_hashes(events: &[Event]) -> Vec<ChainHash> {
    let mut head = ChainHash::genesis(&LOG_ID);
    events
        .iter()
        .enumerate()
        .map(|(seq, e)| {
            head = head.next(seq as u64, &record_bytes(e));
            head
        })
        .collect()
}

/// Options with the smallest segments, so that a few dozen records roll,
/// writing every append through (no write-behind thread: an input replays
/// to the same storage operations every time).
pub fn options(durability: Durability) -> Options {
    Options {
        segment_bytes: MIN_SEGMENT_BYTES,
        durability,
        write_behind: None,
        ..Options::default()
    }
}

/// [`options`] with write-behind that never fires on its own: buffered
/// frames are written only by a sync, a seal, a read or a close, on the
/// calling thread, so an input still replays to the same operations.
pub fn buffered_options(durability: Durability) -> Options {
    Options {
        write_behind: Some(WriteBehind {
            buffer_bytes: 64 << 20,
            max_delay: std::time::Duration::from_secs(3600),
        }),
        ..options(durability)
    }
}

/// A disk holding a new, empty log with [`LOG_ID`], all of it durable;
/// open it with `Log::open_in`.
pub fn empty_log_disk() -> SimDisk {
    let disk = SimDisk::new();
    let header = SegmentHeader {
        version: segment::FORMAT_VERSION,
        log_id: LOG_ID,
        base_seq: 0,
        prev_hash: ChainHash::genesis(&LOG_ID),
        segment_bytes: MIN_SEGMENT_BYTES,
        created_at: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
    };
    segment::create(&disk, dir(), &header, &Frontier::new())
        .expect("creating a segment on an empty disk");
    disk
}

/// The disk as the engine's storage, without index files: they are derived
/// data written by a background thread after a segment is sealed, and
/// whether its writes land before or after a simulated crash would depend
/// on thread timing, so an input would not replay the same. The engine
/// treats a refused index write as a lost cache.
pub fn storage(disk: &SimDisk) -> Arc<dyn Storage> {
    Arc::new(NoIndexFiles(disk.clone()))
}

/// A [`SimDisk`] that refuses to create or open index files.
#[derive(Debug, Clone)]
pub struct NoIndexFiles(pub SimDisk);

fn is_index_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.contains(chainlog::index::INDEX_SUFFIX)
}

fn refused(path: &Path) -> io::Result<()> {
    if is_index_file(path) {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "index files are off in the fuzz targets",
        ))
    } else {
        Ok(())
    }
}

impl Storage for NoIndexFiles {
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
        refused(path)?;
        self.0.create_new(path)
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        refused(path)?;
        self.0.open(path, write)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        refused(from)?;
        self.0.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        refused(path)?;
        self.0.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.0.lock_dir(dir)
    }
}

/// The newest segment file of the log in [`DIR`].
pub fn newest_segment(disk: &SimDisk) -> Option<(u64, std::path::PathBuf)> {
    let names = disk.list(dir()).ok()?;
    let base = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .max()?;
    Some((base, dir().join(segment::file_name(base))))
}
