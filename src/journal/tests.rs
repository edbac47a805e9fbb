//! Behaviour tests of the journal: recovery, group commit, failures.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};

use super::segment::{framed_len, segment_header};
use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// What the sink saw for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Durable { first: Lsn, id: u64, records: usize },
    Failed { id: u64 },
}

/// Request context in tests: an id and how many records the request holds.
type Ctx = (u64, usize);

/// Sends every outcome to the test; the error of each failure, too.
struct ChanSink(Sender<Outcome>, Sender<String>);

impl Sink<Ctx> for ChanSink {
    fn durable(&mut self, first_lsn: Lsn, _locs: &[RecordLoc], (id, records): Ctx) {
        let _ = self.0.send(Outcome::Durable {
            first: first_lsn,
            id,
            records,
        });
    }

    fn failed(&mut self, (id, _): Ctx, err: &JournalError) {
        let _ = self.1.send(err.to_string());
        let _ = self.0.send(Outcome::Failed { id });
    }
}

fn start_with_errors(j: Journal) -> (JournalHandle<Ctx>, Receiver<Outcome>, Receiver<String>) {
    let (tx, rx) = channel::unbounded();
    let (etx, erx) = channel::unbounded();
    (j.start(ChanSink(tx, etx)).unwrap(), rx, erx)
}

fn start(j: Journal) -> (JournalHandle<Ctx>, Receiver<Outcome>) {
    let (h, rx, _) = start_with_errors(j);
    (h, rx)
}

fn open(cfg: &JournalConfig) -> (Journal, Recovery) {
    Journal::open(cfg.clone()).unwrap()
}

/// Collect `n` outcomes, failing the test at the deadline instead of hanging.
fn wait(rx: &Receiver<Outcome>, n: usize) -> Vec<Outcome> {
    let deadline = Instant::now() + DEADLINE;
    (0..n)
        .map(|i| {
            rx.recv_deadline(deadline)
                .unwrap_or_else(|e| panic!("outcome {i} of {n}: {e}"))
        })
        .collect()
}

/// A payload that names its record, with a length that varies by record.
fn payload(tag: u64, len: usize) -> rkyv::util::AlignedVec {
    let mut v = rkyv::util::AlignedVec::<16>::with_capacity(len);
    let text = format!("{tag}:");
    v.extend_from_slice(text.as_bytes());
    while v.len() < len {
        v.extend_from_slice(&[(tag % 251) as u8]);
    }
    v
}

fn rec(tag: u64, len: usize) -> Record {
    Record {
        kind: 3,
        version: 1,
        payload: payload(tag, len),
    }
}

