//! `export_lake`: one run of the nightly export, in the order it happens:
//! read the previous manifest, claim the run's seq range (the run marker),
//! stream the new records into date partitions, write each partition's
//! objects create-only, then the signed checkpoint, the manifest's
//! signature note, and last the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::upload::put_exact;
use super::super::{ArchiveError, ArchiveTarget, Bucket, Created};
use super::jsonl::gzip_lines;
use super::manifest::{
    frontier_from_hex, frontier_hex, newest_lake_manifest, run_marker, run_marker_key, LakeFormat,
    LakeManifest, LakeObject, RunMarker, StoredManifest, LAKE_MANIFEST_FORMAT,
};
use super::parquet_file::write_parquet;
use super::rows::{export_line, partition_date, LakeRow};
use crate::event::Timestamp;
use crate::format::segment;
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::hash::merkle::Frontier;
use crate::log::{Log, Options};
use crate::query::Query;
use crate::storage::{FsStorage, Storage};
use crate::Error;

/// How to export.
#[derive(Debug, Clone)]
pub struct LakeOptions {
    /// Signs the checkpoint and the manifest (the log's checkpoint key).
    pub signer: NoteSigner,
    /// The origin prefix of the checkpoint (`<prefix>/<log id>`). Default
    /// `chainlog`, as `chainlog checkpoint`.
    pub origin_prefix: String,
    /// Write with `If-None-Match: *` (true, the default), or HEAD before
    /// each PUT for servers without conditional PUTs.
    pub conditional_put: bool,
    /// Rows per object at most. Default 100,000.
    pub max_rows_per_object: usize,
    /// Rows held in memory at most, summed over partitions, in bytes
    /// (roughly twice the rows' text); past it, every partition is written
    /// out. Default 64 MiB.
    pub max_buffered_bytes: usize,
}

impl LakeOptions {
    /// The defaults, signing with `signer`.
    pub fn new(signer: NoteSigner) -> Self {
        LakeOptions {
            signer,
            origin_prefix: "chainlog".into(),
            conditional_put: true,
            max_rows_per_object: 100_000,
            max_buffered_bytes: 64 << 20,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LakeOutcome {
    /// The log's id.
    pub log_id: String,
    /// The seqs this run exported, if any.
    pub exported: Option<(u64, u64)>,
    /// Rows this run exported (each in both formats).
    pub rows: u64,
    /// Objects written by this run.
    pub objects_written: usize,
    /// Bytes written by this run, per format: (jsonl.gz, parquet).
    pub bytes_written: (u64, u64),
    /// Objects an interrupted run had written, found identical and adopted.
    pub adopted: Vec<String>,
    /// The manifest written by this run.
    pub manifest: Option<String>,
    /// The seqs in the lake after the run.
    pub lake_seqs: Option<(u64, u64)>,
}

/// One partition's rows waiting to be written.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    rows: Vec<LakeRow>,
    bytes: usize,
}

/// The run in progress.
struct Run<'a> {
    bucket: &'a Bucket,
    options: &'a LakeOptions,
    partitions: BTreeMap<String, Pending>,
    buffered: usize,
    objects: Vec<LakeObject>,
    outcome: LakeOutcome,
}

impl Run<'_> {
    fn add(&mut self, dt: String, line: &[u8], row: LakeRow) -> Result<(), ArchiveError> {
        let size = line.len() + row.buffered_bytes();
        let part = self.partitions.entry(dt.clone()).or_default();
        part.lines.extend_from_slice(line);
        part.rows.push(row);
        part.bytes += size;
        self.buffered += size;
        if part.rows.len() >= self.options.max_rows_per_object {
            self.flush(&dt)?;
        }
        if self.buffered > self.options.max_buffered_bytes {
            let all: Vec<String> = self.partitions.keys().cloned().collect();
            for dt in all {
                self.flush(&dt)?;
            }
        }
        Ok(())
    }

