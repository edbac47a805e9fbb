//! The acknowledgement path: route, reserve, journal, wait for apply.
//!
//! Invariants:
//! - A delivery is acknowledged only after every event it carried is in a
//!   journal batch that was fdatasync'ed AND applied by its shard.
//! - Shard room is reserved before journaling, so the journal writer never
//!   waits on a shard; a full shard or journal queue is a 503 up front.
//! - Replay feeds journal records through the same `Pipeline::dispatch`,
//!   chunk by chunk, waiting for each chunk: memory stays bounded.

use std::sync::Arc;
use std::time::Duration;

use super::{Completion, Failure, Pipeline, PipelineError, Receipt};
use crate::event::{Event, Lsn};
use crate::journal::{AppendError, Appender, Journal, JournalError, Record, RecordLoc, Sink};
use crate::telemetry::names;

/// What a journal append carries besides the records.
pub struct IngestCtx {
    events: Vec<Event>,
    counts: Vec<(usize, usize)>,
    done: Arc<Completion>,
}

/// Journal sink: hands durable events to the shards (on the writer thread).
pub struct ShardSink {
    pipeline: Arc<Pipeline>,
}

impl ShardSink {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        ShardSink { pipeline }
    }
}

impl Sink<IngestCtx> for ShardSink {
    fn durable(&mut self, first_lsn: Lsn, locs: &[RecordLoc], ctx: IngestCtx) {
        ctx.done.set_receipt(Receipt {
            first_lsn,
            locs: locs.to_vec(),
            routing: Vec::new(),
        });
        let items = ctx
            .events
            .into_iter()
            .zip(locs)
            .enumerate()
            .map(|(i, (ev, loc))| (first_lsn + i as u64, *loc, ev));
        self.pipeline.dispatch(items, &ctx.done);
    }

    fn failed(&mut self, ctx: IngestCtx, err: &JournalError) {
        self.pipeline.release(&ctx.counts);
        ctx.done.fail(Failure::Journal(err.to_string()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A shard queue or the journal queue is full: retry later.
    #[error("overloaded: queues are full")]
    Overloaded,
    #[error("shutting down")]
    Closed,
    #[error("a record is larger than the journal accepts")]
    TooLarge,
    #[error("encoding an event failed: {0}")]
    Encode(String),
    #[error("{0}")]
    Failed(Failure),
    /// Durable (or about to be) but not applied within the deadline.
    #[error("not applied within {0:?}")]
    Timeout(Duration),
}

/// The front door's handle on the pipeline.
#[derive(Clone)]
pub struct Ingest {
    pipeline: Arc<Pipeline>,
    journal: Appender<IngestCtx>,
    timeout: Duration,
}

impl Ingest {
    pub fn new(pipeline: Arc<Pipeline>, journal: Appender<IngestCtx>, timeout: Duration) -> Self {
        Ingest {
            pipeline,
            journal,
            timeout,
        }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    pub fn journal(&self) -> &Appender<IngestCtx> {
        &self.journal
    }

    /// Make `events` durable and applied; returns where they went.
    pub async fn submit(&self, mut events: Vec<Event>) -> Result<Receipt, IngestError> {
        if events.is_empty() {
            return Ok(Receipt::default());
        }
        self.pipeline.route(&mut events);
        let mut records = Vec::with_capacity(events.len());
        for ev in &events {
            let payload = ev
                .encode()
                .map_err(|e| IngestError::Encode(e.to_string()))?;
            records.push(Record {
                kind: ev.kind(),
                version: ev.version(),
                payload,
            });
        }
        let counts = self.pipeline.shard_counts(&events);
        if !self.pipeline.reserve(&counts) {
            return Err(IngestError::Overloaded);
        }
        let (done, rx) = Completion::new(counts.len());
        let ctx = IngestCtx {
            events,
            counts,
            done: done.clone(),
        };
        if let Err(e) = self.journal.append(records, ctx) {
            let (ctx, err) = match e {
                AppendError::Full(ctx) => (ctx, IngestError::Overloaded),
                AppendError::Closed(ctx) => (ctx, IngestError::Closed),
                AppendError::TooLarge(ctx) => (ctx, IngestError::TooLarge),
            };
            self.pipeline.release(&ctx.counts);
            return Err(err);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(done.take_receipt().unwrap_or_default()),
            Ok(Ok(Err(failure))) => Err(IngestError::Failed(failure)),
            Ok(Err(_)) => Err(IngestError::Failed(Failure::Apply(
                "the pipeline dropped the request".into(),
            ))),
            Err(_) => Err(IngestError::Timeout(self.timeout)),
        }
    }
}

/// Records replayed per chunk (each chunk is applied before the next is read).
const REPLAY_CHUNK: usize = 1024;

/// Re-apply every journal record at or after `from`. Call before the writer
/// starts, from a thread outside the async runtime.
pub fn replay(
    pipeline: &Pipeline,
    journal: &Journal,
    from: Lsn,
    shard_queue: usize,
) -> Result<u64, PipelineError> {
    let chunk_size = REPLAY_CHUNK.min(shard_queue.max(1));
    let mut chunk: Vec<(Lsn, RecordLoc, Event)> = Vec::with_capacity(chunk_size);
    let mut applied = 0u64;
    let flush = |chunk: &mut Vec<(Lsn, RecordLoc, Event)>| -> Result<(), PipelineError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let counts = pipeline.shard_counts(chunk.iter().map(|(_, _, e)| e));
        // The previous chunk is fully applied, so a chunk no larger than a
        // shard queue always fits.
        if !pipeline.reserve(&counts) {
            return Err(PipelineError::Apply(
                "shard queues full during replay".into(),
            ));
        }
        let (done, rx) = Completion::new(counts.len());
        pipeline.dispatch(chunk.drain(..), &done);
        match rx.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) => Err(PipelineError::Apply(f.to_string())),
            Err(_) => Err(PipelineError::Apply("shard stopped during replay".into())),
        }
    };
    journal
        .replay(
            from,
            |lsn, loc, kind, version, payload| -> Result<(), PipelineError> {
                let ev = Event::decode(kind, version, payload).map_err(|e| {
                    PipelineError::Apply(format!(
                        "journal record {lsn} passed its checksum but cannot be decoded: {e}"
                    ))
                })?;
                chunk.push((lsn, loc, ev));
                applied += 1;
                if chunk.len() >= chunk_size {
                    flush(&mut chunk)?;
                }
                Ok(())
            },
        )
        .map_err(|e| PipelineError::Apply(format!("replay: {e}")))?;
    flush(&mut chunk)?;
    metrics::counter!(names::REPLAYED_RECORDS).increment(applied);
    Ok(applied)
}
