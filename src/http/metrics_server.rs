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
        return text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        );
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
        "/metrics" => text(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, (probes.metrics)()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::client::HttpsClient;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn serves_metrics_health_readiness_and_404() {
        let ready = Arc::new(AtomicBool::new(false));
        let probes = Probes {
            metrics: Arc::new(|| "# HELP up Up.\n# TYPE up gauge\nup 1\n".to_owned()),
            ready: {
                let ready = ready.clone();
                Arc::new(move || ready.load(Ordering::SeqCst))
            },
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, probes, async {
            let _ = stopped.await;
        }));
        let client = HttpsClient::new(addr, None, false);

        let (status, headers, body) = client
            .request(Method::GET, "/metrics", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
        assert!(body.ends_with(b"up 1\n"));

        let (status, _, _) = client
            .request(Method::GET, "/healthz", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);

        let (status, _, _) = client
            .request(Method::GET, "/readyz", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::SeqCst);
        let (status, _, _) = client
            .request(Method::GET, "/readyz", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        ready.store(false, Ordering::SeqCst);
        let (status, _, _) = client
            .request(Method::GET, "/readyz", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        let (status, _, _) = client.request(Method::GET, "/nope", &[], "").await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) = client
            .request(Method::POST, "/metrics", &[], "x")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "GET, HEAD");
        let (status, _, body) = client
            .request(Method::HEAD, "/metrics", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());

        // All of it over one kept-alive connection.
        assert_eq!(client.connects(), 1);
        stop.send(()).unwrap();
        let report = server.await.unwrap();
        assert_eq!(report.accepted, 1);
    }

    #[tokio::test]
    async fn connection_cap_applies() {
        let probes = Probes {
            metrics: Arc::new(String::new),
            ready: Arc::new(|| true),
        };
        let limits = Limits {
            max_connections: 1,
            ..metrics_limits()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics_with(listener, probes, limits, async {
            let _ = stopped.await;
        }));
        let first = HttpsClient::new(addr, None, false);
        let (status, _, _) = first
            .request(Method::GET, "/healthz", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        // The first client's kept-alive connection holds the only slot.
        let second = HttpsClient::new(addr, None, false);
        assert!(second
            .request(Method::GET, "/healthz", &[], "")
            .await
            .is_err());
        stop.send(()).unwrap();
        let report = server.await.unwrap();
        assert_eq!(report.rejected, 1);
    }
}
