//! The lake manifest (`lake/manifest/<last seq>.json`), its signature note
//! (`lake/manifest/<last seq>.sig`), and the run marker
//! (`lake/runs/<first seq>.json`). The layout and how to check them by hand
//! are in docs/LAKE.md.

use serde::{Deserialize, Serialize};

use super::super::{sha256_hex, ArchiveError, Bucket};
use crate::event::Timestamp;
use crate::hash::checkpoint::{CheckpointError, NoteSigner, NoteVerifier};
use crate::hash::merkle::{Frontier, Hash};

/// The `format` of every lake manifest this build writes and reads, and
/// the first line of its signature note.
pub const LAKE_MANIFEST_FORMAT: &str = "chainlog-lake-manifest/1";
/// The "directory" of the lake under the prefix.
pub const LAKE_DIR: &str = "lake";
/// Where manifests and their signature notes go.
pub const LAKE_MANIFEST_DIR: &str = "lake/manifest";
/// Where run markers go.
pub const LAKE_RUNS_DIR: &str = "lake/runs";
/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The largest signature note or run marker read.
const MAX_NOTE_BYTES: u64 = 64 << 10;

/// The two object formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeFormat {
    /// `lake/jsonl/dt=…/F-L.jsonl.gz`: gzip JSON Lines.
    Jsonl,
    /// `lake/parquet/dt=…/F-L.parquet`.
    Parquet,
}

impl LakeFormat {
    /// Both, in the order a run writes them.
    pub const ALL: [LakeFormat; 2] = [LakeFormat::Jsonl, LakeFormat::Parquet];

    /// The object name of rows `first..=last` of partition `dt`.
    pub fn object_key(self, dt: &str, first: u64, last: u64) -> String {
        let (dir, ext) = match self {
            LakeFormat::Jsonl => ("jsonl", "jsonl.gz"),
            LakeFormat::Parquet => ("parquet", "parquet"),
        };
        format!("{LAKE_DIR}/{dir}/dt={dt}/{first:020}-{last:020}.{ext}")
    }
}

/// One object of the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeObject {
    /// Its name under the prefix ([`LakeFormat::object_key`]).
    pub key: String,
    /// Its format.
    pub format: LakeFormat,
    /// Its date partition, `YYYY-MM-DD` (UTC date of the events' timestamps).
    pub dt: String,
    /// The lowest seq of its rows.
    pub first_seq: u64,
    /// The highest seq of its rows.
    pub last_seq: u64,
    /// Its rows (seqs between the two, not necessarily every one: the
    /// others are in other partitions).
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes, 64 lowercase hex digits.
    pub sha256: String,
}

/// The content of `lake/manifest/<last seq, 20 digits>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeManifest {
    /// Always [`LAKE_MANIFEST_FORMAT`].
    pub format: String,
    /// The exported log's id (32 hex digits).
    pub log_id: String,
    /// The origin line of its checkpoints (`chainlog/<log id>`).
    pub origin: String,
    /// The first seq in the lake (the first exported record).
    pub first_seq: u64,
    /// The last seq in the lake: every seq `first_seq..=last_seq` is in
    /// exactly one object of each format.
    pub last_seq: u64,
    /// When the run that wrote this manifest started (informational).
    pub started_at: Timestamp,
    /// The RFC 6962 tree over the chain hashes of records `0..first_seq`,
    /// as its frontier (subtree roots, largest first, hex); empty when the
    /// lake starts at seq 0.
    pub start_frontier: Vec<String>,
    /// The same over records `0..=last_seq` (where the next run continues).
    pub end_frontier: Vec<String>,
    /// A signed checkpoint (C2SP signed note) of size `last_seq + 1`: its
    /// root is the tree over every row's `hash`.
    pub checkpoint: String,
    /// Every object, in the order written.
    pub objects: Vec<LakeObject>,
}

/// The content of `lake/runs/<first seq, 20 digits>.json`: what a run
/// starting at that seq exports, written before its first object, so that
/// a run that was interrupted is finished by the next with the same
/// objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunMarker {
    /// The first seq the run exports.
    pub first_seq: u64,
    /// The last seq it exports.
    pub last_seq: u64,
    /// When it started.
    pub started_at: Timestamp,
}

fn hex32(h: &Hash) -> String {
    super::super::hex(h)
}

/// A frontier as the manifest lists it.
pub fn frontier_hex(frontier: &Frontier) -> Vec<String> {
    frontier.hashes().iter().map(hex32).collect()
}

/// The frontier of a tree of `size` records from its hex hashes.
pub fn frontier_from_hex(size: u64, hashes: &[String]) -> Option<Frontier> {
    let parsed: Option<Vec<Hash>> = hashes
        .iter()
        .map(|h| {
            let digest: crate::hash::chain::ChainHash = h.parse().ok()?;
            Some(digest.0)
        })
        .collect();
    Frontier::from_parts(size, parsed?).ok()
}

