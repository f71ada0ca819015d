//! Segment files: header, frames, trailer; naming, creation and scanning.
//!
//! A segment is a preallocated file of `segment_bytes` bytes:
//! a 128-byte [`SegmentHeader`], then frames from byte 128 up to the trailer
//! area, then a 4096-byte trailer area whose first 96 bytes hold the
//! [`SegmentTrailer`] once the segment is sealed. `docs/FORMAT.md` has the
//! byte diagrams.

use crate::le::{array_at, u16_at, u32_at, u64_at};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::format::frame::{FRAME_ALIGN, MAX_FRAME_BYTES};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::merkle::{Frontier, Hash};
use crate::storage::{read_exact_at, Storage, StorageFile};

pub use super::scanner::{Scanner, Step};

/// The on-disk format version this build writes.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads (version 1 logs stay
/// readable; writing to one needs `chainlog migrate`).
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CHLOGSEG";
/// Magic at the start of a sealed segment's trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"CHLOGEND";
/// Size of the segment header; frames start here.
pub const HEADER_BYTES: u64 = 128;
/// Size of the trailer area at the end of every segment file.
pub const TRAILER_AREA_BYTES: u64 = 4096;
/// Size of the trailer proper, at the start of the trailer area.
pub const TRAILER_BYTES: usize = 96;
/// Where the link block starts in the trailer area (right after the trailer).
pub const LINK_BLOCK_AT: usize = TRAILER_BYTES;
/// The largest link block: a 64-hash frontier.
pub const MAX_LINK_BLOCK_BYTES: usize = 16 + 64 * 32 + 4;
const _: () = assert!(LINK_BLOCK_AT + MAX_LINK_BLOCK_BYTES <= TRAILER_AREA_BYTES as usize);
/// Smallest segment: room for the header, the trailer and a largest frame.
pub const MIN_SEGMENT_BYTES: u64 = 128 * 1024;
/// Largest segment (4 GiB): offsets in a segment stay well inside u64 and
/// the verifier's per-segment work stays bounded.
pub const MAX_SEGMENT_BYTES: u64 = 4 << 30;
/// File-name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of a segment being created (renamed into place once complete).
pub const TEMP_SUFFIX: &str = ".seg.tmp";

const _: () =
    assert!(MIN_SEGMENT_BYTES >= HEADER_BYTES + TRAILER_AREA_BYTES + MAX_FRAME_BYTES as u64);
const _: () = assert!(HEADER_BYTES as usize % FRAME_ALIGN == 0);

/// `00000000000000001042.seg`: the seq of the first record, 20 digits.
pub fn file_name(base_seq: u64) -> String {
    format!("{base_seq:020}{SEGMENT_SUFFIX}")
}

/// Opens the segment that starts at `base_seq` in `dir` for reading;
/// returns its file name (for errors) and the file.
pub fn open_for_reading(
    storage: &dyn Storage,
    dir: &Path,
    base_seq: u64,
) -> Result<(String, Arc<dyn StorageFile>)> {
    let name = file_name(base_seq);
    let path = dir.join(&name);
    let file = storage
        .open(&path, false)
        .map_err(|e| Error::io(&path, e))?;
    Ok((name, file))
}

/// The base seq named by a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where frames end and the trailer area starts in a segment of this size.
pub const fn data_end_limit(segment_bytes: u64) -> u64 {
    segment_bytes - TRAILER_AREA_BYTES
}

/// The first 128 bytes of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's format version, which is also its records' layout
    /// (see [`crate::event::record`]); new segments get [`FORMAT_VERSION`].
    pub version: u16,
    /// The log this segment belongs to.
    pub log_id: LogId,
    /// Seq of the segment's first record.
    pub base_seq: u64,
    /// Hash of the record before `base_seq` (the genesis hash for the first segment).
    pub prev_hash: ChainHash,
    /// The file's fixed size.
    pub segment_bytes: u64,
    /// When the segment was created (informational; not trusted).
    pub created_at: Timestamp,
}

