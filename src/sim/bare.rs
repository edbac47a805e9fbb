//! The baseline server for benchmarks: the same `serve()` stack (TLS, hyper, limits) with a
//! handler that reads the body and answers `200 {}`, so a benchmark against it measures
//! everything except our own request handling.

use std::future::Future;
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;

use crate::http::server::{full, serve, Limits, ServeReport};
use crate::http::tls::TlsSource;

/// Request bodies beyond this are not read further (the real front door has its own cap).
const MAX_BODY: usize = 1024 * 1024;

/// Serves `200 {}` to every request until `shutdown` resolves.
pub async fn bare_server(
    listener: TcpListener,
    tls: Arc<TlsSource>,
    shutdown: impl Future<Output = ()>,
) -> ServeReport {
    let service = |req: http::Request<hyper::body::Incoming>, _info| async move {
        // Read the body as a real handler would, so the baseline includes that cost.
        let _ = Limited::new(req.into_body(), MAX_BODY).collect().await;
        let mut response = Response::new(full("{}"));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    serve(listener, tls, Limits::default(), service, shutdown).await
}
