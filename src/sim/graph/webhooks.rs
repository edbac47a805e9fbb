//! Webhooks from the simulator to the daemon: the fate of each accepted send (its status
//! plan), Meta's wire format for statuses, the due-time scheduler that batches them, and the
//! signed poster with Meta-like retries (also used for generated inbound messages).
//!
//! Invariants:
//! - bounded: at most `max_pending` statuses wait (more are dropped and counted), at most
//!   `max_in_flight` status POSTs run at once (retries keep their slot), every POST is bounded
//!   by `request_timeout`, a POST carries at most `max_batch` statuses;
//! - a status's `timestamp` is when it happened; posting order may differ on purpose
//!   (out-of-order and duplicate fractions), never by accident: the scheduler posts in due
//!   order and, with one POST in flight, arrival order equals due order;
//! - every body is compact JSON in Meta's style (non-ASCII as `\uXXXX`, `/` as `\/`) and is
//!   signed over exactly the bytes sent;
//! - on shutdown nothing new is posted and in-flight POSTs are abandoned; pending statuses are
//!   dropped (a simulator owes nobody durability).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::api::{Category, Recipient, OUTSIDE_WINDOW_DETAILS};
use super::config::{DelayRange, StatusBehaviour, WebhookTarget};
use super::{stopped, Rng, SimError};
use crate::http::tls::{client_config, load_ca, ALPN_HTTP11};
use crate::sim::client::HttpsClient;
use crate::whatsapp::sign;

/// Meta's crawler user agent, as its webhook requests carry it.
const META_USER_AGENT: &str = "facebookexternalua";
/// How much later a duplicate copy of a status is posted.
const DUPLICATE_DELAY: DelayRange = DelayRange::ms(100, 1000);
/// How much later than its `read` an out-of-order `delivered` is posted.
const LATE_DELIVERED: DelayRange = DelayRange::ms(10, 50);

/// Rewrites serialised JSON in Meta's escaping style: every non-ASCII character becomes
/// `\uXXXX` (UTF-16 units) and `/` becomes `\/`. Both only occur inside strings in
/// serialised JSON, so this is safe on whole documents.
pub fn meta_wire(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 4);
    for c in json.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusKind {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl StatusKind {
    fn as_str(self) -> &'static str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
            StatusKind::Failed => "failed",
        }
    }
}

/// PMP pricing of a send, decided when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pricing {
    pub billable: bool,
    /// `regular`, `free_customer_service` or `free_entry_point`.
    pub kind: &'static str,
    /// `service` or a template category.
    pub category: &'static str,
}

impl Pricing {
    /// Per-message pricing since July 2025: non-templates in the window are free service
    /// messages; utility templates in the window are free; a Click-to-WhatsApp entry point
    /// makes everything free for 72 h; other templates are billed by category.
    pub fn of(template: Option<Category>, in_window: bool, entry_point: bool) -> Pricing {
        let category = template.map_or("service", Category::as_str);
        if entry_point {
            return Pricing {
                billable: false,
                kind: "free_entry_point",
                category,
            };
        }
        match template {
            None => Pricing {
                billable: false,
                kind: "free_customer_service",
                category,
            },
            Some(Category::Utility) if in_window => Pricing {
                billable: false,
                kind: "free_customer_service",
                category,
            },
            Some(_) => Pricing {
                billable: true,
                kind: "regular",
                category,
            },
        }
    }
}

/// One status to post.
#[derive(Debug, Clone)]
pub(crate) struct StatusItem {
    /// Index of our number.
    pub number: usize,
    pub wamid: Arc<str>,
    pub status: StatusKind,
    /// Unix seconds when it happened.
    pub timestamp: i64,
    pub recipient: Recipient,
    pub pricing: Option<Pricing>,
    /// Failed statuses: the error code.
    pub error: Option<i64>,
}

