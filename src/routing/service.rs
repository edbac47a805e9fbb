//! The routing component of the daemon: one thread owns the [`Engine`].
//!
//! Data flow: an API call, a shard's "conversation opened" notice or a timer
//! becomes a [`Command`] stamped with the wall clock, is journaled as a
//! kind-10 record ([`crate::event::RoutingEvent`]) through the same ingest
//! path as webhooks, and, once its journal batch is fdatasync'ed, the
//! journal writer hands it to this component ([`RoutingSink`]), which
//! applies it on its own thread and answers the waiter with the engine's
//! result.
//!
//! Invariants:
//! - Single writer: commands reach the engine only through the journal
//!   writer (or start-up replay), which dispatches in LSN order, so every
//!   shard's commands are serialised into one order, and assignment is
//!   atomic across shards (no agent above its limit, no conversation twice).
//! - Acknowledged means durable: a caller sees a result only after the
//!   command's journal record was fdatasync'ed.
//! - Restart rebuilds the same state: the engine is deterministic, start-up
//!   replays every kind-10 record in LSN order ([`RoutingService::replay`]),
//!   and `applied` skips records already applied when the pipeline's own
//!   replay dispatches them again.
//! - Bounded: the command channel has reserved capacity (the writer never
//!   blocks on it), notices from shards use `try_send`, and each event-stream
//!   subscriber has a bounded buffer; a subscriber that falls behind is
//!   dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::{
    AgentId, AgentStatus, Command, CommandResult, ConvId, ConvSpec, Effect, Engine, EngineConfig,
    RoutingError,
};
use crate::event::{kind, Event, Lsn, RoutingEvent};
use crate::journal::Journal;
use crate::pipeline::ingest::{Ingest, IngestError};
use crate::pipeline::{route_hash, Completion, OpenNotice, Pipeline, RoutingSink};
use crate::telemetry::names;

/// Daemon settings of routing (`[routing]`).
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub grace_ms: i64,
    pub default_max_concurrent: u32,
    /// Default `first_reply_timeout_ms` of team policies created without one.
    pub first_reply_timeout_ms: Option<i64>,
    /// Commands queued for the routing thread at most.
    pub queue: usize,
    /// Conversation-opened notices buffered from the shards at most.
    pub notice_queue: usize,
    /// How often timers (step timeouts, grace periods...) are checked.
    pub tick_interval: Duration,
    /// Events buffered per event-stream subscriber.
    pub stream_buffer: usize,
    /// number id -> team, from `[[numbers]] team`.
    pub number_teams: Vec<(String, String)>,
    /// Audit every invariant after every command (tests: O(state) each).
    pub audit: bool,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            grace_ms: super::DEFAULT_GRACE_MS,
            default_max_concurrent: super::DEFAULT_MAX_CONCURRENT,
            first_reply_timeout_ms: None,
            queue: 65_536,
            notice_queue: 65_536,
            tick_interval: Duration::from_millis(200),
            stream_buffer: 1024,
            number_teams: Vec::new(),
            audit: false,
        }
    }
}

/// Milliseconds since the Unix epoch: the time commands are stamped with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The engine plus what the daemon derives from its history: the agent who
/// last served each customer (sticky routing). Deterministic like the engine.
#[derive(Debug, Default)]
pub struct Router {
    engine: Engine,
    /// (number id, customer id) -> agent of the latest assignment.
    last_agent: BTreeMap<(String, String), AgentId>,
    /// The last LSN applied.
    applied: Lsn,
    /// Assignment history per conversation: while open, and for the
    /// latest [`HISTORY_RESOLVED`] resolved ones.
    history: BTreeMap<ConvId, Vec<HistoryEntry>>,
    resolved_order: std::collections::VecDeque<ConvId>,
}

/// Entries kept per conversation (the oldest go first).
pub const HISTORY_PER_CONVERSATION: usize = 64;
/// Resolved conversations whose history is kept.
pub const HISTORY_RESOLVED: usize = 10_000;

