//! The read model behind the JSON API: conversations, messages with their
//! status history, customers, numbers and stored webhook events, as
//! serialisable views.
//!
//! Invariants: reads never block a shard for longer than copying one page
//! out of its state; pagination is keyset-based (a cursor names the last item
//! seen), so concurrent writes never produce duplicates or shift pages; every
//! timestamp leaves as an RFC 3339 UTC string.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::event::{
    Direction, ErrorInfo, Event, Lsn, MessageEvent, OutboundRequest, Pricing, Referral, StatusEvent,
};
use crate::journal::RecordLoc;
use crate::pipeline::directory::CustomerSummary;
use crate::pipeline::state::ConversationFilter;
use crate::pipeline::Pipeline;
use crate::store::records::{ConversationRecord, ConversationStatus, CustomerRecord, OutboxState};
use crate::store::StoreError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("archived record: {0}")]
    Record(String),
}

/// RFC 3339 UTC from Unix seconds.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// RFC 3339 UTC from Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn raw_json(raw: &str) -> Box<RawValue> {
    // The raw item came out of a body that parsed as JSON; anything else is
    // still shown, as a string, rather than dropped.
    RawValue::from_string(raw.to_string()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::Value::String(raw.to_string()).to_string())
            .expect("a JSON string")
    })
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Parse a `limit` query parameter.
pub fn parse_limit(raw: Option<&str>) -> Result<Option<usize>, QueryError> {
    raw.map(|v| {
        v.parse().map_err(|_| QueryError::Invalid {
            field: "limit",
            message: "not a positive integer".into(),
        })
    })
    .transpose()
}

fn limit(requested: Option<usize>) -> Result<usize, QueryError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(QueryError::Invalid {
            field: "limit",
            message: "must be at least 1".into(),
        }),
        Some(n) if n > MAX_LIMIT => Err(QueryError::Invalid {
            field: "limit",
            message: format!("must be at most {MAX_LIMIT}"),
        }),
        Some(n) => Ok(n),
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<(i64, u64)>, QueryError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || QueryError::Invalid {
        field: "cursor",
        message: "not a cursor this API returned".into(),
    };
    let (a, b) = c.split_once('.').ok_or_else(bad)?;
    Ok(Some((
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
    )))
}

fn cursor(a: i64, b: u64) -> String {
    format!("{a}.{b}")
}

#[derive(Debug, Serialize)]
pub struct CustomerRefView {
    pub id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
}

