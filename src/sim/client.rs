//! A small HTTP(S) client for tests, benchmarks and simulators: one keep-alive connection
//! ([`Connection`]) over hyper's low-level client API and tokio-rustls, and a tiny pool of
//! them ([`HttpsClient`]).
//!
//! Invariants:
//! - every exchange (waiting for the connection, sending, reading the whole response body) is
//!   bounded by one request timeout, and response bodies by a size cap;
//! - a request is retried on another connection only when hyper hands it back unsent, so a
//!   request is never delivered twice by this client;
//! - over TLS the negotiated ALPN picks HTTP/2 or HTTP/1.1; without ALPN (or without TLS) the
//!   caller's `http2` flag does (prior knowledge);
//! - a connection's driver task dies with the [`Connection`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;

use crate::http::server::Protocol;
use crate::http::tls::{ALPN_H2, ALPN_HTTP11};

/// Default bound on one exchange (and on connecting).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on a collected response body.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle connections an [`HttpsClient`] keeps.
const MAX_POOLED: usize = 16;

/// TLS settings for a target: the client config and the name to verify.
pub type TlsTarget = (Arc<ClientConfig>, ServerName<'static>);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connection was closed before the request was written: safe to retry elsewhere.
    #[error("connection closed")]
    ConnectionClosed,
    /// The exchange failed after the request may have been written.
    #[error("HTTP exchange: {0}")]
    Http(#[source] hyper::Error),
    #[error("reading response body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] http::Error),
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

type ResponseFuture = Pin<
    Box<
        dyn Future<Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Req>>>
            + Send,
    >,
>;
type Req = Request<Full<Bytes>>;

/// One keep-alive connection to a server.
pub struct Connection {
    sender: Sender,
    driver: JoinHandle<()>,
    scheme: Scheme,
    authority: Authority,
    protocol: Protocol,
    tls_version: Option<&'static str>,
    request_timeout: Duration,
    max_body: usize,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.authority)
            .field("protocol", &self.protocol)
            .field("tls_version", &self.tls_version)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects (TCP, then TLS when `tls` is given, then the HTTP handshake) within
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<TlsTarget>,
        http2: bool,
    ) -> Result<Connection, ClientError> {
        let deadline = Instant::now() + DEFAULT_REQUEST_TIMEOUT;
        let timeout = ClientError::Timeout(DEFAULT_REQUEST_TIMEOUT);
        let tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(result) => result.map_err(ClientError::Connect)?,
            Err(_) => return Err(timeout),
        };
        tcp.set_nodelay(true).map_err(ClientError::Connect)?;
        match tls {
            None => {
                let authority = authority_for(addr, None)?;
                Self::handshake(TokioIo::new(tcp), Scheme::HTTP, authority, http2, None).await
            }
            Some((config, name)) => {
                let authority = authority_for(addr, Some(&name))?;
                let connector = TlsConnector::from(config);
                let stream = match timeout_at(deadline, connector.connect(name, tcp)).await {
                    Ok(result) => result.map_err(ClientError::Tls)?,
                    Err(_) => return Err(timeout),
                };
                let session = stream.get_ref().1;
                let use_h2 = match session.alpn_protocol() {
                    Some(p) if p == ALPN_H2 => true,
                    Some(p) if p == ALPN_HTTP11 => false,
                    _ => http2,
                };
                let tls_version = match session.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                    Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                    _ => Some("other"),
                };
                Self::handshake(
                    TokioIo::new(stream),
                    Scheme::HTTPS,
                    authority,
                    use_h2,
                    tls_version,
                )
                .await
            }
        }
    }

    async fn handshake<I>(
        io: I,
        scheme: Scheme,
        authority: Authority,
        http2: bool,
        tls_version: Option<&'static str>,
    ) -> Result<Connection, ClientError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, driver, protocol) = if http2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ClientError::Handshake)?;
            let driver = tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "client h2 connection ended");
                }
            });
            (Sender::H2(sender), driver, Protocol::Http2)
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ClientError::Handshake)?;
            let driver = tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "client h1 connection ended");
                }
            });
            (Sender::H1(sender), driver, Protocol::Http1)
        };
        Ok(Connection {
            sender,
            driver,
            scheme,
            authority,
            protocol,
            tls_version,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// The negotiated HTTP version.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `"TLSv1.3"`/`"TLSv1.2"`, or `None` on plain HTTP.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// Bounds each later [`send`](Self::send) (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Caps collected response bodies (default [`DEFAULT_MAX_BODY`]).
    pub fn set_max_body(&mut self, max: usize) {
        self.max_body = max;
    }

    /// True once the server (or an error) closed the connection; callers reconnect.
    pub fn is_closed(&self) -> bool {
        let sender_closed = match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        };
        sender_closed || self.driver.is_finished()
    }

    /// Sends one request and collects the response body. The URI may be a bare path; scheme,
    /// authority and `Host` are filled in for the protocol in use.
    pub async fn send(&mut self, req: Req) -> Result<Response<Bytes>, ClientError> {
        self.try_send(req).await.map_err(|(error, _)| error)
    }

    /// Like `send`, but hands the request back when it was certainly not written.
    async fn try_send(&mut self, req: Req) -> Result<Response<Bytes>, (ClientError, Option<Req>)> {
        let timeout = self.request_timeout;
        let deadline = Instant::now() + timeout;
        let req = self.normalize(req).map_err(|e| (e, None))?;

        let ready = async {
            match &mut self.sender {
                Sender::H1(s) => s.ready().await,
                Sender::H2(s) => s.ready().await,
            }
        };
        match timeout_at(deadline, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err((ClientError::ConnectionClosed, Some(req))),
            Err(_) => return Err((ClientError::Timeout(timeout), Some(req))),
        }

        let sending: ResponseFuture = match &mut self.sender {
            Sender::H1(s) => Box::pin(s.try_send_request(req)),
            Sender::H2(s) => Box::pin(s.try_send_request(req)),
        };
        let response = match timeout_at(deadline, sending).await {
            Ok(Ok(response)) => response,
            Ok(Err(mut error)) => {
                return Err(match error.take_message() {
                    Some(req) => (ClientError::ConnectionClosed, Some(req)),
                    None => (ClientError::Http(error.into_error()), None),
                })
            }
            // Dropping an HTTP/1 exchange closes the connection: is_closed() will say so.
            Err(_) => return Err((ClientError::Timeout(timeout), None)),
        };

        let (parts, body) = response.into_parts();
        let collected = timeout_at(deadline, Limited::new(body, self.max_body).collect()).await;
        match collected {
            Ok(Ok(body)) => Ok(Response::from_parts(parts, body.to_bytes())),
            Ok(Err(error)) => Err((ClientError::Body(error), None)),
            Err(_) => Err((ClientError::Timeout(timeout), None)),
        }
    }

    /// HTTP/1 wants origin-form plus `Host`; HTTP/2 wants scheme and authority in the URI.
    fn normalize(&self, req: Req) -> Result<Req, ClientError> {
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .cloned()
            .unwrap_or_else(|| self.authority.clone());
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match self.protocol {
            Protocol::Http1 => {
                if !parts.headers.contains_key(HOST) {
                    let host =
                        HeaderValue::from_str(authority.as_str()).map_err(http::Error::from)?;
                    parts.headers.insert(HOST, host);
                }
                parts.uri = Uri::from(path);
            }
            Protocol::Http2 => {
                parts.uri = Uri::builder()
                    .scheme(self.scheme.clone())
                    .authority(authority)
                    .path_and_query(path)
                    .build()?;
            }
        }
        Ok(Request::from_parts(parts, body))
    }
}

