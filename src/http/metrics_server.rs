//! The operations listener: plain HTTP/1.1 serving `GET /metrics` (Prometheus text),
//! `GET /healthz` (process is up) and `GET /readyz` (ready to take traffic).
//!
//! Invariants: it runs through the same bounded [`serve_with`] as the public listener, with
//! small limits ([`metrics_limits`]): a scraper or a port scan cannot hold more than 64
//! connections, and each has header and idle clocks. It is plain HTTP: bind it to loopback or
//! an internal interface.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use tokio::net::TcpListener;

use super::server::{full, serve_with, Body, Limits, ServeReport, Transport};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the operations endpoints report.
#[derive(Clone)]
pub struct Probes {
    /// Renders all metrics in the Prometheus text format.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Readiness: `/readyz` answers 200 when true, 503 otherwise.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// The bounds for the operations listener.
pub fn metrics_limits() -> Limits {
    Limits {
        max_connections: 64,
        tls_handshake_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        h2_max_concurrent_streams: 1,
        max_header_bytes: 8 * 1024,
        shutdown_timeout: Duration::from_secs(2),
    }
}

/// Serves the operations endpoints on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    probes: Probes,
    shutdown: impl Future<Output = ()>,
) -> ServeReport {
    serve_metrics_with(listener, probes, metrics_limits(), shutdown).await
}

/// [`serve_metrics`] with explicit limits (tests shorten the clocks).
pub async fn serve_metrics_with(
    listener: TcpListener,
    probes: Probes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> ServeReport {
    let service = move |req: http::Request<hyper::body::Incoming>, _info| {
        let response = route(&probes, req.method(), req.uri().path());
        async move { response }
    };
    serve_with(
        listener,
        Transport::Plain,
        "metrics",
        limits,
        service,
        shutdown,
    )
    .await
}

/// Maps a request to its response; HEAD is answered like GET (hyper drops the body).
fn route(probes: &Probes, method: &Method, path: &str) -> Response<Body> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            PROMETHEUS_CONTENT_TYPE,
            (probes.metrics)(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        _ if (probes.ready)() => text(StatusCode::OK, "text/plain; charset=utf-8", "ready\n"),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "not ready\n",
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(full(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
