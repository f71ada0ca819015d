//! The connection layer: the accept loop, TLS handshakes, per-connection
//! timeouts and the connection limit (see docs/SECURITY.md).
//!
//! `axum::serve` has no header-read or idle timeout and no connection
//! limit, so a client without a key could hold sockets open until the
//! server ran out of file descriptors. Here every connection is served by
//! hyper's HTTP/1 builder in its own task, under a watchdog that closes it
//!
//! - when it is idle (no request in flight, no byte received) for
//!   [`Limits::idle_timeout`], counted from its start or its last answer;
//! - when a request's head is not complete [`Limits::header_timeout`]
//!   after its first byte arrived (a TLS handshake has the same time).
//!
//! A connection over [`Limits::max_connections`] is closed as soon as it is
//! accepted, without reading it: the client sees the connection closed at
//! once instead of waiting in the kernel's queue. Request bodies are
//! bounded separately, per request ([`super::intake`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::server::metrics::{Metrics, OpenConnection};
use crate::server::Limits;

/// hyper's read buffer per connection, which also bounds a request head.
/// hyper's default (about 400 KiB) would let 1,000 clients sending
/// oversized heads hold 400 MB.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// File descriptors kept for logs, segment files and blocking work when
/// the connection limit is derived from `RLIMIT_NOFILE`: at least this
/// many, and at least a quarter of the limit.
const RESERVED_FDS_MIN: u64 = 32;

/// Why hyper refused a request head itself, before the router saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadRefusal {
    /// Over [`READ_BUFFER_BYTES`]: answered 431.
    TooLarge,
    /// Not HTTP/1.1 hyper can parse: answered 400.
    Malformed,
}

/// Told of every request head hyper refused, with the client's address, so
/// that such refusals are audited like the router's.
pub(crate) type OnHeadRefused = Arc<dyn Fn(SocketAddr, HeadRefusal) + Send + Sync>;

/// A bound listening socket, with TLS when configured.
pub(crate) struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// The connection limits, taken from [`Limits`].
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// The most connections this process can hold open: `configured`, capped so
/// that enough file descriptors stay free under the soft `RLIMIT_NOFILE`.
pub(crate) fn connection_cap(configured: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let Some(soft) = limit.current else {
        return configured.max(1);
    };
    let reserved = RESERVED_FDS_MIN.max(soft / 4);
    let usable = usize::try_from(soft.saturating_sub(reserved)).unwrap_or(usize::MAX);
    configured.min(usable).max(1)
}

/// Serves `app` on `listener` until `stop` is set; then stops accepting,
/// lets the connections finish what they are doing (hyper closes each one
/// after its request in flight) and cuts off those still open `grace`
/// after the stop signal.
pub(crate) async fn serve(
    listener: Listener,
    app: Router,
    limits: &Limits,
    stop: watch::Receiver<bool>,
    grace: Duration,
    refused: OnHeadRefused,
    metrics: Option<&Metrics>,
) {
    let max_connections = connection_cap(limits.max_connections);
    if max_connections < limits.max_connections {
        eprintln!(
            "chainlog serve: at most {max_connections} connections (not {}): the file descriptor limit (ulimit -n) is too low for more",
            limits.max_connections
        );
    }
    let slots = Arc::new(Semaphore::new(max_connections));
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
    };
    let mut connections = JoinSet::new();
    let stopping = super::stopped(stop.clone());
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.tcp.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // Out of file descriptors, or a connection reset
                        // before it was taken: wait a moment and go on.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let open = metrics.map(Metrics::connection);
                // Over the limit: close at once (dropping the stream).
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(
                    stream,
                    peer,
                    listener.tls.clone(),
                    app.clone(),
                    timeouts,
                    stop.clone(),
                    (slot, open),
                    refused.clone(),
                ));
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "chainlog serve: requests still open {grace:?} after the stop signal were cut off"
        );
        connections.abort_all();
    }
}

/// One connection, from its TLS handshake (if any) to its close.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one connection, each moved into its task"
)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
    _slot: (OwnedSemaphorePermit, Option<OpenConnection>),
    refused: OnHeadRefused,
) {
    match tls {
        None => http(stream, peer, app, timeouts, stop, refused).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(timeouts.header, acceptor.accept(stream)).await
            {
                http(stream, peer, app, timeouts, stop, refused).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `io` until the client closes it, hyper ends it, the
/// watchdog finds it idle or slow, or the server stops.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
    refused: OnHeadRefused,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = ConnService {
        app,
        peer,
        activity: activity.clone(),
    };
    let io = TokioIo::new(Watched {
        io,
        activity: activity.clone(),
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog does this, separately from the idle timeout: hyper's
        // starts when a keep-alive connection begins to wait, so it would
        // close idle connections after the header timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(READ_BUFFER_BYTES)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let expired = activity.expired(timeouts);
    tokio::pin!(expired);
    let stopping = super::stopped(stop);
    tokio::pin!(stopping);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    if e.is_parse_too_large() {
                        refused(peer, HeadRefusal::TooLarge);
                    } else if e.is_parse() {
                        refused(peer, HeadRefusal::Malformed);
                    }
                }
                return;
            }
            // Dropping the connection closes the socket.
            () = &mut expired => return,
            () = &mut stopping, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What the watchdog needs to know about a connection.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests whose answer has not been fully written.
    in_flight: usize,
    /// When the connection became idle (its start, or its last answer).
    idle_since: Instant,
    /// When the first byte of the next request arrived, while idle.
    head_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_since: None,
            }),
            changed: Notify::new(),
        }
    }

    /// Bytes arrived: when idle, a request head has begun.
    fn received(&self) {
        let mut state = self.state.lock();
        if state.in_flight == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.head_since = None;
    }

    fn request_finished(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_since = None;
        }
        drop(state);
        self.changed.notify_one();
    }

    /// When the connection is to be closed, as things stand.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let state = self.state.lock();
        if state.in_flight > 0 {
            None
        } else if let Some(head) = state.head_since {
            Some(head + timeouts.header)
        } else {
            Some(state.idle_since + timeouts.idle)
        }
    }

    /// Completes once the connection has been idle, or has taken over a
    /// request head, for too long. (`notify_one` keeps a wake-up for a
    /// waiter that is not waiting yet, so none is lost.)
    async fn expired(&self, timeouts: Timeouts) {
        loop {
            match self.deadline(timeouts) {
                None => self.changed.notified().await,
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// The socket, telling the watchdog when bytes arrive.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The router as hyper's service for one connection: adds the client's
/// address and counts the request in flight until its answer is written.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<Answer>, std::convert::Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Answer>;
    type Error = std::convert::Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.activity.clone());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let mut app = self.app.clone();
        Box::pin(async move {
            let response = app.call(request).await?;
            Ok(response.map(|body| Answer {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request in flight, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.request_started();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// An answer's body; hyper drops it once written (or when the connection
/// breaks), which ends the request in flight.
struct Answer {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
