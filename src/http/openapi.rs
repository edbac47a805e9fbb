//! The OpenAPI 3.1 document of everything the TLS listener serves.
//!
//! Kept true by tests: the set of (method, path) pairs must equal
//! `app::ROUTES`, and the integration tests check that real responses carry
//! exactly the properties each schema declares.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::response::with_type;
use super::server::Body;

static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from(serde_json::to_vec_pretty(&document()).expect("the document is plain JSON"))
});

pub fn response() -> Response<Body> {
    with_type(StatusCode::OK, "application/json", DOCUMENT.clone())
}

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn nullable_time() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

fn object(properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    json!({"type": "object", "required": required, "properties": properties})
}

fn nullable_ref(name: &str) -> Value {
    json!({"oneOf": [{"$ref": format!("#/components/schemas/{name}")}, {"type": "null"}]})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn page_of(name: &str) -> Value {
    object(json!({
        "items": {"type": "array", "items": schema_ref(name)},
        "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last page."}
    }))
}

fn ok(schema: Value, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn err(description: &str) -> Value {
    ok(schema_ref("Error"), description)
}

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn path_id(description: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn api_get(summary: &str, params: Vec<Value>, response: Value) -> Value {
    json!({"get": {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": {
            "200": response,
            "400": err("A parameter is invalid."),
            "401": err("Missing or wrong bearer token."),
            "404": err("Not found."),
            "503": err("Not ready yet, the store is being reopened, or it cannot be read right now; retry (see Retry-After).")
        }
    }})
}

fn send_op(summary: &str, params: Vec<Value>) -> Value {
    json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("SendRequest")}}},
        "responses": {
            "202": ok(schema_ref("Queued"), "Durable in the outbox; GET /api/v1/messages/{id} follows it."),
            "401": err("Missing or wrong bearer token."),
            "404": err("unknown_number, or no such conversation."),
            "422": err("Refused: invalid_payload, window_closed, blocked_term, opted_out, number_cannot_send."),
            "503": err("The number's outbox is full or the daemon is busy; retry (Retry-After).")
        }
    })
}

fn limit_cursor() -> Vec<Value> {
    vec![
        param(
            "limit",
            "Page size, 1 to 500 (default 50).",
            json!({"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        param(
            "cursor",
            "The `next_cursor` of the previous page.",
            string(),
        ),
    ]
}

/// A routing write: JSON body in, engine effects out.
fn routing_op(
    summary: &str,
    params: Vec<Value>,
    body: Option<&str>,
    ok_status: &str,
    result: Value,
) -> Value {
    let mut op = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": params,
        "responses": {
            ok_status: ok(result, "Durable and applied; `effects` lists what changed."),
            "400": err("The body is invalid."),
            "401": err("Missing or wrong bearer token."),
            "403": err("An agent token may not do this, or the agent is not eligible."),
            "404": err("Unknown agent, team or conversation."),
            "409": err("Refused by routing: already_assigned, at_capacity, agent_unavailable, team_in_use, ..."),
            "503": err("Not ready or overloaded; retry (Retry-After).")
        }
    });
    if let Some(b) = body {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema_ref(b)}}});
    }
    op
}

fn with_effects(name: &str, value: Value) -> Value {
    object(json!({name: value, "effects": {"type": "array", "items": schema_ref("RoutingEffect")}}))
}

