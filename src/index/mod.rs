//! Sparse per-segment indexes: derived data that lets a query read only the
//! blocks of a segment that can match.
//!
//! A segment's frames are grouped into blocks of about `block_bytes` (a new
//! block starts at the first frame at least `block_bytes` past the start of
//! the previous one). For each block the index keeps its offset, its first
//! seq and its time span; for each distinct actor, event type and node, a
//! posting list of the blocks that contain it. The file is split into
//! checksummed sections, so a query reads only the sections it needs (an
//! actor query reads the block offsets, the actor directory and one posting
//! list). `docs/FORMAT.md` has the byte layout.
//!
//! Indexes are never trusted for integrity: a file that is missing, fails a
//! checksum, or does not describe the segment's current trailer is rebuilt
//! from the segment.

use crate::le::{u32_at, u64_at};

mod compare;
mod postings;

pub(crate) use compare::{compare, IndexComparison};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::{decode_record, RecordSummary, RecordView, Timestamp};
use crate::format::segment::{self, Scanner, SegmentTrailer, Step, HEADER_BYTES};
use crate::hash::chain::ChainHash;
use crate::storage::{read_exact_at, Storage, StorageFile};

/// Magic at the start of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"CHLOGIDX";
/// The index format version this build writes and reads.
pub const INDEX_VERSION: u16 = 1;
/// File-name suffix of index files (beside `NNN.seg`, `NNN.idx`).
pub const INDEX_SUFFIX: &str = ".idx";
/// Default block size: an index entry every 4 KiB of frames.
pub const DEFAULT_BLOCK_BYTES: u32 = 4096;
/// Smallest and largest configurable block size.
pub const BLOCK_BYTES_RANGE: std::ops::RangeInclusive<u32> = 512..=(1 << 20);

const HEADER_FIELDS_BYTES: usize = 76;
const SECTION_COUNT: usize = 7;
const SECTION_ENTRY_BYTES: usize = 16;
/// Header, section table and their CRC.
pub const INDEX_HEADER_BYTES: usize = HEADER_FIELDS_BYTES + SECTION_COUNT * SECTION_ENTRY_BYTES + 4;

/// The indexed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The actor.
    Actor,
    /// The event type.
    EventType,
    /// The node.
    Node,
}

impl Field {
    const ALL: [Field; 3] = [Field::Actor, Field::EventType, Field::Node];

    fn name(self) -> &'static str {
        match self {
            Field::Actor => "actor",
            Field::EventType => "event type",
            Field::Node => "node",
        }
    }

    fn slot(self) -> usize {
        match self {
            Field::Actor => 0,
            Field::EventType => 1,
            Field::Node => 2,
        }
    }

    fn section(self) -> Section {
        match self {
            Field::Actor => Section::ActorDirectory,
            Field::EventType => Section::EventDirectory,
            Field::Node => Section::NodeDirectory,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Section {
    Offsets = 0,
    FirstSeqs = 1,
    Times = 2,
    ActorDirectory = 3,
    EventDirectory = 4,
    NodeDirectory = 5,
    Postings = 6,
}

/// `00000000000000001042.idx`.
pub fn file_name(base_seq: u64) -> String {
    format!("{base_seq:020}{INDEX_SUFFIX}")
}

/// The fields of a record that an index uses: the texts' bytes, of a
/// record the decoder accepts (so valid UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedFields<'a> {
    /// When the event happened.
    pub timestamp: Timestamp,
    /// The actor.
    pub actor: &'a [u8],
    /// The event type.
    pub event_type: &'a [u8],
    /// The node, if any.
    pub node: Option<&'a [u8]>,
}

impl<'a> IndexedFields<'a> {
    /// The fields of a record decoded only as far as its summary (by
    /// recovery and the verifier).
    pub(crate) fn of_summary(summary: &RecordSummary<'a>) -> Self {
        IndexedFields {
            timestamp: summary.timestamp,
            actor: summary.actor,
            event_type: summary.event_type,
            node: summary.node,
        }
    }
}

/// Accumulates the index of one segment, frame by frame.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    base_seq: u64,
    block_bytes: u32,
    offsets: Vec<u32>,
    first_seqs: Vec<u32>,
    times: Vec<(i64, i64)>,
    /// Posting lists by value. Keyed by bytes: the verifier feeds it from
    /// records it checked without building strings (`postings.rs`).
    postings: [postings::Postings; 3],
    /// Offset just past the last frame added.
    end: u64,
    records: u64,
    last_hash: ChainHash,
}

