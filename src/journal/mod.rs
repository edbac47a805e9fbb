//! The append-only, crash-safe journal: Switchboard's acknowledgement boundary.
//!
//! Nothing is acknowledged to Meta (or to an API client) until its records are
//! in a batch that has been written and `fdatasync`ed here. sled is only an
//! index: after a crash it is rebuilt by replaying the journal from the
//! replay position of the last checkpoint (kept in sled itself, next to the
//! state it matches: see `pipeline::checkpoint`).
//!
//! Life cycle: [`Journal::open`] scans and repairs the directory and returns a
//! [`Recovery`] report; [`Journal::replay`] feeds the records to the shards;
//! [`Journal::start`] hands the journal to one writer thread and returns the
//! owning [`JournalHandle`] (cloneable producers: [`Appender`]).
//!
//! Invariants:
//! - LSNs are assigned by the writer alone, consecutively from 1. A durable
//!   LSN is never given to another record: the next LSN is above every valid
//!   record and every segment name found at open. A failed batch consumes no
//!   LSN; the LSNs of a torn tail (never durable, never acknowledged) are
//!   given again after the tail is cut.
//! - A request's [`Sink::durable`] runs only after every byte of its records
//!   was written and `sync_data` returned Ok; callbacks run in LSN order on
//!   the writer thread. Every accepted request gets exactly one callback:
//!   `durable` or `failed`.
//! - The writer never writes after bytes it could not cut back (a failed
//!   write is truncated away before the next one is attempted).
//! - Recovery only removes a torn tail at the end of the last segment; damaged
//!   bytes elsewhere are copied to `dir/corrupt/`, reported and skipped.
//!   See `segment.rs` for the file format.
//!
//! Choices:
//! - LSN gaps and regressions found at open are logged, counted and reported
//!   ([`LsnAnomaly`]) but the records are kept and replayed in file order:
//!   they may be acknowledged data and applying is idempotent. A gap right
//!   after a damaged range is expected (the damage held those LSNs) and is
//!   reported only as the damage.
//! - Damaged ranges are left in place (only a copy goes to `corrupt/`), so
//!   each open reports them again until retention removes their segment.
//! - A last segment with a missing or half-written header and nothing else
//!   (a crash while rotating) gets its header rewritten and becomes the
//!   current segment; an older one like it is removed. Anything in such a
//!   file that is not zeros or a header prefix is copied to `corrupt/` first.
//! - Open reads one whole segment at a time (segments are `segment_bytes`
//!   plus at most one batch); replay does the same and skips segments whose
//!   records are all below the requested LSN.
//! - `disk_bytes` counts segment files only (not `corrupt/`).
//! - There is no lock file: two processes must never open one directory
//!   (`File::try_lock` needs a newer Rust than the crate's MSRV); the daemon
//!   should take its sled index (which sled locks) before the journal.

mod reader;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::telemetry::names;

pub use reader::{JournalReader, ReadRecord};
pub use segment::{
    encode_record, framed_len, segment_file_name, FORMAT_VERSION, RECORD_HEADER_LEN, RECORD_MAGIC,
    SEGMENT_HEADER_LEN,
};
pub use writer::{AppendError, Appender, JournalHandle, Record, Sink};

/// Where a durable record lives: its segment (named by the segment's first
/// LSN) and the byte offset of its header. Records never move, so a location
/// stays valid for as long as the segment exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordLoc {
    pub segment: Lsn,
    pub offset: u64,
}

pub use crate::event::Lsn;

/// Default segment size before rotation.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default largest payload accepted by `append`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;
/// Default capacity of the append queue, in requests.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default cap on the framed bytes of one group commit.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;