/// Paths of the routing endpoints.
fn routing_paths() -> Value {
    let agent_id = || vec![path_id("Agent id.")];
    let team_id = || vec![path_id("Team id.")];
    let conv_id = || vec![path_id("Conversation id.")];
    let conv_result = || with_effects("conversation", nullable_ref("RoutingConversation"));
    json!({
        "/api/v1/agents": {
            "get": api_get("Agents (admin).", vec![], ok(object(json!({"items": {"type": "array", "items": schema_ref("Agent")}})), "All agents."))["get"].clone(),
            "post": routing_op("Create an agent (admin); `status` optional.", vec![], Some("AgentInput"), "201", with_effects("agent", nullable_ref("Agent")))
        },
        "/api/v1/agents/{id}": {
            "get": api_get("One agent (admin, or the agent itself).", agent_id(), ok(schema_ref("Agent"), "The agent."))["get"].clone(),
            "put": routing_op("Replace an agent (admin).", agent_id(), Some("AgentInput"), "200", with_effects("agent", nullable_ref("Agent"))),
            "delete": routing_op("Remove an agent (admin): its conversations return to routing.", agent_id(), None, "200", with_effects("removed", string()))
        },
        "/api/v1/agents/{id}/status": {"put": routing_op("Set presence: online, away or offline (admin, or the agent itself).", agent_id(), Some("StatusInput"), "200", with_effects("agent", nullable_ref("Agent")))},
        "/api/v1/agents/{id}/token": {"post": routing_op("Issue the agent's API token (admin); shown once, replaces the previous one.", agent_id(), None, "201", object(json!({"agent": string(), "token": string()})))},
        "/api/v1/agents/{id}/conversations": api_get("Conversations assigned to the agent (admin, or the agent itself).", agent_id(), ok(object(json!({"items": {"type": "array", "items": schema_ref("RoutingConversation")}})), "By arrival.")),
        "/api/v1/teams": {
            "get": api_get("Teams with their routing policies.", vec![], ok(object(json!({"items": {"type": "array", "items": schema_ref("Team")}})), "All teams."))["get"].clone(),
            "post": routing_op("Create a team with its routing policy (admin); `numbers` map numbers to it.", vec![], Some("TeamInput"), "201", schema_ref("TeamDetail"))
        },
        "/api/v1/teams/{id}": {
            "get": api_get("One team, its policy and the numbers mapped to it.", team_id(), ok(schema_ref("TeamDetail"), "The team."))["get"].clone(),
            "put": routing_op("Replace a team and its routing policy (admin).", team_id(), Some("TeamInput"), "200", schema_ref("TeamDetail")),
            "delete": routing_op("Remove a team (admin); refused while conversations or other policies use it.", team_id(), None, "200", object(json!({"removed": string()})))
        },
        "/api/v1/conversations/{id}/routing": api_get("A conversation's routing state (assignee, queue, position, estimated wait; null once resolved) and its history: every assignment change with who made it and why.", conv_id(), ok(object(json!({"conversation": nullable_ref("RoutingConversation"), "history": {"type": "array", "items": schema_ref("RoutingEffect")}})), "Known to routing.")),
        "/api/v1/conversations/{id}/assign": {"post": routing_op("Assign to an agent or route to a team (admin).", conv_id(), Some("TargetInput"), "200", conv_result())},
        "/api/v1/conversations/{id}/claim": {"post": routing_op("An agent takes a waiting conversation it is eligible for; of concurrent claims exactly one wins (admin: name the agent).", conv_id(), None, "200", conv_result())},
        "/api/v1/conversations/{id}/transfer": {"post": routing_op("Move an assigned conversation to an agent or a team (admin, or the agent holding it).", conv_id(), Some("TargetInput"), "200", conv_result())},
        "/api/v1/conversations/{id}/resolve": {"post": routing_op("Resolve (admin, or the agent holding it); the customer's next message opens a new conversation.", conv_id(), None, "200", conv_result())},
        "/api/v1/conversations/{id}/reopen": {"post": routing_op("Reopen a resolved conversation; routed again (sticky to its last agent).", conv_id(), None, "200", conv_result())},
        "/api/v1/queues": api_get("Every step queue and sticky queue: length and oldest wait.", vec![], ok(object(json!({"items": {"type": "array", "items": schema_ref("QueueStat")}})), "Queues.")),
        "/api/v1/live": api_get("Live view (admin): per agent load, average first response, resolved in the last hour; per team queue length and longest wait.", vec![], ok(schema_ref("Live"), "Now.")),
        "/api/v1/events": {"get": {
            "summary": "Server-Sent Events: routing effects (assigned, queued, moved, unassigned, resolved, reopened, agent_status_changed, first_response) and filed messages (event `message`); an agent sees its own. A client that falls behind is disconnected.",
            "security": [{"bearer": []}],
            "parameters": [param(
                "types",
                "Only these event types, comma-separated (e.g. `assigned,queued`); every type when absent.",
                string(),
            )],
            "responses": {
                "200": {"description": "An event stream; `data` is a RoutingEffect with `lsn`, `at_ms`, `number_id` and `customer_id`, or a message (`lsn`, `conv`, `number_id`, `customer_id`, `direction`, `id`, `kind`, `submitted_by`).", "content": {"text/event-stream": {"schema": string()}}},
                "400": err("An unknown event type in `types`."),
                "401": err("Missing or wrong bearer token.")
            }
        }}
    })
}

