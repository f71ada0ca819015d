//! The connection to a bucket, and a read-only [`Storage`] over it.
//!
//! [`BucketStorage`] lets the library's own verifier (and a read-only
//! [`crate::Log`]) read an archive as if it were a log directory: `list` is
//! a delimited LIST under the prefix, and a file's `read_at` is served from a
//! read-ahead window filled by ranged GETs, with the next window fetched in
//! the background while the caller works through the current one (the
//! verifier reads sequentially in 1 MiB chunks). As the windows arrive in
//! order, the object's SHA-256 is computed on the side, so that checking the
//! manifest's digests costs no second download.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, HeaderMap, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use super::lock_state::{HeaderTap, LastHeaders, ObjectLockState};
use super::object_lock::lock_headers;
use super::{hex, ArchiveError, ArchiveTarget, ObjectLockMode};
use crate::storage::{refuse_writes, Storage, StorageFile};

/// Hosts for which a plain `http://` endpoint is allowed without
/// `AWS_ALLOW_HTTP`: nothing leaves the machine.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// Bytes fetched per ranged GET (and prefetched ahead of the reader).
const READ_WINDOW_BYTES: u64 = 8 << 20;
/// Windows kept per open object: the current one and one recently used
/// (the verifier reads the header, then the trailer area, then the frames).
const WINDOWS_KEPT: usize = 2;
/// Requests are retried this often, with exponential backoff from 100 ms.
const MAX_RETRIES: usize = 3;
/// No request is retried after this long.
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// One request (a whole segment PUT included) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What a create-only PUT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was written.
    New,
    /// An object was already there; nothing was written.
    AlreadyThere,
}

/// A connection to the bucket of an [`ArchiveTarget`]. Its methods block,
/// driving the requests on the connection's own small tokio runtime.
#[derive(Debug)]
pub struct Bucket {
    target: ArchiveTarget,
    /// For HEAD, GET, LIST and the conditional writes (`conditional.rs`).
    pub(super) store: AmazonS3,
    /// For PUT: `store`, or a client that adds Object Lock headers to each
    /// request ([`Bucket::with_object_lock`]). GETs must not carry them.
    writer: AmazonS3,
    pub(super) runtime: tokio::runtime::Runtime,
    /// Use `If-None-Match: *` (true) or HEAD-then-PUT (false).
    conditional_put: bool,
    /// For [`Bucket::object_lock`]: HEADs whose answers' headers are kept
    /// in `lock_headers`, one at a time.
    inspector: AmazonS3,
    lock_headers: LastHeaders,
    inspecting: Mutex<()>,
}

impl Bucket {
    /// Connects (lazily: no request is made) with credentials and settings
    /// from the AWS environment variables, overridden by the target's
    /// endpoint and region. `conditional_put` false falls back to a HEAD
    /// before each PUT, for servers without `If-None-Match` on PUT.
    pub fn connect(target: &ArchiveTarget, conditional_put: bool) -> Result<Bucket, ArchiveError> {
        let store = build_store(target, None, None)?;
        let tap = HeaderTap::default();
        let lock_headers = tap.last.clone();
        let inspector = build_store(target, None, Some(tap))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chainlog-s3")
            .enable_all()
            .build()
            .map_err(|e| ArchiveError::io("starting the S3 client's runtime", e))?;
        Ok(Bucket {
            target: target.clone(),
            writer: store.clone(),
            store,
            runtime,
            conditional_put,
            inspector,
            lock_headers,
            inspecting: Mutex::new(()),
        })
    }

    /// The same connection, writing every object with S3 Object Lock in
    /// `mode` until `retain_until`, an RFC 3339 date such as
    /// [`ObjectLock::retain_until`](super::ObjectLock::retain_until) makes.
    /// Reads (HEAD, GET, LIST) do not carry the lock headers.
    pub fn with_object_lock(
        mut self,
        mode: ObjectLockMode,
        retain_until: &str,
    ) -> Result<Bucket, ArchiveError> {
        self.writer = build_store(&self.target, Some(lock_headers(mode, retain_until)?), None)?;
        Ok(self)
    }

