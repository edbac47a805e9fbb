//! What a client may ask Switchboard to send, validated field by field and
//! turned into the exact Graph API request body.
//!
//! Invariants: a request that passes [`SendRequest::build`] produces a body
//! the Graph API accepts as to shape (types, lengths, required fields); every
//! refusal names the field and says why; nothing here does I/O.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::event::Priority;

/// Text bodies up to 4,096 characters (platform rule).
pub const MAX_TEXT_CHARS: usize = 4096;
/// Captions up to 1,024 characters.
pub const MAX_CAPTION_CHARS: usize = 1024;

/// `POST /api/v1/messages` (and, without `number_id`/`to`, a reply in a
/// conversation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub number_id: Option<String>,
    /// A phone number (digits) or a business-scoped user id (`US.123...`).
    pub to: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A string, or `{"body": "...", "preview_url": bool}`.
    pub text: Option<Value>,
    /// `{"name", "language" ("en_US" or {"code"}), "components"?, "category"?}`.
    pub template: Option<Value>,
    /// For image, document, audio, video, sticker: `{"id"|"link", "caption"?, "filename"?}`.
    pub media: Option<Value>,
    /// An interactive object as the Graph API takes it (`type` required).
    pub interactive: Option<Value>,
    /// `{"message_id", "emoji"}`.
    pub reaction: Option<Value>,
    /// The wamid this message replies to.
    pub reply_to: Option<String>,
    /// `agent`, `automation` or `campaign`.
    pub priority: Option<String>,
}

/// A request refused for its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// A validated request, ready to journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub kind: String,
    pub priority: Priority,
    pub body: Value,
    /// The readable text for the archive: body, caption or template name.
    pub text: Option<String>,
    pub template: Option<String>,
    /// Template category as the client declared it (for opt-out checks).
    pub category: Option<String>,
    /// Every piece of text a customer would read (for the filter).
    pub readable: Vec<String>,
    pub free_form: bool,
}

/// A recipient as the Graph API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Phone(String),
    UserId(String),
}

impl Recipient {
    /// A phone number may be written as the Cloud API accepts it (a leading
    /// `+`, spaces, hyphens, parentheses); it is kept as digits only, the
    /// form webhooks use for `wa_id`, so replies and inbound meet.
    pub fn parse(to: &str) -> Result<Recipient, Invalid> {
        let to = to.trim();
        let phone_like = to
            .strip_prefix('+')
            .unwrap_or(to)
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'(' | b')'));
        if phone_like {
            let digits: String = to.chars().filter(char::is_ascii_digit).collect();
            if !digits.is_empty() && digits.len() <= 20 {
                return Ok(Recipient::Phone(digits));
            }
        }
        let to = to.trim_start_matches('+');
        let user_id_like = to.contains('.')
            && to.len() <= 64
            && to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if user_id_like {
            return Ok(Recipient::UserId(to.to_string()));
        }
        Err(invalid(
            "to",
            "must be a phone number (digits, country code first) or a business-scoped user id",
        ))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Phone(s) | Recipient::UserId(s) => s,
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a str>, Invalid> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, format!("`{key}` must be a string"))),
    }
}

/// Every string value under `v` except identifiers and links (what a reader sees).
fn collect_readable(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_readable(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if !matches!(
                    k.as_str(),
                    "id" | "link"
                        | "url"
                        | "message_id"
                        | "type"
                        | "code"
                        | "payload"
                        | "flow_token"
                ) {
                    collect_readable(v, out);
                }
            }
        }
        _ => {}
    }
}

const MEDIA: &[&str] = &["image", "document", "audio", "video", "sticker"];

