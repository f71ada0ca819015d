//! `archive_sealed`: upload the sealed segments not yet archived, their
//! indexes, a manifest, and optionally a signed checkpoint.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::bucket::Created;
use super::manifest::{
    checkpoint_key, manifest_key, newest_manifest, Manifest, ObjectEntry, SegmentEntry,
    MANIFEST_FORMAT,
};
use super::{sha256_hex, ArchiveError, ArchiveTarget, Bucket, ObjectLock};
use crate::event::Timestamp;
use crate::format::segment::{self, Scanner, SegmentHeader, SegmentTrailer, Step, HEADER_BYTES};
use crate::hash::checkpoint::{Checkpoint, NoteSigner};
use crate::index::{self, IndexReader, MemoryFile};
use crate::log::Log;
use crate::log::RetentionOutcome;
use crate::retention::RetentionPolicy;
use crate::storage::{read_exact_at, FsStorage, Storage, StorageFile};
use crate::Error;

/// How to archive.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Also download every object already archived and compare its SHA-256
    /// with the manifest (and with the local segment, while it exists).
    /// Default false: already archived objects are checked by a LIST (each
    /// present, with its recorded size), and local segments against the
    /// manifest's seqs and chain links.
    pub verify_existing: bool,
    /// Sign a checkpoint of the archived records (at the archive's size) with
    /// this key and upload it. Default none.
    pub checkpoint_signer: Option<NoteSigner>,
    /// The origin prefix of that checkpoint (`<prefix>/<log id>`). Default
    /// `chainlog`, as `chainlog checkpoint`.
    pub origin_prefix: String,
    /// Upload this signed checkpoint note (from `chainlog checkpoint`).
    /// Default none.
    pub checkpoint_note: Option<String>,
    /// Write with `If-None-Match: *` (true, the default). False falls back
    /// to a HEAD before each PUT, for servers that do not support
    /// conditional PUTs; that leaves a window in which two concurrent
    /// writers could both write.
    pub conditional_put: bool,
    /// Write every object of the run (segments, indexes, manifest,
    /// checkpoint) with S3 Object Lock: this mode, until this many days
    /// after the run starts. The bucket must have Object Lock enabled; S3
    /// refuses the PUTs otherwise. Default none: objects get the bucket's
    /// default retention, if it has one.
    pub object_lock: Option<ObjectLock>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            verify_existing: false,
            checkpoint_signer: None,
            origin_prefix: "chainlog".into(),
            checkpoint_note: None,
            conditional_put: true,
            object_lock: None,
        }
    }
}

/// What an archive run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOutcome {
    /// The log's id.
    pub log_id: String,
    /// The segments archived by this run (base seqs), oldest first.
    pub uploaded_segments: Vec<u64>,
    /// Objects written by this run.
    pub uploaded_objects: usize,
    /// Bytes written by this run.
    pub uploaded_bytes: u64,
    /// Objects an interrupted earlier run had written, found identical and
    /// taken into the manifest without uploading them again.
    pub adopted_objects: Vec<String>,
    /// Segments that were archived before this run.
    pub already_archived: usize,
    /// Objects whose content was downloaded and compared
    /// ([`ArchiveOptions::verify_existing`]).
    pub verified_objects: usize,
    /// The manifest written by this run.
    pub manifest: Option<String>,
    /// The checkpoint uploaded (or found already uploaded), and its size.
    pub checkpoint: Option<(String, u64)>,
    /// The archive's seq range after the run.
    pub archived_seqs: Option<(u64, u64)>,
    /// The local segment that is not sealed yet (archived once it is).
    pub active_segment: Option<u64>,
    /// The retain-until date (RFC 3339) of the objects this run wrote,
    /// with [`ArchiveOptions::object_lock`].
    pub locked_until: Option<String>,
}

/// A sealed local segment.
struct LocalSegment {
    base_seq: u64,
    header: SegmentHeader,
    trailer: SegmentTrailer,
    file: Arc<dyn StorageFile>,
    bytes: u64,
}