impl IndexBuilder {
    /// An empty index for the segment starting at `base_seq`.
    pub fn new(base_seq: u64, block_bytes: u32) -> Self {
        IndexBuilder {
            base_seq,
            block_bytes,
            offsets: Vec::new(),
            first_seqs: Vec::new(),
            times: Vec::new(),
            postings: Default::default(),
            end: HEADER_BYTES,
            records: 0,
            last_hash: ChainHash::default(),
        }
    }

    /// The base seq of the indexed segment.
    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }

    /// The target block size.
    pub fn block_bytes(&self) -> u32 {
        self.block_bytes
    }

    /// Offset just past the last frame added: where indexing resumes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Records added.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Adds the frame at `offset` (`frame_len` bytes) holding `view`.
    pub fn add(
        &mut self,
        offset: u64,
        frame_len: u64,
        seq: u64,
        hash: ChainHash,
        view: &RecordView<'_>,
    ) {
        let fields = IndexedFields {
            timestamp: view.timestamp,
            actor: view.actor.as_bytes(),
            event_type: view.event_type.as_bytes(),
            node: view.node.map(str::as_bytes),
        };
        self.add_fields(offset, frame_len, seq, hash, &fields);
    }

    /// Adds the frame at `offset` (`frame_len` bytes) whose record has
    /// `fields`: what [`Self::add`] does with a decoded record, for a caller
    /// that checked the record another way (the verifier).
    pub fn add_fields(
        &mut self,
        offset: u64,
        frame_len: u64,
        seq: u64,
        hash: ChainHash,
        fields: &IndexedFields<'_>,
    ) {
        let ts = fields.timestamp.unix_nanos();
        let starts_block = match self.offsets.last() {
            None => true,
            Some(&start) => offset - u64::from(start) >= u64::from(self.block_bytes),
        };
        if starts_block {
            // Offsets fit in u32: segments are at most 4 GiB.
            self.offsets.push(offset as u32);
            self.first_seqs.push((seq - self.base_seq) as u32);
            self.times.push((ts, ts));
        } else if let Some(t) = self.times.last_mut() {
            t.0 = t.0.min(ts);
            t.1 = t.1.max(ts);
        }
        let block = (self.offsets.len() - 1) as u32;
        let values = [Some(fields.actor), Some(fields.event_type), fields.node];
        for (field, value) in Field::ALL.iter().zip(values) {
            if let Some(value) = value {
                self.postings[field.slot()].add(value, block);
            }
        }
        self.end = offset + frame_len;
        self.records += 1;
        self.last_hash = hash;
    }

    /// Scans the frames of `file` from where this builder stopped up to
    /// `limit`, adding each. Returns an error for a bad frame.
    pub fn extend_from(
        &mut self,
        file: Arc<dyn StorageFile>,
        name: &str,
        limit: u64,
    ) -> Result<()> {
        // The records' layout is the segment's version (a 128-byte read).
        let version = segment::read_header(&*file, name)?.version;
        let mut scan = Scanner::new(file, name, self.end, limit);
        loop {
            match scan.next_step()? {
                Step::Frame { offset, frame } => {
                    let view =
                        decode_record(version, frame.record).map_err(|e| Error::Corrupted {
                            file: name.to_string(),
                            offset,
                            reason: e.to_string(),
                        })?;
                    self.add(
                        offset,
                        frame.padded_len() as u64,
                        frame.seq,
                        frame.hash,
                        &view,
                    );
                }
                Step::End { .. } => return Ok(()),
                Step::Bad { offset, error } => {
                    return Err(Error::Corrupted {
                        file: name.to_string(),
                        offset,
                        reason: error.to_string(),
                    })
                }
            }
        }
    }

    /// Whether the frames added are exactly those `trailer` counts.
    pub fn matches(&self, trailer: &SegmentTrailer) -> bool {
        self.records == trailer.record_count
            && self.last_hash == trailer.last_hash
            && self.end == trailer.data_end
    }

    /// The index file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut sections: Vec<Vec<u8>> = vec![Vec::new(); SECTION_COUNT];
        for o in &self.offsets {
            sections[Section::Offsets as usize].extend_from_slice(&o.to_le_bytes());
        }
        for s in &self.first_seqs {
            sections[Section::FirstSeqs as usize].extend_from_slice(&s.to_le_bytes());
        }
        for (min, max) in &self.times {
            sections[Section::Times as usize].extend_from_slice(&min.to_le_bytes());
            sections[Section::Times as usize].extend_from_slice(&max.to_le_bytes());
        }
        let mut postings = Vec::new();
        for field in Field::ALL {
            let mut values: Vec<(&[u8], &[u32])> = self.postings[field.slot()].iter().collect();
            values.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let dir = &mut sections[field.section() as usize];
            for (value, blocks) in values {
                let at = postings.len();
                let mut prev = 0;
                for (i, &b) in blocks.iter().enumerate() {
                    write_varint(&mut postings, if i == 0 { b } else { b - prev });
                    prev = b;
                }
                // Each list has its own CRC, so a query can read just the
                // lists it needs and still check them.
                let list_crc = crc32c::crc32c(&postings[at..]);
                dir.extend_from_slice(&(value.len() as u16).to_le_bytes());
                dir.extend_from_slice(value);
                dir.extend_from_slice(&(at as u32).to_le_bytes());
                dir.extend_from_slice(&((postings.len() - at) as u32).to_le_bytes());
                dir.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
                dir.extend_from_slice(&list_crc.to_le_bytes());
            }
        }
        sections[Section::Postings as usize] = postings;

        let mut out = vec![0; INDEX_HEADER_BYTES];
        out[0..8].copy_from_slice(&INDEX_MAGIC);
        out[8..10].copy_from_slice(&INDEX_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.records.to_le_bytes());
        out[32..40].copy_from_slice(&self.end.to_le_bytes());
        out[40..72].copy_from_slice(&self.last_hash.0);
        out[72..76].copy_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        for (i, section) in sections.iter().enumerate() {
            let entry = HEADER_FIELDS_BYTES + i * SECTION_ENTRY_BYTES;
            let at = out.len() as u32;
            out[entry..entry + 4].copy_from_slice(&at.to_le_bytes());
            out[entry + 4..entry + 8].copy_from_slice(&(section.len() as u32).to_le_bytes());
            out[entry + 8..entry + 12].copy_from_slice(&crc32c::crc32c(section).to_le_bytes());
            out.extend_from_slice(section);
        }
        let crc_at = INDEX_HEADER_BYTES - 4;
        let crc = crc32c::crc32c(&out[..crc_at]);
        out[crc_at..INDEX_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// What an index file's header says it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Target block size.
    pub block_bytes: u32,
    /// Base seq of the segment.
    pub base_seq: u64,
    /// Records indexed.
    pub records: u64,
    /// Offset just past the last indexed frame.
    pub data_end: u64,
    /// Hash of the last indexed record.
    pub last_hash: ChainHash,
    /// Blocks.
    pub block_count: u32,
}

