//! Filtering: the [`Filter`] type, and queries that read only the segments
//! and blocks that can match.
//!
//! A query visits segments in seq order (or newest first). A sealed segment
//! is skipped whole when its trailer's seq range or time span cannot match,
//! or when its index shows none of the wanted actors, event types or nodes.
//! Otherwise the index narrows it to candidate blocks, which are read and
//! filtered record by record, so the answer is always exactly what a full
//! scan would give: the index only decides what to skip.
//!
//! The provenance filters (appender, origin, time of receipt) are not in the
//! indexes: they are tested record by record within whatever the indexed
//! filters narrowed. A received-since bound also skips a sealed segment
//! whose trailer's `last_received_at` is before it (times of receipt never
//! go back along the chain, so the last record is the latest).

pub mod bundle;
pub mod export;
pub mod proofs;
pub mod prover;
pub mod time_order;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::{decode_record, validate_event_type, Origin, Outcome, RecordView, Timestamp};
use crate::format::segment::{self, Scanner, Step};
use crate::hash::chain::ChainHash;
use crate::index::{self, Field, IndexReader};
use crate::log::{Log, Record};
use crate::storage::StorageFile;

/// A filter value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Not an IP address or CIDR block.
    #[error("bad IP address or CIDR block {0:?} (expected e.g. 198.51.100.0/24 or 2001:db8::/32)")]
    BadCidr(String),
    /// Not RFC 3339 or a relative time.
    #[error("bad time {0:?} (expected RFC 3339 such as 2026-03-09T09:52:14Z, or a relative time such as 15m, 24h, 7d)")]
    BadTime(String),
    /// Not an event type or a prefix pattern.
    #[error("bad event pattern {0:?} (expected an event type such as pcap.download, or a prefix such as pcap.*)")]
    BadEventPattern(String),
    /// Not `success` or `failure`.
    #[error("bad outcome {0:?} (expected success or failure)")]
    BadOutcome(String),
    /// The time range is empty.
    #[error("--since {since} is not before --until {until}")]
    EmptyTimeRange {
        /// The lower bound.
        since: Timestamp,
        /// The upper bound.
        until: Timestamp,
    },
    /// Not `client` or `engine`.
    #[error("bad origin {0:?} (expected client or engine)")]
    BadOrigin(String),
    /// The time-of-receipt range is empty.
    #[error("--received-since {since} is not before --received-until {until}")]
    EmptyReceivedRange {
        /// The lower bound.
        since: Timestamp,
        /// The upper bound.
        until: Timestamp,
    },
}

/// Parses an origin filter value: `client` or `engine` (version 1 records
/// have no recorded origin and match neither).
pub fn parse_origin(text: &str) -> std::result::Result<Origin, FilterError> {
    match text {
        "client" => Ok(Origin::Client),
        "engine" => Ok(Origin::Engine),
        other => Err(FilterError::BadOrigin(other.chars().take(100).collect())),
    }
}

/// An event type to match: exact, or every type under a prefix (`pcap.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPattern {
    /// Exactly this event type.
    Exact(String),
    /// Event types starting with this text (the pattern without its `*`).
    Prefix(String),
}

impl EventPattern {
    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventPattern::Exact(e) => event_type == e,
            EventPattern::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

impl FromStr for EventPattern {
    type Err = FilterError;
    fn from_str(s: &str) -> std::result::Result<Self, FilterError> {
        let bad = || FilterError::BadEventPattern(s.to_string());
        match s.strip_suffix('*') {
            Some(prefix) => {
                let ok = prefix.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
                });
                if ok && !prefix.contains('*') {
                    Ok(EventPattern::Prefix(prefix.to_string()))
                } else {
                    Err(bad())
                }
            }
            None => {
                validate_event_type(s).map_err(|_| bad())?;
                Ok(EventPattern::Exact(s.to_string()))
            }
        }
    }
}

/// An IPv4 or IPv6 network (`198.51.100.0/24`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix_len, 32)
                    == masked(u32::from(*ip).into(), self.prefix_len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix_len, 128)
                    == masked(u128::from(*ip), self.prefix_len, 128)
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = FilterError;
    fn from_str(s: &str) -> std::result::Result<Self, FilterError> {
        let bad = || FilterError::BadCidr(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= width)
                .ok_or_else(bad)?,
            Some(_) => return Err(bad()),
        };
        Ok(IpNet { addr, prefix_len })
    }
}

