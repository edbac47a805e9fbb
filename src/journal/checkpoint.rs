//! The checkpoint file: where journal replay starts after a restart.
//!
//! `dir/checkpoint` is 36 bytes, little endian: magic `b"SWBCKPT\0"`, format
//! version u32 = 1, 4 zero bytes, `lsn` u64, `written_at_ms` i64, then a
//! crc32c of the 32 bytes before it.
//!
//! Invariants:
//! - The file is replaced atomically (write `checkpoint.tmp`, `sync_all`,
//!   rename, fsync the directory): a reader sees the old checkpoint or the new
//!   one, never a mix.
//! - A damaged file reads as "no checkpoint" (logged and counted), never as
//!   an error: replaying everything still on disk is always safe, because
//!   applying a record is idempotent; it only costs time.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use metrics::counter;
use tracing::error;

use super::segment::sync_dir;
use super::{io_err, JournalError, Lsn};

const FILE_NAME: &str = "checkpoint";
const TMP_NAME: &str = "checkpoint.tmp";
const MAGIC: [u8; 8] = *b"SWBCKPT\0";
const VERSION: u32 = 1;
const LEN: usize = 36;

/// A durable position of the index: every record below `lsn` is reflected
/// in sled's flushed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Replay starts at this LSN.
    pub lsn: Lsn,
    /// When the checkpoint was taken, Unix milliseconds.
    pub written_at_ms: i64,
}

fn encode(cp: &Checkpoint) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&cp.lsn.to_le_bytes());
    b[24..32].copy_from_slice(&cp.written_at_ms.to_le_bytes());
    let crc = crc32c::crc32c(&b[..32]);
    b[32..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Result<Checkpoint, &'static str> {
    let b: &[u8; LEN] = b.try_into().map_err(|_| "wrong length")?;
    let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
    if crc32c::crc32c(&b[..32]) != crc {
        return Err("bad checksum");
    }
    if b[..8] != MAGIC || b[12..16] != [0; 4] {
        return Err("bad magic");
    }
    if u32::from_le_bytes([b[8], b[9], b[10], b[11]]) != VERSION {
        return Err("unknown version");
    }
    let lsn = u64::from_le_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]);
    let written_at_ms =
        i64::from_le_bytes([b[24], b[25], b[26], b[27], b[28], b[29], b[30], b[31]]);
    Ok(Checkpoint { lsn, written_at_ms })
}

/// The checkpoint in `dir`, or `None` when there is none or it is damaged.
pub fn read(dir: &Path) -> Result<Option<Checkpoint>, JournalError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read checkpoint", &path)(e)),
    };
    match decode(&bytes) {
        Ok(cp) => Ok(Some(cp)),
        Err(why) => {
            error!(path = %path.display(), why, len = bytes.len(), "journal: checkpoint is damaged; replaying the whole journal");
            counter!("switchboard_journal_checkpoint_corrupt_total").increment(1);
            Ok(None)
        }
    }
}

/// Replace the checkpoint in `dir` atomically and durably.
pub fn write(dir: &Path, cp: &Checkpoint) -> Result<(), JournalError> {
    let tmp = dir.join(TMP_NAME);
    let path = dir.join(FILE_NAME);
    let mut f = File::create(&tmp).map_err(io_err("create checkpoint", &tmp))?;
    f.write_all(&encode(cp))
        .map_err(io_err("write checkpoint", &tmp))?;
    f.sync_all().map_err(io_err("fsync checkpoint", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename checkpoint", &path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let a = Checkpoint {
            lsn: 42,
            written_at_ms: 1_749_416_383_123,
        };
        write(dir.path(), &a).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(a));
        let b = Checkpoint {
            lsn: 1 << 40,
            written_at_ms: -5,
        };
        write(dir.path(), &b).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(b));
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn damaged_checkpoint_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint {
            lsn: 7,
            written_at_ms: 8,
        };
        let good = encode(&cp);
        let path = dir.path().join(FILE_NAME);
        for i in 0..LEN {
            let mut bad = good;
            bad[i] ^= 0x01;
            fs::write(&path, bad).unwrap();
            assert_eq!(read(dir.path()).unwrap(), None, "flipped byte {i}");
        }
        fs::write(&path, &good[..20]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        fs::write(&path, b"").unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        // A leftover temporary file from a crash mid-write is ignored.
        fs::write(&path, good).unwrap();
        fs::write(dir.path().join(TMP_NAME), b"half").unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(cp));
    }

    #[test]
    fn unreadable_directory_is_an_error_not_none() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails with an I/O error.
        fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        assert!(matches!(read(dir.path()), Err(JournalError::Io { .. })));
    }
}
