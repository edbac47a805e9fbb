//! End-to-end tests of the simulator over real sockets: a client posting to the Graph API,
//! and a small plain-HTTP server standing in for the daemon's webhook endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;
use crate::event::Event;
use crate::http::server::test_support::wait_until;
use crate::http::server::{full, serve_with, Limits, Transport};
use crate::sim::client::{ClientError, HttpsClient};
use crate::whatsapp::{parse_delivery, verify, AppKeys, NumberDirectory};

const N1: &str = "100000000000001";
const D1: &str = "15550000001";
const T1: &str = "tok-1";
const N2: &str = "100000000000002";
const SECRET: &str = "sim-app-secret";
const WABA: &str = "900000000000009";
const HOOK_PATH: &str = "/webhooks/whatsapp";

fn cfg(numbers: Vec<SimNumber>) -> SimConfig {
    SimConfig {
        numbers,
        seed: 7,
        run_id: Some("t".into()),
        ..SimConfig::default()
    }
}

fn one_number() -> SimConfig {
    cfg(vec![SimNumber::new(N1, D1, T1)])
}

fn text(to: &str, body: &str) -> Value {
    json!({"messaging_product":"whatsapp","recipient_type":"individual","to":to,"type":"text","text":{"body":body}})
}

fn template(to: &str, name: &str) -> Value {
    json!({"messaging_product":"whatsapp","to":to,"type":"template",
           "template":{"name":name,"language":{"code":"en_US"}}})
}

struct Api {
    client: HttpsClient,
}

impl Api {
    fn new(sim: &SimHandle) -> Api {
        Api {
            client: HttpsClient::new(sim.addr(), None, false)
                .with_request_timeout(Duration::from_secs(10)),
        }
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let (status, _, bytes) = self
            .client
            .request(Method::POST, path, &headers, body.to_string())
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn send(&self, number: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.post(&format!("/v23.0/{number}/messages"), Some(token), body)
            .await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, bytes) = self
            .client
            .request(Method::GET, path, &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(-1)
}

fn wamid(v: &Value) -> String {
    v["messages"][0]["id"].as_str().unwrap().to_owned()
}

struct Dir(Vec<&'static str>);

impl NumberDirectory for Dir {
    fn is_managed(&self, id: &str) -> bool {
        self.0.contains(&id)
    }
    fn number_for_display(&self, _: &str) -> Option<String> {
        None
    }
}

/// One POST the stand-in daemon answered 200.
#[derive(Clone)]
struct Post {
    signature: Option<String>,
    body: Bytes,
}

/// The stand-in daemon: records POSTs, answers 500 to the first `fail_first`.
struct Hook {
    addr: std::net::SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
    failed: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Hook {
    async fn start(fail_first: usize) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let to_fail = Arc::new(AtomicUsize::new(fail_first));
        let (stop, stopped) = oneshot::channel::<()>();
        let (p, f) = (posts.clone(), failed.clone());
        let service = move |req: Request<Incoming>, _info| {
            let (posts, failed, to_fail) = (p.clone(), f.clone(), to_fail.clone());
            async move {
                let signature = req
                    .headers()
                    .get("x-hub-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let fail = to_fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let mut response = Response::new(full(""));
                if fail {
                    failed.fetch_add(1, Ordering::SeqCst);
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                } else {
                    posts.lock().push(Post { signature, body });
                }
                response
            }
        };
        tokio::spawn(serve_with(
            listener,
            Transport::Plain,
            "test",
            Limits::default(),
            service,
            async {
                let _ = stopped.await;
            },
        ));
        Hook {
            addr,
            posts,
            failed,
            stop: Some(stop),
        }
    }

    fn target(&self) -> WebhookTarget {
        WebhookTarget::plain(self.addr, HOOK_PATH, SECRET, WABA)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().clone()
    }

    /// Every event of every POST, in arrival order.
    fn events(&self) -> Vec<Event> {
        let dir = Dir(vec![N1, N2]);
        self.posts()
            .iter()
            .flat_map(|p| parse_delivery(&p.body, &dir, 0).unwrap().events)
            .collect()
    }

    /// (wamid, status) in arrival order.
    fn statuses(&self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Status(s) => Some((s.wamid, s.status)),
                _ => None,
            })
            .collect()
    }

    fn has(&self, wamid: &str, status: &str) -> bool {
        self.statuses()
            .iter()
            .any(|(w, s)| w == wamid && s == status)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn fast_statuses() -> StatusBehaviour {
    StatusBehaviour {
        sent_delay: DelayRange::ms(5, 15),
        delivered_delay: DelayRange::ms(10, 30),
        read_delay: DelayRange::ms(10, 30),
        retry_backoff: Duration::from_millis(20),
        ..StatusBehaviour::orderly()
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn sends_are_validated_and_answered_in_metas_shapes() {
    let sim = Simulator::start(one_number()).await.unwrap();
    let api = Api::new(&sim);
    assert_eq!(sim.base_url(), format!("http://{}/v23.0", sim.addr()));

    // Unknown phone_number_id: 400, code 100, subcode 33.
    let (status, v) = api.send("999", T1, &template("16505551234", "hello")).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, 100));
    assert_eq!(v["error"]["error_subcode"], 33);
    assert!(v["error"]["fbtrace_id"].as_str().unwrap().len() == 11);

    // Missing and wrong tokens: 401, code 190.
    let path = format!("/v23.0/{N1}/messages");
    let (status, v) = api.post(&path, None, &template("1", "t")).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, 190));
    let (status, v) = api.send(N1, "wrong", &template("1", "t")).await;
    assert_eq!((status, code(&v)), (StatusCode::UNAUTHORIZED, 190));
    assert!(v["error"].get("error_subcode").is_none());

    // Invalid parameters: 400, code 100, with Meta's error_data.
    let (status, v) = api
        .send(
            N1,
            T1,
            &json!({"messaging_product":"whatsapp","to":"1","text":{"body":"x".repeat(4097)}}),
        )
        .await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, 100));
    assert_eq!(v["error"]["type"], "OAuthException");
    assert_eq!(v["error"]["error_data"]["messaging_product"], "whatsapp");
    assert!(v["error"]["error_data"]["details"]
        .as_str()
        .unwrap()
        .contains("4096"));
    let (_, v) = api
        .send(
            N1,
            T1,
            &json!({"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}),
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("to"),
        "{v}"
    );
    let (status, v) = api.post(&path, Some(T1), &json!("not an object")).await;
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, 100));

