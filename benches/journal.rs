//! Journal costs: one group commit (append + write + fdatasync) of batches of
//! 1, 16 and 256 records of 1 KiB to a temporary directory, and the pure
//! framing cost of 256 such records (no I/O).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use crossbeam::channel::{self, Receiver, Sender};
use rkyv::util::AlignedVec;
use switchboard::journal::{
    encode_record, Journal, JournalConfig, JournalError, Lsn, Record, RecordLoc, Sink,
};

const PAYLOAD: usize = 1024;

struct Notify(Sender<bool>);

impl Sink<()> for Notify {
    fn durable(&mut self, _first_lsn: Lsn, _locs: &[RecordLoc], _ctx: ()) {
        let _ = self.0.send(true);
    }

    fn failed(&mut self, _ctx: (), _err: &JournalError) {
        let _ = self.0.send(false);
    }
}

fn payload() -> AlignedVec {
    let mut v = AlignedVec::<16>::with_capacity(PAYLOAD);
    v.extend_from_slice(&[0x5a; PAYLOAD]);
    v
}

fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|_| Record {
            kind: 1,
            version: 1,
            payload: payload(),
        })
        .collect()
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small segments, so old ones can be removed as the bench goes.
    let cfg = JournalConfig {
        segment_bytes: 8 << 20,
        ..JournalConfig::new(dir.path())
    };
    let (journal, _) = Journal::open(cfg).expect("open journal");
    let (tx, rx): (Sender<bool>, Receiver<bool>) = channel::unbounded();
    let handle = journal.start(Notify(tx)).expect("start journal");

    let mut group = c.benchmark_group("journal_group_commit");
    group.sample_size(30);
    for n in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    handle.remove_segments_before(handle.last_durable_lsn(), 0);
                    records(n)
                },
                |batch| {
                    handle.append(batch, ()).expect("append");
                    assert!(rx.recv().expect("writer alive"), "group commit failed");
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
    handle.shutdown().expect("shutdown");
}

fn framing(c: &mut Criterion) {
    let batch = records(256);
    let mut buf = Vec::with_capacity(256 * (PAYLOAD + 32));
    let mut group = c.benchmark_group("journal_framing");
    group.throughput(Throughput::Bytes((256 * PAYLOAD) as u64));
    group.bench_function("256x1KiB", |b| {
        b.iter(|| {
            buf.clear();
            for (i, r) in batch.iter().enumerate() {
                encode_record(&mut buf, i as u64 + 1, r.kind, r.version, &r.payload)
                    .expect("frame");
            }
            black_box(buf.len())
        });
    });
    group.finish();
}

criterion_group!(benches, group_commit, framing);
criterion_main!(benches);