impl StatusItem {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": &*self.wamid,
            "status": self.status.as_str(),
            "timestamp": self.timestamp.to_string(),
        });
        match &self.recipient {
            Recipient::Phone(p) => v["recipient_id"] = json!(p),
            Recipient::UserId(u) => v["recipient_user_id"] = json!(u),
        }
        if let Some(p) = self.pricing {
            v["pricing"] = json!({
                "billable": p.billable,
                "pricing_model": "PMP",
                "type": p.kind,
                "category": p.category,
            });
        }
        if let Some(code) = self.error {
            let (title, details) = error_text(code);
            v["errors"] = json!([{
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": details},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }]);
        }
        v
    }
}

fn error_text(code: i64) -> (&'static str, &'static str) {
    match code {
        131026 => (
            "Message undeliverable",
            "Message Undeliverable: the recipient may not be on WhatsApp or may not have accepted the latest terms.",
        ),
        131047 => ("Re-engagement message", OUTSIDE_WINDOW_DETAILS),
        131049 => (
            "This message was not delivered to maintain healthy ecosystem engagement.",
            "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
        ),
        131050 => (
            "User has stopped marketing messages",
            "Unable to deliver the message: the user has stopped marketing messages.",
        ),
        _ => ("Message failed to send", "Message failed to send."),
    }
}

/// What happens to one accepted send.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Posted (and answered) before the send's HTTP 200.
    pub early: Option<StatusItem>,
    /// (post after, status), relative to the send.
    pub scheduled: Vec<(Duration, StatusItem)>,
}

/// Decides a send's statuses. `base` carries everything but kind and timestamp; `now_ms` is
/// the send's wall-clock time (Unix ms). `window_failure`: the send is reported `failed`
/// with 131047 and nothing else.
pub(crate) fn plan(
    b: &StatusBehaviour,
    rng: &mut Rng,
    base: &StatusItem,
    now_ms: i64,
    window_failure: bool,
) -> Plan {
    let at = |offset: Duration, status: StatusKind, error: Option<i64>| StatusItem {
        status,
        timestamp: (now_ms + offset.as_millis() as i64) / 1000,
        pricing: match status {
            StatusKind::Sent | StatusKind::Delivered => base.pricing,
            _ => None,
        },
        error,
        ..base.clone()
    };
    let mut plan = Plan::default();
    if window_failure {
        let t = rng.delay(b.sent_delay);
        plan.scheduled
            .push((t, at(t, StatusKind::Failed, Some(131047))));
    } else {
        let early = rng.chance(b.sent_before_response_fraction);
        let sent_at = if early {
            plan.early = Some(at(Duration::ZERO, StatusKind::Sent, None));
            Duration::ZERO
        } else {
            let t = rng.delay(b.sent_delay);
            plan.scheduled.push((t, at(t, StatusKind::Sent, None)));
            t
        };
        let next = sent_at + rng.delay(b.delivered_delay);
        if rng.chance(b.fail_fraction) {
            plan.scheduled
                .push((next, at(next, StatusKind::Failed, Some(b.fail_code))));
        } else if rng.chance(b.read_fraction) {
            let read_at = next + rng.delay(b.read_delay);
            let delivered_posted = if rng.chance(b.out_of_order_fraction) {
                read_at + rng.delay(LATE_DELIVERED)
            } else {
                next
            };
            plan.scheduled
                .push((delivered_posted, at(next, StatusKind::Delivered, None)));
            plan.scheduled
                .push((read_at, at(read_at, StatusKind::Read, None)));
        } else {
            plan.scheduled
                .push((next, at(next, StatusKind::Delivered, None)));
        }
    }
    let mut copies = Vec::new();
    if let Some(early) = &plan.early {
        if rng.chance(b.duplicate_fraction) {
            copies.push((rng.delay(DUPLICATE_DELAY), early.clone()));
        }
    }
    for (t, item) in &plan.scheduled {
        if rng.chance(b.duplicate_fraction) {
            copies.push((*t + rng.delay(DUPLICATE_DELAY), item.clone()));
        }
    }
    plan.scheduled.extend(copies);
    plan
}

/// Webhook counters, as [`SimStats`](super::SimStats) shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Status POSTs the target answered 200 (after retries).
    pub posted_ok: u64,
    /// Status POSTs given up after the last retry.
    pub posted_failed: u64,
    /// Repeated attempts (status and inbound POSTs).
    pub retries: u64,
    /// Statuses carried by POSTs answered 200.
    pub statuses_posted: u64,
    /// Statuses dropped because `max_pending` were waiting.
    pub statuses_dropped: u64,
    /// `sent` statuses answered before their send's HTTP 200.
    pub sent_before_response: u64,
    /// The most statuses one POST carried.
    pub largest_batch: u64,
    /// Statuses waiting now.
    pub pending: u64,
}

