//! Segment files: on-disk format, record framing, scanning and crash repair.
//!
//! Owns the byte layout of `{first_lsn:020}.seg` files and the open-time
//! recovery that turns whatever a crash left on disk into a clean journal.
//!
//! Segment layout:
//! - 16-byte header: `b"SWBJRNL\0"`, format version `1` (u32 LE), 4 zero bytes.
//! - Records, back to back, each starting at an 8-byte aligned offset:
//!   `magic u32 | payload_len u32 | crc32c u32 | kind u16 | version u16 | lsn u64`
//!   (24 bytes, little endian), the payload, then zero padding up to the next
//!   multiple of 8. The CRC covers header bytes `[12..24)` (kind, version,
//!   lsn) and the payload. Padding is written as zeros, is not covered by the
//!   CRC and its content is ignored by readers; it must be present, so a file
//!   that ends inside a record's padding ends in a torn record (the padding is
//!   written in the same `write` and covered by the same fsync as the record,
//!   so such a record was never acknowledged).
//!
//! Invariants:
//! - A record is valid iff its magic, length (fits in the file) and CRC check
//!   out. Nothing else in the file is trusted; scanning never panics.
//! - Recovery only ever removes bytes from the *end of the last* segment (a
//!   torn tail); those bytes are copied to `corrupt/` first unless they are all
//!   zeros. Bytes anywhere else are never modified: a bad range in the middle
//!   may be acknowledged data, so it is copied to `corrupt/`, reported and
//!   skipped, and stays in place until retention removes its segment.
//! - LSNs are never reused: the next LSN is above every valid record and every
//!   segment name seen, even of a segment removed during recovery.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use metrics::counter;
use tracing::{error, info, warn};

use super::{
    io_err, CorruptRange, JournalConfig, JournalError, LsnAnomaly, RecordLoc, Recovery, Truncation,
};
use crate::event::Lsn;
use crate::telemetry::names;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SWBJRNL\0";
/// Segment format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// Record magic. On disk (LE) it reads `F7 C1 5B 4A`: 0xF7 and 0xC1 never
/// occur in UTF-8 text, so the JSON carried in payloads cannot produce it
/// and resynchronisation after corruption rarely stops on a false candidate
/// (the CRC rejects those that do).
pub const RECORD_MAGIC: u32 = 0x4A5B_C1F7;
/// Length of the record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Records start at multiples of this (from the start of the file).
pub const RECORD_ALIGN: usize = 8;
/// Subdirectory of the journal directory where damaged byte ranges are copied.
pub const CORRUPT_DIR: &str = "corrupt";

/// Bytes a record with `payload_len` bytes of payload takes on disk.
pub const fn framed_len(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// The header every segment starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// File name of the segment whose first record is `first_lsn`.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.seg")
}

/// The LSN in a segment file name, or `None` when `name` is not one.
pub fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Append one framed record to `buf`: header, payload, zero padding.
///
/// The payload is copied exactly once, into `buf`; nothing else allocates
/// unless `buf` must grow. Fails (appending nothing) when the payload does
/// not fit the 32-bit length field.
pub fn encode_record(
    buf: &mut Vec<u8>,
    lsn: Lsn,
    kind: u16,
    version: u16,
    payload: &[u8],
) -> Result<(), JournalError> {
    let len = u32::try_from(payload.len()).map_err(|_| JournalError::TooLarge {
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[12..14].copy_from_slice(&kind.to_le_bytes());
    h[14..16].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[12..24]), payload);
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    let end = buf.len() + framed_len(payload.len());
    buf.reserve(end - buf.len());
    buf.extend_from_slice(&h);
    buf.extend_from_slice(payload);
    buf.resize(end, 0);
    Ok(())
}

/// What a segment header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid,
    /// Too short, wrong magic or non-zero reserved bytes.
    Bad,
    /// Our magic with a version this build does not know.
    UnknownVersion(u32),
}

