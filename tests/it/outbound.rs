//! Outbound delivery end to end: the real daemon sends through the project's
//! Graph API simulator (a real HTTP server on loopback that enforces the
//! platform's limits) and receives its signed status webhooks over TLS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};
use switchboard::sim::graph::{
    DelayRange, Faults, SimConfig, SimHandle, SimNumber, Simulator, StatusBehaviour, WebhookTarget,
};

use crate::harness::*;

const N1: &str = "100000000000001";
const N2: &str = "100000000000002";
const DEADLINE: Duration = Duration::from_secs(30);

/// A simulator and a daemon wired to each other.
struct Rig {
    sim: SimHandle,
    daemon: Daemon,
}

struct RigOptions {
    /// The daemon's configured ceiling per number.
    ceiling: f64,
    /// The simulator's (the platform's) real limit per number.
    platform_limit: f64,
    sim: SimConfig,
    daemon: Options,
    outbound: &'static str,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            ceiling: 80.0,
            platform_limit: 80.0,
            sim: SimConfig {
                statuses: StatusBehaviour {
                    sent_delay: DelayRange::ms(5, 20),
                    delivered_delay: DelayRange::ms(5, 30),
                    read_delay: DelayRange::ms(5, 30),
                    ..StatusBehaviour::orderly()
                },
                ..SimConfig::default()
            },
            daemon: Options::default(),
            outbound: "",
        }
    }
}

impl Rig {
    async fn start(o: RigOptions) -> Rig {
        let numbers = MANAGED
            .iter()
            .map(|(id, display)| SimNumber {
                max_per_second: o.platform_limit,
                ..SimNumber::new(id, display, &token_for(id))
            })
            .collect();
        // The daemon's address is known only once it runs, and it needs the
        // simulator's: start the simulator aimed nowhere, then retarget it.
        let placeholder = WebhookTarget::plain(
            "127.0.0.1:9".parse().unwrap(),
            "/webhooks/whatsapp",
            APP_SECRET,
            "900000000000001",
        );
        let sim = Simulator::start(SimConfig {
            numbers,
            webhook: Some(placeholder),
            ..o.sim
        })
        .await
        .expect("simulator");
        let daemon = Daemon::start_with(Options {
            send_ceiling: Some(o.ceiling),
            extra_config: format!(
                "[whatsapp]\ngraph_api_base = \"{}\"\nrequest_timeout = \"5s\"\n\
                 [outbound]\nretry_initial_delay = \"20ms\"\nretry_max_delay = \"200ms\"\n\
                 throttle_hold = \"500ms\"\n{}\n",
                sim.base_url(),
                o.outbound
            ),
            ..o.daemon
        })
        .await;
        let rig = Rig { sim, daemon };
        rig.aim();
        rig
    }

    /// Point the simulator's webhooks at the daemon (again after a restart).
    fn aim(&self) {
        self.sim
            .set_webhook(WebhookTarget {
                addr: self.daemon.https,
                tls: Some(self.daemon.ca_file()),
                server_name: "localhost".into(),
                path: "/webhooks/whatsapp".into(),
                app_secret: APP_SECRET.into(),
                waba_id: "900000000000001".into(),
            })
            .unwrap();
    }

    async fn send(&self, body: Value) -> (StatusCode, Value) {
        self.daemon.api_post("/api/v1/messages", &body).await
    }

    /// Queue a message and insist on 202; its local id.
    async fn queue(&self, body: Value) -> String {
        let (status, v) = self.send(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["status"], "queued");
        v["id"].as_str().unwrap().to_string()
    }

    async fn message(&self, id: &str) -> Value {
        self.daemon
            .get_ok(&format!("/api/v1/messages/{}", enc(id)))
            .await
    }

    /// Wait until message `id` is in `status`: wait for a final one (read, failed), since an
    /// intermediate one may come and go between two polls.
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("{id} {status}"), DEADLINE, || async {
            let m = self.message(id).await;
            (m["status"] == status).then_some(m)
        })
        .await
    }

    /// Accepted sends per recipient, as the platform recorded them.
    fn sends_by_recipient(&self) -> HashMap<String, usize> {
        let mut by = HashMap::new();
        for s in self.sim.sends() {
            *by.entry(s.recipient).or_default() += 1;
        }
        by
    }

    async fn wait_accepted(&self, number: &str, count: u64) {
        eventually(
            &format!("{count} sends accepted for {number}"),
            Duration::from_secs(60),
            || async {
                let accepted = self.sim.stats().numbers[number].accepted;
                (accepted >= count).then_some(())
            },
        )
        .await
    }
}

