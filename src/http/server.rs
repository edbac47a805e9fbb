//! The bounded HTTPS (and plain HTTP/1.1) connection server: accept loop, TLS handshake,
//! per-connection hyper drivers, idle cut-off and graceful shutdown. Routes are not here: the
//! caller passes a service closure.
//!
//! Invariants:
//! - at most `Limits::max_connections` connections exist at once, counted from `accept()`
//!   (TLS handshakes included). At the cap a new connection is accepted and closed at once
//!   (counted as `rejected{reason="limit"}`) rather than left in the kernel backlog, where it
//!   would sit unanswered and then be served late. Slots are freed by the clocks below, so
//!   thousands of idle or slow clients cannot hold the server for long and a well-behaved
//!   client gets in on its (usual) retry;
//! - every phase of a connection has a clock: the TLS handshake (`tls_handshake_timeout`),
//!   HTTP/1 request heads (`header_read_timeout`, hyper's own timer), and idleness with no
//!   request in flight (`idle_timeout`, our watchdog, both protocols). There is no body-read
//!   timeout here: handlers bound their body reads;
//! - the HTTP version is chosen from the negotiated ALPN (`h2` → HTTP/2, anything else →
//!   HTTP/1.1), never by sniffing bytes (hyper's auto builder waits unboundedly for them);
//! - every hyper builder gets `TokioTimer` (without it hyper's header timeout is silently off);
//! - the accept loop never exits on accept errors (EMFILE and friends): it counts, logs and
//!   backs off for [`ACCEPT_BACKOFF`];
//! - on shutdown the listener is dropped first, then every connection is asked to close
//!   gracefully (HTTP/1 finishes its in-flight request, HTTP/2 sends GOAWAY), and whatever
//!   is still open after `shutdown_timeout` is dropped.
//!
//! Finding (hyper 1.12, `proto/h1/conn.rs`): when a kept-alive HTTP/1 connection goes idle,
//! `State::idle` sets `notify_read`, the dispatcher calls `poll_read_head` at once and that
//! arms the header-read timer. So `header_read_timeout` also bounds the wait for the *next*
//! request, and the effective HTTP/1 keep-alive idle limit is
//! `min(header_read_timeout, idle_timeout)`. Such closes surface as a hyper timeout error and
//! are counted as `header_timeout`. HTTP/2 has no such timer (keep-alive PINGs only detect
//! dead peers and even count as traffic), which is why the idle watchdog tracks requests, not
//! bytes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::{counter, gauge, histogram};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::tls::{TlsSource, ALPN_H2};

/// The response body type: boxed so handlers can stream (e.g. Server-Sent Events).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A complete response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// An empty response body.
pub fn empty() -> Body {
    Empty::new().boxed_unsync()
}

/// How long the accept loop pauses after a resource error such as EMFILE, so that it does not
/// spin while descriptors are exhausted.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// After an idle connection was asked to close (HTTP/2 GOAWAY), how long it may take to do so
/// (a request that raced the GOAWAY is still served) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 PING interval and ack timeout: detects dead peers under long-lived streams.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 flow-control windows: they bound what a client can make us buffer per stream and per
/// connection (webhook bodies are small; hyper's defaults are 1 MiB each).
const H2_STREAM_WINDOW: u32 = 128 * 1024;
const H2_CONN_WINDOW: u32 = 256 * 1024;

/// The negotiated HTTP version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
}

/// What the service learns about the connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub protocol: Protocol,
    /// `"TLSv1.3"` or `"TLSv1.2"`; `None` on plain HTTP.
    pub tls_version: Option<&'static str>,
}

/// Bounds for one listener. All durations must be non-zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, handshakes included; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// From accept to the end of the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// HTTP/1: from the first wait for a request head to its end; also bounds keep-alive
    /// idleness (see the module note).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (both protocols).
    pub idle_timeout: Duration,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub h2_max_concurrent_streams: u32,
    /// Largest request head: HTTP/1 answers 431 beyond it; HTTP/2 advertises it as
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_bytes: usize,
    /// How long shutdown waits for connections to finish before dropping them.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            h2_max_concurrent_streams: 128,
            max_header_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Connection accounting for one run of [`serve`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Connections admitted under the cap.
    pub accepted: u64,
    /// Connections closed at once because the cap was reached.
    pub rejected: u64,
    /// Admitted connections whose TLS handshake failed or timed out.
    pub handshake_failed: u64,
    /// Connections that finished on their own after shutdown began, within the timeout.
    pub graceful_closed: u64,
    /// Connections still open at the shutdown deadline, dropped.
    pub forced_closed: u64,
}