/// Schemas of the routing endpoints.
fn routing_schemas() -> Value {
    let int = || json!({"type": "integer"});
    let nint = || json!({"type": ["integer", "null"]});
    let status = || json!({"type": "string", "enum": ["online", "away", "offline"]});
    let strings = || json!({"type": "array", "items": {"type": "string"}});
    json!({
        "Agent": object(json!({
            "id": string(), "name": string(), "teams": strings(), "skills": strings(),
            "max_concurrent": int(), "status": status(), "grace_until_ms": nint(),
            "active": int(), "last_assigned_ms": nint()
        })),
        "AgentInput": {"type": "object", "properties": {
            "id": string(), "name": string(), "teams": strings(), "skills": strings(),
            "max_concurrent": int(), "status": status()
        }},
        "StatusInput": object(json!({"status": status()})),
        "TargetInput": {"type": "object", "description": "Exactly one of agent and team.", "properties": {"agent": string(), "team": string()}},
        "Policy": {"type": "object", "properties": {
            "steps": {"type": "array", "items": {"type": "object", "properties": {
                "target": {"description": "{\"team\": id} or {\"skills\": \"lang:ko AND billing\"}", "type": "object"},
                "strategy": {"type": "string", "enum": ["round_robin", "least_loaded", "longest_idle", "manual"]},
                "timeout_ms": nint(),
                "skip_if_empty": {"type": "boolean"}
            }}},
            "sticky": {"type": "boolean"}, "sticky_wait_ms": int(), "max_wait_ms": nint(),
            "overflow_team": nullable_string(), "first_reply_timeout_ms": nint()
        }},
        "Team": object(json!({"id": string(), "name": string(), "members": strings(), "policy": schema_ref("Policy")})),
        "TeamDetail": {"type": "object", "required": ["team", "numbers"], "properties": {
            "team": schema_ref("Team"), "numbers": strings(),
            "effects": {"type": "array", "items": schema_ref("RoutingEffect")}
        }},
        "TeamInput": {"type": "object", "properties": {
            "id": string(), "name": string(), "members": strings(), "policy": schema_ref("Policy"), "numbers": strings()
        }},
        "RoutingQueue": {"type": ["object", "null"], "description": "{\"kind\":\"step\",\"team\",\"step\"} or {\"kind\":\"sticky\",\"agent\"}"},
        "RoutingConversation": object(json!({
            "id": int(), "number_id": string(), "customer_id": string(), "team": string(), "arrival": int(),
            "status": {"type": "string", "enum": ["queued", "assigned"]},
            "assignee": nullable_string(), "assigned_at_ms": nint(), "awaiting_first_reply": {"type": "boolean"},
            "queue": schema_ref("RoutingQueue"), "position": nint(), "estimated_wait_ms": nint(),
            "waiting_since_ms": nint(), "opened_at_ms": int(), "avoid_agent": nullable_string()
        })),
        "QueueStat": object(json!({"queue": schema_ref("RoutingQueue"), "length": int(), "oldest_wait_ms": nint()})),
        "Live": object(json!({
            "agents": {"type": "array", "items": object(json!({
                "id": string(), "name": string(), "status": status(), "in_grace": {"type": "boolean"},
                "active": int(), "max_concurrent": int(), "avg_first_response_ms": nint(),
                "resolved_last_hour": int(), "waiting_for_agent": int()
            }))},
            "teams": {"type": "array", "items": object(json!({
                "id": string(), "name": string(), "online_members": int(), "queued": int(), "longest_wait_ms": nint()
            }))}
        })),
        "RoutingEffect": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["assigned", "queued", "moved", "unassigned", "resolved", "reopened", "agent_status_changed", "first_response"]},
            "conv": int(), "agent": nullable_string(), "team": string(), "step": nint(),
            "reason": {"type": "string", "description": "policy, sticky, manual, claim, transfer, timeout, skipped, overflow, sticky_fallthrough, agent_offline, no_first_reply, agent_removed, policy_changed"},
            "actor": {"description": "\"system\", \"admin\", \"api\" or {\"agent\": id}"}
        }}
    })
}

