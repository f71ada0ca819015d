//! Who may read and write a log's files: ownership and mode checks, and
//! sharing a log directory with a group.
//!
//! By default every file chainlog creates is 0600 and every directory 0700:
//! only the log's owner can read an audit trail. A directory can be shared
//! read-only with one group ([`share_with_group`]): it gets that group,
//! mode 0750 and the set-group-id bit, and from then on files created in it
//! are 0640 and subdirectories 0750, all of that group (the kernel passes
//! the group and the set-group-id bit down; chainlog picks the modes, see
//! [`is_group_shared`]).

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The set-group-id bit of a directory's mode.
const SET_GID: u32 = 0o2000;
/// Mode of a directory shared with a group (plus the set-group-id bit, `SET_GID`).
pub const SHARED_DIR_MODE: u32 = 0o750;
/// Mode of a file in a directory shared with a group.
pub const SHARED_FILE_MODE: u32 = 0o640;
/// Mode of a private directory (the default).
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of a private file (the default).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// A file or directory whose owner or mode makes it unsafe to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct UnsafeFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and how to fix it.
    pub reason: String,
}

/// The process's effective user id.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses `meta` (of `path`, a `what`) when it is not owned by this
/// process's user or when its mode has any of the `forbidden` bits
/// (e.g. 0o022: writable by group or others).
pub fn check_owner_and_mode(
    meta: &Metadata,
    path: &Path,
    what: &str,
    forbidden: u32,
) -> Result<(), UnsafeFileError> {
    let euid = effective_uid();
    if meta.uid() != euid {
        return Err(UnsafeFileError {
            path: path.to_path_buf(),
            reason: format!(
                "the {what} is owned by uid {} but this process runs as uid {euid}; \
                 run as the owner, or `chown` the {what} to this user if that is intended",
                meta.uid()
            ),
        });
    }
    check_mode(meta, path, what, forbidden)
}

/// Refuses `meta` (of `path`, a `what`) when its mode has any of the
/// `forbidden` bits (e.g. 0o077: any access for group or others).
pub fn check_mode(
    meta: &Metadata,
    path: &Path,
    what: &str,
    forbidden: u32,
) -> Result<(), UnsafeFileError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & forbidden != 0 {
        let who = match (mode & forbidden & 0o070 != 0, mode & forbidden & 0o007 != 0) {
            (true, true) => "its group and other users",
            (true, false) => "its group",
            _ => "other users",
        };
        return Err(UnsafeFileError {
            path: path.to_path_buf(),
            reason: format!(
                "the {what} has mode {mode:04o}, which lets {who} {}; restrict it with `chmod {:o} {}`",
                if forbidden & 0o044 != 0 { "read or change it" } else { "change it" },
                mode & !forbidden & 0o777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// Refuses a log or data directory this process's user does not own:
/// files it wrote there would belong to the wrong user (root running the
/// CLI on a service's log would leave root-owned segments the service can
/// no longer write). A directory that does not exist yet passes.
pub fn check_dir_owner(dir: &Path) -> Result<(), UnsafeFileError> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(UnsafeFileError {
                path: dir.to_path_buf(),
                reason: format!("cannot read its owner: {e}"),
            })
        }
    };
    let euid = effective_uid();
    if meta.uid() != euid {
        return Err(UnsafeFileError {
            path: dir.to_path_buf(),
            reason: format!(
                "the directory is owned by uid {} but this process runs as uid {euid}; \
                 files written now would belong to the wrong user. Run as its owner \
                 (e.g. `sudo -u <owner> chainlog …`), or pass --allow-other-owner if that is really intended",
                meta.uid()
            ),
        });
    }
    Ok(())
}

/// Whether `dir` is shared with its group: set-group-id and group-readable.
/// Files created in it are then 0640 and directories 0750.
pub fn is_group_shared(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.mode() & (SET_GID | 0o040) == SET_GID | 0o040)
}

/// Shares `dir` (created if missing) read-only with the group `gid`: its
/// group becomes `gid` and its mode 2750, so that what chainlog creates in
/// it later is group-readable and of that group. Files already there keep
/// their modes.
pub fn share_with_group(dir: &Path, gid: u32) -> io::Result<()> {
    create_private_dir_all(dir)?;
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(SET_GID | SHARED_DIR_MODE))
}

/// Creates `dir` and its missing parents with mode 0700 (0750 under a
/// group-shared directory). An existing `dir` is left as it is.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let shared = dir
        .ancestors()
        .skip(1)
        .find(|a| a.as_os_str().is_empty() || a.exists())
        .is_some_and(|a| !a.as_os_str().is_empty() && is_group_shared(a));
    let mode = if shared {
        SHARED_DIR_MODE
    } else {
        PRIVATE_DIR_MODE
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    if shared {
        // The umask may have narrowed the mode; the group is meant to read.
        fs::set_permissions(dir, fs::Permissions::from_mode(SET_GID | SHARED_DIR_MODE))?;
    }
    Ok(())
}

/// The id of the group `name` (a name in `/etc/group`, or a number).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let group = fields.next()?;
        let gid = fields.nth(1)?;
        (group == name).then(|| gid.parse().ok()).flatten()
    })
}

/// Opens (creating, mode 0600, never through a symbolic link) the lock file
/// `path` and takes its exclusive `flock`, waiting until it is free; the
/// lock lasts as long as the returned file.
pub fn lock_private_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_LOCK_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// The mode of a lock file.
const PRIVATE_LOCK_MODE: u32 = 0o600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_owner_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        for (mode, ok) in [(0o600, true), (0o644, true), (0o620, false), (0o602, false)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let meta = fs::metadata(&path).unwrap();
            let result = check_owner_and_mode(&meta, &path, "key file", 0o022);
            assert_eq!(result.is_ok(), ok, "{mode:o}: {result:?}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let meta = fs::metadata(&path).unwrap();
        let err = check_owner_and_mode(&meta, &path, "TLS key", 0o077).unwrap_err();
        assert!(err.reason.contains("chmod 600"), "{err}");
    }

    #[test]
    fn group_ids_and_private_dirs() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_private_dir_all(&deep).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&deep) & 0o777, 0o700);
        let shared = dir.path().join("s");
        share_with_group(&shared, 0).unwrap();
        assert_eq!(mode(&shared), 0o2750);
        assert!(is_group_shared(&shared));
        create_private_dir_all(&shared.join("sub")).unwrap();
        assert_eq!(mode(&shared.join("sub")) & 0o777, 0o750);
        assert!(!is_group_shared(&deep));
    }
}
