//! The archive manifest: what each archived object is (SHA-256, size), and
//! which seqs and chain links each segment holds.
//!
//! One manifest object is written per archive run, after every object it
//! names, under `manifest/<newest archived seq, 20 digits>.json`. Each lists
//! the whole archive (the previous manifest's segments and the new ones), so
//! a reader needs only the newest. Manifests are never overwritten.

use serde::{Deserialize, Serialize};

use super::{ArchiveError, Bucket};
use crate::event::Timestamp;
use crate::hash::chain::ChainHash;
use crate::{format::segment, index};

/// The `format` field of every manifest this build writes and reads.
pub const MANIFEST_FORMAT: &str = "chainlog-archive-manifest/1";
/// The "directory" of manifests under the prefix.
pub const MANIFEST_DIR: &str = "manifest";
/// The "directory" of signed checkpoints under the prefix.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The largest manifest read (about 150,000 segments).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The largest checkpoint note read.
const MAX_CHECKPOINT_BYTES: u64 = 64 << 10;

/// One archived object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    /// Its name under the prefix (`00000000000000000000.seg`).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
}

/// One archived segment: its seqs, chain links and objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Seq of its first record.
    pub base_seq: u64,
    /// Seq of its last record.
    pub last_seq: u64,
    /// Its records.
    pub record_count: u64,
    /// The hash its first record chains from (its header's link).
    pub prev_hash: ChainHash,
    /// Its last record's hash (its trailer's).
    pub last_hash: ChainHash,
    /// The segment file.
    pub segment: ObjectEntry,
    /// Its index file (derived data; absent when none was archived).
    pub index: Option<ObjectEntry>,
}

/// The content of `manifest/NNN.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The archived log's id (32 hex digits).
    pub log_id: String,
    /// When the archive run wrote it (informational).
    pub created_at: Timestamp,
    /// Every archived segment, oldest first, each chaining to the one before.
    pub segments: Vec<SegmentEntry>,
}

impl Manifest {
    /// The newest archived seq.
    pub fn last_seq(&self) -> Option<u64> {
        self.segments.last().map(|s| s.last_seq)
    }

    /// The oldest archived seq.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments.first().map(|s| s.base_seq)
    }

    /// Every object the manifest names, segments and indexes.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectEntry> {
        self.segments
            .iter()
            .flat_map(|s| std::iter::once(&s.segment).chain(s.index.as_ref()))
    }

    /// Parses and checks a manifest: format, names, digests, and that the
    /// segments are contiguous and linked.
    pub fn parse(bytes: &[u8], key: &str) -> Result<Manifest, ArchiveError> {
        let bad = |reason: String| ArchiveError::BadManifest {
            key: key.to_string(),
            reason,
        };
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {:?}, this build reads {MANIFEST_FORMAT:?}",
                manifest.format
            )));
        }
        let mut previous: Option<&SegmentEntry> = None;
        for s in &manifest.segments {
            if s.segment.name != segment::file_name(s.base_seq)
                || s.index
                    .as_ref()
                    .is_some_and(|i| i.name != index::file_name(s.base_seq))
            {
                return Err(bad(format!(
                    "segment {} has a wrong object name",
                    s.base_seq
                )));
            }
            if s.record_count == 0 || s.base_seq + s.record_count - 1 != s.last_seq {
                return Err(bad(format!("segment {} has a wrong seq range", s.base_seq)));
            }
            if manifest.objects().any(|o| !is_sha256_hex(&o.sha256)) {
                return Err(bad("a digest is not 64 lowercase hex digits".into()));
            }
            if let Some(p) = previous {
                if s.base_seq != p.last_seq + 1 || s.prev_hash != p.last_hash {
                    return Err(bad(format!(
                        "segment {} does not continue segment {}",
                        s.base_seq, p.base_seq
                    )));
                }
            }
            previous = Some(s);
        }
        Ok(manifest)
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `manifest/<last seq, 20 digits>.json`.
pub fn manifest_key(last_seq: u64) -> String {
    format!("{MANIFEST_DIR}/{last_seq:020}.json")
}

/// The object name of the segment with this base seq (as in a log directory).
pub fn segment_key(base_seq: u64) -> String {
    segment::file_name(base_seq)
}

/// `checkpoint/<size, 20 digits>-<first 16 hex digits of the note's SHA-256>.checkpoint`.
pub fn checkpoint_key(size: u64, note_sha256_hex: &str) -> String {
    let short = note_sha256_hex.get(..16).unwrap_or(note_sha256_hex);
    format!("{CHECKPOINT_DIR}/{size:020}-{short}.checkpoint")
}