fn replay_all(j: &Journal, from: Lsn) -> Vec<(Lsn, u16, Vec<u8>)> {
    let mut out = Vec::new();
    j.replay(from, |lsn, _loc, kind, _version, p| {
        out.push((lsn, kind, p.to_vec()));
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    out
}

/// Append one request per payload length, one at a time, each waited for:
/// record `lsn` gets tag `lsn` (the journal must start at `first`).
fn append_each(h: &JournalHandle<Ctx>, rx: &Receiver<Outcome>, first: Lsn, lens: &[usize]) {
    for (i, len) in lens.iter().enumerate() {
        let lsn = first + i as u64;
        h.append(vec![rec(lsn, *len)], (lsn, 1)).unwrap();
        assert_eq!(
            wait(rx, 1),
            vec![Outcome::Durable {
                first: lsn,
                id: lsn,
                records: 1
            }]
        );
    }
}

fn assert_records(j: &Journal, from: Lsn, expected: &[(Lsn, usize)]) {
    let got = replay_all(j, from);
    let want: Vec<_> = expected
        .iter()
        .map(|(lsn, len)| (*lsn, 3u16, payload(*lsn, *len).to_vec()))
        .collect();
    assert_eq!(got, want);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn small_cfg(dir: &Path) -> JournalConfig {
    JournalConfig {
        segment_bytes: 1024,
        ..JournalConfig::new(dir.join("journal"))
    }
}

/// A writer stalled inside a barrier until the returned sender is dropped or
/// sent to, so that everything appended meanwhile is queued deterministically.
fn stall(h: &JournalHandle<Ctx>) -> Sender<()> {
    let (release, wait_release) = channel::bounded::<()>(1);
    let (entered, wait_entered) = channel::bounded::<()>(1);
    h.barrier(Box::new(move |_| {
        let _ = entered.send(());
        let _ = wait_release.recv_timeout(DEADLINE);
    }))
    .unwrap();
    wait_entered
        .recv_timeout(DEADLINE)
        .expect("writer never reached the stall barrier");
    release
}

#[test]
fn roundtrip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cfg(dir.path());
    let (j, rec0) = open(&cfg);
    assert_eq!((rec0.records, rec0.next_lsn, rec0.segments), (0, 1, 1));
    assert!(rec0.is_clean());
    let (h, rx) = start(j);
    // Requests of 1..=3 records of 1..300 bytes: several segments.
    let mut expected = Vec::new();
    let mut lsn = 1;
    for id in 0..60u64 {
        let n = (id % 3 + 1) as usize;
        let len = |lsn: Lsn| 1 + (lsn as usize * 37) % 300;
        let records: Vec<_> = (0..n as u64).map(|k| rec(lsn + k, len(lsn + k))).collect();
        expected.extend((0..n as u64).map(|k| (lsn + k, len(lsn + k))));
        h.append(records, (id, n)).unwrap();
        assert_eq!(
            wait(&rx, 1),
            vec![Outcome::Durable {
                first: lsn,
                id,
                records: n
            }]
        );
        lsn += n as u64;
    }
    assert_eq!(h.next_lsn(), lsn);
    assert_eq!(h.last_durable_lsn(), lsn - 1);
    let segments = h.segments();
    assert!(segments >= 5, "only {segments} segments");
    let on_disk: u64 = segment_files(&cfg.dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(h.disk_bytes(), on_disk);
    h.shutdown().unwrap();

    let (j, rec1) = open(&cfg);
    assert!(rec1.is_clean(), "{rec1:?}");
    assert_eq!(rec1.records, lsn - 1);
    assert_eq!(
        (rec1.first_lsn, rec1.last_lsn, rec1.next_lsn),
        (Some(1), Some(lsn - 1), lsn)
    );
    assert_eq!(rec1.segments, segments);
    assert_records(&j, 1, &expected);
    // Replay from the middle returns exactly the suffix.
    let from = lsn / 2;
    assert_records(&j, from, &expected[from as usize - 1..]);
    assert_eq!(replay_all(&j, lsn).len(), 0);
    // Every segment is named after its first record.
    for path in segment_files(&cfg.dir) {
        let name: Lsn = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let data = fs::read(&path).unwrap();
        let first = u64::from_le_bytes(data[16 + 16..16 + 24].try_into().unwrap());
        assert_eq!(name, first, "{}", path.display());
    }
}

#[test]
fn concurrent_appends_complete_in_lsn_order_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 64 << 10,
        ..JournalConfig::new(dir.path())
    };
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 200;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let app = h.appender();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let id = t * 1000 + i;
                    let n = (i % 2 + 1) as usize;
                    let records: Vec<_> = (0..n)
                        .map(|k| rec(id * 10 + k as u64, 64 + (i as usize % 50)))
                        .collect();
                    // The queue holds 8192 requests: never full here.
                    app.append(records, (id, n)).unwrap();
                }
            });
        }
    });
    let outcomes = wait(&rx, (THREADS * PER_THREAD) as usize);
    let mut next = 1;
    let mut by_lsn = Vec::new();
    for o in outcomes {
        let Outcome::Durable { first, id, records } = o else {
            panic!("{o:?}")
        };
        assert_eq!(first, next, "durable callbacks out of order or with a gap");
        for k in 0..records as u64 {
            by_lsn.push((first + k, id * 10 + k));
        }
        next += records as u64;
    }
    assert!(h.group_commits() >= 1);
    h.shutdown().unwrap();
    let (j, r) = open(&cfg);
    assert!(r.is_clean());
    let replayed = replay_all(&j, 1);
    assert_eq!(replayed.len(), by_lsn.len());
    for ((lsn, _, p), (want_lsn, tag)) in replayed.iter().zip(&by_lsn) {
        assert_eq!(lsn, want_lsn);
        assert!(p.starts_with(format!("{tag}:").as_bytes()));
    }
}

#[test]
fn group_commit_needs_fewer_fsyncs_than_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(&JournalConfig::new(dir.path()));
    let (h, rx) = start(j);
    let release = stall(&h);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let app = h.appender();
            s.spawn(move || {
                for i in 0..100 {
                    app.append(vec![rec(t * 100 + i, 100)], (t * 100 + i, 1))
                        .unwrap();
                }
            });
        }
    });
    drop(release);
    let outcomes = wait(&rx, 400);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Durable { .. })));
    // Everything queued during the stall fits one batch: one fsync.
    assert_eq!(h.group_commits(), 1);

    // The batch byte cap splits a long queue into several commits.
    drop(h);
    let (j, _) = open(&JournalConfig {
        max_batch_bytes: 10 * framed_len(100),
        ..JournalConfig::new(dir.path())
    });
    let (h, rx) = start(j);
    let release = stall(&h);
    for i in 0..95 {
        h.append(vec![rec(401 + i, 100)], (i, 1)).unwrap();
    }
    drop(release);
    let outcomes = wait(&rx, 95);
    let firsts: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Durable { first, .. } => *first,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(firsts, (401..496).collect::<Vec<_>>());
    assert_eq!(h.group_commits(), 10);
}

