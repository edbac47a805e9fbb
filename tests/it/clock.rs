//! Clock jumps: the daemon runs under libfaketime (Debian package `faketime`)
//! with its wall clock read from a file that the test rewrites while it
//! runs, jumping hours, days and more than a year backwards and forwards
//! while webhooks arrive. Monotonic time is left alone
//! (`FAKETIME_DONT_FAKE_MONOTONIC`): tokio's timers and every timeout run on
//! it, as they do when an operator or NTP steps the real clock.
//!
//! Proven: the fake clock really reaches the daemon (`received_at` follows
//! each jump); nothing panics and the daemon keeps answering; conversation
//! timelines stay in payload-timestamp order, ties in arrival (LSN) order,
//! late messages filed by their own timestamp; `window_expires_at`,
//! `last_message_at` and the conversation list order come from payload
//! timestamps only; checkpoints keep completing after every jump; a restart
//! under a skewed clock replays nothing and finds the same data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

use crate::harness::*;

/// Where Debian's `faketime` package puts the library, per architecture.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];
const DAY: i64 = 86_400;
/// How far `received_at` may be from the expected fake time (slow machines).
const TOLERANCE_SECS: i64 = 120;

/// The daemon's wall clock: an offset from real time, in a file libfaketime
/// reads on every call (`FAKETIME_NO_CACHE`).
struct FakeClock {
    file: PathBuf,
    lib: &'static str,
}

impl FakeClock {
    fn new(dir: &Path) -> FakeClock {
        let lib = LIBFAKETIME
            .iter()
            .copied()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("libfaketime is missing (looked for {LIBFAKETIME:?}): install Debian's `faketime` package (.ci/run does)")
            });
        let clock = FakeClock {
            file: dir.join("faketime.rc"),
            lib,
        };
        clock.set(0);
        clock
    }

    /// Jump to real time + `offset` seconds. Written to a temporary file and
    /// renamed: libfaketime must never read a half-written setting.
    fn set(&self, offset: i64) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset:+}\n")).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.lib.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn unix(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .as_second()
}

/// One message the test posted.
struct Sent {
    wamid: String,
    number: &'static str,
    customer: String,
    timestamp: i64,
    /// Posting order = journal (LSN) order: each post waits for its 200.
    seq: usize,
}

const CUSTOMERS: &[(&str, &str)] = &[
    ("100000000000001", "15554000001"),
    ("100000000000001", "15554000002"),
    ("100000000000001", "15554000003"),
    ("100000000000002", "15554000001"),
];

async fn post(d: &Daemon, sent: &mut Vec<Sent>, pair: usize, timestamp: i64, tag: &str) -> String {
    let (number, customer) = CUSTOMERS[pair % CUSTOMERS.len()];
    let seq = sent.len();
    let wamid = format!("wamid.CLOCK.{tag}.{seq}");
    d.post_ok(&text_body(number, customer, &wamid, timestamp, tag))
        .await;
    sent.push(Sent {
        wamid: wamid.clone(),
        number,
        customer: customer.to_string(),
        timestamp,
        seq,
    });
    wamid
}

/// Checkpoints still complete: the replay position catches up with the
/// journal (both are LSNs; this daemon's journal started empty).
async fn checkpoint_catches_up(d: &Daemon, what: &str) {
    eventually(what, Duration::from_secs(20), || async {
        let appended = d
            .metric("switchboard_journal_appended_records_total", &[])
            .await;
        let position = d.metric("switchboard_checkpoint_lsn", &[]).await;
        (position > appended).then_some(())
    })
    .await;
}

