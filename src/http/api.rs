//! Read API handlers: parse parameters, call the read model, render JSON.

use http::{Response, StatusCode};

use super::app::Core;
use super::response::{error, json, retry_after};
use super::server::Body;
use crate::event::Priority;
use crate::outbound::dispatcher::Dispatcher;
use crate::outbound::request::SendRequest;
use crate::outbound::{Destination, Refusal};
use crate::pipeline::Pipeline;
use crate::query::{Queries, QueryError};
use crate::store::StoreError;

/// Query-string parameters, decoded.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Params { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn limit(&self) -> Result<Option<usize>, QueryError> {
        crate::query::parse_limit(self.get("limit"))
    }
}

fn render<T: serde::Serialize>(result: Result<T, QueryError>) -> Response<Body> {
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(QueryError::NotFound(what)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        ),
        Err(e @ QueryError::Invalid { .. }) => {
            error(StatusCode::BAD_REQUEST, "invalid_parameter", e)
        }
        // sled cannot read pages it would have to rewrite (consolidate)
        // after a write failed (a full disk), until the daemon reopens it:
        // temporary, so 503 and retry rather than 500.
        Err(e @ QueryError::Store(StoreError::Sled(sled::Error::Io(_)))) => {
            tracing::warn!(error = %e, "read failed: the store cannot be read right now");
            retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store cannot be read right now (see the daemon log); retry",
                ),
                5,
            )
        }
        Err(e @ (QueryError::Store(_) | QueryError::Journal(_) | QueryError::Record(_))) => {
            tracing::error!(error = %e, "read failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                "reading the store failed; see the daemon log",
            )
        }
    }
}

pub fn conversations(p: &Pipeline, params: &Params) -> Response<Body> {
    render(params.limit().and_then(|limit| {
        Queries::new(p).conversations(
            params.get("number"),
            params.get("status"),
            limit,
            params.get("cursor"),
        )
    }))
}

pub fn conversation(p: &Pipeline, id: &str) -> Response<Body> {
    render(Queries::new(p).conversation(id))
}

pub fn conversation_messages(p: &Pipeline, id: &str, params: &Params) -> Response<Body> {
    render(
        params.limit().and_then(|limit| {
            Queries::new(p).conversation_messages(id, limit, params.get("cursor"))
        }),
    )
}

pub fn message(p: &Pipeline, id: &str) -> Response<Body> {
    render(Queries::new(p).message(id))
}

pub fn customer(p: &Pipeline, id: &str) -> Response<Body> {
    render(Queries::new(p).customer(id))
}

pub fn numbers(p: &Pipeline, dispatcher: &Dispatcher) -> Response<Body> {
    let mut items = Queries::new(p).numbers();
    for n in &mut items {
        n.sending = dispatcher.view(&n.phone_number_id);
    }
    json(StatusCode::OK, &serde_json::json!({ "items": items }))
}

pub fn alerts(p: &Pipeline, params: &Params) -> Response<Body> {
    render(
        params
            .limit()
            .and_then(|limit| Queries::new(p).alerts(limit, params.get("cursor"))),
    )
}

pub fn resume(dispatcher: &Dispatcher, number_id: &str) -> Response<Body> {
    match dispatcher.resume(number_id) {
        Ok(was_paused) => json(
            StatusCode::OK,
            &serde_json::json!({ "number_id": number_id, "was_paused": was_paused }),
        ),
        Err(e) => error(StatusCode::NOT_FOUND, "unknown_number", e),
    }
}

/// `POST /api/v1/messages`, or a reply in conversation `conv`.
pub async fn send(core: &Core, conv: Option<&str>, body: &[u8], actor: &str) -> Response<Body> {
    let req: SendRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_payload",
                format!("body: {e}"),
            )
        }
    };
    let result = match conv {
        None => {
            core.outbound
                .send(req, Destination::Explicit, actor, Priority::Automation)
                .await
        }
        Some(id) => {
            let pipeline = core.ingest.pipeline();
            let found = id
                .parse::<u64>()
                .ok()
                .and_then(|id| pipeline.shards().find_map(|s| s.get(id).cloned()));
            let Some(c) = found else {
                return error(StatusCode::NOT_FOUND, "not_found", "conversation not found");
            };
            let dest = Destination::Conversation {
                number_id: &c.number_id,
                customer_id: &c.customer_id,
            };
            core.outbound.send(req, dest, actor, Priority::Agent).await
        }
    };
    match result {
        Ok(queued) => json(StatusCode::ACCEPTED, &queued),
        Err(r) => refusal(&r),
    }
}

fn refusal_status(r: &Refusal) -> StatusCode {
    match r {
        Refusal::UnknownNumber(_) => StatusCode::NOT_FOUND,
        Refusal::Full(_) | Refusal::Ingest(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn refusal(r: &Refusal) -> Response<Body> {
    let status = refusal_status(r);
    let resp = error(status, r.code(), r);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        retry_after(resp, 1)
    } else {
        resp
    }
}

/// Most messages in one `POST /api/v1/messages/batch`.
pub const MAX_BATCH: usize = 1000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    messages: Vec<SendRequest>,
}

/// `POST /api/v1/messages/batch`: up to [`MAX_BATCH`] messages checked one
/// by one and journaled in one durable write. 202 with a result per message
/// in order (`{"id","status"}` or `{"error":{..}}`); 503 when nothing could
/// be queued.
pub async fn send_batch(core: &Core, body: &[u8], actor: &str) -> Response<Body> {
    let batch: BatchRequest = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_payload",
                format!("body: {e}"),
            )
        }
    };
    if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            format!("messages: between 1 and {MAX_BATCH} are accepted"),
        );
    }
    let results = match core
        .outbound
        .send_batch(batch.messages, actor, Priority::Campaign)
        .await
    {
        Ok(results) => results,
        Err(r) => return refusal(&r),
    };
    let items: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(q) => serde_json::json!({"id": q.id, "status": q.status}),
            Err(r) => serde_json::json!({"error": {"code": r.code(), "message": r.to_string()}}),
        })
        .collect();
    json(StatusCode::ACCEPTED, &serde_json::json!({ "items": items }))
}

pub fn webhook_events(p: &Pipeline, params: &Params) -> Response<Body> {
    render(params.limit().and_then(|limit| {
        Queries::new(p).webhook_events(params.get("kind"), limit, params.get("cursor"))
    }))
}
