//! The sharded pipeline: routes events to shards, applies them in order, and
//! completes the waiting request once everything it carried is applied.
//!
//! Journey of a delivery: `route` decides each event's customer and shard;
//! the caller reserves queue room (`reserve`), appends the encoded events to
//! the journal, and the journal writer calls `dispatch` (on its own thread, in
//! LSN order) once they are durable; each shard applies its part and the
//! request's `Completion` fires when all parts are done.
//!
//! Invariants (see also `shard`): shard = route % shards, where route =
//! crc32c(number id, customer id) is fixed before journaling, so one
//! conversation's events are applied in journal order by one thread; every
//! queue is bounded and a full one is refused up front, never waited on.

pub mod checkpoint;
pub mod directory;
pub mod ingest;
pub mod liveness;
pub mod numbers;
pub(crate) mod shard;
pub mod state;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLockReadGuard};
use tokio::sync::oneshot;

use crate::event::{Event, Lsn};
use crate::journal::{JournalReader, RecordLoc};
use crate::store::records::{ConversationRecord, TimelineEntry};
use crate::store::Store;
use directory::Directory;
use numbers::Numbers;
use shard::{Shard, ShardMsg, Shared};
use state::ShardState;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Number of shards (>= 1).
    pub shards: usize,
    /// Events a shard may hold queued before deliveries are refused.
    pub shard_queue: usize,
    /// Pin each shard thread to a core.
    pub pin_threads: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("loading state from the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("starting a shard thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("applying events failed: {0}")]
    Apply(String),
}

/// Why a request's events did not all get applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Not durable: the journal write or fsync failed. Safe to retry.
    #[error("journal: {0}")]
    Journal(String),
    /// Durable, but a shard could not write it to the store; replay will.
    #[error("apply: {0}")]
    Apply(String),
}

/// Tracks one request's parts (one per shard it touched) and wakes the
/// request when the last is applied, with the first error if any.
pub struct Completion {
    remaining: AtomicUsize,
    error: Mutex<Option<Failure>>,
    tx: Mutex<Option<oneshot::Sender<Result<(), Failure>>>>,
    /// Where the request's records went, set once they are durable.
    receipt: Mutex<Option<Receipt>>,
}

/// The journal positions of a request's records, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    pub first_lsn: Lsn,
    pub locs: Vec<RecordLoc>,
    /// What the routing engine answered to each routing command, in order.
    pub routing: Vec<crate::routing::CommandResult>,
}

impl Completion {
    pub fn new(parts: usize) -> (Arc<Completion>, oneshot::Receiver<Result<(), Failure>>) {
        let (tx, rx) = oneshot::channel();
        let c = Arc::new(Completion {
            remaining: AtomicUsize::new(parts),
            error: Mutex::new(None),
            tx: Mutex::new(Some(tx)),
            receipt: Mutex::new(None),
        });
        if parts == 0 {
            c.finish();
        }
        (c, rx)
    }

    fn finish(&self) {
        if let Some(tx) = self.tx.lock().take() {
            let result = match self.error.lock().take() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            let _ = tx.send(result);
        }
    }

    /// Record where the request's records went (before they are dispatched).
    pub fn set_receipt(&self, receipt: Receipt) {
        *self.receipt.lock() = Some(receipt);
    }

    /// Results of routing commands (the routing component, before its part
    /// is done).
    pub fn push_routing(&self, results: Vec<crate::routing::CommandResult>) {
        self.receipt
            .lock()
            .get_or_insert_with(Receipt::default)
            .routing
            .extend(results);
    }

    pub fn take_receipt(&self) -> Option<Receipt> {
        self.receipt.lock().take()
    }

    /// One shard finished its part.
    pub fn part_done(&self, error: Option<String>) {
        if let Some(e) = error {
            self.error.lock().get_or_insert(Failure::Apply(e));
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    /// The whole request failed before reaching the shards.
    pub fn fail(&self, error: Failure) {
        self.error.lock().get_or_insert(error);
        self.finish();
    }
}

/// The stable routing hash of a (number, customer) pair.
pub fn route_hash(number_id: &str, customer_id: &str) -> u32 {
    let h = crc32c::crc32c_append(crc32c::crc32c(number_id.as_bytes()), &[0]);
    crc32c::crc32c_append(h, customer_id.as_bytes())
}

/// A conversation a shard opened, for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenNotice {
    pub conv: u64,
    pub number_id: String,
    pub customer_id: String,
    pub route: u32,
}

/// A message filed in a conversation (for the event stream).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageNotice {
    pub lsn: Lsn,
    pub conv: u64,
    pub number_id: String,
    pub customer_id: String,
    /// `in` (from the customer) or `out`.
    pub direction: &'static str,
    /// wamid, or `o{lsn}` for an outbound request not yet accepted.
    pub id: String,
    pub kind: String,
    /// Who sent an outbound request (`admin`, an agent id, ...).
    pub submitted_by: Option<String>,
}

