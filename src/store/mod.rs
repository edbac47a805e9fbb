//! The indexed state: one sled tree with prefixed keys (see [`keys`]) and
//! small rkyv values (see [`records`]).
//!
//! The journal is the archive: every event's record stays in its segment,
//! and sled holds only what finds it (by wamid, by conversation and time,
//! by LSN), the dedupe marks, and the state persisted at checkpoints.
//!
//! Invariants:
//! - sled is an index, not the acknowledgement boundary: everything in it can
//!   be rebuilt from the journal since the last checkpoint. [`Store::sync`]
//!   flushes sled and then fsyncs its files, because sled's own flush uses
//!   `sync_file_range` and does not flush the disk cache.
//! - Every value read back is validated (copied to an aligned buffer first);
//!   a value that fails validation is reported as [`StoreError::Corrupt`],
//!   never trusted and never a panic.
//! - Dedupe keys (`m`, `s`, `d`) are written with an atomic insert-if-absent
//!   and carry the LSN of the record that wrote them in the value header:
//!   replay of that same record is recognised as such, another LSN is a
//!   duplicate delivery.
//! - Shards write single keys, not sled batches: a sled batch takes a global
//!   lock and writes a manifest, and apply is idempotent anyway. The one
//!   write that must be atomic (checkpoint counters with their replay
//!   position) uses [`Writes`].
//! - Calls are synchronous: shard threads and the checkpointer call them;
//!   the async API only does short point reads and bounded scans.
//! - A failed write marks the store unhealthy for good ([`Store::healthy`]):
//!   sled 0.34 keeps the first I/O error of a background log write (ENOSPC,
//!   EIO) and fails every later write with it until the database is opened
//!   again, and writes it had already acknowledged may be lost with that
//!   buffer. Reads keep working. The daemon answers webhooks 503 meanwhile and
//!   reopens the store in place (a restart of the core, replaying the journal
//!   from the last checkpoint) once the disk takes writes again.

pub mod keys;
pub mod records;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec::{self, CodecError, Decode, Encode, StoredHeader};
use crate::event::Lsn;
use crate::journal::RecordLoc;
use crate::telemetry::names;
use records::{
    kind, ConversationRecord, CustomerRecord, DedupeMark, Loc, MessageIndex, NumberRecord,
    OutboxEntry, PendingMark, TimelineEntries, TimelineEntry,
};

/// Version of the key schema and record set; stored under `z/format`.
/// 2: timelines in chunks (`x` + conv + first LSN) and tails (`T`); the
/// one-key-per-message timeline keys of format 1 are still read.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt value under key {key}: {source}")]
    Corrupt { key: String, source: CodecError },
    #[error("encoding a record failed: {0}")]
    Encode(CodecError),
    #[error("store format {found} is newer than this build understands ({FORMAT_VERSION})")]
    FutureFormat { found: u32 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn key_for_humans(key: &[u8]) -> String {
    String::from_utf8_lossy(key).chars().take(80).collect()
}

fn corrupt(key: &[u8]) -> impl FnOnce(CodecError) -> StoreError + '_ {
    move |source| StoreError::Corrupt {
        key: key_for_humans(key),
        source,
    }
}

fn encode<T: Encode>(kind: u16, lsn: Lsn, value: &T) -> Result<rkyv::util::AlignedVec> {
    codec::encode_stored(
        StoredHeader {
            kind,
            version: 1,
            lsn,
        },
        value,
    )
    .map_err(StoreError::Encode)
}

/// Raw 16-byte location value of a format-1 timeline key (tests write them
/// to check they are still read).
#[cfg(test)]
fn loc_bytes(loc: RecordLoc) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&loc.segment.to_be_bytes());
    b[8..].copy_from_slice(&loc.offset.to_be_bytes());
    b
}