impl LakeManifest {
    /// The manifest's key: `lake/manifest/<last seq, 20 digits>.json`.
    pub fn key(last_seq: u64) -> String {
        format!("{LAKE_MANIFEST_DIR}/{last_seq:020}.json")
    }

    /// Its signature note's key: `lake/manifest/<last seq, 20 digits>.sig`.
    pub fn signature_key(last_seq: u64) -> String {
        format!("{LAKE_MANIFEST_DIR}/{last_seq:020}.sig")
    }

    /// The text its signature note signs, for manifest bytes with SHA-256
    /// `sha256_hex`: four lines, format, origin, last seq, digest.
    pub fn note_text(origin: &str, last_seq: u64, sha256_hex: &str) -> String {
        format!("{LAKE_MANIFEST_FORMAT}\n{origin}\n{last_seq}\n{sha256_hex}\n")
    }

    /// Serializes the manifest and signs it: (manifest bytes, signature note).
    pub fn sign(&self, signer: &NoteSigner) -> Result<(Vec<u8>, String), ArchiveError> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| {
            ArchiveError::Refused(format!("the lake manifest does not serialize: {e}"))
        })?;
        json.push(b'\n');
        let note = signer
            .sign_note(&Self::note_text(
                &self.origin,
                self.last_seq,
                &sha256_hex(&json),
            ))
            .map_err(|e| ArchiveError::Refused(format!("signing the lake manifest: {e}")))?;
        Ok((json, note))
    }

    /// Checks `note` (signed by `verifier`) against the manifest bytes
    /// `json` and parses them.
    pub fn open(
        json: &[u8],
        note: &str,
        verifier: &NoteVerifier,
        key: &str,
    ) -> Result<LakeManifest, ManifestRefused> {
        let text = verifier
            .open_note(note)
            .map_err(ManifestRefused::Signature)?;
        let manifest = Self::parse(json, key).map_err(ManifestRefused::Malformed)?;
        let want = Self::note_text(&manifest.origin, manifest.last_seq, &sha256_hex(json));
        if text != want {
            return Err(ManifestRefused::NotSigned(format!(
                "the signed note says {text:?}, the manifest's digest line would be {want:?}"
            )));
        }
        Ok(manifest)
    }

    /// Parses a manifest and checks its shape: format, object names, seq
    /// ranges, digests, frontier sizes.
    pub fn parse(bytes: &[u8], key: &str) -> Result<LakeManifest, ArchiveError> {
        let bad = |reason: String| ArchiveError::BadManifest {
            key: key.to_string(),
            reason,
        };
        let m: LakeManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != LAKE_MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {:?}, this build reads {LAKE_MANIFEST_FORMAT:?}",
                m.format
            )));
        }
        if m.first_seq > m.last_seq || !m.origin.ends_with(&format!("/{}", m.log_id)) {
            return Err(bad("wrong seq range or origin".into()));
        }
        for o in &m.objects {
            let ok = o.first_seq <= o.last_seq
                && o.first_seq >= m.first_seq
                && o.last_seq <= m.last_seq
                && o.rows >= 1
                && o.rows <= o.last_seq - o.first_seq + 1
                && o.key == o.format.object_key(&o.dt, o.first_seq, o.last_seq)
                && is_date(&o.dt)
                && o.sha256.len() == 64
                && o.sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !ok {
                return Err(bad(format!("object {:?} is described wrongly", o.key)));
            }
        }
        if frontier_from_hex(m.first_seq, &m.start_frontier).is_none()
            || frontier_from_hex(m.last_seq + 1, &m.end_frontier).is_none()
        {
            return Err(bad("a frontier does not match its tree size".into()));
        }
        Ok(m)
    }
}

fn is_date(dt: &str) -> bool {
    let b = dt.as_bytes();
    b.len() >= 10
        && b[b.len() - 6] == b'-'
        && b[b.len() - 3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || i == b.len() - 6 || i == b.len() - 3)
}

/// Why a manifest is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestRefused {
    /// The signature note does not verify with the key.
    #[error("{0}")]
    Signature(CheckpointError),
    /// The signed note is for other bytes, another log or another range.
    #[error("{0}")]
    NotSigned(String),
    /// The manifest does not parse.
    #[error("{0}")]
    Malformed(ArchiveError),
}

