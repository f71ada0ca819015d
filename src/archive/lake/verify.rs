//! `verify_lake`: what can be proven from the lake alone (signatures,
//! digests, row counts, seq continuity, partitions, both formats agreeing,
//! and every row's `hash` against the signed checkpoint's Merkle root),
//! and, with the log at hand, every row against the log.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::super::{sha256_hex, ArchiveError, ArchiveTarget, Bucket};
use super::jsonl::read_jsonl_gz;
use super::manifest::{
    frontier_from_hex, newest_lake_manifest, LakeFormat, LakeManifest, StoredManifest,
};
use super::parquet_file::read_parquet;
use super::rows::{export_line, LakeRow};
use crate::hash::checkpoint::{Checkpoint, NoteVerifier};
use crate::log::Log;
use crate::query::Query;

/// The largest object the checker downloads.
const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// What is wrong with the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LakeProblemKind {
    /// No manifest under `lake/manifest/`.
    NoManifest,
    /// The manifest's signature note is missing, does not verify with the
    /// key, or signs other bytes; or its checkpoint does not.
    BadSignature,
    /// The manifest does not parse, or is for another log.
    BadManifest,
    /// An object the manifest names is not in the bucket.
    ObjectMissing,
    /// An object's size or SHA-256 differs from the manifest's.
    DigestMismatch,
    /// An object does not decode, or its rows are not what the manifest
    /// says (count, seq range, partition, order).
    BadRows,
    /// Seqs are missing from, or repeated in, a format's objects.
    SeqGap,
    /// A JSON Lines row and the Parquet row of the same seq differ.
    FormatsDiffer,
    /// The rows' hashes do not make the signed checkpoint's tree.
    RootMismatch,
    /// A row differs from the log's record (with a log to compare).
    LogMismatch,
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LakeProblem {
    /// What is wrong.
    pub kind: LakeProblemKind,
    /// The object (`s3://bucket/prefix/lake/…`).
    pub object: String,
    /// A sentence for people.
    pub detail: String,
}

/// The outcome of [`verify_lake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LakeReport {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// The newest manifest's key, if any.
    pub manifest: Option<String>,
    /// The seqs the lake holds.
    pub seqs: Option<(u64, u64)>,
    /// Objects downloaded and checked.
    pub objects_checked: u64,
    /// Rows read, per format: (jsonl, parquet).
    pub rows_checked: (u64, u64),
    /// The signed checkpoint's size, when its root matched the rows.
    pub checkpoint_size: Option<u64>,
    /// Rows compared with the local log (0 without one).
    pub rows_matched_to_log: u64,
    /// Problems found.
    pub problems: Vec<LakeProblem>,
}

impl LakeReport {
    /// True when nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An object's rows, each with its line's SHA-256 (JSON Lines only).
type ObjectRows = Vec<(LakeRow, Option<[u8; 32]>)>;

/// What the checker keeps per seq (about 140 bytes a row).
#[derive(Clone, Default)]
struct Seen {
    jsonl: Option<([u8; 32], [u8; 32], [u8; 32])>, // hash, row digest, line digest
    parquet: Option<[u8; 32]>,                     // row digest
}

struct Checker<'a> {
    bucket: &'a Bucket,
    report: LakeReport,
}

impl Checker<'_> {
    fn problem(&mut self, kind: LakeProblemKind, key: &str, detail: impl Into<String>) {
        let object = self.bucket.url(key);
        self.report.problems.push(LakeProblem {
            kind,
            object,
            detail: detail.into(),
        });
    }
}

