//! The facts Switchboard learns from the outside world, as journal records.
//!
//! Every webhook delivery is split into [`Event`]s. Each event is encoded with
//! rkyv, framed and appended to the journal, and only then applied by a shard.
//! These types are therefore an on-disk format: a field is never removed or
//! reordered; a change is a new record version (see [`Event::version`]) with a
//! decoder for every older one. ARCHITECTURE.md lists the kinds and versions.
//!
//! Invariants:
//! - `raw` always holds the exact JSON bytes of the item as Meta sent them
//!   (escapes included), so unknown types and fields are never lost.
//! - `route` and `CustomerRef::home` are decided once, before journaling, and
//!   replay reuses them; shard = `route % shards`.

use rkyv::{Archive, Deserialize, Serialize};

/// Journal sequence number: every record gets the next one, in append order.
pub type Lsn = u64;

/// A 128-bit content hash used as the dedupe key of events that carry no id.
pub type ContentHash = [u8; 16];

/// Who the customer on the other side of an event is, as the payload names them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CustomerRef {
    /// Phone number (`wa_id`, `from`, `recipient_id`), digits only.
    pub wa_id: Option<String>,
    /// Business-scoped user id (`user_id`, `from_user_id`, `recipient_user_id`).
    pub user_id: Option<String>,
    pub parent_user_id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    /// The customer's stable id (the identity it was first seen under). Filled
    /// by the pipeline's router before the event is journaled.
    pub home: String,
}

impl CustomerRef {
    /// Identities in the order we prefer to key a customer by.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.user_id
            .as_deref()
            .into_iter()
            .chain(self.wa_id.as_deref())
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Direction {
    /// From the customer to us.
    In,
    /// From us to the customer (echoes of the Business app, later our own sends).
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Media {
    pub id: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub filename: Option<String>,
    pub url: Option<String>,
    /// Voice note (`audio.voice: true`) or animated sticker.
    pub voice: bool,
    pub animated: bool,
}

/// Click-to-WhatsApp ad (or post) the customer came from.
#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq,
)]
#[rkyv(derive(Debug))]
pub struct Referral {
    pub source_url: Option<String>,
    pub source_id: Option<String>,
    pub source_type: Option<String>,
    pub headline: Option<String>,
    pub body: Option<String>,
    pub media_type: Option<String>,
    pub ctwa_clid: Option<String>,
}

/// A `system` message: the customer changed number or id.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SystemChange {
    /// `user_changed_number`, `user_changed_user_id`, `customer_identity_changed`, ...
    pub kind: String,
    pub body: Option<String>,
    pub new_wa_id: Option<String>,
    pub new_user_id: Option<String>,
}

/// An inbound customer message, or an outbound echo.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageEvent {
    /// Our number (`metadata.phone_number_id`).
    pub number_id: String,
    /// `entry[].id`: the WhatsApp Business Account.
    pub waba_id: String,
    pub route: u32,
    pub direction: Direction,
    pub customer: CustomerRef,
    pub wamid: String,
    /// Message `type` exactly as sent (unknown types are kept as they are).
    pub kind: String,
    /// Payload timestamp, Unix seconds. When the payload's was not a number,
    /// the receive time and `timestamp_valid == false`.
    pub timestamp: i64,
    pub timestamp_valid: bool,
    pub received_at_ms: i64,
    /// Body, caption, button or list title, reaction emoji: the readable text.
    pub text: Option<String>,
    pub media: Option<Media>,
    /// `context.id`: the message this one replies to.
    pub context_id: Option<String>,
    pub referral: Option<Referral>,
    pub system: Option<SystemChange>,
    /// The message item's JSON as received.
    pub raw: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ErrorInfo {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    pub details: Option<String>,
}

/// Pricing of a status: PMP (`pricing.type`) or the older CBP shape.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Pricing {
    pub billable: Option<bool>,
    /// `PMP` or `CBP`.
    pub model: Option<String>,
    /// PMP `type`: `regular`, `free_customer_service`, `free_entry_point`.
    pub kind: Option<String>,
    pub category: Option<String>,
}

/// A delivery status of a message we (or the Business app) sent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StatusEvent {
    pub number_id: String,
    pub waba_id: String,
    pub route: u32,
    /// The recipient (`recipient_id`, `recipient_user_id`).
    pub customer: CustomerRef,
    pub wamid: String,
    /// `sent`, `delivered`, `read`, `failed`, or whatever else Meta sends.
    pub status: String,
    pub timestamp: i64,
    pub timestamp_valid: bool,
    pub received_at_ms: i64,
    pub errors: Vec<ErrorInfo>,
    pub pricing: Option<Pricing>,
    /// CBP `conversation.id`, when present.
    pub conversation_id: Option<String>,
    pub raw: String,
}

