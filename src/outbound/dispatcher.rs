//! Per-number dispatchers: one task per number drains its outbox lanes
//! (agent before automation before campaign) through the number's limiter
//! and the recipients' pair limits, and records every outcome in the journal.
//!
//! Invariants:
//! - A send starts only after its `Started` record is durable, and its
//!   outcome is journaled as soon as the Graph API answers: after a crash,
//!   a `Started` without an outcome is the only case sent again although it
//!   may have been accepted (counted in `switchboard_outbound_uncertain_resends_total`).
//! - Lanes hold small items (the body stays in the journal and is read back
//!   at send time), so a large campaign backlog costs little memory; each
//!   number's queue is bounded (`max_queued_per_number`).
//! - Numbers never wait on each other: each has its own task, limiter and
//!   in-flight bound. Within a number a blocked recipient (pair limit, retry
//!   backoff) does not hold back the others. The one thing they share is the
//!   bound on bulk (automation, campaign) requests in flight over all numbers,
//!   a fair semaphore, so none starves; agent replies take no permit.
//! - A 190 (token refused) pauses the number and raises an alert; its
//!   messages wait, nothing is failed, until `resume`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::graph::{GraphClient, Verdict};
use super::limiter::{Limiter, LimiterConfig, PairLimiter};
use crate::config::{NumberConfig, OutboundConfig, Secret};
use crate::event::{AlertEvent, Event, Lsn, Outcome, Priority, SendOutcome};
use crate::journal::{JournalReader, RecordLoc};
use crate::pipeline::checkpoint::now_ms;
use crate::pipeline::ingest::Ingest;
use crate::pipeline::numbers::Numbers;
use crate::telemetry::names;

/// Items scanned per priority for one whose recipient may be sent to.
const SCAN: usize = 128;

/// One outbound message waiting in a lane.
#[derive(Debug, Clone)]
pub struct Item {
    pub lsn: Lsn,
    pub loc: RecordLoc,
    pub recipient: String,
    pub priority: Priority,
    pub created_at_ms: i64,
    /// Attempts already made (started).
    pub attempt: u32,
}

/// What a number's dispatcher is doing, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LaneView {
    pub rate_per_second: f64,
    pub ceiling_per_second: f64,
    pub queued: usize,
    pub in_flight: usize,
    pub paused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no number {0} is configured")]
    UnknownNumber(String),
    #[error("number {0} has no access token configured")]
    NoToken(String),
    #[error("number {0} has {1} messages queued, its limit")]
    Full(String, usize),
}

struct LaneState {
    queues: [VecDeque<Item>; 3],
    /// Retries and pair-blocked items, with when they may go again.
    waiting: Vec<(Instant, Item)>,
    limiter: Limiter,
    pairs: PairLimiter,
    paused: bool,
    in_flight: usize,
    quality_seen: Option<String>,
}

impl LaneState {
    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum::<usize>() + self.waiting.len()
    }

    /// Move due waiting items back to the front of their queue, oldest first.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        let mut due: Vec<Item> = Vec::new();
        let mut next = None;
        self.waiting.retain(|(at, item)| {
            if *at <= now {
                due.push(item.clone());
                false
            } else {
                next = Some(next.map_or(*at, |n: Instant| n.min(*at)));
                true
            }
        });
        due.sort_by_key(|i| std::cmp::Reverse(i.lsn));
        for item in due {
            self.queues[item.priority.index()].push_front(item);
        }
        next
    }

    /// The first item (by priority, then age) of the first `priorities`
    /// queues whose recipient may be sent to now; else when the earliest
    /// scanned one may.
    fn pick(&mut self, now: Instant, priorities: usize) -> Result<Item, Option<Instant>> {
        let mut earliest: Option<Instant> = None;
        for q in self.queues.iter_mut().take(priorities) {
            for i in 0..q.len().min(SCAN) {
                let at = self.pairs.ready_at(&q[i].recipient, now);
                if at <= now {
                    return Ok(q.remove(i).expect("index in range"));
                }
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Err(earliest)
    }
}

struct Lane {
    number_id: String,
    /// Replaced by a config reload; a send uses the token it read.
    token: Mutex<Option<Secret>>,
    state: Mutex<LaneState>,
    notify: Notify,
    /// The number was removed by a config reload: the lane's task stops
    /// (sends in flight finish and record their outcome).
    retired: AtomicBool,
}

impl Lane {
    fn new(n: &NumberConfig, token: Option<Secret>, cfg: &OutboundConfig, now: Instant) -> Lane {
        Lane {
            number_id: n.phone_number_id.clone(),
            token: Mutex::new(token),
            state: Mutex::new(LaneState {
                queues: Default::default(),
                waiting: Vec::new(),
                limiter: Limiter::new(limiter_config(n, cfg), now),
                pairs: PairLimiter::new(cfg.pair_interval, cfg.pair_burst),
                paused: false,
                in_flight: 0,
                quality_seen: None,
            }),
            notify: Notify::new(),
            retired: AtomicBool::new(false),
        }
    }

    fn queue(&self, item: Item) {
        self.state.lock().queues[item.priority.index()].push_back(item);
    }
}

/// What a [`Dispatcher::reconfigure`] changed, by phone_number_id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LaneChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// New send ceilings or pacing settings.
    pub limits: Vec<String>,
    /// A new (or no longer an) access token.
    pub tokens: Vec<String>,
}

