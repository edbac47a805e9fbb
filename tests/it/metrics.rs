//! The metric catalogue is true: after exercising every path a healthy daemon
//! has (webhooks accepted and refused in each way, duplicates, invalid and
//! unrouted items, API reads, checkpoints, connections served and refused,
//! outbound sends accepted, refused and failed against the Graph API simulator),
//! every metric family `/metrics` shows is declared in
//! `switchboard::telemetry::CATALOGUE` with a `# HELP` line carrying its help
//! text, a `# TYPE` line of its declared type and exactly its declared labels;
//! and every declared metric appears, except the few listed in
//! [`ONLY_UNDER_FAULTS`], which must be declared but absent.
//!
//! metrics-exporter-prometheus renders a family only once a handle for it
//! exists in the registry (a `counter!`/`gauge!`/`histogram!` call, even
//! without a value); `describe_*` alone renders nothing. So a metric that only
//! a fault touches is missing from a healthy daemon's page rather than shown
//! as 0, and this test cannot see it: those are listed by name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchboard::sim::graph::{SimConfig, SimHandle, SimNumber, Simulator};
use switchboard::telemetry::{Kind, CATALOGUE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Declared metrics that a healthy daemon under these paths cannot produce.
const ONLY_UNDER_FAULTS: &[(&str, &str)] = &[
    (
        "switchboard_shard_rejected_total",
        "a full shard queue (not reproducible on demand)",
    ),
    ("switchboard_apply_errors_total", "a sled write error"),
    (
        "switchboard_checkpoint_errors_total",
        "a failed checkpoint (store I/O error)",
    ),
    (
        "switchboard_journal_write_errors_total",
        "a journal write, fsync, truncate or rotate error",
    ),
    (
        "switchboard_journal_truncated_bytes_total",
        "a torn journal tail at start-up",
    ),
    (
        "switchboard_journal_corrupt_records_total",
        "a damaged journal range at start-up",
    ),
    (
        "switchboard_journal_corrupt_bytes_total",
        "a damaged journal range at start-up",
    ),
    (
        "switchboard_journal_lsn_anomalies_total",
        "an LSN gap or regression at start-up",
    ),
    (
        "switchboard_journal_rejected_total",
        "a full or closed journal queue, or a record over storage.max_record_bytes \
         (which must be at least server.max_body_bytes)",
    ),
    (
        "switchboard_journal_segments_removed_total",
        "journal retention, which does not exist yet (segments are the archive)",
    ),
    (
        "switchboard_store_reopens_total",
        "a store write failure (the store is then reopened in place; see disk_full)",
    ),
    (
        "switchboard_outbound_uncertain_resends_total",
        "a restart while a Graph API send was in flight",
    ),
    (
        "switchboard_filter_reloads_total",
        "a change of the sensitive-word list while the daemon runs",
    ),
    (
        "switchboard_filter_blocked_total",
        "a message refused for a sensitive term",
    ),
];

/// One metric family as the text exposition shows it.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    /// Label names of each sample (without a histogram's `le`).
    label_sets: BTreeSet<Vec<String>>,
    samples: Vec<(String, f64)>,
}

fn label_names(labels: &str) -> Vec<String> {
    // Our label values never hold '"' or ',' (bounded sets), so a simple split is exact.
    let mut names: Vec<String> = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once('=').expect("label=value").0.to_string())
        .filter(|n| n != "le")
        .collect();
    names.sort();
    names
}