impl SendRequest {
    /// Validate and build the Graph API body for `to`.
    pub fn build(&self, to: &Recipient, default_priority: Priority) -> Result<Built, Invalid> {
        let kind = self.kind.clone().unwrap_or_else(|| {
            if self.template.is_some() {
                "template".into()
            } else {
                "text".into()
            }
        });
        let priority = match &self.priority {
            None => default_priority,
            Some(p) => Priority::parse(p)
                .ok_or_else(|| invalid("priority", "must be agent, automation or campaign"))?,
        };
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to.as_str(),
            "type": kind,
        });
        let mut readable = Vec::new();
        let mut text = None;
        let mut template_name = None;
        let mut category = None;
        // Only the object of the message's own type may be given.
        let given: Vec<&str> = [
            ("text", self.text.is_some()),
            ("template", self.template.is_some()),
            ("media", self.media.is_some()),
            ("interactive", self.interactive.is_some()),
            ("reaction", self.reaction.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| *n)
        .collect();
        let expected = if MEDIA.contains(&kind.as_str()) {
            "media"
        } else {
            kind.as_str()
        };
        if let Some(other) = given.iter().find(|g| **g != expected) {
            return Err(invalid(
                "type",
                format!("a {kind} message takes `{expected}`, not `{other}`"),
            ));
        }
        match kind.as_str() {
            "text" => {
                let (b, preview) = match &self.text {
                    Some(Value::String(s)) => (s.clone(), false),
                    Some(Value::Object(o)) => {
                        let b = string_field(o, "body", "text")?.ok_or_else(|| invalid("text", "`body` is required"))?;
                        let preview = o.get("preview_url").and_then(Value::as_bool).unwrap_or(false);
                        (b.to_string(), preview)
                    }
                    Some(_) => return Err(invalid("text", "must be a string or {\"body\": ...}")),
                    None => return Err(invalid("text", "is required for a text message")),
                };
                if b.trim().is_empty() {
                    return Err(invalid("text", "must not be empty"));
                }
                if chars(&b) > MAX_TEXT_CHARS {
                    return Err(invalid("text", format!("at most {MAX_TEXT_CHARS} characters (is {})", chars(&b))));
                }
                body["text"] = json!({"body": b, "preview_url": preview});
                readable.push(b.clone());
                text = Some(b);
            }
            "template" => {
                let Some(Value::Object(t)) = &self.template else {
                    return Err(invalid("template", "is required for a template message and must be an object"));
                };
                let name = string_field(t, "name", "template")?.filter(|n| !n.is_empty());
                let name = name.ok_or_else(|| invalid("template", "`name` is required"))?;
                let language = match t.get("language") {
                    Some(Value::String(code)) => code.clone(),
                    Some(Value::Object(l)) => {
                        string_field(l, "code", "template")?.ok_or_else(|| invalid("template", "`language.code` is required"))?.to_string()
                    }
                    _ => return Err(invalid("template", "`language` (\"en_US\" or {\"code\": ...}) is required")),
                };
                let mut out = json!({"name": name, "language": {"code": language}});
                if let Some(components) = t.get("components") {
                    if !components.is_array() {
                        return Err(invalid("template", "`components` must be an array"));
                    }
                    collect_readable(components, &mut readable);
                    out["components"] = components.clone();
                }
                if let Some(c) = string_field(t, "category", "template")? {
                    let c = c.to_ascii_lowercase();
                    if !matches!(c.as_str(), "marketing" | "utility" | "authentication") {
                        return Err(invalid("template", "`category` must be marketing, utility or authentication"));
                    }
                    category = Some(c);
                }
                if let Some(extra) = t.keys().find(|k| !matches!(k.as_str(), "name" | "language" | "components" | "category")) {
                    return Err(invalid("template", format!("unknown field `{extra}`")));
                }
                body["template"] = out;
                template_name = Some(name.to_string());
                text = Some(name.to_string());
            }
            k if MEDIA.contains(&k) => {
                let Some(Value::Object(m)) = &self.media else {
                    return Err(invalid("media", format!("is required for a {k} message and must be an object")));
                };
                let id = string_field(m, "id", "media")?;
                let link = string_field(m, "link", "media")?;
                match (id, link) {
                    (Some(_), Some(_)) => return Err(invalid("media", "give `id` or `link`, not both")),
                    (None, None) => return Err(invalid("media", "`id` (an uploaded media id) or `link` (https URL) is required")),
                    (None, Some(l)) if !l.starts_with("https://") && !l.starts_with("http://") => {
                        return Err(invalid("media", "`link` must be an http(s) URL"))
                    }
                    _ => {}
                }
                let caption = string_field(m, "caption", "media")?;
                if let Some(c) = caption {
                    if matches!(k, "audio" | "sticker") {
                        return Err(invalid("media", format!("a {k} has no caption")));
                    }
                    if chars(c) > MAX_CAPTION_CHARS {
                        return Err(invalid("media", format!("`caption` at most {MAX_CAPTION_CHARS} characters")));
                    }
                    readable.push(c.to_string());
                    text = Some(c.to_string());
                }
                let filename = string_field(m, "filename", "media")?;
                if filename.is_some() && k != "document" {
                    return Err(invalid("media", "`filename` is for documents only"));
                }
                if let Some(extra) = m.keys().find(|key| !matches!(key.as_str(), "id" | "link" | "caption" | "filename")) {
                    return Err(invalid("media", format!("unknown field `{extra}`")));
                }
                body[k] = Value::Object(m.clone());
            }
            "interactive" => {
                let Some(Value::Object(i)) = &self.interactive else {
                    return Err(invalid("interactive", "is required for an interactive message and must be an object"));
                };
                if string_field(i, "type", "interactive")?.is_none() {
                    return Err(invalid("interactive", "`type` is required (button, list, cta_url, flow, ...)"));
                }
                collect_readable(&Value::Object(i.clone()), &mut readable);
                text = i.get("body").and_then(|b| b.get("text")).and_then(Value::as_str).map(String::from);
                body["interactive"] = Value::Object(i.clone());
            }
            "reaction" => {
                let Some(Value::Object(r)) = &self.reaction else {
                    return Err(invalid("reaction", "is required for a reaction and must be an object"));
                };
                if string_field(r, "message_id", "reaction")?.is_none() {
                    return Err(invalid("reaction", "`message_id` is required"));
                }
                let emoji = string_field(r, "emoji", "reaction")?.unwrap_or_default();
                text = (!emoji.is_empty()).then(|| emoji.to_string());
                body["reaction"] = Value::Object(r.clone());
            }
            other => {
                return Err(invalid(
                    "type",
                    format!("unknown message type {other:?} (text, template, image, document, audio, video, sticker, interactive, reaction)"),
                ))
            }
        }
        if let Some(reply) = &self.reply_to {
            if reply.trim().is_empty() {
                return Err(invalid("reply_to", "must be a wamid"));
            }
            body["context"] = json!({"message_id": reply});
        }
        Ok(Built {
            free_form: kind != "template",
            kind,
            priority,
            body,
            text,
            template: template_name,
            category,
            readable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> SendRequest {
        serde_json::from_value(v).unwrap()
    }

    fn to() -> Recipient {
        Recipient::parse("16505551234").unwrap()
    }

    #[test]
    fn text_builds_the_graph_body_with_context() {
        let b = req(json!({"text": "안녕하세요 🙏🏽", "reply_to": "wamid.X"}))
            .build(&to(), Priority::Automation)
            .unwrap();
        assert_eq!(
            b.body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234", "type": "text",
                   "text": {"body": "안녕하세요 🙏🏽", "preview_url": false}, "context": {"message_id": "wamid.X"}})
        );
        assert!(b.free_form);
        assert_eq!(b.text.as_deref(), Some("안녕하세요 🙏🏽"));
        assert_eq!(b.priority, Priority::Automation);
    }

    #[test]
    fn templates_carry_language_components_and_category() {
        let b = req(json!({"type": "template", "priority": "campaign", "template": {"name": "spring_sale", "language": "ko",
            "category": "MARKETING", "components": [{"type": "body", "parameters": [{"type": "text", "text": "지민"}]}]}}))
        .build(&to(), Priority::Agent)
        .unwrap();
        assert_eq!(b.body["template"]["language"]["code"], "ko");
        assert_eq!(b.category.as_deref(), Some("marketing"));
        assert!(!b.free_form);
        assert_eq!(b.priority, Priority::Campaign);
        assert!(
            b.readable.contains(&"지민".to_string()),
            "parameters are checked by the filter"
        );
    }

    #[test]
    fn every_refusal_names_its_field() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let cases = [
            (json!({}), "text"),
            (json!({"text": ""}), "text"),
            (json!({"text": long}), "text"),
            (json!({"text": 5}), "text"),
            (
                json!({"type": "template", "template": {"language": "en"}}),
                "template",
            ),
            (
                json!({"type": "template", "template": {"name": "t"}}),
                "template",
            ),
            (
                json!({"type": "template", "template": {"name": "t", "language": "en", "category": "spam"}}),
                "template",
            ),
            (json!({"type": "image", "media": {}}), "media"),
            (
                json!({"type": "image", "media": {"id": "1", "link": "https://x"}}),
                "media",
            ),
            (
                json!({"type": "audio", "media": {"id": "1", "caption": "c"}}),
                "media",
            ),
            (
                json!({"type": "image", "media": {"id": "1", "filename": "a.pdf"}}),
                "media",
            ),
            (
                json!({"type": "interactive", "interactive": {}}),
                "interactive",
            ),
            (
                json!({"type": "reaction", "reaction": {"emoji": "👍"}}),
                "reaction",
            ),
            (json!({"type": "fax"}), "type"),
            (json!({"text": "hi", "template": {"name": "t"}}), "type"),
            (json!({"text": "hi", "priority": "urgent"}), "priority"),
        ];
        for (v, field) in cases {
            let e = req(v.clone()).build(&to(), Priority::Agent).unwrap_err();
            assert_eq!(e.field, field, "{v}: {e}");
        }
        assert!(
            serde_json::from_value::<SendRequest>(json!({"txt": "hi"})).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn recipients_are_phone_numbers_or_user_ids() {
        assert_eq!(
            Recipient::parse("+82 (10) 1234-5678").unwrap(),
            Recipient::Phone("821012345678".into())
        );
        assert_eq!(Recipient::parse("82+10").unwrap_err().field, "to");
        assert!(Recipient::parse("++8210").is_err());
        assert!(Recipient::parse("( - )").is_err());
        assert_eq!(
            Recipient::parse("+821012345678").unwrap(),
            Recipient::Phone("821012345678".into())
        );
        assert_eq!(
            Recipient::parse("KR.100000000000000001").unwrap(),
            Recipient::UserId("KR.100000000000000001".into())
        );
        assert!(Recipient::parse("").is_err());
        assert!(Recipient::parse("not a number").is_err());
    }

    #[test]
    fn media_captions_and_interactive_texts_are_readable_for_the_filter() {
        let b = req(json!({"type": "document", "media": {"link": "https://e.com/free.pdf", "caption": "Your invoice", "filename": "inv.pdf"}}))
            .build(&to(), Priority::Agent)
            .unwrap();
        assert_eq!(
            b.readable,
            vec!["Your invoice".to_string()],
            "links are not text a customer reads"
        );
        let i = req(json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pick one"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "Winner"}}]}}}))
        .build(&to(), Priority::Agent)
        .unwrap();
        assert!(
            i.readable.contains(&"Pick one".to_string())
                && i.readable.contains(&"Winner".to_string())
        );
        assert_eq!(i.text.as_deref(), Some("Pick one"));
    }
}