/// How a listener carries HTTP.
#[derive(Clone, Debug)]
pub enum Transport {
    /// TLS with the current config of the source; HTTP/2 or HTTP/1.1 by ALPN.
    Tls(Arc<TlsSource>),
    /// Plain HTTP/1.1, for loopback-only listeners (metrics, simulators).
    Plain,
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve<S, F>(
    listener: TcpListener,
    tls: Arc<TlsSource>,
    limits: Limits,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> ServeReport
where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(
        listener,
        Transport::Tls(tls),
        "https",
        limits,
        service,
        shutdown,
    )
    .await
}

/// [`serve`] with a choice of transport; `name` labels this listener's metrics.
pub async fn serve_with<S, F>(
    listener: TcpListener,
    transport: Transport,
    name: &'static str,
    limits: Limits,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> ServeReport
where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        h1: h1_builder(&limits),
        h2: h2_builder(&limits),
        limits,
        transport,
        name,
    });
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut report = ServeReport::default();
    tokio::pin!(shutdown);

    info!(listener = name, addr = ?listener.local_addr().ok(), "listening");
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Outcome::HandshakeFailed) = joined {
                    report.handshake_failed += 1;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        // Closing now tells the client to retry; leaving it in the backlog
                        // would only serve it after it gave up.
                        report.rejected += 1;
                        counter!("switchboard_connections_rejected_total", "listener" => name, "reason" => "limit").increment(1);
                        debug!(listener = name, %remote, "connection limit reached, closing");
                        drop(stream);
                        continue;
                    };
                    report.accepted += 1;
                    counter!("switchboard_connections_accepted_total", "listener" => name).increment(1);
                    let guard = ConnGuard::new(permit, name);
                    tasks.spawn(connection(stream, remote, guard, shared.clone(), service.clone(), stop_rx.clone()));
                }
                Err(error) => {
                    counter!("switchboard_connections_rejected_total", "listener" => name, "reason" => "accept_error").increment(1);
                    if is_per_connection(&error) {
                        debug!(listener = name, %error, "accept: connection failed before accept");
                    } else {
                        warn!(listener = name, %error, "accept failed, backing off");
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        }
                    }
                }
            }
        }
    }

    // New connections now get a refusal from the kernel instead of waiting.
    drop(listener);
    let open = tasks.len();
    info!(listener = name, open, "shutting down: draining connections");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + shared.limits.shutdown_timeout;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(_) => report.graceful_closed += 1,
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    report.forced_closed = tasks.len() as u64;
    if report.forced_closed > 0 {
        counter!("switchboard_connections_closed_total", "listener" => name, "reason" => "forced")
            .increment(report.forced_closed);
        warn!(
            listener = name,
            forced = report.forced_closed,
            "shutdown timeout: dropping connections"
        );
    }
    // Aborts the rest and waits until their sockets are dropped.
    tasks.shutdown().await;
    info!(listener = name, ?report, "stopped");
    report
}

/// Errors that concern one connection that died in the backlog; retrying at once is right.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

struct Shared {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    limits: Limits,
    transport: Transport,
    name: &'static str,
}

fn h1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_header_size(limits.max_header_bytes)
        // max_buf_size caps the per-connection read buffer (and queued writes); it must hold
        // a maximal head plus some body, and hyper asserts a minimum of 8 KiB.
        .max_buf_size((limits.max_header_bytes + 8 * 1024).max(64 * 1024));
    b
}

fn h2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    b
}

/// What a connection task reports back to the accept loop.
enum Outcome {
    HandshakeFailed,
    Closed,
}

/// Holds the connection's slot and keeps the active gauge honest even when the task is
/// aborted at the shutdown deadline.
struct ConnGuard {
    _permit: OwnedSemaphorePermit,
    name: &'static str,
}

