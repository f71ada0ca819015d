//! Writing a pack: the range, the trees and their proofs, then the files one
//! after another into a streamed zip, each hashed as it is written.

use std::io::{self, Write};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::manifest::{
    sample_seqs, seal, FileEntry, Manifest, PeriodManifest, SampleManifest, TreeManifest,
    MANIFEST_FORMAT,
};
use super::report::{self, ReportInput};
use super::stats::{listed, PeriodStats};
use super::*;
use crate::event::{decode_record, RecordView, Timestamp};
use crate::hash::chain::ChainHash;
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::merkle::Hash;
use crate::hash::proof;
use crate::log::Log;
use crate::query::export::{ExportFormat, ExportOptions, Exporter};
use crate::query::proofs::{hash_to_hex, InclusionProof, ProveError};
use crate::query::prover::Prover;
use crate::query::{EventPattern, Filter, Match, Query};

/// What to put in a pack.
#[derive(Debug, Clone)]
pub struct EvidenceOptions {
    /// Start of the period (event time, inclusive).
    pub since: Timestamp,
    /// End of the period (event time, exclusive).
    pub until: Timestamp,
    /// Inclusion proofs to sample (at most [`MAX_SAMPLE`]). Default 32.
    pub sample: u64,
    /// The sample's seed.
    pub seed: u64,
    /// Checkpoint origin prefix (`<prefix>/<log id>`). Default `chainlog`.
    pub origin_prefix: String,
    /// The newest witnessed checkpoint (a cosigned note), when there is one.
    pub witnessed_checkpoint: Option<String>,
    /// Who makes the pack, as the manifest names them.
    pub generated_by: String,
    /// Where the log is archived, when it is: asked for the archive's state
    /// of the pack's seqs.
    pub archive: Option<ArchiveState>,
}

/// The archive's state of the seqs `[first, end)` as JSON, found by the
/// caller (the archive is a module of this one's rank, so it is handed in:
/// the CLI and the server pass `archive::period_archive`, or the error it
/// gave as `{"error": …}`).
#[derive(Clone)]
pub struct ArchiveState(pub Arc<dyn Fn(u64, u64) -> Value + Send + Sync>);

impl std::fmt::Debug for ArchiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveState(..)")
    }
}

impl EvidenceOptions {
    /// A period, with the default sample (32 proofs, seed from the clock).
    pub fn new(since: Timestamp, until: Timestamp) -> Self {
        EvidenceOptions {
            since,
            until,
            sample: 32,
            seed: Timestamp::now().unix_nanos() as u64,
            origin_prefix: "chainlog".into(),
            witnessed_checkpoint: None,
            generated_by: "chainlog evidence".into(),
            archive: None,
        }
    }
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSummary {
    /// The first row's seq.
    pub first_seq: u64,
    /// One past the last row's seq.
    pub end_seq: u64,
    /// Rows whose time is inside the period.
    pub rows_in_period: u64,
    /// Failed rows.
    pub failures: u64,
    /// Files in the pack, the manifest and its seal included.
    pub files: usize,
    /// Whether `report.pdf` is in it.
    pub pdf: bool,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The zip being written and the entries written so far.
struct PackWriter<W: Write> {
    zip: ZipWriter<zip::write::StreamWriter<W>>,
    files: Vec<FileEntry>,
}

impl<W: Write> PackWriter<W> {
    fn file<T>(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> Result<T, EvidenceError>,
    ) -> Result<T, EvidenceError> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(0o644);
        self.zip.start_file(name, options)?;
        let mut out = Hashing {
            inner: &mut self.zip,
            sha: Sha256::new(),
            bytes: 0,
        };
        let value = write(&mut out)?;
        let (sha, bytes) = (out.sha.finalize(), out.bytes);
        self.files.push(FileEntry {
            name: name.to_string(),
            sha256: hex(&sha),
            bytes,
        });
        Ok(value)
    }

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), EvidenceError> {
        self.file(name, |out| Ok(out.write_all(bytes)?))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, EvidenceError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::from)?;
    text.push(b'\n');
    Ok(text)
}