#[test]
fn zero_record_requests_are_durable_at_the_next_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(&JournalConfig::new(dir.path()));
    let (h, rx) = start(j);
    h.append(vec![], (1, 0)).unwrap();
    assert_eq!(
        wait(&rx, 1),
        vec![Outcome::Durable {
            first: 1,
            id: 1,
            records: 0
        }]
    );
    assert_eq!(h.group_commits(), 0, "an empty request needs no fsync");
    let release = stall(&h);
    h.append(vec![rec(1, 10)], (2, 1)).unwrap();
    h.append(vec![], (3, 0)).unwrap();
    h.append(vec![rec(2, 10)], (4, 1)).unwrap();
    drop(release);
    assert_eq!(
        wait(&rx, 3),
        vec![
            Outcome::Durable {
                first: 1,
                id: 2,
                records: 1
            },
            Outcome::Durable {
                first: 2,
                id: 3,
                records: 0
            },
            Outcome::Durable {
                first: 2,
                id: 4,
                records: 1
            },
        ]
    );
}

/// Write `n` records (tag = lsn, lengths vary) and shut down cleanly.
fn journal_with(cfg: &JournalConfig, n: u64) -> Vec<(Lsn, usize)> {
    let (j, _) = open(cfg);
    let (h, rx) = start(j);
    let lens: Vec<_> = (1..=n).map(|lsn| 20 + (lsn as usize * 13) % 90).collect();
    append_each(&h, &rx, 1, &lens);
    h.shutdown().unwrap();
    (1..=n).zip(lens).collect()
}

fn last_segment(cfg: &JournalConfig) -> PathBuf {
    segment_files(&cfg.dir).pop().unwrap()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn framed_record(lsn: Lsn, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    encode_record(&mut v, lsn, 3, 1, &payload(lsn, len)).unwrap();
    v
}

#[test]
fn torn_tails_are_cut_and_writing_continues() {
    let garbage: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut bad_crc = framed_record(11, 50);
    bad_crc[30] ^= 0x10;
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("partial header", framed_record(11, 50)[..10].to_vec()),
        ("partial payload", framed_record(11, 50)[..40].to_vec()),
        ("missing padding", framed_record(11, 50)[..24 + 50].to_vec()),
        ("bad crc", bad_crc),
        ("zeros", vec![0; 4096]),
        ("garbage", garbage),
        (
            "valid record then garbage",
            [framed_record(11, 50), vec![0xEE; 7]].concat(),
        ),
    ];
    for (name, tail) in variants {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig::new(dir.path());
        let mut records = journal_with(&cfg, 10);
        let seg = last_segment(&cfg);
        let good_len = fs::metadata(&seg).unwrap().len();
        append_bytes(&seg, &tail);
        let mut cut = tail.len() as u64;
        if name == "valid record then garbage" {
            // The complete record is kept, only what follows it is cut.
            records.push((11, 50));
            cut = 7;
        }
        let kept = records.len() as u64;

        let (j, r) = open(&cfg);
        assert_eq!(r.records, kept, "{name}");
        assert_eq!(r.truncated_bytes, cut, "{name}");
        assert_eq!(r.truncations.len(), 1, "{name}");
        assert!(r.corrupt.is_empty(), "{name}: {:?}", r.corrupt);
        assert_eq!(
            r.truncations[0].offset,
            good_len + tail.len() as u64 - cut,
            "{name}"
        );
        assert_eq!(
            r.truncations[0].saved_to.is_some(),
            name != "zeros",
            "{name}"
        );
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            good_len + tail.len() as u64 - cut,
            "{name}"
        );
        assert_eq!(r.next_lsn, kept + 1, "{name}");
        assert_records(&j, 1, &records);

        let (h, rx) = start(j);
        append_each(&h, &rx, kept + 1, &[33]);
        h.shutdown().unwrap();
        records.push((kept + 1, 33));
        let (j, r) = open(&cfg);
        assert!(r.is_clean(), "{name}: {r:?}");
        assert_records(&j, 1, &records);
    }
}

#[test]
fn record_cut_in_half_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let records = journal_with(&cfg, 10);
    let seg = last_segment(&cfg);
    let len = fs::metadata(&seg).unwrap().len();
    let last = framed_len(records[9].1) as u64;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - last / 2)
        .unwrap();
    let (j, r) = open(&cfg);
    assert_eq!(
        (r.records, r.next_lsn, r.truncated_bytes),
        (9, 10, last - last / 2)
    );
    assert_records(&j, 1, &records[..9]);
}

