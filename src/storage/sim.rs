//! A simulated disk for crash and fault-injection tests.
//!
//! Every file has a *written* image (what reads return) and a *durable* image
//! (what survives a crash). Writes land in the written image and are queued as
//! pending; `sync_data` moves a file's pending writes into its durable image.
//! Directory entries work the same way: creations, renames and removals are
//! durable only after `sync_dir`.
//!
//! [`SimDisk::crash_at`] simulates power loss part-way through the pending
//! writes: the first `writes` pending writes (in issue order, across all files)
//! reach the disk whole, the next one only its first `bytes` bytes, and the
//! rest are lost. Handles opened before a crash fail from then on, like the
//! file descriptors of a killed process.
//!
//! Faults: failing `fdatasync` (which, as on Linux, also drops the pending
//! writes it failed to make durable), a write that fails with `ENOSPC` after
//! a given number of bytes, short reads, and files removed behind the
//! engine's back (through [`Storage::remove`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{DirLock, Storage, StorageFile};

#[derive(Debug, Default)]
struct Image {
    written: Vec<u8>,
    durable: Vec<u8>,
}

type FileRef = Arc<Mutex<Image>>;

#[derive(Debug)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    Allocate { len: u64 },
}

#[derive(Debug)]
struct Pending {
    file: FileRef,
    op: PendingOp,
}

#[derive(Debug, Default)]
struct DiskState {
    /// Path -> file, as the running process sees it.
    live: BTreeMap<PathBuf, FileRef>,
    /// Path -> file, as a crash would leave it (updated by `sync_dir`).
    durable: BTreeMap<PathBuf, FileRef>,
    pending: Vec<Pending>,
    generation: u64,
    locked: Vec<PathBuf>,
    fail_syncs: u32,
    write_budget: Option<u64>,
    short_reads: bool,
    stats: SimStats,
    /// Nanoseconds after [`SIM_CLOCK_START`] the disk's clock reads.
    clock_offset: i64,
}

/// What a new simulated disk's clock reads (2023-11-14T22:13:20Z); it
/// stands still until [`SimDisk::advance_clock`].
pub const SIM_CLOCK_START: crate::event::Timestamp =
    crate::event::Timestamp::from_unix_nanos(1_700_000_000_000_000_000);

/// Counters of what the simulated disk has seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// Successful `sync_data` calls.
    pub syncs: u64,
    /// `sync_dir` calls.
    pub dir_syncs: u64,
    /// `write_all_at` calls.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes returned by reads.
    pub bytes_read: u64,
    /// Faults injected (failed syncs, failed writes).
    pub faults: u64,
    /// Bytes the engine asked to zero ahead of its writes
    /// ([`StorageFile::zero_ahead`]). The simulated disk has no extents to
    /// mark written, so it writes nothing: it checks that they hold no data.
    pub zeroed_ahead: u64,
    /// [`StorageFile::zero_ahead`] calls over bytes already written, which
    /// on a real disk would destroy them: an engine bug, for tests to catch.
    pub zeroed_over_data: u64,
}

