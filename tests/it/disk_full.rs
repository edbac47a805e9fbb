//! Disk full, for real: the daemon's data directory is a small tmpfs and its
//! store (`db/`, sled) a second one mounted inside it, so the test can fill
//! the journal's disk and the store's disk each on purpose (on one disk,
//! which of the two fails first is a matter of timing).
//!
//! For each: webhooks get 503 with Retry-After (a 200 only for what is
//! durable: every 200 is checked after a restart), `/readyz` answers 503,
//! everything acknowledged stays readable through the API, the daemon keeps
//! running; once the filler is deleted service resumes by itself (the
//! journal probes its way back, the store is reopened in place). Finally a
//! restart finds every acknowledged message exactly once.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); CI runs as root. Without it the
//! test fails and says so: it never passes without having filled a disk.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use crate::harness::*;

/// A tmpfs mounted for the test, detached again when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let opts = std::ffi::CString::new(format!("size={size},mode=0700")).unwrap();
        if let Err(e) = rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            opts.as_c_str(),
        ) {
            panic!(
                "disk_full: cannot mount a {size} tmpfs at {}: {e}. This test fills a real \
                 filesystem and needs root or CAP_SYS_ADMIN (CI runs as root); run it as root.",
                path.display()
            );
        }
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("disk_full: unmounting {}: {e}", self.0.display());
        }
    }
}

