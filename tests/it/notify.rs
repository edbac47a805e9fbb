//! The systemd notification protocol, spoken to a fake `NOTIFY_SOCKET`:
//! READY=1 once replay is done and `/readyz` is true, WATCHDOG=1 pings at a
//! quarter of `WATCHDOG_USEC` while the write path answers its liveness
//! probes (a wedged writer or shard stops them: see
//! `pipeline::liveness`'s unit test), STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::harness::*;

/// The next datagram's text, or None after `deadline`.
fn next_message(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.checked_duration_since(Instant::now())?;
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Read datagrams until one holds `line`; returns the ones before it.
fn wait_for(socket: &UnixDatagram, line: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let msg = next_message(socket, deadline)
            .unwrap_or_else(|| panic!("no {line} within {within:?}; got {seen:?}"));
        if msg.lines().any(|l| l == line) {
            return seen;
        }
        seen.push(msg);
    }
}

#[tokio::test]
async fn ready_watchdog_pings_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let period = Duration::from_millis(800);
    let mut d = Daemon::start_with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), period.as_micros().to_string()),
        ],
        ..Default::default()
    })
    .await;

    let socket = tokio::task::spawn_blocking(move || {
        let before = wait_for(&socket, "READY=1", Duration::from_secs(60));
        // Pings start with the process (replay may outlast a period), so
        // some may precede READY=1; nothing else does.
        assert!(
            before.iter().all(|m| m.trim() == "WATCHDOG=1"),
            "before READY=1: {before:?}"
        );
        socket
    })
    .await
    .unwrap();
    assert_eq!(d.readyz().await, StatusCode::OK, "READY=1 before /readyz");

    // Pings keep coming at about a quarter period while the daemon works.
    let poster = d.poster();
    let socket = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for _ in 0..6 {
            let other = wait_for(&socket, "WATCHDOG=1", period * 2);
            assert!(other.is_empty(), "unexpected notifications: {other:?}");
        }
        let took = started.elapsed();
        assert!(
            took >= period && took < period * 6,
            "six pings took {took:?} with a period of {period:?}"
        );
        socket
    });
    for i in 0..20 {
        let body = text_body(
            MANAGED[0].0,
            "15550001234",
            &format!("wamid.W{i}"),
            1_768_000_000 + i,
            "ping",
        );
        assert_eq!(poster.post(&body).await, Some(StatusCode::OK));
    }
    let socket = socket.await.unwrap();

    let status = tokio::task::spawn_blocking(move || {
        let status = d.terminate();
        // Already queued on the socket when the process has exited.
        let before = wait_for(&socket, "STOPPING=1", Duration::from_secs(5));
        assert!(
            before.iter().all(|m| m.trim() == "WATCHDOG=1"),
            "before STOPPING=1: {before:?}"
        );
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}
