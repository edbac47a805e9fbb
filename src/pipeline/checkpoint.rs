//! Checkpoints: make the indexed state durable and let the journal shrink.
//!
//! A checkpoint (1) asks the journal writer for a barrier, which injects a
//! marker into every shard queue right after the last durable record D, so
//! each shard has applied exactly the records <= D when it sees the marker;
//! (2) each shard hands over a snapshot of its dirty conversations (with
//! their unsealed timeline tails) and its counters (and goes on applying);
//! (3) the checkpointer writes those conversations and tails and the dirty
//! customers, key by key (a sled batch would
//! take sled's global lock and stall every shard); (4) number records and the
//! replay position D+1 are written in ONE batch, so the counters and the
//! position they match are never split; (5) sled is flushed and its files
//! fsynced.
//!
//! Journal segments are not deleted: the journal is the message archive
//! (sled indexes into it); retention removes old segments and their index
//! entries together.
//!
//! Invariant: the replay position moves forward only after everything it
//! covers is durable in sled. Records after it may also be in sled already;
//! apply is idempotent, so replaying them is harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, unbounded, RecvTimeoutError, Sender};

use super::ingest::IngestCtx;
use super::shard::ShardMsg;
use super::Pipeline;
use crate::event::Lsn;
use crate::journal::Appender;
use crate::store::records::{
    kind, ConversationRecord, CustomerRecord, NumberCounters, TimelineEntries,
};
use crate::store::{keys, StoreError, Writes};
use crate::telemetry::names;

/// Where replay starts, kept in sled next to the state it matches.
const CHECKPOINT_KEY: &str = "checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the journal writer is gone")]
    JournalClosed,
    #[error("shard: {0}")]
    Shard(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The LSN replay must start from (1 for a new store).
pub fn replay_position(store: &crate::store::Store) -> Result<Lsn, StoreError> {
    Ok(store.meta_u64(CHECKPOINT_KEY)?.unwrap_or(1))
}

/// State snapshots taken from the shards and the directory but not yet
/// written: a failed checkpoint keeps them for the next attempt, since
/// they are no longer marked dirty where they came from.
#[derive(Default)]
pub struct Unwritten {
    conversations: Vec<(ConversationRecord, TimelineEntries)>,
    customers: Vec<CustomerRecord>,
}

/// Run one checkpoint; returns the new replay position.
pub fn checkpoint(
    pipeline: &Pipeline,
    journal: &Appender<IngestCtx>,
    unwritten: &mut Unwritten,
) -> Result<Lsn, CheckpointError> {
    let started = Instant::now();
    let (lsn_tx, lsn_rx) = bounded::<Lsn>(1);
    let (reply_tx, reply_rx) = unbounded();
    let senders = pipeline.shard_senders();
    journal
        .barrier(Box::new(move |durable: Lsn| {
            for s in &senders {
                let _ = s.send(ShardMsg::Checkpoint {
                    reply: reply_tx.clone(),
                });
            }
            let _ = lsn_tx.send(durable);
        }))
        .map_err(|_| CheckpointError::JournalClosed)?;
    let durable = lsn_rx.recv().map_err(|_| CheckpointError::JournalClosed)?;
    let mut deltas: HashMap<String, NumberCounters> = HashMap::new();
    let store = pipeline.store();
    let mut shard_error = None;
    for _ in 0..pipeline.shard_count() {
        match reply_rx.recv() {
            Ok(Ok(part)) => {
                for (number, c) in part.counters {
                    deltas.entry(number).or_default().add(&c);
                }
                // Appended after older unwritten versions, so newer ones win.
                unwritten.conversations.extend(part.conversations);
            }
            Ok(Err(e)) => shard_error = Some(CheckpointError::Shard(e)),
            Err(_) => shard_error = Some(CheckpointError::Shard("a shard stopped".into())),
        }
    }
    unwritten
        .customers
        .extend(pipeline.directory().take_dirty());
    if let Some(e) = shard_error {
        return Err(e);
    }
    let (conversations, customers) = (unwritten.conversations.len(), unwritten.customers.len());
    for (conv, tail) in &unwritten.conversations {
        store.put(&keys::conversation(conv.id), kind::CONVERSATION, 0, conv)?;
        store.put_timeline_tail(conv.id, tail)?;
    }
    for c in &unwritten.customers {
        store.put(&keys::customer(&c.id), kind::CUSTOMER, 0, c)?;
    }
    let position = durable + 1;
    let mut w = Writes::default();
    for rec in pipeline.numbers().checkpoint_records(&deltas) {
        w.put(&keys::number(&rec.number_id), kind::NUMBER, 0, &rec)?;
    }
    w.put_raw(&keys::meta(CHECKPOINT_KEY), &position.to_be_bytes());
    store.apply(w)?;
    store.sync()?;
    unwritten.conversations.clear();
    unwritten.customers.clear();
    pipeline.update_gauges();
    tracing::debug!(position, conversations, customers, "checkpoint written");
    metrics::gauge!(names::CHECKPOINT_LSN).set(position as f64);
    metrics::histogram!(names::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(position)
}

/// Runs checkpoints on a timer, and prunes old dedupe marks now and then.
pub struct Checkpointer {
    stop: Sender<()>,
    thread: Option<JoinHandle<Unwritten>>,
}

impl Checkpointer {
    pub fn spawn(
        pipeline: Arc<Pipeline>,
        journal: Appender<IngestCtx>,
        interval: Duration,
        dedupe_days: u32,
    ) -> std::io::Result<Checkpointer> {
        let (stop, stop_rx) = bounded::<()>(1);
        let thread = std::thread::Builder::new().name("checkpointer".into()).spawn(move || {
            let mut last = journal.last_durable_lsn();
            let mut unwritten = Unwritten::default();
            let mut last_prune = Instant::now();
            loop {
                match stop_rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return unwritten,
                }
                let durable = journal.last_durable_lsn();
                if durable != last {
                    match checkpoint(&pipeline, &journal, &mut unwritten) {
                        Ok(_) => last = durable,
                        Err(e) => {
                            metrics::counter!(names::CHECKPOINT_ERRORS).increment(1);
                            tracing::error!(error = %e, "checkpoint failed; the previous one stays in force");
                        }
                    }
                }
                if last_prune.elapsed() >= Duration::from_secs(3600) {
                    last_prune = Instant::now();
                    let horizon = now_ms() - i64::from(dedupe_days) * 86_400_000;
                    match pipeline.store().prune_dedupe(horizon) {
                        Ok(n) if n > 0 => tracing::info!(removed = n, "pruned expired dedupe marks"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning dedupe marks failed"),
                    }
                }
            }
        })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the timer thread; the caller runs the final checkpoint itself,
    /// with what a failed checkpoint left unwritten.
    pub fn stop(mut self) -> Unwritten {
        let _ = self.stop.send(());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