/// An in-memory disk with separate written and durable images.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimDisk")
            .field("files", &s.live.len())
            .field("pending_writes", &s.pending.len())
            .finish()
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated disk: handle invalidated by a crash")
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// Moves the disk's clock (which [`Storage::now`] reads) by `nanos`,
    /// backwards when negative.
    pub fn advance_clock(&self, nanos: i64) {
        self.state.lock().clock_offset += nanos;
    }

    /// The sizes in bytes of the writes not yet synced, in issue order
    /// (allocations count as 0 bytes); use with [`SimDisk::crash_at`].
    pub fn pending_writes(&self) -> Vec<usize> {
        let s = self.state.lock();
        s.pending
            .iter()
            .map(|p| match &p.op {
                PendingOp::Write { data, .. } => data.len(),
                PendingOp::Allocate { .. } => 0,
            })
            .collect()
    }

    /// Power loss that keeps nothing that was not synced.
    pub fn crash(&self) {
        self.crash_at(0, 0);
    }

    /// Power loss after the first `writes` pending writes and `bytes` bytes of
    /// the next one reached the disk.
    pub fn crash_at(&self, writes: usize, bytes: usize) {
        let mut s = self.state.lock();
        let pending = std::mem::take(&mut s.pending);
        for (i, p) in pending.iter().enumerate() {
            if i > writes {
                break;
            }
            let mut img = p.file.lock();
            match &p.op {
                PendingOp::Write { offset, data } => {
                    let keep = if i == writes {
                        bytes.min(data.len())
                    } else {
                        data.len()
                    };
                    write_into(&mut img.durable, *offset, &data[..keep]);
                }
                PendingOp::Allocate { len } => {
                    if i < writes {
                        extend_to(&mut img.durable, *len);
                    }
                }
            }
        }
        // Files not yet durable in a directory vanish; removed ones come back.
        s.live = s.durable.clone();
        for file in s.live.values() {
            let mut img = file.lock();
            img.written = img.durable.clone();
        }
        s.generation += 1;
        s.locked.clear();
    }

    /// The next `n` `sync_data` calls fail with `EIO` and drop the data they
    /// were to make durable, as Linux does.
    pub fn fail_next_syncs(&self, n: u32) {
        self.state.lock().fail_syncs = n;
    }

    /// After `bytes` more bytes are written, writes fail with `ENOSPC`
    /// (the write that crosses the limit lands partly). `None` lifts the limit.
    pub fn set_write_budget(&self, bytes: Option<u64>) {
        self.state.lock().write_budget = bytes;
    }

    /// When on, every read returns at most 7 bytes, to exercise short-read loops.
    pub fn set_short_reads(&self, on: bool) {
        self.state.lock().short_reads = on;
    }

    /// Counters since the disk was made.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }

    /// The written image of `path`, if the file exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.live.get(path).map(|f| f.lock().written.clone())
    }

    /// Overwrites bytes of `path` in both images, as an attacker or a bad
    /// sector would, without going through a handle.
    pub fn tamper(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let s = self.state.lock();
        let file = s.live.get(path).ok_or(io::ErrorKind::NotFound)?;
        let mut img = file.lock();
        write_into(&mut img.written, offset, bytes);
        write_into(&mut img.durable, offset, bytes);
        Ok(())
    }
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn extend_to(image: &mut Vec<u8>, len: u64) {
    if (image.len() as u64) < len {
        image.resize(len as usize, 0);
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    file: FileRef,
    generation: u64,
    write: bool,
}

impl SimFile {
    fn check_alive(&self) -> io::Result<()> {
        if self.disk.state.lock().generation == self.generation {
            Ok(())
        } else {
            Err(crashed())
        }
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check_alive()?;
        let mut state = self.disk.state.lock();
        let img = self.file.lock();
        let start = (offset as usize).min(img.written.len());
        let mut n = (img.written.len() - start).min(buf.len());
        if state.short_reads {
            n = n.min(7);
        }
        buf[..n].copy_from_slice(&img.written[start..start + n]);
        state.stats.bytes_read += n as u64;
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.write {
            return Err(io::Error::from_raw_os_error(9)); // EBADF
        }
        let mut s = self.disk.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        s.stats.writes += 1;
        let (data, result) = match s.write_budget {
            Some(budget) if (buf.len() as u64) > budget => {
                s.write_budget = Some(0);
                s.stats.faults += 1;
                (
                    &buf[..budget as usize],
                    Err(io::Error::from_raw_os_error(28)),
                ) // ENOSPC
            }
            Some(budget) => {
                s.write_budget = Some(budget - buf.len() as u64);
                (buf, Ok(()))
            }
            None => (buf, Ok(())),
        };
        s.stats.bytes_written += data.len() as u64;
        write_into(&mut self.file.lock().written, offset, data);
        s.pending.push(Pending {
            file: self.file.clone(),
            op: PendingOp::Write {
                offset,
                data: data.to_vec(),
            },
        });
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut s.pending)
            .into_iter()
            .partition(|p| Arc::ptr_eq(&p.file, &self.file));
        s.pending = others;
        if s.fail_syncs > 0 {
            // The kernel marks the pages clean even though they never reached
            // the disk: the data is simply not durable, and a retry succeeds.
            s.fail_syncs -= 1;
            s.stats.faults += 1;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let mut img = self.file.lock();
        for p in mine {
            match p.op {
                PendingOp::Write { offset, data } => write_into(&mut img.durable, offset, &data),
                PendingOp::Allocate { len } => extend_to(&mut img.durable, len),
            }
        }
        s.stats.syncs += 1;
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.check_alive()?;
        Ok(self.file.lock().written.len() as u64)
    }

    fn zero_ahead(&self, offset: u64, len: u64) {
        let mut s = self.disk.state.lock();
        if s.generation != self.generation {
            return;
        }
        let img = self.file.lock();
        let start = (offset as usize).min(img.written.len());
        let end = (offset.saturating_add(len) as usize).min(img.written.len());
        if img.written[start..end].iter().any(|&b| b != 0) {
            s.stats.zeroed_over_data += 1;
        }
        s.stats.zeroed_ahead += len;
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut s = self.disk.state.lock();
        if s.generation != self.generation {
            return Err(crashed());
        }
        extend_to(&mut self.file.lock().written, len);
        s.pending.push(Pending {
            file: self.file.clone(),
            op: PendingOp::Allocate { len },
        });
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    disk: SimDisk,
    dir: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.disk.state.lock();
        if s.generation == self.generation {
            s.locked.retain(|d| d != &self.dir);
        }
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn now(&self) -> crate::event::Timestamp {
        let offset = self.state.lock().clock_offset;
        crate::event::Timestamp::from_unix_nanos(
            SIM_CLOCK_START.unix_nanos().saturating_add(offset),
        )
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.state.lock();
        if s.live.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let file = FileRef::default();
        s.live.insert(path.to_path_buf(), file.clone());
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            file,
            generation: s.generation,
            write: true,
        }))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let s = self.state.lock();
        let file = s.live.get(path).ok_or(io::ErrorKind::NotFound)?.clone();
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            file,
            generation: s.generation,
            write,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let file = s.live.remove(from).ok_or(io::ErrorKind::NotFound)?;
        s.live.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.live.remove(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<_> = s
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        s.durable.extend(entries);
        s.stats.dir_syncs += 1;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.state.lock();
        if s.locked.iter().any(|d| d == dir) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.locked.push(dir.to_path_buf());
        Ok(Box::new(SimLock {
            disk: self.clone(),
            dir: dir.to_path_buf(),
            generation: s.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_lost_and_torn_writes_keep_a_prefix() {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        let f = disk.create_new(&dir.join("a")).unwrap();
        disk.sync_dir(dir).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        f.write_all_at(b"!!", 11).unwrap();
        assert_eq!(disk.pending_writes(), vec![6, 2]);
        disk.crash_at(0, 3);
        assert_eq!(disk.read_file(&dir.join("a")).unwrap(), b"hello wo");
        assert!(
            f.read_at(&mut [0; 4], 0).is_err(),
            "old handles die with the crash"
        );
    }

    #[test]
    fn files_need_a_directory_sync() {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        let f = disk.create_new(&dir.join("a")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        disk.crash();
        assert!(disk.list(dir).unwrap().is_empty());
    }

    #[test]
    fn failed_sync_drops_the_data() {
        let disk = SimDisk::new();
        let dir = Path::new("/log");
        let f = disk.create_new(&dir.join("a")).unwrap();
        disk.sync_dir(dir).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        disk.fail_next_syncs(1);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        disk.crash();
        assert_eq!(disk.read_file(&dir.join("a")).unwrap(), b"");
    }

    #[test]
    fn write_budget_fails_with_enospc_after_a_partial_write() {
        let disk = SimDisk::new();
        let f = disk.create_new(Path::new("/a")).unwrap();
        disk.set_write_budget(Some(3));
        let err = f.write_all_at(b"abcdef", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(disk.read_file(Path::new("/a")).unwrap(), b"abc");
    }
}