/// Everything stored is in payload-time order and derived from payload
/// timestamps only.
async fn assert_order_and_windows(d: &Daemon, sent: &[Sent]) {
    let mut by_pair: HashMap<(&str, &str), Vec<&Sent>> = HashMap::new();
    for s in sent {
        by_pair
            .entry((s.number, s.customer.as_str()))
            .or_default()
            .push(s);
    }
    let convs = d.get_all("/api/v1/conversations").await;
    assert_eq!(convs.len(), by_pair.len(), "one conversation per pair");
    // Newest activity first, activity being the payload timestamp.
    let activity: Vec<i64> = convs
        .iter()
        .map(|c| unix(c["last_message_at"].as_str().unwrap()))
        .collect();
    assert!(
        activity.windows(2).all(|w| w[0] >= w[1]),
        "conversation list out of order: {activity:?}"
    );
    for conv in &convs {
        let id = conv["id"].as_str().unwrap();
        let msgs = d
            .get_all(&format!("/api/v1/conversations/{id}/messages"))
            .await;
        let first = sent
            .iter()
            .find(|s| s.wamid == msgs[0]["wamid"].as_str().unwrap())
            .unwrap();
        let mut expected = by_pair[&(first.number, first.customer.as_str())].clone();
        expected.sort_by_key(|s| (s.timestamp, s.seq));
        let got: Vec<&str> = msgs.iter().map(|m| m["wamid"].as_str().unwrap()).collect();
        let want: Vec<&str> = expected.iter().map(|s| s.wamid.as_str()).collect();
        assert_eq!(got, want, "conversation {id}: timeline order");
        let latest = expected.iter().map(|s| s.timestamp).max().unwrap();
        assert_eq!(unix(conv["last_message_at"].as_str().unwrap()), latest);
        assert_eq!(unix(conv["last_inbound_at"].as_str().unwrap()), latest);
        assert_eq!(
            unix(conv["window_expires_at"].as_str().unwrap()),
            latest + DAY,
            "conversation {id}: the window comes from the payload timestamp"
        );
        // Opened by the first message that arrived, at its payload time.
        let opener = expected.iter().min_by_key(|s| s.seq).unwrap();
        assert_eq!(unix(conv["opened_at"].as_str().unwrap()), opener.timestamp);
        for m in &msgs {
            let s = expected
                .iter()
                .find(|s| s.wamid == m["wamid"].as_str().unwrap())
                .unwrap();
            assert_eq!(unix(m["timestamp"].as_str().unwrap()), s.timestamp);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_change_nothing_but_receive_times() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(clock_dir.path());
    let mut d = Daemon::start_with(Options {
        checkpoint_interval: "200ms",
        env: clock.env(),
        ..Default::default()
    })
    .await;
    let mut sent: Vec<Sent> = Vec::new();
    // Payload times: a few hours ago, rising through the test, whatever
    // the daemon's clock says.
    let t0 = real_now() - 6 * 3600;
    let jumps: &[(&str, i64)] = &[
        ("back-3d", -3 * DAY),
        ("fwd-10d", 10 * DAY),
        ("back-1h", -3600),
        ("fwd-400d", 400 * DAY),
        ("back-30d", -30 * DAY),
        ("back-10y", -3650 * DAY),
        ("real", 0),
    ];
    for (phase, (tag, offset)) in jumps.iter().enumerate() {
        clock.set(*offset);
        let base = t0 + 100 * phase as i64;
        let mut wamids = Vec::new();
        for k in 0..6 {
            wamids.push(post(&d, &mut sent, k, base + k as i64 * 5, tag).await);
        }
        // A tie (same payload second as the last one): filed after it, in
        // arrival order.
        wamids.push(post(&d, &mut sent, 5, base + 25, tag).await);
        // A late delivery, older than the previous phase's messages.
        wamids.push(post(&d, &mut sent, 2, base - 150, tag).await);
        // The daemon really saw the jump: received_at follows its clock.
        let expected = real_now() + offset;
        for w in &wamids {
            let m = d.get_ok(&format!("/api/v1/messages/{}", enc(w))).await;
            let received = unix(m["message"]["received_at"].as_str().unwrap());
            assert!(
                (received - expected).abs() <= TOLERANCE_SECS,
                "{tag}: {w} received_at {} but the daemon's clock should read about {}",
                m["message"]["received_at"],
                jiff::Timestamp::from_second(expected).unwrap()
            );
        }
        checkpoint_catches_up(&d, &format!("a checkpoint after the {tag} jump")).await;
        assert!(d.running(), "{tag}: the daemon exited:\n{}", d.log());
    }
    assert_order_and_windows(&d, &sent).await;
    assert_eq!(
        d.metric("switchboard_checkpoint_errors_total", &[]).await,
        0.0
    );
    assert_eq!(d.readyz().await, StatusCode::OK);

    // Stop and start again with the clock two days behind: nothing to
    // replay, the same data.
    clock.set(-2 * DAY);
    let status = d.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    d.restart().await;
    let start = d
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("replayed="))
        .unwrap_or_default()
        .to_string();
    assert!(start.contains("replayed=0"), "{start}");
    assert_order_and_windows(&d, &sent).await;
    let w = post(&d, &mut sent, 1, t0 + 5_000, "after-restart").await;
    let m = d.get_ok(&format!("/api/v1/messages/{}", enc(&w))).await;
    let received = unix(m["message"]["received_at"].as_str().unwrap());
    assert!((received - (real_now() - 2 * DAY)).abs() <= TOLERANCE_SECS);
    assert_order_and_windows(&d, &sent).await;
    let log = d.log();
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
}
