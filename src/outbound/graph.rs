//! The Graph API client: one pooled hyper client (HTTP/2 where offered,
//! HTTP/1.1 otherwise) over rustls, and the classification of every answer.
//!
//! Invariants: every request is bounded by `request_timeout` (the pooled
//! client has no total timeout of its own) and its answer body by
//! `MAX_ANSWER_BYTES`; plain http is used only for loopback base URLs (the
//! config refuses anything else); an answer is classified by its error
//! `code` first, then its HTTP status.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use crate::telemetry::names;

const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("reading {path}: {message}")]
    Ca { path: String, message: String },
}

/// What an answer means for the message and the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted {
        wamid: String,
    },
    /// Too fast for the number (130429, 131048, 80007, HTTP 429): slow down, retry.
    Throttled {
        code: i64,
        title: String,
    },
    /// Too fast for this recipient (131056): retry later for them only.
    PairLimited {
        code: i64,
        title: String,
    },
    /// Transient (5xx, 1, 2, 4, 131000, 131016, 131057, 133004, timeouts): retry with backoff.
    Retry {
        code: i64,
        title: String,
    },
    /// The access token was refused (190): pause the number.
    TokenRefused {
        code: i64,
        title: String,
    },
    /// Final: the message fails with this code and reason.
    Fail {
        code: i64,
        title: String,
        reason: &'static str,
    },
}

/// Our reason code for a final platform error.
fn final_reason(code: i64) -> &'static str {
    match code {
        131047 | 470 => "window_closed",
        131050 => "opted_out",
        131049 => "marketing_limited",
        131026 => "undeliverable",
        131051 => "unsupported_type",
        132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 => "template_error",
        368 => "policy_blocked",
        100 => "invalid_parameter",
        _ => "platform_error",
    }
}

/// Classify an answer of the send endpoint.
pub fn classify(status: StatusCode, body: &[u8]) -> Verdict {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        if let Some(wamid) = v["messages"][0]["id"].as_str().filter(|w| !w.is_empty()) {
            return Verdict::Accepted {
                wamid: wamid.to_string(),
            };
        }
        return Verdict::Retry {
            code: 0,
            title: "success answer without a message id".into(),
        };
    }
    let code = v["error"]["code"].as_i64();
    let title = v["error"]["message"]
        .as_str()
        .or(v["error"]["error_user_title"].as_str())
        .unwrap_or("")
        .to_string();
    match code {
        Some(c @ (130429 | 131048 | 80007)) => Verdict::Throttled { code: c, title },
        Some(c @ 131056) => Verdict::PairLimited { code: c, title },
        Some(c @ (1 | 2 | 4 | 131000 | 131016 | 131057 | 133004)) => {
            Verdict::Retry { code: c, title }
        }
        Some(c @ 190) => Verdict::TokenRefused { code: c, title },
        Some(c) if status.is_server_error() => Verdict::Retry { code: c, title },
        Some(c) => Verdict::Fail {
            code: c,
            title,
            reason: final_reason(c),
        },
        None if status == StatusCode::TOO_MANY_REQUESTS => Verdict::Throttled {
            code: 429,
            title: "HTTP 429".into(),
        },
        None if status == StatusCode::UNAUTHORIZED => Verdict::TokenRefused {
            code: 190,
            title: "HTTP 401".into(),
        },
        None if status.is_server_error() => Verdict::Retry {
            code: 0,
            title: format!("HTTP {status}"),
        },
        None => Verdict::Fail {
            code: 0,
            title: format!("HTTP {status} without an error object"),
            reason: "platform_error",
        },
    }
}

/// A bounded label for an error code.
pub fn code_label(code: i64) -> &'static str {
    const KNOWN: &[(i64, &str)] = &[
        (0, "0"),
        (1, "1"),
        (2, "2"),
        (4, "4"),
        (100, "100"),
        (190, "190"),
        (368, "368"),
        (429, "429"),
        (470, "470"),
        (80007, "80007"),
        (130429, "130429"),
        (131000, "131000"),
        (131016, "131016"),
        (131026, "131026"),
        (131047, "131047"),
        (131048, "131048"),
        (131049, "131049"),
        (131050, "131050"),
        (131051, "131051"),
        (131056, "131056"),
        (131057, "131057"),
        (132000, "132000"),
        (132001, "132001"),
        (133004, "133004"),
    ];
    KNOWN
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("other", |(_, l)| l)
}

