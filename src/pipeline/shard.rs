//! One shard: a bounded lock-free queue drained by one pinned worker thread
//! that applies events to its conversation state and to sled.
//!
//! Invariants:
//! - Events reach a shard in LSN order (only the journal writer, or replay,
//!   dispatches), and one conversation's events always reach the same shard.
//! - The queue never blocks a producer: capacity is reserved before an event
//!   is journaled (`try_reserve`), released when the worker has applied it.
//! - A waiter is completed only after its events are in the in-memory state
//!   and their index entries in sled, so a read after the acknowledgement
//!   sees them (the records themselves are already in the journal).
//! - Applying is idempotent: dedupe keys are written insert-if-absent and
//!   carry the LSN that wrote them; the same LSN again (replay) re-derives
//!   state without writing twice, another LSN with the same key is a
//!   duplicate delivery and changes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use super::directory::Directory;
use super::numbers::Numbers;
use super::state::{Filing, ShardState};
use super::Completion;
use crate::event::{
    AccountEvent, AlertEvent, ContentHash, Direction, Event, InvalidEvent, Lsn, MessageEvent,
    OutboundRequest, Outcome, PreferenceEvent, SendOutcome, StatusEvent, UnroutedEvent,
};
use crate::journal::RecordLoc;
use crate::store::records::{
    kind, DedupeMark, Loc, MessageIndex, NumberCounters, OutboxEntry, OutboxState, PendingMark,
};
use crate::store::{keys, Inserted, Store, StoreError};
use crate::telemetry::{self, names};

/// Most events a worker folds into one sled batch.
const MAX_BATCH_EVENTS: usize = 4096;

pub(crate) enum ShardMsg {
    Apply {
        items: Vec<(Lsn, RecordLoc, Event)>,
        done: Arc<Completion>,
    },
    /// Persist dirty conversation state; reply with this shard's counters.
    Checkpoint {
        reply: Sender<Result<ShardCheckpoint, String>>,
    },
    /// A liveness probe (see `liveness`): taken in queue order.
    Probe(Arc<super::liveness::Probe>),
    /// Tests: wedge this shard until `until` is dropped.
    #[cfg(test)]
    Stall {
        entered: Sender<()>,
        until: Receiver<()>,
    },
    Stop,
}

impl ShardMsg {
    fn events(&self) -> usize {
        match self {
            ShardMsg::Apply { items, .. } => items.len(),
            _ => 0,
        }
    }
}

/// A shard's state at a checkpoint marker: what changed, and its counters.
pub(crate) struct ShardCheckpoint {
    pub counters: std::collections::HashMap<String, NumberCounters>,
    /// Changed conversations with their unsealed timeline tails.
    pub conversations: Vec<(
        crate::store::records::ConversationRecord,
        crate::store::records::TimelineEntries,
    )>,
}

/// What the rest of the process holds of a shard.
pub(crate) struct Shard {
    pub index: usize,
    pub tx: Sender<ShardMsg>,
    pub state: Arc<RwLock<ShardState>>,
    reserved: Arc<AtomicUsize>,
    capacity: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Everything a worker reads besides its own state.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub directory: Arc<Directory>,
    pub numbers: Arc<Numbers>,
    /// Where shards announce conversations they open (routing); set once.
    pub opened: std::sync::OnceLock<tokio::sync::mpsc::Sender<super::OpenNotice>>,
    /// Filed messages, for event-stream subscribers (a send without
    /// subscribers costs nothing).
    pub messages: tokio::sync::broadcast::Sender<Arc<super::MessageNotice>>,
}

impl Shared {
    fn publish(&self, notice: impl FnOnce() -> super::MessageNotice) {
        if self.messages.receiver_count() > 0 {
            let _ = self.messages.send(Arc::new(notice()));
        }
    }

    /// Tell routing a conversation opened. Never blocks a shard: a full
    /// channel drops the notice (counted); routing's reconciliation finds the
    /// conversation later.
    fn announce(&self, conv: u64, number_id: &str, customer_id: &str, route: u32) {
        if let Some(tx) = self.opened.get() {
            let notice = super::OpenNotice {
                conv,
                number_id: number_id.to_string(),
                customer_id: customer_id.to_string(),
                route,
            };
            if tx.try_send(notice).is_err() {
                metrics::counter!(names::ROUTING_NOTICES_DROPPED).increment(1);
            }
        }
    }
}