/// `host:port` for the Host header / `:authority`: the TLS name when it is a DNS name.
fn authority_for(
    addr: SocketAddr,
    name: Option<&ServerName<'static>>,
) -> Result<Authority, ClientError> {
    let text = match name {
        Some(ServerName::DnsName(dns)) => format!("{}:{}", dns.as_ref(), addr.port()),
        Some(ServerName::IpAddress(ip)) => {
            SocketAddr::new(std::net::IpAddr::from(*ip), addr.port()).to_string()
        }
        _ => addr.to_string(),
    };
    Authority::try_from(text.as_str()).map_err(|e| ClientError::InvalidRequest(e.into()))
}

/// A convenience client for one server: pools keep-alive connections and reconnects
/// transparently when a pooled one was closed by the server.
pub struct HttpsClient {
    addr: SocketAddr,
    tls: Option<TlsTarget>,
    http2: bool,
    request_timeout: Duration,
    pool: Mutex<Vec<Connection>>,
    connects: AtomicU64,
}

impl HttpsClient {
    pub fn new(addr: SocketAddr, tls: Option<TlsTarget>, http2: bool) -> Self {
        Self {
            addr,
            tls,
            http2,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            pool: Mutex::new(Vec::new()),
            connects: AtomicU64::new(0),
        }
    }