/// Checks the lake at `target` against its newest manifest, with the
/// checkpoint key `verifier`; with `log` (the exported log), also checks
/// every row against the log's record and the checkpoint against the log.
///
/// Needs memory for about 140 bytes per row of the lake.
pub fn verify_lake(
    target: &ArchiveTarget,
    verifier: &NoteVerifier,
    log: Option<&Log>,
) -> Result<LakeReport, ArchiveError> {
    use LakeProblemKind as K;
    let bucket = Bucket::connect(target, true)?;
    let mut c = Checker {
        bucket: &bucket,
        report: LakeReport {
            target: target.to_string(),
            manifest: None,
            seqs: None,
            objects_checked: 0,
            rows_checked: (0, 0),
            checkpoint_size: None,
            rows_matched_to_log: 0,
            problems: Vec::new(),
        },
    };
    let Some(StoredManifest { key, json, note }) = newest_lake_manifest(&bucket)? else {
        c.problem(
            K::NoManifest,
            "lake/manifest/",
            "no manifest: nothing in the lake can be trusted",
        );
        return Ok(c.report);
    };
    c.report.manifest = Some(key.clone());
    let Some(note) = note.and_then(|n| String::from_utf8(n).ok()) else {
        c.problem(
            K::BadSignature,
            &key,
            "the manifest has no signature note (.sig)",
        );
        return Ok(c.report);
    };
    let m = match LakeManifest::open(&json, &note, verifier, &bucket.url(&key)) {
        Ok(m) => m,
        Err(e) => {
            c.problem(K::BadSignature, &key, e.to_string());
            return Ok(c.report);
        }
    };
    c.report.seqs = Some((m.first_seq, m.last_seq));
    if let Some(log) = log {
        if log.log_id().to_string() != m.log_id {
            c.problem(
                K::BadManifest,
                &key,
                format!("the lake holds log {}, not log {}", m.log_id, log.log_id()),
            );
            return Ok(c.report);
        }
    }
    let checkpoint = match Checkpoint::open(&m.checkpoint, verifier) {
        Ok(cp) if cp.size == m.last_seq + 1 && cp.origin == m.origin => Some(cp),
        Ok(cp) => {
            c.problem(
                K::BadSignature,
                &key,
                format!(
                    "the checkpoint is for {:?} at size {}, not the manifest's range",
                    cp.origin, cp.size
                ),
            );
            None
        }
        Err(e) => {
            c.problem(K::BadSignature, &key, format!("the checkpoint: {e}"));
            None
        }
    };
    let count = usize::try_from(m.last_seq - m.first_seq + 1)
        .map_err(|_| ArchiveError::Refused("the lake is too large to check here".into()))?;
    let mut seen = vec![Seen::default(); count];
    for object in &m.objects {
        check_object(&mut c, &m, object, &mut seen)?;
    }
    // Continuity: every seq once in each format.
    for format in LakeFormat::ALL {
        let missing: Vec<u64> = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| match format {
                LakeFormat::Jsonl => s.jsonl.is_none(),
                LakeFormat::Parquet => s.parquet.is_none(),
            })
            .map(|(i, _)| m.first_seq + i as u64)
            .collect();
        if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
            c.problem(
                K::SeqGap,
                &format!("lake/{format:?}/").to_lowercase(),
                format!(
                    "{} seq(s) between {first} and {last} are in no {format:?} object",
                    missing.len()
                ),
            );
        }
    }
    let mut differ = 0;
    for (i, s) in seen.iter().enumerate() {
        if let (Some((_, digest, _)), Some(p)) = (&s.jsonl, &s.parquet) {
            if digest != p {
                differ += 1;
                if differ == 1 {
                    c.problem(
                        K::FormatsDiffer,
                        "lake/",
                        format!(
                            "seq {}: the JSON Lines row and the Parquet row differ",
                            m.first_seq + i as u64
                        ),
                    );
                }
            }
        }
    }
    // The rows' hashes against the signed checkpoint.
    let hashes: Option<Vec<[u8; 32]>> = seen.iter().map(|s| s.jsonl.map(|j| j.0)).collect();
    if let (Some(cp), Some(hashes)) = (&checkpoint, &hashes) {
        match frontier_from_hex(m.first_seq, &m.start_frontier) {
            Some(mut tree) => {
                for h in hashes {
                    tree.push(h);
                }
                let head_ok = cp.head.is_none_or(|head| hashes.last() == Some(&head.0));
                let end = frontier_from_hex(m.last_seq + 1, &m.end_frontier);
                if tree.root() == cp.root && head_ok && end.as_ref() == Some(&tree) {
                    c.report.checkpoint_size = Some(cp.size);
                } else {
                    c.problem(
                        K::RootMismatch,
                        &key,
                        format!(
                            "the rows' hashes do not make the tree the checkpoint of size {} signs",
                            cp.size
                        ),
                    );
                }
            }
            None => c.problem(K::BadManifest, &key, "the start frontier is malformed"),
        }
    }
    if let Some(log) = log {
        check_against_log(&mut c, &m, log, &seen, checkpoint.as_ref())?;
    }
    Ok(c.report)
}

