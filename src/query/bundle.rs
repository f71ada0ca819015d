//! Self-verifying exports ("bundles"): each exported row with its stored
//! record bytes, the chain hash it chains from and an inclusion proof, and
//! the signed checkpoint the proofs lead to, in one JSON file.
//!
//! An auditor checks a bundle with the log's public key alone ([`check`]):
//! the checkpoint's signature; each row's chain hash, recomputed from the
//! hash before it, its seq and its record bytes; that the row's event fields
//! are what the record bytes say; and that the chain hash is a leaf of the
//! signed tree at the row's seq. A changed, forged or moved row fails and is
//! named by its seq. Both sides stream: memory does not grow with the bundle.
//! `docs/FORMAT.md` ("Bundle") has the format.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::{decode_record, RecordView};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::{Checkpoint, CheckpointError, NoteVerifier};
use crate::hash::merkle::Hash;
use crate::hash::proof::verify_inclusion;
use crate::log::Log;
use crate::query::export::{ExportFormat, ExportOptions, Exporter};
use crate::query::proofs::{hash_to_hex, ProofStats, ProveError};
use crate::query::Query;

/// The value of a bundle's `format` member.
pub const BUNDLE_FORMAT: &str = "chainlog-bundle/v1";
/// The most bytes a checker reads for one row (or for everything before the
/// rows): a row holds at most a 66,470-byte record, twice (base64 and the
/// event's fields), and 64 proof hashes.
pub const MAX_ROW_BYTES: u64 = 1 << 20;
/// Row problems a report lists; more are counted.
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// The checkpoint in a signed note, without checking any signature (the
/// exporter's side: the checker checks it).
pub fn parse_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| CheckpointError::Malformed("no blank line before the signatures".into()))?;
    Checkpoint::parse_body(&note[..split + 1])
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleExportError {
    /// Writing the bundle failed.
    #[error("writing the bundle failed: {0}")]
    Io(#[from] io::Error),
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] Error),
    /// The checkpoint text is not a checkpoint.
    #[error("the checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// A proof could not be made, or the log does not match the checkpoint.
    #[error(transparent)]
    Prove(#[from] ProveError),
    /// A record's bytes do not decode (the log needs `verify`).
    #[error("record {seq} cannot be exported: {reason}")]
    BadRecord {
        /// The record's seq.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The normal export row of a record (`seq`, `timestamp`, `event`, `actor`,
/// `node`, `resource`, `ip`, `outcome`, `context`, `hash`), as JSON.
fn event_json(seq: u64, hash: &ChainHash, view: &RecordView<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(512);
    let mut exporter = Exporter::new(&mut out, ExportOptions::new(ExportFormat::JsonLines))
        .map_err(|e| e.to_string())?;
    exporter
        .write_view(seq, hash, view)
        .map_err(|e| e.to_string())?;
    drop(exporter);
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// Writes a bundle row by row.
pub struct BundleWriter<W: Write> {
    out: W,
    rows: u64,
    line: Vec<u8>,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle for the signed checkpoint `note`.
    pub fn new(mut out: W, note: &str) -> io::Result<Self> {
        let note = serde_json::to_string(note).map_err(io::Error::from)?;
        write!(
            out,
            "{{\"format\":\"{BUNDLE_FORMAT}\",\"checkpoint\":{note},\"rows\":["
        )?;
        Ok(BundleWriter {
            out,
            rows: 0,
            line: Vec::with_capacity(4096),
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes one row: record `seq` with its stored bytes (of layout
    /// `record_version`, its segment's format version), the chain hash it
    /// chains from, its own chain hash and its inclusion proof.
    pub fn write_row(
        &mut self,
        seq: u64,
        prev_hash: &ChainHash,
        hash: &ChainHash,
        record: &[u8],
        record_version: u16,
        proof: &[Hash],
    ) -> Result<(), BundleExportError> {
        let bad = |reason: String| BundleExportError::BadRecord { seq, reason };
        let view = decode_record(record_version, record).map_err(|e| bad(e.to_string()))?;
        let event = event_json(seq, hash, &view).map_err(bad)?;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(if self.rows == 0 { b"\n" } else { b",\n" });
        write!(line, "{{\"seq\":{seq},\"event\":")?;
        line.extend_from_slice(&event);
        write!(
            line,
            ",\"record\":\"{}\",\"prev_hash\":\"{prev_hash}\",\"hash\":\"{hash}\",\"proof\":[",
            B64.encode(record)
        )?;
        for (i, h) in proof.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            write!(line, "\"{}\"", hash_to_hex(h))?;
        }
        line.push(b']');
        // Absent means 1, so bundles of version 1 logs stay as they were.
        if record_version != 1 {
            write!(line, ",\"record_version\":{record_version}")?;
        }
        line.push(b'}');
        self.out.write_all(line)?;
        self.rows += 1;
        Ok(())
    }

    /// Ends the bundle, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out
            .write_all(if self.rows == 0 { b"]}\n" } else { b"\n]}\n" })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Rows written.
    pub rows: u64,
    /// The checkpoint's tree size: rows have smaller seqs.
    pub tree_size: u64,
    /// What proof generation read.
    pub proofs: ProofStats,
}

/// Writes the records `query` matches, below the size of the checkpoint in
/// `note` (a signed checkpoint of this log), as a bundle to `out`;
/// `on_row` is called after each row. The checkpoint is checked against the
/// log first (origin, root and chain head), and every proof before it is
/// written. Rows stream: memory does not grow with the export.
pub fn export<W: Write>(
    log: &Log,
    query: &Query,
    note: &str,
    out: W,
    on_row: &mut dyn FnMut(u64),
) -> Result<ExportSummary, BundleExportError> {
    let checkpoint = parse_unverified(note).map_err(BundleExportError::Checkpoint)?;
    let mut prover = log.prover()?;
    prover.check_checkpoint(&checkpoint)?;
    let (size, root) = (checkpoint.size, checkpoint.root);
    let mut query = query.clone();
    let empty = size == 0;
    if query.reverse && !empty {
        // Newest first: start below the checkpoint's size.
        query.from_seq = Some(query.from_seq.unwrap_or(u64::MAX).min(size - 1));
    }
    let mut writer = BundleWriter::new(out, note)?;
    if !empty {
        let mut last: Option<(u64, ChainHash)> = None;
        for m in log.query(&query)? {
            let m = m?;
            if m.seq >= size {
                if query.reverse {
                    continue;
                }
                break;
            }
            let prev = match last {
                Some((seq, hash)) if seq + 1 == m.seq => hash,
                _ => prover.prev_hash(m.seq)?,
            };
            let proof = prover.inclusion_of(m.seq, m.hash, size, &root)?;
            writer.write_row(m.seq, &prev, &m.hash, &m.record, m.version, &proof.proof)?;
            last = Some((m.seq, m.hash));
            on_row(writer.rows());
        }
    }
    let rows = writer.rows();
    writer.finish()?;
    Ok(ExportSummary {
        rows,
        tree_size: size,
        proofs: prover.stats(),
    })
}

/// Why a bundle could not be checked at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The file is not a bundle (not JSON, a member missing or of the wrong
    /// type, an unknown format, a row too large).
    #[error("not a chainlog bundle: {0}")]
    Garbled(String),
    /// Reading the file failed.
    #[error("reading the bundle: {0}")]
    Io(io::Error),
    /// The checkpoint does not parse, its signature does not verify, or it
    /// is not signed by the key given: no row can be trusted.
    #[error("the bundle's checkpoint: {0}")]
    Checkpoint(CheckpointError),
}

impl BundleError {
    /// True when the bundle was tampered with or signed by another key (as
    /// opposed to unreadable).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            BundleError::Checkpoint(
                CheckpointError::BadSignature(_) | CheckpointError::NotSignedByKey { .. }
            )
        )
    }
}

/// What is wrong with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowProblemKind {
    /// The record bytes are not base64, or do not decode as a record.
    RecordMalformed,
    /// The row's hash is not the chain hash of its record at its seq,
    /// chained from its `prev_hash`.
    HashMismatch,
    /// The row's event fields are not what its record bytes say.
    EventMismatch,
    /// The row's seq is not below the checkpoint's tree size.
    OutOfRange,
    /// The proof does not lead from the row's hash at its seq to the signed root.
    NotIncluded,
}

/// One problem with one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowProblem {
    /// The row's position in the bundle (0 for the first).
    pub row: u64,
    /// The seq the row claims.
    pub seq: u64,
    /// What is wrong.
    pub kind: RowProblemKind,
    /// Details.
    pub detail: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RowProblemKind::RecordMalformed => "record_malformed",
            RowProblemKind::HashMismatch => "hash_mismatch",
            RowProblemKind::EventMismatch => "event_mismatch",
            RowProblemKind::OutOfRange => "out_of_range",
            RowProblemKind::NotIncluded => "not_included",
        };
        write!(
            f,
            "{kind}: seq {} (row {}): {}",
            self.seq, self.row, self.detail
        )
    }
}

