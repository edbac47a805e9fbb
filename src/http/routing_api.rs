//! Routing endpoints: agents, teams (with their routing policies), presence,
//! conversation assignment (assign, claim, transfer, resolve, reopen),
//! queues, the live view, and the Server-Sent Events stream.
//!
//! Invariants:
//! - Every write is one or more journaled routing commands
//!   ([`Routing::submit_all`]); a 2xx means they are durable and applied, and
//!   the answer carries the engine's effects.
//! - Agents (their own bearer token) are scoped to their own work: their
//!   status, their conversations, claiming from queues they are eligible
//!   for, resolving or transferring what they hold, and their events.
//!   Everything else is the admin's.
//! - The event stream holds at most `routing.stream_buffer` events per
//!   subscriber; a subscriber that falls behind is disconnected, never
//!   buffered without bound.

// Handlers return early with a ready response as the error; it is built at
// most once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;

use super::app::App;
use super::response::{error, json, retry_after};
use super::server::Body;
use crate::routing::service::{error_class, now_ms, Routing, StreamEvent, SubmitError};
use crate::routing::{
    Actor, AgentSpec, AgentStatus, Command, CommandResult, ConvSpec, Effect, Policy, Target,
    TeamSpec,
};
use crate::telemetry::names;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Agent(String),
}

impl Caller {
    fn actor(&self) -> Actor {
        match self {
            Caller::Admin => Actor::Admin,
            Caller::Agent(a) => Actor::Agent(a.clone()),
        }
    }

    fn is(&self, agent: &str) -> bool {
        matches!(self, Caller::Agent(a) if a == agent)
    }
}

/// A conversation action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Assign,
    Claim,
    Transfer,
    Resolve,
    Reopen,
}

/// The routing routes (the path's variable part decoded).
#[derive(Debug)]
pub enum RRoute {
    Agents,
    Agent(String),
    AgentStatus(String),
    AgentToken(String),
    AgentConversations(String),
    Teams,
    Team(String),
    Conversation(String, Action),
    ConversationRouting(String),
    Queues,
    Live,
    Events,
}

impl RRoute {
    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RRoute::Agents => "agents",
            RRoute::Agent(_) => "agent",
            RRoute::AgentStatus(_) => "agent_status",
            RRoute::AgentToken(_) => "agent_token",
            RRoute::AgentConversations(_) => "agent_conversations",
            RRoute::Teams => "teams",
            RRoute::Team(_) => "team",
            RRoute::Conversation(_, Action::Assign) => "conversation_assign",
            RRoute::Conversation(_, Action::Claim) => "conversation_claim",
            RRoute::Conversation(_, Action::Transfer) => "conversation_transfer",
            RRoute::Conversation(_, Action::Resolve) => "conversation_resolve",
            RRoute::Conversation(_, Action::Reopen) => "conversation_reopen",
            RRoute::ConversationRouting(_) => "conversation_routing",
            RRoute::Queues => "queues",
            RRoute::Live => "live",
            RRoute::Events => "events",
        }
    }

    /// Methods the route takes (for 405 answers).
    pub fn allow(&self) -> &'static str {
        match self {
            RRoute::Agents | RRoute::Teams => "GET, HEAD, POST",
            RRoute::Agent(_) | RRoute::Team(_) => "GET, HEAD, PUT, DELETE",
            RRoute::AgentStatus(_) => "PUT",
            RRoute::AgentToken(_) | RRoute::Conversation(..) => "POST",
            RRoute::AgentConversations(_)
            | RRoute::ConversationRouting(_)
            | RRoute::Queues
            | RRoute::Live
            | RRoute::Events => "GET, HEAD",
        }
    }

    fn accepts(&self, method: &Method) -> bool {
        let get = method == Method::GET || method == Method::HEAD;
        match self {
            RRoute::Agents | RRoute::Teams => get || method == Method::POST,
            RRoute::Agent(_) | RRoute::Team(_) => {
                get || method == Method::PUT || method == Method::DELETE
            }
            RRoute::AgentStatus(_) => method == Method::PUT,
            RRoute::AgentToken(_) | RRoute::Conversation(..) => method == Method::POST,
            _ => get,
        }
    }
}