/// A change that concerns the account, a number or a template rather than one
/// customer message: quality and template updates, account updates, calls,
/// value-level errors, and fields we do not know yet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AccountEvent {
    pub waba_id: String,
    /// The change's `field`, e.g. `phone_number_quality_update`.
    pub field: String,
    /// Our number, when the change names one (metadata or display number).
    pub number_id: Option<String>,
    pub route: u32,
    /// Hash of (entry id, field, value): the dedupe key.
    pub dedupe: ContentHash,
    /// The headline of the change: `FLAGGED`, `APPROVED`, `errors`, ...
    pub event: Option<String>,
    /// A second detail: `current_limit`, template name, error code, ...
    pub detail: Option<String>,
    /// `entry[].time` or the value's own timestamp; receive time otherwise.
    pub timestamp: i64,
    pub received_at_ms: i64,
    /// The change's `value` JSON as received.
    pub raw: String,
}

/// A customer's marketing preference (`user_preferences`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PreferenceEvent {
    pub number_id: String,
    pub waba_id: String,
    pub route: u32,
    pub customer: CustomerRef,
    /// e.g. `marketing_messages`.
    pub category: String,
    /// `stop`, `resume`, ...
    pub value: String,
    pub timestamp: i64,
    pub received_at_ms: i64,
    pub dedupe: ContentHash,
    pub raw: String,
}

/// An update for a phone_number_id this deployment does not manage.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct UnroutedEvent {
    pub number_id: String,
    pub waba_id: String,
    pub field: String,
    /// `message`, `status`, `change`, ...
    pub item: String,
    pub route: u32,
    pub dedupe: ContentHash,
    pub received_at_ms: i64,
    pub raw: String,
}

/// An item of a signed delivery that cannot be applied (no sender, a sender
/// that is not a phone number, no id, not an object). Kept, counted, visible.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct InvalidEvent {
    /// Machine-readable reason, e.g. `missing_sender`.
    pub reason: String,
    pub waba_id: String,
    pub field: String,
    pub number_id: Option<String>,
    pub route: u32,
    pub dedupe: ContentHash,
    pub received_at_ms: i64,
    pub raw: String,
}

/// Who or what asked for an outbound message; also its dispatch priority
/// (agent replies go before automation, automation before campaigns).
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Priority {
    Agent,
    Automation,
    Campaign,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Agent, Priority::Automation, Priority::Campaign];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Agent => "agent",
            Priority::Automation => "automation",
            Priority::Campaign => "campaign",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "agent" => Priority::Agent,
            "automation" => Priority::Automation,
            "campaign" => Priority::Campaign,
            _ => return None,
        })
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A message we were asked to send, accepted into the outbox. Its LSN is
/// its local id (`o<lsn>`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OutboundRequest {
    pub number_id: String,
    pub route: u32,
    /// The recipient: phone number and/or business-scoped user id.
    pub customer: CustomerRef,
    /// Graph API message `type`.
    pub kind: String,
    pub priority: Priority,
    /// The Graph API request body, ready to send.
    pub body: String,
    /// The readable text (body, caption, template name) for the archive.
    pub text: Option<String>,
    /// Template name and category, for templates.
    pub template: Option<String>,
    pub category: Option<String>,
    /// The wamid this message replies to.
    pub reply_to: Option<String>,
    /// Who asked: `admin`, an agent id, `automation`, ...
    pub submitted_by: String,
    pub created_at_ms: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Outcome {
    /// About to call the Graph API (attempt n). A `Started` with no later
    /// outcome after a crash is the one window where a message may be sent
    /// twice.
    Started { attempt: u32 },
    /// The Graph API accepted it and named its wamid.
    Accepted { wamid: String },
    /// Final failure: the platform's error code and title (0 when the
    /// failure was ours, e.g. retries exhausted), and our reason code.
    Failed {
        code: i64,
        title: String,
        reason: String,
    },
}

/// What happened to an outbound request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SendOutcome {
    /// LSN of the `OutboundRequest`.
    pub request: Lsn,
    pub number_id: String,
    pub route: u32,
    pub outcome: Outcome,
    pub at_ms: i64,
}

/// Something an operator must see: a blocked term, an expired token.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AlertEvent {
    /// `blocked_term`, `token_expired`, ...
    pub kind: String,
    pub number_id: Option<String>,
    /// Who caused it (the sender of a blocked message).
    pub actor: Option<String>,
    pub detail: String,
    pub route: u32,
    pub at_ms: i64,
}

/// A routing command (kind 10): every input of the routing engine is
/// journaled as one, and the engine is rebuilt by replaying them in LSN
/// order (it is deterministic).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoutingEvent {
    /// Route of the conversation a resolve or reopen is about: that
    /// conversation's shard applies the record too (in LSN order with its
    /// messages), so a customer message after the resolve opens a new
    /// conversation. None for every other command.
    pub conv_route: Option<u32>,
    pub command: crate::routing::Command,
}

/// One journal record's payload.
// Events are built once and moved through Vecs; boxing the large variants
// would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(MessageEvent),
    Status(StatusEvent),
    Account(AccountEvent),
    Preference(PreferenceEvent),
    Unrouted(UnroutedEvent),
    Invalid(InvalidEvent),
    Outbound(OutboundRequest),
    SendOutcome(SendOutcome),
    Alert(AlertEvent),
    Routing(RoutingEvent),
}

