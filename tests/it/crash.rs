//! The durability promise: a webhook answered 200 survives `kill -9`.
//! Several posters stream signed webhooks while the daemon is killed with
//! SIGKILL at a random moment, several times; after each restart every
//! acknowledged wamid is present exactly once and conversation state agrees
//! with the archive (replay was idempotent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use parking_lot::Mutex;

use crate::harness::*;

const POSTERS: usize = 4;
const ROUNDS: usize = 5;

/// Small deterministic generator; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn check(d: &Daemon, acked: &[String]) {
    let msgs = d.all_messages().await;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in &msgs {
        *count.entry(m["wamid"].as_str().unwrap()).or_default() += 1;
    }
    let dup: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "messages stored more than once: {dup:?}");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|w| !count.contains_key(w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // In-memory conversation state rebuilt by replay matches the archive.
    for conv in d.get_all("/api/v1/conversations").await {
        let id = conv["id"].as_str().unwrap();
        let listed = d
            .get_all(&format!("/api/v1/conversations/{id}/messages"))
            .await
            .len();
        assert_eq!(
            conv["messages"].as_u64(),
            Some(listed as u64),
            "conversation {id}: {conv}"
        );
        assert_eq!(
            conv["unread"].as_u64(),
            Some(listed as u64),
            "conversation {id}: {conv}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_sigkill_at_random_moments() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut d = Daemon::start_with(Options {
        // Checkpoints and segment rotation/removal race with the writes.
        checkpoint_interval: "150ms",
        journal_segment_bytes: 1 << 20,
        shards: 3,
        ..Default::default()
    })
    .await;
    let mut acked: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let round_acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for p in 0..POSTERS {
            let poster = d.poster();
            let round_acked = round_acked.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let wamid = format!("wamid.CRASH.{round}.{p}.{seq}");
                    let customer = format!("1555200{:04}", (seq * 7 + p as u64) % 40);
                    let ts = 1_768_000_000 + (round as i64) * 100_000 + seq as i64;
                    let body = text_body(
                        if seq % 3 == 0 {
                            "100000000000002"
                        } else {
                            "100000000000001"
                        },
                        &customer,
                        &wamid,
                        ts,
                        "crash",
                    );
                    match poster.post(&body).await {
                        Some(StatusCode::OK) => round_acked.lock().push(wamid),
                        Some(_) => {}
                        None => break,
                    }
                }
            }));
        }
        // Kill at a random point: after a random number of acknowledgements.
        let target = 100 + (rng.next() % 1600) as usize;
        eventually(
            "acknowledged webhooks before the kill",
            Duration::from_secs(60),
            || {
                let n = round_acked.lock().len();
                async move { (n >= target).then_some(()) }
            },
        )
        .await;
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        acked.extend(round_acked.lock().drain(..));
        d.restart().await;
        check(&d, &acked).await;
        let log = d.log();
        let start = log
            .lines()
            .rev()
            .find(|l| l.contains("replayed="))
            .unwrap_or_default();
        let replayed = start
            .split_whitespace()
            .find(|w| w.starts_with("replayed="))
            .unwrap_or("?");
        eprintln!(
            "round {round}: {} acknowledged so far, all present once; {replayed}",
            acked.len()
        );
    }
    assert!(acked.len() >= ROUNDS * 100);
}