#[test]
fn mid_file_corruption_is_saved_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let records = journal_with(&cfg, 20);
    let seg = last_segment(&cfg);
    let mut data = fs::read(&seg).unwrap();
    // Offset of record 7, then flip a payload byte.
    let offset: usize = SEGMENT_HEADER_LEN
        + records[..6]
            .iter()
            .map(|(_, l)| framed_len(*l))
            .sum::<usize>();
    let len = framed_len(records[6].1);
    data[offset + RECORD_HEADER_LEN + 5] ^= 0x01;
    // And wreck record 12's length field: resync must not trust it.
    let offset12: usize = SEGMENT_HEADER_LEN
        + records[..11]
            .iter()
            .map(|(_, l)| framed_len(*l))
            .sum::<usize>();
    data[offset12 + 4..offset12 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&seg, &data).unwrap();

    let (j, r) = open(&cfg);
    assert_eq!(r.records, 18);
    assert_eq!(r.truncated_bytes, 0);
    assert!(
        r.lsn_anomalies.is_empty(),
        "gaps explained by corruption are not anomalies: {:?}",
        r.lsn_anomalies
    );
    assert_eq!(r.corrupt.len(), 2);
    assert_eq!(
        (r.corrupt[0].offset, r.corrupt[0].len),
        (offset as u64, len as u64)
    );
    assert_eq!(
        (r.corrupt[1].offset, r.corrupt[1].len),
        (offset12 as u64, framed_len(records[11].1) as u64)
    );
    let saved = r.corrupt[0].saved_to.clone().unwrap();
    assert_eq!(
        saved,
        cfg.dir.join("corrupt").join(format!(
            "{}-{offset}.bin",
            seg.file_stem().unwrap().to_str().unwrap()
        ))
    );
    assert_eq!(fs::read(saved).unwrap(), &data[offset..offset + len]);
    // The file itself is untouched.
    assert_eq!(fs::read(&seg).unwrap(), data);
    assert_eq!(r.next_lsn, 21);
    let expected: Vec<_> = records
        .iter()
        .copied()
        .filter(|(l, _)| *l != 7 && *l != 12)
        .collect();
    assert_records(&j, 1, &expected);

    // Writing continues after the damage; the damage is reported again (it
    // is still there) but nothing else changes.
    let (h, rx) = start(j);
    append_each(&h, &rx, 21, &[40]);
    h.shutdown().unwrap();
    let (j, r) = open(&cfg);
    assert_eq!((r.records, r.corrupt.len(), r.truncated_bytes), (19, 2, 0));
    assert_eq!(replay_all(&j, 21).len(), 1);
}

#[test]
fn garbage_at_the_end_of_an_older_segment_is_kept_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_cfg(dir.path());
    let records = journal_with(&cfg, 40);
    let files = segment_files(&cfg.dir);
    assert!(files.len() >= 3);
    let victim = &files[1];
    let before = fs::metadata(victim).unwrap().len();
    append_bytes(victim, &[0x5A; 100]);
    let (j, r) = open(&cfg);
    assert_eq!(r.truncated_bytes, 0);
    assert_eq!(r.corrupt.len(), 1);
    assert_eq!((r.corrupt[0].offset, r.corrupt[0].len), (before, 100));
    assert_eq!(fs::metadata(victim).unwrap().len(), before + 100);
    assert_records(&j, 1, &records);
}

fn write_segment(dir: &Path, name: Lsn, records: &[Lsn]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut data = segment_header().to_vec();
    for lsn in records {
        encode_record(&mut data, *lsn, 3, 1, &payload(*lsn, 16)).unwrap();
    }
    let path = dir.join(segment_file_name(name));
    fs::write(&path, data).unwrap();
    path
}

#[test]
fn lsn_gaps_and_regressions_are_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    write_segment(dir.path(), 1, &[1, 2, 5, 3]);
    let (j, r) = open(&cfg);
    assert_eq!(r.lsn_anomalies.len(), 2);
    assert_eq!(
        (r.lsn_anomalies[0].expected, r.lsn_anomalies[0].found),
        (3, 5)
    );
    assert_eq!(
        (r.lsn_anomalies[1].expected, r.lsn_anomalies[1].found),
        (6, 3)
    );
    assert_eq!((r.records, r.last_lsn, r.next_lsn), (4, Some(5), 6));
    let lsns: Vec<_> = replay_all(&j, 1).into_iter().map(|(l, _, _)| l).collect();
    assert_eq!(lsns, vec![1, 2, 5, 3]);
}

#[test]
fn half_created_last_segment_is_rewritten() {
    for (name, content) in [
        ("empty", vec![]),
        ("partial header", b"SWBJR".to_vec()),
        ("zeros", vec![0; 16]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small_cfg(dir.path());
        let records = journal_with(&cfg, 12);
        let next = records.len() as u64 + 1;
        let half = cfg.dir.join(segment_file_name(next));
        fs::write(&half, &content).unwrap();
        let (j, r) = open(&cfg);
        assert_eq!(r.rewritten_segments, vec![half.clone()], "{name}");
        assert!(r.corrupt.is_empty(), "{name}");
        assert_eq!(fs::read(&half).unwrap(), segment_header(), "{name}");
        assert_eq!(r.next_lsn, next, "{name}");
        let (h, rx) = start(j);
        append_each(&h, &rx, next, &[10]);
        h.shutdown().unwrap();
        let (j, r) = open(&cfg);
        assert!(r.is_clean(), "{name}: {r:?}");
        assert_eq!(replay_all(&j, next).len(), 1);
        assert!(fs::metadata(&half).unwrap().len() > SEGMENT_HEADER_LEN as u64);
    }
}

#[test]
fn older_headerless_segment_is_removed_and_lsns_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    // Only a header-less stub remains, named 1000: the journal continues at
    // 1000, not at 1 (LSNs below may be referenced by a checkpoint).
    fs::write(dir.path().join(segment_file_name(1000)), b"").unwrap();
    let (j, r) = open(&cfg);
    assert_eq!(r.next_lsn, 1000);
    drop(j);
    // A stub that is not the last file holds nothing and is removed.
    let stub = dir.path().join(segment_file_name(500));
    fs::write(&stub, b"XY").unwrap();
    let (j, r) = open(&cfg);
    assert_eq!(r.removed_segments, vec![stub.clone()]);
    assert!(r.corrupt.len() == 1 && r.corrupt[0].saved_to.is_some());
    assert!(!stub.exists());
    let (h, rx) = start(j);
    append_each(&h, &rx, 1000, &[5]);
}

