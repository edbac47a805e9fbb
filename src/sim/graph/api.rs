//! The wire contract of the simulated send endpoint: request validation the way Meta does it,
//! and errors in Meta's shape.
//!
//! Invariants:
//! - validation is pure (no state, no clock): a body is either a [`Parsed`] request or one
//!   [`GraphError`] with HTTP 400 and code 100 naming the first problem;
//! - every error body is `{"error":{"message","type","code","error_subcode"?,"error_data":
//!   {"messaging_product":"whatsapp","details"},"fbtrace_id"}}`; clients key on `code`;
//! - lengths are counted in characters (Meta's limits are characters, not bytes).

use http::StatusCode;
use serde_json::{json, Map, Value};

/// Longest `text.body`.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest media caption.
pub const MAX_CAPTION_CHARS: usize = 1024;

/// Message types the endpoint accepts.
pub const MESSAGE_TYPES: &[&str] = &[
    "text",
    "template",
    "image",
    "document",
    "audio",
    "video",
    "sticker",
    "interactive",
    "reaction",
    "location",
    "contacts",
];

/// An error answer of the Graph API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub http: StatusCode,
    pub code: i64,
    pub subcode: Option<i64>,
    /// `type`: `OAuthException` for almost everything.
    pub kind: &'static str,
    pub message: String,
    pub details: String,
}

/// Which server error a fault injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFault {
    /// HTTP 500, code 1 ("An unknown error occurred").
    Unknown,
    /// HTTP 500, code 2 ("Service temporarily unavailable").
    Unavailable,
    /// HTTP 503, code 2.
    Overloaded,
}

impl GraphError {
    fn new(http: StatusCode, code: i64, message: String, details: String) -> Self {
        GraphError {
            http,
            code,
            subcode: None,
            kind: "OAuthException",
            message,
            details,
        }
    }

    /// 400, code 100: a request parameter is missing or wrong.
    pub fn invalid(details: impl Into<String>) -> Self {
        let details = details.into();
        GraphError::new(
            StatusCode::BAD_REQUEST,
            100,
            format!("(#100) {details}"),
            details,
        )
    }

    /// 400, code 100, subcode 33: the phone_number_id does not exist (Meta calls this a
    /// `GraphMethodException`).
    pub fn unknown_object(id: &str) -> Self {
        GraphError {
            subcode: Some(33),
            kind: "GraphMethodException",
            ..GraphError::new(
                StatusCode::BAD_REQUEST,
                100,
                format!(
                    "Unsupported post request. Object with ID '{id}' does not exist, cannot be \
                     loaded due to missing permissions, or does not support this operation. \
                     Please read the Graph API documentation at \
                     https://developers.facebook.com/docs/graph-api"
                ),
                format!("Object with ID '{id}' does not exist"),
            )
        }
    }

    /// 401, code 190: missing or wrong token.
    pub fn bad_token() -> Self {
        GraphError::new(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token".into(),
            "The access token is missing or invalid for this phone number".into(),
        )
    }

    /// 401, code 190, subcode 463: the number's token expired.
    pub fn expired_token() -> Self {
        GraphError {
            subcode: Some(463),
            ..GraphError::new(
                StatusCode::UNAUTHORIZED,
                190,
                "Error validating access token: Session has expired.".into(),
                "The access token has expired".into(),
            )
        }
    }

    /// Code 130429 with HTTP 400 (Meta) or 429.
    pub fn throttled(http_429: bool) -> Self {
        let http = if http_429 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::BAD_REQUEST
        };
        GraphError::new(
            http,
            130429,
            "(#130429) Rate limit hit".into(),
            "Cloud API message throughput has been reached.".into(),
        )
    }

    /// 400, code 131056: too many messages to the same recipient.
    pub fn pair_limited() -> Self {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            131056,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit".into(),
            "Message failed to send because there were too many messages sent from this phone \
             number to the same phone number in a short period of time."
                .into(),
        )
    }

    /// 400, code 131047: free-form message outside the customer-service window.
    pub fn outside_window() -> Self {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            131047,
            "(#131047) Re-engagement message".into(),
            OUTSIDE_WINDOW_DETAILS.into(),
        )
    }

    /// An injected server error.
    pub fn server(fault: ServerFault) -> Self {
        let (http, code, message) = match fault {
            ServerFault::Unknown => (
                StatusCode::INTERNAL_SERVER_ERROR,
                1,
                "An unknown error occurred",
            ),
            ServerFault::Unavailable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                "Service temporarily unavailable",
            ),
            ServerFault::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                2,
                "Service temporarily unavailable",
            ),
        };
        GraphError::new(http, code, message.into(), message.into())
    }

    /// 400, code 2500: a path the Graph API does not have.
    pub fn unknown_path(path: &str) -> Self {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            2500,
            format!("Unknown path components: {path}"),
            "Unknown path".into(),
        )
    }

    /// The JSON body.
    pub fn body(&self, fbtrace_id: &str) -> Value {
        let mut error = Map::new();
        error.insert("message".into(), json!(self.message));
        error.insert("type".into(), json!(self.kind));
        error.insert("code".into(), json!(self.code));
        if let Some(sub) = self.subcode {
            error.insert("error_subcode".into(), json!(sub));
        }
        error.insert(
            "error_data".into(),
            json!({"messaging_product": "whatsapp", "details": self.details}),
        );
        error.insert("fbtrace_id".into(), json!(fbtrace_id));
        json!({ "error": error })
    }
}

