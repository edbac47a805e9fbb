//! Bad requests get their status and a JSON error, are counted, store
//! nothing, and leave the daemon healthy.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

async fn signed(d: &Daemon, body: &[u8]) -> (StatusCode, Value) {
    d.post(body).await
}

/// Send hand-written bytes over TLS and return what the server answered.
async fn exchange(d: &Daemon, request: &[u8], then_wait: Duration) -> String {
    let mut s = d.tls_stream().await;
    s.write_all(request).await.unwrap();
    tokio::time::sleep(then_wait).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn each_bad_request_gets_its_status_and_nothing_is_stored() {
    let d = Daemon::start_with(Options {
        max_body_bytes: 4096,
        body_read_timeout: "300ms",
        ..Default::default()
    })
    .await;
    // Too large, announced by Content-Length: refused before reading.
    let big = text_body(
        "100000000000001",
        "15550004444",
        "wamid.BIG",
        1768000000,
        &"x".repeat(5000),
    );
    let (status, v) = signed(&d, &big).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // Too large, chunked (no Content-Length): cut while reading.
    let chunk = "y".repeat(3000);
    let chunked = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\nx-hub-signature-256: sha256={}\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        "0".repeat(64),
        chunk.len(),
        chunk.len()
    );
    let answer = exchange(&d, chunked.as_bytes(), Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    // A body that stops arriving.
    let slow = "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{\"object\"";
    let answer = exchange(&d, slow.as_bytes(), Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Not JSON, not the right object, no entry.
    for (body, code) in [
        (&b"{not json"[..], "malformed_payload"),
        (br#"{"object":"page","entry":[]}"#, "wrong_object"),
        (
            br#"{"object":"whatsapp_business_account"}"#,
            "malformed_payload",
        ),
        (br#"[1,2,3]"#, "malformed_payload"),
        (b"", "malformed_payload"),
    ] {
        let (status, v) = signed(&d, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {v}");
        assert_eq!(v["error"]["code"], code, "{body:?}");
    }
    // Unknown routes and wrong methods.
    let (status, _, body) = d.raw(Method::GET, "/nope", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    let (status, headers, _) = d
        .raw(Method::PUT, "/webhooks/whatsapp", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, POST");
    // The API wants the admin token.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer"),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let (status, headers, body) = d
            .raw(Method::GET, "/api/v1/conversations", &headers, Vec::new())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["error"]["code"],
            "unauthorized"
        );
    }
    // Bad parameters.
    for path in [
        "/api/v1/conversations?limit=0",
        "/api/v1/conversations?limit=abc",
        "/api/v1/conversations?limit=100000",
        "/api/v1/conversations?cursor=garbage",
        "/api/v1/conversations?status=sleeping",
        "/api/v1/webhook-events?kind=nope",
    ] {
        let (status, v) = d.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_parameter", "{path}");
    }
    assert_eq!(
        d.get("/api/v1/conversations/not-a-number").await.0,
        StatusCode::NOT_FOUND
    );

    // Nothing stored; everything counted; still healthy and able to ingest.
    assert!(d.get_all("/api/v1/conversations").await.is_empty());
    assert!(d.get_all("/api/v1/webhook-events").await.is_empty());
    for outcome in ["too_large", "body_timeout", "malformed", "wrong_object"] {
        let n = d
            .metric(
                "switchboard_webhook_requests_total",
                &[("outcome", outcome)],
            )
            .await;
        assert!(n >= 1.0, "{outcome} not counted");
    }
    assert_eq!(d.get_ok("/readyz").await["status"], "ready");
    d.post_ok(&text_body(
        "100000000000001",
        "15550004444",
        "wamid.OK",
        1768000000,
        "fine",
    ))
    .await;
    assert_eq!(d.all_messages().await.len(), 1);
}