impl Shard {
    pub fn spawn(
        index: usize,
        capacity: usize,
        state: ShardState,
        shared: Arc<Shared>,
        core: Option<core_affinity::CoreId>,
    ) -> std::io::Result<Shard> {
        // Room for control messages on top of the reserved event capacity, so
        // a send after a successful reservation never blocks.
        let (tx, rx) = crossbeam::channel::bounded(capacity + 64);
        let state = Arc::new(RwLock::new(state));
        let reserved = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            index,
            rx,
            state: state.clone(),
            reserved: reserved.clone(),
            shared,
        };
        let thread = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(shard = index, "could not pin shard thread to a core");
                    }
                }
                worker.run();
            })?;
        Ok(Shard {
            index,
            tx,
            state,
            reserved,
            capacity,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Reserve queue room for `n` events; false when the shard is full.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur + n <= self.capacity).then_some(cur + n)
            })
            .is_ok()
    }

    pub fn release(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn queued(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    /// Send the stop marker (after everything queued) and join the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(ShardMsg::Stop);
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                tracing::error!(shard = self.index, "shard thread panicked");
            }
        }
    }
}

struct Worker {
    index: usize,
    rx: Receiver<ShardMsg>,
    state: Arc<RwLock<ShardState>>,
    reserved: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        let shard_label = self.index.to_string();
        let depth = metrics::gauge!(names::SHARD_QUEUE_DEPTH, "shard" => shard_label);
        let mut msgs = Vec::with_capacity(256);
        loop {
            let Ok(first) = self.rx.recv() else { return };
            let mut events = first.events();
            msgs.push(first);
            while events < MAX_BATCH_EVENTS {
                match self.rx.try_recv() {
                    Ok(m) => {
                        events += m.events();
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
            let stop = self.process(&mut msgs);
            depth.set(self.reserved.load(Ordering::Relaxed) as f64);
            if stop {
                return;
            }
        }
    }

    /// Apply a run of messages; true when a stop marker was among them.
    fn process(&self, msgs: &mut Vec<ShardMsg>) -> bool {
        let started = Instant::now();
        let mut applied = 0;
        let mut stop = false;
        for msg in msgs.drain(..) {
            match msg {
                ShardMsg::Apply { items, done } => {
                    let n = items.len();
                    let mut error = None;
                    let mut state = self.state.write();
                    for (lsn, loc, ev) in items {
                        if let Err(e) = apply_event(&self.shared, &mut state, lsn, loc, ev) {
                            metrics::counter!(names::APPLY_ERRORS).increment(1);
                            tracing::error!(shard = self.index, lsn, error = %e, "applying an event failed");
                            error = Some(e.to_string());
                        }
                    }
                    drop(state);
                    done.part_done(error);
                    self.reserved.fetch_sub(n, Ordering::AcqRel);
                    applied += n;
                }
                ShardMsg::Checkpoint { reply } => {
                    let _ = reply.send(self.checkpoint(&mut self.state.write()));
                }
                ShardMsg::Probe(probe) => probe.arrive(),
                #[cfg(test)]
                ShardMsg::Stall { entered, until } => {
                    let _ = entered.send(());
                    let _ = until.recv();
                }
                ShardMsg::Stop => stop = true,
            }
        }
        if applied > 0 {
            metrics::histogram!(names::SHARD_BATCH_EVENTS).record(applied as f64);
            metrics::histogram!(names::SHARD_APPLY_SECONDS).record(started.elapsed().as_secs_f64());
        }
        stop
    }

    /// Snapshot only: the checkpointer writes it, so the shard goes on
    /// applying at once.
    fn checkpoint(&self, state: &mut ShardState) -> Result<ShardCheckpoint, String> {
        Ok(ShardCheckpoint {
            counters: state.counters.clone(),
            conversations: state.take_dirty(),
        })
    }
}

/// Whether a dedupe key was new, written by this very LSN before (replay of
/// the same record), or by another LSN (a duplicate delivery).
enum Seen {
    New,
    Replay,
    Duplicate,
}

fn seen(inserted: Inserted, lsn: Lsn) -> Seen {
    match inserted {
        Inserted::New => Seen::New,
        Inserted::Existing(prior) if prior == lsn => Seen::Replay,
        Inserted::Existing(_) => Seen::Duplicate,
    }
}

fn duplicate(kind: &'static str) {
    metrics::counter!(names::DEDUPE_HITS, "kind" => kind).increment(1);
}

pub(crate) fn apply_event(
    sh: &Shared,
    state: &mut ShardState,
    lsn: Lsn,
    loc: RecordLoc,
    ev: Event,
) -> Result<(), StoreError> {
    let applied = match ev {
        Event::Message(m) => apply_message(sh, state, lsn, loc, m),
        Event::Status(s) => apply_status(sh, state, lsn, loc, s),
        Event::Account(a) => apply_account(sh, lsn, loc, a),
        Event::Preference(p) => apply_preference(sh, lsn, loc, p),
        Event::Unrouted(u) => apply_unrouted(sh, lsn, loc, u),
        Event::Invalid(i) => apply_invalid(sh, lsn, loc, i),
        Event::Outbound(o) => apply_outbound(sh, state, lsn, loc, o),
        Event::SendOutcome(o) => apply_outcome(sh, state, lsn, o),
        Event::Alert(a) => apply_alert(sh, lsn, loc, a),
        Event::Routing(r) => {
            // Only resolve and reopen reach a shard (see `Pipeline::dispatch`).
            match r.command {
                crate::routing::Command::Resolve { conv, .. } => state.resolve(conv, lsn),
                crate::routing::Command::Reopen { spec, .. } => {
                    state.reopen(spec.id, lsn);
                }
                _ => {}
            }
            Ok(())
        }
    };
    // Written under the shard's write lock (see `ShardState::take_sealed`).
    for (conv, chunk) in state.take_sealed() {
        sh.store.put_timeline_chunk(conv, &chunk)?;
    }
    applied
}

/// An outbound request: file it in its conversation, open its outbox entry
/// and mark it pending. Every write is a put keyed by the request's LSN, so
/// replay rewrites the same values; a later outcome (replayed after it)
/// moves it on again.
fn apply_outbound(
    sh: &Shared,
    state: &mut ShardState,
    lsn: Lsn,
    loc: RecordLoc,
    o: OutboundRequest,
) -> Result<(), StoreError> {
    let at = o.created_at_ms.div_euclid(1000);
    sh.directory.observe(lsn, &o.customer, at, None);
    let conv = state.conversation_of(lsn, &o.number_id, &o.customer.home);
    let opened = state.file(
        conv,
        lsn,
        &Filing {
            number_id: &o.number_id,
            customer_id: &o.customer.home,
            route: o.route,
            timestamp: at,
            loc,
            from_customer: false,
        },
    );
    if opened {
        sh.announce(conv, &o.number_id, &o.customer.home, o.route);
    }
    sh.publish(|| super::MessageNotice {
        lsn,
        conv,
        number_id: o.number_id.clone(),
        customer_id: o.customer.home.clone(),
        direction: "out",
        id: format!("o{lsn}"),
        kind: o.kind.clone(),
        submitted_by: Some(o.submitted_by.clone()),
    });
    let entry = OutboxEntry {
        conv_id: conv,
        number_id: o.number_id.clone(),
        priority: o.priority,
        loc: loc.into(),
        created_at_ms: o.created_at_ms,
        state: OutboxState::Queued,
        updated_at_ms: o.created_at_ms,
    };
    if sh
        .store
        .outbox(lsn)?
        .is_none_or(|e| e.state == OutboxState::Queued)
    {
        sh.store
            .put(&keys::outbox(lsn), kind::OUTBOX, lsn, &entry)?;
        let recipient = o
            .customer
            .user_id
            .clone()
            .or(o.customer.wa_id.clone())
            .unwrap_or_default();
        let mark = PendingMark {
            number_id: o.number_id,
            recipient,
            priority: o.priority,
            loc: loc.into(),
            created_at_ms: o.created_at_ms,
            started: 0,
        };
        sh.store
            .put(&keys::pending(lsn), kind::PENDING, lsn, &mark)?;
    }
    metrics::counter!(names::OUTBOUND_REQUESTS, "priority" => o.priority.as_str()).increment(1);
    Ok(())
}

fn apply_outcome(
    sh: &Shared,
    state: &mut ShardState,
    lsn: Lsn,
    o: SendOutcome,
) -> Result<(), StoreError> {
    let Some(mut entry) = sh.store.outbox(o.request)? else {
        tracing::error!(
            request = o.request,
            "send outcome for an unknown outbound request"
        );
        return Ok(());
    };
    match o.outcome {
        Outcome::Started { attempt } => {
            if let Some(mut mark) = sh.store.pending(o.request)? {
                mark.started = mark.started.max(attempt);
                sh.store
                    .put(&keys::pending(o.request), kind::PENDING, lsn, &mark)?;
            }
        }
        Outcome::Accepted { wamid } => {
            let index = MessageIndex {
                conv_id: entry.conv_id,
                timestamp: entry.created_at_ms.div_euclid(1000),
                lsn: o.request,
                loc: entry.loc,
            };
            // The wamid now finds the message (statuses that came first are already keyed by it).
            sh.store
                .insert_new(&keys::message(&wamid), kind::MESSAGE, lsn, &index)?;
            if entry.state == OutboxState::Queued {
                state.counters_mut(&entry.number_id).outbound_messages += 1;
            }
            entry.state = OutboxState::Sent { wamid };
            entry.updated_at_ms = o.at_ms;
            sh.store
                .put(&keys::outbox(o.request), kind::OUTBOX, lsn, &entry)?;
            sh.store.remove(&keys::pending(o.request))?;
        }
        Outcome::Failed {
            code,
            title,
            reason,
        } => {
            entry.state = OutboxState::Failed {
                code,
                title,
                reason,
            };
            entry.updated_at_ms = o.at_ms;
            sh.store
                .put(&keys::outbox(o.request), kind::OUTBOX, lsn, &entry)?;
            sh.store.remove(&keys::pending(o.request))?;
        }
    }
    Ok(())
}

fn apply_alert(sh: &Shared, lsn: Lsn, loc: RecordLoc, a: AlertEvent) -> Result<(), StoreError> {
    metrics::counter!(names::ALERTS, "kind" => telemetry::alert_kind_label(&a.kind)).increment(1);
    sh.store
        .put(&keys::event(lsn), kind::ALERT, lsn, &Loc::from(loc))
}

fn apply_message(
    sh: &Shared,
    state: &mut ShardState,
    lsn: Lsn,
    loc: RecordLoc,
    m: MessageEvent,
) -> Result<(), StoreError> {
    let key = keys::message(&m.wamid);
    // The conversation a new message would be filed under; the dedupe check
    // and the archive entry are one insert-if-absent.
    let conv = state.conversation_for(lsn, &m);
    let index = MessageIndex {
        conv_id: conv,
        timestamp: m.timestamp,
        lsn,
        loc: loc.into(),
    };
    let seen = seen(sh.store.insert_new(&key, kind::MESSAGE, lsn, &index)?, lsn);
    if matches!(seen, Seen::Duplicate) {
        duplicate("message");
        return Ok(());
    }
    sh.directory
        .observe(lsn, &m.customer, m.timestamp, m.referral.as_ref());
    if let Some(change) = &m.system {
        sh.directory.apply_system(&m.customer.home, change);
    }
    if state.file_message(conv, lsn, loc, &m) {
        sh.announce(conv, &m.number_id, &m.customer.home, m.route);
    }
    sh.publish(|| super::MessageNotice {
        lsn,
        conv,
        number_id: m.number_id.clone(),
        customer_id: m.customer.home.clone(),
        direction: m.direction.as_str(),
        id: m.wamid.clone(),
        kind: m.kind.clone(),
        submitted_by: None,
    });
    let counters = state.counters_mut(&m.number_id);
    match m.direction {
        Direction::In => {
            counters.inbound_messages += 1;
            counters.last_inbound_at = counters.last_inbound_at.max(Some(m.timestamp));
        }
        Direction::Out => counters.outbound_messages += 1,
    }
    metrics::counter!(names::MESSAGES, "type" => telemetry::message_type_label(&m.kind), "direction" => m.direction.as_str())
        .increment(1);
    Ok(())
}

fn apply_status(
    sh: &Shared,
    state: &mut ShardState,
    lsn: Lsn,
    loc: RecordLoc,
    s: StatusEvent,
) -> Result<(), StoreError> {
    let key = keys::status(&s.wamid, &s.status);
    let loc: Loc = loc.into();
    if matches!(
        seen(sh.store.insert_new(&key, kind::STATUS, lsn, &loc)?, lsn),
        Seen::Duplicate
    ) {
        duplicate("status");
        return Ok(());
    }
    // Counters since start exclude the persisted base, so a replayed status counts too.
    state.counters_mut(&s.number_id).statuses += 1;
    metrics::counter!(names::STATUSES, "status" => telemetry::status_label(&s.status)).increment(1);
    Ok(())
}

/// Events without an id of their own: deduplicated by content hash and
/// listed by LSN.
trait Hashed {
    const KIND: u16;
    const LABEL: &'static str;
    fn dedupe(&self) -> &ContentHash;
    fn received_at_ms(&self) -> i64;
}

macro_rules! hashed {
    ($ty:ty, $kind:expr, $label:literal) => {
        impl Hashed for $ty {
            const KIND: u16 = $kind;
            const LABEL: &'static str = $label;
            fn dedupe(&self) -> &ContentHash {
                &self.dedupe
            }
            fn received_at_ms(&self) -> i64 {
                self.received_at_ms
            }
        }
    };
}

hashed!(AccountEvent, kind::ACCOUNT, "account");
hashed!(PreferenceEvent, kind::PREFERENCE, "preference");
hashed!(UnroutedEvent, kind::UNROUTED, "unrouted");
hashed!(InvalidEvent, kind::INVALID, "invalid");

/// Dedupe by content hash, then list the event under its LSN.
fn store_hashed<T: Hashed>(
    sh: &Shared,
    lsn: Lsn,
    loc: RecordLoc,
    ev: &T,
) -> Result<Seen, StoreError> {
    let mark = DedupeMark {
        received_at_ms: ev.received_at_ms(),
    };
    let seen = seen(
        sh.store
            .insert_new(&keys::dedupe(ev.dedupe()), kind::DEDUPE, lsn, &mark)?,
        lsn,
    );
    match seen {
        Seen::Duplicate => duplicate(T::LABEL),
        Seen::Replay | Seen::New => {
            sh.store
                .put(&keys::event(lsn), T::KIND, lsn, &Loc::from(loc))?
        }
    }
    Ok(seen)
}

fn apply_account(sh: &Shared, lsn: Lsn, loc: RecordLoc, a: AccountEvent) -> Result<(), StoreError> {
    let seen = store_hashed(sh, lsn, loc, &a)?;
    if matches!(seen, Seen::Duplicate) {
        return Ok(());
    }
    if matches!(seen, Seen::New) {
        metrics::counter!(names::ACCOUNT_EVENTS, "field" => telemetry::field_label(&a.field))
            .increment(1);
    }
    if a.field == "phone_number_quality_update" {
        if let Some(number) = &a.number_id {
            sh.numbers.apply_quality(
                number,
                lsn,
                a.event.as_deref(),
                a.detail.as_deref(),
                a.timestamp,
            );
        }
    }
    Ok(())
}

fn apply_preference(
    sh: &Shared,
    lsn: Lsn,
    loc: RecordLoc,
    p: PreferenceEvent,
) -> Result<(), StoreError> {
    let seen = store_hashed(sh, lsn, loc, &p)?;
    if matches!(seen, Seen::Duplicate) {
        return Ok(());
    }
    if matches!(seen, Seen::New) {
        metrics::counter!(names::ACCOUNT_EVENTS, "field" => "user_preferences").increment(1);
    }
    sh.directory.observe(lsn, &p.customer, p.timestamp, None);
    sh.directory
        .apply_preference(&p.customer.home, &p.category, &p.value, p.timestamp);
    Ok(())
}

fn apply_unrouted(
    sh: &Shared,
    lsn: Lsn,
    loc: RecordLoc,
    u: UnroutedEvent,
) -> Result<(), StoreError> {
    if matches!(store_hashed(sh, lsn, loc, &u)?, Seen::New) {
        metrics::counter!(names::UNROUTED).increment(1);
    }
    Ok(())
}

fn apply_invalid(sh: &Shared, lsn: Lsn, loc: RecordLoc, i: InvalidEvent) -> Result<(), StoreError> {
    if matches!(store_hashed(sh, lsn, loc, &i)?, Seen::New) {
        metrics::counter!(names::INVALID_ITEMS, "reason" => telemetry::invalid_reason_label(&i.reason)).increment(1);
    }
    Ok(())
}