/// Messages buffered for event-stream subscribers; one that falls further
/// behind is disconnected.
pub const MESSAGE_EVENTS: usize = 4096;

/// The routing component as the pipeline sees it: a bounded, ordered
/// consumer of durable routing commands (kind 10), fed only by the journal
/// writer (or replay), so it applies them in LSN order.
pub trait RoutingSink: Send + Sync {
    /// Reserve room for `n` commands (all or nothing), before journaling.
    fn try_reserve(&self, n: usize) -> bool;
    fn release(&self, n: usize);
    /// Durable commands, in LSN order; complete one part of `done` when
    /// applied. Room was reserved.
    fn apply(&self, items: Vec<(Lsn, crate::routing::Command)>, done: Arc<Completion>);
}

pub struct Pipeline {
    shared: Arc<Shared>,
    shards: Arc<[Shard]>,
    reader: JournalReader,
    routing: std::sync::OnceLock<Arc<dyn RoutingSink>>,
}

impl Pipeline {
    /// Load customers and conversations persisted at the last checkpoint and
    /// start the shard threads.
    pub fn start(
        store: Arc<Store>,
        numbers: Arc<Numbers>,
        reader: JournalReader,
        cfg: &PipelineConfig,
    ) -> Result<Pipeline, PipelineError> {
        let n = cfg.shards.max(1);
        let directory = Arc::new(Directory::load(store.load_customers()?));
        let mut states: Vec<ShardState> = (0..n).map(|_| ShardState::default()).collect();
        for conv in store.load_conversations()? {
            states[conv.route as usize % n].insert_loaded(conv);
        }
        for (conv, tail) in store.load_timeline_tails()? {
            if let Some(state) = states.iter_mut().find(|s| s.get(conv).is_some()) {
                state.insert_loaded_tail(conv, tail);
            }
        }
        let shared = Arc::new(Shared {
            store,
            directory,
            numbers,
            opened: std::sync::OnceLock::new(),
            messages: tokio::sync::broadcast::channel(MESSAGE_EVENTS).0,
        });
        let cores = if cfg.pin_threads {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut shards = Vec::with_capacity(n);
        for (i, state) in states.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            shards.push(Shard::spawn(
                i,
                cfg.shard_queue.max(1),
                state,
                shared.clone(),
                core,
            )?);
        }
        let p = Pipeline {
            shared,
            shards: shards.into(),
            reader,
            routing: std::sync::OnceLock::new(),
        };
        p.update_gauges();
        Ok(p)
    }

    /// Reads archived records (messages, statuses, events) from the journal.
    /// Connect the routing component: it receives every routing command,
    /// and shards announce the conversations they open on `opened`. Once.
    pub fn attach_routing(
        &self,
        sink: Arc<dyn RoutingSink>,
        opened: tokio::sync::mpsc::Sender<OpenNotice>,
    ) {
        let _ = self.routing.set(sink);
        let _ = self.shared.opened.set(opened);
    }

    /// Messages as shards file them (live; nothing is kept for late
    /// subscribers).
    pub fn subscribe_messages(&self) -> tokio::sync::broadcast::Receiver<Arc<MessageNotice>> {
        self.shared.messages.subscribe()
    }

    pub fn journal_reader(&self) -> &JournalReader {
        &self.reader
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.shared.directory
    }

