//! Outbound delivery: what Switchboard sends through the Graph API, and the
//! rules it enforces before and while sending.
//!
//! The journey of an outbound message: [`Outbound::send`] checks the number,
//! the payload ([`request`]), the sensitive-word filter ([`filter`]), the
//! customer's marketing opt-out and the 24-hour window; journals an
//! `OutboundRequest` (durable and applied before the 202: it is in the
//! conversation and the outbox); and hands it to its number's
//! [`dispatcher`], which paces it ([`limiter`]) and sends it ([`graph`]).
//!
//! Invariants: nothing refused is queued or sent; every refusal has a
//! machine-readable code; the checks that depend on state (window, opt-out)
//! use the state as applied when the request is made — the platform remains
//! the final judge (131047 fails the message as `window_closed`).

pub mod dispatcher;
pub mod filter;
pub mod graph;
pub mod limiter;
pub mod request;

use std::sync::Arc;

use crate::event::{AlertEvent, CustomerRef, Event, OutboundRequest, Priority};
use crate::pipeline::checkpoint::now_ms;
use crate::pipeline::ingest::{Ingest, IngestError};
use dispatcher::{DispatchError, Dispatcher, Item};
use request::{Invalid, Recipient, SendRequest};

/// A sensitive-word check: the term a text contains, if any.
pub trait TermCheck: Send + Sync {
    fn blocked_term(&self, text: &str) -> Option<String>;
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no number {0} is configured")]
    UnknownNumber(String),
    #[error("number {0} has no access token, so it cannot send")]
    CannotSend(String),
    #[error("{0}")]
    Invalid(Invalid),
    #[error("the 24-hour customer-service window is closed; only a template may be sent")]
    WindowClosed,
    #[error("the message contains the blocked term {term:?}")]
    BlockedTerm { term: String },
    #[error("the customer opted out of marketing messages")]
    OptedOut,
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Ingest(IngestError),
}

impl Refusal {
    /// Machine-readable code (also the metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownNumber(_) => "unknown_number",
            Refusal::CannotSend(_) => "number_cannot_send",
            Refusal::Invalid(_) => "invalid_payload",
            Refusal::WindowClosed => "window_closed",
            Refusal::BlockedTerm { .. } => "blocked_term",
            Refusal::OptedOut => "opted_out",
            Refusal::Full(_) => "outbox_full",
            Refusal::Ingest(_) => "unavailable",
        }
    }
}

impl From<DispatchError> for Refusal {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::UnknownNumber(n) => Refusal::UnknownNumber(n),
            DispatchError::NoToken(n) => Refusal::CannotSend(n),
            full @ DispatchError::Full(..) => Refusal::Full(full.to_string()),
        }
    }
}

/// Where a message goes: named explicitly, or a conversation's number and customer.
pub enum Destination<'a> {
    Explicit,
    Conversation {
        number_id: &'a str,
        customer_id: &'a str,
    },
}

/// A queued message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Queued {
    pub id: String,
    pub status: &'static str,
}

pub struct Outbound {
    ingest: Ingest,
    dispatcher: Arc<Dispatcher>,
    terms: Arc<dyn TermCheck>,
}

impl Outbound {
    pub fn new(ingest: Ingest, dispatcher: Arc<Dispatcher>, terms: Arc<dyn TermCheck>) -> Outbound {
        Outbound {
            ingest,
            dispatcher,
            terms,
        }
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        metrics::counter!(crate::telemetry::names::OUTBOUND_REFUSED, "reason" => r.code())
            .increment(1);
        r
    }

    /// Check, journal and queue a message; `actor` is who asks.
    pub async fn send(
        &self,
        req: SendRequest,
        dest: Destination<'_>,
        actor: &str,
        default_priority: Priority,
    ) -> Result<Queued, Refusal> {
        let prepared = self.prepare(req, dest, actor, default_priority).await?;
        let mut queued = self.commit(vec![prepared]).await?;
        queued
            .pop()
            .unwrap_or(Err(Refusal::Ingest(IngestError::Closed)))
    }