#[test]
fn damaged_header_with_records_keeps_them_and_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let path = write_segment(dir.path(), 1, &[1, 2, 3]);
    let mut data = fs::read(&path).unwrap();
    data[0] = b'X';
    fs::write(&path, &data).unwrap();
    let (j, r) = open(&cfg);
    assert_eq!(r.records, 3);
    assert_eq!(
        (r.corrupt.len(), r.corrupt[0].offset, r.corrupt[0].len),
        (1, 0, 16)
    );
    assert_eq!(r.segments, 2);
    assert_eq!(replay_all(&j, 1).len(), 3);
    let (h, rx) = start(j);
    append_each(&h, &rx, 4, &[5]);
    h.shutdown().unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        data,
        "the damaged segment is never written to"
    );
    assert!(cfg.dir.join(segment_file_name(4)).exists());
}

#[test]
fn unknown_format_version_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_segment(dir.path(), 1, &[1]);
    let mut data = fs::read(&path).unwrap();
    data[8] = 2;
    fs::write(&path, &data).unwrap();
    let err = Journal::open(JournalConfig::new(dir.path())).err().unwrap();
    assert!(
        matches!(err, JournalError::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
}

#[test]
fn barrier_runs_between_the_batches_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = open(&JournalConfig::new(dir.path()));
    let log = Arc::new(StdMutex::new(Vec::<String>::new()));
    struct LogSink(Arc<StdMutex<Vec<String>>>);
    impl Sink<u64> for LogSink {
        fn durable(&mut self, first: Lsn, _locs: &[RecordLoc], id: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("durable {id} @{first}"));
        }
        fn failed(&mut self, id: u64, _: &JournalError) {
            self.0.lock().unwrap().push(format!("failed {id}"));
        }
    }
    let h = j.start(LogSink(log.clone())).unwrap();
    let (release, wait_release) = channel::bounded::<()>(1);
    h.barrier(Box::new(move |_| {
        let _ = wait_release.recv_timeout(DEADLINE);
    }))
    .unwrap();
    let barrier = |name: &'static str| {
        let log = log.clone();
        Box::new(move |lsn: Lsn| log.lock().unwrap().push(format!("{name} sees {lsn}")))
    };
    h.append(vec![rec(1, 8), rec(2, 8)], 1).unwrap();
    h.barrier(barrier("b1")).unwrap();
    h.append(vec![rec(3, 8)], 2).unwrap();
    h.append(vec![rec(4, 8)], 3).unwrap();
    h.barrier(barrier("b2")).unwrap();
    drop(release);
    let (done_tx, done_rx) = channel::bounded(1);
    h.barrier(Box::new(move |_| {
        let _ = done_tx.send(());
    }))
    .unwrap();
    done_rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "durable 1 @1",
            "b1 sees 2",
            "durable 2 @3",
            "durable 3 @4",
            "b2 sees 4"
        ]
    );
    // Requests 2 and 3 were queued together between the barriers: one commit.
    assert_eq!(h.group_commits(), 2);
}

#[test]
fn remove_segments_before_keeps_current_and_retention_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 512,
        ..JournalConfig::new(dir.path())
    };
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    // 200-byte payloads frame to 224 bytes: three records per segment.
    append_each(&h, &rx, 1, &[200; 30]);
    assert_eq!(h.segments(), 10);
    let seg_bytes = (SEGMENT_HEADER_LEN + 3 * framed_len(200)) as u64;
    assert_eq!(h.disk_bytes(), 10 * seg_bytes);

    // Segments [1-3] .. [13-15] hold only records below 16; [16-18] does not.
    assert_eq!(h.remove_segments_before(16, 0), (5, 5 * seg_bytes));
    assert_eq!(h.remove_segments_before(16, 0), (0, 0));
    // Below 28: [16-18] .. [25-27]; the newest two fit in the tail.
    assert_eq!(
        h.remove_segments_before(28, 2 * seg_bytes + 10),
        (2, 2 * seg_bytes)
    );
    assert_eq!(h.segments(), 3);
    // The current segment is never removed, whatever the LSN.
    assert_eq!(h.remove_segments_before(Lsn::MAX, 0), (2, 2 * seg_bytes));
    assert_eq!(
        segment_files(&cfg.dir),
        vec![cfg.dir.join(segment_file_name(28))]
    );
    assert_eq!(h.disk_bytes(), seg_bytes);
    append_each(&h, &rx, 31, &[200]);
    h.shutdown().unwrap();

    let (j, r) = open(&cfg);
    assert!(r.is_clean());
    assert_eq!(
        (r.first_lsn, r.last_lsn, r.next_lsn, r.segments),
        (Some(28), Some(31), 32, 2)
    );
    assert_eq!(replay_all(&j, 1).len(), 4);
}