/// One change of a conversation's routing: what, who, why, when.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub lsn: Lsn,
    pub at_ms: i64,
    #[serde(flatten)]
    pub effect: Effect,
}

impl Router {
    pub fn new(cfg: EngineConfig) -> Router {
        Router {
            engine: Engine::new(cfg),
            last_agent: BTreeMap::new(),
            applied: 0,
            history: BTreeMap::new(),
            resolved_order: std::collections::VecDeque::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn applied_lsn(&self) -> Lsn {
        self.applied
    }

    /// The agent who served this customer on this number last.
    pub fn last_agent(&self, number_id: &str, customer_id: &str) -> Option<&str> {
        self.last_agent
            .get(&(number_id.to_string(), customer_id.to_string()))
            .map(String::as_str)
    }

    /// The routing history of a conversation, oldest first.
    pub fn history(&self, conv: ConvId) -> Option<&[HistoryEntry]> {
        self.history.get(&conv).map(Vec::as_slice)
    }

    fn record(&mut self, lsn: Lsn, at_ms: i64, fx: &[Effect]) {
        for f in fx {
            let Some(conv) = f.conv() else { continue };
            let h = self.history.entry(conv).or_default();
            if h.len() == HISTORY_PER_CONVERSATION {
                h.remove(0);
            }
            h.push(HistoryEntry {
                lsn,
                at_ms,
                effect: f.clone(),
            });
            match f {
                Effect::Resolved { .. } => {
                    self.resolved_order.push_back(conv);
                    if self.resolved_order.len() > HISTORY_RESOLVED {
                        if let Some(old) = self.resolved_order.pop_front() {
                            // Reopened since: still open, keep it.
                            if self.engine.conversation_parties(old).is_none() {
                                self.history.remove(&old);
                            }
                        }
                    }
                }
                Effect::Reopened { .. } => {}
                _ => {}
            }
        }
    }

    /// Apply the command journaled at `lsn`; None if it was applied already.
    pub fn apply(&mut self, lsn: Lsn, mut cmd: Command) -> Option<CommandResult> {
        if lsn != 0 && lsn <= self.applied {
            return None;
        }
        self.applied = self.applied.max(lsn);
        if let Command::ConversationOpened { spec, .. } | Command::Reopen { spec, .. } = &mut cmd {
            if spec.previous_agent.is_none() {
                spec.previous_agent = self
                    .last_agent
                    .get(&(spec.number_id.clone(), spec.customer_id.clone()))
                    .cloned();
            }
        }
        let name = cmd.name();
        let at_ms = cmd.now_ms();
        let result = self.engine.apply(cmd);
        if let Ok(fx) = &result {
            self.record(lsn, at_ms, fx);
        }
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!(names::ROUTING_COMMANDS, "command" => name, "result" => outcome)
            .increment(1);
        if let Ok(fx) = &result {
            for f in fx {
                match f {
                    Effect::Assigned {
                        conv,
                        agent,
                        reason,
                        ..
                    } => {
                        if let Some((n, c)) = self.engine.conversation_parties(*conv) {
                            self.last_agent
                                .insert((n.to_string(), c.to_string()), agent.clone());
                        }
                        metrics::counter!(names::ROUTING_ASSIGNMENTS, "reason" => reason.as_str())
                            .increment(1);
                    }
                    Effect::Unassigned { reason, .. } => {
                        metrics::counter!(names::ROUTING_UNASSIGNMENTS, "reason" => reason.as_str())
                            .increment(1);
                    }
                    _ => {}
                }
            }
        }
        Some(result)
    }

    fn update_gauges(&self) {
        let e = &self.engine;
        metrics::gauge!(names::ROUTING_OPEN).set(e.open_conversations() as f64);
        metrics::gauge!(names::ROUTING_QUEUED).set(e.queued_conversations() as f64);
        let mut by = [0usize; 3];
        for a in e.agents() {
            by[a.status as usize] += 1;
        }
        for (s, n) in [AgentStatus::Online, AgentStatus::Away, AgentStatus::Offline]
            .into_iter()
            .zip(by)
        {
            metrics::gauge!(names::ROUTING_AGENTS, "status" => s.as_str()).set(n as f64);
        }
    }
}

/// One entry of the event stream: an effect of a durable command.
#[derive(serde::Serialize, Debug, Clone)]
pub struct StreamEvent {
    /// The journal position of the command that caused it.
    pub lsn: Lsn,
    pub at_ms: i64,
    /// The conversation's number and customer, for effects on a
    /// conversation (consoles need no second lookup).
    pub number_id: Option<String>,
    pub customer_id: Option<String>,
    #[serde(flatten)]
    pub effect: Effect,
}

enum Msg {
    Apply {
        items: Vec<(Lsn, Command)>,
        done: Arc<Completion>,
    },
    Stop,
}

/// The routing thread and what the rest of the process holds of it.
pub struct RoutingService {
    router: Arc<RwLock<Router>>,
    tx: Sender<Msg>,
    reserved: AtomicUsize,
    capacity: usize,
    stream: tokio::sync::broadcast::Sender<Arc<StreamEvent>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    settings: RoutingSettings,
    stopped: AtomicBool,
    /// Invariant violations found by `settings.audit`.
    violations: Mutex<Vec<String>>,
    notices: Mutex<Option<tokio::sync::mpsc::Receiver<OpenNotice>>>,
}

impl RoutingService {
    /// Start the routing thread and attach it to the pipeline (before the
    /// pipeline replays the journal).
    pub fn start(
        settings: RoutingSettings,
        pipeline: &Pipeline,
    ) -> std::io::Result<Arc<RoutingService>> {
        let router = Arc::new(RwLock::new(Router::new(EngineConfig {
            grace_ms: settings.grace_ms,
        })));
        let capacity = settings.queue.max(1);
        // Commands are reserved before journaling; messages on top of that
        // (one per dispatch, plus Stop) never exceed the reserved count + 1.
        let (tx, rx) = crossbeam::channel::bounded(capacity + 1);
        let (stream, _) = tokio::sync::broadcast::channel(settings.stream_buffer.max(16));
        let (ntx, nrx) = tokio::sync::mpsc::channel(settings.notice_queue.max(1));
        let svc = Arc::new(RoutingService {
            router,
            tx,
            reserved: AtomicUsize::new(0),
            capacity,
            stream,
            thread: Mutex::new(None),
            settings,
            stopped: AtomicBool::new(false),
            violations: Mutex::new(Vec::new()),
            notices: Mutex::new(Some(nrx)),
        });
        let worker = svc.clone();
        let handle = std::thread::Builder::new()
            .name("routing".into())
            .spawn(move || worker.run(rx))?;
        *svc.thread.lock() = Some(handle);
        pipeline.attach_routing(svc.clone(), ntx);
        Ok(svc)
    }

    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    /// Read access to the router (queries; hold it briefly).
    pub fn read(&self) -> RwLockReadGuard<'_, Router> {
        self.router.read()
    }

    /// Subscribe to the effects of applied commands.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StreamEvent>> {
        self.stream.subscribe()
    }

