//! Conversation routing through the real daemon: signed webhooks open
//! conversations, agents and teams come through the API, and assignments
//! are checked through the API, the event stream, and across restarts
//! (clean stop and SIGKILL).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{eventually, text_body, Daemon, Options, ADMIN_TOKEN};

const NUMBER: &str = "100000000000001";
const WAIT: Duration = Duration::from_secs(20);

async fn call(
    d: &Daemon,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let (status, _, bytes) = d
        .raw(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn admin(d: &Daemon, method: Method, path: &str, body: Value) -> Value {
    let (status, v) = call(d, method.clone(), path, ADMIN_TOKEN, body).await;
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

/// A team `support` for NUMBER (least loaded) and agents `a1`, `a2` online
/// with max_concurrent 1.
async fn setup(d: &Daemon) {
    admin(
        d,
        Method::POST,
        "/api/v1/teams",
        json!({"id": "support", "name": "Support", "numbers": [NUMBER],
               "policy": {"steps": [{"target": {"team": "support"}, "strategy": "least_loaded"}]}}),
    )
    .await;
    for a in ["a1", "a2"] {
        let v = admin(
            d,
            Method::POST,
            "/api/v1/agents",
            json!({"id": a, "name": a, "teams": ["support"], "max_concurrent": 1, "status": "online"}),
        )
        .await;
        assert_eq!(v["agent"]["status"], "online");
    }
    // A PUT's body may not name another id; a POST must name one.
    for (method, path, body, says) in [
        (
            Method::PUT,
            "/api/v1/agents/a1",
            json!({"id": "a2"}),
            "differs",
        ),
        (
            Method::POST,
            "/api/v1/teams",
            json!({"name": "x"}),
            "required",
        ),
    ] {
        let (status, v) = call(d, method, path, ADMIN_TOKEN, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
    }
}

/// Post an inbound text from `customer` and return its conversation id.
async fn inbound(d: &Daemon, customer: &str, n: u64) -> u64 {
    let ts = 1_760_000_000 + n as i64;
    d.post_ok(&text_body(
        NUMBER,
        customer,
        &format!("wamid.rt.{customer}.{n}"),
        ts,
        "hi",
    ))
    .await;
    let (_, v) = d
        .get(&format!("/api/v1/conversations?number={NUMBER}&limit=500"))
        .await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["customer"]["id"] == customer && c["status"] != "resolved")
        .and_then(|c| {
            c["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or(c["id"].as_u64())
        })
        .unwrap_or_else(|| panic!("no open conversation for {customer}: {v}"))
}

async fn routing_of(d: &Daemon, conv: u64) -> Option<Value> {
    let (status, v) = d
        .get(&format!("/api/v1/conversations/{conv}/routing"))
        .await;
    (status == StatusCode::OK)
        .then(|| v["conversation"].clone())
        .filter(|c| !c.is_null())
}

async fn assignee(d: &Daemon, conv: u64) -> Option<String> {
    routing_of(d, conv).await?["assignee"]
        .as_str()
        .map(str::to_string)
}

async fn wait_assigned(d: &Daemon, conv: u64) -> String {
    eventually("assignment", WAIT, || async { assignee(d, conv).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_routed_queued_and_served_when_capacity_frees() {
    let d = Daemon::start().await;
    setup(&d).await;
    let c1 = inbound(&d, "820001", 1).await;
    let c2 = inbound(&d, "820002", 2).await;
    let c3 = inbound(&d, "820003", 3).await;
    let x = wait_assigned(&d, c1).await;
    let y = wait_assigned(&d, c2).await;
    assert_ne!(x, y, "least loaded spreads: {x} {y}");
    // Both agents are full: the third waits, first in its queue.
    let q = eventually("queued", WAIT, || async {
        routing_of(&d, c3).await.filter(|v| v["status"] == "queued")
    })
    .await;
    assert_eq!(q["position"], 1);
    let queues = admin(&d, Method::GET, "/api/v1/queues", Value::Null).await;
    assert_eq!(queues["items"][0]["length"], 1, "{queues}");
    // Resolving frees capacity: the waiting one is assigned at once.
    let v = admin(
        &d,
        Method::POST,
        &format!("/api/v1/conversations/{c1}/resolve"),
        Value::Null,
    )
    .await;
    assert!(v["effects"].to_string().contains("\"assigned\""), "{v}");
    assert_eq!(assignee(&d, c3).await.as_deref(), Some(x.as_str()));
    // The pipeline sees the resolve: the customer's next message opens a new
    // conversation, which goes back to their previous agent (sticky) when free.
    let (_, conv) = d.get(&format!("/api/v1/conversations/{c1}")).await;
    assert_eq!(conv["status"], "resolved", "{conv}");
    // Its history: assigned by policy, resolved by the admin.
    let (_, h) = d.get(&format!("/api/v1/conversations/{c1}/routing")).await;
    assert!(h["conversation"].is_null());
    let kinds: Vec<(&str, &str)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("assigned", "policy"), ("resolved", "")], "{h}");
    assert_eq!(h["history"][1]["actor"], "admin");
    admin(
        &d,
        Method::POST,
        &format!("/api/v1/conversations/{c3}/resolve"),
        Value::Null,
    )
    .await;
    let c4 = inbound(&d, "820001", 4).await;
    assert_ne!(c4, c1);
    assert_eq!(
        wait_assigned(&d, c4).await,
        x,
        "sticky to the previous agent"
    );
    // Live view: per agent load; per team queue.
    let live = admin(&d, Method::GET, "/api/v1/live", Value::Null).await;
    let agents = live["agents"].as_array().unwrap();
    assert_eq!(
        agents
            .iter()
            .map(|a| a["active"].as_u64().unwrap())
            .sum::<u64>(),
        2
    );
    let resolved: u64 = agents
        .iter()
        .map(|a| a["resolved_last_hour"].as_u64().unwrap())
        .sum();
    assert_eq!(resolved, 2);
    assert_eq!(live["teams"][0]["queued"], 0);
    let m = d
        .metric(
            "switchboard_routing_assignments_total",
            &[("reason", "policy")],
        )
        .await;
    assert!(m >= 3.0, "assignments metric {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner_and_agents_are_scoped() {
    let d = Daemon::start().await;
    admin(
        &d,
        Method::POST,
        "/api/v1/teams",
        json!({"id": "pool", "numbers": [NUMBER],
               "policy": {"steps": [{"target": {"team": "pool"}, "strategy": "manual"}]}}),
    )
    .await;
    let mut tokens = Vec::new();
    for a in ["c1", "c2"] {
        admin(
            &d,
            Method::POST,
            "/api/v1/agents",
            json!({"id": a, "teams": ["pool"], "status": "online"}),
        )
        .await;
        let t = admin(
            &d,
            Method::POST,
            &format!("/api/v1/agents/{a}/token"),
            Value::Null,
        )
        .await;
        tokens.push(t["token"].as_str().unwrap().to_string());
    }
    for round in 0..5u64 {
        let conv = inbound(&d, &format!("83000{round}"), round).await;
        eventually("queued for claiming", WAIT, || async {
            routing_of(&d, conv)
                .await
                .filter(|v| v["status"] == "queued")
        })
        .await;
        let path = format!("/api/v1/conversations/{conv}/claim");
        let (a, b) = tokio::join!(
            call(&d, Method::POST, &path, &tokens[0], Value::Null),
            call(&d, Method::POST, &path, &tokens[1], Value::Null)
        );
        let wins = [&a, &b].iter().filter(|r| r.0 == StatusCode::OK).count();
        assert_eq!(wins, 1, "round {round}: {a:?} / {b:?}");
        let loser = if a.0 == StatusCode::OK { &b } else { &a };
        assert_eq!(loser.0, StatusCode::CONFLICT);
        assert_eq!(loser.1["error"]["code"], "already_assigned");
    }
    // Agents see their own work only.
    let (s, _) = call(&d, Method::GET, "/api/v1/live", &tokens[0], Value::Null).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &d,
        Method::GET,
        "/api/v1/agents/c2/conversations",
        &tokens[0],
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(
        &d,
        Method::GET,
        "/api/v1/agents/c1/conversations",
        &tokens[0],
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mine = v["items"].as_array().unwrap().len();
    let (_, v2) = call(
        &d,
        Method::GET,
        "/api/v1/agents/c2/conversations",
        &tokens[1],
        Value::Null,
    )
    .await;
    assert_eq!(mine + v2["items"].as_array().unwrap().len(), 5);
    let (s, _) = call(
        &d,
        Method::GET,
        "/api/v1/conversations",
        &tokens[0],
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(
        &d,
        Method::PUT,
        "/api/v1/agents/c1/status",
        &tokens[0],
        json!({"status": "away"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["agent"]["status"], "away");
}

/// Read the event stream until `needle` appears (or the deadline).
async fn sse_until(stream: &mut (impl AsyncReadExt + Unpin), seen: &mut String, needle: &str) {
    let end = tokio::time::Instant::now() + WAIT;
    let mut buf = vec![0u8; 8192];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(end, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} on the event stream; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "event stream closed; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Open `GET /api/v1/events{query}` as the admin; returns the stream and
/// what it carried up to its `ready` frame (the response head included).
async fn subscribe(
    d: &Daemon,
    query: &str,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
) {
    let mut s = d.tls_stream().await;
    let req = format!(
        "GET /api/v1/events{query} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    sse_until(&mut s, &mut seen, "event: ready").await;
    (s, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_assignments() {
    let d = Daemon::start().await;
    let (mut s, mut seen) = subscribe(&d, "").await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    setup(&d).await;
    sse_until(&mut s, &mut seen, "event: agent_status_changed").await;
    let conv = inbound(&d, "840001", 1).await;
    sse_until(&mut s, &mut seen, "event: message").await;
    sse_until(&mut s, &mut seen, "\"id\":\"wamid.rt.840001.1\"").await;
    sse_until(&mut s, &mut seen, &format!("\"conv\":{conv}")).await;
    sse_until(&mut s, &mut seen, "event: assigned").await;
    sse_until(&mut s, &mut seen, "\"customer_id\":\"840001\"").await;
}

/// `?types=` narrows the stream to the named kinds; an unknown kind is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_only_the_types_asked_for() {
    let d = Daemon::start().await;
    let (status, v) = call(
        &d,
        Method::GET,
        "/api/v1/events?types=assigned,nonsense",
        ADMIN_TOKEN,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_parameter", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nonsense"),
        "{v}"
    );
    let (mut s, mut seen) = subscribe(&d, "?types=assigned,resolved").await;
    setup(&d).await;
    let conv = inbound(&d, "840002", 1).await;
    sse_until(&mut s, &mut seen, "event: assigned").await;
    admin(
        &d,
        Method::POST,
        &format!("/api/v1/conversations/{conv}/resolve"),
        json!({}),
    )
    .await;
    // The message frame was published before the assignment and the
    // resolution, so an unfiltered stream would carry it by now.
    sse_until(&mut s, &mut seen, "event: resolved").await;
    for unwanted in ["event: message", "event: agent_status_changed"] {
        assert!(!seen.contains(unwanted), "{unwanted} in:\n{seen}");
    }
}

/// (assignee, position, status) of each conversation.
async fn state(d: &Daemon, convs: [u64; 4]) -> Vec<(Value, Value, Value)> {
    let mut v = Vec::new();
    for c in convs {
        let r = routing_of(d, c).await.unwrap();
        v.push((
            r["assignee"].clone(),
            r["position"].clone(),
            r["status"].clone(),
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_state_survives_a_clean_restart_and_sigkill() {
    restarts_keep_routing_state("1h").await;
}

/// With checkpoints every 50 ms the pipeline replays only a tail of the
/// journal while routing replays all of it: resolutions must still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_state_survives_restarts_with_frequent_checkpoints() {
    restarts_keep_routing_state("50ms").await;
}

async fn restarts_keep_routing_state(checkpoint_interval: &'static str) {
    let mut d = Daemon::start_with(Options {
        checkpoint_interval,
        ..Options::default()
    })
    .await;
    setup(&d).await;
    let c1 = inbound(&d, "850001", 1).await;
    let c2 = inbound(&d, "850002", 2).await;
    let c3 = inbound(&d, "850003", 3).await;
    let c4 = inbound(&d, "850004", 4).await;
    let x1 = wait_assigned(&d, c1).await;
    let x2 = wait_assigned(&d, c2).await;
    for c in [c3, c4] {
        eventually("queued", WAIT, || async {
            routing_of(&d, c).await.filter(|v| v["status"] == "queued")
        })
        .await;
    }
    let snapshot = state(&d, [c1, c2, c3, c4]).await;
    assert!(d.terminate().success());
    d.restart().await;
    assert_eq!(
        state(&d, [c1, c2, c3, c4]).await,
        snapshot,
        "after a clean restart"
    );
    d.kill9();
    d.restart().await;
    assert_eq!(state(&d, [c1, c2, c3, c4]).await, snapshot, "after SIGKILL");
    // Queue order survived: resolving frees x1, and c3 (the older) gets it.
    admin(
        &d,
        Method::POST,
        &format!("/api/v1/conversations/{c1}/resolve"),
        Value::Null,
    )
    .await;
    assert_eq!(assignee(&d, c3).await.as_deref(), Some(x1.as_str()));
    assert_eq!(routing_of(&d, c4).await.unwrap()["position"], 1);
    // And resolution survives a crash: the resolved conversation stays
    // resolved and is not reconciled back into routing.
    d.kill9();
    d.restart().await;
    assert!(routing_of(&d, c1).await.is_none());
    assert_eq!(assignee(&d, c2).await.as_deref(), Some(x2.as_str()));
    let agents = admin(&d, Method::GET, "/api/v1/agents", Value::Null).await;
    assert_eq!(agents["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_offline_past_grace_returns_work_to_routing() {
    let d = Daemon::start_with(Options {
        extra_config: "[routing]\ngrace_period = \"300ms\"\ntick_interval = \"50ms\"\n".into(),
        ..Options::default()
    })
    .await;
    setup(&d).await;
    let conv = inbound(&d, "860001", 1).await;
    let first = wait_assigned(&d, conv).await;
    let other = if first == "a1" { "a2" } else { "a1" };
    admin(
        &d,
        Method::PUT,
        &format!("/api/v1/agents/{first}/status"),
        json!({"status": "offline"}),
    )
    .await;
    let now = eventually("reassignment after the grace period", WAIT, || async {
        assignee(&d, conv).await.filter(|a| a != &first)
    })
    .await;
    assert_eq!(now, other);
    let m = d
        .metric(
            "switchboard_routing_unassignments_total",
            &[("reason", "agent_offline")],
        )
        .await;
    assert_eq!(m, 1.0);
}

/// End to end: signed inbound webhook (each a new customer, so a new
/// conversation) to its durable assignment, open loop at RATE new
/// conversations per second; latency from each webhook's *scheduled* send
/// time to the `assigned` event on the event stream (published only after
/// the routing command's journal batch was fdatasync'ed and applied).
/// Run: `E2E_RATE=5000 E2E_SECS=10 cargo test --release --test it
/// routing_e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run explicitly (see the doc comment)"]
async fn routing_e2e_webhook_to_durable_assignment() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use tokio::time::Instant;

    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rate = env("E2E_RATE", 5_000);
    let secs = env("E2E_SECS", 10);
    let warmup = env("E2E_WARMUP_SECS", 2);
    let conns = env("E2E_CONNECTIONS", 64);
    let d = Daemon::start_with(Options {
        shards: 0,
        // The daemon's default, not the tests' small rotating segments.
        journal_segment_bytes: switchboard::journal::DEFAULT_SEGMENT_BYTES,
        extra_config: "[routing]\nstream_buffer = 262144\nqueue = 262144\n".into(),
        ..Options::default()
    })
    .await;
    admin(
        &d,
        Method::POST,
        "/api/v1/teams",
        json!({"id": "all", "numbers": [NUMBER]}),
    )
    .await;
    // 500 agents with room for every conversation of the run.
    let per_agent = ((rate * (secs + warmup)) / 500 + 10) as u32;
    for a in 0..500 {
        admin(
            &d,
            Method::POST,
            "/api/v1/agents",
            json!({"id": format!("ag{a:03}"), "teams": ["all"], "max_concurrent": per_agent, "status": "online"}),
        )
        .await;
    }
    let sent: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Default::default();
    // The event stream, read by its own task.
    let (mut s, _) = subscribe(&d, "?types=assigned").await;
    let measure_from = Instant::now() + Duration::from_secs(warmup);
    let per_conn = rate * (secs + warmup) / conns;
    let total = per_conn * conns;
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut pending = String::new();
            let mut assigned = 0u64;
            let mut slowest: Vec<u64> = Vec::new();
            while assigned < total {
                let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await
                {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                let now = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Frames are cut by offset and the buffer drained once per
                // read: draining frame by frame moves the rest each time.
                let mut consumed = 0;
                while let Some(end) = pending[consumed..].find("\n\n") {
                    let frame = &pending[consumed..consumed + end];
                    consumed += end + 2;
                    if !frame.contains("event: assigned") {
                        continue;
                    }
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    let Some(customer) = v["customer_id"].as_str() else {
                        continue;
                    };
                    if let Some(t0) = sent.lock().remove(customer) {
                        assigned += 1;
                        if t0 >= measure_from {
                            let us = (now - t0).as_micros().max(1) as u64;
                            // The slowest of each 100 ms of send times:
                            // stalls show as a few windows, load as many.
                            let w = ((t0 - measure_from).as_millis() / 100) as usize;
                            if slowest.len() <= w {
                                slowest.resize(w + 1, 0);
                            }
                            slowest[w] = slowest[w].max(us);
                            h.record(us).unwrap();
                        }
                    }
                }
                pending.drain(..consumed);
            }
            (h, assigned, slowest)
        })
    };
    let start = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_secs_f64(conns as f64 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..conns {
        // One client (one keep-alive connection) per task: a shared pool
        // keeps only 16 and would make the others handshake again and again.
        let poster = d.poster();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0u64;
            let offset = interval.mul_f64(c as f64 / conns as f64);
            for i in 0..per_conn {
                let at = start + offset + interval.mul_f64(i as f64);
                tokio::time::sleep_until(at).await;
                let customer = format!("7{c:03}{i:07}");
                let body = text_body(
                    NUMBER,
                    &customer,
                    &format!("wamid.e2e.{customer}"),
                    1_760_000_000,
                    "hi",
                );
                sent.lock().insert(customer, at);
                if poster.post(&body).await != Some(StatusCode::OK) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    let (h, assigned, slowest) = reader.await.unwrap();
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "routing e2e: {rate} new conversations/s for {secs}s (+{warmup}s warm-up), {conns} connections, \
         {assigned} of {} assigned, {failed} webhooks failed; webhook -> durable assignment: \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} measured)",
        per_conn * conns,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    );
    let stalls: Vec<String> = slowest
        .iter()
        .enumerate()
        .filter(|(_, us)| **us > 10_000)
        .map(|(w, us)| format!("{:.1} s: {:.1} ms", w as f64 / 10.0, *us as f64 / 1000.0))
        .collect();
    println!(
        "  100 ms windows (by send time) whose slowest took over 10 ms: {}",
        if stalls.is_empty() {
            "none".to_string()
        } else {
            stalls.join(", ")
        }
    );
    // Where the time goes, by the daemon's own histograms (bucket bounds).
    let text = d.metrics_text().await;
    for name in [
        "switchboard_webhook_ingest_seconds",
        "switchboard_journal_fsync_seconds",
        "switchboard_shard_apply_seconds",
        "switchboard_routing_apply_seconds",
    ] {
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        let total = buckets.last().map_or(0.0, |b| b.1);
        let at = |q: f64| {
            buckets
                .iter()
                .find(|b| b.1 >= q * total)
                .map_or(f64::NAN, |b| b.0 * 1000.0)
        };
        // How many took longer than 10 ms (the first bound at or past it).
        let slow = buckets
            .iter()
            .find(|b| b.0 >= 0.01)
            .map_or(0.0, |b| total - b.1);
        println!(
            "  {name}: n={total}, p50 <= {:.2} ms, p99 <= {:.2} ms, {slow} over 10 ms",
            at(0.5),
            at(0.99)
        );
    }
    assert_eq!(failed, 0);
    assert_eq!(assigned, per_conn * conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_reply_is_its_first_response() {
    let d = Daemon::start_with(Options {
        send_ceiling: Some(80.0),
        // Sends are queued durably; nothing needs to reach a Graph API here.
        extra_config: "[whatsapp]\ngraph_api_base = \"http://127.0.0.1:9/v23.0\"\n".into(),
        ..Options::default()
    })
    .await;
    setup(&d).await;
    let mut tokens = std::collections::HashMap::new();
    for a in ["a1", "a2"] {
        let t = admin(
            &d,
            Method::POST,
            &format!("/api/v1/agents/{a}/token"),
            Value::Null,
        )
        .await;
        tokens.insert(a, t["token"].as_str().unwrap().to_string());
    }
    // A current timestamp: the customer-service window must be open to reply.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    d.post_ok(&text_body(
        NUMBER,
        "870001",
        "wamid.rt.870001",
        now,
        "hello?",
    ))
    .await;
    let (_, v) = d
        .get(&format!("/api/v1/conversations?number={NUMBER}"))
        .await;
    let conv: u64 = v["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let holder = wait_assigned(&d, conv).await;
    let other = if holder == "a1" { "a2" } else { "a1" };
    let path = format!("/api/v1/conversations/{conv}/messages");
    let reply = json!({"type": "text", "text": "Hi, how can I help?"});
    let (s, _) = call(&d, Method::POST, &path, &tokens[other], reply.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only the assignee replies");
    let (s, v) = call(&d, Method::POST, &path, &tokens[holder.as_str()], reply).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let live = admin(&d, Method::GET, "/api/v1/live", Value::Null).await;
    let me = live["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == holder.as_str())
        .unwrap()
        .clone();
    assert!(me["avg_first_response_ms"].as_i64().is_some(), "{live}");
    let (_, h) = d
        .get(&format!("/api/v1/conversations/{conv}/routing"))
        .await;
    assert!(h["history"].to_string().contains("first_response"), "{h}");
    assert_eq!(h["conversation"]["awaiting_first_reply"], false);
}