/// The local log's sealed segments, oldest first, and the unsealed newest.
fn local_segments(dir: &Path) -> Result<(Vec<LocalSegment>, Option<u64>), ArchiveError> {
    let storage = FsStorage;
    let names = storage.list(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(dir.to_path_buf()),
        _ => Error::Io {
            path: dir.to_path_buf(),
            source: e,
        },
    })?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        return Err(Error::NotFound(dir.to_path_buf()).into());
    }
    let mut sealed = Vec::new();
    let mut active = None;
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let name = segment::file_name(base);
        let path = dir.join(&name);
        let file = storage.open(&path, false).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let bytes = file.size().map_err(|e| Error::Io { path, source: e })?;
        let header = segment::read_header(&*file, &name)?;
        let trailer = match segment::read_trailer(&*file, &name, header.segment_bytes) {
            // The newest segment's trailer may be being written right now
            // (or was torn by a crash): it is not sealed yet.
            Err(e) if i == last && e.is_corruption() => None,
            other => other?,
        };
        match trailer {
            Some(trailer) => sealed.push(LocalSegment {
                base_seq: base,
                header,
                trailer,
                file,
                bytes,
            }),
            None if i == last => active = Some(base),
            None => return Err(segment::missing_trailer(&name, header.segment_bytes).into()),
        }
    }
    Ok((sealed, active))
}

fn read_all(file: &dyn StorageFile, len: u64, path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let len = usize::try_from(len)
        .map_err(|_| ArchiveError::Refused(format!("{} is too large", path.display())))?;
    let mut bytes = vec![0; len];
    read_exact_at(file, &mut bytes, 0).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(bytes)
}

/// Whether `bytes` is an intact index describing this sealed segment.
fn index_describes(bytes: &[u8], seg: &LocalSegment) -> bool {
    let name = index::file_name(seg.base_seq);
    match IndexReader::open(Arc::new(MemoryFile(bytes.to_vec())), &name) {
        Ok(reader) => {
            let h = reader.header();
            h.base_seq == seg.base_seq
                && h.records == seg.trailer.record_count
                && h.data_end == seg.trailer.data_end
                && h.last_hash == seg.trailer.last_hash
        }
        Err(_) => false,
    }
}

/// The segment's index: the local file when it is intact and current,
/// otherwise rebuilt from the segment.
fn index_bytes(dir: &Path, seg: &LocalSegment) -> Result<Vec<u8>, ArchiveError> {
    let path = dir.join(index::file_name(seg.base_seq));
    if let Ok(file) = FsStorage.open(&path, false) {
        if let Ok(len) = file.size() {
            if len <= seg.bytes {
                if let Ok(bytes) = read_all(&*file, len, &path) {
                    if index_describes(&bytes, seg) {
                        return Ok(bytes);
                    }
                }
            }
        }
    }
    Ok(index::build_sealed(
        seg.file.clone(),
        seg.base_seq,
        &seg.trailer,
        index::DEFAULT_BLOCK_BYTES,
    )?)
}

/// The local segment's header and trailer against its manifest entry.
fn local_matches_entry(seg: &LocalSegment, entry: &SegmentEntry) -> bool {
    seg.header.prev_hash == entry.prev_hash
        && seg.trailer.last_hash == entry.last_hash
        && seg.trailer.last_seq == entry.last_seq
        && seg.bytes == entry.segment.bytes
}

/// Checks that the archive holds every object its newest manifest names:
/// present with the recorded size (a LIST), and with `deep`, the recorded
/// SHA-256 (a download). Returns what is wrong, and how many objects were
/// downloaded.
fn check_archived(
    bucket: &Bucket,
    manifest: &Manifest,
    deep: bool,
) -> Result<(Vec<String>, usize), ArchiveError> {
    let listed: HashMap<String, u64> = bucket
        .list("")?
        .into_iter()
        .map(|(name, meta)| (name, meta.size))
        .collect();
    let mut wrong = Vec::new();
    let mut downloaded = 0;
    for object in manifest.objects() {
        match listed.get(&object.name) {
            None => wrong.push(format!("{} is missing", bucket.url(&object.name))),
            Some(&size) if size != object.bytes => wrong.push(format!(
                "{} is {size} bytes, the manifest says {}",
                bucket.url(&object.name),
                object.bytes
            )),
            Some(&size) if deep => {
                downloaded += 1;
                let digest = bucket.digest(&object.name, size)?;
                if digest != object.sha256 {
                    wrong.push(format!(
                        "{} has SHA-256 {digest}, the manifest says {}",
                        bucket.url(&object.name),
                        object.sha256
                    ));
                }
            }
            Some(_) => {}
        }
    }
    Ok((wrong, downloaded))
}