/// Parses a time bound: RFC 3339, or a relative time before `now`: a number
/// and a unit, `s`, `m`, `h`, `d` or `w` (`15m`, `24h`, `7d`).
pub fn parse_time(text: &str, now: Timestamp) -> std::result::Result<Timestamp, FilterError> {
    let bad = || FilterError::BadTime(text.to_string());
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let nanos = n
        .checked_mul(unit_secs)
        .and_then(|s| s.checked_mul(1_000_000_000))
        .ok_or_else(bad)?;
    now.unix_nanos()
        .checked_sub(nanos)
        .map(Timestamp::from_unix_nanos)
        .ok_or_else(bad)
}

/// Which records to return. Values within one field are alternatives (OR);
/// different fields must all match (AND). Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Actors, exactly.
    pub actors: Vec<String>,
    /// Event types, exact or by prefix.
    pub event_types: Vec<EventPattern>,
    /// Nodes, exactly.
    pub nodes: Vec<String>,
    /// Resources, exactly.
    pub resources: Vec<String>,
    /// Source addresses, by network.
    pub ips: Vec<IpNet>,
    /// Outcomes.
    pub outcomes: Vec<Outcome>,
    /// Earliest timestamp, inclusive.
    pub since: Option<Timestamp>,
    /// Latest timestamp, exclusive.
    pub until: Option<Timestamp>,
    /// Appenders (the record's `appender`), exactly. Version 1 records,
    /// which have none, never match.
    pub appenders: Vec<String>,
    /// Origins ([`Origin::Client`] or [`Origin::Engine`]). Version 1
    /// records ([`Origin::Legacy`]) match only a wanted `Legacy`.
    pub origins: Vec<Origin>,
    /// Earliest time of receipt, inclusive. Version 1 records, which have
    /// none, never match a received-time bound.
    pub received_since: Option<Timestamp>,
    /// Latest time of receipt, exclusive.
    pub received_until: Option<Timestamp>,
}

impl Filter {
    /// Rejects filters that can never match for a reason the user should hear.
    pub fn validate(&self) -> std::result::Result<(), FilterError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(FilterError::EmptyTimeRange { since, until });
            }
        }
        if let (Some(since), Some(until)) = (self.received_since, self.received_until) {
            if since >= until {
                return Err(FilterError::EmptyReceivedRange { since, until });
            }
        }
        Ok(())
    }

    /// Whether the record matches.
    pub fn matches(&self, r: &RecordView<'_>) -> bool {
        fn any<T>(wanted: &[T], f: impl Fn(&T) -> bool) -> bool {
            wanted.is_empty() || wanted.iter().any(f)
        }
        self.since.is_none_or(|s| r.timestamp >= s)
            && self.until.is_none_or(|u| r.timestamp < u)
            && any(&self.actors, |a| a == r.actor)
            && any(&self.event_types, |p| p.matches(r.event_type))
            && any(&self.nodes, |n| Some(n.as_str()) == r.node)
            && any(&self.resources, |x| Some(x.as_str()) == r.resource)
            && any(&self.ips, |net| {
                r.source_ip.is_some_and(|ip| net.contains(&ip))
            })
            && any(&self.outcomes, |o| *o == r.outcome)
            && self.matches_provenance(r)
    }

    /// The provenance part of [`Filter::matches`]: appender, origin, time
    /// of receipt.
    fn matches_provenance(&self, r: &RecordView<'_>) -> bool {
        let received = |bound: Option<Timestamp>, ok: fn(Timestamp, Timestamp) -> bool| {
            bound.is_none_or(|b| r.received_at.is_some_and(|at| ok(at, b)))
        };
        (self.appenders.is_empty()
            || self
                .appenders
                .iter()
                .any(|a| Some(a.as_str()) == r.appender))
            && (self.origins.is_empty() || self.origins.contains(&r.origin))
            && received(self.received_since, |at, s| at >= s)
            && received(self.received_until, |at, u| at < u)
    }

    fn time_overlaps(&self, min: Timestamp, max: Timestamp) -> bool {
        self.since.is_none_or(|s| max >= s) && self.until.is_none_or(|u| min < u)
    }
}

