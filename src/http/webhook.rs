//! The WhatsApp webhook endpoint: the GET verification handshake and signed
//! POST deliveries.
//!
//! Invariants: the signature is checked on the raw bytes before anything is
//! parsed or stored; the body is bounded by size (Content-Length first, then
//! while reading) and by read time; 200 means every event of the delivery is
//! durable and applied; anything else is safe for Meta to retry.

use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::api::Params;
use super::app::App;
use super::response::{error, json, read_body, retry_after, with_type};
use super::server::Body;
use crate::pipeline::ingest::IngestError;
use crate::pipeline::Failure;
use crate::telemetry::names;
use crate::whatsapp::{self, PayloadError, SignatureError};

const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Meta's challenges are short numbers; anything longer is not a handshake.
const MAX_CHALLENGE_LEN: usize = 512;

fn counted(method: &'static str, outcome: &'static str, resp: Response<Body>) -> Response<Body> {
    metrics::counter!(names::WEBHOOK_REQUESTS, "method" => method, "outcome" => outcome)
        .increment(1);
    resp
}

/// `GET /webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C`
pub fn verify(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let params = Params::parse(req.uri().query());
    let (Some(mode), Some(token), Some(challenge)) = (
        params.get("hub.mode"),
        params.get("hub.verify_token"),
        params.get("hub.challenge"),
    ) else {
        return counted(
            "GET",
            "bad_request",
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "expected hub.mode, hub.verify_token and hub.challenge",
            ),
        );
    };
    if mode != "subscribe" || challenge.len() > MAX_CHALLENGE_LEN {
        return counted(
            "GET",
            "bad_request",
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "hub.mode must be subscribe",
            ),
        );
    }
    // Compare against every token (no early exit): timing says nothing.
    let matched = app.webhook().verify_tokens.iter().fold(false, |acc, t| {
        whatsapp::verify_token_matches(&String::from_utf8_lossy(t.expose()), token) | acc
    });
    if matched {
        counted(
            "GET",
            "verified",
            with_type(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                challenge.to_string().into(),
            ),
        )
    } else {
        counted(
            "GET",
            "forbidden",
            error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "hub.verify_token does not match",
            ),
        )
    }
}

/// `POST /webhooks/whatsapp`: authenticate, parse, make durable, apply, 200.
pub async fn receive(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (Some(ingest), true) = (app.ingest(), app.serving()) else {
        let resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not accepting webhooks yet; retry",
        );
        return counted("POST", "not_ready", retry_after(resp, 5));
    };
    // Nothing is journaled while the journal or the store cannot write (a
    // full disk, say): the journal probes by itself and the daemon reopens
    // the store, so this clears without any request getting through.
    if !super::app::storage_writable(&ingest) {
        let resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the journal or the store cannot write (disk full?); retry",
        );
        return counted("POST", "storage_unavailable", retry_after(resp, 5));
    }
    // One set of settings for the whole request, even if a reload swaps them.
    let settings = app.webhook();
    let (parts, body) =
        match read_body(req, settings.max_body_bytes, settings.body_read_timeout).await {
            Ok(read) => read,
            Err(refused) => return counted("POST", refused.outcome, refused.response),
        };
    let signature = parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    if let Err(e) = whatsapp::verify(&settings.keys, signature, &body) {
        let (code, outcome, message) = match e {
            SignatureError::Missing => (
                "missing_signature",
                "missing_signature",
                "X-Hub-Signature-256 is missing",
            ),
            SignatureError::Malformed => (
                "malformed_signature",
                "malformed_signature",
                "X-Hub-Signature-256 must be sha256=<64 hex digits>",
            ),
            SignatureError::Mismatch => (
                "bad_signature",
                "bad_signature",
                "X-Hub-Signature-256 does not match the body",
            ),
        };
        return counted(
            "POST",
            outcome,
            error(StatusCode::UNAUTHORIZED, code, message),
        );
    }
    let pipeline = ingest.pipeline();
    let delivery = match whatsapp::parse_delivery(
        &body,
        pipeline.numbers().as_ref(),
        crate::pipeline::checkpoint::now_ms(),
    ) {
        Ok(d) => d,
        Err(PayloadError::Malformed(m)) => {
            return counted(
                "POST",
                "malformed",
                error(StatusCode::BAD_REQUEST, "malformed_payload", m),
            )
        }
        Err(PayloadError::WrongObject(o)) => {
            let msg = format!("object must be whatsapp_business_account, got {o:?}");
            return counted(
                "POST",
                "wrong_object",
                error(StatusCode::BAD_REQUEST, "wrong_object", msg),
            );
        }
    };
    for ev in &delivery.events {
        metrics::counter!(names::WEBHOOK_EVENTS, "kind" => event_kind_label(ev)).increment(1);
    }
    metrics::histogram!(names::WEBHOOK_BODY_BYTES).record(body.len() as f64);
    match ingest.submit(delivery.events).await {
        Ok(receipt) => {
            let n = receipt.locs.len();
            metrics::histogram!(names::WEBHOOK_INGEST_SECONDS)
                .record(started.elapsed().as_secs_f64());
            counted(
                "POST",
                "accepted",
                json(StatusCode::OK, &serde_json::json!({ "received": n })),
            )
        }
        Err(e) => {
            let (status, code, outcome, retry) = match &e {
                IngestError::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "overloaded",
                    Some(1),
                ),
                IngestError::Closed => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "shutting_down",
                    Some(5),
                ),
                IngestError::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "too_large",
                    None,
                ),
                IngestError::Encode(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal",
                    None,
                ),
                IngestError::Failed(Failure::Journal(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "journal_unavailable",
                    "journal_error",
                    Some(5),
                ),
                IngestError::Failed(Failure::Apply(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "apply_failed",
                    "apply_error",
                    Some(5),
                ),
                IngestError::Timeout(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "timeout",
                    Some(1),
                ),
            };
            if status.is_server_error()
                && !matches!(e, IngestError::Overloaded | IngestError::Closed)
            {
                tracing::warn!(error = %e, "webhook not acknowledged");
            }
            let resp = error(status, code, e);
            counted(
                "POST",
                outcome,
                match retry {
                    Some(s) => retry_after(resp, s),
                    None => resp,
                },
            )
        }
    }
}

fn event_kind_label(ev: &crate::event::Event) -> &'static str {
    use crate::event::Event;
    match ev {
        Event::Message(_) => "message",
        Event::Status(_) => "status",
        Event::Account(_) => "account",
        Event::Preference(_) => "preference",
        Event::Unrouted(_) => "unrouted",
        Event::Invalid(_) => "invalid",
        Event::Outbound(_) | Event::SendOutcome(_) | Event::Alert(_) => "other",
    }
}
