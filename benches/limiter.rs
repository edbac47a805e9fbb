//! The per-number pacing decision: what a dispatcher lane pays per message to
//! ask its limiter when the next send may start and to record it, with the
//! sliding window full (80/s ceiling), and the pair-limit check against a
//! map of 100,000 recent recipients.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::outbound::limiter::{Limiter, LimiterConfig, PairLimiter};

fn limiter_decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    let start = Instant::now();
    let cfg = LimiterConfig {
        max_per_second: 80.0,
        max_per_minute: Some(4000),
        initial_per_second: 80.0,
        upgraded_per_second: 1000.0,
        hold: Duration::from_secs(30),
    };
    let mut limiter = Limiter::new(cfg, start);
    // Simulated time: each decision is one send at the pace the limiter allows.
    let mut now = start;
    g.bench_function("ready_at+on_send+on_success (80/s, full window)", |b| {
        b.iter(|| {
            let at = limiter.ready_at(now);
            now = now.max(at);
            limiter.on_send(now);
            limiter.on_success(now);
            black_box(at)
        })
    });

    let mut pairs = PairLimiter::new(Duration::from_secs(6), 3);
    let names: Vec<String> = (0..100_000).map(|i| format!("8210{i:08}")).collect();
    for n in &names {
        pairs.on_send(n, start);
    }
    let mut i = 0usize;
    g.bench_function("pair ready_at+on_send (100k recipients)", |b| {
        b.iter(|| {
            i = (i + 7919) % names.len();
            let r = &names[i];
            let at = pairs.ready_at(r, start);
            pairs.on_send(r, start);
            black_box(at)
        })
    });
    g.finish();
}

criterion_group!(benches, limiter_decision);
criterion_main!(benches);