/// Match a routing path (segments after the leading '/'), or None.
pub fn match_route(segments: &[&str], decoded: impl Fn(&str) -> Option<String>) -> Option<RRoute> {
    let r = match segments {
        ["api", "v1", "agents"] => RRoute::Agents,
        ["api", "v1", "agents", a] => RRoute::Agent(decoded(a)?),
        ["api", "v1", "agents", a, "status"] => RRoute::AgentStatus(decoded(a)?),
        ["api", "v1", "agents", a, "token"] => RRoute::AgentToken(decoded(a)?),
        ["api", "v1", "agents", a, "conversations"] => RRoute::AgentConversations(decoded(a)?),
        ["api", "v1", "teams"] => RRoute::Teams,
        ["api", "v1", "teams", t] => RRoute::Team(decoded(t)?),
        ["api", "v1", "conversations", c, "routing"] => RRoute::ConversationRouting(decoded(c)?),
        ["api", "v1", "conversations", c, action] => {
            let action = match *action {
                "assign" => Action::Assign,
                "claim" => Action::Claim,
                "transfer" => Action::Transfer,
                "resolve" => Action::Resolve,
                "reopen" => Action::Reopen,
                _ => return None,
            };
            RRoute::Conversation(decoded(c)?, action)
        }
        ["api", "v1", "queues"] => RRoute::Queues,
        ["api", "v1", "live"] => RRoute::Live,
        ["api", "v1", "events"] => RRoute::Events,
        _ => return None,
    };
    Some(r)
}

fn method_not_allowed(route: &RRoute) -> Response<Body> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {}", route.allow()),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(route.allow()));
    r
}

fn forbidden(what: &str) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("agents may not {what}"),
    )
}

fn bad_body(e: impl std::fmt::Display) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!("body: {e}"),
    )
}

/// The id a PUT (path) or POST (body) writes, and whether it creates: a
/// body id on a PUT must match the path; a POST must name one.
fn id_to_write(
    path: Option<&String>,
    body: Option<&String>,
) -> Result<(String, bool), Response<Body>> {
    match (path, body) {
        (Some(p), Some(b)) if p != b => Err(bad_body("\"id\" differs from the path")),
        (Some(p), _) => Ok((p.clone(), false)),
        (None, Some(b)) => Ok((b.clone(), true)),
        (None, None) => Err(bad_body("\"id\" is required")),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response<Body>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(bad_body)
}

fn refused(e: &crate::routing::RoutingError) -> Response<Body> {
    let (status, code) = error_class(e);
    error(
        StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
        code,
        e,
    )
}

fn submit_failed(e: &SubmitError) -> Response<Body> {
    retry_after(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e), 1)
}

/// Several results: the first refusal decides, else all effects.
fn outcome(results: &[CommandResult]) -> Result<Vec<Effect>, Response<Body>> {
    let mut fx = Vec::new();
    for r in results {
        match r {
            Ok(f) => fx.extend(f.iter().cloned()),
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(fx)
}

async fn run(routing: &Routing, cmds: Vec<Command>) -> Result<Vec<Effect>, Response<Body>> {
    match routing.submit_all(cmds).await {
        Ok(results) => outcome(&results),
        Err(e) => Err(submit_failed(&e)),
    }
}

/// The agent behind a bearer token, if any.
pub fn agent_for_token(routing: &Routing, authorization: Option<&[u8]>) -> Option<String> {
    let digest = crate::auth::bearer_sha256_hex(authorization?)?;
    routing
        .read()
        .engine()
        .agent_by_token(&digest)
        .map(str::to_string)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default)]
    max_concurrent: Option<u32>,
    #[serde(default)]
    status: Option<AgentStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    policy: Option<Policy>,
    /// Numbers (phone_number_id) whose new conversations this team takes.
    #[serde(default)]
    numbers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: AgentStatus,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    team: Option<String>,
}

impl TargetBody {
    fn target(self) -> Result<Target, Response<Body>> {
        match (self.agent, self.team) {
            (Some(a), None) => Ok(Target::Agent(a)),
            (None, Some(t)) => Ok(Target::Team(t)),
            _ => Err(bad_body("give exactly one of \"agent\" and \"team\"")),
        }
    }
}

fn agent_json(routing: &Routing, id: &str) -> serde_json::Value {
    json!(routing.read().engine().agent(id))
}

fn team_json(routing: &Routing, id: &str) -> Option<serde_json::Value> {
    let r = routing.read();
    let e = r.engine();
    let team = e.teams().into_iter().find(|t| t.id == id)?;
    Some(json!({"team": team, "numbers": e.team_numbers(id)}))
}