impl ConnGuard {
    fn new(permit: OwnedSemaphorePermit, name: &'static str) -> Self {
        gauge!("switchboard_connections_active", "listener" => name).increment(1.0);
        Self {
            _permit: permit,
            name,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        gauge!("switchboard_connections_active", "listener" => self.name).decrement(1.0);
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn connection<S, F>(
    stream: TcpStream,
    remote: SocketAddr,
    _guard: ConnGuard,
    shared: Arc<Shared>,
    service: S,
    mut stop: watch::Receiver<bool>,
) -> Outcome
where
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let name = shared.name;
    // Small request/response exchanges: don't let Nagle hold back the last segment.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(listener = name, %remote, %error, "TCP_NODELAY failed");
    }
    match &shared.transport {
        Transport::Plain => {
            let info = ConnInfo {
                remote,
                protocol: Protocol::Http1,
                tls_version: None,
            };
            serve_io(TokioIo::new(stream), info, &shared, service, &mut stop).await;
            Outcome::Closed
        }
        Transport::Tls(source) => {
            // One config per handshake: a reload affects new connections only.
            let acceptor = TlsAcceptor::from(source.current());
            let started = Instant::now();
            let handshake =
                tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(stream));
            let result = tokio::select! {
                result = handshake => result,
                // Not worth finishing a handshake for a connection we would close at once.
                () = stopped(&mut stop) => return Outcome::Closed,
            };
            let tls = match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    counter!("switchboard_connections_rejected_total", "listener" => name, "reason" => "tls_error").increment(1);
                    debug!(listener = name, %remote, %error, "TLS handshake failed");
                    return Outcome::HandshakeFailed;
                }
                Err(_elapsed) => {
                    counter!("switchboard_connections_rejected_total", "listener" => name, "reason" => "handshake_timeout").increment(1);
                    debug!(listener = name, %remote, "TLS handshake timed out");
                    return Outcome::HandshakeFailed;
                }
            };
            histogram!("switchboard_tls_handshake_seconds", "listener" => name)
                .record(started.elapsed().as_secs_f64());
            let session = tls.get_ref().1;
            let protocol = if session.alpn_protocol() == Some(ALPN_H2) {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            let tls_version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                _ => Some("other"),
            };
            let info = ConnInfo {
                remote,
                protocol,
                tls_version,
            };
            serve_io(TokioIo::new(tls), info, &shared, service, &mut stop).await;
            Outcome::Closed
        }
    }
}

async fn serve_io<I, S, F>(
    io: I,
    info: ConnInfo,
    shared: &Shared,
    service: S,
    stop: &mut watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let remote = info.remote;
    let protocol = info.protocol;
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = activity.begin();
            let response = service(req, info.clone());
            async move {
                let response = response.await;
                // The guard lives until hyper drops the body, i.e. until it is fully sent.
                Ok::<_, Infallible>(response.map(|inner| Tracked {
                    inner,
                    _guard: guard,
                }))
            }
        })
    };
    let idle = shared.limits.idle_timeout;
    let reason = match protocol {
        Protocol::Http1 => {
            let conn = shared.h1.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), &activity, idle, stop).await
        }
        Protocol::Http2 => {
            let conn = shared.h2.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), &activity, idle, stop).await
        }
    };
    debug!(listener = shared.name, %remote, ?protocol, reason, "connection closed");
    counter!("switchboard_connections_closed_total", "listener" => shared.name, "reason" => reason)
        .increment(1);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Idle watchdog fired at this instant and asked the connection to close.
    IdleClosing(Instant),
    ShuttingDown,
}

/// Polls a hyper connection to completion while watching for shutdown and idleness.
/// Returns the `reason` label for `switchboard_connections_closed_total`.
async fn drive<C>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> &'static str
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let mut phase = Phase::Open;
    loop {
        let idle_after = match phase {
            Phase::Open => Some((idle_timeout, None)),
            Phase::IdleClosing(since) => Some((IDLE_CLOSE_GRACE, Some(since))),
            Phase::ShuttingDown => None,
        };
        tokio::select! {
            result = conn.as_mut() => {
                return match (result, phase) {
                    (Err(error), _) if error.is_timeout() => "header_timeout",
                    (Err(error), _) => {
                        debug!(%error, "connection error");
                        "error"
                    }
                    (Ok(()), Phase::Open) => "client",
                    (Ok(()), Phase::IdleClosing(_)) => "idle",
                    (Ok(()), Phase::ShuttingDown) => "shutdown",
                };
            }
            () = stopped(stop), if phase != Phase::ShuttingDown => {
                graceful(conn.as_mut());
                phase = Phase::ShuttingDown;
            }
            () = async {
                match idle_after {
                    Some((timeout, since)) => activity.idle_for(timeout, since).await,
                    None => std::future::pending().await,
                }
            } => match phase {
                Phase::Open => {
                    graceful(conn.as_mut());
                    phase = Phase::IdleClosing(Instant::now());
                }
                // The peer did not finish closing in time: drop it.
                _ => return "idle",
            },
        }
    }
}

/// Request-level activity of one connection: requests in flight and when the last one
/// started or finished. Bytes are deliberately not counted (HTTP/2 PINGs would keep an idle
/// connection alive forever).
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds since `origin` of the last request start or end.
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.fetch_max(nanos, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_nanos(self.last_nanos.load(Ordering::Acquire))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`, counting from the last
    /// activity or `since`, whichever is later.
    async fn idle_for(&self, timeout: Duration, since: Option<Instant>) {
        loop {
            let now = Instant::now();
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let mut last = self.last();
            if let Some(since) = since {
                last = last.max(since);
            }
            let deadline = if busy { now + timeout } else { last + timeout };
            if !busy && now >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Marks one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Touch first so a watcher that sees zero in flight also sees the fresh time.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