/// The result of checking a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// The checkpoint's origin (`<prefix>/<log id>`).
    pub origin: String,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The checkpoint's root, hex.
    pub root: String,
    /// The key that signed it, `<name>+<key id>`.
    pub signer: String,
    /// Rows checked.
    pub rows: u64,
    /// Problems found, in file order.
    pub problems: Vec<RowProblem>,
    /// Problems beyond [`MAX_REPORTED_PROBLEMS`].
    pub problems_omitted: u64,
}

impl BundleReport {
    /// True when every row checked out.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }
}

/// A row as the checker reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleRow {
    seq: u64,
    event: serde_json::Value,
    record: String,
    prev_hash: ChainHash,
    hash: ChainHash,
    proof: Vec<ChainHash>,
    /// The record's layout (its segment's format version); 1 when absent.
    #[serde(default = "record_version_1")]
    record_version: u16,
}

fn record_version_1() -> u16 {
    1
}

/// Counts the bytes read since the last row, failing past [`MAX_ROW_BYTES`].
struct RowLimit<R> {
    inner: R,
    since_row: Rc<Cell<u64>>,
    exceeded: Rc<Cell<bool>>,
}

impl<R: BufRead> Read for RowLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.since_row.get() + n as u64;
        self.since_row.set(total);
        if total > MAX_ROW_BYTES {
            self.exceeded.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a row is larger than {MAX_ROW_BYTES} bytes"),
            ));
        }
        Ok(n)
    }
}

