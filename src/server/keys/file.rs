//! Reading, writing and locking `keys.json`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::server::key_policy::{check_key_file, KeyFileCheck};

use super::store::{FileStamp, KeyFile};
use super::*;

/// Reads and checks the key file; `None` when there is none.
pub(super) fn read_key_file(
    path: &Path,
    other_owner: bool,
) -> Result<(Option<FileStamp>, Option<KeyFile>), KeyError> {
    let io_err = |source| KeyError::Io {
        doing: "reading",
        path: path.to_path_buf(),
        source,
    };
    let bad = |reason: String| KeyError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyError::Unsafe(UnsafeFileError {
                path: path.to_path_buf(),
                reason: "it is a symbolic link; the key file is never read through a link".into(),
            }))
        }
        Err(e) => return Err(io_err(e)),
    };
    let metadata = file.metadata().map_err(io_err)?;
    check_key_file(&metadata, path, other_owner).map_err(|e| match e {
        KeyFileCheck::Unsafe(e) => KeyError::Unsafe(e),
        KeyFileCheck::Io(e) => io_err(e),
    })?;
    if metadata.len() > MAX_KEYS_FILE_BYTES {
        return Err(bad(format!("it is over {MAX_KEYS_FILE_BYTES} bytes")));
    }
    let stamp = FileStamp::from_metadata(&metadata);
    let parsed: KeyFile =
        serde_json::from_reader(io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    if parsed.format != KEYS_FORMAT || parsed.version != KEYS_VERSION {
        return Err(bad(format!(
            "format {:?} version {} (this build reads {KEYS_FORMAT:?} version {KEYS_VERSION})",
            parsed.format, parsed.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for key in &parsed.keys {
        if !is_key_id(&key.id) || !seen.insert(key.id.as_str()) {
            return Err(bad(format!("bad or repeated key id {:?}", key.id)));
        }
        if unhex32(&key.secret_sha256).is_none() {
            return Err(bad(format!(
                "key {}: secret_sha256 is not 64 hex digits",
                key.id
            )));
        }
        validate_workspace_name(&key.workspace).map_err(|e| bad(format!("key {}: {e}", key.id)))?;
    }
    Ok((Some(stamp), Some(parsed)))
}

/// Replaces the key file: temporary file (mode 0600), fsync, rename,
/// directory fsync.
pub(super) fn write_key_file(dir: &Path, path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let temp = dir.join(format!("{KEYS_FILE_NAME}.tmp"));
    let io_err = |doing, p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyError::Io {
            doing,
            path: p,
            source,
        }
    };
    let mut text = serde_json::to_vec_pretty(file).map_err(|e| KeyError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &temp)(e)),
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_err("creating", &temp))?;
    // The mode given at creation is masked by the umask; 0600 is narrower
    // than any umask leaves, but set it explicitly all the same.
    out.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err("setting the mode of", &temp))?;
    out.write_all(&text).map_err(io_err("writing", &temp))?;
    out.sync_all().map_err(io_err("syncing", &temp))?;
    drop(out);
    fs::rename(&temp, path).map_err(io_err("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// The exclusive lock held while the key file changes (blocks until free).
pub(super) fn lock_keys(dir: &Path) -> Result<File, KeyError> {
    let path = dir.join(KEYS_LOCK_FILE_NAME);
    crate::storage::perms::lock_private_file(&path).map_err(|source| KeyError::Io {
        doing: "locking",
        path,
        source,
    })
}
