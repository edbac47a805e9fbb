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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tls::{client_config, load_ca, load_or_generate, ALPN_H2, ALPN_HTTP11};
    use crate::sim::client::HttpsClient;
    use http::{Method, StatusCode};
    use rustls::pki_types::ServerName;

    #[tokio::test]
    async fn answers_empty_json_over_both_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let material = load_or_generate(None, dir.path(), &[]).unwrap();
        let roots = load_ca(material.ca_pem.as_ref().unwrap()).unwrap();
        let tls = Arc::new(TlsSource::new(material.server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bare_server(listener, tls, async {
            let _ = stopped.await;
        }));
        for alpn in [ALPN_H2, ALPN_HTTP11] {
            let target = (
                client_config(&roots, &[alpn]).unwrap(),
                ServerName::try_from("localhost").unwrap(),
            );
            let client = HttpsClient::new(addr, Some(target), false);
            let (status, headers, body) = client
                .request(Method::POST, "/webhooks/x", &[], vec![b'a'; 10_000])
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[CONTENT_TYPE], "application/json");
            assert_eq!(body.as_ref(), b"{}");
        }
        stop.send(()).unwrap();
        let report = server.await.unwrap();
        assert_eq!(report.accepted, 2);
    }
}