/// A query: a filter plus where to start, which way, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Which records.
    pub filter: Filter,
    /// Start here (inclusive): the lowest seq going forward, the highest in reverse.
    pub from_seq: Option<u64>,
    /// Continue after this seq (a cursor: the last seq of the previous page).
    pub after: Option<u64>,
    /// Newest first.
    pub reverse: bool,
    /// At most this many records.
    pub limit: Option<u64>,
}

impl Query {
    /// The inclusive seq range this query may return, or `None` if empty.
    fn seq_range(&self) -> Option<(u64, u64)> {
        let (mut lo, mut hi) = (0, u64::MAX);
        if self.reverse {
            if let Some(f) = self.from_seq {
                hi = hi.min(f);
            }
            if let Some(a) = self.after {
                hi = hi.min(a.checked_sub(1)?);
            }
        } else {
            if let Some(f) = self.from_seq {
                lo = lo.max(f);
            }
            if let Some(a) = self.after {
                lo = lo.max(a.checked_add(1)?);
            }
        }
        (lo <= hi).then_some((lo, hi))
    }
}

/// One matching record, with its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The record's seq.
    pub seq: u64,
    /// Its stored chain hash.
    pub hash: ChainHash,
    /// Its stored record bytes.
    pub record: Vec<u8>,
    /// Their layout: the format version of the segment they were read from.
    pub version: u16,
}

impl Match {
    /// The decoded fields (the bytes were decoded once already, so this
    /// only fails if they changed in memory).
    pub fn view(&self) -> Result<RecordView<'_>> {
        decode_record(self.version, &self.record).map_err(|e| Error::Corrupted {
            file: String::new(),
            offset: 0,
            reason: format!("seq {}: {e}", self.seq),
        })
    }

    /// The owned record, with its context parsed.
    pub fn to_record(&self) -> Result<Record> {
        Record::from_view(self.seq, self.hash, &self.view()?).map_err(|e| Error::Corrupted {
            file: String::new(),
            offset: 0,
            reason: format!("seq {}: {e}", self.seq),
        })
    }
}

/// What a query read and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Segments skipped without reading their index (trailer seq or time range).
    pub segments_skipped: u64,
    /// Segments whose index was consulted.
    pub segments_indexed: u64,
    /// Blocks read.
    pub blocks_read: u64,
    /// Bytes of segment data read (frames, plus headers and trailers).
    pub data_bytes_read: u64,
    /// Bytes of index read.
    pub index_bytes_read: u64,
    /// Records decoded and tested against the filter.
    pub records_examined: u64,
}

/// The position of one segment in a query's plan.
struct SegmentRef {
    base: u64,
    active: bool,
}

/// A byte range of frames to read: blocks `first..=last` of a segment.
struct Range {
    start: u64,
    end: u64,
    blocks: u64,
}

/// Called with each match (seq, stored hash, decoded record, record bytes);
/// returns false to stop.
type OnMatch<'a> = dyn FnMut(u64, ChainHash, &RecordView<'_>, &[u8]) -> Result<bool> + 'a;

/// Streaming query results, from [`Log::query`].
pub struct QueryIter {
    log_view: crate::log::Snapshot,
    query: Query,
    seq_lo: u64,
    seq_hi: u64,
    segments: VecDeque<SegmentRef>,
    /// The segment being read: its file, name and format version.
    file: Option<(Arc<dyn StorageFile>, String, u16)>,
    ranges: VecDeque<Range>,
    /// Matches of the current range, for reverse order.
    pending: VecDeque<Match>,
    returned: u64,
    stats: QueryStats,
    done: bool,
}

/// A range's matches are buffered (whole, to reverse them, or until the
/// caller takes them); bound it so memory stays flat however much matches.
const MAX_RANGE_BLOCKS: u64 = 64;