/// Reads an index lazily, section by section, checking each section's CRC.
#[derive(Debug)]
pub struct IndexReader {
    file: Arc<dyn StorageFile>,
    name: String,
    header: IndexHeader,
    sections: [(u32, u32, u32); SECTION_COUNT],
    bytes_read: u64,
}

impl IndexReader {
    /// Reads and checks the header and section table.
    pub fn open(file: Arc<dyn StorageFile>, name: &str) -> Result<Self> {
        let mut b = [0; INDEX_HEADER_BYTES];
        read_exact_at(&*file, &mut b, 0).map_err(|e| segment::io_or_short(name, 0, e))?;
        let corrupt = |reason: &str| Error::Corrupted {
            file: name.to_string(),
            offset: 0,
            reason: reason.to_string(),
        };
        if b[0..8] != INDEX_MAGIC {
            return Err(corrupt("not a chainlog index (bad magic)"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != INDEX_VERSION {
            return Err(Error::UnsupportedVersion {
                file: name.to_string(),
                found: version,
                supported: INDEX_VERSION,
            });
        }
        let crc_at = INDEX_HEADER_BYTES - 4;
        let expected = u32_at(&b, crc_at);
        let got = crc32c::crc32c(&b[..crc_at]);
        if expected != got {
            return Err(Error::ChecksumMismatch {
                file: name.to_string(),
                offset: 0,
                expected,
                got,
            });
        }
        let mut hash = [0; 32];
        hash.copy_from_slice(&b[40..72]);
        let header = IndexHeader {
            block_bytes: u32_at(&b, 12),
            base_seq: u64_at(&b, 16),
            records: u64_at(&b, 24),
            data_end: u64_at(&b, 32),
            last_hash: ChainHash(hash),
            block_count: u32_at(&b, 72),
        };
        let mut sections = [(0, 0, 0); SECTION_COUNT];
        for (i, s) in sections.iter_mut().enumerate() {
            let entry = HEADER_FIELDS_BYTES + i * SECTION_ENTRY_BYTES;
            *s = (
                u32_at(&b, entry),
                u32_at(&b, entry + 4),
                u32_at(&b, entry + 8),
            );
        }
        // Every section must lie inside the file: a damaged table must not
        // make a reader allocate by a length field.
        let file_len = file.size().map_err(|e| Error::io(name, e))?;
        if sections
            .iter()
            .any(|&(at, len, _)| u64::from(at) + u64::from(len) > file_len)
        {
            return Err(corrupt("a section lies past the end of the file"));
        }
        let blocks = header.block_count as u64;
        let sizes_ok = u64::from(sections[Section::Offsets as usize].1) == blocks * 4
            && u64::from(sections[Section::FirstSeqs as usize].1) == blocks * 4
            && u64::from(sections[Section::Times as usize].1) == blocks * 16;
        if !sizes_ok || (blocks == 0) != (header.records == 0) {
            return Err(corrupt("section sizes do not match the block count"));
        }
        Ok(IndexReader {
            file,
            name: name.to_string(),
            header,
            sections,
            bytes_read: INDEX_HEADER_BYTES as u64,
        })
    }

    /// The header.
    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// Bytes read from the index so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn section(&mut self, section: Section) -> Result<Vec<u8>> {
        let (at, len, crc) = self.sections[section as usize];
        let mut buf = vec![0; len as usize];
        read_exact_at(&*self.file, &mut buf, u64::from(at))
            .map_err(|e| segment::io_or_short(&self.name, u64::from(at), e))?;
        self.bytes_read += u64::from(len);
        let got = crc32c::crc32c(&buf);
        if got != crc {
            return Err(Error::ChecksumMismatch {
                file: self.name.clone(),
                offset: u64::from(at),
                expected: crc,
                got,
            });
        }
        Ok(buf)
    }

    fn corrupt(&self, reason: &str) -> Error {
        Error::Corrupted {
            file: self.name.clone(),
            offset: 0,
            reason: reason.to_string(),
        }
    }

    /// The offset of each block's first frame, ascending, inside the data area.
    pub fn offsets(&mut self) -> Result<Vec<u64>> {
        let raw = self.section(Section::Offsets)?;
        let offsets: Vec<u64> = raw
            .chunks_exact(4)
            .map(|c| u64::from(u32_at(c, 0)))
            .collect();
        let ascending = offsets.windows(2).all(|w| w[0] < w[1]);
        let inside = offsets.first().is_none_or(|&o| o == HEADER_BYTES)
            && offsets.last().is_none_or(|&o| o < self.header.data_end);
        if !ascending || !inside {
            return Err(self.corrupt("block offsets are out of order or outside the data"));
        }
        Ok(offsets)
    }

    /// Each block's first seq, ascending.
    pub fn first_seqs(&mut self) -> Result<Vec<u64>> {
        let raw = self.section(Section::FirstSeqs)?;
        let base = self.header.base_seq;
        let seqs: Vec<u64> = raw
            .chunks_exact(4)
            .map(|c| base + u64::from(u32_at(c, 0)))
            .collect();
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.corrupt("block seqs are out of order"));
        }
        Ok(seqs)
    }