/// Writes `bytes` as `name` unless it is there; an object already there must
/// hold the same bytes (or, for an index, be an intact index of the same
/// segment). Returns the entry, and whether this call wrote it.
fn put_or_match(
    bucket: &Bucket,
    name: &str,
    bytes: Vec<u8>,
    index_of: Option<&LocalSegment>,
    tampered: &mut Vec<String>,
) -> Result<(ObjectEntry, bool), ArchiveError> {
    let sha256 = sha256_hex(&bytes);
    let len = bytes.len() as u64;
    match bucket.put_new(name, bytes)? {
        Created::New => Ok((
            ObjectEntry {
                name: name.to_string(),
                bytes: len,
                sha256,
            },
            true,
        )),
        Created::AlreadyThere => {
            let existing = bucket.get(name)?;
            let existing_sha = sha256_hex(&existing);
            if existing_sha != sha256 {
                match index_of {
                    // An index is derived data: one built with other settings
                    // is as good, as long as it is intact and current.
                    Some(seg) if index_describes(&existing, seg) => {}
                    _ => tampered.push(format!(
                        "{} exists with SHA-256 {existing_sha}, but the local copy's is {sha256}",
                        bucket.url(name)
                    )),
                }
            }
            Ok((
                ObjectEntry {
                    name: name.to_string(),
                    bytes: existing.len() as u64,
                    sha256: existing_sha,
                },
                false,
            ))
        }
    }
}

/// Writes `bytes` as `name` unless it is there, when the object there must
/// hold the same bytes (else a line in `tampered`): the create-only write of
/// every object that is never rewritten (the lake export's too).
pub(super) fn put_exact(
    bucket: &Bucket,
    name: &str,
    bytes: Vec<u8>,
    tampered: &mut Vec<String>,
) -> Result<(ObjectEntry, bool), ArchiveError> {
    put_or_match(bucket, name, bytes, None, tampered)
}

/// The checkpoint of the archive: the tree over records `0..=last_seq`,
/// computed from the local segment that starts right after it (its link
/// block) or from the one that holds it.
fn archive_checkpoint(
    dir: &Path,
    sealed: &[LocalSegment],
    active: Option<u64>,
    last: &SegmentEntry,
    origin: String,
) -> Result<Checkpoint, ArchiveError> {
    let size = last.last_seq + 1;
    let checkpoint = |root| Checkpoint {
        origin: origin.clone(),
        size,
        root,
        head: Some(last.last_hash),
    };
    let storage = FsStorage;
    let next = sealed
        .iter()
        .map(|s| s.base_seq)
        .chain(active)
        .find(|&b| b == size);
    if let Some(base) = next {
        let name = segment::file_name(base);
        let path = dir.join(&name);
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::Io { path, source: e })?;
        let header = segment::read_header(&*file, &name)?;
        let frontier = segment::read_start_frontier(&*file, &name, &header)?;
        return Ok(checkpoint(frontier.root()));
    }
    let Some(seg) = sealed.iter().find(|s| s.base_seq == last.base_seq) else {
        return Err(ArchiveError::Refused(format!(
            "cannot sign a checkpoint at size {size}: the local segments around seq {} are gone",
            last.last_seq
        )));
    };
    let name = segment::file_name(seg.base_seq);
    let mut tree = segment::read_start_frontier(&*seg.file, &name, &seg.header)?;
    let mut scan = Scanner::new(seg.file.clone(), &name, HEADER_BYTES, seg.trailer.data_end);
    loop {
        match scan.next_step()? {
            Step::Frame { frame, .. } => tree.push(&frame.hash.0),
            Step::End { .. } => break,
            Step::Bad { offset, error } => {
                return Err(Error::Corrupted {
                    file: name,
                    offset,
                    reason: error.to_string(),
                }
                .into())
            }
        }
    }
    if tree.size() != size {
        return Err(Error::Corrupted {
            file: name,
            offset: seg.trailer.data_end,
            reason: format!(
                "the tree covers {} records, the trailer says {size}",
                tree.size()
            ),
        }
        .into());
    }
    Ok(checkpoint(tree.root()))
}