impl Log {
    /// Runs `query`, returning matches as they are found.
    pub fn query(&self, query: &Query) -> Result<QueryIter> {
        let snapshot = self.snapshot()?;
        let (seq_lo, seq_hi, empty) = match query.seq_range() {
            Some((lo, hi)) => (
                lo,
                hi.min(snapshot.next_seq.saturating_sub(1)),
                snapshot.next_seq == 0,
            ),
            None => (1, 0, true),
        };
        let mut segments: VecDeque<SegmentRef> = snapshot
            .segments
            .iter()
            .enumerate()
            .filter(|&(i, &base)| {
                let next_base = snapshot
                    .segments
                    .get(i + 1)
                    .copied()
                    .unwrap_or(snapshot.next_seq);
                base <= seq_hi && next_base > seq_lo
            })
            .map(|(_, &base)| SegmentRef {
                base,
                active: base == snapshot.active_base,
            })
            .collect();
        if empty || seq_lo > seq_hi {
            segments.clear();
        }
        if query.reverse {
            segments = segments.into_iter().rev().collect();
        }
        Ok(QueryIter {
            log_view: snapshot,
            query: query.clone(),
            seq_lo,
            seq_hi,
            segments,
            file: None,
            ranges: VecDeque::new(),
            pending: VecDeque::new(),
            returned: 0,
            stats: QueryStats::default(),
            done: false,
        })
    }
}

impl QueryIter {
    /// What the query has read so far.
    pub fn stats(&self) -> QueryStats {
        self.stats
    }

    /// Plans the next segment: skips it, or fills `ranges` with its candidate blocks.
    fn plan_segment(&mut self, seg: SegmentRef) -> Result<()> {
        let snap = &self.log_view;
        let (name, file) = segment::open_for_reading(&*snap.storage, &snap.dir, seg.base)?;
        let header = segment::read_header(&*file, &name)?;
        self.stats.data_bytes_read += segment::HEADER_BYTES;
        let filter = &self.query.filter;
        let (lo, hi, reverse) = (self.seq_lo, self.seq_hi, self.query.reverse);
        let ranges = if seg.active {
            let bytes = snap
                .log
                .active_index(file.clone(), &header, snap.active_end)?;
            let mut index = IndexReader::open(
                Arc::new(index::MemoryFile(bytes)),
                &index::file_name(seg.base),
            )?;
            let ranges = candidate_ranges(&mut index, filter, lo, hi, reverse);
            self.stats.index_bytes_read += index.bytes_read();
            ranges?
        } else {
            let trailer = segment::read_sealed_trailer(&*file, &name, header.segment_bytes)?;
            self.stats.data_bytes_read += segment::TRAILER_BYTES as u64;
            let seqs_overlap = trailer.last_seq >= self.seq_lo && seg.base <= self.seq_hi;
            // Receipt times never go back: none here is at or after the
            // bound if the last one is not (a version 1 segment has none).
            let received_too_early = filter
                .received_since
                .is_some_and(|s| trailer.last_received_at < s);
            if !seqs_overlap
                || received_too_early
                || !filter.time_overlaps(trailer.min_timestamp, trailer.max_timestamp)
            {
                self.stats.segments_skipped += 1;
                return Ok(());
            }
            let (storage, dir) = (&*snap.storage, &snap.dir);
            let (block_bytes, write) = (snap.index_block_bytes, !snap.read_only);
            let mut index = index::load_or_rebuild(
                storage,
                dir,
                file.clone(),
                seg.base,
                &trailer,
                block_bytes,
                write,
            )?;
            let ranges = candidate_ranges(&mut index, filter, lo, hi, reverse);
            self.stats.index_bytes_read += index.bytes_read();
            match ranges {
                // A section of the index file is damaged: rebuild it from the segment.
                Err(e) if e.is_corruption() => {
                    let mut index = index::rebuild(
                        storage,
                        dir,
                        file.clone(),
                        seg.base,
                        &trailer,
                        block_bytes,
                        write,
                    )?;
                    let ranges = candidate_ranges(&mut index, filter, lo, hi, reverse);
                    self.stats.index_bytes_read += index.bytes_read();
                    ranges?
                }
                ranges => ranges?,
            }
        };
        self.stats.segments_indexed += 1;
        self.ranges = ranges.into();
        self.file = Some((file, name, header.version));
        Ok(())
    }

