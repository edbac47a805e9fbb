//! The group-commit writer: one thread owns the current segment file.
//!
//! Producers ([`Appender`], cloneable) push requests into a bounded crossbeam
//! queue without blocking. The writer blocks for the first request, drains
//! whatever else is queued (the batch is what arrived during the previous
//! write + fsync), frames it into one reusable buffer, issues one write and
//! one `sync_data`, then tells the [`Sink`] about every request in LSN order.
//!
//! Invariants:
//! - Only this thread assigns LSNs and writes segment files; a failed batch
//!   consumes no LSN.
//! - Bytes of a failed write or sync are cut (set_len + fsync) before the next
//!   write; if that fails the file is reopened and the cut retried, and no
//!   batch is written until it succeeds.
//! - A barrier runs after every batch queued before it completed (durable or
//!   failed) and before any batch queued after it: batches never cross one.
//! - Health: a failed batch marks the journal unhealthy and the next durable
//!   batch marks it healthy again. Since callers may hold requests back while
//!   it is unhealthy, the idle writer also probes by itself every
//!   [`PROBE_INTERVAL`]: it writes and syncs a block of zeros past the last
//!   durable record and cuts it off again (no LSN is consumed, the file ends
//!   where it did), and a probe that succeeds marks the journal healthy.
//! - Shutdown: the only `Sender` lives behind an `RwLock` that every producer
//!   read-locks around `try_send`; shutdown write-locks it and drops the
//!   sender, so each accepted request is in the queue by then and the writer
//!   completes it before the queue reports disconnection.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender, TrySendError};
use metrics::{counter, gauge, histogram};
use parking_lot::RwLock;
use rkyv::util::AlignedVec;
use tracing::{error, info, warn};

use super::segment::{
    encode_record, framed_len, segment_file_name, segment_header, sync_dir, SegmentInfo,
};
use super::RecordLoc;
use super::{io_err, FaultInjection, JournalConfig, JournalError, Shared, SEGMENT_HEADER_LEN};
use crate::codec::CodecError;
use crate::event::{Event, Lsn};
use crate::telemetry::names;

/// How often an idle, unhealthy writer checks whether it can write again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes a probe writes (and cuts again): a few pages, so that a disk with
/// room for a probe has room for a typical batch too.
const PROBE_BYTES: usize = 64 << 10;

/// One record to append.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: u16,
    pub version: u16,
    pub payload: AlignedVec,
}

impl Record {
    /// Encode an event as a journal record.
    pub fn from_event(event: &Event) -> Result<Record, CodecError> {
        Ok(Record {
            kind: event.kind(),
            version: event.version(),
            payload: event.encode()?,
        })
    }
}

/// Learns the outcome of every append, on the writer thread, in LSN order.
/// Keep it quick (hand the context to another thread): the next group commit
/// waits for it.
pub trait Sink<C>: Send + 'static {
    /// Every record of the request is written and fdatasync'ed; its records
    /// have LSNs `first_lsn ..`. A request with no records gets the LSN the
    /// next record would have had: every record appended before it is lower.
    /// `locs` holds where each of the request's records was written, in order.
    fn durable(&mut self, first_lsn: Lsn, locs: &[RecordLoc], ctx: C);
    /// Nothing of the request is durable (the write or the sync failed).
    fn failed(&mut self, ctx: C, err: &super::JournalError);
}

/// Why `append` refused a request; the context is handed back.
pub enum AppendError<C> {
    /// The queue is full: answer 503 and let the caller retry.
    Full(C),
    /// The journal is shut down.
    Closed(C),
    /// A payload is larger than `max_record_bytes`, or the whole request
    /// is larger than one batch may be (`max_batch_bytes`, or one record of
    /// `max_record_bytes` when that is more): it bounds the writer's buffer.
    TooLarge(C),
}

impl<C> AppendError<C> {
    pub fn into_inner(self) -> C {
        match self {
            AppendError::Full(c) | AppendError::Closed(c) | AppendError::TooLarge(c) => c,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            AppendError::Full(_) => "journal queue is full",
            AppendError::Closed(_) => "journal is shut down",
            AppendError::TooLarge(_) => "journal record exceeds max_record_bytes",
        }
    }
}