fn template(number: &str, to: &str, name: &str) -> Value {
    json!({"number_id": number, "to": to, "type": "template",
           "template": {"name": name, "language": "en_US", "category": "utility"}})
}

fn text(number: &str, to: &str, body: &str) -> Value {
    json!({"number_id": number, "to": to, "type": "text", "text": body})
}

/// The conversation of `customer` on `number`, once the daemon has it.
async fn conversation_of(d: &Daemon, number: &str, customer: &str) -> String {
    eventually("the conversation", DEADLINE, || async {
        d.get_all("/api/v1/conversations")
            .await
            .into_iter()
            .find(|c| {
                c["number_id"] == number
                    && c["customer"]["wa_id"].as_str().unwrap_or_default() == customer
            })
            .map(|c| c["id"].as_str().unwrap().to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sent_and_follow_their_statuses() {
    let rig = Rig::start(RigOptions::default()).await;
    let d = &rig.daemon;

    // A template goes to anyone; its statuses come back by webhook.
    let id = rig
        .queue(template(N1, "+82 10-1111-2222", "order_update"))
        .await;
    let read = rig.wait_status(&id, "read").await;
    let wamid = read["message"]["wamid"].as_str().unwrap().to_string();
    assert!(wamid.starts_with("wamid.SIM."), "{read}");
    let history: Vec<&str> = read["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["sent", "delivered", "read"], "{read}");
    assert_eq!(read["message"]["direction"], "out");
    assert_eq!(read["message"]["priority"], "automation");
    // The same message is found by its wamid.
    assert_eq!(rig.message(&wamid).await["message"]["id"], id);

    // Free-form without a customer message: refused, nothing queued.
    let (status, v) = rig.send(text(N1, "821033334444", "hello")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "window_closed");

    // The customer writes; now an agent reply in the conversation goes out.
    rig.sim
        .send_inbound(N1, "821033334444", "안녕하세요, 주문 확인 부탁드려요 🙏")
        .await
        .unwrap();
    let conv = conversation_of(d, N1, "821033334444").await;
    let (status, v) = d
        .api_post(
            &format!("/api/v1/conversations/{conv}/messages"),
            &json!({"type": "text", "text": "네, 확인해 드릴게요."}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let reply = v["id"].as_str().unwrap().to_string();
    let m = rig.wait_status(&reply, "read").await;
    assert_eq!(m["message"]["priority"], "agent");
    assert_eq!(m["message"]["conversation_id"], conv.as_str());
    assert_eq!(m["message"]["text"], "네, 확인해 드릴게요.");
    // The reply is in the conversation's timeline after the customer's message.
    let timeline = d
        .get_all(&format!("/api/v1/conversations/{conv}/messages"))
        .await;
    let directions: Vec<&str> = timeline
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["in", "out"], "{timeline:?}");

    // Refusals name the problem and queue nothing.
    let (status, v) = rig.send(template(UNMANAGED, "821011112222", "x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "unknown_number");
    let (status, v) = rig
        .send(json!({"number_id": N1, "to": "8210", "type": "text"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_payload");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("text"),
        "{v}"
    );

    // Exactly the two accepted messages reached the platform, once each.
    let sends = rig.sends_by_recipient();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends.values().all(|&n| n == 1), "{sends:?}");
    assert_eq!(
        d.metric("switchboard_outbound_refused_total", &[]).await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_words_and_opt_outs_are_refused() {
    let terms = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(terms.path(), "# compliance list\nfree\n무료\n대출\n").unwrap();
    let rig = Rig::start(RigOptions {
        outbound: Box::leak(
            format!(
                "filter_file = {}\nfilter_reload_interval = \"100ms\"",
                Value::from(terms.path().display().to_string())
            )
            .into_boxed_str(),
        ),
        ..RigOptions::default()
    })
    .await;
    let d = &rig.daemon;
    rig.sim
        .send_inbound(N1, "821055556666", "문의드립니다")
        .await
        .unwrap();
    conversation_of(d, N1, "821055556666").await;

    for disguised in [
        "Get it F R E E today",
        "ｆｒｅｅ shipping",
        "무 료 배송",
        "fr\u{200b}ee",
    ] {
        let (status, v) = rig.send(text(N1, "821055556666", disguised)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{disguised}: {v}");
        assert_eq!(v["error"]["code"], "blocked_term", "{disguised}: {v}");
    }
    // Words that merely contain a term pass.
    rig.queue(text(N1, "821055556666", "We are carefree about freedom"))
        .await;

    // The block is an alert naming who sent it.
    let alerts = d.get_all("/api/v1/alerts").await;
    let blocked: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "blocked_term")
        .collect();
    assert_eq!(blocked.len(), 4, "{alerts:?}");
    assert_eq!(blocked[0]["actor"], "admin");

    // The list is reloaded when the file changes.
    std::fs::write(terms.path(), "free\n무료\n대출\ncasino\n").unwrap();
    eventually("the new term in force", DEADLINE, || async {
        let (status, v) = rig
            .send(text(N1, "821055556666", "best C-A-S-I-N-O in town"))
            .await;
        match status {
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(v["error"]["code"], "blocked_term");
                Some(())
            }
            // Sent before the reload: fine, try again.
            StatusCode::ACCEPTED => None,
            other => panic!("{other}: {v}"),
        }
    })
    .await;

    // A customer who stopped marketing gets no marketing template, but a
    // utility one still goes.
    d.post_ok(&fixture("crafted/user_preferences_stop.json"))
        .await;
    let mut marketing = template(N1, "15550100901", "spring_sale");
    marketing["template"]["category"] = json!("marketing");
    let (status, v) = rig.send(marketing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "opted_out");
    let id = rig.queue(template(N1, "15550100901", "order_update")).await;
    rig.wait_status(&id, "read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_retried_and_terminal_ones_fail() {
    let rig = Rig::start(RigOptions {
        sim: SimConfig {
            faults: Faults {
                error_fraction: 0.3,
                ..Faults::default()
            },
            ..RigOptions::default().sim
        },
        ..RigOptions::default()
    })
    .await;
    let d = &rig.daemon;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            rig.queue(template(N2, &format!("8210000{i:05}"), "order_update"))
                .await,
        );
    }
    for id in &ids {
        rig.wait_status(id, "read").await;
    }
    let stats = rig.sim.stats().numbers[N2].clone();
    assert!(stats.server_errors > 0, "{stats:?}");
    assert_eq!(stats.accepted, 30, "{stats:?}");
    assert!(rig.sends_by_recipient().values().all(|&n| n == 1));
    assert!(
        d.metric("switchboard_outbound_sends_total", &[("result", "retry")])
            .await
            >= stats.server_errors as f64
    );

    // The daemon believes the window is open (the customer wrote to it), the
    // platform does not: 131047 is terminal and reported as window_closed.
    rig.sim.set_faults(Faults::default()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    d.post_ok(&text_body(N2, "821077778888", "wamid.outside.1", now, "hi"))
        .await;
    let id = rig.queue(text(N2, "821077778888", "reply")).await;
    let failed = rig.wait_status(&id, "failed").await;
    assert_eq!(failed["message"]["error"]["code"], 131047, "{failed}");
    assert_eq!(failed["message"]["error"]["reason"], "window_closed");
    assert_eq!(rig.sim.stats().numbers[N2].outside_window, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_pauses_the_number_until_resumed() {
    let rig = Rig::start(RigOptions::default()).await;
    let d = &rig.daemon;
    rig.sim.expire_token(N1).unwrap();
    let first = rig
        .queue(template(N1, "821012340001", "order_update"))
        .await;
    eventually("the number paused", DEADLINE, || async {
        let numbers = d.get_ok("/api/v1/numbers").await;
        let n = numbers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["phone_number_id"] == N1)
            .cloned()
            .unwrap();
        (n["sending"]["paused"] == true).then_some(())
    })
    .await;
    // The number pauses first (no further sends), then the alert is
    // journaled: await it.
    eventually("the token_expired alert", DEADLINE, || async {
        let alerts = d.get_all("/api/v1/alerts").await;
        alerts
            .iter()
            .any(|a| a["kind"] == "token_expired" && a["number_id"] == N1)
            .then_some(())
    })
    .await;
    // Later messages wait too; the other numbers are not affected.
    let second = rig
        .queue(template(N1, "821012340002", "order_update"))
        .await;
    let other = rig
        .queue(template(N2, "821012340003", "order_update"))
        .await;
    rig.wait_status(&other, "read").await;
    assert_eq!(rig.message(&first).await["status"], "sending");
    assert_eq!(rig.message(&second).await["status"], "queued");
    assert_eq!(rig.sim.stats().numbers[N1].accepted, 0);

    // The operator renews the token and resumes the number.
    rig.sim.renew_token(N1, &token_for(N1)).unwrap();
    let (status, v) = d
        .api_post(&format!("/api/v1/numbers/{N1}/resume"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["was_paused"], true);
    rig.wait_status(&first, "read").await;
    rig.wait_status(&second, "read").await;
    assert_eq!(rig.sim.stats().numbers[N1].accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_survives_restarts_and_each_message_goes_once() {
    const MESSAGES: usize = 60;
    let mut rig = Rig::start(RigOptions {
        ceiling: 10.0,
        ..RigOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        ids.push(
            rig.queue(template(N1, &format!("8210555{i:05}"), "order_update"))
                .await,
        );
    }
    // A clean stop mid-way: nothing may go twice.
    rig.wait_accepted(N1, 10).await;
    assert!(rig.daemon.terminate().success());
    let after_stop = rig.sim.stats().numbers[N1].accepted;
    rig.daemon.restart().await;
    rig.aim();
    assert_eq!(
        rig.daemon
            .metric("switchboard_outbound_uncertain_resends_total", &[])
            .await,
        0.0
    );
    rig.wait_accepted(N1, after_stop + 10).await;

    // kill -9 mid-way: only a send caught in flight may go again, and each
    // such case is counted.
    rig.daemon.kill9();
    rig.daemon.restart().await;
    rig.aim();
    let uncertain = rig
        .daemon
        .metric("switchboard_outbound_uncertain_resends_total", &[])
        .await;
    for id in &ids {
        rig.wait_status(id, "read").await;
    }
    let sends = rig.sends_by_recipient();
    assert_eq!(sends.len(), MESSAGES);
    let twice: usize = sends.values().map(|n| n - 1).sum();
    assert!(
        twice as f64 <= uncertain,
        "{twice} messages went twice, {uncertain} uncertain resends counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_ceiling_is_never_exceeded() {
    const MESSAGES: u64 = 100;
    let rig = Rig::start(RigOptions {
        ceiling: 25.0,
        ..RigOptions::default()
    })
    .await;
    // One batch, one durable write; each message is judged on its own.
    let mut messages: Vec<Value> = (0..MESSAGES)
        .map(|i| template(N1, &format!("8210666{i:05}"), "order_update"))
        .collect();
    messages.insert(7, text(N1, "821066600007", "no window"));
    let (status, v) = rig
        .daemon
        .api_post("/api/v1/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), MESSAGES as usize + 1);
    assert_eq!(items[7]["error"]["code"], "window_closed", "{}", items[7]);
    let ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids.len(), MESSAGES as usize);
    let queued = rig.message(ids[42]).await;
    assert_eq!(queued["message"]["priority"], "campaign", "{queued}");
    rig.wait_accepted(N1, MESSAGES).await;
    let stats = rig.sim.stats().numbers[N1].clone();
    assert!(stats.max_accepted_per_second <= 25, "{stats:?}");
    assert_eq!(stats.throttled, 0, "{stats:?}");
    assert!(stats.rejected.is_empty(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_converges_below_an_unknown_platform_limit() {
    // The platform allows 20/s; the daemon is configured for 80/s.
    const MESSAGES: u64 = 400;
    let rig = Rig::start(RigOptions {
        ceiling: 80.0,
        platform_limit: 20.0,
        ..RigOptions::default()
    })
    .await;
    let started = Instant::now();
    for i in 0..MESSAGES {
        rig.queue(template(N1, &format!("8210777{i:05}"), "order_update"))
            .await;
    }
    eventually("5 s of sending", Duration::from_secs(10), || async {
        (started.elapsed() >= Duration::from_secs(5)).then_some(())
    })
    .await;
    let early = rig.sim.stats().numbers[N1].clone();
    rig.wait_accepted(N1, MESSAGES).await;
    let late = rig.sim.stats().numbers[N1].clone();
    let attempts = (late.accepted + late.throttled) - (early.accepted + early.throttled);
    let throttled = late.throttled - early.throttled;
    eprintln!(
        "first 5 s: {} accepted, {} throttled; after: {attempts} attempts, {throttled} throttled",
        early.accepted, early.throttled
    );
    assert!(early.throttled > 0, "the limit was never hit: {early:?}");
    assert!(
        (throttled as f64) < 0.01 * attempts as f64,
        "{throttled} of {attempts} sends throttled after the first 5 s ({late:?})"
    );
    assert!(rig.sends_by_recipient().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_duplicated_and_reordered_statuses_settle_monotonically() {
    let rig = Rig::start(RigOptions {
        sim: SimConfig {
            statuses: StatusBehaviour {
                sent_delay: DelayRange::ms(0, 5),
                delivered_delay: DelayRange::ms(0, 20),
                read_delay: DelayRange::ms(0, 20),
                read_fraction: 1.0,
                fail_fraction: 0.0,
                // `sent` posted before the send's 200, half the statuses out of
                // order, half of them twice.
                sent_before_response_fraction: 1.0,
                out_of_order_fraction: 0.5,
                duplicate_fraction: 0.5,
                ..StatusBehaviour::default()
            },
            ..SimConfig::default()
        },
        ..RigOptions::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            rig.queue(template(N2, &format!("8210888{i:05}"), "order_update"))
                .await,
        );
    }
    for id in &ids {
        // `read` may come before `delivered`: the status is `read` at once and
        // stays so; the history fills in.
        let m = eventually("all three statuses", DEADLINE, || async {
            let m = rig.message(id).await;
            (m["statuses"].as_array().unwrap().len() >= 3).then_some(m)
        })
        .await;
        assert_eq!(m["status"], "read", "{m}");
        let mut history: Vec<&str> = m["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap())
            .collect();
        history.sort_unstable();
        // Each status once, whatever order and however often it came.
        assert_eq!(history, ["delivered", "read", "sent"], "{m}");
    }
    let hooks = rig.sim.stats().webhooks;
    assert!(hooks.sent_before_response > 0, "{hooks:?}");
    assert_eq!(rig.sim.stats().numbers[N2].accepted, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_number_sends_at_a_quarter_of_its_ceiling() {
    let rig = Rig::start(RigOptions {
        ceiling: 40.0,
        ..RigOptions::default()
    })
    .await;
    let d = &rig.daemon;
    let ceiling = |numbers: &Value| {
        numbers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["phone_number_id"] == N1)
            .map(|n| n["sending"]["ceiling_per_second"].as_f64().unwrap())
            .unwrap()
    };
    assert_eq!(ceiling(&d.get_ok("/api/v1/numbers").await), 40.0);
    d.post_ok(&fixture("crafted/quality_update_flagged.json"))
        .await;
    let messages: Vec<Value> = (0..30)
        .map(|i| template(N1, &format!("8210999{i:05}"), "order_update"))
        .collect();
    // The lane picks the quality event up before its next send.
    eventually("the ceiling cut to a quarter", DEADLINE, || async {
        (ceiling(&d.get_ok("/api/v1/numbers").await) == 10.0).then_some(())
    })
    .await;
    let (status, v) = d
        .api_post("/api/v1/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    rig.wait_accepted(N1, 30).await;
    let stats = rig.sim.stats().numbers[N1].clone();
    assert!(stats.max_accepted_per_second <= 10, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_sends_share_a_global_bound_that_agent_replies_bypass() {
    // One bulk request in flight over all numbers, each taking 150 ms at the platform.
    const CAMPAIGN: usize = 24;
    const LATENCY: Duration = Duration::from_millis(150);
    let rig = Rig::start(RigOptions {
        sim: SimConfig {
            faults: Faults {
                latency: LATENCY,
                ..Faults::default()
            },
            ..RigOptions::default().sim
        },
        outbound: "max_bulk_in_flight = 1",
        ..RigOptions::default()
    })
    .await;
    let messages: Vec<Value> = (0..CAMPAIGN)
        .map(|i| {
            let number = if i % 2 == 0 { N1 } else { N2 };
            template(number, &format!("8210777{i:05}"), "spring_sale")
        })
        .collect();
    let (status, v) = rig
        .daemon
        .api_post("/api/v1/messages/batch", &json!({ "messages": messages }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    rig.wait_accepted(N1, 1).await;

    // An agent reply while the campaign drains goes out ahead of it.
    let mut reply = template(N1, "821088800001", "order_update");
    reply["priority"] = json!("agent");
    rig.queue(reply).await;
    let sends = eventually("the agent reply accepted", DEADLINE, || async {
        let sends = rig.sim.sends();
        sends
            .iter()
            .any(|s| s.recipient == "821088800001")
            .then_some(sends)
    })
    .await;
    let campaign_done = sends
        .iter()
        .filter(|s| s.recipient.starts_with("8210777"))
        .count();
    assert!(
        campaign_done < CAMPAIGN / 2,
        "the agent reply waited for {campaign_done} campaign sends"
    );

    // Every campaign send started after the previous one was answered.
    rig.wait_accepted(N1, (CAMPAIGN / 2 + 1) as u64).await;
    rig.wait_accepted(N2, (CAMPAIGN / 2) as u64).await;
    let mut at: Vec<i64> = rig
        .sim
        .sends()
        .iter()
        .filter(|s| s.recipient.starts_with("8210777"))
        .map(|s| s.at_ms)
        .collect();
    at.sort_unstable();
    assert_eq!(at.len(), CAMPAIGN);
    let tightest = at.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        tightest >= LATENCY.as_millis() as i64 - 10,
        "two bulk sends {tightest} ms apart: more than one was in flight"
    );
}
