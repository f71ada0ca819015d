//! `restore`: rebuild a local log directory from an archive.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::manifest::{latest_checkpoint, newest_manifest, ObjectEntry};
use super::{hex, ArchiveError, ArchiveTarget, Bucket};
use crate::storage::FsStorage;
use crate::verify::{verify_dir_with, Report, VerifyOptions};

/// Bytes per ranged GET while restoring.
const CHUNK_BYTES: u64 = 8 << 20;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The manifest restored from.
    pub manifest: String,
    /// Segments written.
    pub segments: u64,
    /// Files written (segments and indexes).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The restored log, verified.
    pub report: Report,
    /// The newest signed checkpoint in the archive (its key), to verify the
    /// restored log against with `chainlog verify --checkpoint`.
    pub checkpoint: Option<String>,
}

fn io_error(doing: &str, path: &Path, e: std::io::Error) -> ArchiveError {
    ArchiveError::io(format!("{doing} {}", path.display()), e)
}

/// Downloads `object` into `dir` through a temporary file, checking its
/// size and SHA-256 against the manifest before renaming it into place.
fn download(bucket: &Bucket, object: &ObjectEntry, dir: &Path) -> Result<(), ArchiveError> {
    let path = dir.join(&object.name);
    let temp = dir.join(format!("{}.restore", object.name));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| io_error("creating", &temp, e))?;
    let written = (|| {
        let mut hasher = Sha256::new();
        let mut at = 0;
        while at < object.bytes {
            let end = object.bytes.min(at + CHUNK_BYTES);
            let bytes = bucket.get_range(&object.name, at..end)?;
            if bytes.len() as u64 != end - at {
                return Err(ArchiveError::Tampered(vec![format!(
                    "{} is shorter than the manifest says ({} bytes)",
                    bucket.url(&object.name),
                    object.bytes
                )]));
            }
            hasher.update(&bytes);
            file.write_all(&bytes)
                .map_err(|e| io_error("writing", &temp, e))?;
            at = end;
        }
        let digest = hex(&hasher.finalize());
        if digest != object.sha256 {
            return Err(ArchiveError::Tampered(vec![format!(
                "{} has SHA-256 {digest}, the manifest says {}",
                bucket.url(&object.name),
                object.sha256
            )]));
        }
        file.sync_all().map_err(|e| io_error("syncing", &temp, e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    fs::rename(&temp, &path).map_err(|e| io_error("renaming", &temp, e))
}

/// Rebuilds the log archived at `target` in `dir`, which must be empty or
/// not exist: every segment and index the newest manifest names is
/// downloaded (each checked against the manifest's size and SHA-256, and
/// written through a temporary file and `fsync`), and the result is
/// verified as a local log. The restored log opens with [`crate::Log::open`]
/// and continues in a new segment.
pub fn restore(
    target: &ArchiveTarget,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreOutcome, ArchiveError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ArchiveError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("reading", dir, e)),
    }
    let bucket = Bucket::connect(target, true)?;
    let Some((key, manifest)) = newest_manifest(&bucket)? else {
        return Err(ArchiveError::NoArchive(target.to_string()));
    };
    let checkpoint = latest_checkpoint(&bucket)?.map(|(key, _)| bucket.url(&key));
    fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
    let mut bytes = 0;
    let mut files = 0;
    for object in manifest.objects() {
        download(&bucket, object, dir)?;
        bytes += object.bytes;
        files += 1;
        progress(bytes);
    }
    let dir_path: PathBuf = dir.to_path_buf();
    File::open(&dir_path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))?;
    let options = VerifyOptions {
        checkpoint: None,
        ..VerifyOptions::default()
    };
    let report = verify_dir_with(&FsStorage, dir, &options, &mut |_| {})?;
    Ok(RestoreOutcome {
        manifest: bucket.url(&key),
        segments: manifest.segments.len() as u64,
        files,
        bytes,
        report,
        checkpoint,
    })
}
