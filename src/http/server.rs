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
//!   HTTP/1 request heads (`header_read_timeout`, hyper's own timer), the wait for the first
//!   request (`min(header_read_timeout, idle_timeout)`, our watchdog, both protocols) and
//!   idleness with no request in flight (`idle_timeout`, our watchdog, both protocols). A
//!   request in flight (until its response body is fully sent) is never cut by these. There
//!   is no body-read timeout here: handlers bound their body reads;
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
use crate::telemetry::names;

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
    /// idleness (see the module note). Both protocols: the longest wait for a connection's
    /// first request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (both protocols); an
    /// HTTP/2 connection gets GOAWAY and one second to finish.
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
                        counter!(names::CONNECTIONS_REJECTED, "listener" => name, "reason" => "limit").increment(1);
                        debug!(listener = name, %remote, "connection limit reached, closing");
                        drop(stream);
                        continue;
                    };
                    report.accepted += 1;
                    counter!(names::CONNECTIONS_ACCEPTED, "listener" => name).increment(1);
                    let guard = ConnGuard::new(permit, name);
                    tasks.spawn(connection(stream, remote, guard, shared.clone(), service.clone(), stop_rx.clone()));
                }
                Err(error) => {
                    counter!(names::CONNECTIONS_REJECTED, "listener" => name, "reason" => "accept_error").increment(1);
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
        counter!(names::CONNECTIONS_CLOSED, "listener" => name, "reason" => "forced")
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
        gauge!(names::CONNECTIONS_ACTIVE, "listener" => name).increment(1.0);
        Self {
            _permit: permit,
            name,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        gauge!(names::CONNECTIONS_ACTIVE, "listener" => self.name).decrement(1.0);
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
                    counter!(names::CONNECTIONS_REJECTED, "listener" => name, "reason" => "tls_error").increment(1);
                    debug!(listener = name, %remote, %error, "TLS handshake failed");
                    return Outcome::HandshakeFailed;
                }
                Err(_elapsed) => {
                    counter!(names::CONNECTIONS_REJECTED, "listener" => name, "reason" => "handshake_timeout").increment(1);
                    debug!(listener = name, %remote, "TLS handshake timed out");
                    return Outcome::HandshakeFailed;
                }
            };
            histogram!(names::TLS_HANDSHAKE_SECONDS, "listener" => name)
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
    let clocks = IdleClocks {
        // Until its first request a connection gets no more time than a request head would:
        // it bounds HTTP/2 clients that finish TLS and then send nothing (hyper's h2 server
        // has no preface timeout).
        first_request: shared
            .limits
            .header_read_timeout
            .min(shared.limits.idle_timeout),
        between_requests: shared.limits.idle_timeout,
    };
    let reason = match protocol {
        Protocol::Http1 => {
            let conn = shared.h1.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), &activity, clocks, stop).await
        }
        Protocol::Http2 => {
            let conn = shared.h2.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), &activity, clocks, stop).await
        }
    };
    debug!(listener = shared.name, %remote, ?protocol, reason, "connection closed");
    counter!(names::CONNECTIONS_CLOSED, "listener" => shared.name, "reason" => reason).increment(1);
}