/// Parse the exposition; panics on a sample line that belongs to no `# TYPE`.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let f = families.entry(name.to_string()).or_default();
            assert!(f.help.is_none(), "two HELP lines for {name}");
            f.help = Some(help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            let f = families.entry(name.to_string()).or_default();
            assert!(f.kind.is_none(), "two TYPE lines for {name}");
            f.kind = Some(kind.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (sample, labels) = match series.split_once('{') {
            Some((s, l)) => (s, l.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let family = if families.get(sample).is_some_and(|f| f.kind.is_some()) {
            sample.to_string()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = sample.strip_suffix(suffix)?;
                    let f = families.get(base)?;
                    (f.kind.as_deref() == Some("histogram")).then(|| base.to_string())
                })
                .unwrap_or_else(|| panic!("sample {sample} has no # TYPE line before it"))
        };
        let f = families.get_mut(&family).unwrap();
        f.label_sets.insert(label_names(labels));
        f.samples.push((sample.to_string(), value));
    }
    families
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// Sum of the samples named exactly `sample` in a fresh rendering.
async fn sample_sum(d: &Daemon, sample: &str) -> f64 {
    parse(&d.metrics_text().await)
        .values()
        .flat_map(|f| f.samples.iter())
        .filter(|(name, _)| name == sample)
        .map(|(_, v)| v)
        .sum()
}

async fn post_signed_with(d: &Daemon, secret: &[u8], body: &[u8]) -> StatusCode {
    let sig = switchboard::whatsapp::sign(secret, body);
    d.raw(
        Method::POST,
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", &sig)],
        body.to_vec(),
    )
    .await
    .0
}

/// POST /api/v1/messages with the admin token.
async fn send(d: &Daemon, body: Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, bytes) = d
        .raw(
            Method::POST,
            "/api/v1/messages",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn template(number: &str, to: &str) -> Value {
    json!({"number_id": number, "to": to, "type": "template",
           "template": {"name": "hello_world", "language": "en_US"}})
}

/// A Graph API simulator that knows every managed number by its test token.
async fn simulator() -> SimHandle {
    Simulator::start(SimConfig {
        numbers: MANAGED
            .iter()
            .map(|(id, display)| SimNumber::new(id, display, &token_for(id)))
            .collect(),
        seed: 11,
        run_id: Some("metrics".into()),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// Outbound: a send the Graph API accepts, one refused before queueing
/// (closed window), and one whose token the Graph API refuses (190: the
/// number pauses and an alert is raised).
async fn exercise_outbound(d: &Daemon, sim: &SimHandle) {
    let (n1, n2) = (MANAGED[0].0, MANAGED[1].0);
    let (status, v) = send(d, template(n1, "15550007777")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    eventually(
        "the Graph API to accept the send",
        Duration::from_secs(20),
        || async {
            (d.metric(
                "switchboard_outbound_sends_total",
                &[("result", "accepted")],
            )
            .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(sim.stats().numbers[n1].accepted, 1);

    let free_form = json!({"number_id": n1, "to": "15550008888", "type": "text", "text": "hi"});
    let (status, v) = send(d, free_form).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "window_closed", "{v}");

    sim.expire_token(n2).unwrap();
    let (status, v) = send(d, template(n2, "15550007777")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    eventually(
        "the refused token to pause the number",
        Duration::from_secs(20),
        || async {
            (d.metric("switchboard_number_paused", &[("number", n2)])
                .await
                == 1.0
                && d.metric("switchboard_graph_errors_total", &[("code", "190")])
                    .await
                    >= 1.0
                && d.metric("switchboard_alerts_total", &[("kind", "token_expired")])
                    .await
                    >= 1.0)
                .then_some(())
        },
    )
    .await;
}

/// Drive every path a healthy daemon has, so each metric they feed exists.
async fn exercise(d: &Daemon) {
    let number = "100000000000001";
    let customer = "15550007777";
    let text = text_body(number, customer, "wamid.M1", 1_768_000_000, "hello");

    // Verification handshake: verified, forbidden, bad request.
    for (query, expected) in [
        (
            format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42"),
            StatusCode::OK,
        ),
        (
            "hub.mode=subscribe&hub.verify_token=nope&hub.challenge=42".to_string(),
            StatusCode::FORBIDDEN,
        ),
        ("hub.mode=subscribe".to_string(), StatusCode::BAD_REQUEST),
    ] {
        let path = format!("/webhooks/whatsapp?{query}");
        let (status, _, _) = d.raw(Method::GET, &path, &[], Bytes::new()).await;
        assert_eq!(status, expected, "{path}");
    }

    // Accepted: a message, its status, account, preference, unrouted and invalid items.
    d.post_ok(&text).await;
    d.post_ok(&status_body(
        number,
        customer,
        "wamid.M1",
        "delivered",
        1_768_000_010,
    ))
    .await;
    d.post_ok(&fixture("crafted/quality_update_flagged.json"))
        .await;
    d.post_ok(&fixture("crafted/user_preferences_stop.json"))
        .await;
    d.post_ok(&text_body(
        UNMANAGED,
        "15550009999",
        "wamid.U1",
        1_768_000_000,
        "hi",
    ))
    .await;
    d.post_ok(&fixture("crafted/missing_sender.json")).await;
    // Duplicates: acknowledged, counted as dedupe hits.
    d.post_ok(&text).await;
    d.post_ok(&fixture("crafted/quality_update_flagged.json"))
        .await;

    // Refused: bad, missing and malformed signatures; malformed, wrong
    // object, and too large bodies.
    assert_eq!(
        post_signed_with(d, b"not the secret", &text).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, _) = d
        .raw(Method::POST, "/webhooks/whatsapp", &[], text.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = d
        .raw(
            Method::POST,
            "/webhooks/whatsapp",
            &[("x-hub-signature-256", "sha256=xyz")],
            text.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(d.post(b"{not json").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        d.post(br#"{"object":"page","entry":[]}"#).await.0,
        StatusCode::BAD_REQUEST
    );
    let big = text_body(
        number,
        customer,
        "wamid.BIG",
        1_768_000_000,
        &"x".repeat(20_000),
    );
    assert_eq!(d.post(&big).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    // API reads, a 404, a 401 and a 405.
    let convs = d.get_all("/api/v1/conversations").await;
    let conv = convs[0]["id"].as_str().unwrap().to_string();
    d.get_ok(&format!("/api/v1/conversations/{conv}")).await;
    d.get_ok(&format!("/api/v1/conversations/{conv}/messages"))
        .await;
    d.get_ok("/api/v1/messages/wamid.M1").await;
    d.get_ok(&format!("/api/v1/customers/{customer}")).await;
    d.get_ok("/api/v1/numbers").await;
    for kind in ["account", "preference", "unrouted", "invalid"] {
        d.get_ok(&format!("/api/v1/webhook-events?kind={kind}"))
            .await;
    }
    d.get_ok("/api/v1/openapi.json").await;
    assert_eq!(
        d.get("/api/v1/nowhere").await.0,
        StatusCode::NOT_FOUND,
        "unknown route"
    );
    let (status, _, _) = d
        .raw(Method::GET, "/api/v1/numbers", &[], Bytes::new())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = d
        .raw(Method::POST, "/api/v1/numbers", &[], Bytes::new())
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Connections: one that speaks plain HTTP to the TLS port (refused in
    // the handshake), and one TLS connection that asks to close.
    let mut plain = tokio::net::TcpStream::connect(d.https).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut sink)).await;
    let mut tls = d.tls_stream().await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn every_rendered_metric_is_declared_and_every_declared_one_is_rendered() {
    let sim = simulator().await;
    let d = Daemon::start_with(Options {
        checkpoint_interval: "200ms",
        max_body_bytes: 16 << 10,
        send_ceiling: Some(20.0),
        extra_config: format!("[whatsapp]\ngraph_api_base = \"{}\"\n", sim.base_url()),
        ..Default::default()
    })
    .await;
    // The start-up checkpoint has run once; wait for one of the timer's.
    let start_checkpoints = sample_sum(&d, "switchboard_checkpoint_seconds_count").await;
    exercise(&d).await;
    exercise_outbound(&d, &sim).await;
    eventually(
        "a timed checkpoint after the posts",
        Duration::from_secs(20),
        || async {
            (sample_sum(&d, "switchboard_checkpoint_seconds_count").await > start_checkpoints)
                .then_some(())
        },
    )
    .await;
    // Connection outcomes are counted when the connection task ends.
    eventually(
        "the refused and the closed connection counted",
        Duration::from_secs(20),
        || async {
            let text = d.metrics_text().await;
            (text.contains(
                r#"switchboard_connections_rejected_total{listener="https",reason="tls_error"}"#,
            ) && text.contains(r#"switchboard_connections_closed_total{listener="https","#))
            .then_some(())
        },
    )
    .await;

    // Process metrics are first read when metrics are installed, before the
    // runtime, shards and writer exist; the upkeep thread refreshes them.
    eventually(
        "process metrics refreshed by the upkeep thread",
        switchboard::telemetry::UPKEEP_INTERVAL * 4,
        || async { (sample_sum(&d, "switchboard_process_threads").await >= 5.0).then_some(()) },
    )
    .await;

    let families = parse(&d.metrics_text().await);
    let declared: BTreeMap<&str, _> = CATALOGUE.iter().map(|d| (d.name, d)).collect();

    for (name, family) in &families {
        let def = declared
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is rendered but not in telemetry::CATALOGUE"));
        assert_eq!(
            family.help.as_deref(),
            Some(def.help),
            "{name}: # HELP line missing or not the catalogue's help"
        );
        assert_eq!(
            family.kind.as_deref(),
            Some(type_name(def.kind)),
            "{name}: # TYPE line missing or of another type"
        );
        let mut want: Vec<String> = def.labels.iter().map(|l| l.to_string()).collect();
        want.sort();
        assert_eq!(
            family.label_sets,
            BTreeSet::from([want]),
            "{name}: label names differ from the catalogue's"
        );
        assert!(!family.samples.is_empty(), "{name}: no samples");
    }

    let faults: BTreeMap<&str, &str> = ONLY_UNDER_FAULTS.iter().copied().collect();
    for (name, why) in &faults {
        assert!(
            declared.contains_key(name),
            "{name} is listed as fault-only but not declared"
        );
        assert!(
            !families.contains_key(*name),
            "{name} appeared without {why}: remove it from ONLY_UNDER_FAULTS"
        );
    }
    let missing: Vec<&str> = declared
        .keys()
        .filter(|n| !faults.contains_key(*n) && !families.contains_key(**n))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "declared but not rendered after exercising every path: {missing:?}"
    );

    // The values are real, not just present.
    let value = |name: &str| -> f64 { families[name].samples.iter().map(|(_, v)| v).sum() };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("switchboard_process_start_time_seconds");
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "process start {start} vs now {now}"
    );
    assert!(value("switchboard_process_resident_memory_bytes") > (4 << 20) as f64);
    // Listeners, journal segment, sled files, connections.
    assert!(value("switchboard_process_open_fds") >= 5.0);
    assert!(value("switchboard_process_cpu_seconds_total") >= 0.0);
    assert_eq!(value("switchboard_build_info"), 1.0);
    assert_eq!(value("switchboard_ready"), 1.0);
    assert_eq!(value("switchboard_unrouted_updates_total"), 1.0);
    assert_eq!(value("switchboard_invalid_items_total"), 1.0);
    assert!(value("switchboard_dedupe_hits_total") >= 2.0);
    for outcome in [
        "accepted",
        "bad_signature",
        "missing_signature",
        "malformed_signature",
        "malformed",
        "wrong_object",
        "too_large",
        "verified",
        "forbidden",
        "bad_request",
    ] {
        assert!(
            d.metric(
                "switchboard_webhook_requests_total",
                &[("outcome", outcome)]
            )
            .await
                >= 1.0,
            "no webhook request counted as {outcome}"
        );
    }
}

#[tokio::test]
async fn process_metrics_follow_the_process() {
    let d = Daemon::start().await;
    let fds = |text: &str| -> f64 { parse(text)["switchboard_process_open_fds"].samples[0].1 };
    let before = fds(&d.metrics_text().await);
    // Twenty idle connections are twenty more descriptors in the daemon.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(d.https).await.unwrap());
    }
    let grown = eventually(
        "open fds to follow 20 new connections",
        Duration::from_secs(30),
        || async {
            let now = fds(&d.metrics_text().await);
            (now >= before + 20.0).then_some(now)
        },
    )
    .await;
    drop(held);
    eventually("open fds to fall back", Duration::from_secs(30), || async {
        (fds(&d.metrics_text().await) <= grown - 20.0).then_some(())
    })
    .await;
}