    /// The target this connection reaches.
    pub fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    /// `s3://bucket/prefix/name`, for messages.
    pub fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.key(name))
    }

    pub(super) fn path(&self, name: &str) -> ObjectPath {
        ObjectPath::from(self.target.key(name))
    }

    /// The objects directly under `PREFIX/dir` (`dir` empty: under the
    /// prefix itself), by name, with their metadata.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, ObjectMeta)>, ArchiveError> {
        let key = if dir.is_empty() {
            self.target.prefix.clone()
        } else {
            self.target.key(dir)
        };
        let prefix = (!key.is_empty()).then(|| ObjectPath::from(key.as_str()));
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| {
                let shown = if dir.is_empty() {
                    self.target.to_string()
                } else {
                    self.url(dir)
                };
                ArchiveError::store(format!("listing {shown}"), e)
            })?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_string();
                Some((name, meta))
            })
            .collect())
    }

    /// The names of the "folders" directly under `PREFIX/dir` (the common
    /// prefixes of a delimited listing), sorted.
    pub fn list_dirs(&self, dir: &str) -> Result<Vec<String>, ArchiveError> {
        let key = self.target.key(dir);
        let prefix = ObjectPath::from(key.as_str());
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| ArchiveError::store(format!("listing {}", self.url(dir)), e))?;
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// The metadata of `name`, or `None` when there is no such object.
    pub fn head(&self, name: &str) -> Result<Option<ObjectMeta>, ArchiveError> {
        match self.runtime.block_on(self.store.head(&self.path(name))) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(
                format!("reading {}", self.url(name)),
                e,
            )),
        }
    }

    /// The metadata of `name` and its S3 Object Lock state as the bucket
    /// reports it, or `None` when there is no such object.
    pub fn object_lock(
        &self,
        name: &str,
    ) -> Result<Option<(ObjectMeta, ObjectLockState)>, ArchiveError> {
        let _one = self.inspecting.lock();
        *self.lock_headers.lock() = None;
        match self.runtime.block_on(self.inspector.head(&self.path(name))) {
            Ok(meta) => {
                let headers = self.lock_headers.lock().take().unwrap_or_default();
                Ok(Some((meta, ObjectLockState::from_headers(&headers))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(
                format!("reading the lock of {}", self.url(name)),
                e,
            )),
        }
    }

    /// The whole object `name` (for small objects: manifests, checkpoints,
    /// indexes).
    pub fn get(&self, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.path(name);
        self.runtime
            .block_on(async {
                let result = self.store.get(&path).await?;
                result.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| ArchiveError::store(format!("downloading {}", self.url(name)), e))
    }

    /// Bytes `range` of the object `name`.
    pub fn get_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>, ArchiveError> {
        self.runtime
            .block_on(self.store.get_range(&self.path(name), range))
            .map(|b| b.to_vec())
            .map_err(|e| ArchiveError::store(format!("downloading {}", self.url(name)), e))
    }

    /// SHA-256 (hex) and size of the whole object `name`, streamed through
    /// ranged GETs with bounded memory.
    pub fn digest(&self, name: &str, size: u64) -> Result<String, ArchiveError> {
        let mut hasher = Sha256::new();
        let mut at = 0;
        while at < size {
            let end = size.min(at + READ_WINDOW_BYTES);
            let bytes = self.get_range(name, at..end)?;
            if bytes.len() as u64 != end - at {
                return Err(short_read(self, name));
            }
            hasher.update(&bytes);
            at = end;
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Writes `bytes` as `name` unless an object of that name exists:
    /// `If-None-Match: *` on the PUT, or a HEAD first when conditional PUTs
    /// are off. Never overwrites an object that was there before. With
    /// [`Bucket::with_object_lock`], the object written is locked.
    pub fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<Created, ArchiveError> {
        let path = self.path(name);
        let doing = || format!("uploading {}", self.url(name));
        if !self.conditional_put && self.head(name)?.is_some() {
            return Ok(Created::AlreadyThere);
        }
        let mode = if self.conditional_put {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let put = self.runtime.block_on(self.writer.put_opts(
            &path,
            PutPayload::from(bytes),
            options,
        ));
        match put {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyThere),
            // A server may answer 412 before reading the body and close the
            // connection while the body is still being sent, and a response
            // may be lost after the object was written: the failure alone
            // does not say whether the object is there, so ask. The caller
            // compares an object found this way with its own bytes.
            Err(e) => match self.head(name) {
                Ok(Some(_)) => Ok(Created::AlreadyThere),
                _ => Err(ArchiveError::store(doing(), e)),
            },
        }
    }
}

/// An S3 client for `target`, adding `headers` (signed) to every request,
/// through `tap` when given.
fn build_store(
    target: &ArchiveTarget,
    headers: Option<HeaderMap>,
    tap: Option<HeaderTap>,
) -> Result<AmazonS3, ArchiveError> {
    let mut client = ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_allow_http(allow_http(target));
    if let Some(headers) = headers {
        // object_store puts default headers on the request before SigV4
        // signs it (`S3Client::request`), so they are signed, as S3
        // requires of every x-amz-* header. They also go on this client's
        // own credential requests (STS, instance metadata), if it makes any.
        client = client.with_default_headers(headers);
    }
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&target.bucket)
        // Every PUT carries x-amz-checksum-sha256: an end-to-end check, and
        // the integrity header S3 requires on PUTs with Object Lock headers
        // (Content-MD5 or an x-amz-checksum-*).
        .with_checksum_algorithm(Checksum::SHA256)
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            ..RetryConfig::default()
        })
        .with_client_options(client);
    if let Some(endpoint) = &target.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &target.region {
        builder = builder.with_region(region);
    }
    if let Some(tap) = tap {
        builder = builder.with_http_connector(tap);
    }
    builder
        .build()
        .map_err(|e| ArchiveError::InvalidTarget(format!("{target}: {e}")))
}

fn short_read(bucket: &Bucket, name: &str) -> ArchiveError {
    ArchiveError::Tampered(vec![format!(
        "{} is shorter than it was listed",
        bucket.url(name)
    )])
}

/// Plain http is allowed for loopback endpoints (and, through object_store's
/// own `AWS_ALLOW_HTTP`, wherever the operator asks for it).
fn allow_http(target: &ArchiveTarget) -> bool {
    let endpoint = target
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok());
    let Some(rest) = endpoint.as_deref().and_then(|e| e.strip_prefix("http://")) else {
        return env_allows_http();
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    LOOPBACK_HOSTS.contains(&host) || host.starts_with("127.") || env_allows_http()
}

fn env_allows_http() -> bool {
    std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The digests of the objects a [`BucketStorage`] read from start to end.
pub(crate) type Digests = Arc<Mutex<HashMap<String, String>>>;

/// A read-only [`Storage`] over an archive: paths are names under the
/// target's prefix (`00000000000000000000.seg`; a directory `""` or `"."`
/// is the prefix itself). Every method that would write fails with
/// `PermissionDenied`.
#[derive(Debug, Clone)]
pub struct BucketStorage {
    bucket: Arc<Bucket>,
    /// Sizes seen by the last LIST, so `open` needs no HEAD.
    sizes: Arc<Mutex<HashMap<String, u64>>>,
    /// SHA-256 of every object read completely, by name.
    digests: Digests,
}

impl BucketStorage {
    /// A storage over `bucket`.
    pub fn new(bucket: Arc<Bucket>) -> Self {
        BucketStorage {
            bucket,
            sizes: Arc::default(),
            digests: Arc::default(),
        }
    }

    /// The SHA-256 (hex) of `name`, if some reader of this storage read the
    /// whole object.
    pub fn digest_seen(&self, name: &str) -> Option<String> {
        self.digests.lock().get(name).cloned()
    }

    fn name(path: &Path) -> io::Result<String> {
        let text = path
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not UTF-8"))?;
        let text = text.trim_start_matches("./").trim_start_matches('/');
        Ok(if text == "." {
            String::new()
        } else {
            text.to_string()
        })
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the archive is read-only through this storage",
    )
}

/// An object store error as an `io::Error` the library can report.
fn to_io(e: ArchiveError) -> io::Error {
    let kind = match &e {
        ArchiveError::Store {
            source: object_store::Error::NotFound { .. },
            ..
        } => io::ErrorKind::NotFound,
        ArchiveError::Store {
            source:
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ..
        } => io::ErrorKind::PermissionDenied,
        ArchiveError::Tampered(_) => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl Storage for BucketStorage {
    refuse_writes!(read_only);

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let dir = Self::name(dir)?;
        let listed = self.bucket.list(&dir).map_err(to_io)?;
        let mut sizes = self.sizes.lock();
        let mut names = Vec::with_capacity(listed.len());
        for (name, meta) in listed {
            let full = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            sizes.insert(full, meta.size);
            names.push(name);
        }
        Ok(names)
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        if write {
            return Err(read_only());
        }
        let name = Self::name(path)?;
        let known = self.sizes.lock().get(&name).copied();
        let size = match known {
            Some(size) => size,
            None => match self.bucket.head(&name).map_err(to_io)? {
                Some(meta) => meta.size,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} does not exist", self.bucket.url(&name)),
                    ))
                }
            },
        };
        Ok(Arc::new(BucketFile {
            bucket: self.bucket.clone(),
            name,
            size,
            digests: self.digests.clone(),
            state: Mutex::new(ReadState {
                windows: Vec::new(),
                pending: None,
                hasher: Sha256::new(),
                hashed_to: 0,
            }),
        }))
    }
}