/// The body of a signed note (the text before the blank line).
fn note_body(note: &str) -> Option<&str> {
    note.find("\n\n").map(|i| &note[..=i])
}

/// Archives the sealed segments of the log in `log_dir` that the archive at
/// `target` does not hold yet, with their index files; then writes a
/// manifest, and uploads a signed checkpoint if asked.
///
/// Safe to run while the log is being appended to (sealed segments never
/// change), and to rerun: only what is missing is uploaded. It fails with
/// [`ArchiveError::Tampered`], uploading nothing, when an object the
/// newest manifest names is missing or has another size (or, with
/// [`ArchiveOptions::verify_existing`], another SHA-256), when a local
/// segment disagrees with its archived copy, or when an object left by an
/// interrupted run differs from the local segment.
pub fn archive_sealed(
    log_dir: &Path,
    target: &ArchiveTarget,
    options: &ArchiveOptions,
) -> Result<ArchiveOutcome, ArchiveError> {
    let (sealed, active) = local_segments(log_dir)?;
    let log_id = match sealed.first() {
        Some(s) => s.header.log_id.to_string(),
        None => {
            let base = active.unwrap_or(0);
            let name = segment::file_name(base);
            let path = log_dir.join(&name);
            let file = FsStorage
                .open(&path, false)
                .map_err(|e| Error::Io { path, source: e })?;
            segment::read_header(&*file, &name)?.log_id.to_string()
        }
    };
    let mut bucket = Bucket::connect(target, options.conditional_put)?;
    // One date for the whole run, so that its objects expire together.
    let locked_until = match &options.object_lock {
        Some(lock) => {
            let until = lock.retain_until(Timestamp::now())?;
            bucket = bucket.with_object_lock(lock.mode, &until)?;
            Some(until)
        }
        None => None,
    };
    let previous = newest_manifest(&bucket)?;
    let mut segments = Vec::new();
    let mut tampered = Vec::new();
    let mut verified_objects = 0;
    if let Some((_, manifest)) = &previous {
        if manifest.log_id != log_id {
            return Err(ArchiveError::WrongLog {
                target: target.to_string(),
                archived: manifest.log_id.clone(),
                local: log_id,
            });
        }
        let (wrong, downloaded) = check_archived(&bucket, manifest, options.verify_existing)?;
        tampered.extend(wrong);
        verified_objects = downloaded;
        let by_base: HashMap<u64, &SegmentEntry> =
            manifest.segments.iter().map(|s| (s.base_seq, s)).collect();
        for seg in &sealed {
            let Some(entry) = by_base.get(&seg.base_seq) else {
                continue;
            };
            let mut differs = !local_matches_entry(seg, entry);
            if !differs && options.verify_existing {
                let path = log_dir.join(segment::file_name(seg.base_seq));
                differs =
                    sha256_hex(&read_all(&*seg.file, seg.bytes, &path)?) != entry.segment.sha256;
            }
            if differs {
                tampered.push(format!(
                    "the local segment {} differs from its archived copy {}",
                    log_dir.join(&entry.segment.name).display(),
                    bucket.url(&entry.segment.name)
                ));
            }
        }
        segments = manifest.segments.clone();
    }
    if !tampered.is_empty() {
        return Err(ArchiveError::Tampered(tampered));
    }
    let already_archived = segments.len();
    let archived_last = segments
        .last()
        .map(|s: &SegmentEntry| (s.last_seq, s.last_hash));
    let new: Vec<&LocalSegment> = sealed
        .iter()
        .filter(|s| archived_last.is_none_or(|(last, _)| s.base_seq > last))
        .collect();
    if let (Some((last, hash)), Some(first)) = (archived_last, new.first()) {
        if first.base_seq != last + 1 || first.header.prev_hash != hash {
            return Err(ArchiveError::Refused(format!(
                "the archive ends at seq {last}, but the next local segment starts at seq {} (segments were deleted locally before they were archived); archive this log under a new prefix",
                first.base_seq
            )));
        }
    }
    let mut outcome = ArchiveOutcome {
        log_id: log_id.clone(),
        uploaded_segments: Vec::new(),
        uploaded_objects: 0,
        uploaded_bytes: 0,
        adopted_objects: Vec::new(),
        already_archived,
        verified_objects,
        manifest: None,
        checkpoint: None,
        archived_seqs: None,
        active_segment: active,
        locked_until,
    };
    for seg in &new {
        let name = segment::file_name(seg.base_seq);
        let path = log_dir.join(&name);
        let bytes = read_all(&*seg.file, seg.bytes, &path)?;
        let index = index_bytes(log_dir, seg)?;
        let (segment_entry, wrote) = put_or_match(&bucket, &name, bytes, None, &mut tampered)?;
        note_put(&mut outcome, &segment_entry, wrote);
        let index_name = index::file_name(seg.base_seq);
        let (index_entry, wrote) =
            put_or_match(&bucket, &index_name, index, Some(seg), &mut tampered)?;
        note_put(&mut outcome, &index_entry, wrote);
        if !tampered.is_empty() {
            return Err(ArchiveError::Tampered(tampered));
        }
        outcome.uploaded_segments.push(seg.base_seq);
        segments.push(SegmentEntry {
            base_seq: seg.base_seq,
            last_seq: seg.trailer.last_seq,
            record_count: seg.trailer.record_count,
            prev_hash: seg.header.prev_hash,
            last_hash: seg.trailer.last_hash,
            segment: segment_entry,
            index: Some(index_entry),
        });
    }
    if let (Some(last), false) = (segments.last(), new.is_empty()) {
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            log_id: log_id.clone(),
            created_at: Timestamp::now(),
            segments: segments.clone(),
        };
        let key = manifest_key(last.last_seq);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ArchiveError::Refused(format!("the manifest does not serialize: {e}")))?;
        let len = json.len() as u64;
        match bucket.put_new(&key, json)? {
            Created::New => {
                outcome.uploaded_objects += 1;
                outcome.uploaded_bytes += len;
            }
            Created::AlreadyThere => {
                // A concurrent run wrote it first: it must list the same segments.
                let theirs = Manifest::parse(&bucket.get(&key)?, &bucket.url(&key))?;
                if theirs.segments != manifest.segments {
                    return Err(ArchiveError::Tampered(vec![format!(
                        "{} exists and lists other objects than this run archived",
                        bucket.url(&key)
                    )]));
                }
            }
        }
        outcome.manifest = Some(key);
    }
    outcome.archived_seqs = segments
        .first()
        .zip(segments.last())
        .map(|(first, last)| (first.base_seq, last.last_seq));
    let note = match (&options.checkpoint_signer, &options.checkpoint_note) {
        (Some(signer), _) => match segments.last() {
            Some(last) => {
                let origin = format!("{}/{log_id}", options.origin_prefix);
                let checkpoint = archive_checkpoint(log_dir, &sealed, active, last, origin)?;
                let note = checkpoint
                    .sign(signer)
                    .map_err(|e| ArchiveError::Refused(format!("signing the checkpoint: {e}")))?;
                Some((note, checkpoint.size))
            }
            None => None,
        },
        (None, Some(note)) => {
            let checkpoint = note_body(note)
                .ok_or_else(|| ArchiveError::Refused("the checkpoint is not a signed note".into()))
                .and_then(|body| {
                    Checkpoint::parse_body(body)
                        .map_err(|e| ArchiveError::Refused(format!("the checkpoint: {e}")))
                })?;
            if !checkpoint.origin.ends_with(&format!("/{log_id}")) {
                return Err(ArchiveError::Refused(format!(
                    "the checkpoint is for {:?}, not log {log_id}",
                    checkpoint.origin
                )));
            }
            Some((note.clone(), checkpoint.size))
        }
        (None, None) => None,
    };
    if let Some((note, size)) = note {
        let key = checkpoint_key(size, &sha256_hex(note.as_bytes()));
        let (entry, wrote) = put_or_match(&bucket, &key, note.into_bytes(), None, &mut tampered)?;
        if !tampered.is_empty() {
            return Err(ArchiveError::Tampered(tampered));
        }
        note_put(&mut outcome, &entry, wrote);
        outcome.checkpoint = Some((key, size));
    }
    Ok(outcome)
}