struct Shared {
    ingest: Ingest,
    reader: JournalReader,
    graph: GraphClient,
    numbers: Arc<Numbers>,
    cfg: OutboundConfig,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    /// Permits for automation and campaign requests in flight over all
    /// numbers (`max_bulk_in_flight`); agent replies take none.
    bulk: Arc<Semaphore>,
}

pub struct Dispatcher {
    /// One lane per managed number; a config reload adds and removes lanes.
    lanes: parking_lot::RwLock<HashMap<String, Arc<Lane>>>,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn limiter_config(n: &NumberConfig, cfg: &OutboundConfig) -> LimiterConfig {
    LimiterConfig {
        max_per_second: n.max_per_second,
        max_per_minute: n.max_per_minute,
        initial_per_second: n.initial_per_second.unwrap_or(n.max_per_second / 4.0),
        upgraded_per_second: n.upgraded_per_second.unwrap_or(n.max_per_second),
        hold: cfg.throttle_hold,
    }
}

impl Dispatcher {
    /// Lanes for `numbers` (config and token); tasks start with [`Dispatcher::start`].
    pub fn new(
        numbers_cfg: &[(NumberConfig, Option<Secret>)],
        numbers: Arc<Numbers>,
        ingest: Ingest,
        reader: JournalReader,
        graph: GraphClient,
        cfg: OutboundConfig,
    ) -> Arc<Dispatcher> {
        let now = Instant::now();
        let lanes = numbers_cfg
            .iter()
            .map(|(n, token)| {
                let lane = Lane::new(n, token.clone(), &cfg, now);
                (n.phone_number_id.clone(), Arc::new(lane))
            })
            .collect();
        let shared = Shared {
            ingest,
            reader,
            graph,
            numbers,
            bulk: Arc::new(Semaphore::new(cfg.max_bulk_in_flight)),
            cfg,
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        };
        Arc::new(Dispatcher {
            lanes: parking_lot::RwLock::new(lanes),
            shared: Arc::new(shared),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Load what a previous run left unsent, and start one task per number.
    pub fn start(self: &Arc<Self>, pending: Vec<(Lsn, crate::store::records::PendingMark)>) {
        let lanes = self.lanes.read();
        let uncertain = load_pending(&lanes, pending, true);
        if uncertain > 0 {
            tracing::warn!(
                uncertain,
                "messages whose send had started before the restart will be sent again"
            );
            metrics::counter!(names::OUTBOUND_UNCERTAIN_RESENDS).increment(uncertain);
        }
        let mut tasks = self.tasks.lock();
        for lane in lanes.values() {
            tasks.push(tokio::spawn(run_lane(lane.clone(), self.shared.clone())));
        }
    }

    /// A config reload: `numbers_cfg` become the numbers that send. A new
    /// number gets a lane (with its unsent messages from `pending`, read
    /// only when a number was added) and a task; a removed number's task
    /// stops after its sends in flight (its unsent messages stay durable and
    /// are sent if the number comes back); a kept number takes its new
    /// token and limits at once, keeping its queue, its current rate (below
    /// the new ceiling) and its pair limits. Call from the runtime.
    pub fn reconfigure(
        &self,
        numbers_cfg: &[(NumberConfig, Option<Secret>)],
        pending: impl FnOnce() -> Vec<(Lsn, crate::store::records::PendingMark)>,
    ) -> LaneChanges {
        let mut changes = LaneChanges::default();
        let now = Instant::now();
        let mut lanes = self.lanes.write();
        let mut added = HashMap::new();
        for (n, token) in numbers_cfg {
            let id = &n.phone_number_id;
            match lanes.get(id) {
                Some(lane) => {
                    let mut current = lane.token.lock();
                    if *current != *token {
                        *current = token.clone();
                        changes.tokens.push(id.clone());
                    }
                    drop(current);
                    if lane
                        .state
                        .lock()
                        .limiter
                        .reconfigure(limiter_config(n, &self.shared.cfg))
                    {
                        changes.limits.push(id.clone());
                    }
                    lane.notify.notify_one();
                }
                None => {
                    let lane = Arc::new(Lane::new(n, token.clone(), &self.shared.cfg, now));
                    added.insert(id.clone(), lane);
                }
            }
        }
        let keep: std::collections::HashSet<&str> = numbers_cfg
            .iter()
            .map(|(n, _)| n.phone_number_id.as_str())
            .collect();
        lanes.retain(|id, lane| {
            if keep.contains(id.as_str()) {
                return true;
            }
            lane.retired.store(true, Ordering::Release);
            lane.notify.notify_one();
            changes.removed.push(id.clone());
            false
        });
        if !added.is_empty() {
            load_pending(&added, pending(), false);
            let mut tasks = self.tasks.lock();
            tasks.retain(|t| !t.is_finished());
            for (id, lane) in added {
                if !self.shared.stopping.load(Ordering::Acquire) {
                    tasks.push(tokio::spawn(run_lane(lane.clone(), self.shared.clone())));
                }
                changes.added.push(id.clone());
                lanes.insert(id, lane);
            }
        }
        changes.added.sort();
        changes.removed.sort();
        changes
    }

    /// Refuse early what could not be queued (unknown number, no token, full).
    pub fn check(&self, number_id: &str) -> Result<(), DispatchError> {
        let lane = self
            .lane(number_id)
            .ok_or_else(|| DispatchError::UnknownNumber(number_id.into()))?;
        if lane.token.lock().is_none() {
            return Err(DispatchError::NoToken(number_id.into()));
        }
        let queued = lane.state.lock().queued();
        if queued >= self.shared.cfg.max_queued_per_number {
            return Err(DispatchError::Full(number_id.into(), queued));
        }
        Ok(())
    }

    /// Queue a durable outbound request.
    pub fn enqueue(&self, number_id: &str, item: Item) -> Result<(), DispatchError> {
        let lane = self
            .lane(number_id)
            .ok_or_else(|| DispatchError::UnknownNumber(number_id.into()))?;
        lane.queue(item);
        lane.notify.notify_one();
        Ok(())
    }

    /// Unpause a number (its token was replaced or restored).
    pub fn resume(&self, number_id: &str) -> Result<bool, DispatchError> {
        let lane = self
            .lane(number_id)
            .ok_or_else(|| DispatchError::UnknownNumber(number_id.into()))?;
        let was = std::mem::replace(&mut lane.state.lock().paused, false);
        metrics::gauge!(names::NUMBER_PAUSED, "number" => lane.number_id.clone()).set(0.0);
        lane.notify.notify_one();
        Ok(was)
    }

    pub fn view(&self, number_id: &str) -> Option<LaneView> {
        let lane = self.lane(number_id)?;
        let st = lane.state.lock();
        Some(LaneView {
            rate_per_second: round2(st.limiter.rate()),
            ceiling_per_second: round2(st.limiter.ceiling()),
            queued: st.queued(),
            in_flight: st.in_flight,
            paused: st.paused,
        })
    }

    /// Stop taking new sends, let those in flight finish and record their
    /// outcome (bounded by `deadline`), then stop the lane tasks.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.stopping.store(true, Ordering::Release);
        for lane in self.lanes.read().values() {
            lane.notify.notify_one();
        }
        let end = tokio::time::Instant::now() + deadline;
        while self.shared.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.shared.in_flight.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                left,
                "sends still in flight at shutdown; they will be sent again after the restart"
            );
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Dispatcher {
    fn lane(&self, number_id: &str) -> Option<Arc<Lane>> {
        self.lanes.read().get(number_id).cloned()
    }
}

/// Queue unsent messages from the store into their lanes; returns how many
/// had started a send before. `warn_unknown`: say so for messages of numbers
/// without a lane (false when `lanes` are only the numbers a reload added).
fn load_pending(
    lanes: &HashMap<String, Arc<Lane>>,
    pending: Vec<(Lsn, crate::store::records::PendingMark)>,
    warn_unknown: bool,
) -> u64 {
    let mut uncertain = 0u64;
    for (lsn, mark) in pending {
        let Some(lane) = lanes.get(&mark.number_id) else {
            if warn_unknown {
                tracing::warn!(number = %mark.number_id, lsn, "an unsent message's number is no longer configured; it stays queued");
            }
            continue;
        };
        uncertain += u64::from(mark.started > 0);
        lane.queue(Item {
            lsn,
            loc: mark.loc.into(),
            recipient: mark.recipient,
            priority: mark.priority,
            created_at_ms: mark.created_at_ms,
            attempt: mark.started,
        });
    }
    uncertain
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

enum Next {
    Send(Item, Option<OwnedSemaphorePermit>),
    Wait(Option<Instant>),
    /// Only bulk items could go, and every bulk permit is taken.
    NeedPermit(Option<Instant>),
}

/// Agent replies are picked without a bulk permit; the rest need one.
const AGENT_ONLY: usize = 1;

async fn run_lane(lane: Arc<Lane>, sh: Arc<Shared>) {
    let label = lane.number_id.clone();
    let mut last_gauges = Instant::now() - Duration::from_secs(10);
    // A bulk permit this lane waited for, used by its next bulk send.
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        if sh.stopping.load(Ordering::Acquire) || lane.retired.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(last_gauges) >= Duration::from_secs(1) {
            last_gauges = now;
            follow_quality(&lane, &sh);
            let st = lane.state.lock();
            metrics::gauge!(names::NUMBER_SEND_RATE, "number" => label.clone())
                .set(st.limiter.rate());
            metrics::gauge!(names::NUMBER_SEND_CEILING, "number" => label.clone())
                .set(st.limiter.ceiling());
            metrics::gauge!(names::NUMBER_OUTBOX_QUEUED, "number" => label.clone())
                .set(st.queued() as f64);
            metrics::gauge!(names::NUMBER_PAUSED, "number" => label.clone())
                .set(f64::from(u8::from(st.paused)));
        }
        let next = {
            let mut st = lane.state.lock();
            let due = st.promote(now);
            if st.paused
                || st.in_flight >= sh.cfg.max_in_flight_per_number
                || st.queues.iter().all(VecDeque::is_empty)
            {
                Next::Wait(due)
            } else {
                let ready = st.limiter.ready_at(now);
                if ready > now {
                    Next::Wait(Some(due.map_or(ready, |d| d.min(ready))))
                } else {
                    // Agent replies first and without a permit; a bulk item only with one.
                    let picked = match st.pick(now, AGENT_ONLY) {
                        Ok(item) => Ok((item, None)),
                        Err(agent_at) => {
                            let bulk_queued = st.queues[AGENT_ONLY..].iter().any(|q| !q.is_empty());
                            let permit = match held.take() {
                                Some(p) => Some(p),
                                None if bulk_queued => sh.bulk.clone().try_acquire_owned().ok(),
                                None => None,
                            };
                            match permit {
                                Some(p) => match st.pick(now, Priority::ALL.len()) {
                                    Ok(item) => Ok((item, Some(p))),
                                    Err(at) => Err(Next::Wait(
                                        [due, agent_at, at].into_iter().flatten().min(),
                                    )),
                                },
                                None if bulk_queued => Err(Next::NeedPermit(
                                    [due, agent_at].into_iter().flatten().min(),
                                )),
                                None => {
                                    Err(Next::Wait([due, agent_at].into_iter().flatten().min()))
                                }
                            }
                        }
                    };
                    match picked {
                        Ok((item, permit)) => {
                            st.limiter.on_send(now);
                            st.pairs.on_send(&item.recipient, now);
                            st.in_flight += 1;
                            Next::Send(item, permit)
                        }
                        Err(next) => next,
                    }
                }
            }
        };
        // Wake at least once a second to follow quality updates and gauges.
        let wake = |until: Option<Instant>| {
            until
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1))
        };
        match next {
            Next::Send(item, permit) => {
                sh.in_flight.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(send(lane.clone(), sh.clone(), item, permit));
            }
            Next::Wait(until) => {
                // A permit is only kept for an immediate bulk send, never while waiting.
                held = None;
                tokio::select! {
                    _ = lane.notify.notified() => {}
                    _ = tokio::time::sleep_until(wake(until).into()) => {}
                }
                lane.state.lock().pairs.prune(Instant::now());
            }
            Next::NeedPermit(until) => {
                // The semaphore is fair: lanes get permits in the order they asked.
                tokio::select! {
                    permit = sh.bulk.clone().acquire_owned() => held = permit.ok(),
                    _ = lane.notify.notified() => {}
                    _ = tokio::time::sleep_until(wake(until).into()) => {}
                }
            }
        }
    }
}

/// Apply a new quality event of the number (from a webhook) to its limiter.
fn follow_quality(lane: &Lane, sh: &Shared) {
    let Some(event) = sh
        .numbers
        .get(&lane.number_id)
        .and_then(|n| n.record().quality_event)
    else {
        return;
    };
    let mut st = lane.state.lock();
    if st.quality_seen.as_deref() != Some(event.as_str()) {
        st.limiter.on_quality(&event);
        tracing::info!(number = %lane.number_id, event, ceiling = st.limiter.ceiling(), "quality update applied to the send ceiling");
        st.quality_seen = Some(event);
    }
}

/// Journal an outcome, retrying while the pipeline is merely busy: an
/// outcome that never gets recorded would make a restart send again.
async fn record(sh: &Shared, ev: Event) -> bool {
    for attempt in 0..50u32 {
        match sh.ingest.submit(vec![ev.clone()]).await {
            Ok(_) => return true,
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(error = %e, "recording a send outcome failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
            }
        }
    }
    false
}

fn backoff(cfg: &OutboundConfig, attempt: u32, lsn: Lsn) -> Duration {
    let base = cfg.retry_initial_delay.as_secs_f64() * 2f64.powi(attempt.min(20) as i32);
    let capped = base.min(cfg.retry_max_delay.as_secs_f64());
    // Deterministic jitter in [0.5, 1.5) spreads retries of a burst apart.
    let jitter =
        0.5 + ((lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64);
    Duration::from_secs_f64(capped * jitter)
}

async fn send(
    lane: Arc<Lane>,
    sh: Arc<Shared>,
    mut item: Item,
    bulk_permit: Option<OwnedSemaphorePermit>,
) {
    let outcome = attempt(&lane, &sh, &mut item).await;
    drop(bulk_permit);
    {
        let mut st = lane.state.lock();
        st.in_flight -= 1;
        if let Some(at) = outcome {
            st.waiting.push((at, item));
        }
    }
    sh.in_flight.fetch_sub(1, Ordering::AcqRel);
    lane.notify.notify_one();
}

/// One attempt; returns when to try again if the item goes back to the lane.
async fn attempt(lane: &Lane, sh: &Shared, item: &mut Item) -> Option<Instant> {
    let req = match sh
        .reader
        .read(item.loc)
        .map(|r| Event::decode(r.kind, r.version, &r.payload))
    {
        Ok(Ok(Event::Outbound(o))) => o,
        other => {
            tracing::error!(
                lsn = item.lsn,
                ?other,
                "cannot read an outbound request back from the journal"
            );
            let failed = Outcome::Failed {
                code: 0,
                title: "request record unreadable".into(),
                reason: "internal".into(),
            };
            record(sh, outcome_event(item, &lane.number_id, 0, failed)).await;
            return None;
        }
    };
    let route = req.route;
    item.attempt += 1;
    let started = outcome_event(
        item,
        &lane.number_id,
        route,
        Outcome::Started {
            attempt: item.attempt,
        },
    );
    if sh.ingest.submit(vec![started]).await.is_err() {
        item.attempt -= 1;
        return Some(Instant::now() + Duration::from_millis(500));
    }
    let token = lane.token.lock().clone();
    let token = token.as_ref().map(|t| t.expose()).unwrap_or_default();
    let verdict = sh
        .graph
        .send(&lane.number_id, token, Bytes::from(req.body))
        .await;
    let now = Instant::now();
    let age = Duration::from_millis((now_ms() - item.created_at_ms).max(0) as u64);
    match verdict {
        Verdict::Accepted { wamid } => {
            lane.state.lock().limiter.on_success(now);
            metrics::counter!(names::OUTBOUND_SENDS, "result" => "accepted").increment(1);
            metrics::histogram!(names::OUTBOUND_QUEUE_SECONDS, "priority" => item.priority.as_str()).record(age.as_secs_f64());
            record(
                sh,
                outcome_event(item, &lane.number_id, route, Outcome::Accepted { wamid }),
            )
            .await;
            None
        }
        Verdict::Throttled { code, title } => {
            lane.state.lock().limiter.on_throttled(now);
            tracing::debug!(number = %lane.number_id, code, %title, "throttled by the platform; slowing down");
            retry_or_fail(
                sh,
                lane,
                item,
                route,
                code,
                title,
                age,
                Duration::from_millis(100),
            )
            .await
        }
        Verdict::PairLimited { code, title } => {
            let wait = {
                let mut st = lane.state.lock();
                st.pairs.on_limited(&item.recipient, item.attempt, now);
                st.pairs
                    .ready_at(&item.recipient, now)
                    .saturating_duration_since(now)
            };
            retry_or_fail(sh, lane, item, route, code, title, age, wait).await
        }
        Verdict::Retry { code, title } => {
            let wait = backoff(&sh.cfg, item.attempt - 1, item.lsn);
            retry_or_fail(sh, lane, item, route, code, title, age, wait).await
        }
        Verdict::TokenRefused { code, title } => {
            let newly = !std::mem::replace(&mut lane.state.lock().paused, true);
            metrics::gauge!(names::NUMBER_PAUSED, "number" => lane.number_id.clone()).set(1.0);
            if newly {
                tracing::error!(number = %lane.number_id, code, %title, "access token refused: number paused until resumed");
                let alert = AlertEvent {
                    kind: "token_expired".into(),
                    number_id: Some(lane.number_id.clone()),
                    actor: None,
                    detail: format!("the Graph API refused the access token ({code}: {title}); sending is paused"),
                    route,
                    at_ms: now_ms(),
                };
                record(sh, Event::Alert(alert)).await;
            }
            // Not a failure of the message: it goes when the number resumes.
            Some(now)
        }
        Verdict::Fail {
            code,
            title,
            reason,
        } => {
            metrics::counter!(names::OUTBOUND_SENDS, "result" => "failed").increment(1);
            let failed = Outcome::Failed {
                code,
                title,
                reason: reason.into(),
            };
            record(sh, outcome_event(item, &lane.number_id, route, failed)).await;
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn retry_or_fail(
    sh: &Shared,
    lane: &Lane,
    item: &Item,
    route: u32,
    code: i64,
    title: String,
    age: Duration,
    wait: Duration,
) -> Option<Instant> {
    if age + wait > sh.cfg.retry_max_age {
        metrics::counter!(names::OUTBOUND_SENDS, "result" => "failed").increment(1);
        let failed = Outcome::Failed {
            code,
            title,
            reason: "retries_exhausted".into(),
        };
        record(sh, outcome_event(item, &lane.number_id, route, failed)).await;
        return None;
    }
    metrics::counter!(names::OUTBOUND_SENDS, "result" => "retry").increment(1);
    Some(Instant::now() + wait)
}

fn outcome_event(item: &Item, number_id: &str, route: u32, outcome: Outcome) -> Event {
    Event::SendOutcome(SendOutcome {
        request: item.lsn,
        number_id: number_id.to_string(),
        route,
        outcome,
        at_ms: now_ms(),
    })
}
