//! The HTTP API and the Audit Log dashboard (cargo feature `server`).
//!
//! `chainlog serve` runs a [`Server`]: an axum router served by hyper on
//! tokio (`conn`), HTTP/1.1, optional TLS (rustls). It uses only the library's public API. A data directory
//! holds:
//!
//! | path | what |
//! |---|---|
//! | `keys.json` | the API keys, as hashes ([`keys`]); mode 0600, refused when others may write it |
//! | `keys.lock` | taken while `keys.json` changes |
//! | `workspaces/<name>/` | each workspace's log ([`workspace`]) |
//! | `server-log/` | refused requests that name no existing workspace, and reads of it (`GET /v1/server-log/events`) |
//! | `deliveries/` | each workspace's SIEM destinations and their positions ([`deliveries`]) |
//! | `witnessed/` | each workspace's newest cosigned checkpoint and its witnesses' sizes ([`witnessing`]) |
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
//! workspace it named when that log is open, or else in the server's log
//! (a refused request opens no workspace, but for a valid key of that
//! workspace refused for its scope, so neither its cost nor its answer time
//! tells whether the workspace exists); so do requests refused for their
//! path, method or head (404, 405, and a request head too large or
//! malformed: `request.refused`, or `access.denied` when they carried a
//! valid key). Refusals without a valid key are recorded one by one within
//! per-address, per-log and total budgets and counted exactly into summary
//! events past them; a valid key used outside its workspace or scope is a
//! security event, recorded one by one under its own per-key bound (see
//! [`audit`]). Admin keys read the server's log at
//! `GET /v1/server-log/events`. Reads (queries, exports, verifications, key
//! listings, sign-ins) are recorded too ([`reads`]).
//!
//! Exports, verifications and queries take slots per workspace and server-wide
//! ([`slots`]), so one tenant's slow clients cannot refuse or hold up
//! another's. With [`ServerConfig::metrics_listen`], `GET /metrics` is
//! served on a listener of its own (`metrics`).
//!
//! With [`ServerConfig::archive`] (cargo feature `s3`), a background thread
//! archives every log to S3-compatible storage on a schedule ([`archiving`]).
//! With [`ServerConfig::cluster`], every workspace is served from a bucket
//! instead: held by one node of several, appends acknowledged once in the
//! bucket, or followed read-only ([`cluster`]).
//!
//! On SIGTERM or Ctrl-C the server stops accepting, lets requests in
//! flight finish (up to [`Limits::shutdown_grace`]), writes the pending
//! failure summaries, drains every commit queue and closes every log,
//! which syncs it.