    // A path the Graph API does not have.
    let (status, _, body) = api
        .client
        .request(
            Method::GET,
            &format!("/v21.0/{N1}/messages"),
            &[("authorization", "Bearer tok-1")],
            Bytes::new(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, 2500));

    // Success: Meta's answer, unique wamids, any version.
    let (status, v) = api.send(N1, T1, &template("+16505551234", "hello")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["messaging_product"], "whatsapp");
    assert_eq!(
        v["contacts"][0],
        json!({"input":"+16505551234","wa_id":"16505551234"})
    );
    assert_eq!(v["messages"][0]["message_status"], "accepted");
    let first = wamid(&v);
    assert!(first.starts_with("wamid.SIM"), "{first}");
    let (status, v) = api
        .post(
            &format!("/v19.0/{N1}/messages"),
            Some(T1),
            &template("US.13491208655302741918", "hello"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["contacts"][0]["user_id"], "US.13491208655302741918");
    assert_ne!(wamid(&v), first);

    // Mark as read.
    let (status, v) = api
        .send(
            N1,
            T1,
            &json!({"messaging_product":"whatsapp","status":"read","message_id":"wamid.X"}),
        )
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"success": true})));

    let stats = sim.stats();
    let n = &stats.numbers[N1];
    assert_eq!(n.accepted, 2);
    assert_eq!(n.token_errors, 2);
    assert_eq!(n.rejected[&100], 3);
    assert_eq!(n.marked_read, 1);
    assert_eq!(stats.unknown_number, 1);
    let sends = sim.sends();
    assert_eq!(sends.len(), 2);
    assert_eq!(
        (
            sends[0].recipient.as_str(),
            sends[0].kind.as_str(),
            sends[0].template.as_deref()
        ),
        ("16505551234", "template", Some("hello"))
    );
    // The same numbers over HTTP.
    let v = api.get("/sim/stats").await;
    assert_eq!(v["numbers"][N1]["accepted"], 2);
    assert_eq!(v["numbers"][N1]["rejected"]["190"], 2);
    assert_eq!(api.get("/sim/sends").await.as_array().unwrap().len(), 2);
    sim.shutdown().await;
}