/// Append to `path` until the filesystem refuses with ENOSPC; returns the
/// bytes written. Any other error fails the test.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut total = 0u64;
    for chunk in [1usize << 20, 4096, 64] {
        let buf = vec![0xA5u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => panic!("write returned 0 on {}", path.display()),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    total
}

const DEADLINE: Duration = Duration::from_secs(30);

struct Run {
    seq: u64,
    acked: Vec<String>,
}

impl Run {
    /// Post the next message (8 customers on two numbers); a 200 is recorded.
    async fn post(&mut self, d: &Daemon, phase: &str) -> (StatusCode, HeaderMap, Value) {
        self.seq += 1;
        let seq = self.seq;
        let wamid = format!("wamid.FULL.{phase}.{seq}");
        let number = if seq % 3 == 0 {
            "100000000000002"
        } else {
            "100000000000001"
        };
        let customer = format!("1555300{:04}", seq % 8);
        let body = text_body(number, &customer, &wamid, 1_768_000_000 + seq as i64, phase);
        let answer = d.post_raw(&body).await;
        if answer.0 == StatusCode::OK {
            self.acked.push(wamid);
        }
        answer
    }
}

/// A refusal while storage cannot write: 503, Retry-After, one of `codes`.
fn assert_refused(answer: &(StatusCode, HeaderMap, Value), codes: &[&str]) {
    let (status, headers, body) = answer;
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let retry = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
    assert!(retry.is_some_and(|s| s > 0), "no Retry-After: {headers:?}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "code {code:?} not in {codes:?}: {body}"
    );
}

/// Post until storage refuses and readiness is false (some posts may still be
/// acknowledged first: whatever fits in pages already allocated). Returns the
/// refusal codes seen.
async fn post_until_refused(
    d: &Daemon,
    run: &mut Run,
    phase: &str,
    codes: &[&str],
    failed_gauge: &str,
) -> HashSet<String> {
    let end = Instant::now() + DEADLINE;
    let mut seen = HashSet::new();
    let mut refused_in_a_row = 0;
    loop {
        let answer = run.post(d, phase).await;
        if answer.0 == StatusCode::OK {
            refused_in_a_row = 0;
        } else {
            assert_refused(&answer, codes);
            seen.insert(answer.2["error"]["code"].as_str().unwrap().to_string());
            refused_in_a_row += 1;
        }
        if refused_in_a_row >= 5
            && d.readyz().await == StatusCode::SERVICE_UNAVAILABLE
            && d.metric(failed_gauge, &[]).await == 0.0
        {
            return seen;
        }
        assert!(
            Instant::now() < end,
            "{phase}: storage never refused within {DEADLINE:?} (codes so far {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message as the API lists it: wamid -> (conversation, timestamp, text).
async fn snapshot(d: &Daemon) -> HashMap<String, (String, String, String)> {
    let mut out = HashMap::new();
    for conv in d.get_all("/api/v1/conversations").await {
        let id = conv["id"].as_str().unwrap().to_string();
        let msgs = d
            .get_all(&format!("/api/v1/conversations/{id}/messages"))
            .await;
        let stamps: Vec<&str> = msgs
            .iter()
            .map(|m| m["timestamp"].as_str().unwrap())
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "conversation {id} out of time order: {stamps:?}"
        );
        assert_eq!(conv["messages"].as_u64(), Some(msgs.len() as u64), "{conv}");
        for m in &msgs {
            let wamid = m["wamid"].as_str().unwrap().to_string();
            let entry = (
                id.clone(),
                m["timestamp"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap_or_default().to_string(),
            );
            assert!(
                out.insert(wamid.clone(), entry).is_none(),
                "{wamid} listed twice"
            );
        }
    }
    out
}

/// Everything acknowledged is there once, and what was there before is
/// unchanged.
async fn assert_intact(
    d: &Daemon,
    acked: &[String],
    earlier: &HashMap<String, (String, String, String)>,
) {
    let now = snapshot(d).await;
    let missing: Vec<&String> = acked.iter().filter(|w| !now.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (wamid, was) in earlier {
        assert_eq!(now.get(wamid), Some(was), "{wamid} changed");
    }
    // And one by one through the message endpoint.
    for wamid in acked.iter().rev().take(10) {
        let m = d.get_ok(&format!("/api/v1/messages/{}", enc(wamid))).await;
        assert_eq!(m["message"]["wamid"], wamid.as_str(), "{m}");
    }
}

/// While the store cannot write, sled may be unable to read pages it would
/// have to rewrite: every read is either right or a 503 to retry, never a
/// wrong answer, a 500 or a hang; in-memory views stay served.
async fn assert_reads_right_or_retry(d: &Daemon, acked: &[String]) -> (usize, usize) {
    let convs = d.get_all("/api/v1/conversations").await;
    assert!(!convs.is_empty());
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (mut served, mut unavailable) = (0, 0);
    for conv in &convs {
        let path = format!(
            "/api/v1/conversations/{}/messages?limit=500",
            conv["id"].as_str().unwrap()
        );
        let (status, headers, body) = d
            .raw(
                http::Method::GET,
                &path,
                &[("authorization", &auth)],
                bytes::Bytes::new(),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if status == StatusCode::OK {
            let items = v["items"].as_array().unwrap();
            assert_eq!(
                conv["messages"].as_u64(),
                Some(items.len() as u64),
                "{conv}"
            );
            served += 1;
        } else {
            assert_refused(&(status, headers, v), &["store_unavailable"]);
            unavailable += 1;
        }
    }
    for wamid in acked.iter().step_by(7) {
        let (status, headers, body) = d
            .raw(
                http::Method::GET,
                &format!("/api/v1/messages/{}", enc(wamid)),
                &[("authorization", &auth)],
                bytes::Bytes::new(),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if status == StatusCode::OK {
            assert_eq!(v["message"]["wamid"], wamid.as_str(), "{v}");
            served += 1;
        } else {
            assert_refused(&(status, headers, v), &["store_unavailable"]);
            unavailable += 1;
        }
    }
    (served, unavailable)
}

async fn wait_ready_again(d: &Daemon, what: &str) {
    eventually(what, DEADLINE, || async {
        (d.readyz().await == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disks_refuse_webhooks_keep_acknowledged_data_and_recover_by_themselves() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    // Dropped last, after the daemon (locals drop in reverse order).
    let data_fs = Tmpfs::mount(&data, "24m");
    let db_fs = Tmpfs::mount(&data.join("db"), "24m");
    let mut d = Daemon::start_with(Options {
        data_dir: Some(data.clone()),
        // Frequent checkpoints: the store writes (and fails) soon after its disk fills.
        checkpoint_interval: "200ms",
        ..Default::default()
    })
    .await;
    let mut run = Run {
        seq: 0,
        acked: Vec::new(),
    };
    for _ in 0..150 {
        let answer = run.post(&d, "before").await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    let before = snapshot(&d).await;
    assert_eq!(before.len(), 150);

    // 1. The journal's disk is full.
    let filler = data.join("filler");
    let filled = fill(&filler);
    eprintln!("journal disk: filled {filled} bytes");
    let codes = post_until_refused(
        &d,
        &mut run,
        "journal-full",
        &["journal_unavailable", "storage_unavailable"],
        "switchboard_journal_healthy",
    )
    .await;
    assert!(
        codes.contains("journal_unavailable"),
        "a journal write was tried and failed: {codes:?}"
    );
    assert!(
        d.metric("switchboard_journal_write_errors_total", &[])
            .await
            >= 1.0
    );
    // While it stays full, nothing is journaled (the writer's probes fail).
    fill(&filler);
    for _ in 0..5 {
        let answer = run.post(&d, "journal-full").await;
        assert_refused(&answer, &["storage_unavailable"]);
    }
    assert!(
        d.running(),
        "the daemon exited on a full disk:\n{}",
        d.log()
    );
    assert_intact(&d, &run.acked, &before).await;
    let journal_phase = snapshot(&d).await;

    std::fs::remove_file(&filler).unwrap();
    wait_ready_again(&d, "readiness after the journal's disk has room again").await;
    for _ in 0..20 {
        let answer = run.post(&d, "journal-back").await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    assert_eq!(d.metric("switchboard_journal_healthy", &[]).await, 1.0);

    // 2. The store's disk is full.
    let filler = data.join("db").join("filler");
    let filled = fill(&filler);
    eprintln!("store disk: filled {filled} bytes");
    let checkpoint_errors = d.metric("switchboard_checkpoint_errors_total", &[]).await;
    let codes = post_until_refused(
        &d,
        &mut run,
        "store-full",
        &["apply_failed", "storage_unavailable"],
        "switchboard_store_healthy",
    )
    .await;
    eprintln!("store disk full: refusals {codes:?}");
    // Checkpoints fail, are counted, and are tried again.
    eventually("checkpoints to fail and be retried", DEADLINE, || async {
        let now = d.metric("switchboard_checkpoint_errors_total", &[]).await;
        (now >= checkpoint_errors + 2.0).then_some(())
    })
    .await;
    for _ in 0..5 {
        let answer = run.post(&d, "store-full").await;
        assert_refused(&answer, &["storage_unavailable"]);
    }
    assert_eq!(d.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        d.running(),
        "the daemon exited on a full disk:\n{}",
        d.log()
    );
    let (served, unavailable) = assert_reads_right_or_retry(&d, &run.acked).await;
    eprintln!("store disk full: {served} reads served, {unavailable} answered 503");

    std::fs::remove_file(&filler).unwrap();
    wait_ready_again(&d, "readiness after the store's disk has room again").await;
    assert!(
        d.metric("switchboard_store_reopens_total", &[("outcome", "ok")])
            .await
            >= 1.0
    );
    assert_eq!(d.metric("switchboard_store_healthy", &[]).await, 1.0);
    for _ in 0..20 {
        let answer = run.post(&d, "store-back").await;
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.2);
    }
    assert_intact(&d, &run.acked, &journal_phase).await;
    assert!(
        d.log().contains("store reopened; ready again"),
        "the store was reopened in place, without a restart"
    );

    // 3. A restart loses nothing that was acknowledged.
    let status = d.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    d.restart().await;
    assert_intact(&d, &run.acked, &journal_phase).await;
    eprintln!(
        "{} posted, {} acknowledged, all present once after the restart",
        run.seq,
        run.acked.len()
    );
    drop(d);
    drop(db_fs);
    drop(data_fs);
}