mod api;
#[cfg(feature = "s3")]
pub mod archiving;
pub mod audit;
#[cfg(feature = "s3")]
pub mod cluster;
mod commit;
mod conn;
pub mod deliveries;
pub mod error;
mod idempotency;
mod ingest;
mod intake;
pub mod key_policy;
pub mod key_watch;
pub mod keys;
mod metrics;
pub mod params;
pub mod reads;
mod refusals;
mod server_log;
pub mod slots;
mod stop_flag;
mod tls;
mod windows;
pub mod witnessing;
pub mod workspace;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hash::checkpoint::NoteSigner;
use crate::server::audit::{AuditPolicy, FailureLimiter};
use crate::server::keys::{AdminKeys, KeyError, KeyStore};
use crate::server::reads::ReadLimiter;
use crate::server::slots::{SlotLimits, Slots};
use crate::server::workspace::Workspaces;
use crate::storage::perms::{self, UnsafeFileError};

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
    /// Exports streaming at once, server-wide. Default 8.
    pub max_concurrent_exports: usize,
    /// Exports streaming at once for one workspace; one more is answered
    /// 503 with `Retry-After` ([`slots`]). Default 2.
    pub max_exports_per_workspace: usize,
    /// Verifications running at once, server-wide. Default 2.
    pub max_concurrent_verifies: usize,
    /// Verifications running at once for one workspace. Default 1.
    pub max_verifies_per_workspace: usize,
    /// Verifications of one workspace waiting for a slot; one more is
    /// answered 503 with `Retry-After`. Default 2.
    pub max_queued_verifies_per_workspace: usize,
    /// Queries (`GET …/events`, `GET …/events/{seq}`) running at once,
    /// server-wide, each on a blocking thread. Default 16.
    pub max_concurrent_queries: usize,
    /// Queries running at once for one workspace. Default 4.
    pub max_queries_per_workspace: usize,
    /// Queries of one workspace waiting for a slot; one more is answered
    /// 503 with `Retry-After`. Default 32.
    pub max_queued_queries_per_workspace: usize,
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
    /// What refusals and reads are recorded one by one, and who reads the
    /// server's log. Default [`AuditPolicy::default`].
    pub audit: AuditPolicy,
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
            max_exports_per_workspace: 2,
            max_concurrent_verifies: 2,
            max_verifies_per_workspace: 1,
            max_queued_verifies_per_workspace: 2,
            max_concurrent_queries: 16,
            max_queries_per_workspace: 4,
            max_queued_queries_per_workspace: 32,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_body_bytes_in_flight: 64 << 20,
            audit: AuditPolicy::default(),
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
    /// Whether admin keys may be created and changed over HTTP. Default
    /// [`AdminKeys::Any`].
    pub admin_keys: AdminKeys,
    /// Share the data directory read-only with this group (files 0640,
    /// directories 0750); default none (0600 and 0700).
    pub group: Option<u32>,
    /// Serve a data directory that belongs to another user. Default false:
    /// files the server wrote would belong to the wrong user.
    pub allow_other_owner: bool,
    /// Serve `GET /metrics` (Prometheus text format, no key) on this
    /// address, a separate listener; port 0 picks a free port. Default
    /// none: no metrics are served.
    pub metrics_listen: Option<SocketAddr>,
    /// Archive every log to S3-compatible storage on this schedule.
    /// Default none.
    #[cfg(feature = "s3")]
    pub archive: Option<archiving::ArchiveSchedule>,
    /// Submit each workspace's checkpoints to these witnesses on a
    /// schedule ([`witnessing`]; needs `checkpoint_signer`). Default none.
    pub witness: Option<witnessing::WitnessSchedule>,
    /// Serve every workspace from this bucket ([`cluster`]). Default none.
    #[cfg(feature = "s3")]
    pub cluster: Option<cluster::ClusterConfig>,
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
            admin_keys: AdminKeys::Any,
            group: None,
            allow_other_owner: false,
            metrics_listen: None,
            #[cfg(feature = "s3")]
            archive: None,
            witness: None,
            #[cfg(feature = "s3")]
            cluster: None,
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
    /// The data directory belongs to another user.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFileError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// The bucket of [`ServerConfig::cluster`] cannot be served from.
    #[cfg(feature = "s3")]
    #[error("serving from the bucket: {0}")]
    Cluster(#[from] cluster::JoinError),
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
    pub reads: ReadLimiter,
    pub limits: Limits,
    pub signer: Option<NoteSigner>,
    pub checkpoint_origin: String,
    pub export_slots: Slots,
    pub verify_slots: Slots,
    pub query_slots: Slots,
    pub tail_slots: Slots,
    /// Set at shutdown: live tails end.
    pub stopping: watch::Sender<bool>,
    pub metrics: metrics::Metrics,
    pub idempotency: Arc<idempotency::IdempotencyStore>,
    /// The running SIEM destinations.
    pub deliveries: deliveries::Deliveries,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The archive (`--archive-to`), for evidence packs.
    #[cfg(feature = "s3")]
    pub archive_target: Option<crate::archive::ArchiveTarget>,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    state: Arc<AppState>,
    listener: conn::Listener,
    local_addr: SocketAddr,
    /// The metrics listener and its address.
    metrics: Option<(TcpListener, SocketAddr)>,
    /// The data directory and the archive schedule, when archiving.
    #[cfg(feature = "s3")]
    archive: Option<(PathBuf, archiving::ArchiveSchedule)>,
    /// The witnesses, when submitting checkpoints to them.
    witness: Option<witnessing::WitnessSchedule>,
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
        if !config.allow_other_owner {
            perms::check_dir_owner(&config.data_dir)?;
        }
        match config.group {
            Some(gid) => perms::share_with_group(&config.data_dir, gid),
            None => perms::create_private_dir_all(&config.data_dir),
        }
        .map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let keys = KeyStore::open(&config.data_dir)?
            .with_admin_keys(config.admin_keys)
            .as_server()?;
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
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let bound = |source| ServerError::Bind { addr, source };
                let tcp = TcpListener::bind(addr).await.map_err(bound)?;
                let local = tcp.local_addr().map_err(bound)?;
                Some((tcp, local))
            }
            None => None,
        };
        let listener = conn::Listener {
            tcp,
            tls: tls_config.map(tokio_rustls::TlsAcceptor::from),
        };
        let limits = config.limits;
        #[cfg(feature = "s3")]
        let archive = config.archive.map(|a| (config.data_dir.clone(), a));
        let workspaces = Workspaces::new(&config.data_dir);
        #[cfg(feature = "s3")]
        let workspaces = match config.cluster {
            Some(cluster) => {
                let joined = tokio::task::spawn_blocking(move || cluster::join(cluster))
                    .await
                    .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
                workspaces.with_cluster(Arc::new(joined))
            }
            None => workspaces,
        };
        let state = Arc::new(AppState {
            keys,
            workspaces,
            deliveries: deliveries::Deliveries::new(config.data_dir.clone()),
            failures: FailureLimiter::new(limits.audit.clone(), std::time::Instant::now()),
            reads: ReadLimiter::new(&limits.audit, std::time::Instant::now()),
            // An export refused can be retried at once; a verification
            // takes seconds to minutes.
            export_slots: Slots::new(
                "export",
                SlotLimits {
                    total: limits.max_concurrent_exports,
                    per_workspace: limits.max_exports_per_workspace,
                    queued_per_workspace: 0,
                },
                1,
            ),
            verify_slots: Slots::new(
                "verify",
                SlotLimits {
                    total: limits.max_concurrent_verifies,
                    per_workspace: limits.max_verifies_per_workspace,
                    queued_per_workspace: limits.max_queued_verifies_per_workspace,
                },
                5,
            ),
            query_slots: Slots::new(
                "query",
                SlotLimits {
                    total: limits.max_concurrent_queries,
                    per_workspace: limits.max_queries_per_workspace,
                    queued_per_workspace: limits.max_queued_queries_per_workspace,
                },
                1,
            ),
            tail_slots: api::tail_slots(),
            stopping: watch::channel(false).0,
            metrics: metrics::Metrics::default(),
            idempotency: idempotency::IdempotencyStore::new(
                limits.idempotency_ttl,
                limits.idempotency_keys,
            ),
            limits,
            signer: config.checkpoint_signer,
            checkpoint_origin: config.checkpoint_origin,
            data_dir: config.data_dir.clone(),
            #[cfg(feature = "s3")]
            archive_target: archive.as_ref().map(|(_, a)| a.target.clone()),
        });
        Ok(Server {
            state,
            listener,
            local_addr,
            metrics,
            #[cfg(feature = "s3")]
            archive,
            witness: config.witness,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `GET /metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
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
        let witnessing = self
            .witness
            .filter(|_| state.signer.is_some())
            .map(|w| witnessing::Witnessing::start(state.data_dir.clone(), state.clone(), w));
        let routes = api::router(state.clone());
        #[cfg(feature = "s3")]
        let routes = routes.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::routing::route,
        ));
        let app = intake::wrap(routes, &state.limits, self.listener.tls.is_some())
            // Outermost, so that intake's answers (400, 408, 503) are counted.
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::track,
            ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let tails = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            tails.stopping.send_replace(true);
            let _ = stop_tx.send(true);
        });
        let summaries = tokio::spawn(api::write_summaries_every_second(state.clone()));
        let key_watch = tokio::spawn(key_watch::watch(state.clone()));
        let deliveries = tokio::spawn(deliveries::supervise(state.clone()));
        #[cfg(feature = "s3")]
        let holding = state
            .workspaces
            .cluster()
            .filter(|c| !c.is_read_only())
            .map(|c| tokio::spawn(cluster::holding::hold(state.clone(), c.clone())));
        let grace = state.limits.shutdown_grace;
        let refused = refusals::head_refusals(state.clone());
        let metrics = self.metrics.map(|(tcp, _)| {
            let (limits, stop) = (state.limits.clone(), stop_rx.clone());
            let listener = conn::Listener { tcp, tls: None };
            let app = metrics::router(state.clone());
            let refused = refused.clone();
            tokio::spawn(async move {
                conn::serve(listener, app, &limits, stop, grace, refused, None).await
            })
        });
        let counted = Some(&state.metrics);
        conn::serve(
            self.listener,
            app,
            &state.limits,
            stop_rx,
            grace,
            refused,
            counted,
        )
        .await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        summaries.abort();
        key_watch.abort();
        #[cfg(feature = "s3")]
        if let Some(holding) = holding {
            holding.abort();
            let _ = holding.await;
        }
        deliveries.abort();
        let _ = deliveries.await;
        state.deliveries.stop_all().await;
        #[cfg(feature = "s3")]
        if let Some(archiver) = archiver {
            archiver.stop();
        }
        if let Some(w) = witnessing {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
        api::write_summaries(&state, true).await;
        let closing = state.clone();
        let failures = tokio::task::spawn_blocking(move || {
            // Changes made since the last look are recorded before the logs
            // close (a refusal was recorded by the watcher already).
            let _ = closing.keys.reload();
            key_watch::record_outside_changes(&closing);
            let failures = closing.workspaces.close_all(grace);
            // Its workspaces are released: others may take them now.
            #[cfg(feature = "s3")]
            if let Some(nodes) = closing.workspaces.cluster().and_then(|c| c.nodes()) {
                if let Err(e) = nodes.leave() {
                    eprintln!("chainlog serve: removing this node's record: {e}");
                }
            }
            failures
        })
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
