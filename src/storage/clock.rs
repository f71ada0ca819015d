//! [`SetClock`]: another storage, with an engine clock its owner sets.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{DirLock, Storage, StorageFile};
use crate::event::Timestamp;

/// Wraps a [`Storage`], replacing its clock ([`Storage::now`], which a
/// record's `received_at` and age-based retention read) with one set by
/// [`SetClock::set`]. Every file operation goes to the wrapped storage.
///
/// For tests and tools that must replay or age a log by time of receipt.
/// Whoever picks a log's storage picks its clock; no append path (CLI
/// input, HTTP request) reaches this.
#[derive(Debug)]
pub struct SetClock {
    inner: Arc<dyn Storage>,
    now_nanos: AtomicI64,
}

impl SetClock {
    /// `inner`, with the clock reading `at`.
    pub fn new(inner: Arc<dyn Storage>, at: Timestamp) -> Self {
        SetClock {
            inner,
            now_nanos: AtomicI64::new(at.unix_nanos()),
        }
    }

    /// Sets the clock (it may go back; `received_at` still never does).
    pub fn set(&self, at: Timestamp) {
        self.now_nanos.store(at.unix_nanos(), Ordering::SeqCst);
    }
}

impl Storage for SetClock {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.create_new(path)
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open(path, write)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(dir)
    }
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.now_nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimDisk;

    #[test]
    fn the_clock_is_set_and_files_go_through() {
        let disk = SimDisk::new();
        let clock = SetClock::new(Arc::new(disk.clone()), Timestamp::from_unix_nanos(5));
        assert_eq!(clock.now(), Timestamp::from_unix_nanos(5));
        clock.set(Timestamp::from_unix_nanos(-3));
        assert_eq!(clock.now(), Timestamp::from_unix_nanos(-3));
        let dir = Path::new("/d");
        clock.create_new(&dir.join("f")).unwrap();
        assert_eq!(disk.list(dir).unwrap(), ["f"]);
    }
}