/// How long a connection may go without a request in flight.
#[derive(Clone, Copy)]
struct IdleClocks {
    /// Before the first request.
    first_request: Duration,
    /// After it.
    between_requests: Duration,
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
    clocks: IdleClocks,
    stop: &mut watch::Receiver<bool>,
) -> &'static str
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let mut phase = Phase::Open;
    loop {
        let idle_after = match phase {
            Phase::Open => Some((clocks, None)),
            Phase::IdleClosing(since) => Some((
                IdleClocks {
                    first_request: IDLE_CLOSE_GRACE,
                    between_requests: IDLE_CLOSE_GRACE,
                },
                Some(since),
            )),
            Phase::ShuttingDown => None,
        };
        tokio::select! {
            result = conn.as_mut() => {
                return match (result, phase) {
                    (Err(error), _) if error.is_timeout() => "header_timeout",
                    // Once we asked the connection to close, a peer that then drops it
                    // abruptly (no TLS close_notify after an HTTP/2 GOAWAY, as most
                    // clients do) still went away because of us.
                    (_, Phase::IdleClosing(_)) => "idle",
                    (_, Phase::ShuttingDown) => "shutdown",
                    (Err(error), Phase::Open) => {
                        debug!(%error, "connection error");
                        "error"
                    }
                    (Ok(()), Phase::Open) => "client",
                };
            }
            () = stopped(stop), if phase != Phase::ShuttingDown => {
                graceful(conn.as_mut());
                phase = Phase::ShuttingDown;
            }
            () = async {
                match idle_after {
                    Some((clocks, since)) => activity.idle_for(clocks, since).await,
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
    /// Requests started on this connection.
    started: AtomicU64,
    /// Nanoseconds since `origin` of the last request start or end.
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
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
        self.started.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for the applicable clock, counting from
    /// the last activity or `since`, whichever is later.
    async fn idle_for(&self, clocks: IdleClocks, since: Option<Instant>) {
        loop {
            let now = Instant::now();
            let timeout = if self.started.load(Ordering::Acquire) == 0 {
                clocks.first_request
            } else {
                clocks.between_requests
            };
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

/// Helpers shared by the network tests of `http` and `sim`.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::http::tls::{client_config, load_ca, load_or_generate};
    use crate::sim::client::TlsTarget;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    pub(crate) struct TestServer {
        pub addr: SocketAddr,
        pub roots: Vec<CertificateDer<'static>>,
        pub tls: Arc<TlsSource>,
        stop: Option<oneshot::Sender<()>>,
        handle: JoinHandle<ServeReport>,
        _dir: tempfile::TempDir,
    }

    impl TestServer {
        pub(crate) fn target(&self, alpn: &[&[u8]]) -> TlsTarget {
            (
                client_config(&self.roots, alpn).unwrap(),
                ServerName::try_from("localhost").unwrap(),
            )
        }

        /// Resolves the shutdown future without waiting for `serve` to return.
        pub(crate) fn trigger_stop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }

        pub(crate) async fn stop(mut self) -> ServeReport {
            self.trigger_stop();
            tokio::time::timeout(Duration::from_secs(5), &mut self.handle)
                .await
                .expect("serve() returned")
                .unwrap()
        }
    }

    /// Starts `serve` over TLS with freshly generated material on a loopback port.
    pub(crate) async fn start<S, F>(limits: Limits, service: S) -> TestServer
    where
        S: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let material = load_or_generate(None, dir.path(), &[]).unwrap();
        let roots = load_ca(material.ca_pem.as_ref().unwrap()).unwrap();
        let tls = Arc::new(TlsSource::new(material.server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, tls.clone(), limits, service, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            roots,
            tls,
            stop: Some(stop),
            handle,
            _dir: dir,
        }
    }

    /// Answers with "<protocol> <tls version>" so tests can see what was negotiated.
    pub(crate) fn echo_service(
    ) -> impl Fn(Request<Incoming>, ConnInfo) -> std::future::Ready<Response<Body>>
           + Clone
           + Send
           + Sync
           + 'static {
        |_req, info: ConnInfo| {
            std::future::ready(Response::new(full(format!(
                "{:?} {}",
                info.protocol,
                info.tls_version.unwrap_or("-")
            ))))
        }
    }

    /// Polls `cond` until it holds; panics after `within`.
    pub(crate) async fn wait_until(within: Duration, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn short_limits() -> Limits {
        Limits {
            max_connections: 64,
            tls_handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            h2_max_concurrent_streams: 16,
            max_header_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::http::tls::{client_config_for_versions, load_ca, load_or_generate, server_config};
    use crate::sim::client::{ClientError, Connection};
    use http::{Method, StatusCode};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .uri(path)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// Reads until EOF or a reset; returns what was read and how long it took.
    async fn read_to_close<R: tokio::io::AsyncRead + Unpin>(
        stream: &mut R,
        within: Duration,
    ) -> (Vec<u8>, Duration) {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(started + within, stream.read(&mut chunk)).await {
                Err(_) => panic!("connection not closed within {within:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return (buf, started.elapsed()),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[tokio::test]
    async fn serves_tls13_and_tls12() {
        let server = start(short_limits(), echo_service()).await;

        let mut conn = Connection::connect(server.addr, Some(server.target(&[b"http/1.1"])), false)
            .await
            .unwrap();
        assert_eq!(conn.tls_version(), Some("TLSv1.3"));
        let response = conn.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), b"Http1 TLSv1.3");

        let tls12 =
            client_config_for_versions(&server.roots, &[b"http/1.1"], &[&rustls::version::TLS12])
                .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = Connection::connect(server.addr, Some((tls12, name)), false)
            .await
            .unwrap();
        assert_eq!(conn.tls_version(), Some("TLSv1.2"));
        let response = conn.send(get("/")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), b"Http1 TLSv1.2");

        let report = server.stop().await;
        assert_eq!(report.accepted, 2);
    }

    #[tokio::test]
    async fn refuses_tls11_client_hello() {
        let server = start(short_limits(), echo_service()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        // A minimal ClientHello with legacy version TLS 1.1 and no supported_versions
        // extension, offering TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256. It carries a
        // signature_algorithms extension (ecdsa_secp256r1_sha256) only so that rustls gets as
        // far as the version check instead of failing on the missing extension.
        let mut body = vec![0x03, 0x02];
        body.extend_from_slice(&[7u8; 32]);
        body.extend_from_slice(&[0x00, 0x00, 0x02, 0xc0, 0x2b, 0x01, 0x00]);
        body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
        let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
        record.extend_from_slice(&handshake);
        tcp.write_all(&record).await.unwrap();
        let (reply, _) = read_to_close(&mut tcp, Duration::from_secs(2)).await;
        // An alert record (21) saying protocol_version (70), never a ServerHello.
        assert!(reply.len() >= 7, "{reply:?}");
        assert_eq!(reply[0], 21, "{reply:?}");
        assert_eq!(reply[6], 70, "{reply:?}");
        let report = server.stop().await;
        assert_eq!(report.handshake_failed, 1);
    }

    #[tokio::test]
    async fn alpn_selects_h2_or_http11() {
        let server = start(short_limits(), echo_service()).await;
        for (alpn, expected, protocol) in [
            (&[b"h2".as_slice()][..], "Http2 TLSv1.3", Protocol::Http2),
            (
                &[b"http/1.1".as_slice()][..],
                "Http1 TLSv1.3",
                Protocol::Http1,
            ),
            (
                &[b"h2".as_slice(), b"http/1.1".as_slice()][..],
                "Http2 TLSv1.3",
                Protocol::Http2,
            ),
            // No ALPN at all: HTTP/1.1, never a sniff.
            (&[][..], "Http1 TLSv1.3", Protocol::Http1),
        ] {
            let mut conn = Connection::connect(server.addr, Some(server.target(alpn)), false)
                .await
                .unwrap();
            assert_eq!(conn.protocol(), protocol);
            for _ in 0..2 {
                let response = conn.send(get("/x")).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(response.body().as_ref(), expected.as_bytes());
            }
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn oversized_http1_head_gets_431() {
        let limits = Limits {
            max_header_bytes: 4 * 1024,
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        let mut conn = Connection::connect(server.addr, Some(server.target(&[b"http/1.1"])), false)
            .await
            .unwrap();
        let big = "a".repeat(8 * 1024);
        let req = Request::builder()
            .uri("/")
            .header("x-big", big)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = conn.send(req).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn at_the_cap_new_connections_are_closed_at_once_until_timeouts_free_slots() {
        let handshake = Duration::from_millis(400);
        let limits = Limits {
            max_connections: 5,
            tls_handshake_timeout: handshake,
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;

        // Five clients that connect and never start TLS hold every slot.
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // The sixth is accepted after them (the backlog is FIFO) and closed at once, well
        // before any handshake timeout could explain it.
        let mut sixth = TcpStream::connect(server.addr).await.unwrap();
        let (_, took) = read_to_close(&mut sixth, Duration::from_secs(2)).await;
        assert!(took < handshake / 2, "closed after {took:?}");
        let refused =
            Connection::connect(server.addr, Some(server.target(&[b"http/1.1"])), false).await;
        assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");

        // The idle ones are cut by the handshake timeout...
        for stream in &mut idle {
            read_to_close(stream, Duration::from_secs(3)).await;
        }
        // ...and a well-behaved client is served again (its slot frees as the tasks end).
        let deadline = Instant::now() + Duration::from_secs(3);
        let response = loop {
            match Connection::connect(server.addr, Some(server.target(&[b"h2"])), false).await {
                Ok(mut conn) => break conn.send(get("/")).await.unwrap(),
                Err(error) => {
                    assert!(Instant::now() < deadline, "not served again: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        assert_eq!(response.status(), StatusCode::OK);

        let report = server.stop().await;
        assert!(report.rejected >= 2, "{report:?}");
        assert_eq!(report.handshake_failed, 5, "{report:?}");
    }

    #[tokio::test]
    async fn silent_client_is_closed_after_handshake_timeout() {
        let handshake = Duration::from_millis(300);
        let limits = Limits {
            tls_handshake_timeout: handshake,
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let (reply, took) = read_to_close(&mut tcp, Duration::from_secs(3)).await;
        assert!(reply.is_empty());
        assert!(took >= handshake - Duration::from_millis(50), "{took:?}");
        let report = server.stop().await;
        assert_eq!(report.handshake_failed, 1);
    }

    #[tokio::test]
    async fn half_a_request_line_is_closed_after_header_timeout() {
        let header = Duration::from_millis(300);
        let limits = Limits {
            header_read_timeout: header,
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        let (config, name) = server.target(&[b"http/1.1"]);
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /slow HT").await.unwrap();
        let (_, took) = read_to_close(&mut tls, Duration::from_secs(3)).await;
        assert!(took >= header - Duration::from_millis(50), "{took:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn h2_client_silent_after_tls_is_closed_by_the_first_request_clock() {
        let header = Duration::from_millis(200);
        let limits = Limits {
            header_read_timeout: header,
            idle_timeout: Duration::from_secs(60),
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        let (config, name) = server.target(&[b"h2"]);
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        // No connection preface: hyper waits for it forever; our clock closes the connection
        // (GOAWAY cannot be sent before the preface, so after the grace period it is dropped).
        let (_, took) = read_to_close(&mut tls, Duration::from_secs(4)).await;
        assert!(took >= header - Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn http1_keep_alive_idle_is_bounded_by_header_read_timeout() {
        // The finding in the module note: with a long idle_timeout, hyper's header timer
        // still closes an idle kept-alive HTTP/1 connection.
        let header = Duration::from_millis(300);
        let limits = Limits {
            header_read_timeout: header,
            idle_timeout: Duration::from_secs(60),
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        let mut conn = Connection::connect(server.addr, Some(server.target(&[b"http/1.1"])), false)
            .await
            .unwrap();
        assert_eq!(conn.send(get("/")).await.unwrap().status(), StatusCode::OK);
        let idle_since = Instant::now();
        wait_until(Duration::from_secs(3), "h1 idle close", || conn.is_closed()).await;
        assert!(idle_since.elapsed() >= header - Duration::from_millis(50));
        assert!(matches!(
            conn.send(get("/")).await,
            Err(ClientError::ConnectionClosed)
        ));
        server.stop().await;
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_idle_timeout_both_protocols() {
        let idle = Duration::from_millis(300);
        let limits = Limits {
            idle_timeout: idle,
            header_read_timeout: Duration::from_secs(10),
            ..short_limits()
        };
        let server = start(limits, echo_service()).await;
        for alpn in [b"h2".as_slice(), b"http/1.1".as_slice()] {
            let mut conn = Connection::connect(server.addr, Some(server.target(&[alpn])), false)
                .await
                .unwrap();
            assert_eq!(conn.send(get("/")).await.unwrap().status(), StatusCode::OK);
            let idle_since = Instant::now();
            wait_until(Duration::from_secs(3), "idle close", || conn.is_closed()).await;
            assert!(idle_since.elapsed() >= idle - Duration::from_millis(50));
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn a_slow_request_is_not_cut_by_the_idle_timeout() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(150),
            ..short_limits()
        };
        let slow = |_req, _info| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(full("done"))
        };
        let server = start(limits, slow).await;
        for alpn in [b"h2".as_slice(), b"http/1.1".as_slice()] {
            let mut conn = Connection::connect(server.addr, Some(server.target(&[alpn])), false)
                .await
                .unwrap();
            let response = conn.send(get("/")).await.unwrap();
            assert_eq!(response.body().as_ref(), b"done");
        }
        server.stop().await;
    }

    /// A service that reports when it starts and answers after `delay`.
    fn slow_service(
        delay: Duration,
        started: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> impl Fn(Request<Incoming>, ConnInfo) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
           + Clone
           + Send
           + Sync
           + 'static {
        move |_req, _info| {
            let _ = started.send(());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::new(full("late"))
            })
        }
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_in_flight_requests() {
        for alpn in [b"h2".as_slice(), b"http/1.1".as_slice()] {
            let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
            let mut server = start(
                short_limits(),
                slow_service(Duration::from_millis(300), started_tx),
            )
            .await;
            let mut conn = Connection::connect(server.addr, Some(server.target(&[alpn])), false)
                .await
                .unwrap();
            let in_flight = tokio::spawn(async move { conn.send(get("/")).await });
            started.recv().await.unwrap();
            server.trigger_stop();
            let response = in_flight.await.unwrap().unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.body().as_ref(), b"late");
            let addr = server.addr;
            let report = server.stop().await;
            assert_eq!(report.graceful_closed, 1, "{report:?}");
            assert_eq!(report.forced_closed, 0, "{report:?}");
            // The listener is gone.
            assert!(TcpStream::connect(addr).await.is_err());
        }
    }

    #[tokio::test]
    async fn shutdown_drops_connections_still_open_at_the_deadline() {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let limits = Limits {
            shutdown_timeout: Duration::from_millis(200),
            ..short_limits()
        };
        let server = start(limits, slow_service(Duration::from_secs(30), started_tx)).await;
        let mut conn = Connection::connect(server.addr, Some(server.target(&[b"h2"])), false)
            .await
            .unwrap();
        let in_flight = tokio::spawn(async move { conn.send(get("/")).await });
        started.recv().await.unwrap();
        let began = Instant::now();
        let report = server.stop().await;
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(report.forced_closed, 1, "{report:?}");
        let result = tokio::time::timeout(Duration::from_secs(2), in_flight)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_err(), "{result:?}");
    }

    #[tokio::test]
    async fn certificate_replacement_affects_new_connections_only() {
        let server = start(short_limits(), echo_service()).await;
        let mut old_conn =
            Connection::connect(server.addr, Some(server.target(&[b"http/1.1"])), false)
                .await
                .unwrap();
        assert_eq!(
            old_conn.send(get("/")).await.unwrap().status(),
            StatusCode::OK
        );

        // New material from another CA.
        let dir = tempfile::tempdir().unwrap();
        let other = load_or_generate(None, dir.path(), &[]).unwrap();
        let other_roots = load_ca(other.ca_pem.as_ref().unwrap()).unwrap();
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&other.cert_path)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&other.key_path).unwrap();
        use rustls::pki_types::pem::PemObject;
        server.tls.replace(server_config(chain, key).unwrap());

        // The established connection keeps working...
        assert_eq!(
            old_conn.send(get("/")).await.unwrap().status(),
            StatusCode::OK
        );
        // ...new ones present the new certificate.
        let stale = Connection::connect(server.addr, Some(server.target(&[b"h2"])), false).await;
        assert!(matches!(stale, Err(ClientError::Tls(_))), "{stale:?}");
        let fresh = (
            crate::http::tls::client_config(&other_roots, &[b"h2"]).unwrap(),
            ServerName::try_from("localhost").unwrap(),
        );
        let mut conn = Connection::connect(server.addr, Some(fresh), false)
            .await
            .unwrap();
        assert_eq!(conn.send(get("/")).await.unwrap().status(), StatusCode::OK);
        server.stop().await;
    }

    #[tokio::test]
    async fn plain_transport_serves_http1() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(serve_with(
            listener,
            Transport::Plain,
            "test",
            short_limits(),
            echo_service(),
            async {
                let _ = stopped.await;
            },
        ));
        let mut conn = Connection::connect(addr, None, false).await.unwrap();
        let response = conn.send(get("/")).await.unwrap();
        assert_eq!(response.body().as_ref(), b"Http1 -");
        let req = Request::builder()
            .method(Method::POST)
            .uri("/")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        assert_eq!(conn.send(req).await.unwrap().status(), StatusCode::OK);
        stop.send(()).unwrap();
        let report = handle.await.unwrap();
        assert_eq!(report.accepted, 1);
    }
}