    /// Rebuild the engine from every routing record in the journal, in LSN
    /// order. Before the pipeline's replay (which then skips them).
    pub fn replay(&self, journal: &Journal) -> Result<u64, String> {
        let mut router = self.router.write();
        let mut n = 0u64;
        journal
            .replay(1, |lsn, _loc, k, version, payload| -> Result<(), String> {
                if k != kind::ROUTING {
                    return Ok(());
                }
                let ev = Event::decode(k, version, payload)
                    .map_err(|e| format!("routing record {lsn} cannot be decoded: {e}"))?;
                if let Event::Routing(r) = ev {
                    router.apply(lsn, r.command);
                    n += 1;
                }
                Ok(())
            })
            .map_err(|e| format!("routing replay: {e}"))?;
        router.update_gauges();
        metrics::counter!(names::ROUTING_REPLAYED).increment(n);
        Ok(n)
    }

    fn run(self: Arc<Self>, rx: Receiver<Msg>) {
        // Gauges walk every open conversation: at most every 250 ms.
        let mut gauges_at = Instant::now();
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Stop => break,
                Msg::Apply { items, done } => {
                    let started = Instant::now();
                    let n = items.len();
                    let mut results = Vec::with_capacity(n);
                    let mut published = Vec::new();
                    let subscribed = self.stream.receiver_count() > 0;
                    {
                        let mut router = self.router.write();
                        for (lsn, cmd) in items {
                            let at_ms = cmd.now_ms();
                            let parties = |router: &Router, f: &Effect| {
                                f.conv()
                                    .and_then(|c| router.engine.conversation_parties(c))
                                    .map(|(n, c)| (n.to_string(), c.to_string()))
                            };
                            let applied = router.apply(lsn, cmd);
                            if self.settings.audit {
                                if let Err(v) = router.engine.check_invariants() {
                                    self.violations.lock().push(format!("after {lsn}: {v}"));
                                }
                            }
                            match applied {
                                Some(r) => {
                                    if let (Ok(fx), true) = (&r, subscribed) {
                                        published.extend(fx.iter().map(|f| {
                                            let (number_id, customer_id) =
                                                parties(&router, f).unzip();
                                            StreamEvent {
                                                lsn,
                                                at_ms,
                                                number_id,
                                                customer_id,
                                                effect: f.clone(),
                                            }
                                        }));
                                    }
                                    results.push(r);
                                }
                                None => results.push(Ok(Vec::new())),
                            }
                        }
                        if gauges_at.elapsed() >= Duration::from_millis(250) {
                            gauges_at = Instant::now();
                            router.update_gauges();
                        }
                    }
                    metrics::histogram!(names::ROUTING_APPLY_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    done.push_routing(results);
                    self.release(n);
                    done.part_done(None);
                    if subscribed {
                        for ev in published {
                            let _ = self.stream.send(Arc::new(ev));
                        }
                    }
                }
            }
        }
    }

    /// Invariant violations found so far (with `audit`).
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().clone()
    }

    /// Stopped: background tasks of this service end.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Stop the thread after what is queued.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl RoutingSink for RoutingService {
    fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.reserved.load(Ordering::Relaxed);
        loop {
            if cur + n > self.capacity {
                return false;
            }
            match self.reserved.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn release(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
    }

    fn apply(&self, items: Vec<(Lsn, Command)>, done: Arc<Completion>) {
        if let Err(e) = self.tx.send(Msg::Apply { items, done }) {
            if let Msg::Apply { items, done } = e.into_inner() {
                self.release(items.len());
                done.part_done(Some("routing stopped".into()));
            }
        }
    }
}

