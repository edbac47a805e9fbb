//! Response helpers: JSON bodies and the one error shape every endpoint uses,
//! `{"error":{"code","message"}}`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::server::{full, Body};

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", Bytes::from(bytes)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("rendering the response failed: {e}"),
        ),
    }
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response<Body> {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_string(),
        },
    };
    let bytes = serde_json::to_vec(&body)
        .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":""}}"#.to_vec());
    with_type(status, "application/json", Bytes::from(bytes))
}

/// Tell the client (Meta retries on its own schedule) when to come back.
pub fn retry_after(mut resp: Response<Body>, seconds: u32) -> Response<Body> {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    resp
}

/// Why a request body could not be read, with its response.
pub struct BodyRefused {
    /// Bounded metric label.
    pub outcome: &'static str,
    pub response: Response<Body>,
}

/// Read a request body of at most `max` bytes within `timeout`: refused on
/// its Content-Length before reading, cut while reading, timed out.
pub async fn read_body(
    req: http::Request<hyper::body::Incoming>,
    max: usize,
    timeout: std::time::Duration,
) -> Result<(http::request::Parts, Bytes), BodyRefused> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let too_large = || BodyRefused {
        outcome: "too_large",
        response: error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body over {max} bytes"),
        ),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyRefused {
            outcome: "body_timeout",
            response: error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            ),
        }),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(BodyRefused {
            outcome: "bad_body",
            response: error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the body: {e}"),
            ),
        }),
        Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
    }
}