    /// Check every message, journal the acceptable ones together (one
    /// durable write) and queue them. Each message gets its own result; the
    /// outer error means nothing was queued (the journal refused the batch).
    pub async fn send_batch(
        &self,
        reqs: Vec<SendRequest>,
        actor: &str,
        default_priority: Priority,
    ) -> Result<Vec<Result<Queued, Refusal>>, Refusal> {
        let mut results: Vec<Option<Result<Queued, Refusal>>> = Vec::with_capacity(reqs.len());
        let mut prepared = Vec::new();
        let mut slots = Vec::new();
        for req in reqs {
            match self
                .prepare(req, Destination::Explicit, actor, default_priority)
                .await
            {
                Ok(p) => {
                    slots.push(results.len());
                    prepared.push(p);
                    results.push(None);
                }
                Err(r) => results.push(Some(Err(r))),
            }
        }
        let queued = self.commit(prepared).await?;
        for (slot, q) in slots.into_iter().zip(queued) {
            results[slot] = Some(q);
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Refusal::Ingest(IngestError::Closed))))
            .collect())
    }

    /// Journal `prepared` in one write, then hand each to its number's lane.
    async fn commit(
        &self,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<Result<Queued, Refusal>>, Refusal> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let events = prepared
            .iter()
            .map(|p| Event::Outbound(p.request.clone()))
            .collect();
        let receipt = self
            .ingest
            .submit(events)
            .await
            .map_err(|e| self.refuse(Refusal::Ingest(e)))?;
        let mut out = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.into_iter().enumerate() {
            let Some(&loc) = receipt.locs.get(i) else {
                out.push(Err(Refusal::Ingest(IngestError::Closed)));
                continue;
            };
            let lsn = receipt.first_lsn + i as u64;
            let item = Item {
                lsn,
                loc,
                recipient: p.recipient,
                priority: p.request.priority,
                created_at_ms: p.request.created_at_ms,
                attempt: 0,
            };
            out.push(
                self.dispatcher
                    .enqueue(&p.request.number_id, item)
                    .map(|()| Queued {
                        id: format!("o{lsn}"),
                        status: "queued",
                    })
                    .map_err(|e| self.refuse(e.into())),
            );
        }
        Ok(out)
    }

    /// Every check a message must pass before it may be queued.
    async fn prepare(
        &self,
        req: SendRequest,
        dest: Destination<'_>,
        actor: &str,
        default_priority: Priority,
    ) -> Result<Prepared, Refusal> {
        let pipeline = self.ingest.pipeline();
        let (number_id, to) = match dest {
            Destination::Explicit => {
                let number = req.number_id.clone().ok_or(Refusal::Invalid(Invalid {
                    field: "number_id",
                    message: "is required".into(),
                }));
                let to = req.to.clone().ok_or(Refusal::Invalid(Invalid {
                    field: "to",
                    message: "is required".into(),
                }));
                (
                    number.map_err(|r| self.refuse(r))?,
                    to.map_err(|r| self.refuse(r))?,
                )
            }
            Destination::Conversation {
                number_id,
                customer_id,
            } => {
                if req.number_id.is_some() || req.to.is_some() {
                    let bad = Invalid {
                        field: "to",
                        message:
                            "a reply goes to the conversation's customer; omit number_id and to"
                                .into(),
                    };
                    return Err(self.refuse(Refusal::Invalid(bad)));
                }
                let c = pipeline.directory().get(customer_id);
                let to = c
                    .and_then(|c| c.user_id.or(c.wa_id))
                    .unwrap_or_else(|| customer_id.to_string());
                (number_id.to_string(), to)
            }
        };
        self.dispatcher
            .check(&number_id)
            .map_err(|e| self.refuse(e.into()))?;
        let recipient = Recipient::parse(&to).map_err(|e| self.refuse(Refusal::Invalid(e)))?;
        let built = req
            .build(&recipient, default_priority)
            .map_err(|e| self.refuse(Refusal::Invalid(e)))?;
        if let Some(term) = built
            .readable
            .iter()
            .find_map(|t| self.terms.blocked_term(t))
        {
            let alert = AlertEvent {
                kind: "blocked_term".into(),
                number_id: Some(number_id.clone()),
                actor: Some(actor.to_string()),
                detail: format!(
                    "message to {} refused: it contains the blocked term {term:?}",
                    recipient.as_str()
                ),
                route: crate::pipeline::route_hash(&number_id, ""),
                at_ms: now_ms(),
            };
            if let Err(e) = self.ingest.submit(vec![Event::Alert(alert)]).await {
                tracing::error!(error = %e, "recording a blocked-term alert failed");
            }
            return Err(self.refuse(Refusal::BlockedTerm { term }));
        }
        let customer = match &recipient {
            Recipient::Phone(p) => CustomerRef {
                wa_id: Some(p.clone()),
                ..Default::default()
            },
            Recipient::UserId(u) => CustomerRef {
                user_id: Some(u.clone()),
                ..Default::default()
            },
        };
        let home = pipeline.directory().home_for(&customer);
        if built.category.as_deref() == Some("marketing") {
            let stopped = pipeline
                .directory()
                .get(&home)
                .and_then(|c| c.marketing)
                .is_some_and(|m| m.value == "stop");
            if stopped {
                return Err(self.refuse(Refusal::OptedOut));
            }
        }
        if built.free_form {
            let open = pipeline
                .open_conversation(&number_id, &home)
                .and_then(|c| c.window_expires_at)
                .is_some_and(|expires| expires > now_ms() / 1000);
            if !open {
                return Err(self.refuse(Refusal::WindowClosed));
            }
        }
        let created_at_ms = now_ms();
        let request = OutboundRequest {
            number_id: number_id.clone(),
            route: 0,
            customer,
            kind: built.kind,
            priority: built.priority,
            body: built.body.to_string(),
            text: built.text,
            template: built.template,
            category: built.category,
            reply_to: req.reply_to,
            submitted_by: actor.to_string(),
            created_at_ms,
        };
        Ok(Prepared {
            request,
            recipient: recipient.as_str().to_string(),
        })
    }
}

/// A message that passed every check, not yet journaled.
struct Prepared {
    request: OutboundRequest,
    recipient: String,
}