#[test]
fn remove_segments_runs_safely_beside_appends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 512,
        ..JournalConfig::new(dir.path())
    };
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    let app = h.appender();
    let total = 300u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            for lsn in 1..=total {
                app.append(vec![rec(lsn, 200)], (lsn, 1)).unwrap();
                if lsn % 10 == 0 {
                    // The queue is far from full: pacing is not needed.
                    std::thread::yield_now();
                }
            }
        });
        s.spawn(|| {
            let deadline = Instant::now() + DEADLINE;
            while h.last_durable_lsn() < total && Instant::now() < deadline {
                h.remove_segments_before(h.last_durable_lsn().saturating_sub(20), 0);
            }
        });
    });
    let outcomes = wait(&rx, total as usize);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Durable { .. })));
    let on_disk: u64 = segment_files(&cfg.dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(h.disk_bytes(), on_disk);
    h.shutdown().unwrap();
    let (j, r) = open(&cfg);
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(r.last_lsn, Some(total));
    let lsns: Vec<_> = replay_all(&j, 1).into_iter().map(|(l, _, _)| l).collect();
    assert_eq!(lsns, (r.first_lsn.unwrap()..=total).collect::<Vec<_>>());
}

#[test]
fn failed_writes_fail_requests_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let faults = cfg.faults.clone();
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    append_each(&h, &rx, 1, &[100, 100, 100]);
    let seg = last_segment(&cfg);
    let good_len = fs::metadata(&seg).unwrap().len();

    // Disk full: half of the batch lands, the write fails.
    faults.set_fail_writes(true);
    h.append(vec![rec(4, 100), rec(5, 100)], (10, 2)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 10 }]);
    assert!(!h.healthy());
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        good_len,
        "the partial write was cut"
    );
    assert_eq!(
        (h.next_lsn(), h.last_durable_lsn()),
        (4, 3),
        "a failed batch consumes no LSN"
    );
    faults.set_fail_writes(false);
    append_each(&h, &rx, 4, &[100]);
    assert!(h.healthy());

    // fdatasync fails (EIO): the written bytes are not trusted and cut.
    faults.set_fail_syncs(true);
    h.append(vec![rec(5, 100)], (11, 1)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 11 }]);
    assert!(!h.healthy());
    faults.set_fail_syncs(false);
    append_each(&h, &rx, 5, &[100]);
    assert!(h.healthy());

    // The cut itself fails: nothing is written after the garbage until it
    // can be removed.
    faults.set_fail_writes(true);
    faults.set_fail_truncates(true);
    h.append(vec![rec(6, 100)], (12, 1)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 12 }]);
    faults.set_fail_writes(false);
    h.append(vec![rec(6, 100)], (13, 1)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 13 }]);
    assert!(!h.healthy());
    faults.set_fail_truncates(false);
    append_each(&h, &rx, 6, &[100]);
    assert!(h.healthy());
    h.shutdown().unwrap();

    let (j, r) = open(&cfg);
    assert!(r.is_clean(), "{r:?}");
    assert_records(
        &j,
        1,
        &[(1, 100), (2, 100), (3, 100), (4, 100), (5, 100), (6, 100)],
    );
}

#[test]
fn an_idle_unhealthy_journal_probes_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let faults = cfg.faults.clone();
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    append_each(&h, &rx, 1, &[100, 100]);
    let seg = last_segment(&cfg);
    let good_len = fs::metadata(&seg).unwrap().len();
    faults.set_fail_writes(true);
    h.append(vec![rec(3, 100)], (7, 1)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 7 }]);
    assert!(!h.healthy());
    // Probes keep failing while the fault lasts.
    let end = Instant::now() + 3 * writer::PROBE_INTERVAL;
    while Instant::now() < end {
        assert!(
            !h.healthy(),
            "a failing probe must not mark the journal healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Space is back: with no request at all, a probe notices.
    faults.set_fail_writes(false);
    let end = Instant::now() + 10 * writer::PROBE_INTERVAL;
    while !h.healthy() {
        assert!(
            Instant::now() < end,
            "the writer did not probe its way back to healthy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        good_len,
        "probes leave the segment as it was"
    );
    assert_eq!((h.next_lsn(), h.last_durable_lsn()), (3, 2));
    append_each(&h, &rx, 3, &[100]);
    h.shutdown().unwrap();
    let (j, r) = open(&cfg);
    assert!(r.is_clean(), "{r:?}");
    assert_records(&j, 1, &[(1, 100), (2, 100), (3, 100)]);
}

#[test]
fn failed_rotation_fails_the_batch_and_leaves_no_stray_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 256,
        ..JournalConfig::new(dir.path())
    };
    let faults = cfg.faults.clone();
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    append_each(&h, &rx, 1, &[300]);
    faults.set_fail_writes(true);
    h.append(vec![rec(2, 10)], (2, 1)).unwrap();
    assert_eq!(wait(&rx, 1), vec![Outcome::Failed { id: 2 }]);
    assert_eq!(segment_files(&cfg.dir).len(), 1);
    faults.set_fail_writes(false);
    append_each(&h, &rx, 2, &[10]);
    assert_eq!(segment_files(&cfg.dir).len(), 2);
}