/// Record kinds as written in the journal header. Never reuse a number.
pub mod kind {
    pub const MESSAGE: u16 = 1;
    pub const STATUS: u16 = 2;
    pub const ACCOUNT: u16 = 3;
    pub const PREFERENCE: u16 = 4;
    pub const UNROUTED: u16 = 5;
    pub const INVALID: u16 = 6;
    pub const OUTBOUND: u16 = 7;
    pub const SEND_OUTCOME: u16 = 8;
    pub const ALERT: u16 = 9;
    pub const ROUTING: u16 = 10;
}

impl Event {
    pub fn kind(&self) -> u16 {
        match self {
            Event::Message(_) => kind::MESSAGE,
            Event::Status(_) => kind::STATUS,
            Event::Account(_) => kind::ACCOUNT,
            Event::Preference(_) => kind::PREFERENCE,
            Event::Unrouted(_) => kind::UNROUTED,
            Event::Invalid(_) => kind::INVALID,
            Event::Outbound(_) => kind::OUTBOUND,
            Event::SendOutcome(_) => kind::SEND_OUTCOME,
            Event::Alert(_) => kind::ALERT,
            Event::Routing(_) => kind::ROUTING,
        }
    }

    /// Current schema version of this kind's record.
    pub fn version(&self) -> u16 {
        1
    }

    pub fn route(&self) -> u32 {
        match self {
            Event::Message(e) => e.route,
            Event::Status(e) => e.route,
            Event::Account(e) => e.route,
            Event::Preference(e) => e.route,
            Event::Unrouted(e) => e.route,
            Event::Invalid(e) => e.route,
            Event::Outbound(e) => e.route,
            Event::SendOutcome(e) => e.route,
            Event::Alert(e) => e.route,
            Event::Routing(e) => e.conv_route.unwrap_or(0),
        }
    }

    /// The item's JSON as Meta sent it, for events that came from a webhook.
    pub fn raw(&self) -> Option<&str> {
        match self {
            Event::Message(e) => Some(&e.raw),
            Event::Status(e) => Some(&e.raw),
            Event::Account(e) => Some(&e.raw),
            Event::Preference(e) => Some(&e.raw),
            Event::Unrouted(e) => Some(&e.raw),
            Event::Invalid(e) => Some(&e.raw),
            Event::Outbound(_) | Event::SendOutcome(_) | Event::Alert(_) | Event::Routing(_) => {
                None
            }
        }
    }

    /// Serialise the payload (without any framing).
    pub fn encode(&self) -> Result<rkyv::util::AlignedVec, crate::codec::CodecError> {
        use crate::codec::to_aligned;
        match self {
            Event::Message(e) => to_aligned(e),
            Event::Status(e) => to_aligned(e),
            Event::Account(e) => to_aligned(e),
            Event::Preference(e) => to_aligned(e),
            Event::Unrouted(e) => to_aligned(e),
            Event::Invalid(e) => to_aligned(e),
            Event::Outbound(e) => to_aligned(e),
            Event::SendOutcome(e) => to_aligned(e),
            Event::Alert(e) => to_aligned(e),
            Event::Routing(e) => to_aligned(e),
        }
    }

    /// Decode a payload written by [`Event::encode`], validating every byte.
    /// `bytes` need not be aligned: they are copied into an aligned buffer.
    pub fn decode(
        kind: u16,
        version: u16,
        bytes: &[u8],
    ) -> Result<Event, crate::codec::CodecError> {
        use crate::codec::{from_unaligned, CodecError};
        if version != 1 {
            return Err(CodecError::UnknownVersion { kind, version });
        }
        Ok(match kind {
            kind::MESSAGE => Event::Message(from_unaligned::<MessageEvent>(bytes)?),
            kind::STATUS => Event::Status(from_unaligned::<StatusEvent>(bytes)?),
            kind::ACCOUNT => Event::Account(from_unaligned::<AccountEvent>(bytes)?),
            kind::PREFERENCE => Event::Preference(from_unaligned::<PreferenceEvent>(bytes)?),
            kind::UNROUTED => Event::Unrouted(from_unaligned::<UnroutedEvent>(bytes)?),
            kind::INVALID => Event::Invalid(from_unaligned::<InvalidEvent>(bytes)?),
            kind::OUTBOUND => Event::Outbound(from_unaligned::<OutboundRequest>(bytes)?),
            kind::SEND_OUTCOME => Event::SendOutcome(from_unaligned::<SendOutcome>(bytes)?),
            kind::ALERT => Event::Alert(from_unaligned::<AlertEvent>(bytes)?),
            kind::ROUTING => Event::Routing(from_unaligned::<RoutingEvent>(bytes)?),
            _ => return Err(CodecError::UnknownKind(kind)),
        })
    }
}
