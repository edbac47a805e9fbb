//! Read API handlers: parse parameters, call the read model, render JSON.

use http::{Response, StatusCode};

use super::response::{error, json, retry_after};
use super::server::Body;
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

pub fn numbers(p: &Pipeline) -> Response<Body> {
    json(
        StatusCode::OK,
        &serde_json::json!({ "items": Queries::new(p).numbers() }),
    )
}

pub fn webhook_events(p: &Pipeline, params: &Params) -> Response<Body> {
    render(params.limit().and_then(|limit| {
        Queries::new(p).webhook_events(params.get("kind"), limit, params.get("cursor"))
    }))
}