impl<C> std::fmt::Debug for AppendError<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            AppendError::Full(_) => "Full",
            AppendError::Closed(_) => "Closed",
            AppendError::TooLarge(_) => "TooLarge",
        };
        write!(f, "AppendError::{name}(..)")
    }
}

impl<C> std::fmt::Display for AppendError<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl<C> std::error::Error for AppendError<C> {}

struct Request<C> {
    records: Vec<Record>,
    ctx: C,
    /// Framed size of `records`.
    bytes: usize,
    /// Set when the batch is framed.
    first: Lsn,
    /// Where each record went; set when the batch is framed.
    locs: Vec<RecordLoc>,
}

type BarrierFn = Box<dyn FnOnce(Lsn) + Send>;

enum Msg<C> {
    Append(Request<C>),
    Barrier(BarrierFn),
}

/// The producer side: cheap to clone, safe to use from any thread or task.
pub struct Appender<C> {
    tx: Arc<RwLock<Option<Sender<Msg<C>>>>>,
    shared: Arc<Shared>,
    max_record_bytes: usize,
    max_request_bytes: usize,
}

impl<C> Clone for Appender<C> {
    fn clone(&self) -> Self {
        Appender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            max_record_bytes: self.max_record_bytes,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

fn rejected(reason: &'static str) {
    counter!(names::JOURNAL_REJECTED, "reason" => reason).increment(1);
}

impl<C> Appender<C> {
    /// Queue `records` without blocking. `ctx` comes back through the sink
    /// (`durable` or `failed`, exactly once) or in the error.
    pub fn append(&self, records: Vec<Record>, ctx: C) -> Result<(), AppendError<C>> {
        if records
            .iter()
            .any(|r| r.payload.len() > self.max_record_bytes)
        {
            rejected("too_large");
            return Err(AppendError::TooLarge(ctx));
        }
        let bytes: usize = records.iter().map(|r| framed_len(r.payload.len())).sum();
        if bytes > self.max_request_bytes {
            rejected("too_large");
            return Err(AppendError::TooLarge(ctx));
        }
        // `try_read` fails only while shutdown holds or awaits the write lock.
        let Some(guard) = self.tx.try_read() else {
            rejected("closed");
            return Err(AppendError::Closed(ctx));
        };
        let Some(tx) = guard.as_ref() else {
            rejected("closed");
            return Err(AppendError::Closed(ctx));
        };
        match tx.try_send(Msg::Append(Request {
            locs: Vec::with_capacity(records.len()),
            records,
            ctx,
            bytes,
            first: 0,
        })) {
            Ok(()) => Ok(()),
            Err(e) => {
                let (err, reason): (fn(C) -> AppendError<C>, _) = match e {
                    TrySendError::Full(_) => (AppendError::Full, "full"),
                    TrySendError::Disconnected(_) => (AppendError::Closed, "closed"),
                };
                rejected(reason);
                match e.into_inner() {
                    Msg::Append(req) => Err(err(req.ctx)),
                    Msg::Barrier(_) => unreachable!("append sent a barrier"),
                }
            }
        }
    }

    /// Run `f(last_durable_lsn)` on the writer thread once every request
    /// queued before it has completed, before any request queued after it.
    /// Blocks while the queue is full, so never call it from the sink or from
    /// another barrier's closure (they run on the writer thread). `f` runs
    /// on the writer thread too: keep it short and never wait on the journal.
    pub fn barrier(&self, f: Box<dyn FnOnce(Lsn) + Send>) -> Result<(), JournalError> {
        let guard = self.tx.read();
        let tx = guard.as_ref().ok_or(JournalError::Closed)?;
        tx.send(Msg::Barrier(f)).map_err(|_| JournalError::Closed)
    }

    /// Delete the segment files all of whose records are below `lsn`, except
    /// the newest of them whose sizes add up to at most `keep_bytes` (a tail
    /// kept for export). The current segment is never deleted. Returns the
    /// files and bytes removed.
    pub fn remove_segments_before(&self, lsn: Lsn, keep_bytes: u64) -> (usize, u64) {
        let victims: Vec<SegmentInfo> = {
            let mut set = self.shared.segments.lock();
            let older = set.list.len().saturating_sub(1);
            let candidates = set.list[..older]
                .iter()
                .take_while(|s| s.max_lsn.map_or(s.first_lsn < lsn, |m| m < lsn))
                .count();
            let mut remove = candidates;
            let mut kept = 0u64;
            for s in set.list[..candidates].iter().rev() {
                if kept + s.bytes > keep_bytes {
                    break;
                }
                kept += s.bytes;
                remove -= 1;
            }
            let victims: Vec<_> = set.list.drain(..remove).collect();
            set.total_bytes -= victims.iter().map(|s| s.bytes).sum::<u64>();
            victims
        };
        if victims.is_empty() {
            return (0, 0);
        }
        // Unlink outside the lock: the writer updates the set after every batch.
        let (mut files, mut bytes) = (0, 0);
        let mut failed = Vec::new();
        for seg in victims {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {
                    files += 1;
                    bytes += seg.bytes;
                }
                Err(e) => {
                    error!(segment = %seg.path.display(), error = %e, "journal: could not remove segment");
                    failed.push(seg);
                }
            }
        }
        if let Err(e) = sync_dir(&self.shared.dir) {
            warn!(error = %e, "journal: fsync of the directory after removing segments failed");
        }
        let mut set = self.shared.segments.lock();
        for seg in failed {
            let at = set.list.partition_point(|s| s.first_lsn < seg.first_lsn);
            set.total_bytes += seg.bytes;
            set.list.insert(at, seg);
        }
        set.publish_gauges();
        drop(set);
        counter!(names::JOURNAL_SEGMENTS_REMOVED).increment(files as u64);
        info!(
            files,
            bytes,
            before_lsn = lsn,
            "journal: removed old segments"
        );
        (files, bytes)
    }

    /// The LSN the writer gives the next record.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn.load(Ordering::Acquire)
    }

