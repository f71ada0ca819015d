//! The follower's read-only [`Storage`]: its cache directory, and behind it
//! the archived segments it evicted from there, read from the bucket.
//!
//! A name present in the cache directory is read locally. A name the
//! follower marked as archived ([`CachedStorage::mark_archived`], before it
//! deletes the local file, so a reader never finds it in neither place) and
//! absent locally is opened in the `remote` storage, a
//! [`crate::archive::BucketStorage`] (ranged GETs) in the follower. `list`
//! is the union; every write fails with `PermissionDenied`.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{refuse_writes, FsStorage, Storage, StorageFile};

/// A read-only view of one cache directory over a remote storage.
#[derive(Debug)]
pub struct CachedStorage {
    dir: PathBuf,
    remote: Arc<dyn Storage>,
    /// Names (in `dir`) the remote storage holds under the same name.
    archived: Mutex<BTreeSet<String>>,
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the follower's cache is read-only",
    )
}

impl CachedStorage {
    /// The cache directory `dir`, with names marked archived read from
    /// `remote` (paths there are the bare names).
    pub fn new(dir: &Path, remote: Arc<dyn Storage>) -> CachedStorage {
        CachedStorage {
            dir: dir.to_path_buf(),
            remote,
            archived: Mutex::new(BTreeSet::new()),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now on `name` is read from the remote storage when it is not in
    /// the cache directory.
    pub fn mark_archived(&self, name: &str) {
        self.archived.lock().insert(name.to_string());
    }

    /// Whether `name` was marked archived.
    pub fn is_archived(&self, name: &str) -> bool {
        self.archived.lock().contains(name)
    }

    /// The name of `path` when it lies directly in the cache directory and
    /// was marked archived.
    fn archived_name(&self, path: &Path) -> Option<String> {
        if path.parent()? != self.dir {
            return None;
        }
        let name = path.file_name()?.to_str()?;
        self.is_archived(name).then(|| name.to_string())
    }
}

impl Storage for CachedStorage {
    refuse_writes!(read_only);

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = FsStorage.list(dir)?;
        if dir == self.dir {
            let local: BTreeSet<String> = names.iter().cloned().collect();
            let archived = self.archived.lock();
            names.extend(archived.difference(&local).cloned());
        }
        Ok(names)
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        if write {
            return Err(read_only());
        }
        match FsStorage.open(path, false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.archived_name(path) {
                Some(name) => self.remote.open(Path::new(&name), false),
                None => Err(e),
            },
            opened => opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::DirLock;

    /// A cache directory and a "bucket" directory (a mock for this unit
    /// test; tests/cluster_replica.rs runs it over Ceph).
    fn setup() -> (tempfile::TempDir, PathBuf, CachedStorage) {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, bucket) = (tmp.path().join("cache"), tmp.path().join("bucket"));
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::create_dir_all(&bucket).unwrap();
        std::fs::write(cache.join("a.seg"), b"local a").unwrap();
        std::fs::write(bucket.join("a.seg"), b"remote a").unwrap();
        std::fs::write(bucket.join("b.seg"), b"remote b").unwrap();
        std::fs::write(bucket.join("c.seg"), b"remote c").unwrap();
        let remote = Arc::new(Prefixed(bucket));
        let storage = CachedStorage::new(&cache, remote);
        (tmp, cache, storage)
    }

    /// The "bucket": bare names resolved in a directory.
    #[derive(Debug)]
    struct Prefixed(PathBuf);

    impl Storage for Prefixed {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            FsStorage.create_dir_all(&self.0.join(dir))
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            FsStorage.list(&self.0.join(dir))
        }
        fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
            FsStorage.create_new(&self.0.join(path))
        }
        fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
            assert_eq!(path.components().count(), 1, "a bare name: {path:?}");
            FsStorage.open(&self.0.join(path), write)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            FsStorage.rename(&self.0.join(from), &self.0.join(to))
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            FsStorage.remove(&self.0.join(path))
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            FsStorage.sync_dir(&self.0.join(dir))
        }
        fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
            FsStorage.lock_dir(&self.0.join(dir))
        }
    }

    fn read(storage: &CachedStorage, path: &Path) -> io::Result<Vec<u8>> {
        let file = storage.open(path, false)?;
        let mut buf = vec![0; file.size()? as usize];
        crate::storage::read_exact_at(&*file, &mut buf, 0)?;
        Ok(buf)
    }

    #[test]
    fn a_local_file_wins_over_the_bucket() {
        let (_tmp, cache, storage) = setup();
        storage.mark_archived("a.seg");
        assert_eq!(read(&storage, &cache.join("a.seg")).unwrap(), b"local a");
    }

    #[test]
    fn an_archived_name_missing_locally_comes_from_the_bucket() {
        let (_tmp, cache, storage) = setup();
        let missing = read(&storage, &cache.join("b.seg")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "not marked yet");
        storage.mark_archived("b.seg");
        assert_eq!(read(&storage, &cache.join("b.seg")).unwrap(), b"remote b");
        // Only directly in the cache directory.
        let elsewhere = read(&storage, &cache.join("sub").join("b.seg")).unwrap_err();
        assert_eq!(elsewhere.kind(), io::ErrorKind::NotFound);
        // Evicting the local copy hands its reads to the bucket.
        storage.mark_archived("a.seg");
        std::fs::remove_file(cache.join("a.seg")).unwrap();
        assert_eq!(read(&storage, &cache.join("a.seg")).unwrap(), b"remote a");
    }

    #[test]
    fn list_is_the_union_without_repeats() {
        let (_tmp, cache, storage) = setup();
        storage.mark_archived("a.seg");
        storage.mark_archived("b.seg");
        let mut names = storage.list(&cache).unwrap();
        names.sort();
        assert_eq!(names, ["a.seg", "b.seg"], "c.seg was never marked");
    }

    #[test]
    fn every_write_is_refused() {
        let (_tmp, cache, storage) = setup();
        storage.mark_archived("b.seg");
        let (a, b) = (cache.join("a.seg"), cache.join("b.seg"));
        let refused = [
            storage.open(&a, true).map(drop),
            storage.open(&b, true).map(drop),
            storage.create_new(&cache.join("new.seg")).map(drop),
            storage.create_dir_all(&cache.join("d")),
            storage.rename(&a, &cache.join("x.seg")),
            storage.remove(&a),
            storage.sync_dir(&cache),
            storage.lock_dir(&cache).map(drop),
        ];
        for (i, r) in refused.into_iter().enumerate() {
            let e = r.expect_err("a write succeeded");
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "call {i}");
        }
        assert_eq!(std::fs::read(&a).unwrap(), b"local a");
        assert!(!cache.join("new.seg").exists());
        // A file opened for reading cannot be written either.
        let file = storage.open(&b, false).unwrap();
        assert!(file.write_all_at(b"x", 0).is_err());
        assert_eq!(
            std::fs::read(cache.parent().unwrap().join("bucket/b.seg")).unwrap(),
            b"remote b"
        );
    }
}
