//! Checking a pack from the pack alone: the seal, every file's hash, the
//! checkpoints, the proofs, and every row's chain hash and fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::ZipArchive;

use super::build::hex;
use super::manifest::{open_seal, sample_seqs, Manifest, TreeManifest, MANIFEST_FORMAT};
use super::*;
use crate::event::{decode_record, Timestamp};
use crate::hash::chain::{ChainHash, LogId};
use crate::hash::checkpoint::{Checkpoint, NoteVerifier};
use crate::query::bundle::MAX_ROW_BYTES;
use crate::query::export::{ExportFormat, ExportOptions, Exporter};
use crate::query::proofs::{hash_to_hex, ConsistencyProof, InclusionProof};

/// What a pack that checked out holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The log's origin.
    pub origin: String,
    /// The key the pack was checked with.
    pub key: String,
    /// Whether that key was given (`true`) or taken from the pack itself,
    /// which only shows the pack is consistent with its own key.
    pub key_given: bool,
    /// The period's start.
    pub since: String,
    /// The period's end.
    pub until: String,
    /// The first row's seq.
    pub first_seq: u64,
    /// One past the last row's seq.
    pub end_seq: u64,
    /// Rows checked.
    pub rows: u64,
    /// Sampled inclusion proofs checked.
    pub sample: u64,
    /// Files whose hash was checked.
    pub files: usize,
    /// Whether a witnessed checkpoint is in the pack (its log signature is
    /// checked; its cosignatures are for a witness policy to check).
    pub witnessed: bool,
    /// The witnessed checkpoint's note (log signature checked, same origin;
    /// when its size is the end checkpoint's, the same root), for a witness
    /// policy to check its cosignatures.
    #[serde(skip)]
    pub witnessed_note: Option<String>,
    /// Whether the witnessed tree and the end checkpoint's tree are shown to
    /// be one history: the same tree, or a consistency proof between them
    /// (`proofs/witnessed-consistency.json`) that verifies. False without a
    /// witnessed checkpoint, and for a pack made before the proof was added.
    pub witnessed_linked: bool,
}

fn unreadable(file: &str, e: impl std::fmt::Display) -> PackError {
    PackError::Unreadable {
        file: file.to_string(),
        reason: e.to_string(),
    }
}

fn invalid(file: &str, reason: String) -> PackError {
    PackError::Invalid {
        file: file.to_string(),
        reason,
    }
}

fn malformed(file: &str, reason: impl std::fmt::Display) -> PackError {
    PackError::Malformed {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

struct Pack {
    zip: ZipArchive<BufReader<File>>,
}

impl Pack {
    fn open(path: &Path) -> Result<Pack, PackError> {
        let file = File::open(path).map_err(|e| unreadable("(pack)", e))?;
        let zip = ZipArchive::new(BufReader::new(file))
            .map_err(|e| unreadable("(pack)", format!("not a zip: {e}")))?;
        Ok(Pack { zip })
    }

    fn reader(&mut self, name: &str) -> Result<zip::read::ZipFile<'_, BufReader<File>>, PackError> {
        self.zip.by_name(name).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => PackError::Missing {
                file: name.to_string(),
            },
            e => unreadable(name, e),
        })
    }

    fn small(&mut self, name: &str) -> Result<Vec<u8>, PackError> {
        let mut bytes = Vec::new();
        self.reader(name)?
            .take(MAX_SMALL_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(name, e))?;
        if bytes.len() as u64 > MAX_SMALL_FILE_BYTES {
            return Err(malformed(
                name,
                format!("larger than {MAX_SMALL_FILE_BYTES} bytes"),
            ));
        }
        Ok(bytes)
    }

    fn text(&mut self, name: &str) -> Result<String, PackError> {
        String::from_utf8(self.small(name)?).map_err(|_| malformed(name, "not UTF-8 text"))
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self, name: &str) -> Result<T, PackError> {
        serde_json::from_slice(&self.small(name)?).map_err(|e| malformed(name, e))
    }

    fn digest(&mut self, name: &str) -> Result<(String, u64), PackError> {
        let mut reader = self.reader(name)?;
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| unreadable(name, e))?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok((hex(&sha.finalize()), bytes))
    }
}