mod header_at {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = MAGIC + 8;
    pub const HEADER_LEN: usize = VERSION + 2;
    pub const TRAILER_AREA_LEN: usize = HEADER_LEN + 2;
    pub const SEGMENT_BYTES: usize = TRAILER_AREA_LEN + 4;
    pub const LOG_ID: usize = SEGMENT_BYTES + 8;
    pub const BASE_SEQ: usize = LOG_ID + 16;
    pub const PREV_HASH: usize = BASE_SEQ + 8;
    pub const CREATED_AT: usize = PREV_HASH + 32;
    pub const RESERVED: usize = CREATED_AT + 8;
    pub const CRC: usize = 124;
}
const _: () =
    assert!(header_at::RESERVED <= header_at::CRC && header_at::CRC + 4 == HEADER_BYTES as usize);

impl SegmentHeader {
    /// The header's 128 bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        use header_at::{
            BASE_SEQ, CRC, CREATED_AT, HEADER_LEN, LOG_ID, MAGIC, PREV_HASH, RESERVED,
            SEGMENT_BYTES, TRAILER_AREA_LEN, VERSION,
        };
        let mut b = [0; HEADER_BYTES as usize];
        b[MAGIC..VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[VERSION..HEADER_LEN].copy_from_slice(&self.version.to_le_bytes());
        b[HEADER_LEN..TRAILER_AREA_LEN].copy_from_slice(&(HEADER_BYTES as u16).to_le_bytes());
        b[TRAILER_AREA_LEN..SEGMENT_BYTES]
            .copy_from_slice(&(TRAILER_AREA_BYTES as u32).to_le_bytes());
        b[SEGMENT_BYTES..LOG_ID].copy_from_slice(&self.segment_bytes.to_le_bytes());
        b[LOG_ID..BASE_SEQ].copy_from_slice(&self.log_id.0);
        b[BASE_SEQ..PREV_HASH].copy_from_slice(&self.base_seq.to_le_bytes());
        b[PREV_HASH..CREATED_AT].copy_from_slice(&self.prev_hash.0);
        b[CREATED_AT..RESERVED].copy_from_slice(&self.created_at.unix_nanos().to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC]);
        b[CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header read from the file named `file`.
    pub fn decode(b: &[u8; HEADER_BYTES as usize], file: &str) -> Result<Self> {
        use header_at::{
            BASE_SEQ, CRC, CREATED_AT, HEADER_LEN, LOG_ID, MAGIC, PREV_HASH, RESERVED,
            SEGMENT_BYTES, TRAILER_AREA_LEN, VERSION,
        };
        let corrupt = |offset: usize, reason: &str| Error::Corrupted {
            file: file.to_string(),
            offset: offset as u64,
            reason: reason.to_string(),
        };
        if b[MAGIC..VERSION] != SEGMENT_MAGIC {
            return Err(corrupt(MAGIC, "not a chainlog segment (bad magic)"));
        }
        let version = u16_at(b, VERSION);
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                file: file.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let expected = u32_at(b, CRC);
        let got = crc32c::crc32c(&b[..CRC]);
        if expected != got {
            return Err(Error::ChecksumMismatch {
                file: file.to_string(),
                offset: 0,
                expected,
                got,
            });
        }
        if u64::from(u16_at(b, HEADER_LEN)) != HEADER_BYTES
            || u64::from(u32_at(b, TRAILER_AREA_LEN)) != TRAILER_AREA_BYTES
        {
            return Err(corrupt(
                HEADER_LEN,
                "unexpected header or trailer area length",
            ));
        }
        let segment_bytes = u64_at(b, SEGMENT_BYTES);
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes)
            || segment_bytes % FRAME_ALIGN as u64 != 0
        {
            return Err(corrupt(SEGMENT_BYTES, "segment size out of range"));
        }
        if b[RESERVED..CRC].iter().any(|&x| x != 0) {
            return Err(corrupt(RESERVED, "reserved header bytes are not zero"));
        }
        Ok(SegmentHeader {
            version,
            log_id: LogId(array_at(b, LOG_ID)),
            base_seq: u64_at(b, BASE_SEQ),
            prev_hash: ChainHash(array_at(b, PREV_HASH)),
            segment_bytes,
            created_at: Timestamp::from_unix_nanos(u64_at(b, CREATED_AT) as i64),
        })
    }
}