/// Shared by the sync refusal and the `failed` status.
pub const OUTSIDE_WINDOW_DETAILS: &str = "Message failed to send because more than 24 hours \
     have passed since the customer last replied to this number.";

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A phone number, digits only (a leading `+` is dropped).
    Phone(String),
    /// A business-scoped user id such as `US.13491208655302741918`.
    UserId(String),
}

impl Recipient {
    /// The key windows and pair limits use.
    pub fn key(&self) -> &str {
        match self {
            Recipient::Phone(s) | Recipient::UserId(s) => s,
        }
    }

    /// Parses a `to` value, or a customer named in a control request.
    pub fn parse(to: &str) -> Option<Recipient> {
        let digits = to.strip_prefix('+').unwrap_or(to);
        if (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Recipient::Phone(digits.to_owned()));
        }
        let b = to.as_bytes();
        let user_id = b.len() > 3
            && b.len() <= 64
            && b[..2].iter().all(u8::is_ascii_uppercase)
            && b[2] == b'.'
            && b[3..].iter().all(u8::is_ascii_alphanumeric);
        user_id.then(|| Recipient::UserId(to.to_owned()))
    }
}

/// A template's pricing category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Marketing => "marketing",
            Category::Utility => "utility",
            Category::Authentication => "authentication",
        }
    }
}

/// A valid send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `to` exactly as given (echoed as `contacts[].input`).
    pub to: String,
    pub recipient: Recipient,
    /// One of [`MESSAGE_TYPES`].
    pub kind: &'static str,
    /// For templates: name and pricing category.
    pub template: Option<(String, Category)>,
}

/// What a valid body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Send(Outgoing),
    MarkRead { message_id: String },
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn non_empty<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    str_field(obj, key).filter(|s| !s.trim().is_empty())
}

fn object<'a>(
    root: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>, GraphError> {
    root.get(key).and_then(Value::as_object).ok_or_else(|| {
        GraphError::invalid(format!(
            "The parameter {key} is required for this message type."
        ))
    })
}

