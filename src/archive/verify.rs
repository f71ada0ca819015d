//! `verify_archive`: the library's verifier run over the bucket, plus the
//! manifest's digests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::manifest::newest_manifest;
use super::{ArchiveError, ArchiveTarget, Bucket, BucketStorage};
use crate::verify::{verify_dir_with, Report, VerifyOptions};
use crate::Error;

/// What is wrong with an archived object, beyond what the chain shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArchiveProblemKind {
    /// The archive has no manifest: its objects' digests cannot be checked
    /// (a first archive run that was interrupted, or a deleted manifest).
    NoManifest,
    /// An object the manifest names is not in the bucket.
    ObjectMissing,
    /// An object has another size than the manifest records.
    SizeMismatch,
    /// An object's SHA-256 differs from the manifest's.
    DigestMismatch,
    /// The manifest is for another log than the segments.
    WrongLog,
}

/// One problem with the archive's objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveProblem {
    /// What is wrong.
    pub kind: ArchiveProblemKind,
    /// The object (`s3://bucket/prefix/name`).
    pub object: String,
    /// A sentence for people.
    pub detail: String,
}

/// The outcome of verifying an archive: the chain report (as for a local
/// log) and the check of every object against the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    /// The verifier's report over the archived segments.
    #[serde(flatten)]
    pub report: Report,
    /// The archive's own checks.
    pub archive: ArchiveSummary,
}

/// The manifest side of an [`ArchiveReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// The newest manifest's key, if any.
    pub manifest: Option<String>,
    /// Segments the manifest lists.
    pub manifest_segments: u64,
    /// Objects whose SHA-256 was checked against the manifest.
    pub objects_checked: u64,
    /// Bytes downloaded for objects the verifier did not read (indexes).
    pub extra_bytes: u64,
    /// Problems found.
    pub problems: Vec<ArchiveProblem>,
}

impl ArchiveReport {
    /// True when the chain is intact and every object matches the manifest.
    pub fn is_intact(&self) -> bool {
        self.report.is_intact() && self.archive.problems.is_empty()
    }
}

/// Verifies the archive at `target` without a local copy: the library's
/// verifier ([`verify_dir_with`], with `options`, its checkpoint included)
/// reads the segments through a [`BucketStorage`], and every object the
/// newest manifest names is checked for presence, size and SHA-256 (the
/// segments' digests are computed while the verifier reads them).
///
/// An `Err` means the archive could not be read (network, credentials, no
/// archive); every kind of damage is a problem in the report instead.
pub fn verify_archive(
    target: &ArchiveTarget,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveReport, ArchiveError> {
    let bucket = Arc::new(Bucket::connect(target, true)?);
    // The manifest first: a wrong credential fails here, with a clear error.
    let manifest = newest_manifest(&bucket)?;
    let listed: HashMap<String, u64> = bucket
        .list("")?
        .into_iter()
        .map(|(name, meta)| (name, meta.size))
        .collect();
    let storage = BucketStorage::new(bucket.clone());
    let report = match verify_dir_with(&storage, Path::new(""), options, progress) {
        Ok(report) => report,
        Err(Error::NotFound(_)) => return Err(ArchiveError::NoArchive(target.to_string())),
        Err(e) => return Err(e.into()),
    };
    let mut summary = ArchiveSummary {
        target: target.to_string(),
        manifest: manifest.as_ref().map(|(key, _)| key.clone()),
        manifest_segments: 0,
        objects_checked: 0,
        extra_bytes: 0,
        problems: Vec::new(),
    };
    let Some((key, manifest)) = manifest else {
        summary.problems.push(ArchiveProblem {
            kind: ArchiveProblemKind::NoManifest,
            object: bucket.url(super::MANIFEST_DIR),
            detail: "no manifest: the objects' digests cannot be checked (an interrupted first archive run leaves none; rerun `chainlog archive`)".into(),
        });
        return Ok(ArchiveReport {
            report,
            archive: summary,
        });
    };
    summary.manifest_segments = manifest.segments.len() as u64;
    if let Some(id) = &report.log_id {
        if *id != manifest.log_id {
            summary.problems.push(ArchiveProblem {
                kind: ArchiveProblemKind::WrongLog,
                object: bucket.url(&key),
                detail: format!(
                    "the manifest is for log {}, the segments are log {id}",
                    manifest.log_id
                ),
            });
        }
    }
    for object in manifest.objects() {
        let url = bucket.url(&object.name);
        let problem = |kind, detail| ArchiveProblem {
            kind,
            object: url.clone(),
            detail,
        };
        let size = match listed.get(&object.name) {
            None => {
                summary.problems.push(problem(
                    ArchiveProblemKind::ObjectMissing,
                    "the manifest names it, the bucket does not have it".into(),
                ));
                continue;
            }
            Some(&size) => size,
        };
        if size != object.bytes {
            summary.problems.push(problem(
                ArchiveProblemKind::SizeMismatch,
                format!("{size} bytes, the manifest says {}", object.bytes),
            ));
            continue;
        }
        let digest = match storage.digest_seen(&object.name) {
            Some(digest) => digest,
            None => {
                summary.extra_bytes += size;
                bucket.digest(&object.name, size)?
            }
        };
        summary.objects_checked += 1;
        if digest != object.sha256 {
            summary.problems.push(problem(
                ArchiveProblemKind::DigestMismatch,
                format!("SHA-256 {digest}, the manifest says {}", object.sha256),
            ));
        }
    }
    Ok(ArchiveReport {
        report,
        archive: summary,
    })
}
