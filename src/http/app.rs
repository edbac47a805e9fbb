//! The application behind the TLS listener: routing, authentication, and the
//! handlers of the webhook endpoint and the read API.
//!
//! Invariants: every error leaves as `{"error":{"code","message"}}` with a
//! fitting status and is counted; nothing a client sends can panic a handler;
//! the read API requires the admin bearer token; webhooks and the API answer
//! 503 `not_ready` until start-up replay finished (and while the store is
//! being reopened after a write failure); webhooks answer 503
//! `storage_unavailable` while the journal or the store cannot write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::response::{error, json, read_body};
use super::routing_api::{Caller, RRoute};
use super::server::{Body, ConnInfo};
use super::{api, webhook};
use crate::auth::AdminAuth;
use crate::config::Secret;
use crate::outbound::Outbound;
use crate::pipeline::ingest::Ingest;
use crate::telemetry::names;
use crate::whatsapp::AppKeys;

/// What the webhook endpoint needs to authenticate deliveries. Replaced whole
/// on a config reload; a request uses the settings it started with.
pub struct WebhookSettings {
    pub keys: AppKeys,
    pub verify_tokens: Vec<Secret>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

/// What the handlers need once start-up has finished.
#[derive(Clone)]
pub struct Core {
    pub ingest: Ingest,
    pub outbound: Arc<Outbound>,
    pub routing: crate::routing::service::Routing,
}

pub struct App {
    /// The running core; `None` before start-up finished and while the
    /// store is being reopened.
    core: RwLock<Option<Core>>,
    /// Start-up finished and no stop requested.
    ready: AtomicBool,
    pub(crate) auth: AdminAuth,
    webhook: ArcSwap<WebhookSettings>,
}

/// Every route, as the OpenAPI document names it (kept equal by a test).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/webhooks/whatsapp"),
    ("POST", "/webhooks/whatsapp"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/conversations/{id}"),
    ("GET", "/api/v1/conversations/{id}/messages"),
    ("POST", "/api/v1/conversations/{id}/messages"),
    ("POST", "/api/v1/messages"),
    ("POST", "/api/v1/messages/batch"),
    ("GET", "/api/v1/messages/{id}"),
    ("GET", "/api/v1/customers/{id}"),
    ("GET", "/api/v1/numbers"),
    ("POST", "/api/v1/numbers/{id}/resume"),
    ("GET", "/api/v1/webhook-events"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents"),
    ("GET", "/api/v1/agents/{id}"),
    ("PUT", "/api/v1/agents/{id}"),
    ("DELETE", "/api/v1/agents/{id}"),
    ("PUT", "/api/v1/agents/{id}/status"),
    ("POST", "/api/v1/agents/{id}/token"),
    ("GET", "/api/v1/agents/{id}/conversations"),
    ("GET", "/api/v1/teams"),
    ("POST", "/api/v1/teams"),
    ("GET", "/api/v1/teams/{id}"),
    ("PUT", "/api/v1/teams/{id}"),
    ("DELETE", "/api/v1/teams/{id}"),
    ("GET", "/api/v1/conversations/{id}/routing"),
    ("POST", "/api/v1/conversations/{id}/assign"),
    ("POST", "/api/v1/conversations/{id}/claim"),
    ("POST", "/api/v1/conversations/{id}/transfer"),
    ("POST", "/api/v1/conversations/{id}/resolve"),
    ("POST", "/api/v1/conversations/{id}/reopen"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/live"),
    ("GET", "/api/v1/events"),
];

enum Route {
    Healthz,
    Readyz,
    WebhookVerify,
    WebhookPost,
    OpenApi,
    Conversations,
    Conversation(String),
    ConversationMessages(String),
    ConversationSend(String),
    Send,
    SendBatch,
    Message(String),
    Customer(String),
    Numbers,
    NumberResume(String),
    WebhookEvents,
    Alerts,
    Routing(RRoute),
    NotFound,
    MethodNotAllowed(&'static str),
}

impl Route {
    /// Bounded label for metrics.
    fn label(&self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::WebhookVerify | Route::WebhookPost => "webhook",
            Route::OpenApi => "openapi",
            Route::Conversations => "conversations",
            Route::Conversation(_) => "conversation",
            Route::ConversationMessages(_) => "conversation_messages",
            Route::ConversationSend(_) => "conversation_send",
            Route::Send => "send",
            Route::SendBatch => "send_batch",
            Route::Message(_) => "message",
            Route::Customer(_) => "customer",
            Route::Numbers => "numbers",
            Route::NumberResume(_) => "number_resume",
            Route::WebhookEvents => "webhook_events",
            Route::Alerts => "alerts",
            Route::Routing(r) => r.label(),
            Route::NotFound => "not_found",
            Route::MethodNotAllowed(_) => "method_not_allowed",
        }
    }
}

fn decode_segment(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn route(method: &Method, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let is_get = method == Method::GET || method == Method::HEAD;
    let get = |r: Route| {
        if is_get {
            r
        } else {
            Route::MethodNotAllowed("GET, HEAD")
        }
    };
    let post = |r: Route| {
        if method == Method::POST {
            r
        } else {
            Route::MethodNotAllowed("POST")
        }
    };
    let decoded = |s: &str| decode_segment(s).filter(|v| !v.is_empty());
    let get_id =
        |s: &str, f: fn(String) -> Route| decoded(s).map_or(Route::NotFound, |id| get(f(id)));
    if let Some(r) = super::routing_api::match_route(&segments, decoded) {
        return Route::Routing(r);
    }
    match segments.as_slice() {
        ["healthz"] => get(Route::Healthz),
        ["readyz"] => get(Route::Readyz),
        ["webhooks", "whatsapp"] => match *method {
            Method::GET => Route::WebhookVerify,
            Method::POST => Route::WebhookPost,
            _ => Route::MethodNotAllowed("GET, POST"),
        },
        ["api", "v1", "openapi.json"] => get(Route::OpenApi),
        ["api", "v1", "conversations"] => get(Route::Conversations),
        ["api", "v1", "conversations", c] => get_id(c, Route::Conversation),
        ["api", "v1", "conversations", c, "messages"] => match decoded(c) {
            None => Route::NotFound,
            Some(id) if is_get => Route::ConversationMessages(id),
            Some(id) if method == Method::POST => Route::ConversationSend(id),
            Some(_) => Route::MethodNotAllowed("GET, HEAD, POST"),
        },
        ["api", "v1", "messages"] => post(Route::Send),
        // Message ids are wamids or `o<n>`, never "batch".
        ["api", "v1", "messages", "batch"] => post(Route::SendBatch),
        ["api", "v1", "messages", m] => get_id(m, Route::Message),
        ["api", "v1", "customers", c] => get_id(c, Route::Customer),
        ["api", "v1", "numbers"] => get(Route::Numbers),
        ["api", "v1", "numbers", n, "resume"] => match decoded(n) {
            Some(id) if method == Method::POST => Route::NumberResume(id),
            Some(_) => Route::MethodNotAllowed("POST"),
            None => Route::NotFound,
        },
        ["api", "v1", "webhook-events"] => get(Route::WebhookEvents),
        ["api", "v1", "alerts"] => get(Route::Alerts),
        _ => Route::NotFound,
    }
}

impl App {
    pub fn new(auth: AdminAuth, webhook: WebhookSettings) -> App {
        App {
            core: RwLock::new(None),
            ready: AtomicBool::new(false),
            auth,
            webhook: ArcSwap::from_pointee(webhook),
        }
    }

    /// The webhook settings in force (keep them for the whole request).
    pub fn webhook(&self) -> Arc<WebhookSettings> {
        self.webhook.load_full()
    }

    /// A config reload: later requests authenticate with `settings`.
    pub fn set_webhook(&self, settings: WebhookSettings) {
        self.webhook.store(Arc::new(settings));
    }

    /// The outbound service of the running core, if any.
    pub fn outbound(&self) -> Option<Arc<Outbound>> {
        self.core.read().as_ref().map(|c| c.outbound.clone())
    }

    /// Start-up (or a reopen of the store) finished: webhooks and the API
    /// are served by `core` from now on.
    pub fn set_ready(&self, core: Core) {
        *self.core.write() = Some(core);
        self.ready.store(true, Ordering::Release);
        metrics::gauge!(names::READY).set(1.0);
    }

    /// Shutting down: readiness goes false (requests in flight finish).
    pub fn set_unready(&self) {
        self.ready.store(false, Ordering::Release);
        metrics::gauge!(names::READY).set(0.0);
    }

    /// The core is about to be stopped and opened again: webhooks and the
    /// API answer 503 `not_ready` until the next [`App::set_ready`].
    pub fn withdraw_core(&self) {
        self.core.write().take();
        metrics::gauge!(names::READY).set(0.0);
    }

    /// Start-up finished, no stop requested, and a core installed (says
    /// nothing about whether storage can write).
    pub(crate) fn serving(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.core.read().is_some()
    }

    /// Ready, and both the journal and the store can write.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .core
                .read()
                .as_ref()
                .is_some_and(|c| storage_writable(&c.ingest))
    }

    pub(crate) fn ingest(&self) -> Option<Ingest> {
        self.core.read().as_ref().map(|c| c.ingest.clone())
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _conn: ConnInfo,
    ) -> Response<Body> {
        let route = route(req.method(), req.uri().path());
        let label = route.label();
        let is_head = req.method() == Method::HEAD;
        let mut resp = match route {
            Route::Healthz => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Route::Readyz => {
                if self.is_ready() {
                    json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
                } else {
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        "starting, shutting down, or the journal or the store cannot write",
                    )
                }
            }
            Route::WebhookVerify => webhook::verify(&self, &req),
            Route::WebhookPost => return webhook::receive(&self, req).await,
            Route::OpenApi => super::openapi::response(),
            Route::NotFound => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {}", req.uri().path()),
            ),
            Route::MethodNotAllowed(allow) => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("use {allow}"),
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            api_route => self.api(api_route, req).await,
        };
        metrics::counter!(names::API_REQUESTS, "route" => label, "status" => status_class(resp.status())).increment(1);
        if is_head {
            *resp.body_mut() = super::server::empty();
        }
        resp
    }

    async fn api(self: &Arc<Self>, route: Route, req: Request<Incoming>) -> Response<Body> {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let core = self.core.read().clone();
        let caller = if self.auth.authenticate(authorization.as_deref()).is_some() {
            Some(Caller::Admin)
        } else {
            core.as_ref()
                .and_then(|c| {
                    super::routing_api::agent_for_token(&c.routing, authorization.as_deref())
                })
                .map(Caller::Agent)
        };
        let Some(caller) = caller else {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <admin or agent token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        };
        let Some(core) = core else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "start-up replay has not finished, or the store is being reopened",
            );
        };
        if let Route::Routing(r) = route {
            let method = req.method().clone();
            let query = req.uri().query().map(str::to_owned);
            let body = if method == Method::POST || method == Method::PUT {
                match read_body(req, API_MAX_BODY, self.webhook().body_read_timeout).await {
                    Ok((_, body)) => body,
                    Err(refused) => return refused.response,
                }
            } else {
                bytes::Bytes::new()
            };
            return super::routing_api::handle(
                self,
                &core.routing,
                caller,
                &method,
                r,
                query.as_deref(),
                body,
            )
            .await;
        }
        if let Caller::Agent(agent) = &caller {
            // Agents reply in conversations they hold; everything else here
            // is the admin's.
            let Route::ConversationSend(id) = &route else {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "agents may use the routing endpoints and reply in their conversations",
                );
            };
            let conv = id.parse::<u64>().ok();
            let holds = conv.is_some_and(|c| {
                core.routing
                    .read()
                    .engine()
                    .conversation(c)
                    .and_then(|v| v.assignee)
                    .is_some_and(|a| a == *agent)
            });
            if !holds {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "agents reply only in conversations assigned to them",
                );
            }
            let (_, body) =
                match read_body(req, API_MAX_BODY, self.webhook().body_read_timeout).await {
                    Ok(read) => read,
                    Err(refused) => return refused.response,
                };
            let resp = api::send(&core, Some(id.as_str()), &body, agent).await;
            if resp.status() == StatusCode::ACCEPTED {
                if let Some(conv) = conv {
                    // First response time: the agent's reply is a routing
                    // input too (journaled; automated sends never are).
                    let cmd = crate::routing::Command::AgentReplied {
                        conv,
                        agent: agent.clone(),
                        now_ms: crate::routing::service::now_ms(),
                    };
                    if let Err(e) = core.routing.submit(cmd).await {
                        tracing::warn!(error = %e, "routing: agent reply not recorded");
                    }
                }
            }
            return resp;
        }
        let params = api::Params::parse(req.uri().query());
        let pipeline = core.ingest.pipeline();
        match route {
            Route::Conversations => api::conversations(pipeline, &params),
            Route::Conversation(id) => api::conversation(pipeline, &id),
            Route::ConversationMessages(id) => api::conversation_messages(pipeline, &id, &params),
            Route::Message(id) => api::message(pipeline, &id),
            Route::Customer(id) => api::customer(pipeline, &id),
            Route::Numbers => api::numbers(pipeline, core.outbound.dispatcher()),
            Route::WebhookEvents => api::webhook_events(pipeline, &params),
            Route::Alerts => api::alerts(pipeline, &params),
            Route::NumberResume(id) => api::resume(core.outbound.dispatcher(), &id),
            Route::Send | Route::ConversationSend(_) => {
                let (_, body) =
                    match read_body(req, API_MAX_BODY, self.webhook().body_read_timeout).await {
                        Ok(read) => read,
                        Err(refused) => return refused.response,
                    };
                let conv = match &route {
                    Route::ConversationSend(id) => Some(id.as_str()),
                    _ => None,
                };
                api::send(&core, conv, &body, "admin").await
            }
            Route::SendBatch => {
                let (_, body) =
                    match read_body(req, BATCH_MAX_BODY, self.webhook().body_read_timeout).await {
                        Ok(read) => read,
                        Err(refused) => return refused.response,
                    };
                api::send_batch(&core, &body, "admin").await
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
        }
    }
}

