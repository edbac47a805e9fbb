//! Record types that exist only in the store (the event types of
//! `crate::event` are stored as they are). Each has a kind number and a
//! version in the stored header; never reuse a kind, bump the version on any
//! layout change and keep a decoder for the old one.

use rkyv::{Archive, Deserialize, Serialize};

use crate::event::{Priority, Referral};
use crate::journal::RecordLoc;

/// Stored record kinds. 1..=6 are the event kinds of `crate::event::kind`.
pub mod kind {
    pub use crate::event::kind::{ACCOUNT, ALERT, INVALID, MESSAGE, PREFERENCE, STATUS, UNROUTED};
    pub const DEDUPE: u16 = 16;
    pub const CONVERSATION: u16 = 17;
    pub const CUSTOMER: u16 = 18;
    pub const NUMBER: u16 = 19;
    pub const OUTBOX: u16 = 20;
    pub const PENDING: u16 = 21;
    pub const TIMELINE_CHUNK: u16 = 22;
    pub const TIMELINE_TAIL: u16 = 23;
}

/// Where a journal record lives (the journal is the archive; sled indexes it).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
}

impl From<RecordLoc> for Loc {
    fn from(l: RecordLoc) -> Self {
        Loc {
            segment: l.segment,
            offset: l.offset,
        }
    }
}

impl From<Loc> for RecordLoc {
    fn from(l: Loc) -> Self {
        RecordLoc {
            segment: l.segment,
            offset: l.offset,
        }
    }
}

/// The archive entry of a message: the conversation it was filed under and
/// where its journal record is. The key (its wamid) is the dedupe key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MessageIndex {
    pub conv_id: u64,
    pub timestamp: i64,
    /// LSN of the record at `loc` (for an outbound message: its local id).
    pub lsn: u64,
    pub loc: Loc,
}

/// One message's place in its conversation's timeline.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TimelineEntry {
    /// Message (or request) time, Unix seconds: the timeline's order.
    pub timestamp: i64,
    pub lsn: u64,
    pub loc: Loc,
}

/// Timeline entries of one conversation: a sealed chunk (`x` key) or the
/// conversation's not yet sealed tail (`T` key), in filing order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct TimelineEntries {
    pub entries: Vec<TimelineEntry>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum OutboxState {
    /// Waiting for (or being retried by) its number's dispatcher.
    Queued,
    Sent {
        wamid: String,
    },
    Failed {
        code: i64,
        title: String,
        reason: String,
    },
}

/// An outbound message, by its local id (the LSN of its request).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OutboxEntry {
    pub conv_id: u64,
    pub number_id: String,
    pub priority: Priority,
    /// The request record in the journal.
    pub loc: Loc,
    pub created_at_ms: i64,
    pub state: OutboxState,
    pub updated_at_ms: i64,
}

/// A request that has no final outcome yet: what a restart must send.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PendingMark {
    pub number_id: String,
    /// The recipient's identity as the request named it (pair limit key).
    pub recipient: String,
    pub priority: Priority,
    pub loc: Loc,
    pub created_at_ms: i64,
    /// Attempts started (0: never handed to the Graph API).
    pub started: u32,
}

/// Marks an account-level event (by content hash) as seen.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DedupeMark {
    pub received_at_ms: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ConversationStatus {
    /// Open and waiting for routing (issue: routing assigns it).
    #[default]
    Unassigned,
    Queued,
    Assigned,
    Resolved,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationStatus::Unassigned => "unassigned",
            ConversationStatus::Queued => "queued",
            ConversationStatus::Assigned => "assigned",
            ConversationStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unassigned" => ConversationStatus::Unassigned,
            "queued" => ConversationStatus::Queued,
            "assigned" => ConversationStatus::Assigned,
            "resolved" => ConversationStatus::Resolved,
            _ => return None,
        })
    }

    pub fn is_open(self) -> bool {
        self != ConversationStatus::Resolved
    }
}

/// A conversation between one of our numbers and one customer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConversationRecord {
    /// LSN of the event that opened it: deterministic under replay.
    pub id: u64,
    pub number_id: String,
    pub customer_id: String,
    pub route: u32,
    pub status: ConversationStatus,
    pub assignee: Option<String>,
    pub opened_at: i64,
    pub last_message_at: i64,
    pub last_inbound_at: Option<i64>,
    /// End of the 24-hour customer-service window (last inbound timestamp + 24 h).
    pub window_expires_at: Option<i64>,
    pub unread: u32,
    pub messages: u32,
    /// Highest LSN applied: replay applies only events above it.
    pub last_lsn: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MarketingPreference {
    pub category: String,
    pub value: String,
    pub timestamp: i64,
}

/// A customer, keyed by the identity it was first seen under.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct CustomerRecord {
    pub id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub parent_user_id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    /// Every identity (phone numbers and user ids, old and new) that leads here.
    pub identities: Vec<String>,
    pub first_seen_at: i64,
    pub last_seen_at: i64,
    /// The first Click-to-WhatsApp referral seen: the lead's origin.
    pub referral: Option<Referral>,
    pub referral_at: Option<i64>,
    pub marketing: Option<MarketingPreference>,
    /// Highest LSN whose profile fields were applied.
    pub updated_lsn: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct NumberCounters {
    pub inbound_messages: u64,
    pub outbound_messages: u64,
    pub statuses: u64,
    pub conversations_opened: u64,
    pub last_inbound_at: Option<i64>,
}

impl NumberCounters {
    pub fn add(&mut self, other: &NumberCounters) {
        self.inbound_messages += other.inbound_messages;
        self.outbound_messages += other.outbound_messages;
        self.statuses += other.statuses;
        self.conversations_opened += other.conversations_opened;
        self.last_inbound_at = self.last_inbound_at.max(other.last_inbound_at);
    }
}

/// What we know about one of our numbers from the platform.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct NumberRecord {
    pub number_id: String,
    /// Last quality event: FLAGGED, UNFLAGGED, THROUGHPUT_UPGRADE, ...
    pub quality_event: Option<String>,
    /// Messaging limit tier, e.g. TIER_1K.
    pub messaging_tier: Option<String>,
    pub quality_updated_at: Option<i64>,
    pub updated_lsn: u64,
    pub counters: NumberCounters,
}