/// Why a routing call failed before the engine answered.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("the routing component gave no result")]
    NoResult,
}

/// The handle API handlers and background tasks use: journals commands and
/// returns the engine's answer once durable and applied.
#[derive(Clone)]
pub struct Routing {
    service: Arc<RoutingService>,
    ingest: Ingest,
}

impl Routing {
    pub fn new(service: Arc<RoutingService>, ingest: Ingest) -> Routing {
        Routing { service, ingest }
    }

    pub fn service(&self) -> &Arc<RoutingService> {
        &self.service
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        self.ingest.pipeline()
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Router> {
        self.service.read()
    }

    pub fn settings(&self) -> &RoutingSettings {
        self.service.settings()
    }

    /// Journal one command and return the engine's result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, SubmitError> {
        self.submit_all(vec![cmd])
            .await?
            .pop()
            .ok_or(SubmitError::NoResult)
    }

    /// Journal commands in one append (one fdatasync) and return their
    /// results in order.
    pub async fn submit_all(&self, cmds: Vec<Command>) -> Result<Vec<CommandResult>, SubmitError> {
        let n = cmds.len();
        let events = cmds
            .into_iter()
            .map(|command| {
                let conv_route = self.conv_route(&command);
                Event::Routing(RoutingEvent {
                    conv_route,
                    command,
                })
            })
            .collect();
        let receipt = self.ingest.submit(events).await?;
        if receipt.routing.len() != n {
            return Err(SubmitError::NoResult);
        }
        Ok(receipt.routing)
    }