/// What a sealed segment says about itself, at the start of its trailer area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTrailer {
    /// Records in the segment.
    pub record_count: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Chain hash of the last record.
    pub last_hash: ChainHash,
    /// Earliest event timestamp in the segment.
    pub min_timestamp: Timestamp,
    /// Latest event timestamp in the segment.
    pub max_timestamp: Timestamp,
    /// Byte offset just past the last frame.
    pub data_end: u64,
    /// When the engine received the segment's last record (version 2; the
    /// epoch, as zero bytes, in a version 1 trailer, where they are reserved).
    pub last_received_at: Timestamp,
}

mod trailer_at {
    pub const MAGIC: usize = 0;
    pub const RECORD_COUNT: usize = MAGIC + 8;
    pub const LAST_SEQ: usize = RECORD_COUNT + 8;
    pub const LAST_HASH: usize = LAST_SEQ + 8;
    pub const MIN_TS: usize = LAST_HASH + 32;
    pub const MAX_TS: usize = MIN_TS + 8;
    pub const DATA_END: usize = MAX_TS + 8;
    pub const LAST_RECEIVED_AT: usize = DATA_END + 8;
    pub const RESERVED: usize = LAST_RECEIVED_AT + 8;
    pub const CRC: usize = 92;
}
const _: () =
    assert!(trailer_at::RESERVED <= trailer_at::CRC && trailer_at::CRC + 4 == TRAILER_BYTES);

impl SegmentTrailer {
    /// The trailer's 96 bytes.
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        use trailer_at::{
            CRC, DATA_END, LAST_HASH, LAST_RECEIVED_AT, LAST_SEQ, MAGIC, MAX_TS, MIN_TS,
            RECORD_COUNT, RESERVED,
        };
        let mut b = [0; TRAILER_BYTES];
        b[MAGIC..RECORD_COUNT].copy_from_slice(&TRAILER_MAGIC);
        b[RECORD_COUNT..LAST_SEQ].copy_from_slice(&self.record_count.to_le_bytes());
        b[LAST_SEQ..LAST_HASH].copy_from_slice(&self.last_seq.to_le_bytes());
        b[LAST_HASH..MIN_TS].copy_from_slice(&self.last_hash.0);
        b[MIN_TS..MAX_TS].copy_from_slice(&self.min_timestamp.unix_nanos().to_le_bytes());
        b[MAX_TS..DATA_END].copy_from_slice(&self.max_timestamp.unix_nanos().to_le_bytes());
        b[DATA_END..LAST_RECEIVED_AT].copy_from_slice(&self.data_end.to_le_bytes());
        b[LAST_RECEIVED_AT..RESERVED]
            .copy_from_slice(&self.last_received_at.unix_nanos().to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC]);
        b[CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a trailer area's first bytes. `Ok(None)` when the area is
    /// unwritten (all zero): the segment is not sealed.
    pub fn decode(b: &[u8; TRAILER_BYTES], file: &str, offset: u64) -> Result<Option<Self>> {
        use trailer_at::{
            CRC, DATA_END, LAST_HASH, LAST_RECEIVED_AT, LAST_SEQ, MAGIC, MAX_TS, MIN_TS,
            RECORD_COUNT, RESERVED,
        };
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let corrupt = |at: usize, reason: &str| Error::Corrupted {
            file: file.to_string(),
            offset: offset + at as u64,
            reason: reason.to_string(),
        };
        if b[MAGIC..RECORD_COUNT] != TRAILER_MAGIC {
            return Err(corrupt(MAGIC, "bad trailer magic"));
        }
        let expected = u32_at(b, CRC);
        let got = crc32c::crc32c(&b[..CRC]);
        if expected != got {
            return Err(Error::ChecksumMismatch {
                file: file.to_string(),
                offset,
                expected,
                got,
            });
        }
        if b[RESERVED..CRC].iter().any(|&x| x != 0) {
            return Err(corrupt(RESERVED, "reserved trailer bytes are not zero"));
        }
        Ok(Some(SegmentTrailer {
            record_count: u64_at(b, RECORD_COUNT),
            last_seq: u64_at(b, LAST_SEQ),
            last_hash: ChainHash(array_at(b, LAST_HASH)),
            min_timestamp: Timestamp::from_unix_nanos(u64_at(b, MIN_TS) as i64),
            max_timestamp: Timestamp::from_unix_nanos(u64_at(b, MAX_TS) as i64),
            data_end: u64_at(b, DATA_END),
            last_received_at: Timestamp::from_unix_nanos(u64_at(b, LAST_RECEIVED_AT) as i64),
        }))
    }
}