pub(crate) fn check_header(data: &[u8]) -> HeaderCheck {
    if data.len() < SEGMENT_HEADER_LEN || data[..8] != SEGMENT_MAGIC || data[12..16] != [0; 4] {
        return HeaderCheck::Bad;
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != FORMAT_VERSION {
        return HeaderCheck::UnknownVersion(version);
    }
    HeaderCheck::Valid
}

/// A valid record inside a segment buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub offset: usize,
    /// Offset just past the record's padding.
    pub end: usize,
    pub lsn: Lsn,
    pub kind: u16,
    pub version: u16,
    pub payload: &'a [u8],
}

/// One step of a segment scan.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    Record(RecordRef<'a>),
    /// Bytes that are not a valid record, followed by a valid record.
    Corrupt {
        offset: usize,
        len: usize,
    },
    /// Bytes that are not a valid record, up to the end of the buffer.
    Tail {
        offset: usize,
        len: usize,
    },
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// The valid record at `pos`, if there is one. The only length bound is the
/// buffer itself: `max_record_bytes` may have been lowered since the record
/// was written, and the CRC decides validity anyway.
pub(crate) fn parse_at(data: &[u8], pos: usize) -> Option<RecordRef<'_>> {
    let header = data.get(pos..pos.checked_add(RECORD_HEADER_LEN)?)?;
    if read_u32(header, 0) != RECORD_MAGIC {
        return None;
    }
    let len = read_u32(header, 4) as usize;
    let payload_start = pos + RECORD_HEADER_LEN;
    let end = pos.checked_add(framed_len(len))?;
    if end > data.len() {
        return None;
    }
    let payload = &data[payload_start..payload_start + len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[12..24]), payload);
    if crc != read_u32(header, 8) {
        return None;
    }
    Some(RecordRef {
        offset: pos,
        end,
        lsn: u64::from_le_bytes(header[16..24].try_into().ok()?),
        kind: u16::from_le_bytes([header[12], header[13]]),
        version: u16::from_le_bytes([header[14], header[15]]),
        payload,
    })
}

/// Offset of the next valid record strictly after `pos`. Every byte offset is
/// tried, not only aligned ones, so a record is found even in a file whose
/// alignment was disturbed.
fn resync(data: &[u8], pos: usize) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut from = pos + 1;
    while from + RECORD_HEADER_LEN <= data.len() {
        let found = data[from..].windows(4).position(|w| w == magic)?;
        let candidate = from + found;
        if parse_at(data, candidate).is_some() {
            return Some(candidate);
        }
        from = candidate + 1;
    }
    None
}

/// Iterates the records of a segment buffer from `start`, reporting damaged
/// ranges between them.
pub(crate) struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(data: &'a [u8], start: usize) -> Self {
        Scanner {
            data,
            pos: start.min(data.len()),
        }
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let pos = self.pos;
        if pos >= self.data.len() {
            return None;
        }
        if let Some(r) = parse_at(self.data, pos) {
            self.pos = r.end;
            return Some(Item::Record(r));
        }
        match resync(self.data, pos) {
            Some(next) => {
                self.pos = next;
                Some(Item::Corrupt {
                    offset: pos,
                    len: next - pos,
                })
            }
            None => {
                self.pos = self.data.len();
                Some(Item::Tail {
                    offset: pos,
                    len: self.data.len() - pos,
                })
            }
        }
    }
}

/// One segment file as the journal knows it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    /// The LSN in the file name: the first record's LSN when it was created.
    pub first_lsn: Lsn,
    pub path: PathBuf,
    pub bytes: u64,
    /// Highest valid LSN in the file; `None` when it holds no valid record.
    pub max_lsn: Option<Lsn>,
}

/// The segment files, oldest first; the last one is the one being written.
#[derive(Debug, Default)]
pub(crate) struct SegmentSet {
    pub list: Vec<SegmentInfo>,
    pub total_bytes: u64,
}

