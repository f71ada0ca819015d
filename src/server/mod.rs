//! The HTTP API and the Audit Log dashboard (cargo feature `server`).
//!
//! `chainlog serve` runs a [`Server`]: an axum router served by hyper on
//! tokio ([`conn`]), HTTP/1.1, optional TLS (rustls). It uses only the library's public API. A data directory
//! holds:
//!
//! | path | what |
//! |---|---|
//! | `keys.json` | the API keys, as hashes ([`keys`]); mode 0600 |
//! | `keys.lock` | taken while `keys.json` changes |
//! | `workspaces/<name>/` | each workspace's log ([`workspace`]) |
//! | `server-log/` | refused requests that name no existing workspace |
//!
//! Every workspace log is opened with [`crate::Durability::Always`]: an
//! answer with receipts means the events are on disk. `POST …/events`
//! goes through the workspace's commit queue (`commit`), which appends
//! every request waiting at once with one append and one `fdatasync`.
//! Parsing (of all but small bodies), queries, exports and verification
//! run on tokio's blocking threads.
//!
//! Every refused request (missing or invalid key, a key used on another
//! workspace, a scope too small) becomes an `auth.failed` or
//! `access.denied` event, with the client's address, in the log of the
//! workspace it named, or in the server's log when that does not exist. A
//! flood from one address is counted into summary events instead (see
//! [`audit`]), so failures cannot grow a log without bound.
//!
//! With [`ServerConfig::archive`] (cargo feature `s3`), a background thread
//! archives every log to S3-compatible storage on a schedule ([`archiving`]).
//!
//! On SIGTERM or Ctrl-C the server stops accepting, lets requests in
//! flight finish (up to [`Limits::shutdown_grace`]), writes the pending
//! failure summaries, drains every commit queue and closes every log,
//! which syncs it.

mod api;
#[cfg(feature = "s3")]
pub mod archiving;
pub mod audit;
mod commit;
mod conn;
pub mod error;
mod idempotency;
mod ingest;
mod intake;
pub mod keys;
pub mod params;
mod tls;
pub mod workspace;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::hash::checkpoint::NoteSigner;
use crate::server::audit::FailureLimiter;
use crate::server::keys::{KeyError, KeyStore};
use crate::server::workspace::Workspaces;

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Most events in one `POST`. Default 10,000 (the library allows
    /// [`crate::limits::MAX_BATCH_EVENTS`]).
    pub max_events_per_request: usize,
    /// How long the answer to a `POST` with an `Idempotency-Key` is kept
    /// for its retries (in memory; not across restarts). Default 24 h.
    pub idempotency_ttl: Duration,
    /// Most `Idempotency-Key` answers kept per workspace (which also keeps
    /// at most 64 MiB of them); the oldest is dropped first. Default 10,000.
    pub idempotency_keys: usize,
    /// Longest a request may take until its answer starts (an export's
    /// streamed body is not counted). Default 30 s.
    pub request_timeout: Duration,
    /// Longest the server waits for requests in flight when stopping.
    /// Default 10 s.
    pub shutdown_grace: Duration,
    /// Exports streaming at once. Default 8.
    pub max_concurrent_exports: usize,
    /// Verifications running at once. Default 1.
    pub max_concurrent_verifies: usize,
    /// Longest a client may take to send a request's headers, counted from
    /// their first byte; also the longest a TLS handshake may take. The
    /// connection is closed. Default 10 s.
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive, counted from the end of
    /// the headers; the answer is 408 and the connection is closed.
    /// Default 30 s.
    pub body_timeout: Duration,
    /// Longest a connection may stay open with no request in it (before the
    /// first, or between two). Default 60 s.
    pub idle_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are
    /// accepted. Capped below the process's file descriptor limit
    /// (`RLIMIT_NOFILE`), which also has to cover the logs. Default 1,024.
    pub max_connections: usize,
    /// Bytes of request bodies being read at once, across all connections
    /// (at least `max_body_bytes`); a body that finds no room within its
    /// `body_timeout` is answered 503. Default 64 MiB.
    pub max_body_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
            max_events_per_request: 10_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_keys: 10_000,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_concurrent_exports: 8,
            max_concurrent_verifies: 1,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_body_bytes_in_flight: 64 << 20,
        }
    }
}