#[derive(Default)]
struct Counters {
    posted_ok: AtomicU64,
    posted_failed: AtomicU64,
    retries: AtomicU64,
    statuses_posted: AtomicU64,
    statuses_dropped: AtomicU64,
    sent_before_response: AtomicU64,
    largest_batch: AtomicU64,
}

/// A status waiting for its time; ordered earliest first in the heap.
struct Due {
    at: Instant,
    seq: u64,
    item: StatusItem,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Queue {
    heap: BinaryHeap<Due>,
    seq: u64,
}

/// The webhook side of a simulator: target, client, queue and counters.
pub(crate) struct Webhooks {
    /// Replaceable at runtime: a test learns the daemon's address only after the daemon,
    /// which needs the simulator's address, has started.
    endpoint: RwLock<Arc<Endpoint>>,
    /// (phone_number_id, display_phone_number) by number index.
    numbers: Vec<(String, String)>,
    behaviour: StatusBehaviour,
    queue: Mutex<Queue>,
    notify: Notify,
    permits: Arc<Semaphore>,
    counters: Counters,
}

/// Where posts go and the client that reaches it.
struct Endpoint {
    target: WebhookTarget,
    client: HttpsClient,
}

impl Endpoint {
    fn new(target: WebhookTarget, behaviour: &StatusBehaviour) -> Result<Self, SimError> {
        let tls = match &target.tls {
            None => None,
            Some(ca) => {
                let roots = load_ca(ca)?;
                let name = ServerName::try_from(target.server_name.clone()).map_err(|_| {
                    SimError::Config(format!(
                        "{:?} is not a valid TLS server name",
                        target.server_name
                    ))
                })?;
                Some((client_config(&roots, &[ALPN_HTTP11])?, name))
            }
        };
        let client = HttpsClient::new(target.addr, tls, false)
            .with_request_timeout(behaviour.request_timeout);
        Ok(Endpoint { target, client })
    }
}

impl Webhooks {
    pub fn new(
        target: WebhookTarget,
        numbers: Vec<(String, String)>,
        behaviour: StatusBehaviour,
    ) -> Result<Self, SimError> {
        Ok(Webhooks {
            endpoint: RwLock::new(Arc::new(Endpoint::new(target, &behaviour)?)),
            numbers,
            permits: Arc::new(Semaphore::new(behaviour.max_in_flight)),
            behaviour,
            queue: Mutex::new(Queue {
                heap: BinaryHeap::new(),
                seq: 0,
            }),
            notify: Notify::new(),
            counters: Counters::default(),
        })
    }

    /// Points later posts (including ones already queued) at `target`.
    pub fn retarget(&self, target: WebhookTarget) -> Result<(), SimError> {
        let endpoint = Endpoint::new(target, &self.behaviour)?;
        *self.endpoint.write() = Arc::new(endpoint);
        Ok(())
    }

    fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.read().clone()
    }