impl From<CustomerSummary> for CustomerRefView {
    fn from(c: CustomerSummary) -> Self {
        CustomerRefView {
            id: c.id,
            wa_id: c.wa_id,
            user_id: c.user_id,
            name: c.name,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConversationView {
    pub id: String,
    pub number_id: String,
    pub customer: CustomerRefView,
    pub status: &'static str,
    pub assignee: Option<String>,
    pub opened_at: String,
    pub last_message_at: String,
    pub last_inbound_at: Option<String>,
    pub window_expires_at: Option<String>,
    pub unread: u32,
    pub messages: u32,
}

#[derive(Debug, Serialize)]
pub struct MediaView {
    pub id: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub filename: Option<String>,
    pub url: Option<String>,
    pub voice: bool,
    pub animated: bool,
}

/// Why an outbound message failed.
#[derive(Debug, Serialize)]
pub struct SendErrorView {
    /// The platform's error code (0 when the failure was ours).
    pub code: i64,
    pub title: String,
    /// Our reason code, e.g. `window_closed`, `retries_exhausted`.
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct MessageView {
    /// The wamid for inbound messages; `o<n>` for outbound ones.
    pub id: String,
    /// Null for an outbound message the platform has not accepted yet.
    pub wamid: Option<String>,
    pub conversation_id: String,
    pub direction: &'static str,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub media: Option<MediaView>,
    pub timestamp: String,
    pub timestamp_valid: bool,
    pub received_at: String,
    /// `received` for inbound; the monotonic delivery status for outbound.
    pub status: Option<String>,
    pub context_id: Option<String>,
    pub referral: Option<Referral>,
    /// Outbound only: dispatch priority.
    pub priority: Option<&'static str>,
    /// Outbound only: why it failed.
    pub error: Option<SendErrorView>,
    /// The item as Meta sent it (inbound), or the Graph API request body (outbound).
    pub raw: Box<RawValue>,
}

#[derive(Debug, Serialize)]
pub struct ErrorView {
    pub code: i64,
    pub title: Option<String>,
    pub message: Option<String>,
    pub details: Option<String>,
}

impl From<&ErrorInfo> for ErrorView {
    fn from(e: &ErrorInfo) -> Self {
        ErrorView {
            code: e.code,
            title: e.title.clone(),
            message: e.message.clone(),
            details: e.details.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PricingView {
    pub billable: Option<bool>,
    pub pricing_model: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub category: Option<String>,
}

impl From<&Pricing> for PricingView {
    fn from(p: &Pricing) -> Self {
        PricingView {
            billable: p.billable,
            pricing_model: p.model.clone(),
            kind: p.kind.clone(),
            category: p.category.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub status: String,
    pub timestamp: String,
    pub received_at: String,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    pub errors: Vec<ErrorView>,
    pub pricing: Option<PricingView>,
    pub conversation_id: Option<String>,
    pub raw: Box<RawValue>,
}

impl From<&StatusEvent> for StatusView {
    fn from(s: &StatusEvent) -> Self {
        StatusView {
            status: s.status.clone(),
            timestamp: rfc3339(s.timestamp),
            received_at: rfc3339_ms(s.received_at_ms),
            recipient_id: s.customer.wa_id.clone(),
            recipient_user_id: s.customer.user_id.clone(),
            errors: s.errors.iter().map(ErrorView::from).collect(),
            pricing: s.pricing.as_ref().map(PricingView::from),
            conversation_id: s.conversation_id.clone(),
            raw: raw_json(&s.raw),
        }
    }
}

/// A message and everything the platform said about its delivery.
#[derive(Debug, Serialize)]
pub struct MessageDetail {
    /// Absent when only statuses are known (a message sent by another system).
    pub message: Option<MessageView>,
    pub wamid: Option<String>,
    /// The monotonic outcome of `statuses`.
    pub status: Option<String>,
    /// In the order the platform timestamped them.
    pub statuses: Vec<StatusView>,
}

#[derive(Debug, Serialize)]
pub struct MarketingView {
    pub category: String,
    pub value: String,
    pub at: String,
}

#[derive(Debug, Serialize)]
pub struct CustomerView {
    pub id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub parent_user_id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub identities: Vec<String>,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub referral: Option<Referral>,
    pub referral_at: Option<String>,
    pub marketing: Option<MarketingView>,
}

impl From<CustomerRecord> for CustomerView {
    fn from(c: CustomerRecord) -> Self {
        CustomerView {
            id: c.id,
            wa_id: c.wa_id,
            user_id: c.user_id,
            parent_user_id: c.parent_user_id,
            name: c.name,
            username: c.username,
            identities: c.identities,
            first_seen_at: rfc3339(c.first_seen_at),
            last_seen_at: rfc3339(c.last_seen_at),
            referral: c.referral,
            referral_at: c.referral_at.map(rfc3339),
            marketing: c.marketing.map(|m| MarketingView {
                category: m.category,
                value: m.value,
                at: rfc3339(m.timestamp),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NumberCountersView {
    pub inbound_messages: u64,
    pub outbound_messages: u64,
    pub statuses: u64,
    pub conversations_opened: u64,
    pub open_conversations: u64,
}

#[derive(Debug, Serialize)]
pub struct NumberView {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub name: Option<String>,
    pub app: String,
    pub waba_id: Option<String>,
    pub quality_event: Option<String>,
    pub messaging_tier: Option<String>,
    pub quality_updated_at: Option<String>,
    pub last_inbound_at: Option<String>,
    pub counters: NumberCountersView,
    /// The number's dispatcher: current rate, ceiling, queue (filled in by the API layer).
    pub sending: Option<crate::outbound::dispatcher::LaneView>,
}

#[derive(Debug, Serialize)]
pub struct WebhookEventView {
    pub id: String,
    pub kind: &'static str,
    pub field: String,
    pub waba_id: String,
    pub number_id: Option<String>,
    pub event: Option<String>,
    pub detail: Option<String>,
    pub received_at: String,
    pub raw: Box<RawValue>,
}

/// The LSN of a local outbound id `o<n>`.
pub fn parse_local_id(id: &str) -> Option<Lsn> {
    id.strip_prefix('o')
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// Rank of a status in the monotonic order; `None` for values outside it.
fn status_rank(status: &str) -> Option<u8> {
    Some(match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "played" => 4,
        "failed" => u8::MAX,
        _ => return None,
    })
}

/// The outcome of a set of statuses: sent < delivered < read (< played);
/// failed is terminal; values outside the order are history only.
pub fn monotonic_status<'a>(statuses: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    statuses
        .into_iter()
        .filter_map(|s| status_rank(s).map(|r| (r, s)))
        .max_by_key(|(r, _)| *r)
        .map(|(_, s)| s)
}

pub struct Queries<'a> {
    pipeline: &'a Pipeline,
}

impl<'a> Queries<'a> {
    pub fn new(pipeline: &'a Pipeline) -> Self {
        Queries { pipeline }
    }

    fn conversation_view(&self, c: &ConversationRecord) -> ConversationView {
        let customer =
            self.pipeline
                .directory()
                .summary(&c.customer_id)
                .unwrap_or(CustomerSummary {
                    id: c.customer_id.clone(),
                    wa_id: None,
                    user_id: None,
                    name: None,
                });
        ConversationView {
            id: c.id.to_string(),
            number_id: c.number_id.clone(),
            customer: customer.into(),
            status: c.status.as_str(),
            assignee: c.assignee.clone(),
            opened_at: rfc3339(c.opened_at),
            last_message_at: rfc3339(c.last_message_at),
            last_inbound_at: c.last_inbound_at.map(rfc3339),
            window_expires_at: c.window_expires_at.map(rfc3339),
            unread: c.unread,
            messages: c.messages,
        }
    }

    /// Conversations, newest activity first.
    pub fn conversations(
        &self,
        number: Option<&str>,
        status: Option<&str>,
        limit_param: Option<usize>,
        cursor_param: Option<&str>,
    ) -> Result<Page<ConversationView>, QueryError> {
        let limit = limit(limit_param)?;
        let after = parse_cursor(cursor_param)?;
        let status = match status {
            None => None,
            Some(s) => Some(
                ConversationStatus::parse(s).ok_or_else(|| QueryError::Invalid {
                    field: "status",
                    message: format!(
                        "unknown status {s:?} (unassigned, queued, assigned, resolved)"
                    ),
                })?,
            ),
        };
        let filter = ConversationFilter {
            number_id: number.map(Into::into),
            status,
        };
        // Each shard gives its best `limit + 1`; the merge keeps the best overall.
        let mut rows: Vec<ConversationRecord> = Vec::new();
        for shard in self.pipeline.shards() {
            rows.extend(shard.page(after, &filter, limit + 1).into_iter().cloned());
        }
        rows.sort_by_key(|c| std::cmp::Reverse((c.last_message_at, c.id)));
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|c| cursor(c.last_message_at, c.id))
        } else {
            None
        };
        Ok(Page {
            items: rows.iter().map(|c| self.conversation_view(c)).collect(),
            next_cursor,
        })
    }

    fn find_conversation(&self, id: &str) -> Result<ConversationRecord, QueryError> {
        let id: u64 = id
            .parse()
            .map_err(|_| QueryError::NotFound("conversation"))?;
        self.pipeline
            .shards()
            .find_map(|s| s.get(id).cloned())
            .ok_or(QueryError::NotFound("conversation"))
    }

    pub fn conversation(&self, id: &str) -> Result<ConversationView, QueryError> {
        Ok(self.conversation_view(&self.find_conversation(id)?))
    }

    /// An archived event, read back from the journal.
    fn load(&self, loc: RecordLoc) -> Result<Event, QueryError> {
        let r = self.pipeline.journal_reader().read(loc)?;
        Event::decode(r.kind, r.version, &r.payload).map_err(|e| QueryError::Record(e.to_string()))
    }

    /// Every status of `wamid` (lsn, status), in the order the platform timestamped them.
    fn load_statuses(&self, wamid: &str) -> Result<Vec<(Lsn, StatusEvent)>, QueryError> {
        let mut out = Vec::new();
        for (lsn, loc) in self.pipeline.store().statuses(wamid)? {
            match self.load(loc)? {
                Event::Status(s) => out.push((lsn, s)),
                other => {
                    return Err(QueryError::Record(format!(
                        "expected a status, found record kind {}",
                        other.kind()
                    )))
                }
            }
        }
        out.sort_by_key(|(lsn, s)| (s.timestamp, status_rank(&s.status).unwrap_or(0), *lsn));
        Ok(out)
    }

    fn message_view(&self, conv_id: u64, m: &MessageEvent) -> Result<MessageView, QueryError> {
        let status = match m.direction {
            Direction::In => Some("received".to_string()),
            Direction::Out => {
                let statuses = self.load_statuses(&m.wamid)?;
                monotonic_status(statuses.iter().map(|(_, s)| s.status.as_str())).map(Into::into)
            }
        };
        Ok(MessageView {
            id: m.wamid.clone(),
            wamid: Some(m.wamid.clone()),
            conversation_id: conv_id.to_string(),
            direction: m.direction.as_str(),
            kind: m.kind.clone(),
            text: m.text.clone(),
            media: m.media.as_ref().map(|x| MediaView {
                id: x.id.clone(),
                mime_type: x.mime_type.clone(),
                sha256: x.sha256.clone(),
                filename: x.filename.clone(),
                url: x.url.clone(),
                voice: x.voice,
                animated: x.animated,
            }),
            timestamp: rfc3339(m.timestamp),
            timestamp_valid: m.timestamp_valid,
            received_at: rfc3339_ms(m.received_at_ms),
            status,
            context_id: m.context_id.clone(),
            referral: m.referral.clone(),
            priority: None,
            error: None,
            raw: raw_json(&m.raw),
        })
    }

    /// An outbound message: its request and what became of it.
    fn outbound_view(&self, lsn: Lsn, req: &OutboundRequest) -> Result<MessageView, QueryError> {
        let store = self.pipeline.store();
        let entry = store.outbox(lsn)?;
        let (status, wamid, error) = match entry.as_ref().map(|e| &e.state) {
            Some(OutboxState::Sent { wamid }) => {
                let statuses = self.load_statuses(wamid)?;
                let status = monotonic_status(statuses.iter().map(|(_, s)| s.status.as_str()))
                    .unwrap_or("accepted");
                (status.to_string(), Some(wamid.clone()), None)
            }
            Some(OutboxState::Failed {
                code,
                title,
                reason,
            }) => (
                "failed".to_string(),
                None,
                Some(SendErrorView {
                    code: *code,
                    title: title.clone(),
                    reason: reason.clone(),
                }),
            ),
            Some(OutboxState::Queued) | None => {
                let started = store.pending(lsn)?.is_some_and(|p| p.started > 0);
                (
                    (if started { "sending" } else { "queued" }).to_string(),
                    None,
                    None,
                )
            }
        };
        Ok(MessageView {
            id: format!("o{lsn}"),
            wamid,
            conversation_id: entry.map(|e| e.conv_id.to_string()).unwrap_or_default(),
            direction: "out",
            kind: req.kind.clone(),
            text: req.text.clone(),
            media: None,
            timestamp: rfc3339_ms(req.created_at_ms),
            timestamp_valid: true,
            received_at: rfc3339_ms(req.created_at_ms),
            status: Some(status),
            context_id: req.reply_to.clone(),
            referral: None,
            priority: Some(req.priority.as_str()),
            error,
            raw: raw_json(&req.body),
        })
    }

    /// The message whose record (written at `lsn`) is at `loc`.
    fn view_at(&self, conv_id: u64, lsn: Lsn, loc: RecordLoc) -> Result<MessageView, QueryError> {
        match self.load(loc)? {
            Event::Message(m) => self.message_view(conv_id, &m),
            Event::Outbound(o) => self.outbound_view(lsn, &o),
            other => Err(QueryError::Record(format!(
                "expected a message, found record kind {}",
                other.kind()
            ))),
        }
    }

    /// A conversation's messages in time order.
    pub fn conversation_messages(
        &self,
        id: &str,
        limit_param: Option<usize>,
        cursor_param: Option<&str>,
    ) -> Result<Page<MessageView>, QueryError> {
        let conv = self.find_conversation(id)?;
        let limit = limit(limit_param)?;
        let after = parse_cursor(cursor_param)?;
        let store = self.pipeline.store();
        // The tail first: see `Store::timeline`.
        let tail = self.pipeline.timeline_tail(&conv);
        let mut entries = store.timeline(conv.id, &tail, after, limit + 1)?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let mut items = Vec::with_capacity(entries.len());
        for (_, lsn, loc) in &entries {
            items.push(self.view_at(conv.id, *lsn, *loc)?);
        }
        let next_cursor = if more {
            entries.last().map(|(ts, lsn, _)| cursor(*ts, *lsn))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// A message by wamid, or an outbound message by its local id `o<n>`,
    /// with the platform's status history.
    pub fn message(&self, id: &str) -> Result<MessageDetail, QueryError> {
        let store = self.pipeline.store();
        let mut message = match parse_local_id(id) {
            Some(lsn) => {
                let entry = store.outbox(lsn)?.ok_or(QueryError::NotFound("message"))?;
                Some(self.view_at(entry.conv_id, lsn, entry.loc.into())?)
            }
            None => match store.message(id)? {
                Some((_, index)) => {
                    Some(self.view_at(index.conv_id, index.lsn, index.loc.into())?)
                }
                None => None,
            },
        };
        let wamid = match &message {
            Some(m) => m.wamid.clone(),
            None => Some(id.to_string()),
        };
        let statuses = match &wamid {
            Some(w) => self.load_statuses(w)?,
            None => Vec::new(),
        };
        if message.is_none() && statuses.is_empty() {
            return Err(QueryError::NotFound("message"));
        }
        let fresh = monotonic_status(statuses.iter().map(|(_, s)| s.status.as_str()));
        let status = match &message {
            // The view read its statuses a moment before `statuses` was loaded; a status
            // applied in between must not leave the answer behind its own history.
            Some(m) if m.direction == "out" => match (m.status.as_deref(), fresh) {
                (Some(seen), Some(now)) => monotonic_status([seen, now]).or(Some(now)),
                (seen, now) => seen.or(now),
            }
            .map(Into::into),
            Some(m) => m.status.clone(),
            None => fresh.map(Into::into),
        };
        if let Some(m) = message.as_mut() {
            m.status.clone_from(&status);
        }
        Ok(MessageDetail {
            message,
            wamid,
            status,
            statuses: statuses.iter().map(|(_, s)| StatusView::from(s)).collect(),
        })
    }

    pub fn customer(&self, id: &str) -> Result<CustomerView, QueryError> {
        self.pipeline
            .directory()
            .get(id)
            .map(CustomerView::from)
            .ok_or(QueryError::NotFound("customer"))
    }

    pub fn numbers(&self) -> Vec<NumberView> {
        // One set throughout, even if a config reload swaps it meanwhile.
        let numbers = self.pipeline.numbers().snapshot();
        let mut deltas =
            std::collections::HashMap::<String, crate::store::records::NumberCounters>::new();
        let mut open = std::collections::HashMap::<String, u64>::new();
        for shard in self.pipeline.shards() {
            for (number, c) in &shard.counters {
                deltas.entry(number.clone()).or_default().add(c);
            }
            for entry in numbers.iter() {
                let id = &entry.info.phone_number_id;
                *open.entry(id.clone()).or_default() += shard.open_count(id) as u64;
            }
        }
        numbers
            .checkpoint_records(&deltas)
            .into_iter()
            .zip(numbers.iter())
            .map(|(rec, entry)| NumberView {
                phone_number_id: entry.info.phone_number_id.clone(),
                display_phone_number: entry.info.display_phone_number.clone(),
                name: entry.info.name.clone(),
                app: entry.info.app.clone(),
                waba_id: entry.info.waba_id.clone(),
                quality_event: rec.quality_event,
                messaging_tier: rec.messaging_tier,
                quality_updated_at: rec.quality_updated_at.map(rfc3339),
                last_inbound_at: rec.counters.last_inbound_at.map(rfc3339),
                counters: NumberCountersView {
                    inbound_messages: rec.counters.inbound_messages,
                    outbound_messages: rec.counters.outbound_messages,
                    statuses: rec.counters.statuses,
                    conversations_opened: rec.counters.conversations_opened,
                    open_conversations: open.get(&entry.info.phone_number_id).copied().unwrap_or(0),
                },
                sending: None,
            })
            .collect()
    }

    /// Stored account-level, preference, unrouted and invalid events, newest first.
    pub fn webhook_events(
        &self,
        kind: Option<&str>,
        limit_param: Option<usize>,
        cursor_param: Option<&str>,
    ) -> Result<Page<WebhookEventView>, QueryError> {
        use crate::event::kind as k;
        let limit = limit(limit_param)?;
        let kind_filter = match kind {
            None => None,
            Some("account") => Some(k::ACCOUNT),
            Some("preference") => Some(k::PREFERENCE),
            Some("unrouted") => Some(k::UNROUTED),
            Some("invalid") => Some(k::INVALID),
            Some(other) => {
                return Err(QueryError::Invalid {
                    field: "kind",
                    message: format!(
                        "unknown kind {other:?} (account, preference, unrouted, invalid)"
                    ),
                })
            }
        };
        let before = match cursor_param {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| QueryError::Invalid {
                field: "cursor",
                message: "not a cursor this API returned".into(),
            })?),
        };
        let mut events = self
            .pipeline
            .store()
            .events(before, kind_filter, limit + 1)?;
        let more = events.len() > limit;
        events.truncate(limit);
        let next_cursor = if more {
            events.last().map(|(lsn, _, _)| lsn.to_string())
        } else {
            None
        };
        let mut items = Vec::with_capacity(events.len());
        for (lsn, _, loc) in events {
            if let Some(view) = webhook_event_view(lsn, self.load(loc)?) {
                items.push(view);
            }
        }
        Ok(Page { items, next_cursor })
    }
}

impl<'a> Queries<'a> {
    /// Alerts, newest first.
    pub fn alerts(
        &self,
        limit_param: Option<usize>,
        cursor_param: Option<&str>,
    ) -> Result<Page<AlertView>, QueryError> {
        let limit = limit(limit_param)?;
        let before = parse_lsn_cursor(cursor_param)?;
        let mut found =
            self.pipeline
                .store()
                .events(before, Some(crate::event::kind::ALERT), limit + 1)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let next_cursor = if more {
            found.last().map(|(lsn, _, _)| lsn.to_string())
        } else {
            None
        };
        let mut items = Vec::with_capacity(found.len());
        for (lsn, _, loc) in found {
            if let Event::Alert(a) = self.load(loc)? {
                items.push(AlertView {
                    id: lsn.to_string(),
                    kind: a.kind,
                    number_id: a.number_id,
                    actor: a.actor,
                    detail: a.detail,
                    at: rfc3339_ms(a.at_ms),
                });
            }
        }
        Ok(Page { items, next_cursor })
    }
}

fn parse_lsn_cursor(cursor: Option<&str>) -> Result<Option<Lsn>, QueryError> {
    cursor
        .map(|c| {
            c.parse::<u64>().map_err(|_| QueryError::Invalid {
                field: "cursor",
                message: "not a cursor this API returned".into(),
            })
        })
        .transpose()
}

fn webhook_event_view(lsn: u64, ev: Event) -> Option<WebhookEventView> {
    let id = lsn.to_string();
    Some(match ev {
        Event::Account(a) => WebhookEventView {
            id,
            kind: "account",
            field: a.field,
            waba_id: a.waba_id,
            number_id: a.number_id,
            event: a.event,
            detail: a.detail,
            received_at: rfc3339_ms(a.received_at_ms),
            raw: raw_json(&a.raw),
        },
        Event::Preference(p) => WebhookEventView {
            id,
            kind: "preference",
            field: "user_preferences".into(),
            waba_id: p.waba_id,
            number_id: Some(p.number_id),
            event: Some(p.value),
            detail: Some(p.category),
            received_at: rfc3339_ms(p.received_at_ms),
            raw: raw_json(&p.raw),
        },
        Event::Unrouted(u) => WebhookEventView {
            id,
            kind: "unrouted",
            field: u.field,
            waba_id: u.waba_id,
            number_id: Some(u.number_id),
            event: Some(u.item),
            detail: None,
            received_at: rfc3339_ms(u.received_at_ms),
            raw: raw_json(&u.raw),
        },
        Event::Invalid(i) => WebhookEventView {
            id,
            kind: "invalid",
            field: i.field,
            waba_id: i.waba_id,
            number_id: i.number_id,
            event: Some(i.reason),
            detail: None,
            received_at: rfc3339_ms(i.received_at_ms),
            raw: raw_json(&i.raw),
        },
        Event::Message(_)
        | Event::Status(_)
        | Event::Outbound(_)
        | Event::SendOutcome(_)
        | Event::Alert(_)
        | Event::Routing(_) => return None,
    })
}

/// An alert for operators.
#[derive(Debug, Serialize)]
pub struct AlertView {
    pub id: String,
    /// `blocked_term`, `token_expired`, ...
    pub kind: String,
    pub number_id: Option<String>,
    pub actor: Option<String>,
    pub detail: String,
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_status_orders_and_failed_is_terminal() {
        assert_eq!(
            monotonic_status(["read", "sent", "delivered"]),
            Some("read")
        );
        assert_eq!(monotonic_status(["sent", "read"]), Some("read"));
        assert_eq!(
            monotonic_status(["read", "failed", "delivered"]),
            Some("failed")
        );
        assert_eq!(monotonic_status(["in_orbit", "deleted"]), None);
        assert_eq!(monotonic_status(["sent", "in_orbit"]), Some("sent"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1749416383), "2025-06-08T20:59:43Z");
        assert_eq!(rfc3339_ms(1749416383123), "2025-06-08T20:59:43.123Z");
    }

    #[test]
    fn cursors_roundtrip_and_garbage_is_refused() {
        assert_eq!(parse_cursor(Some(&cursor(-5, 7))).unwrap(), Some((-5, 7)));
        assert!(parse_cursor(Some("x")).is_err());
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