    /// A conversation as the pipeline holds it (open or resolved).
    pub fn conversation_record(
        &self,
        conv: ConvId,
    ) -> Option<crate::store::records::ConversationRecord> {
        self.ingest
            .pipeline()
            .shards()
            .find_map(|s| s.get(conv).cloned())
    }

    /// The open conversation of a customer on one of our numbers.
    pub fn open_conversation(
        &self,
        number_id: &str,
        customer_id: &str,
    ) -> Option<crate::store::records::ConversationRecord> {
        self.ingest
            .pipeline()
            .open_conversation(number_id, customer_id)
    }

    /// Resolve and reopen also reach the conversation's shard.
    fn conv_route(&self, cmd: &Command) -> Option<u32> {
        match cmd {
            Command::Resolve { conv, .. } => self.route_of(*conv),
            Command::Reopen { spec, .. } => Some(route_hash(&spec.number_id, &spec.customer_id)),
            _ => None,
        }
    }

    /// The route of an open conversation: from routing, else from the
    /// pipeline (a conversation routing never took, e.g. of an unmapped
    /// number, can still be resolved).
    fn route_of(&self, conv: ConvId) -> Option<u32> {
        if let Some((n, c)) = self.read().engine().conversation_parties(conv) {
            return Some(route_hash(n, c));
        }
        self.ingest
            .pipeline()
            .shards()
            .find_map(|s| s.get(conv).map(|r| r.route))
    }

    /// Start-up is over: bring configuration into the journal, reconcile
    /// conversations the pipeline has open and routing does not, and start
    /// acting on notices and timers. Call once, inside the runtime.
    pub async fn go_live(&self) {
        let now = now_ms();
        let mut setup = Vec::new();
        {
            let r = self.read();
            let e = r.engine();
            if e.config().grace_ms != self.settings().grace_ms {
                setup.push(Command::Configure {
                    grace_ms: self.settings().grace_ms,
                    now_ms: now,
                });
            }
            for (number, team) in &self.settings().number_teams {
                if e.number_team(number) != Some(team.as_str()) {
                    setup.push(Command::SetNumberTeam {
                        number_id: number.clone(),
                        team: Some(team.clone()),
                        now_ms: now,
                    });
                }
            }
        }
        if !setup.is_empty() {
            match self.submit_all(setup).await {
                Ok(results) => {
                    for r in results {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "routing: configuration not applied (create the team through the API)");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "routing: configuration not journaled"),
            }
        }
        let rx = self.service.notices.lock().take();
        if let Some(mut rx) = rx {
            // Notices raised by the replay are stale (some of those
            // conversations were resolved later in the journal): the
            // reconciliation below covers every conversation really open.
            while rx.try_recv().is_ok() {}
            self.reconcile().await;
            tokio::spawn(self.clone().consume_notices(rx));
        }
        tokio::spawn(self.clone().tick_loop());
    }

    /// Open in routing every conversation the pipeline has open and routing
    /// does not know (a crash between a conversation opening and its notice
    /// being journaled, a dropped notice, a number newly mapped).
    pub async fn reconcile(&self) -> usize {
        let open: Vec<(u64, String, String)> = self
            .ingest
            .pipeline()
            .shards()
            .flat_map(|s| s.open_conversations())
            .collect();
        let missing: Vec<Command> = {
            let r = self.read();
            let e = r.engine();
            open.into_iter()
                .filter(|(id, number, _)| {
                    e.conversation_parties(*id).is_none() && e.number_team(number).is_some()
                })
                .map(|(id, number_id, customer_id)| Command::ConversationOpened {
                    spec: ConvSpec {
                        id,
                        number_id,
                        customer_id,
                        previous_agent: None,
                    },
                    now_ms: now_ms(),
                })
                .collect()
        };
        let n = missing.len();
        for chunk in missing.chunks(256) {
            if let Err(e) = self.submit_all(chunk.to_vec()).await {
                tracing::warn!(error = %e, "routing: reconciliation incomplete");
                break;
            }
        }
        if n > 0 {
            tracing::info!(conversations = n, "routing: reconciled open conversations");
        }
        n
    }