pub fn document() -> Value {
    let mut doc = base_document();
    if let (Some(paths), Some(extra)) = (doc["paths"].as_object_mut(), routing_paths().as_object())
    {
        for (k, v) in extra {
            match paths.get_mut(k) {
                Some(existing) => {
                    if let (Some(e), Some(v)) = (existing.as_object_mut(), v.as_object()) {
                        e.extend(v.clone());
                    }
                }
                None => {
                    paths.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let (Some(schemas), Some(extra)) = (
        doc["components"]["schemas"].as_object_mut(),
        routing_schemas().as_object(),
    ) {
        schemas.extend(extra.clone());
    }
    doc
}

fn base_document() -> Value {
    let mut conv_params = vec![
        param(
            "number",
            "Only conversations of this phone_number_id.",
            string(),
        ),
        param(
            "status",
            "Only conversations in this status.",
            json!({"type": "string", "enum": ["unassigned", "queued", "assigned", "resolved"]}),
        ),
    ];
    conv_params.extend(limit_cursor());
    let mut event_params = vec![param(
        "kind",
        "Only events of this kind.",
        json!({"type": "string", "enum": ["account", "preference", "unrouted", "invalid"]}),
    )];
    event_params.extend(limit_cursor());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control backend for WhatsApp Business Cloud API numbers. Timestamps are RFC 3339 UTC. Errors are {\"error\":{\"code\",\"message\"}}."
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": ok(object(json!({"status": string()})), "Alive.")}}},
            "/readyz": {"get": {"summary": "Readiness: start-up replay finished and the journal and the store can write.", "responses": {
                "200": ok(object(json!({"status": string()})), "Ready."),
                "503": err("Not ready.")
            }}},
            "/webhooks/whatsapp": {
                "get": {
                    "summary": "Webhook verification handshake.",
                    "parameters": [
                        {"name": "hub.mode", "in": "query", "required": true, "schema": {"type": "string", "const": "subscribe"}},
                        {"name": "hub.verify_token", "in": "query", "required": true, "schema": string()},
                        {"name": "hub.challenge", "in": "query", "required": true, "schema": string()}
                    ],
                    "responses": {
                        "200": {"description": "The challenge, echoed.", "content": {"text/plain": {"schema": string()}}},
                        "400": err("Parameters missing."),
                        "403": err("Wrong verify token.")
                    }
                },
                "post": {
                    "summary": "Signed webhook delivery from the WhatsApp Business Cloud API.",
                    "parameters": [{"name": "X-Hub-Signature-256", "in": "header", "required": true, "schema": string()}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "200": ok(object(json!({"received": {"type": "integer"}})), "Everything in the delivery is durable and applied."),
                        "400": err("Malformed JSON or an object other than whatsapp_business_account."),
                        "401": err("Missing, malformed or wrong signature."),
                        "408": err("The body did not arrive in time."),
                        "413": err("Body larger than server.max_body_bytes."),
                        "503": err("Not ready, overloaded, or the journal or the store cannot write; retry (see Retry-After).")
                    }
                }
            },
            "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": {"200": ok(json!({"type": "object"}), "OpenAPI 3.1.")}}},
            "/api/v1/conversations": api_get("Conversations, newest activity first.", conv_params, ok(page_of("Conversation"), "A page of conversations.")),
            "/api/v1/conversations/{id}": api_get("One conversation.", vec![path_id("Conversation id.")], ok(schema_ref("Conversation"), "The conversation.")),
            "/api/v1/conversations/{id}/messages": {
                "get": api_get("A conversation's messages in time order.", {
                    let mut p = vec![path_id("Conversation id.")];
                    p.extend(limit_cursor());
                    p
                }, ok(page_of("Message"), "A page of messages."))["get"].clone(),
                "post": send_op("Reply in a conversation (agent priority): to its customer through its number.", vec![path_id("Conversation id.")])
            },
            "/api/v1/messages": {"post": send_op("Send a message (automation priority unless `priority` says otherwise).", vec![])},
            "/api/v1/messages/batch": {"post": {
                "summary": "Queue up to 1,000 messages in one durable write (campaign priority unless a message's `priority` says otherwise). Each message is checked on its own; the answer holds one result per message, in order.",
                "security": [{"bearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("BatchRequest")}}},
                "responses": {
                    "202": ok(schema_ref("BatchQueued"), "Per message: queued (`id`, `status`) or refused (`error`)."),
                    "401": err("Missing or wrong bearer token."),
                    "422": err("invalid_payload: not JSON, or not 1 to 1,000 messages."),
                    "503": err("Nothing was queued (the journal is unavailable); retry (Retry-After).")
                }
            }},
            "/api/v1/numbers/{id}/resume": {"post": {
                "summary": "Resume a number paused after its access token was refused.",
                "security": [{"bearer": []}],
                "parameters": [path_id("phone_number_id.")],
                "responses": {
                    "200": ok(object(json!({"number_id": string(), "was_paused": {"type": "boolean"}})), "Resumed."),
                    "401": err("Missing or wrong bearer token."),
                    "404": err("No such number.")
                }
            }},
            "/api/v1/alerts": api_get("Alerts (blocked terms, refused tokens), newest first.", limit_cursor(), ok(page_of("Alert"), "A page of alerts.")),
            "/api/v1/messages/{id}": api_get("A message by wamid, with its status history.", vec![path_id("The wamid.")], ok(schema_ref("MessageDetail"), "The message.")),
            "/api/v1/customers/{id}": api_get("A customer by id, phone number or user id.", vec![path_id("Customer id or any of its identities.")], ok(schema_ref("Customer"), "The customer.")),
            "/api/v1/numbers": api_get("Configured numbers with counters.", vec![], ok(object(json!({"items": {"type": "array", "items": schema_ref("Number")}})), "All numbers.")),
            "/api/v1/webhook-events": api_get("Stored account-level, preference, unrouted and invalid webhook items, newest first.", event_params, ok(page_of("WebhookEvent"), "A page of events."))
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": object(json!({"error": object(json!({"code": string(), "message": string()}))})),
                "CustomerRef": object(json!({"id": string(), "wa_id": nullable_string(), "user_id": nullable_string(), "name": nullable_string()})),
                "Conversation": object(json!({
                    "id": string(),
                    "number_id": string(),
                    "customer": schema_ref("CustomerRef"),
                    "status": {"type": "string", "enum": ["unassigned", "queued", "assigned", "resolved"]},
                    "assignee": nullable_string(),
                    "opened_at": time(),
                    "last_message_at": time(),
                    "last_inbound_at": nullable_time(),
                    "window_expires_at": nullable_time(),
                    "unread": {"type": "integer"},
                    "messages": {"type": "integer"}
                })),
                "Media": object(json!({
                    "id": nullable_string(), "mime_type": nullable_string(), "sha256": nullable_string(),
                    "filename": nullable_string(), "url": nullable_string(), "voice": {"type": "boolean"}, "animated": {"type": "boolean"}
                })),
                "Referral": object(json!({
                    "source_url": nullable_string(), "source_id": nullable_string(), "source_type": nullable_string(),
                    "headline": nullable_string(), "body": nullable_string(), "media_type": nullable_string(), "ctwa_clid": nullable_string()
                })),
                "Message": object(json!({
                    "id": {"type": "string", "description": "The wamid (inbound), or o<n> (outbound)."},
                    "wamid": {"type": ["string", "null"], "description": "Null until the platform accepted an outbound message."},
                    "conversation_id": string(),
                    "direction": {"type": "string", "enum": ["in", "out"]},
                    "type": string(),
                    "text": nullable_string(),
                    "media": nullable_ref("Media"),
                    "timestamp": time(),
                    "timestamp_valid": {"type": "boolean"},
                    "received_at": time(),
                    "status": nullable_string(),
                    "context_id": nullable_string(),
                    "referral": nullable_ref("Referral"),
                    "priority": {"type": ["string", "null"], "enum": ["agent", "automation", "campaign", null]},
                    "error": nullable_ref("SendError"),
                    "raw": {"description": "The message item exactly as Meta sent it (inbound), or the Graph API request body (outbound)."}
                })),
                "SendError": object(json!({"code": {"type": "integer"}, "title": string(), "reason": string()})),
                "Sending": object(json!({
                    "rate_per_second": {"type": "number"}, "ceiling_per_second": {"type": "number"},
                    "queued": {"type": "integer"}, "in_flight": {"type": "integer"}, "paused": {"type": "boolean"}
                })),
                "Alert": object(json!({
                    "id": string(), "kind": string(), "number_id": nullable_string(), "actor": nullable_string(),
                    "detail": string(), "at": time()
                })),
                "Queued": object(json!({"id": string(), "status": {"type": "string", "const": "queued"}})),
                "BatchRequest": object(json!({"messages": {"type": "array", "minItems": 1, "maxItems": 1000, "items": schema_ref("SendRequest")}})),
                "BatchQueued": object(json!({"items": {"type": "array", "items": {"oneOf": [schema_ref("Queued"), schema_ref("Error")]}}})),
                "SendRequest": {
                    "type": "object",
                    "properties": {
                        "number_id": {"type": "string", "description": "Required for POST /api/v1/messages; omitted for a conversation reply."},
                        "to": {"type": "string", "description": "Phone number or business-scoped user id; omitted for a conversation reply."},
                        "type": {"type": "string", "enum": ["text", "template", "image", "document", "audio", "video", "sticker", "interactive", "reaction"]},
                        "text": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                        "template": {"type": "object", "description": "{name, language, components?, category?}"},
                        "media": {"type": "object", "description": "{id | link, caption?, filename?}"},
                        "interactive": {"type": "object"},
                        "reaction": {"type": "object", "description": "{message_id, emoji}"},
                        "reply_to": {"type": "string"},
                        "priority": {"type": "string", "enum": ["agent", "automation", "campaign"]}
                    }
                },
                "StatusError": object(json!({"code": {"type": "integer"}, "title": nullable_string(), "message": nullable_string(), "details": nullable_string()})),
                "Pricing": object(json!({"billable": {"type": ["boolean", "null"]}, "pricing_model": nullable_string(), "type": nullable_string(), "category": nullable_string()})),
                "Status": object(json!({
                    "status": string(),
                    "timestamp": time(),
                    "received_at": time(),
                    "recipient_id": nullable_string(),
                    "recipient_user_id": nullable_string(),
                    "errors": {"type": "array", "items": schema_ref("StatusError")},
                    "pricing": nullable_ref("Pricing"),
                    "conversation_id": nullable_string(),
                    "raw": {"description": "The status item exactly as Meta sent it."}
                })),
                "MessageDetail": object(json!({
                    "message": nullable_ref("Message"),
                    "wamid": nullable_string(),
                    "status": {"type": ["string", "null"], "description": "Monotonic outcome: sent < delivered < read; failed is terminal; `received` for inbound."},
                    "statuses": {"type": "array", "items": schema_ref("Status")}
                })),
                "Marketing": object(json!({"category": string(), "value": string(), "at": time()})),
                "Customer": object(json!({
                    "id": string(),
                    "wa_id": nullable_string(),
                    "user_id": nullable_string(),
                    "parent_user_id": nullable_string(),
                    "name": nullable_string(),
                    "username": nullable_string(),
                    "identities": {"type": "array", "items": string()},
                    "first_seen_at": time(),
                    "last_seen_at": time(),
                    "referral": nullable_ref("Referral"),
                    "referral_at": nullable_time(),
                    "marketing": nullable_ref("Marketing")
                })),
                "NumberCounters": object(json!({
                    "inbound_messages": {"type": "integer"}, "outbound_messages": {"type": "integer"}, "statuses": {"type": "integer"},
                    "conversations_opened": {"type": "integer"}, "open_conversations": {"type": "integer"}
                })),
                "Number": object(json!({
                    "phone_number_id": string(),
                    "display_phone_number": string(),
                    "name": nullable_string(),
                    "app": string(),
                    "waba_id": nullable_string(),
                    "quality_event": nullable_string(),
                    "messaging_tier": nullable_string(),
                    "quality_updated_at": nullable_time(),
                    "last_inbound_at": nullable_time(),
                    "counters": schema_ref("NumberCounters"),
                    "sending": nullable_ref("Sending")
                })),
                "WebhookEvent": object(json!({
                    "id": string(),
                    "kind": {"type": "string", "enum": ["account", "preference", "unrouted", "invalid"]},
                    "field": string(),
                    "waba_id": string(),
                    "number_id": nullable_string(),
                    "event": nullable_string(),
                    "detail": nullable_string(),
                    "received_at": time(),
                    "raw": {"description": "The item exactly as Meta sent it."}
                }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_paths_equal_the_router() {
        let doc = document();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = super::super::app::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "unresolved $ref {name}");
        }
    }
}
