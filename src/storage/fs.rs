//! The real file system: [`FsStorage`], with `fdatasync`, preallocation,
//! write-back hints and an `flock` on the log directory's lock file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::{DirLock, Storage, StorageFile, LOCK_FILE_NAME};

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
        self.0.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
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

#[derive(Debug)]
struct FsLock(#[allow(dead_code, reason = "held for its flock until dropped")] File);

impl DirLock for FsLock {}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(io::Error::from)?;
        Ok(Box::new(FsLock(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::read_exact_at;

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