/// A tree of the log, signed.
struct Tree {
    size: u64,
    root: Hash,
    head: Option<ChainHash>,
    note: String,
}

impl Tree {
    fn manifest(&self, file: &str) -> TreeManifest {
        TreeManifest {
            file: file.to_string(),
            size: self.size,
            root: hash_to_hex(&self.root),
            head: self.head.map(|h| h.to_hex()),
        }
    }
}

fn signed_tree(
    prover: &mut Prover,
    origin: &str,
    size: u64,
    signer: &NoteSigner,
) -> Result<Tree, EvidenceError> {
    let root = proof::tree_root(prover, size).map_err(crate::query::proofs::ProveError::from)?;
    prover.check_root(size, &root)?;
    let head = match size.checked_sub(1) {
        None => None,
        Some(last) if last >= prover.first_seq() => Some(prover.stored_hash(last)?),
        Some(_) => Some(prover.prev_hash(size)?),
    };
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        size,
        root,
        head,
    };
    let note = checkpoint.sign(signer).map_err(EvidenceError::Sign)?;
    Ok(Tree {
        size,
        root,
        head,
        note,
    })
}

/// The consistency proof between the witnessed checkpoint's tree and the
/// end checkpoint's, the smaller first (`None` when they are of one size:
/// then they must be the same tree). A witnessed checkpoint of another
/// log, or one the log's own tree does not match (a fork), is refused.
fn witnessed_link(
    prover: &mut Prover,
    signer: &NoteSigner,
    origin: &str,
    note: &str,
    end: &Tree,
) -> Result<Option<crate::query::proofs::ConsistencyProof>, EvidenceError> {
    let witnessed = Checkpoint::open(note, &signer.verifier())
        .map_err(|e| EvidenceError::BadWitnessed(e.to_string()))?;
    if witnessed.origin != origin {
        return Err(EvidenceError::BadWitnessed(format!(
            "its origin is {:?}, the pack's {origin:?}",
            witnessed.origin
        )));
    }
    let (w, e) = ((witnessed.size, witnessed.root), (end.size, end.root));
    let size = prover.tree_head().size;
    if w.0 > size {
        return Err(EvidenceError::BadWitnessed(format!(
            "the witnesses saw {} records, the log has {size}: records were lost after they cosigned",
            w.0
        )));
    }
    let proof = match w.0.cmp(&e.0) {
        std::cmp::Ordering::Equal if w.1 == e.1 => return Ok(None),
        std::cmp::Ordering::Equal => Err(ProveError::Mismatch(String::new())),
        std::cmp::Ordering::Less => prover.consistency(w.0, &w.1, e.0, &e.1),
        std::cmp::Ordering::Greater => prover.consistency(e.0, &e.1, w.0, &w.1),
    };
    match proof {
        Ok(proof) => Ok(Some(proof)),
        // The hashes the proof needs are gone (retention keeps the tiles,
        // so only if they were lost): the pack carries the witnessed
        // checkpoint unlinked, and the checker says so.
        Err(ProveError::Unavailable(_)) => Ok(None),
        Err(ProveError::Mismatch(_)) => Err(EvidenceError::BadWitnessed(format!(
            "its tree of {} records is not the log's: the log was forked or rewritten",
            w.0
        ))),
        Err(other) => Err(other.into()),
    }
}

/// The seqs of the first and last record whose event time is in the period.
fn period_range(
    log: &Log,
    since: Timestamp,
    until: Timestamp,
) -> Result<Option<(u64, u64)>, EvidenceError> {
    let query = Query {
        filter: Filter {
            since: Some(since),
            until: Some(until),
            ..Filter::default()
        },
        ..Query::default()
    };
    let mut range: Option<(u64, u64)> = None;
    log.query(&query)?
        .try_for_each_view(|seq, _, _| -> Result<(), crate::Error> {
            range = Some(range.map_or((seq, seq), |(first, _)| (first, seq)));
            Ok(())
        })?;
    Ok(range)
}