#[derive(Clone)]
pub struct GraphClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: Arc<str>,
    timeout: Duration,
}

impl GraphClient {
    pub fn new(
        base: &str,
        connect_timeout: Duration,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<GraphClient, GraphError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certs = crate::http::tls::load_ca(path).map_err(|e| GraphError::Ca {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            for c in certs {
                roots.add(c).map_err(|e| GraphError::Ca {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::http::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| GraphError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .timer(TokioTimer::new())
            .build(connector);
        Ok(GraphClient {
            client,
            base: base.trim_end_matches('/').into(),
            timeout,
        })
    }

    /// POST a message body for `number_id` with `token`; never errors: a
    /// transport failure or timeout is a `Retry` verdict.
    pub async fn send(&self, number_id: &str, token: &[u8], body: Bytes) -> Verdict {
        let started = Instant::now();
        let uri = format!("{}/{}/messages", self.base, number_id);
        let mut auth = Vec::with_capacity(7 + token.len());
        auth.extend_from_slice(b"Bearer ");
        auth.extend_from_slice(token);
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth.as_slice())
            .body(Full::new(body));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Fail {
                    code: 0,
                    title: format!("building the request: {e}"),
                    reason: "invalid_request",
                }
            }
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        };
        let verdict = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((status, body))) => classify(status, &body),
            Ok(Err(e)) => Verdict::Retry {
                code: 0,
                title: format!("transport: {e}"),
            },
            Err(_) => Verdict::Retry {
                code: 0,
                title: format!("no answer within {:?}", self.timeout),
            },
        };
        metrics::histogram!(names::GRAPH_REQUEST_SECONDS).record(started.elapsed().as_secs_f64());
        let code = match &verdict {
            Verdict::Accepted { .. } => None,
            Verdict::Retry { code: 0, title }
                if title.starts_with("transport") || title.starts_with("no answer") =>
            {
                Some("transport")
            }
            Verdict::Throttled { code, .. }
            | Verdict::PairLimited { code, .. }
            | Verdict::Retry { code, .. }
            | Verdict::TokenRefused { code, .. }
            | Verdict::Fail { code, .. } => Some(code_label(*code)),
        };
        if let Some(code) = code {
            metrics::counter!(names::GRAPH_ERRORS, "code" => code).increment(1);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64) -> Vec<u8> {
        format!(r#"{{"error":{{"message":"m{code}","type":"OAuthException","code":{code},"fbtrace_id":"x"}}}}"#).into_bytes()
    }

    #[test]
    fn answers_are_classified_by_code_then_status() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.A"}]}"#;
        assert_eq!(
            classify(StatusCode::OK, ok),
            Verdict::Accepted {
                wamid: "wamid.A".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::OK, b"{}"),
            Verdict::Retry { .. }
        ));
        for c in [130429, 131048, 80007] {
            assert!(
                matches!(
                    classify(StatusCode::BAD_REQUEST, &err(c)),
                    Verdict::Throttled { .. }
                ),
                "{c}"
            );
        }
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, b""),
            Verdict::Throttled { code: 429, .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &err(131056)),
            Verdict::PairLimited { .. }
        ));
        for c in [1, 2, 4, 131000, 131016, 131057, 133004] {
            assert!(
                matches!(
                    classify(StatusCode::BAD_REQUEST, &err(c)),
                    Verdict::Retry { .. }
                ),
                "{c}"
            );
        }
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, b"oops"),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &err(190)),
            Verdict::TokenRefused { .. }
        ));
        let finals = [
            (131047, "window_closed"),
            (131050, "opted_out"),
            (131049, "marketing_limited"),
            (131026, "undeliverable"),
            (131051, "unsupported_type"),
            (132000, "template_error"),
            (132001, "template_error"),
            (368, "policy_blocked"),
            (470, "window_closed"),
        ];
        for (c, reason) in finals {
            assert_eq!(
                classify(StatusCode::BAD_REQUEST, &err(c)),
                Verdict::Fail {
                    code: c,
                    title: format!("m{c}"),
                    reason
                },
                "{c}"
            );
        }
        assert_eq!(code_label(131047), "131047");
        assert_eq!(code_label(987654), "other");
    }
}