struct Checker<'v> {
    verifier: &'v NoteVerifier,
    checkpoint: Option<Checkpoint>,
    fatal: Option<BundleError>,
    since_row: Rc<Cell<u64>>,
    rows: u64,
    problems: Vec<RowProblem>,
    omitted: u64,
}

impl Checker<'_> {
    fn problem(&mut self, row: u64, seq: u64, kind: RowProblemKind, detail: String) {
        if self.problems.len() < MAX_REPORTED_PROBLEMS {
            self.problems.push(RowProblem {
                row,
                seq,
                kind,
                detail,
            });
        } else {
            self.omitted += 1;
        }
    }

    fn check_row(&mut self, row: BundleRow) {
        let (index, seq) = (self.rows, row.seq);
        self.rows += 1;
        let Some(cp) = self.checkpoint.clone() else {
            return;
        };
        let bytes = match B64.decode(&row.record) {
            Ok(b) => b,
            Err(_) => {
                let detail = "the record is not base64".to_string();
                return self.problem(index, seq, RowProblemKind::RecordMalformed, detail);
            }
        };
        let recomputed = row.prev_hash.next(seq, &bytes);
        if recomputed != row.hash {
            let detail = format!(
                "the row says hash {}, but its record at seq {seq} chained from prev_hash {} hashes to {recomputed}",
                row.hash, row.prev_hash
            );
            self.problem(index, seq, RowProblemKind::HashMismatch, detail);
        }
        match decode_record(row.record_version, &bytes) {
            Err(e) => {
                let detail = format!("the record bytes do not decode: {e}");
                self.problem(index, seq, RowProblemKind::RecordMalformed, detail);
            }
            Ok(view) => {
                let expected = event_json(seq, &row.hash, &view)
                    .ok()
                    .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok());
                match expected {
                    Some(expected) if expected == row.event => {}
                    Some(expected) => {
                        let detail = format!(
                            "the event's {} differ from the record bytes",
                            differing_fields(&expected, &row.event)
                        );
                        self.problem(index, seq, RowProblemKind::EventMismatch, detail);
                    }
                    None => {
                        let detail = "the record's context is not JSON".to_string();
                        self.problem(index, seq, RowProblemKind::RecordMalformed, detail);
                    }
                }
            }
        }
        if seq >= cp.size {
            let detail = format!("the checkpoint's tree has {} records", cp.size);
            return self.problem(index, seq, RowProblemKind::OutOfRange, detail);
        }
        let proof: Vec<Hash> = row.proof.iter().map(|h| h.0).collect();
        if !verify_inclusion(&row.hash.0, seq, cp.size, &proof, &cp.root) {
            let detail = format!(
                "hash {} is not at seq {seq} in the signed tree of {} records",
                row.hash, cp.size
            );
            self.problem(index, seq, RowProblemKind::NotIncluded, detail);
        }
    }
}