    pub fn numbers(&self) -> &Arc<Numbers> {
        &self.shared.numbers
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn shard_of(&self, route: u32) -> usize {
        route as usize % self.shards.len()
    }

    /// Decide each event's customer and route. Message, status and preference
    /// events are keyed by (our number, customer); the parser already routed
    /// the others.
    pub fn route(&self, events: &mut [Event]) {
        let dir = &self.shared.directory;
        for ev in events {
            match ev {
                Event::Message(m) => {
                    m.customer.home = dir.home_for(&m.customer);
                    m.route = route_hash(&m.number_id, &m.customer.home);
                }
                Event::Status(s) => {
                    s.customer.home = dir.home_for(&s.customer);
                    s.route = route_hash(&s.number_id, &s.customer.home);
                }
                Event::Preference(p) => {
                    p.customer.home = dir.home_for(&p.customer);
                    p.route = route_hash(&p.number_id, &p.customer.home);
                }
                Event::Outbound(o) => {
                    o.customer.home = dir.home_for(&o.customer);
                    o.route = route_hash(&o.number_id, &o.customer.home);
                }
                // Outcomes carry their request's route; the rest were routed
                // where they were made.
                Event::Account(_)
                | Event::Unrouted(_)
                | Event::Invalid(_)
                | Event::SendOutcome(_)
                | Event::Alert(_)
                | Event::Routing(_) => {}
            }
        }
    }

    /// Events per shard for `events` (already routed), as (shard, count).
    pub fn shard_counts<'e>(
        &self,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Vec<(usize, usize)> {
        // The last slot is the routing component.
        let mut counts = vec![0usize; self.shards.len() + 1];
        for ev in events {
            match ev {
                Event::Routing(r) => {
                    counts[self.shards.len()] += 1;
                    if let Some(route) = r.conv_route {
                        counts[self.shard_of(route)] += 1;
                    }
                }
                _ => counts[self.shard_of(ev.route())] += 1,
            }
        }
        counts
            .into_iter()
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Reserve queue room on every shard of `counts`, all or nothing.
    pub fn reserve(&self, counts: &[(usize, usize)]) -> bool {
        for (i, (shard, n)) in counts.iter().enumerate() {
            if !self.try_reserve_part(*shard, *n) {
                self.release(&counts[..i]);
                metrics::counter!(crate::telemetry::names::SHARD_REJECTED).increment(1);
                return false;
            }
        }
        true
    }

    pub fn release(&self, counts: &[(usize, usize)]) {
        for (s, n) in counts {
            match self.shards.get(*s) {
                Some(shard) => shard.release(*n),
                None => {
                    if let Some(r) = self.routing.get() {
                        r.release(*n);
                    }
                }
            }
        }
    }

    fn try_reserve_part(&self, part: usize, n: usize) -> bool {
        match self.shards.get(part) {
            Some(shard) => shard.try_reserve(n),
            // Without a routing component attached, routing commands cannot
            // be applied: refuse rather than lose them.
            None => self.routing.get().is_some_and(|r| r.try_reserve(n)),
        }
    }

    /// Hand durable events to their shards, in LSN order. Room must have
    /// been reserved; `done` must expect one part per shard touched.
    pub fn dispatch(
        &self,
        items: impl IntoIterator<Item = (Lsn, RecordLoc, Event)>,
        done: &Arc<Completion>,
    ) {
        let mut groups: Vec<Vec<(Lsn, RecordLoc, Event)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut routing = Vec::new();
        for (lsn, loc, ev) in items {
            if let Event::Routing(r) = &ev {
                routing.push((lsn, r.command.clone()));
                if r.conv_route.is_none() {
                    continue;
                }
            }
            let shard = self.shard_of(ev.route());
            groups[shard].push((lsn, loc, ev));
        }
        if !routing.is_empty() {
            match self.routing.get() {
                Some(r) => r.apply(routing, done.clone()),
                None => done.part_done(Some("no routing component".into())),
            }
        }
        for (shard, items) in groups.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            if self.shards[shard]
                .tx
                .send(ShardMsg::Apply {
                    items,
                    done: done.clone(),
                })
                .is_err()
            {
                done.part_done(Some("shard stopped".into()));
            }
        }
    }

    /// The open conversation of one of our numbers with a customer (by id).
    pub fn open_conversation(
        &self,
        number_id: &str,
        customer_id: &str,
    ) -> Option<crate::store::records::ConversationRecord> {
        let shard = self.shard_of(route_hash(number_id, customer_id));
        self.shards[shard]
            .state
            .read()
            .open_conversation(number_id, customer_id)
            .cloned()
    }

    /// The unsealed end of a conversation's timeline, from its shard.
    pub fn timeline_tail(&self, conv: &ConversationRecord) -> Vec<TimelineEntry> {
        self.shards[self.shard_of(conv.route)]
            .state
            .read()
            .timeline_tail(conv.id)
    }

    /// Read access to every shard's state, one at a time.
    pub fn shards(&self) -> impl Iterator<Item = RwLockReadGuard<'_, ShardState>> {
        self.shards.iter().map(|s| s.state.read())
    }

    /// Events queued across shards.
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.queued()).sum()
    }

    pub(crate) fn shard_senders(&self) -> Vec<crossbeam::channel::Sender<ShardMsg>> {
        self.shards.iter().map(|s| s.tx.clone()).collect()
    }

    pub fn update_gauges(&self) {
        let convs: usize = self.shards().map(|s| s.len()).sum();
        metrics::gauge!(crate::telemetry::names::CONVERSATIONS).set(convs as f64);
        metrics::gauge!(crate::telemetry::names::CUSTOMERS).set(self.shared.directory.len() as f64);
        metrics::gauge!(crate::telemetry::names::STORE_DISK_BYTES)
            .set(self.shared.store.size_on_disk() as f64);
    }

    /// Stop every shard after what is queued, and join the threads.
    pub fn stop(&self) {
        for s in self.shards.iter() {
            s.stop();
        }
    }
}