/// The link block: the Merkle tree frontier over every record before the
/// segment (tree size = `base_seq`), written when the segment is created.
/// It lets a checkpoint hash only this segment's records, and survives
/// retention deleting the segments before it.
///
/// ```text
/// 0   u64  tree_size   = the segment's base_seq
/// 8   u32  hash_count  = number of one bits in tree_size
/// 12  u32  reserved    = 0
/// 16  32 × hash_count  subtree roots, leftmost (largest) first
/// ..  u32  CRC-32C of everything before it
/// ```
pub fn encode_link_block(frontier: &Frontier) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + frontier.hashes().len() * 32);
    b.extend_from_slice(&frontier.size().to_le_bytes());
    b.extend_from_slice(&(frontier.hashes().len() as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for h in frontier.hashes() {
        b.extend_from_slice(h);
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the link block at the start of `b` (the trailer area from
/// [`LINK_BLOCK_AT`]); returns the frontier and the block's length.
pub fn decode_link_block(b: &[u8], file: &str, offset: u64) -> Result<(Frontier, usize)> {
    let corrupt = |reason: &str| Error::Corrupted {
        file: file.to_string(),
        offset,
        reason: format!("link block: {reason}"),
    };
    if b.len() < 20 {
        return Err(corrupt("truncated"));
    }
    let size = u64_at(b, 0);
    let count = u32_at(b, 8) as usize;
    if count > 64 || u32_at(b, 12) != 0 {
        return Err(corrupt("bad hash count or reserved bytes"));
    }
    let len = 16 + count * 32 + 4;
    if b.len() < len {
        return Err(corrupt("truncated"));
    }
    let expected = u32_at(b, len - 4);
    let got = crc32c::crc32c(&b[..len - 4]);
    if expected != got {
        return Err(Error::ChecksumMismatch {
            file: file.to_string(),
            offset,
            expected,
            got,
        });
    }
    let hashes: Vec<Hash> = (0..count).map(|i| array_at(b, 16 + i * 32)).collect();
    let frontier = Frontier::from_parts(size, hashes).map_err(|e| corrupt(&e.to_string()))?;
    Ok((frontier, len))
}

/// Reads the trailer area of a segment: the trailer (`None` if unsealed),
/// and the link block's frontier and end (offset within the area).
pub fn read_trailer_area(
    file: &dyn StorageFile,
    name: &str,
    header: &SegmentHeader,
) -> Result<(Result<Option<SegmentTrailer>>, Frontier, Vec<u8>)> {
    let at = data_end_limit(header.segment_bytes);
    let mut area = vec![0; TRAILER_AREA_BYTES as usize];
    read_exact_at(file, &mut area, at).map_err(|e| io_or_short(name, at, e))?;
    let mut raw = [0; TRAILER_BYTES];
    raw.copy_from_slice(&area[..TRAILER_BYTES]);
    let trailer = SegmentTrailer::decode(&raw, name, at);
    let (frontier, _) = decode_link_block(&area[LINK_BLOCK_AT..], name, at + LINK_BLOCK_AT as u64)?;
    if frontier.size() != header.base_seq {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: at + LINK_BLOCK_AT as u64,
            reason: format!(
                "link block covers {} records, the segment starts at seq {}",
                frontier.size(),
                header.base_seq
            ),
        });
    }
    Ok((trailer, frontier, area))
}

/// Reads the frontier at the start of a segment.
pub fn read_start_frontier(
    file: &dyn StorageFile,
    name: &str,
    header: &SegmentHeader,
) -> Result<Frontier> {
    let at = data_end_limit(header.segment_bytes) + LINK_BLOCK_AT as u64;
    let mut b = vec![0; MAX_LINK_BLOCK_BYTES];
    read_exact_at(file, &mut b, at).map_err(|e| io_or_short(name, at, e))?;
    let (frontier, _) = decode_link_block(&b, name, at)?;
    if frontier.size() != header.base_seq {
        return Err(Error::Corrupted {
            file: name.to_string(),
            offset: at,
            reason: "link block does not match the base seq".into(),
        });
    }
    Ok(frontier)
}

/// Reads and checks the header of an open segment file.
pub fn read_header(file: &dyn StorageFile, name: &str) -> Result<SegmentHeader> {
    let mut b = [0; HEADER_BYTES as usize];
    read_exact_at(file, &mut b, 0).map_err(|e| io_or_short(name, 0, e))?;
    SegmentHeader::decode(&b, name)
}

/// Reads the trailer of a segment of `segment_bytes`; `None` if unsealed.
pub fn read_trailer(
    file: &dyn StorageFile,
    name: &str,
    segment_bytes: u64,
) -> Result<Option<SegmentTrailer>> {
    let at = data_end_limit(segment_bytes);
    let mut b = [0; TRAILER_BYTES];
    read_exact_at(file, &mut b, at).map_err(|e| io_or_short(name, at, e))?;
    SegmentTrailer::decode(&b, name, at)
}

/// The trailer of a segment that must be sealed (any but the newest): a
/// missing trailer is corruption.
pub fn read_sealed_trailer(
    file: &dyn StorageFile,
    name: &str,
    segment_bytes: u64,
) -> Result<SegmentTrailer> {
    read_trailer(file, name, segment_bytes)?.ok_or_else(|| missing_trailer(name, segment_bytes))
}

/// The error for a segment before the newest that has no trailer.
pub fn missing_trailer(name: &str, segment_bytes: u64) -> Error {
    Error::Corrupted {
        file: name.to_string(),
        offset: data_end_limit(segment_bytes),
        reason: "a segment before the newest has no trailer".into(),
    }
}

/// A read that ran out of file is corruption (the file is shorter than its
/// format says); anything else is an I/O error.
pub(crate) fn io_or_short(name: &str, offset: u64, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Corrupted {
            file: name.to_string(),
            offset,
            reason: "file is shorter than its segment size".to_string(),
        }
    } else {
        Error::io(name, e)
    }
}

/// Creates a segment crash-safely: the file is built under a temporary name,
/// preallocated, given its header and synced, then renamed into place and the
/// directory synced, so a segment file under its final name is never partial.
pub fn create(
    storage: &dyn Storage,
    dir: &Path,
    header: &SegmentHeader,
    start_frontier: &Frontier,
) -> Result<Arc<dyn StorageFile>> {
    debug_assert_eq!(start_frontier.size(), header.base_seq);
    let name = file_name(header.base_seq);
    let final_path = dir.join(&name);
    let temp_path = dir.join(format!("{:020}{TEMP_SUFFIX}", header.base_seq));
    let io = |e| Error::io(&final_path, e);
    // A leftover from an interrupted create is incomplete by construction.
    match storage.remove(&temp_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let file = storage.create_new(&temp_path).map_err(io)?;
    file.allocate(header.segment_bytes).map_err(io)?;
    file.write_all_at(&header.encode(), 0).map_err(io)?;
    let link_at = data_end_limit(header.segment_bytes) + LINK_BLOCK_AT as u64;
    file.write_all_at(&encode_link_block(start_frontier), link_at)
        .map_err(io)?;
    file.sync_data().map_err(io)?;
    storage.rename(&temp_path, &final_path).map_err(io)?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::frame;
    use crate::storage::sim::SimDisk;

    /// A header for tests (also the scanner's).
    pub(crate) fn header() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            log_id: LogId([3; 16]),
            base_seq: 1042,
            prev_hash: ChainHash([5; 32]),
            segment_bytes: MIN_SEGMENT_BYTES,
            created_at: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
        }
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let h = header();
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b, "x").unwrap(), h);
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert!(SegmentHeader::decode(&bad, "x").is_err(), "byte {i}");
        }
        for version in [0u16, 3, 0x100] {
            let mut other = b;
            other[8..10].copy_from_slice(&version.to_le_bytes());
            assert!(
                matches!(
                    SegmentHeader::decode(&other, "x"),
                    Err(Error::UnsupportedVersion { found, .. }) if found == version
                ),
                "version {version}"
            );
        }
        // Version 1 headers (v1 logs) are read, and say so.
        let v1 = SegmentHeader { version: 1, ..h };
        assert_eq!(SegmentHeader::decode(&v1.encode(), "x").unwrap(), v1);
    }

    #[test]
    fn trailer_round_trip_and_corruption() {
        let t = SegmentTrailer {
            record_count: 10,
            last_seq: 1051,
            last_hash: ChainHash([8; 32]),
            min_timestamp: Timestamp::from_unix_nanos(-3),
            max_timestamp: Timestamp::from_unix_nanos(99),
            data_end: 4096,
            last_received_at: Timestamp::from_unix_nanos(1_770_000_000_000_000_007),
        };
        let b = t.encode();
        assert_eq!(b[80..88], 1_770_000_000_000_000_007i64.to_le_bytes());
        assert_eq!(SegmentTrailer::decode(&b, "x", 0).unwrap(), Some(t));
        assert_eq!(
            SegmentTrailer::decode(&[0; TRAILER_BYTES], "x", 0).unwrap(),
            None
        );
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(SegmentTrailer::decode(&bad, "x", 0).is_err(), "byte {i}");
        }
    }

    #[test]
    fn link_block_round_trip_and_corruption() {
        let mut f = Frontier::new();
        for i in 0..1042u64 {
            f.push(&i.to_le_bytes());
        }
        let b = encode_link_block(&f);
        assert_eq!(b.len(), 16 + 32 * 1042u64.count_ones() as usize + 4);
        assert_eq!(decode_link_block(&b, "x", 0).unwrap(), (f, b.len()));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x08;
            assert!(decode_link_block(&bad, "x", 0).is_err(), "byte {i}");
        }
        let empty = encode_link_block(&Frontier::new());
        assert_eq!(decode_link_block(&empty, "x", 0).unwrap().0.size(), 0);
    }

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(file_name(1042), "00000000000000001042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1042.seg"), None);
        assert_eq!(parse_file_name("0000000000000000104x.seg"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn create_is_atomic_and_scanner_reads_frames() {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        let h = header();
        let mut frontier = Frontier::new();
        for i in 0..h.base_seq {
            frontier.push(&i.to_le_bytes());
        }
        let file = create(&disk, dir, &h, &frontier).unwrap();
        assert_eq!(read_start_frontier(&*file, "x", &h).unwrap(), frontier);
        assert_eq!(disk.list(dir).unwrap(), vec![file_name(1042)]);
        assert_eq!(read_header(&*file, "x").unwrap(), h);
        assert_eq!(read_trailer(&*file, "x", h.segment_bytes).unwrap(), None);

        let mut buf = Vec::new();
        let mut prev = h.prev_hash;
        for seq in 1042..1045 {
            let start = frame::begin(&mut buf);
            buf.extend_from_slice(format!("record {seq}").as_bytes());
            frame::finish(&mut buf, start);
            prev = frame::link(&mut buf[start..], seq, &prev);
        }
        file.write_all_at(&buf, HEADER_BYTES).unwrap();
        let mut scan = Scanner::new(
            file.clone(),
            "x",
            HEADER_BYTES,
            data_end_limit(h.segment_bytes),
        );
        let mut seqs = Vec::new();
        while let Step::Frame { frame, .. } = scan.next_step().unwrap() {
            seqs.push(frame.seq);
        }
        assert_eq!(seqs, vec![1042, 1043, 1044]);
        assert_eq!(scan.position(), HEADER_BYTES + buf.len() as u64);
        let (found, _) = scan.find_valid_after(0).unwrap();
        assert_eq!(found, None);

        // Damage the first frame: the scanner stops there and finds the others after it.
        let mut scan = Scanner::new(
            file.clone(),
            "x",
            HEADER_BYTES,
            data_end_limit(h.segment_bytes),
        );
        file.write_all_at(&[0xff], HEADER_BYTES + 20).unwrap();
        assert!(matches!(scan.next_step().unwrap(), Step::Bad { .. }));
        let (found, end) = scan.find_valid_after(1042).unwrap();
        assert_eq!(found.map(|f| f.1), Some(1043));
        assert_eq!(end, HEADER_BYTES + buf.len() as u64);
    }
}