/// Fires `n` templates at once, to distinct recipients; returns (status, code) per send.
async fn burst(sim: &SimHandle, number: &str, token: &str, n: usize) -> Vec<(StatusCode, i64)> {
    let api = Arc::new(Api::new(sim));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (api, number, token) = (api.clone(), number.to_owned(), token.to_owned());
        tasks.spawn(async move {
            let (s, v) = api
                .send(
                    &number,
                    &token,
                    &template(&format!("1650555{i:04}"), "promo"),
                )
                .await;
            (s, if s == StatusCode::OK { 0 } else { code(&v) })
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn throughput_is_limited_over_a_sliding_second_exactly() {
    let mut number = SimNumber::new(N1, D1, T1);
    number.max_per_second = 20.0;
    let sim = Simulator::start(cfg(vec![number])).await.unwrap();
    let started = Instant::now();
    let results = burst(&sim, N1, T1, 30).await;
    let took = started.elapsed();
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 != StatusCode::OK).collect();
    assert!(
        throttled
            .iter()
            .all(|r| **r == (StatusCode::BAD_REQUEST, 130429)),
        "{throttled:?}"
    );
    let stats = sim.stats().numbers[N1].clone();
    // The peak is exact whatever the timing; the split is exact when the burst fit in a
    // second (it takes milliseconds; a starved machine may let a slot free up).
    assert_eq!(stats.max_accepted_per_second, 20);
    if took < Duration::from_millis(900) {
        assert_eq!((ok, throttled.len()), (20, 10), "burst took {took:?}");
    } else {
        assert!(ok >= 20, "{ok}");
    }
    assert_eq!(stats.accepted, ok as u64);
    assert_eq!(stats.throttled, throttled.len() as u64);
    assert_eq!(stats.rejected[&130429], throttled.len() as u64);
    sim.shutdown().await;

    // HTTP 429 mode, switched on at runtime.
    let mut number = SimNumber::new(N1, D1, T1);
    number.max_per_second = 1.0;
    let sim = Simulator::start(cfg(vec![number])).await.unwrap();
    sim.set_faults(Faults {
        throttle_http_429: true,
        ..Faults::default()
    })
    .unwrap();
    let api = Api::new(&sim);
    let (s, _) = api.send(N1, T1, &template("1", "t")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.send(N1, T1, &template("2", "t")).await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, 130429));
    assert_eq!(v["error"]["message"], "(#130429) Rate limit hit");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_pair_limit_allows_a_burst_then_one_per_interval() {
    let sim = Simulator::start(SimConfig {
        pair_interval: Duration::from_millis(400),
        ..one_number()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    for _ in 0..3 {
        let (s, v) = api.send(N1, T1, &template("16505550001", "t")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = api.send(N1, T1, &template("16505550001", "t")).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, 131056));
    // Other recipients are unaffected; "+" and digits name the same recipient.
    let (s, _) = api.send(N1, T1, &template("16505550002", "t")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api.send(N1, T1, &template("+16505550001", "t")).await;
    assert_eq!(code(&v), 131056, "{s}");
    // One token is back after the interval.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s, _) = api.send(N1, T1, &template("16505550001", "t")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = api.send(N1, T1, &template("16505550001", "t")).await;
    assert_eq!(code(&v), 131056);
    let n = &sim.stats().numbers[N1];
    assert_eq!((n.accepted, n.pair_limited), (5, 3));
    sim.shutdown().await;
}

#[tokio::test]
async fn free_form_needs_the_customer_service_window_templates_do_not() {
    let sim = Simulator::start(cfg(vec![
        SimNumber::new(N1, D1, T1),
        SimNumber::new(N2, "15550000002", "tok-2"),
    ]))
    .await
    .unwrap();
    let api = Api::new(&sim);
    let (s, v) = api.send(N1, T1, &text("821012345678", "안녕하세요")).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, 131047));
    assert_eq!(v["error"]["message"], "(#131047) Re-engagement message");
    let (s, _) = api.send(N1, T1, &template("821012345678", "welcome")).await;
    assert_eq!(s, StatusCode::OK);

    sim.declare_window(N1, "+821012345678").unwrap();
    let (s, v) = api.send(N1, T1, &text("821012345678", "안녕하세요")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Windows belong to (number, customer).
    let (_, v) = api.send(N2, "tok-2", &text("821012345678", "hi")).await;
    assert_eq!(code(&v), 131047);

    // Over HTTP: a message 25 h ago does not open it, one now does.
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 25 * 3600;
    let (s, _) = api
        .post(
            "/sim/window",
            None,
            &json!({"number": N1, "customer": "8613012345678", "at": at}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = api.send(N1, T1, &text("8613012345678", "你好")).await;
    assert_eq!(code(&v), 131047);
    let (s, v) = api
        .post(
            "/sim/window",
            None,
            &json!({"number": N1, "customer": "8613012345678"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["open_until"].as_i64().unwrap() > at as i64);
    let (s, _) = api.send(N1, T1, &text("8613012345678", "你好")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(
            "/sim/window",
            None,
            &json!({"number": "404", "customer": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    assert_eq!(sim.stats().numbers[N1].outside_window, 2);

    // Enforcement off: everything goes.
    let off = Simulator::start(SimConfig {
        window: WindowEnforcement::Off,
        ..one_number()
    })
    .await
    .unwrap();
    let (s, _) = Api::new(&off).send(N1, T1, &text("1", "hi")).await;
    assert_eq!(s, StatusCode::OK);
    off.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_gets_190_until_renewed() {
    let sim = Simulator::start(one_number()).await.unwrap();
    let api = Api::new(&sim);
    let (s, _) = api.send(N1, T1, &template("1", "t")).await;
    assert_eq!(s, StatusCode::OK);
    sim.expire_token(N1).unwrap();
    let (s, v) = api.send(N1, T1, &template("2", "t")).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, 190));
    assert_eq!(v["error"]["error_subcode"], 463);
    assert!(sim.expire_token("404").is_err());

    // Over HTTP: renew, expire again.
    let (s, _) = api
        .post(
            &format!("/sim/numbers/{N1}/token"),
            None,
            &json!({"token": "tok-new"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.send(N1, "tok-new", &template("3", "t")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post(&format!("/sim/numbers/{N1}/expire-token"), None, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = api.send(N1, "tok-new", &template("4", "t")).await;
    assert_eq!(code(&v), 190);
    assert_eq!(sim.stats().numbers[N1].token_errors, 2);
    sim.shutdown().await;
}

/// The (HTTP status, code) of `n` sequential sends under `faults`.
async fn fault_run(seed: u64, faults: Faults, n: usize) -> (Vec<(u16, i64)>, SimStats) {
    let mut number = SimNumber::new(N1, D1, T1);
    number.pair_burst = 1000;
    number.max_per_second = 1000.0;
    let sim = Simulator::start(SimConfig {
        seed,
        faults,
        ..cfg(vec![number])
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let mut out = Vec::new();
    for _ in 0..n {
        let (s, v) = api.send(N1, T1, &template("1", "t")).await;
        out.push((s.as_u16(), if s.is_success() { 0 } else { code(&v) }));
    }
    let stats = sim.stats();
    sim.shutdown().await;
    (out, stats)
}

#[tokio::test]
async fn server_errors_follow_the_seed() {
    let faults = Faults {
        error_fraction: 0.3,
        ..Faults::default()
    };
    let (a, stats) = fault_run(11, faults.clone(), 60).await;
    let (b, _) = fault_run(11, faults.clone(), 60).await;
    assert_eq!(a, b, "the same seed gives the same faults");
    let (c, _) = fault_run(12, faults, 60).await;
    assert_ne!(a, c, "another seed gives other faults");
    let errors: Vec<_> = a.iter().filter(|r| r.0 != 200).collect();
    assert!((8..=30).contains(&errors.len()), "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|r| matches!(r, (500, 1) | (500, 2) | (503, 2))),
        "{errors:?}"
    );
    assert!(errors.iter().any(|r| r.0 == 503) && errors.iter().any(|r| r.0 == 500));
    let n = &stats.numbers[N1];
    assert_eq!(n.server_errors, errors.len() as u64);
    assert_eq!(n.accepted, 60 - errors.len() as u64);
}

#[tokio::test]
async fn latency_hangs_and_runtime_fault_changes() {
    let sim = Simulator::start(SimConfig {
        faults: Faults {
            latency: Duration::from_millis(120),
            ..Faults::default()
        },
        ..one_number()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let started = Instant::now();
    let (s, _) = api.send(N1, T1, &template("1", "t")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(120));

    // A bounded hang before processing: the answer comes late and the send happens then.
    sim.set_faults(Faults {
        hang_fraction: 1.0,
        hang_for: Some(Duration::from_millis(300)),
        ..Faults::default()
    })
    .unwrap();
    let started = Instant::now();
    let (s, _) = api.send(N1, T1, &template("2", "t")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Faults over HTTP merge into the current ones: a hang that never ends, after the
    // message went out. The client gives up; the send is recorded anyway.
    let (s, v) = api
        .post(
            "/sim/faults",
            None,
            &json!({"hang_for": "never", "hang_after_processing": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["hang_fraction"].as_f64(), v["hang_for"].as_str()),
        (Some(1.0), Some("never"))
    );
    let impatient =
        HttpsClient::new(sim.addr(), None, false).with_request_timeout(Duration::from_millis(300));
    let result = impatient
        .request(
            Method::POST,
            &format!("/v23.0/{N1}/messages"),
            &[("authorization", "Bearer tok-1")],
            template("3", "t").to_string(),
        )
        .await;
    assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
    assert_eq!(sim.sends().len(), 3);
    assert_eq!(sim.stats().numbers[N1].hung, 2);

    let (s, _) = api
        .post("/sim/faults", None, &json!({"error_fraction": 2.0}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(api.get("/sim/faults").await["error_fraction"], 0.0);

    // Another request hanging forever does not hold up shutdown.
    let addr = sim.addr();
    let hanging = tokio::spawn(async move {
        HttpsClient::new(addr, None, false)
            .request(
                Method::POST,
                &format!("/v23.0/{N1}/messages"),
                &[("authorization", "Bearer tok-1")],
                template("4", "t").to_string(),
            )
            .await
    });
    wait_until(Duration::from_secs(5), "second hang", || {
        sim.stats().numbers[N1].hung == 3
    })
    .await;
    let started = Instant::now();
    sim.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _ = tokio::time::timeout(Duration::from_secs(3), hanging)
        .await
        .unwrap();
}

#[tokio::test]
async fn status_webhooks_are_signed_parseable_and_priced() {
    let hook = Hook::start(0).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: StatusBehaviour {
            // One POST at a time: arrival order is due order.
            max_in_flight: 1,
            ..fast_statuses()
        },
        ..cfg(vec![SimNumber {
            pair_burst: 10,
            ..SimNumber::new(N1, D1, T1)
        }])
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    sim.declare_window(N1, "821011112222").unwrap();
    let mut texts = Vec::new();
    for i in 0..4 {
        let (s, v) = api
            .send(N1, T1, &text("821011112222", &format!("답장 {i} 🙏")))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        texts.push(wamid(&v));
    }
    let (_, v) = api
        .send(N1, T1, &template("16505550009", "spring_sale"))
        .await;
    let promo = wamid(&v);
    let mut utility = template("821011112222", "order_update");
    utility["template"]["category"] = json!("utility");
    let (_, v) = api.send(N1, T1, &utility).await;
    let free_utility = wamid(&v);

    let all: Vec<String> = texts
        .iter()
        .cloned()
        .chain([promo.clone(), free_utility.clone()])
        .collect();
    wait_until(
        Duration::from_secs(5),
        "sent, delivered and read for all",
        || {
            all.iter()
                .all(|w| ["sent", "delivered", "read"].iter().all(|s| hook.has(w, s)))
        },
    )
    .await;

    let keys = AppKeys::new(&[("sim".into(), SECRET.as_bytes().to_vec())]);
    for post in hook.posts() {
        assert!(post.body.is_ascii(), "Meta escapes non-ASCII");
        assert_eq!(
            verify(
                &keys,
                post.signature.as_deref().map(str::as_bytes),
                &post.body
            ),
            Ok(0)
        );
        let v: Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(v["entry"][0]["id"], WABA);
        assert_eq!(
            v["entry"][0]["changes"][0]["value"]["metadata"],
            json!({"display_phone_number": D1, "phone_number_id": N1})
        );
    }
    let events = hook.events();
    assert_eq!(events.len(), 18, "no duplicates in orderly mode");
    for e in &events {
        let Event::Status(s) = e else { panic!("{e:?}") };
        assert!(s.timestamp_valid && s.timestamp > 1_700_000_000);
        let pricing = s.pricing.as_ref();
        match s.status.as_str() {
            "read" => assert!(pricing.is_none()),
            _ => {
                let p = pricing.unwrap();
                assert_eq!(p.model.as_deref(), Some("PMP"));
                let expected = if s.wamid == promo {
                    (Some(true), "regular", "marketing")
                } else if s.wamid == free_utility {
                    (Some(false), "free_customer_service", "utility")
                } else {
                    (Some(false), "free_customer_service", "service")
                };
                assert_eq!(
                    (
                        p.billable,
                        p.kind.as_deref().unwrap(),
                        p.category.as_deref().unwrap()
                    ),
                    expected
                );
            }
        }
        let wanted = if s.wamid == promo {
            "16505550009"
        } else {
            "821011112222"
        };
        assert_eq!(s.customer.wa_id.as_deref(), Some(wanted));
    }
    // In orderly mode each message's statuses arrive in order.
    for w in &all {
        let order: Vec<String> = hook
            .statuses()
            .into_iter()
            .filter(|(id, _)| id == w)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(order, ["sent", "delivered", "read"]);
    }
    let stats = sim.stats().webhooks;
    assert_eq!(stats.statuses_posted, 18);
    assert_eq!((stats.posted_failed, stats.statuses_dropped), (0, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn chaos_duplicates_out_of_order_and_sent_before_the_answer() {
    let hook = Hook::start(0).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: StatusBehaviour {
            duplicate_fraction: 1.0,
            out_of_order_fraction: 1.0,
            sent_before_response_fraction: 1.0,
            // One POST at a time: arrival order is due order.
            max_in_flight: 1,
            ..fast_statuses()
        },
        ..one_number()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let mut sent = Vec::new();
    for i in 0..3 {
        let (s, v) = api
            .send(N1, T1, &template(&format!("1650555000{i}"), "t"))
            .await;
        assert_eq!(s, StatusCode::OK);
        let w = wamid(&v);
        // The daemon already had this wamid's `sent` when the 200 arrived.
        assert!(hook.has(&w, "sent"), "sent for {w} came after the answer");
        sent.push(w);
    }
    wait_until(Duration::from_secs(5), "every status twice", || {
        let st = hook.statuses();
        sent.iter().all(|w| {
            ["sent", "delivered", "read"]
                .iter()
                .all(|s| st.iter().filter(|(a, b)| a == w && b == s).count() == 2)
        })
    })
    .await;
    let st = hook.statuses();
    for w in &sent {
        let first = |s: &str| st.iter().position(|(a, b)| a == w && b == s).unwrap();
        assert!(first("read") < first("delivered"), "{w}: {st:?}");
        assert!(first("sent") < first("read"));
    }
    let stats = sim.stats().webhooks;
    assert_eq!(stats.sent_before_response, 3);
    assert_eq!(stats.statuses_posted, 18);
    sim.shutdown().await;
}

#[tokio::test]
async fn failures_retries_and_the_failed_status_window_mode() {
    // The daemon refuses the first two POSTs: they are retried.
    let hook = Hook::start(2).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: StatusBehaviour {
            fail_fraction: 1.0,
            max_in_flight: 1,
            ..fast_statuses()
        },
        window: WindowEnforcement::FailedStatus,
        ..one_number()
    })
    .await
    .unwrap();
    let api = Api::new(&sim);
    let (s, v) = api.send(N1, T1, &template("16505550001", "t")).await;
    assert_eq!(s, StatusCode::OK);
    let undeliverable = wamid(&v);
    // Outside the window in failed_status mode: accepted, then failed with 131047.
    let (s, v) = api.send(N1, T1, &text("16505550002", "hi")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let reengage = wamid(&v);
    wait_until(Duration::from_secs(5), "both failed", || {
        hook.has(&undeliverable, "failed") && hook.has(&reengage, "failed")
    })
    .await;
    assert_eq!(hook.failed.load(Ordering::SeqCst), 2);
    let events = hook.events();
    let errors_of = |w: &str| {
        events
            .iter()
            .find_map(|e| match e {
                Event::Status(s) if s.wamid == w && s.status == "failed" => Some(s.errors.clone()),
                _ => None,
            })
            .unwrap()
    };
    let e = errors_of(&undeliverable);
    assert_eq!(e[0].code, 131026);
    assert_eq!(e[0].title.as_deref(), Some("Message undeliverable"));
    assert!(e[0].details.is_some());
    assert_eq!(errors_of(&reengage)[0].code, 131047);
    assert!(!hook.has(&undeliverable, "delivered"));
    assert!(!hook.has(&reengage, "sent"));
    let stats = sim.stats().webhooks;
    assert!(stats.retries >= 2, "{stats:?}");
    assert_eq!(stats.posted_failed, 0);
    sim.shutdown().await;

    // A daemon that never answers 200: the POST is given up after the retries.
    let hook = Hook::start(usize::MAX).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: StatusBehaviour {
            retries: 2,
            read_fraction: 0.0,
            // Far from `sent`, so the two never share a POST.
            delivered_delay: DelayRange::fixed(Duration::from_millis(300)),
            ..fast_statuses()
        },
        ..one_number()
    })
    .await
    .unwrap();
    let (s, _) = Api::new(&sim).send(N1, T1, &template("1", "t")).await;
    assert_eq!(s, StatusCode::OK);
    wait_until(Duration::from_secs(5), "two POSTs given up", || {
        sim.stats().webhooks.posted_failed == 2
    })
    .await;
    // sent and delivered, three attempts each.
    assert_eq!(hook.failed.load(Ordering::SeqCst), 6);
    assert_eq!(sim.stats().webhooks.retries, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn due_statuses_share_a_post() {
    let hook = Hook::start(0).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: StatusBehaviour {
            sent_delay: DelayRange::fixed(Duration::from_millis(50)),
            read_fraction: 0.0,
            batch_linger: Duration::from_millis(100),
            max_batch: 4,
            ..fast_statuses()
        },
        ..cfg(vec![
            SimNumber::new(N1, D1, T1),
            SimNumber::new(N2, "15550000002", "tok-2"),
        ])
    })
    .await
    .unwrap();
    let api = Arc::new(Api::new(&sim));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let api = api.clone();
        let (n, t) = if i % 2 == 0 { (N1, T1) } else { (N2, "tok-2") };
        tasks.spawn(async move { api.send(n, t, &template(&format!("1{i}"), "t")).await.0 });
    }
    while let Some(s) = tasks.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    wait_until(Duration::from_secs(5), "20 statuses", || {
        hook.statuses().len() == 20
    })
    .await;
    let stats = sim.stats().webhooks;
    assert_eq!(stats.largest_batch, 4, "{stats:?}");
    assert!(stats.posted_ok < 20, "{stats:?}");
    // A POST holding both numbers has one change per number.
    let mixed = hook.posts().iter().any(|p| {
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        v["entry"][0]["changes"].as_array().unwrap().len() == 2
    });
    assert!(mixed);
    sim.shutdown().await;
}

fn has_script(text: &str, range: std::ops::RangeInclusive<char>) -> bool {
    text.chars().any(|c| range.contains(&c))
}

#[tokio::test]
async fn generated_inbound_traffic_parses_and_opens_windows() {
    let hook = Hook::start(0).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(hook.target()),
        statuses: fast_statuses(),
        ..cfg(vec![
            SimNumber::new(N1, D1, T1),
            SimNumber::new(N2, "15550000002", "tok-2"),
        ])
    })
    .await
    .unwrap();
    let report = sim
        .generate_inbound(300.0, Duration::from_millis(600), 12)
        .await
        .unwrap()
        .unwrap();
    assert!((150..=190).contains(&report.generated), "{report:?}");
    assert_eq!(report.posted_ok, report.generated, "{report:?}");
    assert_eq!(
        report.texts + report.images + report.documents + report.replies,
        report.generated
    );
    assert!(
        report.images > 0 && report.documents > 0 && report.replies > 0,
        "{report:?}"
    );

    let keys = AppKeys::new(&[("sim".into(), SECRET.as_bytes().to_vec())]);
    for post in hook.posts() {
        assert!(post.body.is_ascii());
        assert_eq!(
            verify(
                &keys,
                post.signature.as_deref().map(str::as_bytes),
                &post.body
            ),
            Ok(0)
        );
    }
    let mut messages: Vec<_> = hook
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => m,
            other => panic!("{other:?}"),
        })
        .collect();
    // Generation order (posts run concurrently, so arrival order may differ).
    let seq = |w: &str| w.rsplit('.').next().unwrap().parse::<u64>().unwrap();
    messages.sort_by_key(|m| seq(&m.wamid));
    assert_eq!(messages.len() as u64, report.generated);
    let texts: Vec<&str> = messages.iter().filter_map(|m| m.text.as_deref()).collect();
    assert!(
        texts.iter().any(|t| has_script(t, '\u{ac00}'..='\u{d7a3}')),
        "Korean"
    );
    assert!(
        texts.iter().any(|t| has_script(t, '\u{4e00}'..='\u{9fff}')),
        "Chinese"
    );
    assert!(
        texts
            .iter()
            .any(|t| has_script(t, '\u{1f300}'..='\u{1faff}')),
        "emoji"
    );
    let images: Vec<_> = messages.iter().filter(|m| m.kind == "image").collect();
    assert!(images.iter().all(|m| m.text.is_some() && m.media.is_some()));
    let documents: Vec<_> = messages.iter().filter(|m| m.kind == "document").collect();
    assert!(documents
        .iter()
        .all(|m| m.media.as_ref().unwrap().filename.is_some()));
    // Replies quote an earlier message of the same conversation.
    for m in messages.iter().filter(|m| m.context_id.is_some()) {
        let quoted = m.context_id.as_deref().unwrap();
        assert!(messages.iter().any(|e| e.wamid == quoted
            && e.customer.wa_id == m.customer.wa_id
            && e.number_id == m.number_id));
    }
    // Ad referrals: only on the first message of a (number, customer), even customers only.
    let mut seen = std::collections::HashSet::new();
    for m in &messages {
        let first = seen.insert((m.number_id.clone(), m.customer.wa_id.clone()));
        if m.referral.is_some() {
            assert!(first, "referral on a later message");
        }
    }
    assert_eq!(
        report.referrals,
        messages.iter().filter(|m| m.referral.is_some()).count() as u64
    );
    assert!(report.referrals > 0);

    // A generated customer's window is open: free-form replies are accepted.
    let api = Api::new(&sim);
    let m = &messages[0];
    let (number, token) = if m.number_id == N1 {
        (N1, T1)
    } else {
        (N2, "tok-2")
    };
    let to = m.customer.wa_id.clone().unwrap();
    let (s, v) = api.send(number, token, &text(&to, "thanks!")).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // One message on demand, and over HTTP.
    let id = sim
        .send_inbound(N1, "+4915112345678", "Hallo! 👋")
        .await
        .unwrap();
    let found = hook.events().into_iter().any(|e| {
        matches!(e, Event::Message(m) if m.wamid == id && m.text.as_deref() == Some("Hallo! 👋"))
    });
    assert!(found);
    let (s, _) = api.send(N1, T1, &text("4915112345678", "Hi!")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .post(
            "/sim/inbound",
            None,
            &json!({"number": N2, "customer": "447700900123", "text": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["id"].as_str().unwrap().starts_with("wamid.SIMIN"));
    let inbound = sim.stats().inbound;
    assert_eq!(inbound.generated, report.generated + 2);
    assert_eq!(inbound.posted_ok, inbound.generated);
    sim.shutdown().await;
}

#[tokio::test]
async fn inbound_needs_a_webhook_target() {
    let sim = Simulator::start(one_number()).await.unwrap();
    assert!(matches!(
        sim.send_inbound(N1, "1", "x").await,
        Err(SimError::NoWebhookTarget)
    ));
    assert!(matches!(
        sim.generate_inbound(1.0, Duration::from_millis(10), 1)
            .await
            .unwrap(),
        Err(SimError::NoWebhookTarget)
    ));
    sim.shutdown().await;
    assert!(matches!(
        Simulator::start(SimConfig {
            faults: Faults {
                hang_fraction: -1.0,
                ..Faults::default()
            },
            ..one_number()
        })
        .await,
        Err(SimError::Config(_))
    ));
}

#[tokio::test]
async fn a_webhook_target_can_be_replaced_at_runtime() {
    let first = Hook::start(0).await;
    let second = Hook::start(0).await;
    let sim = Simulator::start(SimConfig {
        webhook: Some(first.target()),
        statuses: fast_statuses(),
        ..one_number()
    })
    .await
    .unwrap();
    sim.set_webhook(second.target()).unwrap();
    sim.send_inbound(N1, "821011112222", "안녕").await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the inbound at the new target",
        || !second.posts().is_empty(),
    )
    .await;
    assert!(first.posts().is_empty());
    sim.shutdown().await;

    let bare = Simulator::start(one_number()).await.unwrap();
    assert!(matches!(
        bare.set_webhook(second.target()),
        Err(SimError::NoWebhookTarget)
    ));
    bare.shutdown().await;
}