#[test]
fn oversize_full_and_closed_hand_the_context_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        max_record_bytes: 1024,
        queue_capacity: 2,
        ..JournalConfig::new(dir.path())
    };
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    let err = h
        .append(vec![rec(1, 10), rec(1, 1025)], (7, 2))
        .unwrap_err();
    assert!(matches!(err, AppendError::TooLarge((7, 2))));
    // Each record fits but the request is more than a batch may hold.
    let many: Vec<_> = (0..(DEFAULT_MAX_BATCH_BYTES / framed_len(1024) + 1) as u64)
        .map(|i| rec(i, 1024))
        .collect();
    assert!(matches!(
        h.append(many, (8, 0)),
        Err(AppendError::TooLarge((8, 0)))
    ));
    let release = stall(&h);
    h.append(vec![rec(1, 1024)], (1, 1)).unwrap();
    h.append(vec![rec(2, 1)], (2, 1)).unwrap();
    let err = h.append(vec![rec(3, 1)], (3, 1)).unwrap_err();
    assert!(matches!(err, AppendError::Full((3, 1))), "{err:?}");
    drop(release);
    assert_eq!(wait(&rx, 2).len(), 2);
    let app = h.appender();
    h.shutdown().unwrap();
    assert!(matches!(
        app.append(vec![rec(3, 1)], (4, 1)),
        Err(AppendError::Closed((4, 1)))
    ));
    assert!(matches!(
        app.barrier(Box::new(|_| {})),
        Err(JournalError::Closed)
    ));
}

#[test]
fn shutdown_completes_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    let app = h.appender();
    let release = stall(&h);
    for lsn in 1..=50 {
        app.append(vec![rec(lsn, 64)], (lsn, 1)).unwrap();
    }
    let closer = std::thread::spawn(move || h.shutdown());
    // The shutdown is under way once the gate refuses new appends (probes
    // that still get in are empty requests, filtered out below).
    let deadline = Instant::now() + DEADLINE;
    while !matches!(app.append(vec![], (0, 0)), Err(AppendError::Closed(_))) {
        assert!(Instant::now() < deadline, "shutdown never closed the queue");
        std::thread::yield_now();
    }
    drop(release);
    closer.join().unwrap().unwrap();
    let outcomes: Vec<_> = rx
        .try_iter()
        .filter(|o| !matches!(o, Outcome::Durable { records: 0, .. }))
        .collect();
    assert_eq!(
        outcomes.len(),
        50,
        "every queued request completed before shutdown returned"
    );
    let (j, _) = open(&cfg);
    assert_eq!(replay_all(&j, 1).len(), 50);

    // Dropping the owner shuts down the same way.
    let (h, rx) = start(j);
    h.append(vec![rec(51, 8)], (51, 1)).unwrap();
    drop(h);
    assert_eq!(rx.try_iter().count(), 1);
}

#[test]
fn replay_stops_at_a_callback_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    journal_with(&cfg, 5);
    let (j, _) = open(&cfg);
    let mut seen = 0;
    let err = j
        .replay(2, |lsn, _, _, _, _| {
            seen += 1;
            if lsn == 4 {
                Err("bad record")
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(
        err,
        ReplayError::Callback {
            lsn: 4,
            source: "bad record"
        }
    ));
    assert_eq!(seen, 3);
}

#[test]
fn events_roundtrip_through_the_journal() {
    use crate::event::{AccountEvent, Event};
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path());
    let (j, _) = open(&cfg);
    let (h, rx) = start(j);
    let ev = Event::Account(AccountEvent {
        waba_id: "102290129340398".into(),
        field: "phone_number_quality_update".into(),
        number_id: Some("106540352242922".into()),
        route: 9,
        dedupe: [1; 16],
        event: Some("FLAGGED".into()),
        detail: None,
        timestamp: 1_749_416_383,
        received_at_ms: 1_749_416_383_123,
        raw: r#"{"event":"FLAGGED"}"#.into(),
    });
    h.append(vec![Record::from_event(&ev).unwrap()], (1, 1))
        .unwrap();
    wait(&rx, 1);
    h.shutdown().unwrap();
    let (j, _) = open(&cfg);
    let mut back = Vec::new();
    j.replay(1, |_, _, kind, version, p| {
        Event::decode(kind, version, p).map(|e| back.push(e))
    })
    .unwrap();
    assert_eq!(back, vec![ev]);
}

