//! The manifest of a pack, its signature (the seal), and the sample's seqs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::hash::checkpoint::{CheckpointError, NoteSigner, NoteVerifier};

/// The manifest's `format` and the seal's first line.
pub const MANIFEST_FORMAT: &str = "chainlog-evidence/v1";
/// The seal's third line starts with this, then the manifest's SHA-256 in hex.
pub const SEAL_PREFIX: &str = "sha256 ";

/// One file of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the zip.
    pub name: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// The period and the rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodManifest {
    /// Start of the period (event time, inclusive), RFC 3339.
    pub since: String,
    /// End of the period (event time, exclusive), RFC 3339.
    pub until: String,
    /// The first row's seq: the start tree's size.
    pub first_seq: u64,
    /// One past the last row's seq: the end tree's size.
    pub end_seq: u64,
    /// Rows in the pack: `end_seq - first_seq`.
    pub rows: u64,
    /// Rows whose event time is inside the period (the others arrived
    /// between two of them).
    pub rows_in_period: u64,
}

/// A signed tree in the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeManifest {
    /// The checkpoint's file.
    pub file: String,
    /// The tree's size.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// The chain hash of its last record, hex (none for an empty tree).
    pub head: Option<String>,
}

/// The random sample of inclusion proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleManifest {
    /// The proofs' file.
    pub file: String,
    /// The seed [`sample_seqs`] picked the seqs with.
    pub seed: u64,
    /// How many.
    pub count: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The log's checkpoint origin, `<prefix>/<log id>`.
    pub origin: String,
    /// When the pack was made, RFC 3339.
    pub generated_at: String,
    /// Who made it (`chainlog evidence`, or the API key's id).
    pub generated_by: String,
    /// The period.
    pub period: PeriodManifest,
    /// The tree before the first row.
    pub start: TreeManifest,
    /// The tree after the last row.
    pub end: TreeManifest,
    /// The witnessed checkpoint's file, or `null` when the pack has none.
    pub witnessed_checkpoint: Option<String>,
    /// The sample.
    pub sample: SampleManifest,
    /// Every file of the pack but the manifest and its seal.
    pub files: Vec<FileEntry>,
}

/// The seal's text: the signed note's body.
fn seal_body(origin: &str, manifest_sha256_hex: &str) -> String {
    format!("{MANIFEST_FORMAT}\n{origin}\n{SEAL_PREFIX}{manifest_sha256_hex}\n")
}

/// Signs the manifest's SHA-256 (hex) for the log `origin`: the text of
/// `manifest.sig`.
pub fn seal(
    signer: &NoteSigner,
    origin: &str,
    manifest_sha256_hex: &str,
) -> Result<String, CheckpointError> {
    signer.sign_note(&seal_body(origin, manifest_sha256_hex))
}

/// Checks a seal's signature and returns the origin and the manifest hash it signs.
pub(crate) fn open_seal(
    note: &str,
    verifier: &NoteVerifier,
) -> Result<(String, String), CheckpointError> {
    let body = verifier.open_note(note)?;
    let bad = || CheckpointError::Malformed("not an evidence pack's seal".into());
    let mut lines = body.lines();
    if lines.next() != Some(MANIFEST_FORMAT) {
        return Err(bad());
    }
    let origin = lines.next().ok_or_else(bad)?;
    let hash = lines
        .next()
        .and_then(|l| l.strip_prefix(SEAL_PREFIX))
        .ok_or_else(bad)?;
    if lines.next().is_some() {
        return Err(bad());
    }
    Ok((origin.to_string(), hash.to_string()))
}

/// SplitMix64: a small, fully specified generator, so that any checker
/// can recompute the sample from its seed (`docs/FORMAT.md`).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The sample of `count` distinct seqs in `start..end` for `seed`, in
/// ascending order: every seq of the range when it has `count` or fewer,
/// else the first `count` distinct values of `start + next() % (end - start)`.
pub fn sample_seqs(seed: u64, count: u64, start: u64, end: u64) -> Vec<u64> {
    let range = end.saturating_sub(start);
    if count >= range {
        return (start..end).collect();
    }
    let mut rng = SplitMix64(seed);
    let mut picked = BTreeSet::new();
    while (picked.len() as u64) < count {
        picked.insert(start + rng.next() % range);
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let signer = NoteSigner::from_seed("audit.example", [5; 32]).unwrap();
        let hash = "ab".repeat(32);
        let note = seal(&signer, "chainlog/0011", &hash).unwrap();
        let (origin, got) = open_seal(&note, &signer.verifier()).unwrap();
        assert_eq!(
            (origin.as_str(), got.as_str()),
            ("chainlog/0011", hash.as_str())
        );
        let changed = note.replace("sha256 ab", "sha256 ac");
        assert!(matches!(
            open_seal(&changed, &signer.verifier()),
            Err(CheckpointError::BadSignature(_))
        ));
        let other = NoteSigner::from_seed("audit.example", [6; 32]).unwrap();
        assert!(open_seal(&note, &other.verifier()).is_err());
    }

    #[test]
    fn a_checkpoint_is_not_a_seal() {
        let signer = NoteSigner::from_seed("audit.example", [5; 32]).unwrap();
        let note = signer.sign_note("chainlog/0011\n5\nAAAA\n").unwrap();
        assert!(matches!(
            open_seal(&note, &signer.verifier()),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn sample_is_deterministic_distinct_and_in_range() {
        let a = sample_seqs(42, 10, 100, 1000);
        assert_eq!(a, sample_seqs(42, 10, 100, 1000));
        assert_ne!(a, sample_seqs(43, 10, 100, 1000));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|s| (100..1000).contains(s)));
        assert_eq!(sample_seqs(1, 10, 5, 8), vec![5, 6, 7]);
        assert!(sample_seqs(1, 10, 5, 5).is_empty());
        // SplitMix64's published first output for seed 0.
        assert_eq!(SplitMix64(0).next(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn manifest_rejects_unknown_fields() {
        let text = r#"{"format":"chainlog-evidence/v1","extra":1}"#;
        assert!(serde_json::from_str::<Manifest>(text).is_err());
    }
}