fn note_put(outcome: &mut ArchiveOutcome, entry: &ObjectEntry, wrote: bool) {
    if wrote {
        outcome.uploaded_objects += 1;
        outcome.uploaded_bytes += entry.bytes;
    } else {
        outcome.adopted_objects.push(entry.name.clone());
    }
}

/// The base seqs of the segments archived at `target`: named by its newest
/// manifest and present in the bucket with their recorded size.
///
/// Retention that deletes only archived segments
/// ([`apply_retention_archived`], `chainlog retention --only-archived`)
/// uses [`confirm_archived`] instead, which also compares the local files.
pub fn archived_bases(target: &ArchiveTarget) -> Result<BTreeSet<u64>, ArchiveError> {
    archived(target, None)
}

/// Which of the local segments `bases` (of the log in `log_dir`) have an
/// exact archived copy at `target`: named by the newest manifest, present
/// in the bucket with the recorded size, and with the recorded SHA-256
/// equal to the local file's. A local segment whose SHA-256 differs from
/// the manifest's is [`ArchiveError::Tampered`]. Reads each of those local
/// segments once.
pub fn confirm_archived(
    target: &ArchiveTarget,
    log_dir: &Path,
    bases: &[u64],
) -> Result<BTreeSet<u64>, ArchiveError> {
    archived(target, Some((log_dir, bases)))
}

