//! Who may change which keys, and whose `keys.json` is trusted: the
//! `--admin-keys` policy and the checks of the key file's owner and mode
//! (see SECURITY.md, "Keys: who can do what").

use std::fs::{self, Metadata};
use std::io;
use std::path::Path;

use crate::server::keys::{ChangedBy, KeyError, Scope};
use crate::storage::perms::{check_mode, check_owner_and_mode, UnsafeFileError};

/// Where a key change comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The machine itself: the CLI, by a user who can write the data
    /// directory.
    Local,
    /// The HTTP API, with an admin key.
    Http,
}

/// Who may create and change admin keys (`chainlog serve --admin-keys`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdminKeys {
    /// Admin keys may be created, rotated and revoked over HTTP too.
    #[default]
    Any,
    /// Admin keys are created, rotated and revoked only from the machine
    /// (`chainlog apikey`): a stolen admin key cannot mint admin keys or
    /// lock the real ones out.
    LocalOnly,
}

/// Refuses an admin key change over HTTP under [`AdminKeys::LocalOnly`].
pub(crate) fn check_via(policy: AdminKeys, scope: Scope, by: &ChangedBy) -> Result<(), KeyError> {
    if scope == Scope::Admin && by.via == Via::Http && policy == AdminKeys::LocalOnly {
        return Err(KeyError::LocalOnly);
    }
    Ok(())
}

/// Why [`check_key_file`] refused.
pub(crate) enum KeyFileCheck {
    /// Others may write it or its directory, or another user owns one.
    Unsafe(UnsafeFileError),
    /// The directory could not be looked at.
    Io(io::Error),
}

/// Refuses a key file (`meta`, of `path`) or data directory that is
/// writable by group or others or owned by another user: whoever else can
/// write the file, or replace it in its directory, could add a working
/// admin key. With `other_owner`, only the modes are checked.
pub(crate) fn check_key_file(
    meta: &Metadata,
    path: &Path,
    other_owner: bool,
) -> Result<(), KeyFileCheck> {
    let check = |meta: &Metadata, path: &Path, what: &str| {
        if other_owner {
            check_mode(meta, path, what, 0o022)
        } else {
            check_owner_and_mode(meta, path, what, 0o022)
        }
        .map_err(KeyFileCheck::Unsafe)
    };
    check(meta, path, "key file")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let dir_meta = fs::metadata(dir).map_err(KeyFileCheck::Io)?;
        check(&dir_meta, dir, "data directory")?;
    }
    Ok(())
}