/// Serve a routing route. `body` is the request body (empty for reads).
pub async fn handle(
    app: &Arc<App>,
    routing: &Routing,
    caller: Caller,
    method: &Method,
    route: RRoute,
    query: Option<&str>,
    body: Bytes,
) -> Response<Body> {
    if !route.accepts(method) {
        return method_not_allowed(&route);
    }
    let admin = caller == Caller::Admin;
    let now = now_ms();
    let is_get = *method == Method::GET || *method == Method::HEAD;
    match route {
        RRoute::Agents if is_get => {
            if !admin {
                return forbidden("list agents");
            }
            json(
                StatusCode::OK,
                &json!({"items": routing.read().engine().agents()}),
            )
        }
        RRoute::Agents | RRoute::Agent(_) if !is_get && *method != Method::DELETE => {
            if !admin {
                return forbidden("change agents");
            }
            let b: AgentBody = match parse(&body) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let path_id = match &route {
                RRoute::Agent(id) => Some(id),
                _ => None,
            };
            let (id, creating) = match id_to_write(path_id, b.id.as_ref()) {
                Ok(v) => v,
                Err(r) => return r,
            };
            if creating && routing.read().engine().agent(&id).is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "already_exists",
                    format!("agent {id:?} exists; PUT /api/v1/agents/{{id}} changes it"),
                );
            }
            let spec = AgentSpec {
                id: id.clone(),
                name: b.name,
                teams: b.teams,
                skills: b.skills,
                max_concurrent: b
                    .max_concurrent
                    .unwrap_or(routing.settings().default_max_concurrent),
            };
            let mut cmds = vec![Command::UpsertAgent { spec, now_ms: now }];
            if let Some(status) = b.status {
                cmds.push(Command::SetAgentStatus {
                    agent: id.clone(),
                    status,
                    now_ms: now,
                });
            }
            match run(routing, cmds).await {
                Ok(fx) => json(
                    if creating {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    &json!({"agent": agent_json(routing, &id), "effects": fx}),
                ),
                Err(r) => r,
            }
        }
        RRoute::Agent(id) if is_get => {
            if !(admin || caller.is(&id)) {
                return forbidden("read other agents");
            }
            match routing.read().engine().agent(&id) {
                Some(a) => json(StatusCode::OK, &a),
                None => error(StatusCode::NOT_FOUND, "unknown_agent", "no such agent"),
            }
        }
        RRoute::Agent(id) => {
            if !admin {
                return forbidden("remove agents");
            }
            match run(
                routing,
                vec![Command::RemoveAgent {
                    agent: id.clone(),
                    now_ms: now,
                }],
            )
            .await
            {
                Ok(fx) => json(StatusCode::OK, &json!({"removed": id, "effects": fx})),
                Err(r) => r,
            }
        }
        RRoute::AgentStatus(id) => {
            if !(admin || caller.is(&id)) {
                return forbidden("set another agent's status");
            }
            let b: StatusBody = match parse(&body) {
                Ok(b) => b,
                Err(r) => return r,
            };
            match run(
                routing,
                vec![Command::SetAgentStatus {
                    agent: id.clone(),
                    status: b.status,
                    now_ms: now,
                }],
            )
            .await
            {
                Ok(fx) => json(
                    StatusCode::OK,
                    &json!({"agent": agent_json(routing, &id), "effects": fx}),
                ),
                Err(r) => r,
            }
        }
        RRoute::AgentToken(id) => {
            if !admin {
                return forbidden("issue tokens");
            }
            let token = match crate::auth::generate_token() {
                Ok(t) => t,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
            };
            let digest = crate::auth::sha256_hex(token.as_bytes());
            match run(
                routing,
                vec![Command::SetAgentToken {
                    agent: id.clone(),
                    token_sha256: Some(digest),
                    now_ms: now,
                }],
            )
            .await
            {
                // The token is shown once; only its SHA-256 is journaled.
                Ok(_) => json(StatusCode::CREATED, &json!({"agent": id, "token": token})),
                Err(r) => r,
            }
        }
        RRoute::AgentConversations(id) => {
            if !(admin || caller.is(&id)) {
                return forbidden("read another agent's conversations");
            }
            match routing.read().engine().agent_conversations(&id) {
                Ok(items) => json(StatusCode::OK, &json!({"items": items})),
                Err(e) => refused(&e),
            }
        }
        RRoute::Teams if is_get => json(
            StatusCode::OK,
            &json!({"items": routing.read().engine().teams()}),
        ),
        RRoute::Team(id) if is_get => match team_json(routing, &id) {
            Some(v) => json(StatusCode::OK, &v),
            None => error(StatusCode::NOT_FOUND, "unknown_team", "no such team"),
        },
        RRoute::Teams | RRoute::Team(_) if *method != Method::DELETE => {
            if !admin {
                return forbidden("change teams");
            }
            let b: TeamBody = match parse(&body) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let path_id = match &route {
                RRoute::Team(id) => Some(id),
                _ => None,
            };
            let (id, creating) = match id_to_write(path_id, b.id.as_ref()) {
                Ok(v) => v,
                Err(r) => return r,
            };
            if creating && team_json(routing, &id).is_some() {
                return error(
                    StatusCode::CONFLICT,
                    "already_exists",
                    format!("team {id:?} exists; PUT /api/v1/teams/{{id}} changes it"),
                );
            }
            let mut policy = b.policy.unwrap_or_default();
            if policy.first_reply_timeout_ms.is_none() {
                policy.first_reply_timeout_ms = routing.settings().first_reply_timeout_ms;
            }
            let mut cmds = vec![Command::UpsertTeam {
                spec: TeamSpec {
                    id: id.clone(),
                    name: b.name,
                    members: b.members,
                    policy,
                },
                now_ms: now,
            }];
            cmds.extend(b.numbers.into_iter().map(|n| Command::SetNumberTeam {
                number_id: n,
                team: Some(id.clone()),
                now_ms: now,
            }));
            match run(routing, cmds).await {
                Ok(fx) => {
                    let mut v = team_json(routing, &id).unwrap_or_default();
                    v["effects"] = json!(fx);
                    json(
                        if creating {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        &v,
                    )
                }
                Err(r) => r,
            }
        }
        RRoute::Team(id) => {
            if !admin {
                return forbidden("remove teams");
            }
            let numbers = routing.read().engine().team_numbers(&id);
            let mut cmds: Vec<Command> = numbers
                .into_iter()
                .map(|n| Command::SetNumberTeam {
                    number_id: n,
                    team: None,
                    now_ms: now,
                })
                .collect();
            cmds.push(Command::RemoveTeam {
                team: id.clone(),
                now_ms: now,
            });
            match run(routing, cmds).await {
                Ok(_) => json(StatusCode::OK, &json!({"removed": id})),
                Err(r) => r,
            }
        }
        RRoute::Teams => method_not_allowed(&RRoute::Teams),
        RRoute::Agents => method_not_allowed(&RRoute::Agents),
        RRoute::ConversationRouting(id) => {
            let Ok(conv) = id.parse::<u64>() else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such conversation");
            };
            let r = routing.read();
            let view = r.engine().conversation(conv);
            let history = r.history(conv);
            if view.is_none() && history.is_none() {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_conversation",
                    "routing has no record of it",
                );
            }
            let served = |a: &str| {
                history.is_some_and(|h| {
                    h.iter()
                        .any(|e| matches!(&e.effect, Effect::Assigned { agent, .. } if agent == a))
                })
            };
            let allowed = match &caller {
                Caller::Admin => true,
                Caller::Agent(a) => {
                    view.as_ref().and_then(|v| v.assignee.as_deref()) == Some(a.as_str())
                        || served(a)
                }
            };
            if !allowed {
                return forbidden("read conversations they did not serve");
            }
            json(
                StatusCode::OK,
                &json!({"conversation": view, "history": history.unwrap_or_default()}),
            )
        }
        RRoute::Conversation(id, action) => {
            conversation_action(routing, &caller, &id, action, &body, now).await
        }
        RRoute::Queues => json(
            StatusCode::OK,
            &json!({"items": routing.read().engine().queues(now)}),
        ),
        RRoute::Live => {
            if !admin {
                return forbidden("read the live view");
            }
            json(StatusCode::OK, &routing.read().engine().live(now))
        }
        RRoute::Events => match EventKinds::parse(query) {
            Ok(kinds) => events(app.clone(), routing, caller, kinds),
            Err(message) => error(StatusCode::BAD_REQUEST, "invalid_parameter", message),
        },
    }
}