    /// Each block's (min, max) event timestamp.
    pub fn times(&mut self) -> Result<Vec<(Timestamp, Timestamp)>> {
        let raw = self.section(Section::Times)?;
        Ok(raw
            .chunks_exact(16)
            .map(|c| {
                (
                    Timestamp::from_unix_nanos(u64_at(c, 0) as i64),
                    Timestamp::from_unix_nanos(u64_at(c, 8) as i64),
                )
            })
            .collect())
    }

    /// The blocks holding any value of `field` that `matches`, ascending.
    pub fn blocks_matching(
        &mut self,
        field: Field,
        matches: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<u32>> {
        let dir = self.section(field.section())?;
        let mut wanted = Vec::new();
        let mut pos = 0;
        while pos < dir.len() {
            let entry = DirectoryEntry::decode(&dir, &mut pos)
                .ok_or_else(|| self.corrupt("bad directory entry"))?;
            if matches(entry.value) {
                wanted.push((entry.at, entry.len, entry.hits, entry.crc));
            }
        }
        let (section_at, section_len, _) = self.sections[Section::Postings as usize];
        let mut blocks = Vec::new();
        for (at, len, hits, crc) in wanted {
            // Read only this list, checked by its own CRC.
            if u64::from(at) + u64::from(len) > u64::from(section_len) {
                return Err(self.corrupt("posting list outside its section"));
            }
            let mut list = vec![0; len as usize];
            let offset = u64::from(section_at) + u64::from(at);
            read_exact_at(&*self.file, &mut list, offset)
                .map_err(|e| segment::io_or_short(&self.name, offset, e))?;
            self.bytes_read += u64::from(len);
            let got = crc32c::crc32c(&list);
            if got != crc {
                return Err(Error::ChecksumMismatch {
                    file: self.name.clone(),
                    offset,
                    expected: crc,
                    got,
                });
            }
            let mut p = 0;
            let mut block = 0u32;
            for i in 0..hits {
                let v =
                    read_varint(&list, &mut p).ok_or_else(|| self.corrupt("bad posting list"))?;
                block = if i == 0 {
                    v
                } else {
                    block
                        .checked_add(v)
                        .ok_or_else(|| self.corrupt("bad posting list"))?
                };
                if block >= self.header.block_count {
                    return Err(self.corrupt("posting names a block past the end"));
                }
                blocks.push(block);
            }
        }
        blocks.sort_unstable();
        blocks.dedup();
        Ok(blocks)
    }
}

struct DirectoryEntry<'a> {
    value: &'a str,
    at: u32,
    len: u32,
    hits: u32,
    crc: u32,
}