/// Journal settings.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// A new segment is started before a batch once the current one holds at
    /// least this many bytes (so a segment exceeds it by at most one batch).
    pub segment_bytes: u64,
    /// Largest payload `append` accepts; larger ones are refused with
    /// [`AppendError::TooLarge`]. Only checked when appending: lowering it
    /// never makes existing records unreadable.
    pub max_record_bytes: usize,
    /// Requests the append queue holds before `append` answers `Full`.
    pub queue_capacity: usize,
    /// Framed bytes above which the writer stops adding requests to a batch
    /// (a single larger request still forms a batch of its own).
    pub max_batch_bytes: usize,
    /// Test hook: simulated disk failures. Leave at its default in production.
    pub faults: FaultInjection,
}

impl JournalConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            faults: FaultInjection::default(),
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        if self.queue_capacity == 0 {
            return Err(JournalError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }
        // The length field is 32 bits; keep well clear of it.
        if self.max_record_bytes == 0 || self.max_record_bytes > (u32::MAX >> 1) as usize {
            return Err(JournalError::Config(format!(
                "max_record_bytes must be between 1 and {}",
                u32::MAX >> 1
            )));
        }
        if self.segment_bytes <= SEGMENT_HEADER_LEN as u64 {
            return Err(JournalError::Config(
                "segment_bytes is smaller than a segment header".into(),
            ));
        }
        if self.max_batch_bytes == 0 {
            return Err(JournalError::Config(
                "max_batch_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Test hook (for unit tests and the daemon's integration tests): simulated
/// disk failures, shared with the writer thread. While a flag is set, every
/// attempt fails like a real disk would:
/// - `fail_writes`: half of the batch reaches the file, then the write fails
///   with `ErrorKind::StorageFull` (ENOSPC), leaving a partial record behind
///   that the writer must cut away. Segment creation fails the same way.
/// - `fail_syncs`: the write succeeds, `sync_data` fails (as EIO would).
/// - `fail_truncates`: cutting a failed write back fails, on the open file
///   and on the reopened one, so the writer must refuse to write after it.
#[derive(Debug, Clone, Default)]
pub struct FaultInjection {
    pub fail_writes: Arc<AtomicBool>,
    pub fail_syncs: Arc<AtomicBool>,
    pub fail_truncates: Arc<AtomicBool>,
}

impl FaultInjection {
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    pub fn set_fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    pub fn set_fail_truncates(&self, on: bool) {
        self.fail_truncates.store(on, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal segment {path} has format version {found}; this build reads version {supported}"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("journal record payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid journal configuration: {0}")]
    Config(String),
    #[error("the journal is shut down")]
    Closed,
    #[error("the journal writer thread panicked")]
    WriterPanicked,
    #[error("journal record at {segment}+{offset} is damaged: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
}

/// `map_err` helper attaching the operation and path to an I/O error.
pub(crate) fn io_err(
    op: &'static str,
    path: impl AsRef<Path>,
) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.as_ref().to_path_buf();
    move |source| JournalError::Io { op, path, source }
}

/// Failure of [`Journal::replay`]: reading the journal, or the callback.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal replay stopped at lsn {lsn}: {source}")]
    Callback { lsn: Lsn, source: E },
}

/// A torn tail cut from the last segment at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: PathBuf,
    /// The new length of the file: the end of its last valid record.
    pub offset: u64,
    pub bytes: u64,
    /// Where a copy of the cut bytes was kept (none when they were all zeros
    /// or the copy failed).
    pub saved_to: Option<PathBuf>,
}

/// Damaged bytes that were skipped (and left in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRange {
    pub segment: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// `dir/corrupt/<segment>-<offset>.bin`, unless the copy failed.
    pub saved_to: Option<PathBuf>,
}

/// A record whose LSN is not the previous one plus one (and no damaged range
/// in between explains it). Such records are kept and replayed in file order:
/// they are valid, possibly acknowledged data and applying is idempotent. The
/// next LSN is always above the highest seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsnAnomaly {
    pub segment: PathBuf,
    pub offset: u64,
    pub expected: Lsn,
    pub found: Lsn,
}

/// What [`Journal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files after recovery (including a newly created one).
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
    /// The LSN the next record will get.
    pub next_lsn: Lsn,
    pub truncated_bytes: u64,
    pub truncations: Vec<Truncation>,
    pub corrupt: Vec<CorruptRange>,
    pub lsn_anomalies: Vec<LsnAnomaly>,
    /// Last segments whose header was rewritten (crash while creating them).
    pub rewritten_segments: Vec<PathBuf>,
    /// Older segments removed because they held nothing but a bad header.
    pub removed_segments: Vec<PathBuf>,
}