/// Applies `policy` to `log` ([`Log::apply_retention_filtered`]), deleting
/// only segments with an exact archived copy at `target`
/// ([`confirm_archived`], reading the local segments from `log.dir()` on
/// the file system): the due segments from the oldest up to the first one
/// that is not archived. That one and every due segment after it are kept
/// and listed in [`RetentionOutcome::kept`]. Open `log` for writing, so
/// that nothing else changes its segments meanwhile.
pub fn apply_retention_archived(
    log: &Log,
    target: &ArchiveTarget,
    policy: &RetentionPolicy,
) -> Result<RetentionOutcome, ArchiveError> {
    log.apply_retention_filtered(policy, |due| {
        let bases: Vec<u64> = due.iter().map(|s| s.base_seq).collect();
        confirm_archived(target, log.dir(), &bases)
    })
}

fn archived(
    target: &ArchiveTarget,
    local: Option<(&Path, &[u64])>,
) -> Result<BTreeSet<u64>, ArchiveError> {
    let bucket = Bucket::connect(target, true)?;
    let Some((_, manifest)) = newest_manifest(&bucket)? else {
        return Ok(BTreeSet::new());
    };
    let listed: HashMap<String, u64> = bucket
        .list("")?
        .into_iter()
        .map(|(name, meta)| (name, meta.size))
        .collect();
    let mut bases = BTreeSet::new();
    let mut tampered = Vec::new();
    for entry in &manifest.segments {
        if listed.get(&entry.segment.name) != Some(&entry.segment.bytes) {
            continue;
        }
        if let Some((dir, wanted)) = local {
            if !wanted.contains(&entry.base_seq) {
                continue;
            }
            let path = dir.join(&entry.segment.name);
            let file = FsStorage.open(&path, false).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            let len = file.size().map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            if sha256_hex(&read_all(&*file, len, &path)?) != entry.segment.sha256 {
                tampered.push(format!(
                    "the local segment {} differs from its archived copy {}",
                    path.display(),
                    bucket.url(&entry.segment.name)
                ));
                continue;
            }
        }
        bases.insert(entry.base_seq);
    }
    if !tampered.is_empty() {
        return Err(ArchiveError::Tampered(tampered));
    }
    Ok(bases)
}
