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

pub fn document() -> Value {
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