impl SegmentSet {
    pub fn publish_gauges(&self) {
        metrics::gauge!(names::JOURNAL_SEGMENTS).set(self.list.len() as f64);
        metrics::gauge!(names::JOURNAL_DISK_BYTES).set(self.total_bytes as f64);
    }
}

/// Everything `Journal::open` needs from recovery.
pub(crate) struct Recovered {
    pub set: SegmentSet,
    pub current: File,
    pub current_len: u64,
    pub next_lsn: Lsn,
    pub report: Recovery,
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Create (or overwrite) a segment holding only its header, durably: the
/// file's data and its name in the directory.
pub(crate) fn create_segment(dir: &Path, first_lsn: Lsn) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(segment_file_name(first_lsn));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    file.write_all(&segment_header())
        .map_err(io_err("write segment header", &path))?;
    file.sync_all().map_err(io_err("fsync segment", &path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Copy a damaged range to `dir/corrupt/<segment>-<offset>.bin`. Failing to
/// keep the copy is logged, not fatal: the original bytes stay in place
/// except for a torn tail, which is cut either way so writing can resume.
fn save_range(dir: &Path, segment: &Path, offset: usize, bytes: &[u8]) -> Option<PathBuf> {
    let stem = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("segment");
    let corrupt = dir.join(CORRUPT_DIR);
    let path = corrupt.join(format!("{stem}-{offset}.bin"));
    let created = !corrupt.is_dir();
    let result = fs::create_dir_all(&corrupt)
        .and_then(|()| {
            let mut f = File::create(&path)?;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(io_err("save corrupt range", &path))
        .and_then(|()| sync_dir(&corrupt))
        .and_then(|()| if created { sync_dir(dir) } else { Ok(()) });
    match result {
        Ok(()) => Some(path),
        Err(e) => {
            error!(segment = %segment.display(), offset, len = bytes.len(), error = %e, "journal: could not save a copy of a damaged range");
            None
        }
    }
}

fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let Some(lsn) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        if entry
            .file_type()
            .map_err(io_err("stat", entry.path()))?
            .is_file()
        {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_file(path: &Path, buf: &mut Vec<u8>) -> Result<(), JournalError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(io_err("read segment", path))?;
    Ok(())
}

/// LSN continuity across the whole journal.
struct Continuity {
    last: Option<Lsn>,
    /// A damaged range was skipped since `last`: a gap is then expected (the
    /// damaged bytes held those LSNs) and is not reported a second time.
    skipped: bool,
}

impl Continuity {
    fn check(&mut self, segment: &Path, offset: usize, lsn: Lsn, report: &mut Recovery) {
        if let Some(last) = self.last {
            let expected = last + 1;
            let kind = if lsn < expected {
                Some("regression")
            } else if lsn > expected && !self.skipped {
                Some("gap")
            } else {
                None
            };
            if let Some(kind) = kind {
                error!(segment = %segment.display(), offset, expected, found = lsn, kind, "journal: LSN discontinuity");
                counter!(names::JOURNAL_LSN_ANOMALIES, "kind" => kind).increment(1);
                report.lsn_anomalies.push(LsnAnomaly {
                    segment: segment.to_path_buf(),
                    offset: offset as u64,
                    expected,
                    found: lsn,
                });
            }
        }
        // A regression never lowers the high-water mark: LSNs are not reused.
        self.last = Some(self.last.map_or(lsn, |l| l.max(lsn)));
        self.skipped = false;
    }
}

/// Scan and repair every segment in `cfg.dir`; see the module docs.
pub(crate) fn recover(cfg: &JournalConfig) -> Result<Recovered, JournalError> {
    let dir = cfg.dir.as_path();
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        // The directory's own name must be durable before anything in it is
        // acknowledged.
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    let files = list_segments(dir)?;
    let mut report = Recovery::default();
    let mut set = SegmentSet::default();
    let mut cont = Continuity {
        last: None,
        skipped: false,
    };
    // Highest segment name seen: LSNs below it may exist elsewhere (or did).
    let mut floor: Lsn = 1;
    // The last segment had a bad header but valid records: never append to
    // it, start a fresh segment instead.
    let mut must_rotate = false;
    let mut buf = Vec::new();
    let count = files.len();

    for (index, (name_lsn, path)) in files.into_iter().enumerate() {
        let is_last = index + 1 == count;
        floor = floor.max(name_lsn);
        read_file(&path, &mut buf)?;
        let mut start = SEGMENT_HEADER_LEN;
        let mut bad_header = false;
        match check_header(&buf) {
            HeaderCheck::Valid => {}
            HeaderCheck::UnknownVersion(found) => {
                return Err(JournalError::UnsupportedVersion {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            HeaderCheck::Bad => {
                let has_record = buf.len() > SEGMENT_HEADER_LEN
                    && Scanner::new(&buf, 0).any(|i| matches!(i, Item::Record(_)));
                if !has_record {
                    // Nothing to replay in it: most likely a crash while the
                    // segment was being created. Keep a copy of anything but
                    // zeros or the start of our own header before touching it.
                    let half_made =
                        buf.iter().all(|b| *b == 0) || segment_header().starts_with(&buf);
                    let saved = if !half_made {
                        let saved = save_range(dir, &path, 0, &buf);
                        report_corrupt(
                            &mut report,
                            &path,
                            0,
                            buf.len(),
                            saved.clone(),
                            "segment without a valid header or record",
                        );
                        saved.is_some()
                    } else {
                        true
                    };
                    if !saved {
                        // No copy: leave the bytes where they are and never
                        // write into this file.
                        set.list.push(SegmentInfo {
                            first_lsn: name_lsn,
                            path,
                            bytes: buf.len() as u64,
                            max_lsn: None,
                        });
                        must_rotate = is_last;
                    } else if is_last {
                        warn!(segment = %path.display(), bytes = buf.len(), "journal: rewriting the header of a segment left half-created");
                        let (file, path) = create_segment(dir, name_lsn)?;
                        drop(file);
                        report.rewritten_segments.push(path.clone());
                        set.list.push(SegmentInfo {
                            first_lsn: name_lsn,
                            path,
                            bytes: SEGMENT_HEADER_LEN as u64,
                            max_lsn: None,
                        });
                    } else {
                        warn!(segment = %path.display(), bytes = buf.len(), "journal: removing a segment with no valid header or record");
                        fs::remove_file(&path).map_err(io_err("remove segment", &path))?;
                        sync_dir(dir)?;
                        report.removed_segments.push(path);
                    }
                    continue;
                }
                // Valid records after a damaged header: keep them, resync
                // from the start of the file.
                bad_header = true;
                start = 0;
                must_rotate = is_last;
            }
        }

        let mut max_lsn: Option<Lsn> = None;
        let mut cut: Option<usize> = None;
        for item in Scanner::new(&buf, start) {
            match item {
                Item::Record(r) => {
                    cont.check(&path, r.offset, r.lsn, &mut report);
                    max_lsn = Some(max_lsn.map_or(r.lsn, |m| m.max(r.lsn)));
                    report.first_lsn = Some(report.first_lsn.map_or(r.lsn, |f| f.min(r.lsn)));
                    report.records += 1;
                }
                Item::Corrupt { offset, len } => {
                    let saved = save_range(dir, &path, offset, &buf[offset..offset + len]);
                    let why = if bad_header && offset == 0 {
                        "bad segment header"
                    } else {
                        "damaged record"
                    };
                    report_corrupt(&mut report, &path, offset, len, saved, why);
                    cont.skipped = true;
                }
                Item::Tail { offset, .. } if is_last && !bad_header => cut = Some(offset),
                Item::Tail { offset, len } => {
                    // Not the end of the journal: records were written after
                    // these bytes, so they may have been acknowledged.
                    let saved = save_range(dir, &path, offset, &buf[offset..offset + len]);
                    report_corrupt(
                        &mut report,
                        &path,
                        offset,
                        len,
                        saved,
                        "damaged bytes at the end of a segment",
                    );
                    cont.skipped = true;
                }
            }
        }

        let mut bytes = buf.len() as u64;
        if let Some(offset) = cut {
            let len = buf.len() - offset;
            let tail = &buf[offset..];
            let saved = if tail.iter().any(|b| *b != 0) {
                save_range(dir, &path, offset, tail)
            } else {
                None
            };
            warn!(segment = %path.display(), offset, bytes = len, "journal: truncating a torn tail");
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err("open segment", &path))?;
            f.set_len(offset as u64)
                .map_err(io_err("truncate segment", &path))?;
            f.sync_all().map_err(io_err("fsync segment", &path))?;
            counter!(names::JOURNAL_TRUNCATED_BYTES).increment(len as u64);
            report.truncated_bytes += len as u64;
            report.truncations.push(Truncation {
                segment: path.clone(),
                offset: offset as u64,
                bytes: len as u64,
                saved_to: saved,
            });
            bytes = offset as u64;
        }
        set.list.push(SegmentInfo {
            first_lsn: name_lsn,
            path,
            bytes,
            max_lsn,
        });
    }

    report.last_lsn = cont.last;
    let mut next_lsn = cont.last.map_or(1, |l| l + 1).max(floor);
    let current_is_usable = !must_rotate && !set.list.is_empty();
    if !current_is_usable {
        if let Some(last) = set.list.last() {
            // The new segment needs a name of its own; a gap of one LSN is
            // harmless (gaps are allowed and reported), reusing a name is not.
            if last.first_lsn == next_lsn {
                next_lsn += 1;
            }
        }
        let (file, path) = create_segment(dir, next_lsn)?;
        drop(file);
        info!(segment = %path.display(), "journal: created segment");
        set.list.push(SegmentInfo {
            first_lsn: next_lsn,
            path,
            bytes: SEGMENT_HEADER_LEN as u64,
            max_lsn: None,
        });
    }
    set.total_bytes = set.list.iter().map(|s| s.bytes).sum();
    let current_info = set
        .list
        .last()
        .ok_or_else(|| JournalError::Config("no current segment after recovery".into()))?;
    let current = OpenOptions::new()
        .write(true)
        .open(&current_info.path)
        .map_err(io_err("open segment", &current_info.path))?;
    let current_len = current_info.bytes;
    report.segments = set.list.len();
    report.next_lsn = next_lsn;
    set.publish_gauges();
    Ok(Recovered {
        set,
        current,
        current_len,
        next_lsn,
        report,
    })
}

fn report_corrupt(
    report: &mut Recovery,
    segment: &Path,
    offset: usize,
    len: usize,
    saved: Option<PathBuf>,
    why: &str,
) {
    error!(segment = %segment.display(), offset, len, saved_to = ?saved, why, "journal: damaged range skipped");
    counter!(names::JOURNAL_CORRUPT_RECORDS).increment(1);
    counter!(names::JOURNAL_CORRUPT_BYTES).increment(len as u64);
    report.corrupt.push(CorruptRange {
        segment: segment.to_path_buf(),
        offset: offset as u64,
        len: len as u64,
        saved_to: saved,
    });
}

/// Read a segment and hand each valid record with `lsn >= from` to `f`.
/// Damaged ranges were reported by recovery and are skipped here.
pub(crate) fn for_each_record<E>(
    path: &Path,
    segment: Lsn,
    from: Lsn,
    buf: &mut Vec<u8>,
    f: &mut impl FnMut(Lsn, RecordLoc, u16, u16, &[u8]) -> Result<(), E>,
) -> Result<Result<u64, (Lsn, E)>, JournalError> {
    read_file(path, buf)?;
    let start = if check_header(buf) == HeaderCheck::Valid {
        SEGMENT_HEADER_LEN
    } else {
        0
    };
    let mut n = 0;
    for item in Scanner::new(buf, start) {
        if let Item::Record(r) = item {
            if r.lsn >= from {
                let loc = RecordLoc {
                    segment,
                    offset: r.offset as u64,
                };
                if let Err(e) = f(r.lsn, loc, r.kind, r.version, r.payload) {
                    return Ok(Err((r.lsn, e)));
                }
                n += 1;
            }
        }
    }
    Ok(Ok(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(records: &[(Lsn, &[u8])]) -> Vec<u8> {
        let mut buf = segment_header().to_vec();
        for (lsn, p) in records {
            encode_record(&mut buf, *lsn, 1, 1, p).unwrap();
        }
        buf
    }

    fn lsns(data: &[u8]) -> Vec<Lsn> {
        Scanner::new(data, SEGMENT_HEADER_LEN)
            .filter_map(|i| match i {
                Item::Record(r) => Some(r.lsn),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn framing_is_aligned_and_roundtrips() {
        let buf = framed(&[(1, b""), (2, b"a"), (3, &[7u8; 13]), (4, &[9u8; 16])]);
        assert_eq!(buf.len(), SEGMENT_HEADER_LEN + 24 + 32 + 40 + 40);
        let items: Vec<_> = Scanner::new(&buf, SEGMENT_HEADER_LEN).collect();
        assert_eq!(items.len(), 4);
        for item in &items {
            let Item::Record(r) = item else {
                panic!("unexpected {item:?}")
            };
            assert_eq!(r.offset % RECORD_ALIGN, 0);
            assert_eq!(r.kind, 1);
        }
        let Item::Record(r) = items[2] else {
            unreachable!()
        };
        assert_eq!((r.lsn, r.payload), (3, &[7u8; 13][..]));
    }

    #[test]
    fn corrupt_range_is_isolated_and_tail_reported() {
        let mut buf = framed(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        let second = SEGMENT_HEADER_LEN + framed_len(5);
        buf[second + RECORD_HEADER_LEN + 2] ^= 0x40;
        buf.extend_from_slice(&[0xAB; 11]);
        let items: Vec<_> = Scanner::new(&buf, SEGMENT_HEADER_LEN).collect();
        assert!(matches!(items[0], Item::Record(r) if r.lsn == 1));
        assert!(
            matches!(items[1], Item::Corrupt { offset, len } if offset == second && len == framed_len(6))
        );
        assert!(matches!(items[2], Item::Record(r) if r.lsn == 3));
        assert!(matches!(items[3], Item::Tail { len: 11, .. }));
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn resync_finds_unaligned_records_and_never_panics_on_noise() {
        let mut buf = segment_header().to_vec();
        buf.extend_from_slice(&[1, 2, 3]);
        encode_record(&mut buf, 5, 2, 1, b"payload").unwrap();
        assert_eq!(lsns(&buf), vec![5]);
        // Every truncation of a valid file yields a prefix of its records.
        let full = framed(&[(1, b"abc"), (2, &[0xF7, 0xC1, 0x5B, 0x4A]), (3, b"xyz")]);
        for cut in 0..full.len() {
            let got = lsns(&full[..cut]);
            assert!(
                got.iter().copied().eq(1..=got.len() as u64),
                "cut {cut}: {got:?}"
            );
        }
        // Huge lengths next to a magic are bounded by the buffer, not trusted.
        let mut noise = segment_header().to_vec();
        noise.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        noise.extend_from_slice(&u32::MAX.to_le_bytes());
        noise.extend_from_slice(&[0xFF; 40]);
        assert!(lsns(&noise).is_empty());
    }

    #[test]
    fn names_and_headers() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("0000000000000000042.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("+0000000000000000042.seg"), None);
        assert_eq!(check_header(&segment_header()), HeaderCheck::Valid);
        assert_eq!(check_header(&segment_header()[..15]), HeaderCheck::Bad);
        let mut v2 = segment_header();
        v2[8] = 2;
        assert_eq!(check_header(&v2), HeaderCheck::UnknownVersion(2));
    }
}