    /// Highest LSN known to be on disk (0 when there is none).
    pub fn last_durable_lsn(&self) -> Lsn {
        self.shared.last_durable.load(Ordering::Acquire)
    }

    /// False after a failed write or sync, until a batch succeeds again.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Bytes of all segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.segments.lock().total_bytes
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.shared.segments.lock().list.len()
    }

    /// Successful group commits (one fsync each) since start.
    pub fn group_commits(&self) -> u64 {
        self.shared.group_commits.load(Ordering::Acquire)
    }
}

/// The owner: shuts the writer down when dropped or on [`JournalHandle::shutdown`].
/// Derefs to an [`Appender`] for convenience.
pub struct JournalHandle<C> {
    appender: Appender<C>,
    thread: Option<JoinHandle<Result<(), JournalError>>>,
}

impl<C> JournalHandle<C> {
    /// A producer handle for another thread or task.
    pub fn appender(&self) -> Appender<C> {
        self.appender.clone()
    }

    /// Stop accepting, complete everything queued (durable or failed), fsync
    /// the current segment and join the writer thread.
    pub fn shutdown(mut self) -> Result<(), JournalError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), JournalError> {
        self.appender.tx.write().take();
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(JournalError::WriterPanicked)),
            None => Ok(()),
        }
    }
}

impl<C> Drop for JournalHandle<C> {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            error!(error = %e, "journal: shutdown failed");
        }
    }
}

impl<C> std::ops::Deref for JournalHandle<C> {
    type Target = Appender<C>;

    fn deref(&self) -> &Appender<C> {
        &self.appender
    }
}

