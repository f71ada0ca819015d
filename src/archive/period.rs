//! What an archive holds of a period of the log, for an evidence pack: the
//! newest manifest's range, and each archived segment the period touches,
//! found in the bucket (HEAD: present, its size, its Object Lock state).
//!
//! It does not download the segments: `chainlog verify --from` compares
//! every archived object with its manifest digest, and the pack says so.

use serde::Serialize;

use super::manifest::{latest_checkpoint, newest_manifest, segment_key};
use super::{ArchiveError, Bucket, ObjectLockState};
use crate::event::Timestamp;

/// One archived segment that holds records of the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodSegment {
    /// Its key under the prefix.
    pub object: String,
    /// Its first seq.
    pub base_seq: u64,
    /// Its last seq.
    pub last_seq: u64,
    /// Its size in the manifest.
    pub bytes: u64,
    /// Whether the bucket has it, with the manifest's size.
    pub present: bool,
    /// Its lock as the bucket reports it (absent when the object is missing).
    pub object_lock: Option<ObjectLockState>,
}

/// The archive's state for the seqs `[first_seq, end_seq)` of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodArchive {
    /// `s3://bucket/prefix`.
    pub target: String,
    /// The newest manifest's key.
    pub manifest: String,
    /// When that archive run wrote it.
    pub manifest_created_at: String,
    /// The archive's first and last seq.
    pub archived_seqs: Option<(u64, u64)>,
    /// The newest archived checkpoint's key.
    pub latest_checkpoint: Option<String>,
    /// The period's first seq.
    pub first_seq: u64,
    /// One past the period's last seq.
    pub end_seq: u64,
    /// The period's records past the archive's end (not archived yet: the
    /// archive takes sealed segments only).
    pub records_not_archived: u64,
    /// The archived segments holding records of the period.
    pub segments: Vec<PeriodSegment>,
    /// How many of them the bucket reports locked (a retention mode set).
    pub locked_segments: u64,
    /// The earliest retain-until date among them, when every one is locked.
    pub earliest_retain_until: Option<String>,
    /// Segments missing or of another size than the manifest says.
    pub problems: Vec<String>,
}

/// The state of `bucket`'s archive of log `log_id` for `[first_seq, end_seq)`.
pub fn period_archive(
    bucket: &Bucket,
    log_id: &str,
    first_seq: u64,
    end_seq: u64,
) -> Result<PeriodArchive, ArchiveError> {
    let target = bucket.target().to_string();
    let (manifest_key, manifest) =
        newest_manifest(bucket)?.ok_or_else(|| ArchiveError::NoArchive(target.clone()))?;
    if manifest.log_id != log_id {
        return Err(ArchiveError::WrongLog {
            target,
            archived: manifest.log_id,
            local: log_id.to_string(),
        });
    }
    let archived_seqs = manifest.first_seq().zip(manifest.last_seq());
    let archived_end = manifest.last_seq().map_or(0, |last| last + 1);
    let records_not_archived = end_seq.saturating_sub(archived_end.max(first_seq));
    let mut segments = Vec::new();
    let mut problems = Vec::new();
    for entry in &manifest.segments {
        if entry.base_seq >= end_seq || entry.last_seq < first_seq {
            continue;
        }
        let object = segment_key(entry.base_seq);
        let found = bucket.object_lock(&object)?;
        let present = found
            .as_ref()
            .is_some_and(|(meta, _)| meta.size == entry.segment.bytes);
        match &found {
            None => problems.push(format!("{} is missing", bucket.url(&object))),
            Some((meta, _)) if !present => problems.push(format!(
                "{} is {} bytes, the manifest says {}",
                bucket.url(&object),
                meta.size,
                entry.segment.bytes
            )),
            Some(_) => {}
        }
        segments.push(PeriodSegment {
            object,
            base_seq: entry.base_seq,
            last_seq: entry.last_seq,
            bytes: entry.segment.bytes,
            present,
            object_lock: found.map(|(_, lock)| lock),
        });
    }
    let locks: Vec<&ObjectLockState> = segments
        .iter()
        .filter_map(|s| s.object_lock.as_ref())
        .filter(|lock| lock.mode.is_some())
        .collect();
    let locked_segments = locks.len() as u64;
    let earliest_retain_until = if locked_segments == segments.len() as u64 {
        locks
            .iter()
            .filter_map(|lock| lock.retain_until.as_deref())
            .filter_map(|text| Some((Timestamp::parse_rfc3339(text).ok()?, text)))
            .min()
            .map(|(_, text)| text.to_string())
    } else {
        None
    };
    Ok(PeriodArchive {
        target,
        manifest: manifest_key,
        manifest_created_at: manifest.created_at.to_string(),
        archived_seqs,
        latest_checkpoint: latest_checkpoint(bucket)?.map(|(key, _)| key),
        first_seq,
        end_seq,
        records_not_archived,
        segments,
        locked_segments,
        earliest_retain_until,
        problems,
    })
}

/// [`period_archive`] of `target` as JSON for an evidence pack's
/// `state/retention.json`; a failure (no archive, another log, the bucket
/// unreachable) becomes `{"target": …, "error": …}`, so that the pack says
/// what could not be checked rather than leaving the archive out.
pub fn period_archive_json(
    target: &super::ArchiveTarget,
    log_id: &str,
    first_seq: u64,
    end_seq: u64,
) -> serde_json::Value {
    let state = Bucket::connect(target, true)
        .and_then(|bucket| period_archive(&bucket, log_id, first_seq, end_seq));
    let error = |e: &dyn std::fmt::Display| serde_json::json!({"target": target.to_string(), "error": e.to_string()});
    match state.map(serde_json::to_value) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => error(&e),
        Err(e) => error(&e),
    }
}