/// Certificate and key files for TLS, in PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// Sign checkpoints on request with this key; without one,
    /// `GET …/checkpoint` answers 404.
    pub checkpoint_signer: Option<NoteSigner>,
    /// Origin prefix of signed checkpoints (`<prefix>/<log id>`).
    /// Default `chainlog`.
    pub checkpoint_origin: String,
    /// Request limits.
    pub limits: Limits,
    /// Archive every log to S3-compatible storage on this schedule.
    /// Default none.
    #[cfg(feature = "s3")]
    pub archive: Option<archiving::ArchiveSchedule>,
}

impl ServerConfig {
    /// A configuration with the default limits, no TLS and no signer.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            listen,
            tls: None,
            checkpoint_signer: None,
            checkpoint_origin: "chainlog".into(),
            limits: Limits::default(),
            #[cfg(feature = "s3")]
            archive: None,
        }
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The key file is unusable.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// Closing logs at shutdown failed: their last records may not be durable.
    #[error("closing logs failed: {0}")]
    Close(String),
}

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub keys: KeyStore,
    pub workspaces: Workspaces,
    pub failures: FailureLimiter,
    pub limits: Limits,
    pub signer: Option<NoteSigner>,
    pub checkpoint_origin: String,
    pub export_slots: Arc<Semaphore>,
    pub verify_slots: Arc<Semaphore>,
    pub idempotency: Arc<idempotency::IdempotencyStore>,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    state: Arc<AppState>,
    listener: conn::Listener,
    local_addr: SocketAddr,
    /// The data directory and the archive schedule, when archiving.
    #[cfg(feature = "s3")]
    archive: Option<(PathBuf, archiving::ArchiveSchedule)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates the data directory if needed, reads the keys and binds the
    /// listening socket. Must run inside a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let keys = KeyStore::open(&config.data_dir)?;
        let tls_config = match &config.tls {
            Some(files) => Some(tls::load_config(&files.cert, &files.key)?),
            None => None,
        };
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let listener = conn::Listener {
            tcp,
            tls: tls_config.map(tokio_rustls::TlsAcceptor::from),
        };
        let limits = config.limits;
        #[cfg(feature = "s3")]
        let archive = config.archive.map(|a| (config.data_dir.clone(), a));
        let state = Arc::new(AppState {
            keys,
            workspaces: Workspaces::new(&config.data_dir),
            failures: FailureLimiter::new(),
            export_slots: Arc::new(Semaphore::new(limits.max_concurrent_exports.max(1))),
            verify_slots: Arc::new(Semaphore::new(limits.max_concurrent_verifies.max(1))),
            idempotency: idempotency::IdempotencyStore::new(
                limits.idempotency_ttl,
                limits.idempotency_keys,
            ),
            limits,
            signer: config.checkpoint_signer,
            checkpoint_origin: config.checkpoint_origin,
        });
        Ok(Server {
            state,
            listener,
            local_addr,
            #[cfg(feature = "s3")]
            archive,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.listener.tls.is_some()
    }

    /// Serves until `shutdown` completes, then stops as described in the
    /// module docs.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state;
        #[cfg(feature = "s3")]
        let archiver = self
            .archive
            .map(|(dir, schedule)| archiving::Archiver::start(dir, schedule));
        let app = intake::wrap(
            api::router(state.clone()),
            &state.limits,
            self.listener.tls.is_some(),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let summaries = tokio::spawn(api::write_summaries_every_second(state.clone()));
        let grace = state.limits.shutdown_grace;
        conn::serve(self.listener, app, &state.limits, stop_rx, grace).await;
        summaries.abort();
        #[cfg(feature = "s3")]
        if let Some(archiver) = archiver {
            archiver.stop();
        }
        api::write_summaries(&state, true).await;
        let closing = state.clone();
        let failures = tokio::task::spawn_blocking(move || closing.workspaces.close_all(grace))
            .await
            .unwrap_or_default();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ServerError::Close(
                failures
                    .iter()
                    .map(|(name, e)| format!("{name}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        }
    }
}

/// Completes once the stop flag is set.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
