//! Reading single records back by location: the journal is also the
//! message archive, and sled's index points into it.
//!
//! Invariants: every read checks the record's magic, length and CRC32C
//! before handing out its payload (a damaged or truncated record is an
//! error, never a panic), and copies the payload into a 16-byte aligned
//! buffer for validated rkyv access. Readers never write; they open segment
//! files read-only and keep a bounded number of them open.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rkyv::util::AlignedVec;

use super::segment::{framed_len, parse_at, segment_file_name, RECORD_HEADER_LEN, RECORD_MAGIC};
use super::{io_err, JournalError, Lsn, RecordLoc};

/// Open segment files kept for reads; beyond it the cache starts over.
const MAX_OPEN_SEGMENTS: usize = 64;
/// No record is larger than this; a header claiming more is damage.
const MAX_READ_BYTES: usize = 256 << 20;

/// A record read back from the journal.
#[derive(Debug)]
pub struct ReadRecord {
    pub lsn: Lsn,
    pub kind: u16,
    pub version: u16,
    /// The payload, 16-byte aligned.
    pub payload: AlignedVec,
}

/// Reads records by location; cheap to clone, safe from any thread.
#[derive(Clone)]
pub struct JournalReader {
    dir: PathBuf,
    files: Arc<Mutex<HashMap<Lsn, Arc<File>>>>,
}

impl JournalReader {
    pub fn new(dir: impl Into<PathBuf>) -> JournalReader {
        JournalReader {
            dir: dir.into(),
            files: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn file(&self, segment: Lsn) -> Result<Arc<File>, JournalError> {
        if let Some(f) = self.files.lock().get(&segment) {
            return Ok(f.clone());
        }
        let path = self.dir.join(segment_file_name(segment));
        let file = Arc::new(File::open(&path).map_err(io_err("open segment", &path))?);
        let mut files = self.files.lock();
        if files.len() >= MAX_OPEN_SEGMENTS {
            files.clear();
        }
        files.insert(segment, file.clone());
        Ok(file)
    }

    /// The record at `loc`, checked.
    pub fn read(&self, loc: RecordLoc) -> Result<ReadRecord, JournalError> {
        let corrupt = |reason: &str| JournalError::Corrupt {
            segment: segment_file_name(loc.segment),
            offset: loc.offset,
            reason: reason.to_string(),
        };
        let file = self.file(loc.segment)?;
        let path = self.dir.join(segment_file_name(loc.segment));
        let mut header = [0u8; RECORD_HEADER_LEN];
        file.read_exact_at(&mut header, loc.offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt("no record at this offset"),
                _ => io_err("read segment", &path)(e),
            })?;
        if u32::from_le_bytes([header[0], header[1], header[2], header[3]]) != RECORD_MAGIC {
            return Err(corrupt("no record magic at this offset"));
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_READ_BYTES {
            return Err(corrupt("record length out of range"));
        }
        let mut framed = vec![0u8; framed_len(len)];
        framed[..RECORD_HEADER_LEN].copy_from_slice(&header);
        file.read_exact_at(
            &mut framed[RECORD_HEADER_LEN..],
            loc.offset + RECORD_HEADER_LEN as u64,
        )
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt("record cut short"),
            _ => io_err("read segment", &path)(e),
        })?;
        let r = parse_at(&framed, 0).ok_or_else(|| corrupt("checksum mismatch"))?;
        let mut payload = AlignedVec::<16>::with_capacity(r.payload.len());
        payload.extend_from_slice(r.payload);
        Ok(ReadRecord {
            lsn: r.lsn,
            kind: r.kind,
            version: r.version,
            payload,
        })
    }
}