    async fn consume_notices(self, mut rx: tokio::sync::mpsc::Receiver<OpenNotice>) {
        let mut batch = Vec::new();
        let inflight = Arc::new(tokio::sync::Semaphore::new(NOTICE_BATCHES_IN_FLIGHT));
        // The channel's sender lives in the pipeline this task keeps alive:
        // wake up now and then to notice a stopped service, and end.
        loop {
            if self.service.stopped() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), rx.recv_many(&mut batch, 512)).await
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            let pipeline = self.ingest.pipeline();
            // Still open in the pipeline (not resolved since) and new to routing.
            batch.retain(|n| {
                pipeline
                    .open_conversation(&n.number_id, &n.customer_id)
                    .is_some_and(|c| c.id == n.conv)
            });
            let cmds: Vec<Command> = {
                let r = self.read();
                let e = r.engine();
                batch
                    .drain(..)
                    .filter(|n| {
                        e.conversation_parties(n.conv).is_none()
                            && e.number_team(&n.number_id).is_some()
                    })
                    .map(|n| Command::ConversationOpened {
                        spec: ConvSpec {
                            id: n.conv,
                            number_id: n.number_id,
                            customer_id: n.customer_id,
                            previous_agent: None,
                        },
                        now_ms: now_ms(),
                    })
                    .collect()
            };
            if cmds.is_empty() {
                continue;
            }
            // Several batches in flight, so a batch does not wait for the
            // previous one's fsync (the journal merges them into its group
            // commits); bounded by the permits.
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // Overload is transient: retry a few times, then leave the
                // rest to the next reconciliation.
                let mut delay = Duration::from_millis(20);
                for attempt in 0..6 {
                    match me.submit_all(cmds.clone()).await {
                        Ok(_) => break,
                        Err(e) if attempt == 5 => {
                            tracing::warn!(error = %e, "routing: conversations not opened; reconciliation will retry");
                        }
                        Err(_) => {
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                    }
                }
            });
        }
    }

    async fn tick_loop(self) {
        let mut since_reconcile = Duration::ZERO;
        while !self.service.stopped() {
            tokio::time::sleep(self.settings().tick_interval).await;
            since_reconcile += self.settings().tick_interval;
            let now = now_ms();
            let due = self
                .read()
                .engine()
                .next_deadline()
                .is_some_and(|t| t <= now);
            if due {
                if let Err(e) = self.submit(Command::Tick { now_ms: now }).await {
                    tracing::debug!(error = %e, "routing: tick not journaled; next round retries");
                }
            }
            if since_reconcile >= RECONCILE_EVERY {
                since_reconcile = Duration::ZERO;
                self.reconcile().await;
            }
        }
    }
}

/// Batches of conversation-opened commands journaled at once.
const NOTICE_BATCHES_IN_FLIGHT: usize = 8;