impl Recovery {
    /// True when the journal was found exactly as a clean shutdown leaves it.
    pub fn is_clean(&self) -> bool {
        self.truncations.is_empty()
            && self.corrupt.is_empty()
            && self.lsn_anomalies.is_empty()
            && self.rewritten_segments.is_empty()
            && self.removed_segments.is_empty()
    }
}

/// State shared by the writer thread and every handle.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub segments: Mutex<segment::SegmentSet>,
    /// The LSN the writer gives the next record.
    pub next_lsn: AtomicU64,
    pub last_durable: AtomicU64,
    pub healthy: AtomicBool,
    pub group_commits: AtomicU64,
}

/// An open journal, before its writer starts: replay happens here.
pub struct Journal {
    cfg: JournalConfig,
    shared: Arc<Shared>,
    current: std::fs::File,
    current_len: u64,
}

impl Journal {
    /// Open (or create) the journal in `cfg.dir`, scanning every record and
    /// repairing what a crash left behind; see [`Recovery`].
    pub fn open(cfg: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        cfg.validate()?;
        let rec = segment::recover(&cfg)?;
        let report = rec.report;
        tracing::info!(
            dir = %cfg.dir.display(),
            segments = report.segments,
            records = report.records,
            first_lsn = ?report.first_lsn,
            last_lsn = ?report.last_lsn,
            next_lsn = report.next_lsn,
            truncated_bytes = report.truncated_bytes,
            corrupt_ranges = report.corrupt.len(),
            "journal opened"
        );
        let shared = Arc::new(Shared {
            dir: cfg.dir.clone(),
            segments: Mutex::new(rec.set),
            next_lsn: AtomicU64::new(rec.next_lsn),
            last_durable: AtomicU64::new(rec.next_lsn - 1),
            healthy: AtomicBool::new(true),
            group_commits: AtomicU64::new(0),
        });
        metrics::gauge!(names::JOURNAL_HEALTHY).set(1.0);
        let journal = Journal {
            cfg,
            shared,
            current: rec.current,
            current_len: rec.current_len,
        };
        Ok((journal, report))
    }

    /// Hand every valid record with `lsn >= from_lsn` to `f`, in file order
    /// (which is LSN order unless recovery reported anomalies), one segment
    /// in memory at a time. Segments without such records are not read.
    /// Returns the number of records handed over.
    pub fn replay<E>(
        &self,
        from_lsn: Lsn,
        mut f: impl FnMut(Lsn, RecordLoc, u16, u16, &[u8]) -> Result<(), E>,
    ) -> Result<u64, ReplayError<E>> {
        let segments: Vec<_> = self.shared.segments.lock().list.clone();
        let mut buf = Vec::new();
        let mut total = 0;
        for seg in segments
            .iter()
            .filter(|s| s.max_lsn.is_some_and(|m| m >= from_lsn))
        {
            match segment::for_each_record(&seg.path, seg.first_lsn, from_lsn, &mut buf, &mut f)? {
                Ok(n) => total += n,
                Err((lsn, source)) => return Err(ReplayError::Callback { lsn, source }),
            }
        }
        Ok(total)
    }

    /// The LSN the next appended record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn.load(Ordering::Acquire)
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Start the writer thread ("journal-writer"); `sink` learns the outcome
    /// of every append.
    pub fn start<C: Send + 'static, S: Sink<C>>(
        self,
        sink: S,
    ) -> Result<JournalHandle<C>, JournalError> {
        writer::start(self.cfg, self.shared, self.current, self.current_len, sink)
    }
}
