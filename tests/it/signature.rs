//! X-Hub-Signature-256: the vectors of the platform notes, wrong secrets,
//! tampered bodies, missing and malformed headers. Nothing unsigned is stored.

use http::{Method, StatusCode};
use serde_json::Value;

use crate::harness::*;

const EMPTY_ENTRY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

async fn post_with(d: &Daemon, sig: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = sig {
        headers.push(("x-hub-signature-256", s));
    }
    let (status, _, bytes) = d
        .raw(Method::POST, "/webhooks/whatsapp", &headers, body.to_vec())
        .await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn published_vectors_verify_against_any_configured_app() {
    let d = Daemon::start_with(Options {
        extra_apps: vec![("other", "secret")],
        ..Default::default()
    })
    .await;
    // Vector 1: secret `test_app_secret` (the main app).
    let (status, v) = post_with(
        &d,
        Some("sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756"),
        EMPTY_ENTRY,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Vector 2: secret `secret` (the second app), body `test`: the signature
    // is accepted, and only then is the body refused as not JSON.
    let (status, v) = post_with(
        &d,
        Some("sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"),
        b"test",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "malformed_payload");
    // Uppercase hex is the same signature.
    let upper = "sha256=DEC6A680679A968E7E0319355B23599CBFC54502C0784668E9618BAA0C633756";
    assert_eq!(
        post_with(&d, Some(upper), EMPTY_ENTRY).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_deliveries_are_refused_and_not_stored() {
    let d = Daemon::start().await;
    let body = text_body(
        "100000000000001",
        "15550001111",
        "wamid.SIG1",
        1768000000,
        "hello",
    );
    let wrong_secret = switchboard::whatsapp::sign(b"not the secret", &body);
    let mut tampered = body.clone();
    let pos = tampered.windows(5).position(|w| w == b"hello").unwrap();
    tampered[pos] = b'j';
    let good = switchboard::whatsapp::sign(APP_SECRET.as_bytes(), &body);
    let cases: Vec<(Option<String>, &[u8], &str)> = vec![
        (None, &body, "missing_signature"),
        (Some(wrong_secret), &body, "bad_signature"),
        (Some(good.clone()), &tampered, "bad_signature"),
        (
            Some(good.trim_start_matches("sha256=").to_string()),
            &body,
            "malformed_signature",
        ),
        (Some("sha256=abc".into()), &body, "malformed_signature"),
        (
            Some(format!("sha1={}", &good[7..])),
            &body,
            "malformed_signature",
        ),
        (Some(good.replace('a', "z")), &body, "malformed_signature"),
        (Some(String::new()), &body, "malformed_signature"),
    ];
    for (sig, b, code) in &cases {
        let (status, v) = post_with(&d, sig.as_deref(), b).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{sig:?}: {v}");
        assert_eq!(v["error"]["code"], *code, "{sig:?}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert!(
        d.get_all("/api/v1/conversations").await.is_empty(),
        "nothing unsigned may be stored"
    );
    assert_eq!(
        d.get("/api/v1/messages/wamid.SIG1").await.0,
        StatusCode::NOT_FOUND
    );
    let refused = d
        .metric("switchboard_webhook_requests_total", &[("method", "POST")])
        .await;
    assert_eq!(refused as usize, cases.len());
    // The right signature on the same body still works afterwards.
    d.post_ok(&body).await;
    assert_eq!(
        d.get_ok("/api/v1/messages/wamid.SIG1").await["message"]["text"],
        "hello"
    );
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let d = Daemon::start().await;
    let ok = format!("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444");
    let (status, headers, body) = d.raw(Method::GET, &ok, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"1158201444");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let wrong = "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1";
    let (status, _, body) = d.raw(Method::GET, wrong, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "forbidden");
    let (status, _, _) = d
        .raw(
            Method::GET,
            "/webhooks/whatsapp?hub.mode=subscribe",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