/// A real ENOSPC on a 512 KiB tmpfs. Needs permission to mount (root in the
/// test container); prints a note and returns when that is not available.
#[test]
fn real_enospc_on_a_small_tmpfs() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(dir.path())
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "note: skipping real_enospc_on_a_small_tmpfs: mount failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("note: skipping real_enospc_on_a_small_tmpfs: cannot run mount: {e}");
            return;
        }
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());

    let filler = dir.path().join("filler");
    fs::write(&filler, vec![1u8; 128 << 10]).unwrap();
    let cfg = JournalConfig {
        max_record_bytes: 64 << 10,
        ..JournalConfig::new(dir.path().join("journal"))
    };
    let (j, _) = open(&cfg);
    let (h, rx, errors) = start_with_errors(j);
    let mut durable = Vec::new();
    let mut lsn = 1;
    loop {
        assert!(lsn < 100, "tmpfs never filled up");
        h.append(vec![rec(lsn, 40 << 10)], (lsn, 1)).unwrap();
        match wait(&rx, 1).pop().unwrap() {
            Outcome::Durable { first, .. } => {
                assert_eq!(first, lsn);
                durable.push((lsn, 40 << 10));
                lsn += 1;
            }
            Outcome::Failed { .. } => break,
        }
    }
    assert!(!h.healthy());
    assert!(!durable.is_empty());
    let err = errors.try_recv().unwrap();
    assert!(err.contains("No space left on device"), "{err}");
    let seg = last_segment(&cfg);
    let expected_len = (SEGMENT_HEADER_LEN + durable.len() * framed_len(40 << 10)) as u64;
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        expected_len,
        "the partial write was cut"
    );

    fs::remove_file(&filler).unwrap();
    append_each(&h, &rx, lsn, &[40 << 10]);
    durable.push((lsn, 40 << 10));
    assert!(h.healthy());
    h.shutdown().unwrap();
    let (j, r) = open(&cfg);
    assert!(r.is_clean(), "{r:?}");
    assert_records(&j, 1, &durable);
}

/// Remembers where each record went.
struct LocSink(Sender<(Lsn, Vec<RecordLoc>)>);

impl Sink<()> for LocSink {
    fn durable(&mut self, first_lsn: Lsn, locs: &[RecordLoc], _: ()) {
        let _ = self.0.send((first_lsn, locs.to_vec()));
    }

    fn failed(&mut self, _: (), _: &JournalError) {}
}

#[test]
fn records_are_read_back_by_location_across_segments_and_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = JournalConfig::new(dir.path().join("j"));
    cfg.segment_bytes = 1 << 20;
    let (j, _) = open(&cfg);
    let (tx, rx) = channel::unbounded();
    let h = j.start(LocSink(tx)).unwrap();
    let payload = |i: usize| vec![(i % 251) as u8; 700 + i % 300];
    let mut locs: Vec<(Lsn, RecordLoc)> = Vec::new();
    for i in 0..3000usize {
        let rec = Record {
            kind: 7,
            version: 2,
            payload: crate::codec::aligned_copy(&payload(i)),
        };
        h.append(vec![rec], ()).unwrap();
        let (first, l) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(l.len(), 1);
        locs.push((first, l[0]));
    }
    let segments: std::collections::BTreeSet<Lsn> = locs.iter().map(|(_, l)| l.segment).collect();
    assert!(segments.len() >= 2, "the test should span a rotation");
    let reader = JournalReader::new(dir.path().join("j"));
    for (i, (lsn, loc)) in locs.iter().enumerate() {
        let r = reader.read(*loc).unwrap();
        assert_eq!((r.lsn, r.kind, r.version), (*lsn, 7, 2));
        assert_eq!(r.payload.as_slice(), payload(i).as_slice());
        assert_eq!(
            r.payload.as_ptr() as usize % 16,
            0,
            "payload is aligned for rkyv"
        );
    }
    h.shutdown().unwrap();
    // Replay reports the same locations as the writer did.
    let (j, _) = open(&cfg);
    let mut replayed = Vec::new();
    j.replay(1, |lsn, loc, _, _, _| -> Result<(), ()> {
        replayed.push((lsn, loc));
        Ok(())
    })
    .unwrap();
    assert_eq!(replayed, locs);
    // A flipped byte in a payload and a location that is not a record are errors.
    let (_, victim) = locs[10];
    let path = dir.path().join("j").join(segment_file_name(victim.segment));
    let mut bytes = fs::read(&path).unwrap();
    bytes[victim.offset as usize + 40] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let reader = JournalReader::new(dir.path().join("j"));
    assert!(matches!(
        reader.read(victim),
        Err(JournalError::Corrupt { .. })
    ));
    let off = RecordLoc {
        segment: victim.segment,
        offset: victim.offset + 8,
    };
    assert!(matches!(
        reader.read(off),
        Err(JournalError::Corrupt { .. })
    ));
    let past = RecordLoc {
        segment: victim.segment,
        offset: 1 << 40,
    };
    assert!(matches!(
        reader.read(past),
        Err(JournalError::Corrupt { .. })
    ));
}