/// How often open conversations are reconciled while running (notices can
/// be dropped under overload).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// Map an engine refusal to an HTTP-ish class: (status, code).
pub fn error_class(e: &RoutingError) -> (u16, &'static str) {
    match e {
        RoutingError::UnknownAgent(_) => (404, "unknown_agent"),
        RoutingError::UnknownTeam(_) => (404, "unknown_team"),
        RoutingError::UnknownConversation(_) => (404, "unknown_conversation"),
        RoutingError::NumberNotMapped(_) => (409, "number_not_mapped"),
        RoutingError::AlreadyOpen(_) => (409, "already_open"),
        RoutingError::NotAssigned(_) => (409, "not_assigned"),
        RoutingError::AlreadyAssigned { .. } => (409, "already_assigned"),
        RoutingError::AtCapacity { .. } => (409, "at_capacity"),
        RoutingError::AgentUnavailable { .. } => (409, "agent_unavailable"),
        RoutingError::NotEligible { .. } => (403, "not_eligible"),
        RoutingError::NotAssignee { .. } => (403, "not_assignee"),
        RoutingError::BelowActive { .. } => (409, "below_active"),
        RoutingError::TeamInUse { .. } => (409, "team_in_use"),
        RoutingError::InvalidId(_) => (400, "invalid_id"),
        RoutingError::InvalidPolicy { .. } => (400, "invalid_policy"),
        RoutingError::Snapshot(_) => (500, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalConfig, JournalReader};
    use crate::pipeline::ingest::ShardSink;
    use crate::pipeline::numbers::Numbers;
    use crate::pipeline::PipelineConfig;
    use crate::routing::tests::{random_command, stress_setup_commands, Rng};
    use crate::store::Store;

    /// The serialising component for real: journal writer, pipeline shards
    /// and the routing thread, with four tasks submitting random commands at
    /// once. The routing thread audits every invariant after every command;
    /// afterwards a replay of the journal rebuilds exactly the same engine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_keep_every_invariant_and_replay_identically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db"), 8 << 20).unwrap());
        let numbers = Arc::new(Numbers::new(Vec::new(), Vec::new()));
        let jdir = dir.path().join("journal");
        let pipeline = Arc::new(
            Pipeline::start(
                store,
                numbers,
                JournalReader::new(&jdir),
                &PipelineConfig {
                    shards: 2,
                    shard_queue: 4096,
                    pin_threads: false,
                },
            )
            .unwrap(),
        );
        let settings = RoutingSettings {
            grace_ms: 2_000,
            audit: true,
            ..RoutingSettings::default()
        };
        let svc = RoutingService::start(settings, &pipeline).unwrap();
        let (journal, _) = Journal::open(JournalConfig::new(&jdir)).unwrap();
        let handle = journal.start(ShardSink::new(pipeline.clone())).unwrap();
        let ingest = Ingest::new(pipeline.clone(), handle.appender(), Duration::from_secs(30));
        let routing = Routing::new(svc.clone(), ingest);
        let mut setup = vec![Command::Configure {
            grace_ms: 2_000,
            now_ms: 0,
        }];
        setup.extend(stress_setup_commands());
        for r in routing.submit_all(setup).await.unwrap() {
            r.unwrap();
        }
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let routing = routing.clone();
            let clock = clock.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = Rng(t + 11);
                let mut next_conv = (t + 1) * 1_000_000;
                let (mut ok, mut refused) = (0usize, 0usize);
                for _ in 0..700 {
                    let now = clock.fetch_add(r.below(120) as i64, Ordering::Relaxed);
                    let cmd = {
                        let router = routing.read();
                        random_command(&mut r, router.engine(), &mut next_conv, now)
                    };
                    match routing.submit(cmd).await.unwrap() {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused, next_conv - (t + 1) * 1_000_000)
            }));
        }
        let (mut ok, mut refused, mut opened) = (0, 0, 0);
        for t in tasks {
            let (o, r, n) = t.await.unwrap();
            ok += o;
            refused += r;
            opened += n;
        }
        assert_eq!(svc.violations(), Vec::<String>::new());
        assert!(
            ok > 1_000 && refused > 50 && opened > 500,
            "{ok} {refused} {opened}"
        );
        let live = format!("{:?}", routing.read().engine());
        handle.shutdown().unwrap();
        svc.stop();
        pipeline.stop();
        // Restart: a fresh routing component rebuilt from the journal alone.
        let (journal, _) = Journal::open(JournalConfig::new(&jdir)).unwrap();
        let replica = RoutingService::start(RoutingSettings::default(), &pipeline).unwrap();
        replica.replay(&journal).unwrap();
        assert_eq!(format!("{:?}", replica.read().engine()), live);
        replica.stop();
    }
}