/// A sampled proof as the pack holds it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleFile {
    seed: u64,
    tree_size: u64,
    root: String,
    proofs: Vec<InclusionProof>,
}

/// A line of `events/records.jsonl`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    seq: u64,
    record_version: u16,
    record: String,
    hash: ChainHash,
}

/// Opens the signed checkpoint `file` of the pack and checks it is of `origin`.
fn open_checkpoint(
    pack: &mut Pack,
    file: &str,
    origin: &str,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, PackError> {
    let note = pack.text(file)?;
    let cp = Checkpoint::open(&note, verifier).map_err(|source| PackError::Signature {
        file: file.to_string(),
        source,
    })?;
    if cp.origin != origin {
        return Err(invalid(
            file,
            format!("is a checkpoint of {:?}, not of {origin:?}", cp.origin),
        ));
    }
    Ok(cp)
}

/// Checks `proofs/witnessed-consistency.json`: a proof from the smaller of
/// the two trees to the larger that verifies (an error otherwise).
fn witnessed_consistent(
    pack: &mut Pack,
    witnessed: &Checkpoint,
    end: &Checkpoint,
) -> Result<bool, PackError> {
    let proof: ConsistencyProof = pack.json(WITNESSED_CONSISTENCY_FILE)?;
    let (old, new) = if witnessed.size < end.size {
        (witnessed, end)
    } else {
        (end, witnessed)
    };
    if (
        proof.old_size,
        proof.old_root,
        proof.new_size,
        proof.new_root,
    ) != (old.size, old.root, new.size, new.root)
    {
        return Err(invalid(
            WITNESSED_CONSISTENCY_FILE,
            "is not a proof between the witnessed and the end checkpoints".into(),
        ));
    }
    if !proof.verify() {
        return Err(invalid(
            WITNESSED_CONSISTENCY_FILE,
            format!(
                "does not prove that the tree of {} records extends the tree of {}: the witnessed and the end checkpoint are not one history",
                new.size, old.size
            ),
        ));
    }
    Ok(true)
}

fn checkpoint(
    pack: &mut Pack,
    tree: &TreeManifest,
    origin: &str,
    verifier: &NoteVerifier,
) -> Result<Checkpoint, PackError> {
    let file = tree.file.as_str();
    let cp = open_checkpoint(pack, file, origin, verifier)?;
    let head = cp.head.map(|h| h.to_hex());
    if cp.size != tree.size || hash_to_hex(&cp.root) != tree.root || head != tree.head {
        return Err(invalid(
            file,
            format!(
                "signs the tree of {} records with root {}, manifest.json says {} records with root {}",
                cp.size,
                hash_to_hex(&cp.root),
                tree.size,
                tree.root
            ),
        ));
    }
    Ok(cp)
}

/// Reads one line of at most [`MAX_ROW_BYTES`]; `false` at the end.
fn next_line(reader: &mut impl BufRead, file: &str, line: &mut Vec<u8>) -> Result<bool, PackError> {
    line.clear();
    let n = reader
        .take(MAX_ROW_BYTES + 1)
        .read_until(b'\n', line)
        .map_err(|e| unreadable(file, e))?;
    if n as u64 > MAX_ROW_BYTES {
        return Err(malformed(
            file,
            format!("a line is longer than {MAX_ROW_BYTES} bytes"),
        ));
    }
    Ok(n > 0)
}

fn log_id_of(origin: &str) -> Option<LogId> {
    let hex = origin.rsplit('/').next()?;
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(LogId(id))
}

/// Checks every row: records.jsonl chains from the start head to the end
/// head, events.jsonl says what each record says, and events.csv is what
/// the exporter writes for them. Returns the rows and those in the period.
fn check_rows(
    path: &Path,
    m: &Manifest,
    start_head: ChainHash,
    end: &Checkpoint,
    sampled: &BTreeMap<u64, ChainHash>,
) -> Result<(u64, u64), PackError> {
    let (mut records_pack, mut events_pack) = (Pack::open(path)?, Pack::open(path)?);
    let mut records = BufReader::new(records_pack.reader(RECORDS_FILE)?);
    let mut events = BufReader::new(events_pack.reader(EVENTS_JSONL_FILE)?);
    let since =
        Timestamp::parse_rfc3339(&m.period.since).map_err(|e| malformed(MANIFEST_FILE, e))?;
    let until =
        Timestamp::parse_rfc3339(&m.period.until).map_err(|e| malformed(MANIFEST_FILE, e))?;
    let mut csv_sha = Hashing(Sha256::new(), 0);
    let mut csv = Exporter::new(&mut csv_sha, ExportOptions::new(ExportFormat::Csv))
        .map_err(|e| unreadable(EVENTS_CSV_FILE, e))?;
    let (mut prev, mut seq, mut in_period) = (start_head, m.period.first_seq, 0u64);
    let (mut rline, mut eline, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    while next_line(&mut records, RECORDS_FILE, &mut rline)? {
        let row: RecordLine =
            serde_json::from_slice(&rline).map_err(|e| malformed(RECORDS_FILE, e))?;
        if row.seq != seq {
            return Err(invalid(
                RECORDS_FILE,
                format!(
                    "row {} has seq {}, expected {seq}: a row was dropped, added or moved",
                    seq - m.period.first_seq,
                    row.seq
                ),
            ));
        }
        if seq >= end.size {
            return Err(invalid(
                RECORDS_FILE,
                format!(
                    "seq {seq} is past the end checkpoint's {} records: a row was added",
                    end.size
                ),
            ));
        }
        let bytes = B64
            .decode(&row.record)
            .map_err(|_| malformed(RECORDS_FILE, format!("seq {seq}: the record is not base64")))?;
        let hash = prev.next(seq, &bytes);
        if hash != row.hash {
            return Err(invalid(RECORDS_FILE, format!("seq {seq}: its record bytes chained from the hash before it give {hash}, the row says {}: the record was changed", row.hash)));
        }
        if sampled.get(&seq).is_some_and(|leaf| *leaf != hash) {
            return Err(invalid(
                SAMPLE_FILE,
                format!("the proof of seq {seq} is for another record"),
            ));
        }
        let view = decode_record(row.record_version, &bytes)
            .map_err(|e| malformed(RECORDS_FILE, format!("seq {seq}: {e}")))?;
        in_period += u64::from(view.timestamp >= since && view.timestamp < until);
        expected.clear();
        let mut exporter =
            Exporter::new(&mut expected, ExportOptions::new(ExportFormat::JsonLines))
                .map_err(|e| unreadable(EVENTS_JSONL_FILE, e))?;
        exporter
            .write_view(seq, &hash, &view)
            .map_err(|e| malformed(RECORDS_FILE, format!("seq {seq}: {e}")))?;
        drop(exporter);
        csv.write_view(seq, &hash, &view)
            .map_err(|e| malformed(RECORDS_FILE, format!("seq {seq}: {e}")))?;
        if !next_line(&mut events, EVENTS_JSONL_FILE, &mut eline)? {
            return Err(invalid(
                EVENTS_JSONL_FILE,
                format!("ends before seq {seq}: a row was dropped"),
            ));
        }
        let got: serde_json::Value = serde_json::from_slice(&eline)
            .map_err(|e| malformed(EVENTS_JSONL_FILE, format!("seq {seq}: {e}")))?;
        let want: serde_json::Value =
            serde_json::from_slice(&expected).map_err(|e| malformed(RECORDS_FILE, e))?;
        if got != want {
            let fields: Vec<&str> = want
                .as_object()
                .map(|w| {
                    w.iter()
                        .filter(|(k, v)| got.get(k.as_str()) != Some(*v))
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            return Err(invalid(
                EVENTS_JSONL_FILE,
                format!(
                    "seq {seq}: the row's {} differ from its record bytes: the row was changed",
                    if fields.is_empty() {
                        "fields".to_string()
                    } else {
                        fields.join(", ")
                    }
                ),
            ));
        }
        prev = hash;
        seq += 1;
    }
    if next_line(&mut events, EVENTS_JSONL_FILE, &mut eline)? {
        return Err(invalid(
            EVENTS_JSONL_FILE,
            format!(
                "has more rows than events/records.jsonl ({})",
                seq - m.period.first_seq
            ),
        ));
    }
    if seq != end.size {
        return Err(invalid(
            RECORDS_FILE,
            format!(
                "ends at seq {seq}, the end checkpoint has {} records: {} rows are missing",
                end.size,
                end.size - seq
            ),
        ));
    }
    if seq > m.period.first_seq && Some(prev) != end.head {
        return Err(invalid(
            RECORDS_FILE,
            "the last row's hash is not the end checkpoint's chain head".into(),
        ));
    }
    csv.finish().map_err(|e| unreadable(EVENTS_CSV_FILE, e))?;
    let want_csv = hex(&csv_sha.0.finalize());
    let listed = m
        .files
        .iter()
        .find(|f| f.name == EVENTS_CSV_FILE)
        .map(|f| f.sha256.as_str());
    if listed != Some(want_csv.as_str()) {
        return Err(invalid(
            EVENTS_CSV_FILE,
            "is not the CSV export of the rows' records: a row was changed".into(),
        ));
    }
    Ok((seq - m.period.first_seq, in_period))
}

struct Hashing(Sha256, u64);

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the pack at `path` with the log's public key `key` (or, without
/// one, with the key in the pack, which only shows the pack agrees with
/// itself). The first problem found is the error, naming its file.
pub fn check(path: &Path, key: Option<&NoteVerifier>) -> Result<CheckReport, PackError> {
    let mut pack = Pack::open(path)?;
    let pack_key = pack.text(KEY_FILE)?;
    let verifier = match key {
        Some(k) => k.clone(),
        None => NoteVerifier::parse(pack_key.trim()).map_err(|e| malformed(KEY_FILE, e))?,
    };
    let seal = pack.text(SEAL_FILE)?;
    let (origin, manifest_sha) =
        open_seal(&seal, &verifier).map_err(|source| PackError::Signature {
            file: SEAL_FILE.into(),
            source,
        })?;
    let manifest_bytes = pack.small(MANIFEST_FILE)?;
    let got = hex(&Sha256::digest(&manifest_bytes));
    if got != manifest_sha {
        return Err(PackError::HashMismatch {
            file: MANIFEST_FILE.into(),
            reason: format!("manifest.sig signs SHA-256 {manifest_sha}, the file has {got}"),
        });
    }
    let m: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| malformed(MANIFEST_FILE, e))?;
    if m.format != MANIFEST_FORMAT || m.origin != origin {
        return Err(malformed(
            MANIFEST_FILE,
            format!(
                "format {:?} of {:?}; the seal is for {MANIFEST_FORMAT:?} of {origin:?}",
                m.format, m.origin
            ),
        ));
    }
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    if listed.len() != m.files.len() {
        return Err(malformed(MANIFEST_FILE, "a file is listed twice"));
    }
    let names: Vec<String> = pack.zip.file_names().map(str::to_string).collect();
    let mut seen = BTreeSet::new();
    for name in &names {
        if !seen.insert(name.as_str()) {
            return Err(malformed(name, "is in the pack twice"));
        }
        if name != MANIFEST_FILE && name != SEAL_FILE && !listed.contains(name.as_str()) {
            return Err(PackError::Unlisted { file: name.clone() });
        }
    }
    for entry in &m.files {
        let (sha, bytes) = pack.digest(&entry.name)?;
        if sha != entry.sha256 || bytes != entry.bytes {
            return Err(PackError::HashMismatch {
                file: entry.name.clone(),
                reason: format!(
                    "expected {} bytes with SHA-256 {}, found {bytes} bytes with {sha}",
                    entry.bytes, entry.sha256
                ),
            });
        }
    }
    for required in [
        START_FILE,
        END_FILE,
        CONSISTENCY_FILE,
        SAMPLE_FILE,
        RECORDS_FILE,
        EVENTS_JSONL_FILE,
        EVENTS_CSV_FILE,
        KEY_FILE,
    ] {
        if !listed.contains(required) {
            return Err(PackError::Missing {
                file: required.into(),
            });
        }
    }
    if m.start.file != START_FILE || m.end.file != END_FILE || m.sample.file != SAMPLE_FILE {
        return Err(malformed(
            MANIFEST_FILE,
            "the checkpoints and the sample are not at their places",
        ));
    }
    let start = checkpoint(&mut pack, &m.start, &origin, &verifier)?;
    let end = checkpoint(&mut pack, &m.end, &origin, &verifier)?;
    let p = &m.period;
    if start.size != p.first_seq
        || end.size != p.end_seq
        || p.rows != p.end_seq.saturating_sub(p.first_seq)
    {
        return Err(invalid(
            MANIFEST_FILE,
            format!(
                "rows {} (seq {} to {}) do not match the checkpoints' trees of {} and {} records",
                p.rows, p.first_seq, p.end_seq, start.size, end.size
            ),
        ));
    }
    let mut witnessed_linked = false;
    let witnessed_note = match &m.witnessed_checkpoint {
        Some(file) => {
            let witnessed = open_checkpoint(&mut pack, file, &origin, &verifier)?;
            // Without a proof in the pack, trees of other sizes cannot be
            // compared; one of the same size must be the same tree.
            if witnessed.size == end.size && witnessed.root != end.root {
                return Err(invalid(
                    file,
                    format!(
                        "has another root than the end checkpoint's tree of {} records: the log was forked",
                        end.size
                    ),
                ));
            }
            witnessed_linked = witnessed.size == end.size
                || (listed.contains(WITNESSED_CONSISTENCY_FILE)
                    && witnessed_consistent(&mut pack, &witnessed, &end)?);
            Some(pack.text(file)?)
        }
        None => None,
    };
    let consistency: ConsistencyProof = pack.json(CONSISTENCY_FILE)?;
    if (
        consistency.old_size,
        consistency.old_root,
        consistency.new_size,
        consistency.new_root,
    ) != (start.size, start.root, end.size, end.root)
    {
        return Err(invalid(
            CONSISTENCY_FILE,
            "is not a proof between the start and end checkpoints".into(),
        ));
    }
    if !consistency.verify() {
        return Err(invalid(CONSISTENCY_FILE, format!("does not prove that the tree of {} records extends the tree of {}: the log was forked or rewritten", end.size, start.size)));
    }
    let sample: SampleFile = pack.json(SAMPLE_FILE)?;
    let want = sample_seqs(m.sample.seed, m.sample.count, start.size, end.size);
    let got: Vec<u64> = sample.proofs.iter().map(|p| p.seq).collect();
    if sample.seed != m.sample.seed
        || got != want
        || sample.tree_size != end.size
        || sample.root != hash_to_hex(&end.root)
    {
        return Err(invalid(
            SAMPLE_FILE,
            format!(
                "is not the sample of seed {} ({} proofs against the end checkpoint)",
                m.sample.seed,
                want.len()
            ),
        ));
    }
    let mut sampled = BTreeMap::new();
    for proof in &sample.proofs {
        if proof.tree_size != end.size || proof.root != end.root || !proof.verify() {
            return Err(invalid(
                SAMPLE_FILE,
                format!(
                    "the inclusion proof of seq {} does not lead to the end checkpoint's root",
                    proof.seq
                ),
            ));
        }
        sampled.insert(proof.seq, proof.leaf);
    }
    let start_head = match start.head {
        Some(h) => h,
        None if start.size == 0 => {
            let id = log_id_of(&origin)
                .ok_or_else(|| malformed(MANIFEST_FILE, "the origin does not end with a log id"))?;
            ChainHash::genesis(&id)
        }
        None => return Err(invalid(START_FILE, "has no chain head".into())),
    };
    let (rows, in_period) = check_rows(path, &m, start_head, &end, &sampled)?;
    if in_period != p.rows_in_period {
        return Err(invalid(
            MANIFEST_FILE,
            format!(
                "says {} rows are in the period, the rows say {in_period}",
                p.rows_in_period
            ),
        ));
    }
    Ok(CheckReport {
        origin,
        key: verifier.to_text(),
        key_given: key.is_some(),
        since: p.since.clone(),
        until: p.until.clone(),
        first_seq: p.first_seq,
        end_seq: p.end_seq,
        rows,
        sample: sample.proofs.len() as u64,
        files: m.files.len(),
        witnessed: m.witnessed_checkpoint.is_some(),
        witnessed_note,
        witnessed_linked,
    })
}