pub(crate) fn start<C: Send + 'static, S: Sink<C>>(
    cfg: JournalConfig,
    shared: Arc<Shared>,
    file: File,
    len: u64,
    sink: S,
) -> Result<JournalHandle<C>, JournalError> {
    let (tx, rx) = channel::bounded(cfg.queue_capacity);
    let (path, segment) = shared
        .segments
        .lock()
        .list
        .last()
        .map(|s| (s.path.clone(), s.first_lsn))
        .ok_or_else(|| JournalError::Config("journal has no current segment".into()))?;
    let next_lsn = shared.next_lsn.load(Ordering::Acquire);
    let writer = Writer {
        rx,
        sink,
        shared: shared.clone(),
        segment_bytes: cfg.segment_bytes,
        max_batch_bytes: cfg.max_batch_bytes,
        faults: cfg.faults,
        file,
        path,
        len,
        dirty: false,
        next_lsn,
        segment,
        buf: Vec::new(),
        batch: Vec::new(),
    };
    let guard = ExitGuard(shared.clone());
    let thread = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let _guard = guard;
            writer.run()
        })
        .map_err(io_err("spawn the writer thread for", &cfg.dir))?;
    let appender = Appender {
        tx: Arc::new(RwLock::new(Some(tx))),
        shared,
        max_record_bytes: cfg.max_record_bytes,
        max_request_bytes: cfg.max_batch_bytes.max(framed_len(cfg.max_record_bytes)),
    };
    Ok(JournalHandle {
        appender,
        thread: Some(thread),
    })
}

/// Marks the journal unhealthy if the writer thread dies (a panicking sink or
/// barrier): producers then see `Closed`, and health checks see the failure.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.healthy.store(false, Ordering::Release);
            gauge!(names::JOURNAL_HEALTHY).set(0.0);
            error!("journal writer thread panicked; the journal accepts no more appends");
        }
    }
}

struct Writer<C, S> {
    rx: Receiver<Msg<C>>,
    sink: S,
    shared: Arc<Shared>,
    segment_bytes: u64,
    max_batch_bytes: usize,
    faults: FaultInjection,
    file: File,
    path: PathBuf,
    /// End of the last durable record in `file`.
    len: u64,
    /// Bytes past `len` may exist (a failed write or sync): cut them first.
    dirty: bool,
    next_lsn: Lsn,
    /// First LSN of the current segment (its name).
    segment: Lsn,
    /// Framing buffer, reused by every batch.
    buf: Vec<u8>,
    batch: Vec<Request<C>>,
}