fn seq_of(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A small object (`limit` bytes at most) as text, or `None` when absent.
pub(super) fn get_small(
    bucket: &Bucket,
    key: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, ArchiveError> {
    match bucket.head(key)? {
        None => Ok(None),
        Some(meta) if meta.size > limit => Err(ArchiveError::BadManifest {
            key: bucket.url(key),
            reason: format!("{} bytes, more than the {limit} read", meta.size),
        }),
        Some(_) => bucket.get(key).map(Some),
    }
}

/// A manifest as stored, not yet checked.
pub(super) struct StoredManifest {
    /// Its key.
    pub key: String,
    /// Its bytes.
    pub json: Vec<u8>,
    /// Its signature note's bytes, if there is one.
    pub note: Option<Vec<u8>>,
}

/// The newest manifest of the lake (by last seq), `None` when there is none.
pub(super) fn newest_lake_manifest(
    bucket: &Bucket,
) -> Result<Option<StoredManifest>, ArchiveError> {
    let newest = bucket
        .list(LAKE_MANIFEST_DIR)?
        .into_iter()
        .filter_map(|(name, _)| seq_of(&name, ".json"))
        .max();
    let Some(last) = newest else {
        return Ok(None);
    };
    let key = LakeManifest::key(last);
    let json = get_small(bucket, &key, MAX_MANIFEST_BYTES)?.ok_or_else(|| {
        ArchiveError::NoArchive(format!("{} (listed, then gone)", bucket.url(&key)))
    })?;
    let note = get_small(bucket, &LakeManifest::signature_key(last), MAX_NOTE_BYTES)?;
    Ok(Some(StoredManifest { key, json, note }))
}

/// The run marker for runs starting at `first_seq`, if one was written.
pub(super) fn run_marker(
    bucket: &Bucket,
    first_seq: u64,
) -> Result<Option<RunMarker>, ArchiveError> {
    let key = run_marker_key(first_seq);
    let Some(bytes) = get_small(bucket, &key, MAX_NOTE_BYTES)? else {
        return Ok(None);
    };
    let marker: RunMarker =
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::BadManifest {
            key: bucket.url(&key),
            reason: e.to_string(),
        })?;
    if marker.first_seq != first_seq || marker.last_seq < first_seq {
        return Err(ArchiveError::BadManifest {
            key: bucket.url(&key),
            reason: "the run marker's seqs do not match its name".into(),
        });
    }
    Ok(Some(marker))
}

/// `lake/runs/<first seq, 20 digits>.json`.
pub fn run_marker_key(first_seq: u64) -> String {
    format!("{LAKE_RUNS_DIR}/{first_seq:020}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("lake.example", [9; 32]).unwrap()
    }

    fn manifest() -> LakeManifest {
        let mut start = Frontier::new();
        start.push(b"x");
        let mut end = start.clone();
        end.push(b"y");
        end.push(b"z");
        LakeManifest {
            format: LAKE_MANIFEST_FORMAT.into(),
            log_id: "ab".repeat(16),
            origin: format!("chainlog/{}", "ab".repeat(16)),
            first_seq: 1,
            last_seq: 2,
            started_at: Timestamp::from_unix_nanos(0),
            start_frontier: frontier_hex(&start),
            end_frontier: frontier_hex(&end),
            checkpoint: "note".into(),
            objects: vec![LakeObject {
                key: LakeFormat::Parquet.object_key("2026-03-09", 1, 2),
                format: LakeFormat::Parquet,
                dt: "2026-03-09".into(),
                first_seq: 1,
                last_seq: 2,
                rows: 2,
                bytes: 100,
                sha256: "cd".repeat(32),
            }],
        }
    }

    #[test]
    fn signed_manifests_round_trip() {
        let m = manifest();
        assert_eq!(
            m.objects[0].key,
            "lake/parquet/dt=2026-03-09/00000000000000000001-00000000000000000002.parquet"
        );
        let (json, note) = m.sign(&signer()).unwrap();
        let opened = LakeManifest::open(&json, &note, &signer().verifier(), "k").unwrap();
        assert_eq!(opened, m);
        assert_eq!(seq_of(&LakeManifest::key(2)[14..], ".json"), Some(2));
    }

    #[test]
    fn changed_or_forged_manifests_are_refused() {
        let m = manifest();
        let (json, note) = m.sign(&signer()).unwrap();
        // The bytes changed after signing.
        let mut changed = json.clone();
        let at = changed.iter().position(|&b| b == b'1').unwrap();
        changed[at] = b'0';
        assert!(matches!(
            LakeManifest::open(&changed, &note, &signer().verifier(), "k"),
            Err(ManifestRefused::NotSigned(_) | ManifestRefused::Malformed(_))
        ));
        // Signed by another key.
        let other = NoteSigner::from_seed("lake.example", [8; 32]).unwrap();
        let (_, forged) = m.sign(&other).unwrap();
        assert!(matches!(
            LakeManifest::open(&json, &forged, &signer().verifier(), "k"),
            Err(ManifestRefused::Signature(_))
        ));
        // Shapes the parser refuses.
        let mut wrong_key = m.clone();
        wrong_key.objects[0].key = "lake/parquet/dt=2026-03-09/x.parquet".into();
        let mut wrong_frontier = m.clone();
        wrong_frontier.end_frontier.pop();
        let mut too_many_rows = m.clone();
        too_many_rows.objects[0].rows = 3;
        for bad in [wrong_key, wrong_frontier, too_many_rows] {
            let json = serde_json::to_vec(&bad).unwrap();
            assert!(LakeManifest::parse(&json, "k").is_err(), "{bad:?}");
        }
    }
}