type Fetch = tokio::task::JoinHandle<Result<Vec<u8>, ArchiveError>>;

/// An object opened through a [`BucketStorage`].
struct BucketFile {
    bucket: Arc<Bucket>,
    name: String,
    size: u64,
    digests: Digests,
    state: Mutex<ReadState>,
}

struct ReadState {
    /// Fetched windows (start offset, bytes), least recently used first.
    windows: Vec<(u64, Vec<u8>)>,
    /// The window being fetched in the background.
    pending: Option<(Range<u64>, Fetch)>,
    /// SHA-256 over the bytes `0..hashed_to`, fed as windows arrive in order.
    hasher: Sha256,
    hashed_to: u64,
}

impl std::fmt::Debug for BucketFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for BucketFile {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.state.get_mut().pending.take() {
            fetch.abort();
        }
    }
}

impl BucketFile {
    fn spawn_fetch(&self, range: Range<u64>) -> Fetch {
        let bucket = self.bucket.clone();
        let name = self.name.clone();
        let store_range = range.clone();
        self.bucket.runtime.spawn(async move {
            let path = bucket.path(&name);
            bucket
                .store
                .get_range(&path, store_range)
                .await
                .map(|b| b.to_vec())
                .map_err(|e| ArchiveError::store(format!("downloading {}", bucket.url(&name)), e))
        })
    }