fn check_object(
    c: &mut Checker<'_>,
    m: &LakeManifest,
    object: &super::manifest::LakeObject,
    seen: &mut [Seen],
) -> Result<(), ArchiveError> {
    use LakeProblemKind as K;
    let key = &object.key;
    let size = match c.bucket.head(key)? {
        None => {
            c.problem(
                K::ObjectMissing,
                key,
                "the manifest lists it; the bucket does not have it",
            );
            return Ok(());
        }
        Some(meta) => meta.size,
    };
    if size != object.bytes || size > MAX_OBJECT_BYTES {
        c.problem(
            K::DigestMismatch,
            key,
            format!("{size} bytes, the manifest says {}", object.bytes),
        );
        return Ok(());
    }
    let bytes = c.bucket.get(key)?;
    c.report.objects_checked += 1;
    let digest = sha256_hex(&bytes);
    if digest != object.sha256 {
        c.problem(
            K::DigestMismatch,
            key,
            format!("SHA-256 {digest}, the manifest says {}", object.sha256),
        );
        return Ok(());
    }
    let rows: Result<ObjectRows, _> = match object.format {
        LakeFormat::Jsonl => {
            read_jsonl_gz(&bytes).map(|r| r.into_iter().map(|(row, d)| (row, Some(d))).collect())
        }
        LakeFormat::Parquet => {
            read_parquet(bytes).map(|r| r.into_iter().map(|row| (row, None)).collect())
        }
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            c.problem(K::BadRows, key, e.to_string());
            return Ok(());
        }
    };
    if rows.len() as u64 != object.rows {
        c.problem(
            K::BadRows,
            key,
            format!("{} rows, the manifest says {}", rows.len(), object.rows),
        );
    }
    let mut previous = None;
    for (row, line) in rows {
        let wrong = if row.seq < object.first_seq || row.seq > object.last_seq {
            Some(format!("seq {} is outside the object's range", row.seq))
        } else if previous.is_some_and(|p| row.seq <= p) {
            Some(format!("seq {} is out of order", row.seq))
        } else if row.dt() != object.dt {
            Some(format!(
                "seq {} is dated {}, in partition {}",
                row.seq,
                row.dt(),
                object.dt
            ))
        } else {
            None
        };
        if let Some(wrong) = wrong {
            c.problem(K::BadRows, key, wrong);
            return Ok(());
        }
        previous = Some(row.seq);
        let slot = &mut seen[(row.seq - m.first_seq) as usize];
        let repeated = match (object.format, line) {
            (LakeFormat::Jsonl, Some(line)) => {
                c.report.rows_checked.0 += 1;
                slot.jsonl
                    .replace((row.hash.0, row.digest(), line))
                    .is_some()
            }
            _ => {
                c.report.rows_checked.1 += 1;
                slot.parquet.replace(row.digest()).is_some()
            }
        };
        if repeated {
            c.problem(
                K::SeqGap,
                key,
                format!("seq {} is in more than one object", row.seq),
            );
        }
    }
    Ok(())
}

/// Every JSON Lines row against the log's own export of the record, and
/// the signed checkpoint against the log's tree.
fn check_against_log(
    c: &mut Checker<'_>,
    m: &LakeManifest,
    log: &Log,
    seen: &[Seen],
    checkpoint: Option<&Checkpoint>,
) -> Result<(), ArchiveError> {
    use LakeProblemKind as K;
    if let Some(cp) = checkpoint {
        let mut prover = log.prover()?;
        if let Err(e) = prover.check_checkpoint(cp) {
            c.problem(
                K::LogMismatch,
                &LakeManifest::key(m.last_seq),
                format!("the checkpoint does not match the log: {e}"),
            );
        }
    }
    let query = Query {
        from_seq: Some(m.first_seq),
        limit: Some(m.last_seq - m.first_seq + 1),
        ..Query::default()
    };
    let mut line = Vec::new();
    let mut mismatched = Vec::new();
    let mut matched = 0;
    log.query(&query)?
        .try_for_each_view(|seq, hash, view| -> Result<(), ArchiveError> {
            export_line(&mut line, seq, &hash, view)?;
            let ours: [u8; 32] = Sha256::digest(line.strip_suffix(b"\n").unwrap_or(&line)).into();
            let lake = seen.get((seq - m.first_seq) as usize).and_then(|s| s.jsonl);
            if lake.map(|l| l.2) == Some(ours) {
                matched += 1;
            } else {
                mismatched.push(seq);
            }
            Ok(())
        })?;
    c.report.rows_matched_to_log = matched;
    let in_log = matched + mismatched.len() as u64;
    if let Some(first) = mismatched.first() {
        c.problem(
            K::LogMismatch,
            "lake/jsonl/",
            format!(
                "{} row(s) differ from the log's records, the first at seq {first}",
                mismatched.len()
            ),
        );
    }
    if in_log < m.last_seq - m.first_seq + 1 {
        c.problem(
            K::LogMismatch,
            "lake/",
            format!(
                "the log holds {in_log} of the lake's {} seqs (retention, or another log)",
                m.last_seq - m.first_seq + 1
            ),
        );
    }
    Ok(())
}