/// Calls `f` with each record of `start..end`, in order, failing on a gap.
fn each_row(
    log: &Log,
    start: u64,
    end: u64,
    f: &mut dyn FnMut(&Match, &RecordView<'_>) -> Result<(), EvidenceError>,
) -> Result<(), EvidenceError> {
    if start >= end {
        return Ok(());
    }
    let query = Query {
        from_seq: Some(start),
        ..Query::default()
    };
    let mut expected = start;
    for m in log.query(&query)? {
        let m = m?;
        if m.seq >= end {
            break;
        }
        if m.seq != expected {
            return Err(EvidenceError::ChainBroken { seq: expected });
        }
        let view = decode_record(m.version, &m.record).map_err(|e| EvidenceError::BadRecord {
            seq: m.seq,
            reason: e.to_string(),
        })?;
        f(&m, &view)?;
        expected += 1;
    }
    if expected != end {
        return Err(EvidenceError::ChainBroken { seq: expected });
    }
    Ok(())
}

fn export_rows(
    log: &Log,
    start: u64,
    end: u64,
    format: ExportFormat,
    out: &mut dyn Write,
    mut also: impl FnMut(&Match, &RecordView<'_>) -> Result<(), EvidenceError>,
) -> Result<(), EvidenceError> {
    let mut exporter = Exporter::new(out, ExportOptions::new(format))?;
    each_row(log, start, end, &mut |m, view| {
        exporter
            .write_view(m.seq, &m.hash, view)
            .map_err(|e| EvidenceError::BadRecord {
                seq: m.seq,
                reason: e.to_string(),
            })?;
        also(m, view)
    })?;
    exporter.finish()?;
    Ok(())
}

/// The engine's records (`log.*`) below `end`, and the current hold.
fn retention_state(
    log: &Log,
    prover: &Prover,
    start: u64,
    end: u64,
    archive: Option<&ArchiveState>,
) -> Result<Value, EvidenceError> {
    let pattern: EventPattern = "log.*"
        .parse()
        .map_err(|e| EvidenceError::BadRequest(format!("{e}")))?;
    let query = Query {
        filter: Filter {
            event_types: vec![pattern],
            ..Filter::default()
        },
        ..Query::default()
    };
    let (mut retention, mut holds, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let mut held_at_start = false;
    for m in log.query(&query)? {
        let m = m?;
        if m.seq >= end {
            break;
        }
        let view = m.view()?;
        let row = listed(m.seq, &view);
        match view.event_type {
            crate::retention::RETENTION_EVENT => retention.push(row),
            crate::retention::HOLD_SET_EVENT | crate::retention::HOLD_RELEASED_EVENT => {
                if m.seq < start {
                    held_at_start = view.event_type == crate::retention::HOLD_SET_EVENT;
                }
                holds.push(row);
            }
            _ => other.push(row),
        }
    }
    let first_seq = prover.first_seq();
    let oldest = Query {
        from_seq: Some(first_seq),
        limit: Some(1),
        ..Query::default()
    };
    let mut oldest_time = None;
    for m in log.query(&oldest)? {
        let m = m?;
        let view = m.view()?;
        oldest_time = Some(view.received_at.unwrap_or(view.timestamp));
    }
    let now = Timestamp::now();
    let retained_days = oldest_time
        .map(|t| (now.unix_nanos().saturating_sub(t.unix_nanos())) / (86_400 * 1_000_000_000));
    Ok(json!({
        "log": {
            "first_retained_seq": first_seq,
            "records_now": prover.tree_head().size,
            "oldest_retained_received_at": oldest_time.map(|t| t.to_string()),
            "retained_days": retained_days,
        },
        "legal_hold": {
            "now": log.hold()?,
            "held_at_period_start": held_at_start,
            "changes": holds,
        },
        "retention": {
            "runs": retention,
            "note": "each run deleted whole sealed segments after recording the seq and hash the retained log starts from",
        },
        "other_engine_records": other,
        "archive": match archive {
            Some(ArchiveState(state)) => state(start, end),
            None => json!({
                "configured": false,
                "note": "no archive was named for this pack (chainlog evidence --archive s3://BUCKET/PREFIX, or serve --archive-to): the pack says nothing about archived copies or Object Lock",
            }),
        },
        "pci_dss_10_5_1": {
            "twelve_months_retained": retained_days.map(|d| d >= 365),
            "three_months_immediately_available": retained_days.map(|d| d >= 90),
            "period_immediately_available": true,
        },
    }))
}

/// Writes a pack of `log` for the period in `options` to `out`, signing
/// its checkpoints and manifest with `signer` (the log's checkpoint key).
/// `render_pdf` turns the report's HTML into a PDF when a renderer is
/// there (`None`: no `report.pdf`); `progress` is told the rows written
/// (three passes over the rows: JSON Lines, CSV, records).
pub fn build<W: Write>(
    log: &Log,
    signer: &NoteSigner,
    options: &EvidenceOptions,
    out: W,
    render_pdf: &dyn Fn(&str) -> Option<Vec<u8>>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PackSummary, EvidenceError> {
    if options.since >= options.until {
        return Err(EvidenceError::BadRequest(format!(
            "the period is empty: since {} is not before until {}",
            options.since, options.until
        )));
    }
    if options.sample > MAX_SAMPLE {
        return Err(EvidenceError::BadRequest(format!(
            "a sample of {} proofs is more than {MAX_SAMPLE}",
            options.sample
        )));
    }
    let origin = format!("{}/{}", options.origin_prefix, log.log_id());
    let range = period_range(log, options.since, options.until)?;
    let mut prover = log.prover()?;
    let (start, end) = match range {
        Some((first, last)) => (first, last + 1),
        None => {
            let size = prover.tree_head().size;
            (size, size)
        }
    };
    let start_tree = signed_tree(&mut prover, &origin, start, signer)?;
    let end_tree = signed_tree(&mut prover, &origin, end, signer)?;
    let consistency = prover.consistency(start, &start_tree.root, end, &end_tree.root)?;
    let sample = sample_seqs(options.seed, options.sample, start, end);
    let proofs = sample
        .iter()
        .map(|&seq| prover.inclusion(seq, end, &end_tree.root))
        .collect::<Result<Vec<InclusionProof>, _>>()?;
    let state = retention_state(log, &prover, start, end, options.archive.as_ref())?;

    let mut pack = PackWriter {
        zip: ZipWriter::new_stream(out),
        files: Vec::new(),
    };
    let key = format!("{}\n", signer.verifier().to_text());
    pack.bytes(KEY_FILE, key.as_bytes())?;
    pack.bytes(START_FILE, start_tree.note.as_bytes())?;
    pack.bytes(END_FILE, end_tree.note.as_bytes())?;
    if let Some(witnessed) = &options.witnessed_checkpoint {
        pack.bytes(WITNESSED_FILE, witnessed.as_bytes())?;
        let link = witnessed_link(&mut prover, signer, &origin, witnessed, &end_tree)?;
        if let Some(proof) = link {
            pack.bytes(WITNESSED_CONSISTENCY_FILE, &pretty(&proof)?)?;
        }
    }
    pack.bytes(CONSISTENCY_FILE, &pretty(&consistency)?)?;
    let sample_json = json!({
        "seed": options.seed,
        "tree_size": end,
        "root": hash_to_hex(&end_tree.root),
        "proofs": proofs,
    });
    pack.bytes(SAMPLE_FILE, &pretty(&sample_json)?)?;

    let total = 3 * (end - start);
    let mut done = 0u64;
    let mut stats = PeriodStats::default();
    let genesis = ChainHash::genesis(&log.log_id());
    let mut prev = start_tree.head.unwrap_or(genesis);
    let (since, until) = (options.since, options.until);
    pack.file(EVENTS_JSONL_FILE, |out| {
        export_rows(log, start, end, ExportFormat::JsonLines, out, |m, view| {
            if prev.next(m.seq, &m.record) != m.hash {
                return Err(EvidenceError::ChainBroken { seq: m.seq });
            }
            prev = m.hash;
            stats.add(
                m.seq,
                view,
                view.timestamp >= since && view.timestamp < until,
            );
            done += 1;
            progress(done, total);
            Ok(())
        })
    })?;
    if end > start && Some(prev) != end_tree.head {
        return Err(EvidenceError::ChainBroken { seq: end - 1 });
    }
    pack.file(EVENTS_CSV_FILE, |out| {
        export_rows(log, start, end, ExportFormat::Csv, out, |_, _| {
            done += 1;
            progress(done, total);
            Ok(())
        })
    })?;
    pack.file(RECORDS_FILE, |out| {
        let mut line = Vec::with_capacity(1024);
        each_row(log, start, end, &mut |m, _| {
            line.clear();
            serde_json::to_writer(
                &mut line,
                &json!({
                    "seq": m.seq,
                    "record_version": m.version,
                    "record": B64.encode(&m.record),
                    "hash": m.hash.to_hex(),
                }),
            )
            .map_err(io::Error::from)?;
            line.push(b'\n');
            out.write_all(&line)?;
            done += 1;
            progress(done, total);
            Ok(())
        })
    })?;
    pack.bytes(STATE_FILE, &pretty(&state)?)?;
    pack.bytes(ACCESS_FILE, &pretty(&stats.access)?)?;

    let period = PeriodManifest {
        since: options.since.to_string(),
        until: options.until.to_string(),
        first_seq: start,
        end_seq: end,
        rows: end - start,
        rows_in_period: stats.rows_in_period,
    };
    let html = report::render(&ReportInput {
        origin: &origin,
        key: signer.verifier().to_text(),
        period: &period,
        start_root: hash_to_hex(&start_tree.root),
        end_root: hash_to_hex(&end_tree.root),
        sample: proofs.len() as u64,
        seed: options.seed,
        witnessed: options.witnessed_checkpoint.is_some(),
        stats: &stats,
        state: &state,
        generated_at: Timestamp::now().to_string(),
    });
    pack.bytes(REPORT_FILE, html.as_bytes())?;
    let pdf = render_pdf(&html);
    if let Some(pdf) = &pdf {
        pack.bytes(REPORT_PDF_FILE, pdf)?;
    }
    pack.bytes(VERIFY_FILE, VERIFY_MD.as_bytes())?;
    pack.bytes(SCRIPT_FILE, VERIFY_PACK_PY.as_bytes())?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        origin: origin.clone(),
        generated_at: Timestamp::now().to_string(),
        generated_by: options.generated_by.clone(),
        period,
        start: start_tree.manifest(START_FILE),
        end: end_tree.manifest(END_FILE),
        witnessed_checkpoint: options
            .witnessed_checkpoint
            .as_ref()
            .map(|_| WITNESSED_FILE.to_string()),
        sample: SampleManifest {
            file: SAMPLE_FILE.into(),
            seed: options.seed,
            count: proofs.len() as u64,
        },
        files: std::mem::take(&mut pack.files),
    };
    let manifest_bytes = pretty(&manifest)?;
    let manifest_sha = hex(&Sha256::digest(&manifest_bytes));
    let options_zip = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    pack.zip.start_file(MANIFEST_FILE, options_zip)?;
    pack.zip.write_all(&manifest_bytes)?;
    let sealed = seal(signer, &origin, &manifest_sha).map_err(EvidenceError::Sign)?;
    pack.zip.start_file(SEAL_FILE, options_zip)?;
    pack.zip.write_all(sealed.as_bytes())?;
    let mut inner = pack.zip.finish()?.into_inner();
    inner.flush()?;
    Ok(PackSummary {
        first_seq: start,
        end_seq: end,
        rows_in_period: stats.rows_in_period,
        failures: stats.failures,
        files: manifest.files.len() + 2,
        pdf: pdf.is_some(),
    })
}
