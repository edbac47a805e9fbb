//! The indexed state: one sled tree with prefixed keys (see [`keys`]) and
//! rkyv values (see [`records`]).
//!
//! Invariants:
//! - sled is an index, not the acknowledgement boundary: everything in it can
//!   be rebuilt from the journal since the last checkpoint. [`Store::sync`]
//!   flushes sled and then fsyncs its files, because sled's own flush uses
//!   `sync_file_range` and does not flush the disk cache.
//! - Every value read back is validated (copied to an aligned buffer first);
//!   a value that fails validation is reported as [`StoreError::Corrupt`],
//!   never trusted and never a panic.
//! - Dedupe keys (`m`, `s`, `d`) carry the LSN of the record that wrote them
//!   in the value header: replay of that same record is recognised as such.
//! - Calls are synchronous: shard threads and the checkpointer call them;
//!   the async API only does short point reads and bounded scans.

pub mod keys;
pub mod records;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::codec::{self, CodecError, Decode, Encode, StoredHeader};
use crate::event::{
    AccountEvent, Event, InvalidEvent, Lsn, PreferenceEvent, StatusEvent, UnroutedEvent,
};
use records::{kind, ConversationRecord, CustomerRecord, DedupeMark, NumberRecord, StoredMessage};

/// Version of the key schema and record set; stored under `z/format`.
pub const FORMAT_VERSION: u32 = 1;

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

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
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
        };
        store.check_format()?;
        Ok(store)
    }

    fn check_format(&self) -> Result<()> {
        let key = keys::meta("format");
        match self.tree.get(&key)? {
            Some(v) if v.len() == 4 => {
                let found = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                if found > FORMAT_VERSION {
                    return Err(StoreError::FutureFormat { found });
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

    /// LSN recorded in the header of the value under `key`, if any.
    pub fn lsn_of(&self, key: &[u8]) -> Result<Option<Lsn>> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(v) => Ok(Some(codec::stored_header_of(&v).map_err(corrupt(key))?.lsn)),
        }
    }

    /// Apply a batch of writes atomically.
    pub fn apply(&self, writes: Writes) -> Result<()> {
        if writes.count > 0 {
            self.tree.apply_batch(writes.batch)?;
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

    /// An archived message and the LSN that wrote it.
    pub fn message(&self, wamid: &str) -> Result<Option<(Lsn, StoredMessage)>> {
        self.get_decoded(&keys::message(wamid), kind::MESSAGE)
    }

    /// Every status received for `wamid`, in key order (use their timestamps
    /// and the monotonic rules to order them).
    pub fn statuses(&self, wamid: &str) -> Result<Vec<(Lsn, StatusEvent)>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::status_prefix(wamid)) {
            let (k, v) = item?;
            let header = codec::stored_header_of(&v).map_err(corrupt(&k))?;
            let status =
                codec::decode_stored::<StatusEvent>(&v, kind::STATUS, 1).map_err(corrupt(&k))?;
            out.push((header.lsn, status));
        }
        Ok(out)
    }

    /// Up to `limit` entries of a conversation's timeline after `after`
    /// (exclusive), oldest first: (timestamp, lsn, wamid).
    pub fn timeline(
        &self,
        conv: u64,
        after: Option<(i64, Lsn)>,
        limit: usize,
    ) -> Result<Vec<(i64, Lsn, String)>> {
        let prefix = keys::conv_messages_prefix(conv);
        let start = match after {
            // The first key strictly after the cursor.
            Some((ts, lsn)) => keys::conv_message(conv, ts, lsn.saturating_add(1)).to_vec(),
            None => prefix.to_vec(),
        };
        let mut out = Vec::with_capacity(limit.min(256));
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let Some((_, ts, lsn)) = keys::parse_conv_message(&k) else {
                continue;
            };
            let wamid = String::from_utf8(v.to_vec()).map_err(|e| StoreError::Corrupt {
                key: key_for_humans(&k),
                source: CodecError::Invalid(e.to_string()),
            })?;
            out.push((ts, lsn, wamid));
        }
        Ok(out)
    }

    /// Account-level, preference, unrouted and invalid events, newest first,
    /// strictly before `before` (an LSN), optionally of one kind only.
    pub fn events(
        &self,
        before: Option<Lsn>,
        kind_filter: Option<u16>,
        limit: usize,
    ) -> Result<Vec<(Lsn, Event)>> {
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
            out.push((lsn, decode_stored_event(&k, &v, header.kind)?));
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
        self.db.flush()?;
        fsync_tree(&self.dir)
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Delete dedupe marks of account-level events received before
    /// `older_than_ms`. The events themselves stay (they are the archive).
    pub fn prune_dedupe(&self, older_than_ms: i64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.tree.scan_prefix([keys::DEDUPE]) {
            let (k, v) = item?;
            let mark: DedupeMark =
                codec::decode_stored(&v, kind::DEDUPE, 1).map_err(corrupt(&k))?;
            if mark.received_at_ms < older_than_ms {
                batch.remove(k);
                n += 1;
            }
        }
        if n > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(n)
    }
}

fn decode_stored_event(key: &[u8], value: &[u8], kind: u16) -> Result<Event> {
    let ev = match kind {
        kind::ACCOUNT => Event::Account(
            codec::decode_stored::<AccountEvent>(value, kind, 1).map_err(corrupt(key))?,
        ),
        kind::PREFERENCE => Event::Preference(
            codec::decode_stored::<PreferenceEvent>(value, kind, 1).map_err(corrupt(key))?,
        ),
        kind::UNROUTED => Event::Unrouted(
            codec::decode_stored::<UnroutedEvent>(value, kind, 1).map_err(corrupt(key))?,
        ),
        kind::INVALID => Event::Invalid(
            codec::decode_stored::<InvalidEvent>(value, kind, 1).map_err(corrupt(key))?,
        ),
        other => {
            return Err(StoreError::Corrupt {
                key: key_for_humans(key),
                source: CodecError::UnknownKind(other),
            })
        }
    };
    Ok(ev)
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
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes staged for one atomic batch, remembering dedupe keys written so a
/// later event in the same batch sees them.
#[derive(Default)]
pub struct Writes {
    batch: sled::Batch,
    staged: HashMap<Vec<u8>, Lsn>,
    count: usize,
}

impl Writes {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// LSN under a dedupe `key`: staged in this batch, else in the store.
    pub fn lsn_of(&self, store: &Store, key: &[u8]) -> Result<Option<Lsn>> {
        match self.staged.get(key) {
            Some(lsn) => Ok(Some(*lsn)),
            None => store.lsn_of(key),
        }
    }

    pub fn put<T: Encode>(&mut self, key: &[u8], kind: u16, lsn: Lsn, value: &T) -> Result<()> {
        let bytes = codec::encode_stored(
            StoredHeader {
                kind,
                version: 1,
                lsn,
            },
            value,
        )
        .map_err(StoreError::Encode)?;
        self.batch.insert(key, bytes.as_slice());
        self.count += 1;
        Ok(())
    }

    /// Like [`Writes::put`], and remember `key` for [`Writes::lsn_of`].
    pub fn put_dedupe<T: Encode>(
        &mut self,
        key: &[u8],
        kind: u16,
        lsn: Lsn,
        value: &T,
    ) -> Result<()> {
        self.put(key, kind, lsn, value)?;
        self.staged.insert(key.to_vec(), lsn);
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
    use crate::event::{CustomerRef, Direction, MessageEvent};

    fn message(wamid: &str) -> MessageEvent {
        MessageEvent {
            number_id: "1".into(),
            waba_id: "2".into(),
            route: 0,
            direction: Direction::In,
            customer: CustomerRef {
                wa_id: Some("15550001".into()),
                home: "15550001".into(),
                ..Default::default()
            },
            wamid: wamid.into(),
            kind: "text".into(),
            timestamp: 100,
            timestamp_valid: true,
            received_at_ms: 100_000,
            text: Some("hi".into()),
            media: None,
            context_id: None,
            referral: None,
            system: None,
            raw: "{}".into(),
        }
    }

    #[test]
    fn batch_writes_are_visible_and_dedupe_keys_staged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let mut w = Writes::default();
        let key = keys::message("wamid.A");
        assert_eq!(w.lsn_of(&store, &key).unwrap(), None);
        w.put_dedupe(
            &key,
            kind::MESSAGE,
            5,
            &StoredMessage {
                conv_id: 5,
                event: message("wamid.A"),
            },
        )
        .unwrap();
        assert_eq!(w.lsn_of(&store, &key).unwrap(), Some(5));
        w.put_raw(&keys::conv_message(5, 100, 5), b"wamid.A");
        store.apply(w).unwrap();
        assert_eq!(store.lsn_of(&key).unwrap(), Some(5));
        let (lsn, m) = store.message("wamid.A").unwrap().unwrap();
        assert_eq!(
            (lsn, m.conv_id, m.event.text.as_deref()),
            (5, 5, Some("hi"))
        );
        assert_eq!(
            store.timeline(5, None, 10).unwrap(),
            vec![(100, 5, "wamid.A".to_string())]
        );
        assert!(store.timeline(5, Some((100, 5)), 10).unwrap().is_empty());
        store.sync().unwrap();
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
        assert!(matches!(
            store.lsn_of(&keys::message("wamid.C")),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn reopen_keeps_synced_data_and_refuses_future_format() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            let mut w = Writes::default();
            w.put(
                &keys::message("wamid.D"),
                kind::MESSAGE,
                9,
                &StoredMessage {
                    conv_id: 9,
                    event: message("wamid.D"),
                },
            )
            .unwrap();
            store.apply(w).unwrap();
            store.sync().unwrap();
        }
        {
            let store = Store::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(store.lsn_of(&keys::message("wamid.D")).unwrap(), Some(9));
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