fn parse_loc_bytes(key: &[u8], v: &[u8]) -> Result<RecordLoc> {
    let b: [u8; 16] = v.try_into().map_err(|_| StoreError::Corrupt {
        key: key_for_humans(key),
        source: CodecError::Invalid("expected a 16-byte location".into()),
    })?;
    Ok(RecordLoc {
        segment: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
        offset: u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
    })
}

/// Outcome of an insert-if-absent on a dedupe key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The key was new and is now written.
    New,
    /// The key existed, written by the record with this LSN.
    Existing(Lsn),
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
    /// False after a write failed (see the module docs).
    healthy: AtomicBool,
}

impl Store {
    /// Open (or create) the store in `dir`. `cache_bytes` bounds sled's page
    /// cache (its default of 1 GiB counts on-disk size, not RSS).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            // The checkpointer decides when to flush; sled's timer would only
            // add sync_file_range calls that promise nothing.
            .flush_every_ms(None)
            .open()?;
        let tree = db.open_tree("data")?;
        let store = Store {
            db,
            tree,
            dir: dir.to_path_buf(),
            healthy: AtomicBool::new(true),
        };
        store.check_format()?;
        metrics::gauge!(names::STORE_HEALTHY).set(1.0);
        Ok(store)
    }

    /// False once a write failed: this store accepts no more writes and must
    /// be opened again (reads still work).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Pass a write's result through, noting an I/O failure (sled's or ours).
    fn wrote<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e @ (StoreError::Sled(_) | StoreError::Io { .. })) = &result {
            if self.healthy.swap(false, Ordering::AcqRel) {
                metrics::gauge!(names::STORE_HEALTHY).set(0.0);
                tracing::error!(error = %e, "store: a write failed; the store takes no more writes until it is reopened");
            }
        }
        result
    }

    fn check_format(&self) -> Result<()> {
        let key = keys::meta("format");
        match self.tree.get(&key)? {
            Some(v) if v.len() == 4 => {
                let found = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                if found > FORMAT_VERSION {
                    return Err(StoreError::FutureFormat { found });
                }
                if found < FORMAT_VERSION {
                    // Older formats are read as they are; the mark keeps
                    // older builds from misreading what this one writes.
                    self.tree.insert(key, &FORMAT_VERSION.to_be_bytes())?;
                }
            }
            _ => {
                self.tree.insert(key, &FORMAT_VERSION.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// A u64 stored under a metadata key.
    pub fn meta_u64(&self, name: &str) -> Result<Option<u64>> {
        let key = keys::meta(name);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(v) if v.len() == 8 => Ok(Some(u64::from_be_bytes(
                v.as_ref().try_into().expect("8 bytes"),
            ))),
            Some(_) => Err(StoreError::Corrupt {
                key: key_for_humans(&key),
                source: CodecError::Invalid("expected 8 bytes".into()),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `value` under `key` unless the key exists (atomically). Reports
    /// the LSN of whoever wrote an existing key.
    pub fn insert_new<T: Encode>(
        &self,
        key: &[u8],
        kind: u16,
        lsn: Lsn,
        value: &T,
    ) -> Result<Inserted> {
        let bytes = encode(kind, lsn, value)?;
        let swapped = self.wrote(
            self.tree
                .compare_and_swap(key, None::<&[u8]>, Some(bytes.as_slice()))
                .map_err(StoreError::from),
        )?;
        match swapped {
            Ok(()) => Ok(Inserted::New),
            Err(e) => {
                let current = e.current.unwrap_or_default();
                Ok(Inserted::Existing(
                    codec::stored_header_of(&current).map_err(corrupt(key))?.lsn,
                ))
            }
        }
    }

    /// Write (or overwrite) a value.
    pub fn put<T: Encode>(&self, key: &[u8], kind: u16, lsn: Lsn, value: &T) -> Result<()> {
        let bytes = encode(kind, lsn, value)?;
        self.wrote(self.tree.insert(key, bytes.as_slice()).map_err(Into::into))?;
        Ok(())
    }

    /// Write a sealed chunk of a conversation's timeline (idempotent: the
    /// key is named by the chunk's first LSN).
    pub fn put_timeline_chunk(&self, conv: u64, chunk: &TimelineEntries) -> Result<()> {
        let Some(first) = chunk.entries.first() else {
            return Ok(());
        };
        let key = keys::timeline_chunk(conv, first.lsn);
        self.put(&key, kind::TIMELINE_CHUNK, first.lsn, chunk)
    }

    /// Write (or, when empty, remove) a conversation's unsealed tail.
    pub fn put_timeline_tail(&self, conv: u64, tail: &TimelineEntries) -> Result<()> {
        let key = keys::timeline_tail(conv);
        if tail.entries.is_empty() {
            self.wrote(self.tree.remove(key).map(drop).map_err(Into::into))
        } else {
            self.put(&key, kind::TIMELINE_TAIL, 0, tail)
        }
    }

    /// Every persisted unsealed tail: (conversation id, entries).
    pub fn load_timeline_tails(&self) -> Result<Vec<(u64, TimelineEntries)>> {
        self.scan_u64_keyed(keys::TIMELINE_TAIL, kind::TIMELINE_TAIL)
    }

    /// Every value under `prefix` whose key is the prefix and a u64, in key order.
    fn scan_u64_keyed<T: Decode>(&self, prefix: u8, kind: u16) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([prefix]) {
            let (k, v) = item?;
            let Some(id) = keys::parse_lsn_key(&k) else {
                continue;
            };
            out.push((id, T::decode_stored(&v, kind, 1).map_err(corrupt(&k))?));
        }
        Ok(out)
    }

    /// Apply a batch atomically (checkpoint state with its replay position).
    pub fn apply(&self, writes: Writes) -> Result<()> {
        if writes.count > 0 {
            self.wrote(self.tree.apply_batch(writes.batch).map_err(Into::into))?;
        }
        Ok(())
    }

    fn get_decoded<T: Decode>(&self, key: &[u8], kind: u16) -> Result<Option<(Lsn, T)>> {
        let Some(v) = self.tree.get(key)? else {
            return Ok(None);
        };
        let header = codec::stored_header_of(&v).map_err(corrupt(key))?;
        let value = T::decode_stored(&v, kind, 1).map_err(corrupt(key))?;
        Ok(Some((header.lsn, value)))
    }

    /// The archive entry of a message and the LSN that wrote it.
    pub fn message(&self, wamid: &str) -> Result<Option<(Lsn, MessageIndex)>> {
        self.get_decoded(&keys::message(wamid), kind::MESSAGE)
    }

    /// Remove a key (idempotent).
    pub fn remove(&self, key: &[u8]) -> Result<()> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// An outbound message by its local id (its request's LSN).
    pub fn outbox(&self, lsn: Lsn) -> Result<Option<OutboxEntry>> {
        Ok(self
            .get_decoded(&keys::outbox(lsn), kind::OUTBOX)?
            .map(|(_, e)| e))
    }

    pub fn pending(&self, lsn: Lsn) -> Result<Option<PendingMark>> {
        Ok(self
            .get_decoded(&keys::pending(lsn), kind::PENDING)?
            .map(|(_, e)| e))
    }

    /// Every outbound request without a final outcome, oldest first.
    pub fn all_pending(&self) -> Result<Vec<(Lsn, PendingMark)>> {
        self.scan_u64_keyed(keys::PENDING, kind::PENDING)
    }

    /// Where every status received for `wamid` is, in key order: (LSN, location).
    pub fn statuses(&self, wamid: &str) -> Result<Vec<(Lsn, RecordLoc)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::status_prefix(wamid)) {
            let (k, v) = item?;
            let header = codec::stored_header_of(&v).map_err(corrupt(&k))?;
            let loc = codec::decode_stored::<Loc>(&v, kind::STATUS, 1).map_err(corrupt(&k))?;
            out.push((header.lsn, loc.into()));
        }
        Ok(out)
    }

    /// Up to `limit` entries of a conversation's timeline after `after`
    /// (exclusive), oldest first: (timestamp, lsn, location). `tail` is the
    /// conversation's unsealed tail, taken from its shard *before* this call:
    /// an entry sealed in between is then in sled, and one seen in both
    /// places is counted once.
    ///
    /// A late message (older timestamp) can land in a later chunk, so every
    /// chunk of the conversation is read; a conversation's length bounds it.
    pub fn timeline(
        &self,
        conv: u64,
        tail: &[TimelineEntry],
        after: Option<(i64, Lsn)>,
        limit: usize,
    ) -> Result<Vec<(i64, Lsn, RecordLoc)>> {
        let mut all: Vec<(i64, Lsn, RecordLoc)> = tail
            .iter()
            .map(|e| (e.timestamp, e.lsn, e.loc.into()))
            .collect();
        for item in self.tree.scan_prefix(keys::conv_messages_prefix(conv)) {
            let (k, v) = item?;
            if let Some((_, ts, lsn)) = keys::parse_conv_message(&k) {
                all.push((ts, lsn, parse_loc_bytes(&k, &v)?));
                continue;
            }
            let chunk: TimelineEntries =
                codec::decode_stored(&v, kind::TIMELINE_CHUNK, 1).map_err(corrupt(&k))?;
            all.extend(
                chunk
                    .entries
                    .iter()
                    .map(|e| (e.timestamp, e.lsn, e.loc.into())),
            );
        }
        all.sort_unstable_by_key(|&(ts, lsn, _)| (ts, lsn));
        all.dedup_by_key(|e| e.1);
        Ok(all
            .into_iter()
            .filter(|&(ts, lsn, _)| after.is_none_or(|a| (ts, lsn) > a))
            .take(limit)
            .collect())
    }

    /// Where account-level, preference, unrouted and invalid events are,
    /// newest first, strictly before `before` (an LSN), optionally of one
    /// record kind only: (lsn, kind, location).
    pub fn events(
        &self,
        before: Option<Lsn>,
        kind_filter: Option<u16>,
        limit: usize,
    ) -> Result<Vec<(Lsn, u16, RecordLoc)>> {
        let start = keys::event(0);
        let end = keys::event(before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for item in self.tree.range(start..end).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some(lsn) = keys::parse_event(&k) else {
                continue;
            };
            let header = codec::stored_header_of(&v).map_err(corrupt(&k))?;
            if kind_filter.is_some_and(|want| want != header.kind) {
                continue;
            }
            let loc = codec::decode_stored::<Loc>(&v, header.kind, 1).map_err(corrupt(&k))?;
            out.push((lsn, header.kind, loc.into()));
        }
        Ok(out)
    }

    fn load_all<T: Decode>(&self, prefix: u8, kind: u16) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([prefix]) {
            let (k, v) = item?;
            out.push(T::decode_stored(&v, kind, 1).map_err(corrupt(&k))?);
        }
        Ok(out)
    }

    pub fn load_conversations(&self) -> Result<Vec<ConversationRecord>> {
        self.load_all(keys::CONVERSATION, kind::CONVERSATION)
    }

    pub fn load_customers(&self) -> Result<Vec<CustomerRecord>> {
        self.load_all(keys::CUSTOMER, kind::CUSTOMER)
    }

    pub fn load_numbers(&self) -> Result<Vec<NumberRecord>> {
        self.load_all(keys::NUMBER, kind::NUMBER)
    }

    /// Make everything written so far durable: sled's flush, then an fsync
    /// of every file and directory under the store (see module docs).
    pub fn sync(&self) -> Result<()> {
        self.wrote(self.db.flush().map_err(Into::into))?;
        self.wrote(fsync_tree(&self.dir))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Delete dedupe marks of account-level events received before
    /// `older_than_ms`. The events themselves stay (they are the archive).
    pub fn prune_dedupe(&self, older_than_ms: i64) -> Result<usize> {
        let mut n = 0;
        for item in self.tree.scan_prefix([keys::DEDUPE]) {
            let (k, v) = item?;
            let mark: DedupeMark =
                codec::decode_stored(&v, kind::DEDUPE, 1).map_err(corrupt(&k))?;
            if mark.received_at_ms < older_than_ms {
                self.wrote(self.tree.remove(k).map_err(Into::into))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn fsync_tree(dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io(&path))?;
        if ft.is_dir() {
            fsync_tree(&path)?;
        } else if ft.is_file() {
            match File::open(&path).and_then(|f| f.sync_all()) {
                // Removed since the listing (an old snapshot sled replaced,
                // a write probe): nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(io(&path))?,
            }
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes applied together by [`Store::apply`].
#[derive(Default)]
pub struct Writes {
    batch: sled::Batch,
    count: usize,
}

impl Writes {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn put<T: Encode>(&mut self, key: &[u8], kind: u16, lsn: Lsn, value: &T) -> Result<()> {
        self.batch.insert(key, encode(kind, lsn, value)?.as_slice());
        self.count += 1;
        Ok(())
    }

    pub fn put_raw(&mut self, key: &[u8], value: &[u8]) {
        self.batch.insert(key, value);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(offset: u64) -> RecordLoc {
        RecordLoc { segment: 1, offset }
    }

    fn index(conv: u64, offset: u64) -> MessageIndex {
        MessageIndex {
            conv_id: conv,
            timestamp: 100,
            lsn: offset,
            loc: loc(offset).into(),
        }
    }

    #[test]
    fn insert_new_tells_new_keys_from_existing_ones_with_their_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let key = keys::message("wamid.A");
        assert_eq!(
            store
                .insert_new(&key, kind::MESSAGE, 5, &index(5, 16))
                .unwrap(),
            Inserted::New
        );
        assert_eq!(
            store
                .insert_new(&key, kind::MESSAGE, 9, &index(9, 99))
                .unwrap(),
            Inserted::Existing(5)
        );
        let (lsn, m) = store.message("wamid.A").unwrap().unwrap();
        assert_eq!(
            (lsn, m.conv_id, RecordLoc::from(m.loc)),
            (5, 5, loc(16)),
            "the first write stays"
        );
        store.sync().unwrap();
    }

    fn entry(ts: i64, lsn: Lsn) -> TimelineEntry {
        TimelineEntry {
            timestamp: ts,
            lsn,
            loc: loc(lsn * 10).into(),
        }
    }

    #[test]
    fn timelines_merge_format_1_keys_chunks_and_the_tail_in_time_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        // Format 1: one key per message.
        store
            .tree
            .insert(keys::conv_message(5, 100, 1), &loc_bytes(loc(10)))
            .unwrap();
        // Two chunks; the second holds a late message (ts 95) and overlaps
        // the first in time.
        let chunk = |v: Vec<TimelineEntry>| TimelineEntries { entries: v };
        store
            .put_timeline_chunk(5, &chunk(vec![entry(110, 2), entry(120, 3)]))
            .unwrap();
        store
            .put_timeline_chunk(5, &chunk(vec![entry(95, 4), entry(130, 5)]))
            .unwrap();
        // Sealing again (replay) rewrites the same key.
        store
            .put_timeline_chunk(5, &chunk(vec![entry(95, 4), entry(130, 5)]))
            .unwrap();
        // Another conversation's chunk stays out.
        store
            .put_timeline_chunk(6, &chunk(vec![entry(1, 9)]))
            .unwrap();
        // The tail also holds an entry already sealed (read across a seal).
        let tail = [entry(130, 5), entry(140, 6)];
        let lsns = |v: Vec<(i64, Lsn, RecordLoc)>| v.iter().map(|e| e.1).collect::<Vec<_>>();
        assert_eq!(
            lsns(store.timeline(5, &tail, None, 100).unwrap()),
            vec![4, 1, 2, 3, 5, 6]
        );
        assert_eq!(
            store.timeline(5, &tail, None, 1).unwrap(),
            vec![(95, 4, loc(40))]
        );
        assert_eq!(
            lsns(store.timeline(5, &tail, Some((110, 2)), 2).unwrap()),
            vec![3, 5]
        );
        assert_eq!(
            lsns(store.timeline(5, &tail, Some((140, 6)), 10).unwrap()),
            Vec::<Lsn>::new()
        );
        assert!(store.timeline(7, &[], None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_format_1_store_is_marked_format_2_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            store
                .tree
                .insert(keys::meta("format"), &1u32.to_be_bytes())
                .unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let v = store.tree.get(keys::meta("format")).unwrap().unwrap();
        assert_eq!(v.as_ref(), &FORMAT_VERSION.to_be_bytes());
        assert_eq!(FORMAT_VERSION, 2);
    }

    #[test]
    fn tails_are_written_loaded_and_removed_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let tail = TimelineEntries {
            entries: vec![entry(1, 1), entry(2, 2)],
        };
        store.put_timeline_tail(3, &tail).unwrap();
        store
            .put_timeline_tail(4, &TimelineEntries::default())
            .unwrap();
        assert_eq!(store.load_timeline_tails().unwrap(), vec![(3, tail)]);
        store
            .put_timeline_tail(3, &TimelineEntries::default())
            .unwrap();
        assert!(store.load_timeline_tails().unwrap().is_empty());
    }

    #[test]
    fn status_and_event_locations_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let l: Loc = loc(64).into();
        store
            .insert_new(&keys::status("wamid.S", "sent"), kind::STATUS, 3, &l)
            .unwrap();
        store
            .insert_new(&keys::status("wamid.S", "read"), kind::STATUS, 4, &l)
            .unwrap();
        store
            .insert_new(&keys::status("wamid.SX", "read"), kind::STATUS, 5, &l)
            .unwrap();
        assert_eq!(
            store.statuses("wamid.S").unwrap(),
            vec![(4, loc(64)), (3, loc(64))]
        );
        store.put(&keys::event(10), kind::ACCOUNT, 10, &l).unwrap();
        store.put(&keys::event(11), kind::INVALID, 11, &l).unwrap();
        store.put(&keys::event(12), kind::ACCOUNT, 12, &l).unwrap();
        let all: Vec<Lsn> = store
            .events(None, None, 10)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(all, vec![12, 11, 10]);
        let acc: Vec<Lsn> = store
            .events(Some(12), Some(kind::ACCOUNT), 10)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(acc, vec![10]);
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        store
            .tree
            .insert(
                keys::message("wamid.B"),
                &b"SWB\x01garbage-garbage-garbage"[..],
            )
            .unwrap();
        assert!(matches!(
            store.message("wamid.B"),
            Err(StoreError::Corrupt { .. })
        ));
        store
            .tree
            .insert(keys::message("wamid.C"), &b"short"[..])
            .unwrap();
        let again = store.insert_new(&keys::message("wamid.C"), kind::MESSAGE, 1, &index(1, 1));
        assert!(matches!(again, Err(StoreError::Corrupt { .. })));
        store
            .tree
            .insert(keys::conv_message(3, 1, 1), &b"not a location"[..])
            .unwrap();
        assert!(matches!(
            store.timeline(3, &[], None, 5),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn reopen_keeps_synced_data_and_refuses_future_format() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            store
                .insert_new(&keys::message("wamid.D"), kind::MESSAGE, 9, &index(9, 8))
                .unwrap();
            store.sync().unwrap();
        }
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(store.message("wamid.D").unwrap().unwrap().0, 9);
            store
                .tree
                .insert(keys::meta("format"), &(FORMAT_VERSION + 1).to_be_bytes())
                .unwrap();
            store.sync().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path(), 8 << 20),
            Err(StoreError::FutureFormat { .. })
        ));
    }
}