async fn conversation_action(
    routing: &Routing,
    caller: &Caller,
    id: &str,
    action: Action,
    body: &[u8],
    now: i64,
) -> Response<Body> {
    let Ok(conv) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such conversation");
    };
    let holder = routing
        .read()
        .engine()
        .conversation(conv)
        .and_then(|c| c.assignee);
    let holds = holder.as_deref().is_some_and(|a| caller.is(a));
    let admin = *caller == Caller::Admin;
    let cmd = match action {
        Action::Assign => {
            if !admin {
                return forbidden("assign (claim instead)");
            }
            let target = match parse::<TargetBody>(body).and_then(TargetBody::target) {
                Ok(t) => t,
                Err(r) => return r,
            };
            Command::Assign {
                conv,
                target,
                actor: Actor::Admin,
                now_ms: now,
            }
        }
        Action::Claim => {
            let agent = match caller {
                Caller::Agent(a) => a.clone(),
                Caller::Admin => match parse::<TargetBody>(body) {
                    Ok(TargetBody {
                        agent: Some(a),
                        team: None,
                    }) => a,
                    Ok(_) => return bad_body("\"agent\" is required"),
                    Err(r) => return r,
                },
            };
            Command::Claim {
                conv,
                agent,
                now_ms: now,
            }
        }
        Action::Transfer => {
            if !(admin || holds) {
                return forbidden("transfer conversations they do not hold");
            }
            let target = match parse::<TargetBody>(body).and_then(TargetBody::target) {
                Ok(t) => t,
                Err(r) => return r,
            };
            Command::Transfer {
                conv,
                target,
                actor: caller.actor(),
                now_ms: now,
            }
        }
        Action::Resolve => {
            if !(admin || holds) {
                return forbidden("resolve conversations they do not hold");
            }
            let open_in_pipeline = routing
                .conversation_record(conv)
                .map(|c| c.status.is_open());
            match open_in_pipeline {
                None => return error(StatusCode::NOT_FOUND, "not_found", "no such conversation"),
                Some(false) => {
                    return error(StatusCode::CONFLICT, "already_resolved", "already resolved")
                }
                Some(true) => {}
            }
            let result = routing
                .submit(Command::Resolve {
                    conv,
                    actor: caller.actor(),
                    now_ms: now,
                })
                .await;
            return match result {
                Ok(Ok(fx)) => json(
                    StatusCode::OK,
                    &json!({"conversation": null, "effects": fx}),
                ),
                // Routing never held it (its number maps to no team): the
                // pipeline resolved it all the same.
                Ok(Err(crate::routing::RoutingError::UnknownConversation(_))) => json(
                    StatusCode::OK,
                    &json!({"conversation": null, "effects": []}),
                ),
                Ok(Err(e)) => refused(&e),
                Err(e) => submit_failed(&e),
            };
        }
        Action::Reopen => {
            let Some(rec) = routing.conversation_record(conv) else {
                return error(StatusCode::NOT_FOUND, "not_found", "no such conversation");
            };
            if rec.status.is_open() {
                return error(
                    StatusCode::CONFLICT,
                    "already_open",
                    "the conversation is open",
                );
            }
            if !admin {
                let last = routing
                    .read()
                    .last_agent(&rec.number_id, &rec.customer_id)
                    .map(str::to_string);
                if !last.as_deref().is_some_and(|a| caller.is(a)) {
                    return forbidden("reopen conversations another agent served");
                }
            }
            if let Some(other) = routing
                .open_conversation(&rec.number_id, &rec.customer_id)
                .filter(|c| c.id != conv)
            {
                return error(
                    StatusCode::CONFLICT,
                    "customer_has_open_conversation",
                    format!("conversation {} of this customer is open", other.id),
                );
            }
            Command::Reopen {
                spec: ConvSpec {
                    id: conv,
                    number_id: rec.number_id,
                    customer_id: rec.customer_id,
                    previous_agent: None,
                },
                actor: caller.actor(),
                now_ms: now,
            }
        }
    };
    match run(routing, vec![cmd]).await {
        Ok(fx) => json(
            StatusCode::OK,
            &json!({"conversation": routing.read().engine().conversation(conv), "effects": fx}),
        ),
        Err(r) => r,
    }
}