    /// Scans the next range of the current segment, calling `on_match` with
    /// each matching record in file order (it returns false to stop early).
    /// Returns false when the segment has no more ranges.
    fn scan_range(&mut self, on_match: &mut OnMatch<'_>) -> Result<bool> {
        let Some(range) = self.ranges.pop_front() else {
            return Ok(false);
        };
        let Some((file, name, version)) = &self.file else {
            return Ok(false);
        };
        self.stats.blocks_read += range.blocks;
        let mut scanner = Scanner::new(file.clone(), name, range.start, range.end);
        let result = loop {
            match scanner.next_step()? {
                Step::Frame { offset, frame } => {
                    if frame.seq < self.seq_lo || frame.seq > self.seq_hi {
                        continue;
                    }
                    self.stats.records_examined += 1;
                    let view =
                        decode_record(*version, frame.record).map_err(|e| Error::Corrupted {
                            file: name.clone(),
                            offset,
                            reason: e.to_string(),
                        })?;
                    if self.query.filter.matches(&view)
                        && !on_match(frame.seq, frame.hash, &view, frame.record)?
                    {
                        break Ok(true);
                    }
                }
                Step::End { .. } => break Ok(true),
                Step::Bad { offset, error } => {
                    break Err(Error::Corrupted {
                        file: name.clone(),
                        offset,
                        reason: error.to_string(),
                    })
                }
            }
        };
        self.stats.data_bytes_read += scanner.bytes_read();
        result
    }

    /// Reads the next range's matching records into `pending` (in the
    /// query's order); returns false when the segment has no more ranges.
    fn read_range(&mut self) -> Result<bool> {
        let mut found = Vec::new();
        let version = self.file.as_ref().map_or(0, |f| f.2);
        let more = self.scan_range(&mut |seq, hash, _, record| {
            found.push(Match {
                seq,
                hash,
                record: record.to_vec(),
                version,
            });
            Ok(true)
        })?;
        if self.query.reverse {
            found.reverse();
        }
        self.pending.extend(found);
        Ok(more)
    }