    pub fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookStats {
            posted_ok: load(&c.posted_ok),
            posted_failed: load(&c.posted_failed),
            retries: load(&c.retries),
            statuses_posted: load(&c.statuses_posted),
            statuses_dropped: load(&c.statuses_dropped),
            sent_before_response: load(&c.sent_before_response),
            largest_batch: load(&c.largest_batch),
            pending: self.queue.lock().heap.len() as u64,
        }
    }

    /// Queues statuses to be posted `after` from `now`; drops (and counts) what does not fit.
    pub fn schedule(&self, now: Instant, items: Vec<(Duration, StatusItem)>) {
        let mut q = self.queue.lock();
        for (after, item) in items {
            if q.heap.len() >= self.behaviour.max_pending {
                self.counters
                    .statuses_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.seq += 1;
            let seq = q.seq;
            q.heap.push(Due {
                at: now + after,
                seq,
                item,
            });
        }
        drop(q);
        self.notify.notify_one();
    }

    fn take_due(&self, now: Instant) -> Vec<StatusItem> {
        let mut q = self.queue.lock();
        let mut batch = Vec::new();
        while batch.len() < self.behaviour.max_batch {
            match q.heap.peek() {
                Some(d) if d.at <= now => {
                    if let Some(d) = q.heap.pop() {
                        batch.push(d.item);
                    }
                }
                _ => break,
            }
        }
        batch
    }

    /// The scheduler: posts statuses as they fall due until `stop`.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut posts = JoinSet::new();
        'run: loop {
            while posts.try_join_next().is_some() {}
            let next = self.queue.lock().heap.peek().map(|d| d.at);
            let notified = self.notify.notified();
            tokio::select! {
                biased;
                _ = stopped(stop.clone()) => break,
                _ = notified => continue,
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
            if !self.behaviour.batch_linger.is_zero() {
                tokio::select! {
                    biased;
                    _ = stopped(stop.clone()) => break,
                    _ = sleep(self.behaviour.batch_linger) => {}
                }
            }
            loop {
                let batch = self.take_due(Instant::now());
                if batch.is_empty() {
                    break;
                }
                let permit = tokio::select! {
                    biased;
                    _ = stopped(stop.clone()) => break 'run,
                    p = self.permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'run,
                    },
                };
                let this = self.clone();
                let stop = stop.clone();
                posts.spawn(async move {
                    this.post_statuses(&batch, stop).await;
                    drop(permit);
                });
            }
        }
        posts.shutdown().await;
    }

    async fn post_statuses(&self, batch: &[StatusItem], stop: watch::Receiver<bool>) -> bool {
        let n = batch.len() as u64;
        self.counters.largest_batch.fetch_max(n, Ordering::Relaxed);
        let ok = self.post(self.statuses_body(batch), stop).await.is_ok();
        if ok {
            self.counters.posted_ok.fetch_add(1, Ordering::Relaxed);
            self.counters
                .statuses_posted
                .fetch_add(n, Ordering::Relaxed);
        } else {
            self.counters.posted_failed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Posts a `sent` status before the send's answer: waits for a POST slot and the target's
    /// answer, bounded by `request_timeout` overall. Falls back to the queue when that fails.
    pub async fn post_early(&self, item: StatusItem, stop: watch::Receiver<bool>) {
        let bound = self.behaviour.request_timeout;
        let attempt = async {
            let _permit = self.permits.acquire().await.ok()?;
            let body = self.statuses_body(std::slice::from_ref(&item));
            // One attempt: retries would hold the send's answer back for seconds.
            self.post_once(body, &stop).await.ok()
        };
        let ok = matches!(timeout(bound, attempt).await, Ok(Some(())));
        if ok {
            self.counters.posted_ok.fetch_add(1, Ordering::Relaxed);
            self.counters
                .statuses_posted
                .fetch_add(1, Ordering::Relaxed);
            self.counters
                .sent_before_response
                .fetch_add(1, Ordering::Relaxed);
            self.counters.largest_batch.fetch_max(1, Ordering::Relaxed);
        } else {
            self.schedule(Instant::now(), vec![(Duration::ZERO, item)]);
        }
    }

    /// One webhook body carrying `batch`, grouped into one change per number.
    pub fn statuses_body(&self, batch: &[StatusItem]) -> String {
        let mut groups: Vec<(usize, Vec<Value>)> = Vec::new();
        for item in batch {
            match groups.iter_mut().find(|(n, _)| *n == item.number) {
                Some((_, list)) => list.push(item.to_json()),
                None => groups.push((item.number, vec![item.to_json()])),
            }
        }
        let changes: Vec<Value> = groups
            .into_iter()
            .map(|(n, statuses)| {
                json!({
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": self.metadata(n),
                        "statuses": statuses,
                    },
                    "field": "messages",
                })
            })
            .collect();
        self.envelope(changes)
    }

    /// `value.metadata` of number `n`.
    pub fn metadata(&self, n: usize) -> Value {
        let (id, display) = self
            .numbers
            .get(n)
            .map(|(i, d)| (i.as_str(), d.as_str()))
            .unwrap_or(("", ""));
        json!({"display_phone_number": display, "phone_number_id": id})
    }

    /// The whole body around `changes`, in Meta's wire style.
    pub fn envelope(&self, changes: Vec<Value>) -> String {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": self.endpoint().target.waba_id, "changes": changes}],
        });
        meta_wire(&body.to_string())
    }

    /// Posts `body` signed, retrying non-200 answers and transport errors `retries` times with
    /// doubling backoff. Gives up at `stop`.
    pub async fn post(&self, body: String, stop: watch::Receiver<bool>) -> Result<(), SimError> {
        let mut backoff = self.behaviour.retry_backoff;
        let mut attempt = 0;
        loop {
            let result = self.post_once(body.clone(), &stop).await;
            if result.is_ok() || attempt >= self.behaviour.retries || *stop.borrow() {
                return result;
            }
            attempt += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                biased;
                _ = stopped(stop.clone()) => return Err(SimError::Stopped),
                _ = sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2);
        }
    }

    async fn post_once(&self, body: String, stop: &watch::Receiver<bool>) -> Result<(), SimError> {
        let endpoint = self.endpoint();
        let signature = sign(endpoint.target.app_secret.as_bytes(), body.as_bytes());
        let headers = [
            ("content-type", "application/json"),
            ("user-agent", META_USER_AGENT),
            ("x-hub-signature-256", signature.as_str()),
        ];
        let request = endpoint
            .client
            .request(Method::POST, &endpoint.target.path, &headers, body);
        let (status, _, _) = tokio::select! {
            biased;
            _ = stopped(stop.clone()) => return Err(SimError::Stopped),
            r = request => r?,
        };
        if status == http::StatusCode::OK {
            Ok(())
        } else {
            Err(SimError::WebhookStatus(status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> StatusItem {
        StatusItem {
            number: 0,
            wamid: Arc::from("wamid.T"),
            status: StatusKind::Sent,
            timestamp: 0,
            recipient: Recipient::Phone("1".into()),
            pricing: Some(Pricing::of(None, true, false)),
            error: None,
        }
    }

    fn kinds(plan: &Plan) -> Vec<(&'static str, Duration)> {
        let mut v: Vec<_> = plan
            .scheduled
            .iter()
            .map(|(t, i)| (i.status.as_str(), *t))
            .collect();
        v.sort_by_key(|(_, t)| *t);
        v
    }

    #[test]
    fn plans_follow_the_fractions() {
        let mut rng = Rng::new(1);
        let mut b = StatusBehaviour::orderly();
        let p = plan(&b, &mut rng, &base(), 1_000_000, false);
        let k: Vec<_> = kinds(&p).into_iter().map(|(k, _)| k).collect();
        assert_eq!(k, ["sent", "delivered", "read"]);
        assert!(p.early.is_none());
        let read = &p
            .scheduled
            .iter()
            .find(|(_, i)| i.status == StatusKind::Read)
            .unwrap()
            .1;
        assert!(read.pricing.is_none());

        b.out_of_order_fraction = 1.0;
        let p = plan(&b, &mut rng, &base(), 1_000_000, false);
        let k: Vec<_> = kinds(&p).into_iter().map(|(k, _)| k).collect();
        assert_eq!(k, ["sent", "read", "delivered"]);

        b.fail_fraction = 1.0;
        b.sent_before_response_fraction = 1.0;
        b.duplicate_fraction = 1.0;
        let p = plan(&b, &mut rng, &base(), 1_000_000, false);
        assert_eq!(p.early.as_ref().map(|i| i.status), Some(StatusKind::Sent));
        let k: Vec<_> = kinds(&p).into_iter().map(|(k, _)| k).collect();
        assert_eq!(k.iter().filter(|k| **k == "failed").count(), 2);
        assert_eq!(
            k.iter().filter(|k| **k == "sent").count(),
            1,
            "the early copy"
        );

        let p = plan(&StatusBehaviour::orderly(), &mut rng, &base(), 0, true);
        assert_eq!(p.scheduled.len(), 1);
        assert_eq!(p.scheduled[0].1.error, Some(131047));
    }

    #[test]
    fn pricing_rules() {
        let p = Pricing::of(None, true, false);
        assert_eq!(
            (p.billable, p.kind, p.category),
            (false, "free_customer_service", "service")
        );
        let p = Pricing::of(Some(Category::Marketing), true, false);
        assert_eq!(
            (p.billable, p.kind, p.category),
            (true, "regular", "marketing")
        );
        let p = Pricing::of(Some(Category::Utility), true, false);
        assert_eq!((p.billable, p.kind), (false, "free_customer_service"));
        let p = Pricing::of(Some(Category::Utility), false, false);
        assert_eq!((p.billable, p.kind), (true, "regular"));
        let p = Pricing::of(Some(Category::Marketing), false, true);
        assert_eq!((p.billable, p.kind), (false, "free_entry_point"));
    }

    #[test]
    fn meta_wire_escapes_non_ascii_and_slashes() {
        let v = json!({"t": "김 1/2 🙏"});
        assert_eq!(
            meta_wire(&v.to_string()),
            r#"{"t":"\uae40 1\/2 \ud83d\ude4f"}"#
        );
        let back: Value = serde_json::from_str(&meta_wire(&v.to_string())).unwrap();
        assert_eq!(back, v);
    }
}