/// Validates a request body the way the Cloud API does.
pub fn parse_request(body: &[u8]) -> Result<Parsed, GraphError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GraphError::invalid(format!("Invalid JSON body: {e}")))?;
    let root = value
        .as_object()
        .ok_or_else(|| GraphError::invalid("The request body must be a JSON object."))?;
    match root.get("messaging_product").and_then(Value::as_str) {
        Some("whatsapp") => {}
        Some(other) => {
            return Err(GraphError::invalid(format!(
                "Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."
            )))
        }
        None => {
            return Err(GraphError::invalid(
                "The parameter messaging_product is required.",
            ))
        }
    }
    if let Some(status) = root.get("status") {
        if status.as_str() != Some("read") {
            return Err(GraphError::invalid(
                "Param status must be one of {read} for a status update.",
            ));
        }
        let message_id = non_empty(root, "message_id")
            .ok_or_else(|| GraphError::invalid("The parameter message_id is required."))?;
        return Ok(Parsed::MarkRead {
            message_id: message_id.to_owned(),
        });
    }
    match root.get("recipient_type") {
        None => {}
        Some(v) if v.as_str() == Some("individual") => {}
        Some(_) => {
            return Err(GraphError::invalid(
                "Param recipient_type must be one of {individual}.",
            ))
        }
    }
    let to = match root.get("to") {
        None => return Err(GraphError::invalid("The parameter to is required.")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| GraphError::invalid("Param to must be a string."))?,
    };
    let recipient = Recipient::parse(to).ok_or_else(|| {
        GraphError::invalid(format!(
            "Param to must be a phone number (1 to 20 digits) or a business-scoped user id, \
             got \"{}\".",
            to.chars().take(40).collect::<String>()
        ))
    })?;
    let kind = match root.get("type") {
        None => "text",
        Some(v) => {
            let given = v.as_str().unwrap_or("");
            *MESSAGE_TYPES.iter().find(|t| **t == given).ok_or_else(|| {
                GraphError::invalid(format!(
                    "Param type must be one of {{{}}} - got \"{}\".",
                    MESSAGE_TYPES.join(", "),
                    given.chars().take(40).collect::<String>()
                ))
            })?
        }
    };
    let mut template = None;
    match kind {
        "text" => {
            let text = object(root, "text")?;
            let body = str_field(text, "body")
                .ok_or_else(|| GraphError::invalid("The parameter text['body'] is required."))?;
            let chars = body.chars().count();
            if chars == 0 || body.trim().is_empty() {
                return Err(GraphError::invalid("Param text['body'] must not be empty."));
            }
            if chars > MAX_TEXT_CHARS {
                return Err(GraphError::invalid(format!(
                    "Param text['body'] must be at most {MAX_TEXT_CHARS} characters long."
                )));
            }
        }
        "template" => {
            let t = object(root, "template")?;
            let name = non_empty(t, "name").ok_or_else(|| {
                GraphError::invalid("The parameter template['name'] is required.")
            })?;
            let code = t
                .get("language")
                .and_then(Value::as_object)
                .and_then(|l| non_empty(l, "code"));
            if code.is_none() {
                return Err(GraphError::invalid(
                    "The parameter template['language']['code'] is required.",
                ));
            }
            if t.get("components").is_some_and(|c| !c.is_array()) {
                return Err(GraphError::invalid(
                    "Param template['components'] must be an array.",
                ));
            }
            template = Some((name.to_owned(), category_of(t, name)?));
        }
        "image" | "document" | "audio" | "video" | "sticker" => {
            let media = object(root, kind)?;
            if non_empty(media, "id").is_none() && non_empty(media, "link").is_none() {
                return Err(GraphError::invalid(format!(
                    "Param {kind} must have either an id or a link."
                )));
            }
            if let Some(caption) = str_field(media, "caption") {
                if caption.chars().count() > MAX_CAPTION_CHARS {
                    return Err(GraphError::invalid(format!(
                        "Param {kind}['caption'] must be at most {MAX_CAPTION_CHARS} characters long."
                    )));
                }
            }
        }
        "interactive" => {
            let i = object(root, "interactive")?;
            if non_empty(i, "type").is_none() {
                return Err(GraphError::invalid(
                    "The parameter interactive['type'] is required.",
                ));
            }
        }
        "reaction" => {
            let r = object(root, "reaction")?;
            if non_empty(r, "message_id").is_none() {
                return Err(GraphError::invalid(
                    "The parameter reaction['message_id'] is required.",
                ));
            }
        }
        "location" => {
            let l = object(root, "location")?;
            if !(l.get("latitude").is_some_and(is_number)
                && l.get("longitude").is_some_and(is_number))
            {
                return Err(GraphError::invalid(
                    "Params location['latitude'] and location['longitude'] are required.",
                ));
            }
        }
        "contacts" => {
            let ok = root
                .get("contacts")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !ok {
                return Err(GraphError::invalid(
                    "Param contacts must be a non-empty array.",
                ));
            }
        }
        // MESSAGE_TYPES is closed: every member has an arm above.
        _ => {}
    }
    Ok(Parsed::Send(Outgoing {
        to: to.to_owned(),
        recipient,
        kind,
        template,
    }))
}

fn is_number(v: &Value) -> bool {
    v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok())
}