fn manifest_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn checkpoint_size(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".checkpoint")?;
    let (digits, _) = stem.split_once('-')?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The newest manifest under the prefix, with its key, or `None` when there
/// is none.
pub(crate) fn newest_manifest(bucket: &Bucket) -> Result<Option<(String, Manifest)>, ArchiveError> {
    let newest = bucket
        .list(MANIFEST_DIR)?
        .into_iter()
        .filter_map(|(name, meta)| manifest_seq(&name).map(|seq| (seq, name, meta.size)))
        .max_by_key(|(seq, _, _)| *seq);
    let Some((_, name, size)) = newest else {
        return Ok(None);
    };
    let key = format!("{MANIFEST_DIR}/{name}");
    if size > MAX_MANIFEST_BYTES {
        return Err(ArchiveError::BadManifest {
            key,
            reason: format!("{size} bytes, more than the {MAX_MANIFEST_BYTES} read"),
        });
    }
    let bytes = bucket.get(&key)?;
    let manifest = Manifest::parse(&bytes, &bucket.url(&key))?;
    Ok(Some((key, manifest)))
}

/// The signed checkpoint with the largest size under the prefix: its key and
/// note text.
pub(crate) fn latest_checkpoint(bucket: &Bucket) -> Result<Option<(String, String)>, ArchiveError> {
    let latest = bucket
        .list(CHECKPOINT_DIR)?
        .into_iter()
        .filter(|(_, meta)| meta.size <= MAX_CHECKPOINT_BYTES)
        .filter_map(|(name, _)| checkpoint_size(&name).map(|size| (size, name)))
        .max();
    let Some((_, name)) = latest else {
        return Ok(None);
    };
    let key = format!("{CHECKPOINT_DIR}/{name}");
    let bytes = bucket.get(&key)?;
    let text = String::from_utf8(bytes).map_err(|_| ArchiveError::BadManifest {
        key: bucket.url(&key),
        reason: "the checkpoint is not UTF-8 text".into(),
    })?;
    Ok(Some((key, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: u64, count: u64, prev: u8, last: u8) -> SegmentEntry {
        SegmentEntry {
            base_seq: base,
            last_seq: base + count - 1,
            record_count: count,
            prev_hash: ChainHash([prev; 32]),
            last_hash: ChainHash([last; 32]),
            segment: ObjectEntry {
                name: segment::file_name(base),
                bytes: 131072,
                sha256: "ab".repeat(32),
            },
            index: Some(ObjectEntry {
                name: index::file_name(base),
                bytes: 300,
                sha256: "cd".repeat(32),
            }),
        }
    }

    fn manifest(segments: Vec<SegmentEntry>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            log_id: "00".repeat(16),
            created_at: Timestamp::from_unix_nanos(0),
            segments,
        }
    }

    #[test]
    fn manifests_round_trip_and_name_their_objects() {
        let m = manifest(vec![entry(0, 10, 1, 2), entry(10, 5, 2, 3)]);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&json, "k").unwrap(), m);
        assert_eq!(m.objects().count(), 4);
        assert_eq!(m.last_seq(), Some(14));
        assert_eq!(manifest_key(14), "manifest/00000000000000000014.json");
        assert_eq!(manifest_seq("00000000000000000014.json"), Some(14));
        let key = checkpoint_key(15, &"ef".repeat(32));
        assert_eq!(
            key,
            "checkpoint/00000000000000000015-efefefefefefefef.checkpoint"
        );
        assert_eq!(checkpoint_size(key.rsplit('/').next().unwrap()), Some(15));
    }

    #[test]
    fn broken_manifests_are_refused() {
        let unlinked = manifest(vec![entry(0, 10, 1, 2), entry(10, 5, 9, 3)]);
        let gap = manifest(vec![entry(0, 10, 1, 2), entry(11, 5, 2, 3)]);
        let mut misnamed = manifest(vec![entry(0, 10, 1, 2)]);
        misnamed.segments[0].segment.name = segment::file_name(1);
        let mut bad_digest = manifest(vec![entry(0, 10, 1, 2)]);
        bad_digest.segments[0].segment.sha256 = "AB".repeat(32);
        let mut other_format = manifest(vec![]);
        other_format.format = "chainlog-archive-manifest/2".into();
        for m in [unlinked, gap, misnamed, bad_digest, other_format] {
            let json = serde_json::to_vec(&m).unwrap();
            let result = Manifest::parse(&json, "k");
            assert!(
                matches!(result, Err(ArchiveError::BadManifest { .. })),
                "{m:?} should be refused"
            );
        }
    }
}