/// An event-stream body: frames come from a bounded channel filled by a
/// forwarding task.
struct SseBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// How often an idle stream gets a comment line (keeps proxies from closing
/// it, and notices a stopping daemon).
const SSE_HEARTBEAT: Duration = Duration::from_secs(1);

fn sse_frame(ev: &StreamEvent) -> Option<Bytes> {
    let data = serde_json::to_string(ev).ok()?;
    Some(Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        ev.lsn,
        ev.effect.kind()
    )))
}

struct SubscriberGauge;

impl SubscriberGauge {
    fn new() -> SubscriberGauge {
        metrics::gauge!(names::SSE_SUBSCRIBERS).increment(1.0);
        SubscriberGauge
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!(names::SSE_SUBSCRIBERS).decrement(1.0);
    }
}

/// The event kinds a subscriber asked for with `?types=a,b` (repeatable);
/// every kind when absent. A subscriber that wants only assignments does
/// not pay for a frame per message.
struct EventKinds(Option<Vec<&'static str>>);

impl EventKinds {
    /// The kind of a filed-message frame (the others are [`Effect::KINDS`]).
    const MESSAGE: &'static str = "message";

    fn parse(query: Option<&str>) -> Result<EventKinds, String> {
        let mut kinds = Vec::new();
        let mut named = false;
        let pairs = query.map(|q| form_urlencoded::parse(q.as_bytes()));
        for (k, v) in pairs.into_iter().flatten() {
            if k != "types" {
                continue;
            }
            named = true;
            for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let known = Effect::KINDS
                    .iter()
                    .chain([&Self::MESSAGE])
                    .find(|k| **k == name)
                    .ok_or_else(|| {
                        format!(
                            "types: unknown event type {name:?}; known: {}, {}",
                            Effect::KINDS.join(", "),
                            Self::MESSAGE
                        )
                    })?;
                kinds.push(*known);
            }
        }
        if named && kinds.is_empty() {
            return Err("types: name at least one event type".into());
        }
        Ok(EventKinds(named.then_some(kinds)))
    }

    fn wants(&self, kind: &str) -> bool {
        self.0.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

fn events(app: Arc<App>, routing: &Routing, caller: Caller, kinds: EventKinds) -> Response<Body> {
    let buffer = routing.settings().stream_buffer.max(16);
    let wants_messages = kinds.wants(EventKinds::MESSAGE);
    let mut sub = routing.service().subscribe();
    let mut messages = routing.pipeline().subscribe_messages();
    let router = routing.clone();
    let service = routing.service().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(buffer);
    let hello = format!(
        "event: ready\ndata: {}\n\n",
        json!({"agent": match &caller { Caller::Agent(a) => Some(a.as_str()), Caller::Admin => None }})
    );
    let _ = tx.try_send(Bytes::from(hello));
    tokio::spawn(async move {
        let _gauge = SubscriberGauge::new();
        let mut beat = tokio::time::interval(SSE_HEARTBEAT);
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        let visible = match &caller {
                            Caller::Admin => true,
                            Caller::Agent(a) => ev.effect.agent() == Some(a.as_str()),
                        };
                        if !visible || !kinds.wants(ev.effect.kind()) {
                            continue;
                        }
                        let Some(frame) = sse_frame(&ev) else { continue };
                        if tx.try_send(frame).is_err() {
                            if !tx.is_closed() {
                                metrics::counter!(names::SSE_DROPPED).increment(1);
                            }
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        metrics::counter!(names::SSE_DROPPED).increment(1);
                        break;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                m = messages.recv(), if wants_messages => match m {
                    Ok(m) => {
                        let visible = match &caller {
                            Caller::Admin => true,
                            Caller::Agent(a) => router
                                .read()
                                .engine()
                                .conversation(m.conv)
                                .is_some_and(|c| c.assignee.as_deref() == Some(a.as_str())),
                        };
                        if !visible {
                            continue;
                        }
                        let Ok(data) = serde_json::to_string(&*m) else { continue };
                        let frame = Bytes::from(format!("event: message\ndata: {data}\n\n"));
                        if tx.try_send(frame).is_err() {
                            if !tx.is_closed() {
                                metrics::counter!(names::SSE_DROPPED).increment(1);
                            }
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        metrics::counter!(names::SSE_DROPPED).increment(1);
                        break;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = beat.tick() => {
                    if service.stopped() || !app.serving() || tx.try_send(Bytes::from_static(b": keepalive\n\n")).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(SseBody { rx }.boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