impl<'a> DirectoryEntry<'a> {
    fn decode(dir: &'a [u8], pos: &mut usize) -> Option<Self> {
        let len = usize::from(u16::from_le_bytes(
            dir.get(*pos..*pos + 2)?.try_into().ok()?,
        ));
        *pos += 2;
        let value = std::str::from_utf8(dir.get(*pos..*pos + len)?).ok()?;
        *pos += len;
        let fixed = dir.get(*pos..*pos + 16)?;
        *pos += 16;
        Some(DirectoryEntry {
            value,
            at: u32_at(fixed, 0),
            len: u32_at(fixed, 4),
            hits: u32_at(fixed, 8),
            crc: u32_at(fixed, 12),
        })
    }
}

/// An in-memory file, so an index just built reads like one loaded from disk.
#[derive(Debug)]
pub struct MemoryFile(pub Vec<u8>);

impl StorageFile for MemoryFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn allocate(&self, _: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Does the index header describe this sealed segment as it is now?
pub(crate) fn describes(header: &IndexHeader, base_seq: u64, trailer: &SegmentTrailer) -> bool {
    header.base_seq == base_seq
        && header.records == trailer.record_count
        && header.data_end == trailer.data_end
        && header.last_hash == trailer.last_hash
}

/// The index of a sealed segment: loaded from its file when that is intact
/// and current, otherwise rebuilt from the segment (and the file rewritten,
/// when `write` is set; a failure to write is ignored, since the index is
/// only a cache).
pub fn load_or_rebuild(
    storage: &dyn Storage,
    dir: &Path,
    segment_file: Arc<dyn StorageFile>,
    base_seq: u64,
    trailer: &SegmentTrailer,
    block_bytes: u32,
    write: bool,
) -> Result<IndexReader> {
    let name = file_name(base_seq);
    if let Ok(file) = storage.open(&dir.join(&name), false) {
        if let Ok(reader) = IndexReader::open(file, &name) {
            if describes(reader.header(), base_seq, trailer) {
                return Ok(reader);
            }
        }
    }
    rebuild(
        storage,
        dir,
        segment_file,
        base_seq,
        trailer,
        block_bytes,
        write,
    )
}

/// Rebuilds the index of a sealed segment from its frames, rewriting the
/// file when `write` is set (a failure to write is ignored).
pub fn rebuild(
    storage: &dyn Storage,
    dir: &Path,
    segment_file: Arc<dyn StorageFile>,
    base_seq: u64,
    trailer: &SegmentTrailer,
    block_bytes: u32,
    write: bool,
) -> Result<IndexReader> {
    let bytes = build_sealed(segment_file, base_seq, trailer, block_bytes)?;
    if write {
        let _ = write_file(storage, dir, base_seq, &bytes);
    }
    IndexReader::open(Arc::new(MemoryFile(bytes)), &file_name(base_seq))
}

/// Builds the index bytes of a sealed segment by scanning it.
pub fn build_sealed(
    segment_file: Arc<dyn StorageFile>,
    base_seq: u64,
    trailer: &SegmentTrailer,
    block_bytes: u32,
) -> Result<Vec<u8>> {
    let seg_name = segment::file_name(base_seq);
    let mut builder = IndexBuilder::new(base_seq, block_bytes);
    builder.extend_from(segment_file, &seg_name, trailer.data_end)?;
    if builder.records != trailer.record_count || builder.last_hash != trailer.last_hash {
        return Err(Error::Corrupted {
            file: seg_name,
            offset: trailer.data_end,
            reason: "segment frames disagree with its trailer".into(),
        });
    }
    Ok(builder.encode())
}

/// Writes an index file: to a temporary name, then renamed into place. Not
/// synced: a torn or lost index is detected by its checksums and rebuilt.
pub fn write_file(storage: &dyn Storage, dir: &Path, base_seq: u64, bytes: &[u8]) -> Result<()> {
    let path = dir.join(file_name(base_seq));
    let temp = dir.join(format!("{}.tmp{}", file_name(base_seq), std::process::id()));
    let io = |e| Error::io(&path, e);
    let _ = storage.remove(&temp);
    let file = storage.create_new(&temp).map_err(io)?;
    file.write_all_at(bytes, 0).map_err(io)?;
    storage.rename(&temp, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{encode_record, Event};

    fn builder_with(n: u64, block_bytes: u32) -> IndexBuilder {
        let mut b = IndexBuilder::new(100, block_bytes);
        let mut offset = HEADER_BYTES;
        for i in 0..n {
            let mut e = Event::new(
                Timestamp::from_unix_nanos(1000 - i as i64 % 7),
                if i % 2 == 0 {
                    "pcap.download"
                } else {
                    "auth.login"
                },
                format!("actor{}", i % 5),
            );
            e.node = (i % 3 == 0).then(|| "nyc-edge-01".to_string());
            let mut buf = Vec::new();
            encode_record(&e, &mut buf).unwrap();
            let view = decode_record(1, &buf).unwrap();
            b.add(offset, 256, 100 + i, ChainHash([i as u8; 32]), &view);
            offset += 256;
        }
        b
    }

    #[test]
    fn index_round_trip() {
        let b = builder_with(100, 1024);
        let bytes = b.encode();
        let mut r = IndexReader::open(Arc::new(MemoryFile(bytes)), "x").unwrap();
        assert_eq!(r.header().records, 100);
        assert_eq!(r.header().block_count, 25);
        let offsets = r.offsets().unwrap();
        assert_eq!(offsets[1], HEADER_BYTES + 1024);
        assert_eq!(r.first_seqs().unwrap()[2], 108);
        assert_eq!(r.times().unwrap()[0].1, Timestamp::from_unix_nanos(1000));
        // actor0 is in records 0, 5, 10, ...: every block but one in five... check exactly.
        let expected: Vec<u32> = (0..100u32)
            .filter(|i| i % 5 == 0)
            .map(|i| i / 4)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            r.blocks_matching(Field::Actor, &|v| v == "actor0").unwrap(),
            expected
        );
        assert_eq!(
            r.blocks_matching(Field::Actor, &|v| v == "nobody").unwrap(),
            Vec::<u32>::new()
        );
        let all: Vec<u32> = (0..25).collect();
        assert_eq!(
            r.blocks_matching(Field::EventType, &|v| v.starts_with("pcap."))
                .unwrap(),
            all
        );
        assert_eq!(r.blocks_matching(Field::Node, &|_| true).unwrap().len(), 25);
    }

    #[test]
    fn index_detects_corruption() {
        let bytes = builder_with(40, 512).encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let outcome = IndexReader::open(Arc::new(MemoryFile(bad)), "x").and_then(|mut r| {
                r.offsets()?;
                r.first_seqs()?;
                r.times()?;
                for f in Field::ALL {
                    r.blocks_matching(f, &|_| true)?;
                }
                Ok(())
            });
            assert!(outcome.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn varints_round_trip() {
        let mut out = Vec::new();
        for v in [0, 1, 127, 128, 300, u32::MAX] {
            write_varint(&mut out, v);
        }
        let mut pos = 0;
        for v in [0, 1, 127, 128, 300, u32::MAX] {
            assert_eq!(read_varint(&out, &mut pos), Some(v));
        }
        assert_eq!(read_varint(&[0x80, 0x80], &mut 0), None);
    }
}