/// The names of the members in which two JSON objects differ.
fn differing_fields(expected: &serde_json::Value, got: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (expected.as_object(), got.as_object()) else {
        return "fields (it is not an object)".to_string();
    };
    let mut names: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    names.extend(b.keys().filter(|k| !a.contains_key(*k)).map(String::as_str));
    format!("fields {}", names.join(", "))
}

struct BundleVisitor<'c, 'v>(&'c mut Checker<'v>);

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, want: &str) -> Result<(), A::Error> {
    match map.next_key::<String>()? {
        Some(k) if k == want => Ok(()),
        Some(k) => Err(A::Error::custom(format!(
            "expected the member {want:?}, found {k:?} (members come in the order format, checkpoint, rows)"
        ))),
        None => Err(A::Error::custom(format!("the member {want:?} is missing"))),
    }
}

impl<'de> Visitor<'de> for BundleVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chainlog bundle (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let checker = self.0;
        expect_key(&mut map, "format")?;
        let format: String = map.next_value()?;
        if format != BUNDLE_FORMAT {
            return Err(A::Error::custom(format!(
                "unknown format {format:?} (expected {BUNDLE_FORMAT:?})"
            )));
        }
        expect_key(&mut map, "checkpoint")?;
        let note: String = map.next_value()?;
        match Checkpoint::open(&note, checker.verifier) {
            Ok(cp) => checker.checkpoint = Some(cp),
            Err(e) => {
                checker.fatal = Some(BundleError::Checkpoint(e));
                return Err(A::Error::custom("the checkpoint does not verify"));
            }
        }
        expect_key(&mut map, "rows")?;
        checker.since_row.set(0);
        map.next_value_seed(RowsSeed(checker))?;
        if let Some(k) = map.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "unexpected member {k:?} after the rows"
            )));
        }
        Ok(())
    }
}

struct RowsSeed<'c, 'v>(&'c mut Checker<'v>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<BundleRow>()? {
            self.0.since_row.set(0);
            self.0.check_row(row);
        }
        Ok(())
    }
}

/// Checks a bundle read from `reader` with the log's public key, offline:
/// the checkpoint's signature, then every row (see the module docs). Row
/// problems are in the report; an unreadable bundle or a checkpoint that
/// does not verify is an error.
pub fn check<R: Read>(reader: R, verifier: &NoteVerifier) -> Result<BundleReport, BundleError> {
    let since_row = Rc::new(Cell::new(0));
    let exceeded = Rc::new(Cell::new(false));
    let input = RowLimit {
        inner: BufReader::with_capacity(1 << 16, reader),
        since_row: since_row.clone(),
        exceeded: exceeded.clone(),
    };
    let mut checker = Checker {
        verifier,
        checkpoint: None,
        fatal: None,
        since_row,
        rows: 0,
        problems: Vec::new(),
        omitted: 0,
    };
    let mut de = serde_json::Deserializer::from_reader(input);
    let parsed = de
        .deserialize_map(BundleVisitor(&mut checker))
        .and_then(|()| de.end());
    if let Some(fatal) = checker.fatal.take() {
        return Err(fatal);
    }
    if let Err(e) = parsed {
        if e.is_io() && !exceeded.get() {
            return Err(BundleError::Io(e.into()));
        }
        return Err(BundleError::Garbled(e.to_string()));
    }
    let Some(cp) = checker.checkpoint else {
        return Err(BundleError::Garbled("no checkpoint".into()));
    };
    Ok(BundleReport {
        origin: cp.origin,
        tree_size: cp.size,
        root: hash_to_hex(&cp.root),
        signer: format!("{}+{:08x}", verifier.name(), verifier.id()),
        rows: checker.rows,
        problems: checker.problems,
        problems_omitted: checker.omitted,
    })
}