/// Which step of a group commit failed (a metric label).
type Failure = (&'static str, JournalError);

impl<C, S: Sink<C>> Writer<C, S> {
    fn run(mut self) -> Result<(), JournalError> {
        let mut pending: Option<Msg<C>> = None;
        loop {
            let first = match pending.take() {
                Some(msg) => msg,
                None if self.shared.healthy.load(Ordering::Acquire) => match self.rx.recv() {
                    Ok(msg) => msg,
                    // Every sender is gone and the queue is empty.
                    Err(_) => break,
                },
                None => match self.rx.recv_timeout(PROBE_INTERVAL) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut bytes = match first {
                Msg::Barrier(f) => {
                    f(self.shared.last_durable.load(Ordering::Acquire));
                    continue;
                }
                Msg::Append(req) => {
                    let bytes = req.bytes;
                    self.batch.push(req);
                    bytes
                }
            };
            while bytes < self.max_batch_bytes {
                match self.rx.try_recv() {
                    Ok(Msg::Append(req)) if bytes + req.bytes > self.max_batch_bytes => {
                        pending = Some(Msg::Append(req));
                        break;
                    }
                    Ok(Msg::Append(req)) => {
                        bytes += req.bytes;
                        self.batch.push(req);
                    }
                    Ok(barrier) => {
                        pending = Some(barrier);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit();
        }
        self.finish()
    }

    fn commit(&mut self) {
        let records: usize = self.batch.iter().map(|r| r.records.len()).sum();
        if records == 0 {
            let lsn = self.next_lsn;
            for req in self.batch.drain(..) {
                self.sink.durable(lsn, &[], req.ctx);
            }
            return;
        }
        match self.write_batch() {
            Ok(()) => {
                histogram!(names::JOURNAL_BATCH_RECORDS).record(records as f64);
                counter!(names::JOURNAL_APPENDED_RECORDS).increment(records as u64);
                for req in self.batch.drain(..) {
                    self.sink.durable(req.first, &req.locs, req.ctx);
                }
            }
            Err((op, err)) => {
                counter!(names::JOURNAL_WRITE_ERRORS, "op" => op).increment(1);
                if self.shared.healthy.swap(false, Ordering::AcqRel) {
                    gauge!(names::JOURNAL_HEALTHY).set(0.0);
                }
                error!(op, error = %err, requests = self.batch.len(), records, "journal: group commit failed; its requests are not durable");
                for req in self.batch.drain(..) {
                    self.sink.failed(req.ctx, &err);
                }
            }
        }
    }

    /// Frame, write and sync the batch; on success every request's `first`
    /// is set and the shared state advanced.
    fn write_batch(&mut self) -> Result<(), Failure> {
        self.repair().map_err(|e| ("truncate", e))?;
        if self.len >= self.segment_bytes && self.len > SEGMENT_HEADER_LEN as u64 {
            self.rotate().map_err(|e| ("rotate", e))?;
        }
        self.buf.clear();
        let mut lsn = self.next_lsn;
        for req in &mut self.batch {
            req.first = lsn;
            req.locs.clear();
            for r in &req.records {
                req.locs.push(RecordLoc {
                    segment: self.segment,
                    offset: self.len + self.buf.len() as u64,
                });
                encode_record(&mut self.buf, lsn, r.kind, r.version, &r.payload)
                    .map_err(|e| ("write", e))?;
                lsn += 1;
            }
        }
        if let Err(e) = self.write_at(self.len) {
            self.dirty = true;
            return Err((
                "write",
                self.after_failure(io_err("write segment", &self.path)(e)),
            ));
        }
        let started = Instant::now();
        if let Err(e) = self.sync() {
            self.dirty = true;
            return Err((
                "sync",
                self.after_failure(io_err("fdatasync segment", &self.path)(e)),
            ));
        }
        histogram!(names::JOURNAL_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());

        let written = self.buf.len() as u64;
        self.len += written;
        self.next_lsn = lsn;
        self.shared.next_lsn.store(lsn, Ordering::Release);
        self.shared.last_durable.store(lsn - 1, Ordering::Release);
        self.shared.group_commits.fetch_add(1, Ordering::AcqRel);
        {
            let mut set = self.shared.segments.lock();
            set.total_bytes += written;
            if let Some(current) = set.list.last_mut() {
                current.bytes = self.len;
                current.max_lsn = Some(lsn - 1);
            }
            set.publish_gauges();
        }
        counter!(names::JOURNAL_APPENDED_BYTES).increment(written);
        histogram!(names::JOURNAL_BATCH_BYTES).record(written as f64);
        if !self.shared.healthy.swap(true, Ordering::AcqRel) {
            gauge!(names::JOURNAL_HEALTHY).set(1.0);
            info!(segment = %self.path.display(), "journal: writes succeed again");
        }
        Ok(())
    }

    /// While unhealthy and idle: write and sync [`PROBE_BYTES`] of zeros past
    /// the last durable record, then cut them off again through the same path
    /// that cuts a failed batch. Success means batches can be written again.
    fn probe(&mut self) {
        let result = self.repair().and_then(|()| {
            self.dirty = true;
            let zeros = vec![0u8; PROBE_BYTES];
            if self.faults.fail_writes.load(Ordering::SeqCst) {
                return Err(io_err("probe segment", &self.path)(io::Error::new(
                    ErrorKind::StorageFull,
                    "injected fault: no space left on device",
                )));
            }
            self.file
                .write_all_at(&zeros, self.len)
                .and_then(|()| self.sync())
                .map_err(io_err("probe segment", &self.path))?;
            self.repair()
        });
        match result {
            Ok(()) => {
                if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                    gauge!(names::JOURNAL_HEALTHY).set(1.0);
                    info!(segment = %self.path.display(), "journal: a write probe succeeded; accepting batches again");
                }
            }
            Err(e) => {
                // Give back whatever part of the probe landed, now if possible.
                let _ = self.repair();
                tracing::debug!(error = %e, "journal: write probe failed; still unhealthy");
            }
        }
    }

    /// Cut the failed batch right away so the space is freed; if that fails
    /// too, the next batch retries before writing.
    fn after_failure(&mut self, err: JournalError) -> JournalError {
        if let Err(e) = self.repair() {
            counter!(names::JOURNAL_WRITE_ERRORS, "op" => "truncate").increment(1);
            warn!(error = %e, "journal: could not cut a failed write yet; retrying before the next batch");
        }
        err
    }

    fn write_at(&self, offset: u64) -> io::Result<()> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            // A real full disk often accepts part of a write: leave a partial
            // record behind for the repair path to cut.
            let half = &self.buf[..self.buf.len() / 2];
            self.file.write_all_at(half, offset)?;
            return Err(io::Error::new(
                ErrorKind::StorageFull,
                "injected fault: no space left on device",
            ));
        }
        self.file.write_all_at(&self.buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        if self.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fault: fdatasync failed (EIO)"));
        }
        self.file.sync_data()
    }

    /// Cut everything past `len`, reopening the file if the first attempt
    /// fails (the descriptor itself may be what is broken).
    fn repair(&mut self) -> Result<(), JournalError> {
        if !self.dirty {
            return Ok(());
        }
        let len = self.len;
        let injected = self.faults.fail_truncates.load(Ordering::SeqCst);
        let cut = |f: &File| {
            if injected {
                return Err(io::Error::other("injected fault: truncate failed"));
            }
            f.set_len(len).and_then(|()| f.sync_all())
        };
        if let Err(e) = cut(&self.file) {
            warn!(segment = %self.path.display(), error = %e, "journal: truncating a failed write failed; reopening the segment");
            let reopened = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(io_err("reopen segment", &self.path))?;
            cut(&reopened).map_err(io_err("truncate segment", &self.path))?;
            self.file = reopened;
        }
        self.dirty = false;
        Ok(())
    }

    /// Start the segment for the batch about to be written (at `next_lsn`):
    /// header, fsync of the file, fsync of the directory, in that order.
    fn rotate(&mut self) -> Result<(), JournalError> {
        let first_lsn = self.next_lsn;
        let dir = self.shared.dir.clone();
        let path = dir.join(segment_file_name(first_lsn));
        let result = (|| {
            // Truncate: a file of this name can only be our own failed
            // attempt (its LSN was never used, a failed batch consumes none).
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_err("create segment", &path))?;
            let header = segment_header();
            if self.faults.fail_writes.load(Ordering::SeqCst) {
                return Err(io_err("write segment header", &path)(io::Error::new(
                    ErrorKind::StorageFull,
                    "injected fault: no space left on device",
                )));
            }
            file.write_all_at(&header, 0)
                .map_err(io_err("write segment header", &path))?;
            file.sync_all().map_err(io_err("fsync segment", &path))?;
            sync_dir(&dir)?;
            Ok(file)
        })();
        let file = match result {
            Ok(file) => file,
            Err(e) => {
                // Leave no half-made segment behind if we can help it; a
                // leftover is rewritten by the next attempt or by recovery.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        // The old segment's records were all fsynced by their batches.
        self.file = file;
        self.path = path.clone();
        self.segment = first_lsn;
        self.len = SEGMENT_HEADER_LEN as u64;
        let mut set = self.shared.segments.lock();
        set.total_bytes += self.len;
        set.list.push(SegmentInfo {
            first_lsn,
            path,
            bytes: self.len,
            max_lsn: None,
        });
        set.publish_gauges();
        drop(set);
        info!(first_lsn, "journal: started a new segment");
        Ok(())
    }

    fn finish(mut self) -> Result<(), JournalError> {
        self.repair()?;
        self.file
            .sync_all()
            .map_err(io_err("fsync segment", &self.path))
    }
}