    /// Writes partition `dt`'s rows as one object of each format.
    fn flush(&mut self, dt: &str) -> Result<(), ArchiveError> {
        let Some(part) = self.partitions.remove(dt) else {
            return Ok(());
        };
        self.buffered -= part.bytes;
        let (Some(first), Some(last)) = (part.rows.first(), part.rows.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        let jsonl = gzip_lines(&part.lines).map_err(|e| ArchiveError::io("compressing rows", e))?;
        let parquet = write_parquet(&part.rows).map_err(|e| {
            ArchiveError::Refused(format!(
                "writing the Parquet object of {dt}, seqs {first}..={last}: {e}"
            ))
        })?;
        for (format, bytes) in [(LakeFormat::Jsonl, jsonl), (LakeFormat::Parquet, parquet)] {
            let key = format.object_key(dt, first, last);
            let mut tampered = Vec::new();
            let (entry, wrote) = put_exact(self.bucket, &key, bytes, &mut tampered)?;
            if !tampered.is_empty() {
                return Err(ArchiveError::Tampered(tampered));
            }
            if wrote {
                self.outcome.objects_written += 1;
                match format {
                    LakeFormat::Jsonl => self.outcome.bytes_written.0 += entry.bytes,
                    LakeFormat::Parquet => self.outcome.bytes_written.1 += entry.bytes,
                }
            } else {
                self.outcome.adopted.push(key.clone());
            }
            self.objects.push(LakeObject {
                key,
                format,
                dt: dt.to_string(),
                first_seq: first,
                last_seq: last,
                rows: part.rows.len() as u64,
                bytes: entry.bytes,
                sha256: entry.sha256,
            });
        }
        Ok(())
    }
}

/// The first local segment's base seq and the tree over the records before
/// it (from its header's link block).
fn first_segment(log_dir: &Path) -> Result<(u64, Frontier), ArchiveError> {
    let names = FsStorage.list(log_dir).map_err(|e| Error::io(log_dir, e))?;
    let base = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .min()
        .ok_or_else(|| Error::NotFound(log_dir.to_path_buf()))?;
    if base == 0 {
        return Ok((0, Frontier::new()));
    }
    let (name, file) = segment::open_for_reading(&FsStorage, log_dir, base)?;
    let header = segment::read_header(&*file, &name)?;
    Ok((base, segment::read_start_frontier(&*file, &name, &header)?))
}

/// Writes a small object that is never rewritten (a run marker, a
/// signature note, a manifest); one already there must be identical.
fn put_small(bucket: &Bucket, key: &str, bytes: Vec<u8>) -> Result<bool, ArchiveError> {
    let mut tampered = Vec::new();
    let (_, wrote) = put_exact(bucket, key, bytes, &mut tampered)?;
    if tampered.is_empty() {
        Ok(wrote)
    } else {
        Err(ArchiveError::Tampered(tampered))
    }
}

/// Exports the records of the log in `log_dir` that the lake at `target`
/// (under `PREFIX/lake/`) does not hold yet, as gzip JSON Lines and Parquet
/// objects partitioned by date, then writes a signed manifest of the whole
/// lake. `progress` is called with (rows done, rows this run exports).
///
/// Safe beside a running writer (the log is opened for reading), and safe
/// to rerun: a run that was interrupted is finished by the next one, which
/// writes the same objects (its range is fixed by the run marker) and
/// adopts those already there. Fails with [`ArchiveError::Tampered`] when
/// an object or manifest already there differs from what this run writes,
/// and refuses to continue a lake whose newest manifest is not signed by
/// `options.signer`'s key.
pub fn export_lake(
    log_dir: &Path,
    target: &ArchiveTarget,
    options: &LakeOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LakeOutcome, ArchiveError> {
    let log = Log::open(log_dir, Options::for_reading())?;
    let log_id = log.log_id().to_string();
    let origin = format!("{}/{log_id}", options.origin_prefix);
    let bucket = Bucket::connect(target, options.conditional_put)?;
    let verifier = options.signer.verifier();
    let previous = match newest_lake_manifest(&bucket)? {
        None => None,
        Some(StoredManifest { key, json, note }) => {
            let note = note
                .and_then(|n| String::from_utf8(n).ok())
                .ok_or_else(|| {
                    ArchiveError::Tampered(vec![format!(
                        "{} has no signature note",
                        bucket.url(&key)
                    )])
                })?;
            let manifest = LakeManifest::open(&json, &note, &verifier, &bucket.url(&key))
                .map_err(|e| ArchiveError::Tampered(vec![format!("{}: {e}", bucket.url(&key))]))?;
            if manifest.log_id != log_id {
                return Err(ArchiveError::WrongLog {
                    target: target.to_string(),
                    archived: manifest.log_id,
                    local: log_id,
                });
            }
            Some(manifest)
        }
    };
    let (first_base, first_frontier) = first_segment(log_dir)?;
    let start_frontier = match &previous {
        Some(m) => m.start_frontier.clone(),
        None => frontier_hex(&first_frontier),
    };
    let (next, mut frontier, lake_first) = match &previous {
        Some(m) => {
            let frontier = frontier_from_hex(m.last_seq + 1, &m.end_frontier).ok_or_else(|| {
                ArchiveError::Refused("the previous manifest's frontier is malformed".into())
            })?;
            (m.last_seq + 1, frontier, m.first_seq)
        }
        None => (first_base, first_frontier, first_base),
    };
    if next < first_base {
        return Err(ArchiveError::Refused(format!(
            "the lake ends at seq {}, but the log now starts at seq {first_base}: records were deleted by retention before they were exported; export this log under a new prefix",
            next.saturating_sub(1)
        )));
    }
    let size = log.tree_head()?.size;
    let outcome = LakeOutcome {
        log_id: log_id.clone(),
        exported: None,
        rows: 0,
        objects_written: 0,
        bytes_written: (0, 0),
        adopted: Vec::new(),
        manifest: None,
        lake_seqs: previous.as_ref().map(|m| (m.first_seq, m.last_seq)),
    };
    // The run's range: an interrupted run's (so that this one writes the
    // same objects), else everything up to the log's end now.
    let marker = match run_marker(&bucket, next)? {
        Some(marker) => marker,
        None if size <= next => return Ok(outcome),
        None => {
            let marker = RunMarker {
                first_seq: next,
                last_seq: size - 1,
                started_at: Timestamp::now(),
            };
            let bytes = serde_json::to_vec(&marker)
                .map_err(|e| ArchiveError::Refused(format!("the run marker: {e}")))?;
            match bucket.put_new(&run_marker_key(next), bytes)? {
                Created::New => marker,
                // A concurrent run claimed the range first: do the same.
                Created::AlreadyThere => run_marker(&bucket, next)?
                    .ok_or_else(|| ArchiveError::Refused("the run marker vanished".into()))?,
            }
        }
    };
    let end = marker.last_seq;
    if end >= size {
        return Err(ArchiveError::Tampered(vec![format!(
            "a run marker says the log had records up to seq {end}, but it has {size} records now: the log was truncated or replaced"
        )]));
    }
    let total = end - next + 1;
    let mut run = Run {
        bucket: &bucket,
        options,
        partitions: BTreeMap::new(),
        buffered: 0,
        objects: previous
            .as_ref()
            .map(|m| m.objects.clone())
            .unwrap_or_default(),
        outcome,
    };
    let query = Query {
        from_seq: Some(next),
        limit: Some(total),
        ..Query::default()
    };
    let mut expected = next;
    let mut head = None;
    let mut line = Vec::with_capacity(4096);
    log.query(&query)?
        .try_for_each_view(|seq, hash, view| -> Result<(), ArchiveError> {
            if seq != expected {
                return Err(ArchiveError::Refused(format!(
                    "the log has no record {expected} (the next is {seq}): it was deleted before it was exported"
                )));
            }
            expected += 1;
            frontier.push(&hash.0);
            head = Some(hash);
            export_line(&mut line, seq, &hash, view)?;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let row = LakeRow::from_json_line(text, 0)
                .map_err(|e| ArchiveError::Refused(format!("record {seq}: {e}")))?;
            run.add(partition_date(view.timestamp), &line, row)?;
            progress(expected - next, total);
            Ok(())
        })?;
    if expected != end + 1 {
        return Err(ArchiveError::Refused(format!(
            "the log ended at seq {} while exporting up to seq {end}",
            expected.saturating_sub(1)
        )));
    }
    let all: Vec<String> = run.partitions.keys().cloned().collect();
    for dt in all {
        run.flush(&dt)?;
    }
    // The root computed from the rows is the log's own tree when the run
    // reaches the log's end: check it, for free.
    if end + 1 == size {
        let tree = log.tree_head()?;
        if tree.size == size && tree.root != frontier.root() {
            return Err(ArchiveError::Log(Error::Corrupted {
                file: log_dir.display().to_string(),
                offset: 0,
                reason: "the tree over the exported rows' hashes differs from the log's".into(),
            }));
        }
    }
    let checkpoint = Checkpoint {
        origin: origin.clone(),
        size: end + 1,
        root: frontier.root(),
        head,
    }
    .sign(&options.signer)
    .map_err(|e| ArchiveError::Refused(format!("signing the checkpoint: {e}")))?;
    let manifest = LakeManifest {
        format: LAKE_MANIFEST_FORMAT.into(),
        log_id,
        origin,
        first_seq: lake_first,
        last_seq: end,
        started_at: marker.started_at,
        start_frontier,
        end_frontier: frontier_hex(&frontier),
        checkpoint,
        objects: run.objects,
    };
    let (json, note) = manifest.sign(&options.signer)?;
    let mut outcome = run.outcome;
    put_small(
        &bucket,
        &LakeManifest::signature_key(end),
        note.into_bytes(),
    )?;
    put_small(&bucket, &LakeManifest::key(end), json)?;
    outcome.exported = Some((next, end));
    outcome.rows = total;
    outcome.manifest = Some(LakeManifest::key(end));
    outcome.lake_seqs = Some((lake_first, end));
    Ok(outcome)
}