    /// Calls `f` with each remaining match, decoded in place: no copy and no
    /// allocation per record, which is what a full export wants. Stops at the
    /// query's limit, or at the first error `f` returns.
    pub fn try_for_each_view<E: From<Error>>(
        &mut self,
        mut f: impl FnMut(u64, ChainHash, &RecordView<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if self.query.reverse || !self.pending.is_empty() {
            // Reverse order buffers each range anyway: go through `Match`es.
            for m in self.by_ref() {
                let m = m?;
                f(m.seq, m.hash, &m.view()?)?;
            }
            return Ok(());
        }
        let limit = self.query.limit.unwrap_or(u64::MAX);
        let mut failed = None;
        while !self.done {
            let mut returned = self.returned;
            let more = self.scan_range(&mut |seq, hash, view, _| {
                if returned >= limit {
                    return Ok(false);
                }
                returned += 1;
                match f(seq, hash, view) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        failed = Some(e);
                        Ok(false)
                    }
                }
            });
            self.returned = returned;
            if let Some(e) = failed.take() {
                self.done = true;
                return Err(e);
            }
            if self.returned >= limit {
                self.done = true;
            } else if !more? {
                match self.segments.pop_front() {
                    Some(seg) => self.plan_segment(seg)?,
                    None => self.done = true,
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Match>> {
        loop {
            if self.query.limit.is_some_and(|l| self.returned >= l) {
                return Ok(None);
            }
            if let Some(m) = self.pending.pop_front() {
                self.returned += 1;
                return Ok(Some(m));
            }
            if self.read_range()? {
                continue;
            }
            let Some(seg) = self.segments.pop_front() else {
                return Ok(None);
            };
            self.plan_segment(seg)?;
        }
    }
}

impl Iterator for QueryIter {
    type Item = Result<Match>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Intersects what the index knows with the filter: the byte ranges of the
/// blocks that may hold a match, merged where adjacent, in query order.
fn candidate_ranges(
    index: &mut IndexReader,
    filter: &Filter,
    seq_lo: u64,
    seq_hi: u64,
    reverse: bool,
) -> Result<Vec<Range>> {
    let blocks = index.header().block_count as usize;
    let data_end = index.header().data_end;
    let mut keep = vec![true; blocks];
    let mut narrow = |found: Vec<u32>| {
        let mut hit = vec![false; blocks];
        for b in found {
            hit[b as usize] = true;
        }
        for (k, h) in keep.iter_mut().zip(hit) {
            *k &= h;
        }
    };
    if !filter.actors.is_empty() {
        narrow(index.blocks_matching(Field::Actor, &|v| filter.actors.iter().any(|a| a == v))?);
    }
    if !filter.event_types.is_empty() {
        narrow(index.blocks_matching(Field::EventType, &|v| {
            filter.event_types.iter().any(|p| p.matches(v))
        })?);
    }
    if !filter.nodes.is_empty() {
        narrow(index.blocks_matching(Field::Node, &|v| filter.nodes.iter().any(|n| n == v))?);
    }
    if keep.iter().all(|k| !k) {
        return Ok(Vec::new());
    }
    if filter.since.is_some() || filter.until.is_some() {
        for (k, (min, max)) in keep.iter_mut().zip(index.times()?) {
            *k &= filter.time_overlaps(min, max);
        }
    }
    if seq_lo > index.header().base_seq || seq_hi < u64::MAX {
        let firsts = index.first_seqs()?;
        for (i, k) in keep.iter_mut().enumerate() {
            let last = firsts.get(i + 1).map_or(u64::MAX, |n| n - 1);
            *k &= firsts[i] <= seq_hi && last >= seq_lo;
        }
    }
    let offsets = index.offsets()?;
    let mut ranges: Vec<Range> = Vec::new();
    for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
        let start = offsets[i];
        let end = offsets.get(i + 1).copied().unwrap_or(data_end);
        match ranges.last_mut() {
            Some(r) if r.end == start && r.blocks < MAX_RANGE_BLOCKS => {
                r.end = end;
                r.blocks += 1;
            }
            _ => ranges.push(Range {
                start,
                end,
                blocks: 1,
            }),
        }
    }
    if reverse {
        ranges.reverse();
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_matching() {
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        assert!(net.contains(&"198.51.100.7".parse().unwrap()));
        assert!(!net.contains(&"198.51.101.7".parse().unwrap()));
        assert!(!net.contains(&"::1".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(&"2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains(&"2001:db9::5".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"8.8.8.8".parse().unwrap()));
        let one: IpNet = "203.0.113.42".parse().unwrap();
        assert!(one.contains(&"203.0.113.42".parse().unwrap()));
        assert!(!one.contains(&"203.0.113.43".parse().unwrap()));
        for bad in [
            "198.51.100.0/33",
            "198.51.100/24",
            "x",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "::/129",
        ] {
            assert_eq!(
                bad.parse::<IpNet>(),
                Err(FilterError::BadCidr(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn times_parse_absolute_and_relative() {
        let now = Timestamp::parse_rfc3339("2026-03-09T12:00:00Z").unwrap();
        assert_eq!(
            parse_time("15m", now).unwrap().to_string(),
            "2026-03-09T11:45:00Z"
        );
        assert_eq!(
            parse_time("24h", now).unwrap().to_string(),
            "2026-03-08T12:00:00Z"
        );
        assert_eq!(
            parse_time("7d", now).unwrap().to_string(),
            "2026-03-02T12:00:00Z"
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", now).unwrap().to_string(),
            "2026-01-01T00:00:00Z"
        );
        for bad in ["", "15", "m", "15x", "yesterday", "99999999999999999d"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_patterns() {
        let p: EventPattern = "pcap.*".parse().unwrap();
        assert!(p.matches("pcap.download") && !p.matches("pca.x"));
        let e: EventPattern = "auth.login_failed".parse().unwrap();
        assert!(e.matches("auth.login_failed") && !e.matches("auth.login"));
        assert!("Pcap.*".parse::<EventPattern>().is_err());
        assert!("pcap".parse::<EventPattern>().is_err());
        assert!("a*b*".parse::<EventPattern>().is_err());
    }

    #[test]
    fn empty_time_range_is_rejected() {
        let t = Timestamp::from_unix_nanos(5);
        let f = Filter {
            since: Some(t),
            until: Some(t),
            ..Filter::default()
        };
        assert!(matches!(
            f.validate(),
            Err(FilterError::EmptyTimeRange { .. })
        ));
    }
}
