//! Front-door CPU costs per webhook: signature verification and parsing of a 1 KiB
//! single-message body (the load generator's, from a Korean-speaking customer, so Meta's
//! `\uXXXX` escapes are exercised), together and apart; then the rkyv costs of the message
//! event it yields: journal encode/decode and store encode/decode/zero-copy read, each read
//! from an unaligned copy, the way the journal and sled hand bytes back.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::codec::{self, StoredHeader};
use switchboard::event::{kind, Event, MessageEvent};
use switchboard::sim::load::{PayloadConfig, PayloadGen};
use switchboard::whatsapp::{parse_delivery, sign, verify, AppKeys, NumberDirectory};

const NUMBER: &str = "100000000000001";
const SECRET: &[u8] = b"bench-app-secret";
const BODY_BYTES: usize = 1024;

struct Numbers;

impl NumberDirectory for Numbers {
    fn is_managed(&self, phone_number_id: &str) -> bool {
        phone_number_id == NUMBER
    }
    fn number_for_display(&self, _display: &str) -> Option<String> {
        None
    }
}

fn body() -> Vec<u8> {
    let gen = PayloadGen::new(PayloadConfig {
        numbers: vec![NUMBER.parse().expect("number")],
        waba_id: "900000000000001".into(),
        customers: 10_000,
        messages_per_post: 1,
        body_bytes: Some(BODY_BYTES),
        run_id: "bench".into(),
    })
    .expect("payload generator");
    // Customer 1 is Korean (customers rotate English, Korean, Chinese).
    gen.body(0, 0, 1, 0, 1_768_467_700).into_bytes()
}

fn message(body: &[u8]) -> MessageEvent {
    let delivery = parse_delivery(body, &Numbers, 0).expect("parse");
    match delivery.events.into_iter().next() {
        Some(Event::Message(m)) => m,
        other => panic!("expected one message event, got {other:?}"),
    }
}

/// `bytes` at an odd address: what a reader gets from a journal frame or a sled value.
fn unaligned(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(0);
    v.extend_from_slice(bytes);
    v
}

fn front_door(c: &mut Criterion) {
    let body = body();
    assert_eq!(body.len(), BODY_BYTES);
    let keys = AppKeys::new(&[("main".into(), SECRET.to_vec())]);
    let signature = sign(SECRET, &body);
    let header = Some(signature.as_bytes());

    let mut group = c.benchmark_group("webhook_1KiB");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify", |b| {
        b.iter(|| verify(&keys, black_box(header), black_box(&body)).expect("verify"))
    });
    group.bench_function("parse", |b| {
        b.iter(|| parse_delivery(black_box(&body), &Numbers, 0).expect("parse"))
    });
    group.bench_function("verify_and_parse", |b| {
        b.iter(|| {
            verify(&keys, black_box(header), black_box(&body)).expect("verify");
            parse_delivery(black_box(&body), &Numbers, 0).expect("parse")
        })
    });
    group.finish();
}

fn rkyv_codec(c: &mut Criterion) {
    let msg = message(&body());
    let event = Event::Message(msg.clone());
    let journal = unaligned(&event.encode().expect("encode"));
    let header = StoredHeader {
        kind: kind::MESSAGE,
        version: 1,
        lsn: 42,
    };
    let stored = unaligned(&codec::encode_stored(header, &msg).expect("encode_stored"));

    let mut group = c.benchmark_group("message_event");
    group.bench_function("journal_encode", |b| {
        b.iter(|| black_box(&event).encode().expect("encode"))
    });
    group.bench_function("journal_decode_unaligned", |b| {
        b.iter(|| Event::decode(kind::MESSAGE, 1, black_box(&journal[1..])).expect("decode"))
    });
    group.bench_function("store_encode", |b| {
        b.iter(|| codec::encode_stored(header, black_box(&msg)).expect("encode_stored"))
    });
    group.bench_function("store_decode_unaligned", |b| {
        b.iter(|| {
            codec::decode_stored::<MessageEvent>(black_box(&stored[1..]), kind::MESSAGE, 1)
                .expect("decode_stored")
        })
    });
    group.bench_function("store_with_stored_unaligned", |b| {
        b.iter(|| {
            codec::with_stored::<MessageEvent, _>(black_box(&stored[1..]), kind::MESSAGE, 1, |a| {
                a.wamid.len() + a.text.as_ref().map_or(0, |t| t.len())
            })
            .expect("with_stored")
        })
    });
    group.finish();
}

criterion_group!(benches, front_door, rkyv_codec);
criterion_main!(benches);