    fn join(&self, fetch: Fetch) -> io::Result<Vec<u8>> {
        match self.bucket.runtime.block_on(fetch) {
            Ok(result) => result.map_err(to_io),
            Err(e) => Err(io::Error::other(format!("a download task failed: {e}"))),
        }
    }

    /// Fetches the window starting at `offset`: from the prefetch when it
    /// is that window, otherwise now.
    fn fetch(
        &self,
        state: &mut ReadState,
        offset: u64,
        min_len: u64,
    ) -> io::Result<(u64, Vec<u8>)> {
        let end = self.size.min(offset + READ_WINDOW_BYTES.max(min_len));
        let prefetched = match state.pending.take() {
            Some((range, fetch)) if range.contains(&offset) => Some((range, fetch)),
            Some((range, fetch)) => {
                state.pending = Some((range, fetch));
                None
            }
            None => None,
        };
        let (range, bytes) = match prefetched {
            Some((range, fetch)) => (range, self.join(fetch)?),
            None => (offset..end, self.join(self.spawn_fetch(offset..end))?),
        };
        if bytes.len() as u64 != range.end - range.start {
            return Err(to_io(short_read(&self.bucket, &self.name)));
        }
        Ok((range.start, bytes))
    }

    fn hash_window(&self, state: &mut ReadState, start: u64, bytes: &[u8]) {
        let end = start + bytes.len() as u64;
        if start <= state.hashed_to && state.hashed_to < end {
            let from = (state.hashed_to - start) as usize;
            state.hasher.update(&bytes[from..]);
            state.hashed_to = end;
            if end == self.size {
                let digest = hex(&std::mem::take(&mut state.hasher).finalize());
                self.digests.lock().insert(self.name.clone(), digest);
            }
        }
    }
}

impl StorageFile for BucketFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.lock();
        let hit = state
            .windows
            .iter()
            .position(|(start, bytes)| *start <= offset && offset < *start + bytes.len() as u64);
        let index = match hit {
            Some(i) => {
                // Most recently used last.
                let window = state.windows.remove(i);
                state.windows.push(window);
                state.windows.len() - 1
            }
            None => {
                let (start, bytes) = self.fetch(&mut state, offset, buf.len() as u64)?;
                self.hash_window(&mut state, start, &bytes);
                let end = start + bytes.len() as u64;
                if state.windows.len() >= WINDOWS_KEPT {
                    state.windows.remove(0);
                }
                state.windows.push((start, bytes));
                // Sequential reading: fetch the next window while this one is used.
                if end < self.size && state.pending.is_none() && end == state.hashed_to {
                    let next = end..self.size.min(end + READ_WINDOW_BYTES);
                    let fetch = self.spawn_fetch(next.clone());
                    state.pending = Some((next, fetch));
                }
                state.windows.len() - 1
            }
        };
        let (start, bytes) = &state.windows[index];
        let from = (offset - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }

    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn allocate(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }
}
