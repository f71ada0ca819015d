//! The real file system: [`FsStorage`], with `fdatasync`, preallocation,
//! write-back hints, and the writer lock: an `flock` on the log directory
//! itself and on its lock file.
//!
//! Files are created 0600 and directories 0700, or 0640 and 0750 inside a
//! directory shared with a group ([`super::perms`]). No symbolic link is
//! followed inside a log directory: files are opened with `O_NOFOLLOW`, a
//! directory to create that is a link is refused, and taking the writer
//! lock refuses a log directory with a link among its entries (a `tile/`
//! or `quarantine/` pointing elsewhere would send writes there).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::perms::{self, PRIVATE_FILE_MODE, SHARED_FILE_MODE};
use super::{DirLock, Storage, StorageFile, LOCK_FILE_NAME};

/// The error for a symbolic link found where chainlog does not follow one.
fn link_refused(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link; chainlog does not follow links inside a log directory \
         (replace it with the real file or directory)",
        path.display()
    ))
}

/// `ELOOP` from an `O_NOFOLLOW` open becomes [`link_refused`].
fn no_follow(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            link_refused(path)
        } else {
            e
        }
    }
}

/// How deep [`refuse_links_in`] looks: a log's deepest files are tiles,
/// `tile/<level>/<digits>.p/<width>`, where `<digits>` may be several
/// directories deep.
const MAX_LINK_SCAN_DEPTH: usize = 8;

/// Refuses a log directory that has a symbolic link among its entries or
/// in its subdirectories (`tile/`, `quarantine/`). The file types come with
/// the directory listing, so this costs one `readdir` per directory.
fn refuse_links_in(dir: &Path) -> io::Result<()> {
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                return Err(link_refused(&entry.path()));
            }
            if kind.is_dir() && depth < MAX_LINK_SCAN_DEPTH {
                dirs.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(())
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile(File);

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        let synced = self.0.sync_data();
        super::stats::record_sync(started.elapsed());
        synced
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    /// Writes the zeros: on ext4 and XFS this marks a preallocated
    /// (unwritten) range written at the next sync (see `log/zero_ahead.rs`).
    /// A failed write leaves zeros or nothing, which read the same.
    fn zero_ahead(&self, offset: u64, len: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let end = offset.saturating_add(len);
        let mut at = offset;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64);
            if self.0.write_all_at(&ZEROS[..n as usize], at).is_err() {
                return;
            }
            at += n;
        }
    }

    #[cfg(target_os = "linux")]
    #[expect(
        unsafe_code,
        reason = "sync_file_range has no safe wrapper in std, rustix or nix; it takes the seal's fdatasync from ~42 ms to under 1 ms (docs/PERFORMANCE.md)"
    )]
    fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor belongs to `self.0`, open for as long as
        // `self` is, and the call takes no pointers. Its result is only a
        // hint's: a failure here shows again in the next `sync_data`.
        let _ = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Reserve real blocks so later appends do not fail on a full disk and
        // fdatasync does not have to allocate; fall back to a sparse extension
        // on file systems without fallocate.
        match rustix::fs::fallocate(&self.0, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                self.0.set_len(len)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An exclusive `flock` on one open file or directory, undone on drop.
#[derive(Debug)]
struct Flock(OwnedFd);

impl Flock {
    fn take(fd: OwnedFd) -> io::Result<Flock> {
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
        Ok(Flock(fd))
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // Unlock explicitly instead of leaving it to `close`: a process
        // another thread is spawning holds a copy of this descriptor between
        // its fork and its exec, and until then the lock would outlive the
        // `Log` (a reopen right after a close was refused as "locked").
        let _ = rustix::fs::flock(&self.0, FlockOperation::Unlock);
    }
}

/// The writer lock on a log directory: a `flock` on the directory itself,
/// which deleting or replacing a file in it cannot undo, and one on its
/// `chainlog.lock` file, which is what older versions of chainlog lock.
#[derive(Debug)]
struct FsLock {
    /// Declared first, so unlocked first: the directory lock covers the
    /// whole life of the file lock.
    _file: Flock,
    _dir: Flock,
}

impl DirLock for FsLock {}

impl FsLock {
    fn take(dir: &Path) -> io::Result<FsLock> {
        let dir_lock = Flock::take(rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)?;
        // The lock file is opened relative to the directory just locked, and
        // a symbolic link in its place is refused, not followed.
        let file_fd = rustix::fs::openat(
            &dir_lock.0,
            LOCK_FILE_NAME,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(if perms::is_group_shared(dir) {
                SHARED_FILE_MODE
            } else {
                PRIVATE_FILE_MODE
            }),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => io::Error::other(format!(
                "{LOCK_FILE_NAME} is a symbolic link; the writer lock does not follow it"
            )),
            e => e.into(),
        })?;
        let lock = FsLock {
            _file: Flock::take(file_fd)?,
            _dir: dir_lock,
        };
        // Checked under the lock: no other chainlog writer can add a link
        // while it is held.
        refuse_links_in(dir)?;
        Ok(lock)
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(link_refused(dir));
        }
        perms::create_private_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let shared = path.parent().is_some_and(perms::is_group_shared);
        let mode = if shared {
            SHARED_FILE_MODE
        } else {
            PRIVATE_FILE_MODE
        };
        // `create_new` (O_EXCL) never follows a link: one in the way fails
        // as "exists".
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        if shared {
            // The umask may have narrowed the mode; the group is meant to read.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        Ok(Arc::new(FsFile(file)))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(no_follow(path))?;
        Ok(Arc::new(FsFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(FsLock::take(dir)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::read_exact_at;

    /// Regression (issue 14): a copy of the lock's descriptors, as a process
    /// spawned by another thread holds between its fork and its exec, kept
    /// the log locked after its `Log` was dropped.
    #[test]
    fn dropping_the_lock_releases_it_while_copies_of_its_descriptors_live() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FsLock::take(dir.path()).unwrap();
        let err = FsStorage.lock_dir(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // `dup` shares the open file description, as a fork does.
        let copies = (
            lock._file.0.try_clone().unwrap(),
            lock._dir.0.try_clone().unwrap(),
        );
        drop(lock);
        let again = FsStorage.lock_dir(dir.path()).unwrap();
        drop((again, copies));
    }

    #[test]
    fn writeback_hints_leave_the_data_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = FsStorage.create_new(&dir.path().join("f")).unwrap();
        file.allocate(1 << 20).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all_at(&data, 4096).unwrap();
        file.start_writeback(4096, data.len() as u64);
        // Ranges past the end, empty or beyond i64 are hints to ignore.
        file.start_writeback(1 << 30, 4096);
        file.start_writeback(0, 0);
        file.start_writeback(u64::MAX, u64::MAX);
        file.sync_data().unwrap();
        let mut back = vec![0; data.len()];
        read_exact_at(&*file, &mut back, 4096).unwrap();
        assert_eq!(back, data);
    }
}