    /// Bounds each exchange (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connections opened so far (reconnects included).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Pooled connections not known to be closed.
    pub fn open_connections(&self) -> usize {
        self.pool.lock().iter().filter(|c| !c.is_closed()).count()
    }

    /// Sends one request and returns status, headers and the collected body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(Full::new(body.into()))?;
        loop {
            let (mut conn, fresh) = match self.take_pooled() {
                Some(conn) => (conn, false),
                None => (self.connect().await?, true),
            };
            match conn.try_send(req).await {
                Ok(response) => {
                    self.put_back(conn);
                    let (parts, body) = response.into_parts();
                    return Ok((parts.status, parts.headers, body));
                }
                // A pooled connection the server had closed: the request never left, so
                // another connection may carry it. Terminates: each retry consumes one
                // pooled connection, and a fresh one is not retried.
                Err((ClientError::ConnectionClosed, Some(unsent))) if !fresh => req = unsent,
                Err((error, _)) => return Err(error),
            }
        }
    }

    fn take_pooled(&self) -> Option<Connection> {
        let mut pool = self.pool.lock();
        while let Some(conn) = pool.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Connection) {
        if conn.is_closed() {
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < MAX_POOLED {
            pool.push(conn);
        }
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let mut conn = Connection::connect(self.addr, self.tls.clone(), self.http2).await?;
        conn.set_request_timeout(self.request_timeout);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::server::test_support::{short_limits, start, wait_until};
    use crate::http::server::{full, Limits};

    #[tokio::test]
    async fn reconnects_after_the_server_closed_an_idle_connection() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            header_read_timeout: Duration::from_millis(200),
            ..short_limits()
        };
        let server = start(limits, |_req, _info| async { Response::new(full("hi")) }).await;
        for alpn in [ALPN_H2, ALPN_HTTP11] {
            let client = HttpsClient::new(server.addr, Some(server.target(&[alpn])), false);
            let (status, _, body) = client.request(Method::GET, "/", &[], "").await.unwrap();
            assert_eq!((status, body.as_ref()), (StatusCode::OK, b"hi".as_slice()));
            assert_eq!(client.open_connections(), 1);
            wait_until(Duration::from_secs(3), "server idle close", || {
                client.open_connections() == 0
            })
            .await;
            let (status, _, _) = client.request(Method::GET, "/", &[], "").await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(client.connects(), 2);
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn keeps_one_connection_for_sequential_requests_and_sends_headers_and_body() {
        let service = |req: Request<Incoming>, _info| async move {
            let tag = req
                .headers()
                .get("x-tag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let method = req.method().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(full(format!(
                "{method} {tag} {}",
                String::from_utf8_lossy(&body)
            )))
        };
        let server = start(short_limits(), service).await;
        for alpn in [ALPN_H2, ALPN_HTTP11] {
            let client = HttpsClient::new(server.addr, Some(server.target(&[alpn])), false);
            for i in 0..3 {
                let (status, _, body) = client
                    .request(
                        Method::POST,
                        "/echo?x=1",
                        &[("x-tag", "t")],
                        format!("b{i}"),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, format!("POST t b{i}"));
            }
            assert_eq!(client.connects(), 1);
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn request_timeout_and_body_cap_are_enforced() {
        let service = |req: Request<Incoming>, _info| async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Response::new(full(vec![b'x'; 4096]))
        };
        let server = start(short_limits(), service).await;
        let client = HttpsClient::new(server.addr, Some(server.target(&[ALPN_H2])), false)
            .with_request_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let result = client.request(Method::GET, "/slow", &[], "").await;
        assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        let mut conn = Connection::connect(server.addr, Some(server.target(&[ALPN_H2])), false)
            .await
            .unwrap();
        conn.set_max_body(1024);
        let req = Request::builder()
            .uri("/big")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let result = conn.send(req).await;
        assert!(matches!(result, Err(ClientError::Body(_))), "{result:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn connect_errors_are_typed() {
        // A port nobody listens on: bind, learn the port, close.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = Connection::connect(addr, None, false).await;
        assert!(matches!(result, Err(ClientError::Connect(_))), "{result:?}");
    }
}
