//! All file I/O goes through [`Storage`] and [`StorageFile`], so the same
//! engine runs on the real disk ([`FsStorage`]) and on the simulated disk
//! ([`crate::storage::sim::SimDisk`]) that tests crash and fail at will.
//!
//! The traits are deliberately small: positional reads and writes,
//! `fdatasync`, preallocation, and the few directory operations a
//! segmented log needs (list, create, rename, remove, sync).

mod clock;
mod fs;
pub mod perms;
pub mod sim;
pub mod stats;

pub use clock::SetClock;
pub use fs::FsStorage;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The file in a log directory that [`Storage::lock_dir`] locks, so that
/// one process at a time opens the log.
pub const LOCK_FILE_NAME: &str = "chainlog.lock";

/// A file opened through a [`Storage`].
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; may return fewer (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, or fails (possibly after writing part of it).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The file's current length.
    fn size(&self) -> io::Result<u64>;
    /// Extends the file to `len` bytes, reserving the space (reads return zeros).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Asks the OS to start writing `len` bytes at `offset` to the device
    /// now, without waiting, so that a later [`StorageFile::sync_data`] has
    /// little left to do. Only a hint: durability still takes `sync_data`,
    /// which reports any failure. The default does nothing.
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
    /// Writes zeros over `len` bytes at `offset`, a range of an allocated
    /// file that holds no data yet, so that a later write into it has no
    /// allocation to commit at its `sync_data`. Only a hint: the range
    /// reads as zeros whether it runs or fails. The default does nothing.
    fn zero_ahead(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// An exclusive writer lock on a log directory, released on drop.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// A place to keep files: the real file system, or a simulated disk.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir` (not sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file, for reading and (if `write`) writing.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames `from` to `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive writer lock on `dir`, failing with
    /// `io::ErrorKind::WouldBlock` when another writer holds it. Deleting or
    /// replacing files in `dir` must not release it, and dropping it must
    /// release it at once.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
    /// The engine's clock: when a record is received (`received_at`). The
    /// real disk reads the system clock; the simulated disk has its own, so
    /// that tests know every byte the engine writes.
    fn now(&self) -> crate::event::Timestamp {
        crate::event::Timestamp::now()
    }
}

/// Inside `impl Storage for …` of a read-only storage: the methods that
/// change a directory, each failing with the `io::Error` `$refused()` makes.
/// (The read-only storages over a bucket are all behind the feature `s3`.)
#[cfg(feature = "s3")]
macro_rules! refuse_writes {
    ($refused:expr) => {
        fn create_dir_all(&self, _dir: &std::path::Path) -> std::io::Result<()> {
            Err($refused())
        }

        fn create_new(
            &self,
            _path: &std::path::Path,
        ) -> std::io::Result<std::sync::Arc<dyn $crate::storage::StorageFile>> {
            Err($refused())
        }

        fn rename(&self, _from: &std::path::Path, _to: &std::path::Path) -> std::io::Result<()> {
            Err($refused())
        }

        fn remove(&self, _path: &std::path::Path) -> std::io::Result<()> {
            Err($refused())
        }

        fn sync_dir(&self, _dir: &std::path::Path) -> std::io::Result<()> {
            Err($refused())
        }

        fn lock_dir(
            &self,
            _dir: &std::path::Path,
        ) -> std::io::Result<Box<dyn $crate::storage::DirLock>> {
            Err($refused())
        }
    };
}
#[cfg(feature = "s3")]
pub(crate) use refuse_writes;

/// Reads exactly `buf.len()` bytes at `offset`, looping over short reads.
/// Fails with `UnexpectedEof` if the file ends first.
pub fn read_exact_at(
    file: &dyn StorageFile,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `offset`, looping over short reads;
/// returns how many were read (fewer only at end of file).
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Replaces `dir/name` with `bytes` crash-safely: written to a temporary
/// file, synced, renamed into place, and the directory synced.
pub fn write_file_atomic(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> crate::Result<()> {
    let path = dir.join(name);
    let temp = dir.join(format!("{name}.tmp"));
    let io = |e| crate::Error::io(&path, e);
    match storage.remove(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let file = storage.create_new(&temp).map_err(io)?;
    file.write_all_at(bytes, 0).map_err(io)?;
    file.sync_data().map_err(io)?;
    storage.rename(&temp, &path).map_err(io)?;
    storage.sync_dir(dir).map_err(io)
}