/// API request bodies are small JSON objects.
const API_MAX_BODY: usize = 256 * 1024;
/// A batch holds up to [`api::MAX_BATCH`] messages.
const BATCH_MAX_BODY: usize = 4 * 1024 * 1024;

/// The journal and the store both take writes.
pub(crate) fn storage_writable(ingest: &Ingest) -> bool {
    ingest.journal().healthy() && ingest.pipeline().store().healthy()
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_routes_take_post_only() {
        assert!(matches!(
            route(&Method::POST, "/api/v1/messages"),
            Route::Send
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/messages"),
            Route::MethodNotAllowed("POST")
        ));
        assert!(
            matches!(route(&Method::POST, "/api/v1/conversations/7/messages"), Route::ConversationSend(id) if id == "7")
        );
        assert!(matches!(
            route(&Method::DELETE, "/api/v1/conversations/7/messages"),
            Route::MethodNotAllowed(_)
        ));
        assert!(
            matches!(route(&Method::POST, "/api/v1/numbers/123/resume"), Route::NumberResume(id) if id == "123")
        );
        assert!(matches!(
            route(&Method::POST, "/api/v1/messages/o12"),
            Route::MethodNotAllowed("GET, HEAD")
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/alerts"),
            Route::Alerts
        ));
    }

    #[test]
    fn routes_match_and_decode_ids() {
        assert!(
            matches!(route(&Method::GET, "/api/v1/messages/wamid.ab%2Fcd%3D"), Route::Message(id) if id == "wamid.ab/cd=")
        );
        assert!(
            matches!(route(&Method::GET, "/api/v1/conversations/12/messages"), Route::ConversationMessages(id) if id == "12")
        );
        assert!(matches!(
            route(&Method::POST, "/webhooks/whatsapp"),
            Route::WebhookPost
        ));
        assert!(matches!(
            route(&Method::DELETE, "/webhooks/whatsapp"),
            Route::MethodNotAllowed(_)
        ));
        assert!(matches!(
            route(&Method::POST, "/api/v1/numbers"),
            Route::MethodNotAllowed(_)
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/nope"),
            Route::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/customers/%FF"),
            Route::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, "/api/v1/numbers/"),
            Route::Numbers
        ));
    }
}