/// A template's category: the simulator's own `template.category` when given, else guessed
/// from the name (`utility_*`, `auth*`), else marketing (Meta's pricing default).
fn category_of(t: &Map<String, Value>, name: &str) -> Result<Category, GraphError> {
    if let Some(c) = t.get("category") {
        return match c.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("marketing") => Ok(Category::Marketing),
            Some("utility") => Ok(Category::Utility),
            Some("authentication") => Ok(Category::Authentication),
            _ => Err(GraphError::invalid(
                "Param template['category'] must be one of {marketing, utility, authentication}.",
            )),
        };
    }
    let lower = name.to_ascii_lowercase();
    Ok(if lower.starts_with("utility") {
        Category::Utility
    } else if lower.starts_with("auth") {
        Category::Authentication
    } else {
        Category::Marketing
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Value) -> Result<Parsed, GraphError> {
        parse_request(body.to_string().as_bytes())
    }

    #[test]
    fn valid_requests_of_every_type() {
        let cases = [
            json!({"messaging_product":"whatsapp","to":"+16505551234","text":{"body":"hi"}}),
            json!({"messaging_product":"whatsapp","recipient_type":"individual","to":"US.13491208655302741918","type":"text","text":{"body":"x"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"utility_order","language":{"code":"en_US"},"components":[]}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"image","image":{"link":"https://x/y.jpg","caption":"c"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"document","document":{"id":"123","filename":"a.pdf"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"audio","audio":{"id":"1"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"video","video":{"id":"1"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"sticker","sticker":{"id":"1"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"interactive","interactive":{"type":"button","action":{}}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"reaction","reaction":{"message_id":"wamid.X","emoji":"👍"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"location","location":{"latitude":37.5,"longitude":"127.0"}}),
            json!({"messaging_product":"whatsapp","to":"1","type":"contacts","contacts":[{"name":{"formatted_name":"A"}}]}),
        ];
        for (i, c) in cases.into_iter().enumerate() {
            assert!(matches!(check(c.clone()), Ok(Parsed::Send(_))), "{i}: {c}");
        }
        let Ok(Parsed::Send(o)) =
            check(json!({"messaging_product":"whatsapp","to":"+16505551234","text":{"body":"hi"}}))
        else {
            unreachable!()
        };
        assert_eq!(o.recipient, Recipient::Phone("16505551234".into()));
        assert_eq!((o.to.as_str(), o.kind), ("+16505551234", "text"));
        let Ok(Parsed::Send(o)) = check(
            json!({"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"utility_order","language":{"code":"en_US"}}}),
        ) else {
            unreachable!()
        };
        assert_eq!(
            o.template,
            Some(("utility_order".into(), Category::Utility))
        );
        assert_eq!(
            check(json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.A"})),
            Ok(Parsed::MarkRead {
                message_id: "wamid.A".into()
            })
        );
    }

    #[test]
    fn text_length_counts_characters() {
        let ok = "한".repeat(MAX_TEXT_CHARS);
        assert!(check(json!({"messaging_product":"whatsapp","to":"1","text":{"body":ok}})).is_ok());
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        let err = check(json!({"messaging_product":"whatsapp","to":"1","text":{"body":long}}))
            .unwrap_err();
        assert!(err.details.contains("4096"), "{err:?}");
    }

    #[test]
    fn invalid_requests_are_code_100_with_a_reason() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"to":"1","text":{"body":"x"}}), "messaging_product"),
            (
                json!({"messaging_product":"sms","to":"1","text":{"body":"x"}}),
                "messaging_product",
            ),
            (
                json!({"messaging_product":"whatsapp","recipient_type":"group","to":"1","text":{"body":"x"}}),
                "recipient_type",
            ),
            (
                json!({"messaging_product":"whatsapp","text":{"body":"x"}}),
                "to is required",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"12ab","text":{"body":"x"}}),
                "Param to",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"123456789012345678901","text":{"body":"x"}}),
                "Param to",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"fax"}),
                "Param type",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1"}),
                "text is required",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","text":{"body":""}}),
                "empty",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"template","template":{"language":{"code":"en"}}}),
                "template['name']",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"template","template":{"name":"t"}}),
                "['code']",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"image","image":{"caption":"c"}}),
                "id or a link",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"interactive","interactive":{}}),
                "interactive['type']",
            ),
            (
                json!({"messaging_product":"whatsapp","to":"1","type":"reaction","reaction":{"emoji":"x"}}),
                "message_id",
            ),
            (
                json!({"messaging_product":"whatsapp","status":"read"}),
                "message_id",
            ),
            (
                json!({"messaging_product":"whatsapp","status":"deleted","message_id":"w"}),
                "status",
            ),
        ];
        for (body, needle) in cases {
            let err = check(body.clone()).unwrap_err();
            assert_eq!(
                (err.http, err.code),
                (StatusCode::BAD_REQUEST, 100),
                "{body}"
            );
            assert!(err.details.contains(needle), "{body}: {err:?}");
        }
        assert!(parse_request(b"{not json").is_err());
    }

    #[test]
    fn error_bodies_have_meta_shape() {
        let v = GraphError::unknown_object("42").body("Abc");
        assert_eq!(v["error"]["code"], 100);
        assert_eq!(v["error"]["error_subcode"], 33);
        assert_eq!(v["error"]["fbtrace_id"], "Abc");
        assert_eq!(v["error"]["error_data"]["messaging_product"], "whatsapp");
        let v = GraphError::throttled(false).body("x");
        assert_eq!(v["error"]["type"], "OAuthException");
        assert!(v["error"].get("error_subcode").is_none());
        assert_eq!(
            GraphError::throttled(true).http,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
