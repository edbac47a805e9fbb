//! Config reload without a restart: SIGHUP and `switchboard reload`.
//!
//! Proven against the real daemon: after the config file changes and the
//! daemon gets SIGHUP, the new app secret is accepted and the old one
//! refused; a number's new send ceiling shows in `GET /api/v1/numbers`; a
//! number added to the file is managed (its webhooks are routed, it can
//! send); the sensitive-word list is read again; a new TLS handshake gets the
//! new certificate while a connection opened before keeps its own and keeps
//! working; a webhook in flight across the reload completes under the
//! settings it started with; a changed restart-only key is reported and
//! ignored. A broken
//! config (through `switchboard reload`) is rejected naming file, line and
//! key, changes nothing, and shows in the metrics; fixing it and reloading
//! again works, and a number removed from the file is no longer managed
//! (its webhooks are unrouted).

use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use switchboard::http::tls::{client_config, load_ca, load_or_generate, ALPN_HTTP11};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const NUMBER: &str = "100000000000001";
const ADDED: &str = "300000000000003";
const NEW_SECRET: &str = "rotated_app_secret";

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// One HTTP/1.1 request on a raw (kept-alive) TLS stream; the status line.
async fn healthz_on(stream: &mut Tls) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is small and ends with its JSON body.
    while !got.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

/// A TLS handshake with the daemon trusting only `ca`: the leaf it presented.
async fn handshake(d: &Daemon, ca: &std::path::Path) -> Result<Vec<u8>, std::io::Error> {
    let tls = client_config(&load_ca(ca).unwrap(), &[ALPN_HTTP11]).unwrap();
    let tcp = TcpStream::connect(d.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(leaf(&stream))
}

fn leaf(stream: &Tls) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn ceiling(d: &Daemon, number: &str) -> Option<f64> {
    let v = d.get_ok("/api/v1/numbers").await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["phone_number_id"] == number)
        .map(|n| n["sending"]["ceiling_per_second"].as_f64().unwrap())
}

async fn paused(d: &Daemon, number: &str) -> bool {
    let v = d.get_ok("/api/v1/numbers").await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["phone_number_id"] == number)
        .unwrap()["sending"]["paused"]
        .as_bool()
        .unwrap()
}

async fn reloads(d: &Daemon, result: &str) -> f64 {
    d.metric("switchboard_config_reloads_total", &[("result", result)])
        .await
}

/// An outbound text with `text`: the refusal code (all of these are refused:
/// the customer never wrote, so the window is closed).
async fn refusal(d: &Daemon, text: &str) -> String {
    let (status, v) = d
        .api_post(
            "/api/v1/messages",
            &json!({"number_id": NUMBER, "to": "15557770001", "type": "text", "text": text}),
        )
        .await;
    assert!(status.is_client_error(), "{status}: {v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

/// `switchboard reload --config switchboard.toml` in the daemon's directory.
async fn reload_command(d: &Daemon) -> (i32, String) {
    let dir = d.dir().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["reload", "--config", "switchboard.toml", "--timeout", "30s"])
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config:\n{text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_secrets_numbers_terms_and_certificate_and_a_bad_config_changes_nothing() {
    let mut d = Daemon::start_with(Options {
        send_ceiling: Some(5.0),
        extra_config: "[outbound]\nfilter_file = \"terms.txt\"\nfilter_reload_interval = \"1h\"\n"
            .into(),
        files: vec![("terms.txt".into(), "free\n".into())],
        ..Default::default()
    })
    .await;
    let cfg = d.config_path();
    let old_ca = d.data_dir().join("tls/ca.pem");
    assert_eq!(reloads(&d, "ok").await, 0.0);
    assert_eq!(
        d.metric("switchboard_config_last_reload_success", &[])
            .await,
        1.0
    );

    // Before: the old secret works, ceilings are 5, "winner" may be sent
    // (refused for the window only), the added number is not managed.
    let t = 1_768_000_000;
    d.post_ok(&text_body(NUMBER, "15557770002", "wamid.RELOAD.1", t, "hi"))
        .await;
    assert_eq!(ceiling(&d, NUMBER).await, Some(5.0));
    assert_eq!(ceiling(&d, ADDED).await, None);
    assert_eq!(refusal(&d, "you are a winner").await, "window_closed");
    assert_eq!(refusal(&d, "free gift").await, "blocked_term");
    // A connection opened before the reload.
    let mut held = d.tls_stream().await;
    let held_leaf = leaf(&held);
    assert!(healthz_on(&mut held).await.contains("200"));
    // A webhook in flight across the reload: headers and half its body
    // now, signed with the old secret; the rest after the reload.
    let mut in_flight = d.tls_stream().await;
    let slow = text_body(
        NUMBER,
        "15557770002",
        "wamid.RELOAD.SLOW",
        t + 5,
        "in flight",
    );
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-hub-signature-256: {}\r\n\r\n",
        slow.len(),
        switchboard::whatsapp::sign(APP_SECRET.as_bytes(), &slow)
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&slow[..slow.len() / 2]).await.unwrap();
    in_flight.flush().await.unwrap();

    // The new config: rotated secret, new ceiling, an added number, a new
    // term, a certificate from another CA, and a restart-only change.
    let other = tempfile::tempdir().unwrap();
    let cert = load_or_generate(None, other.path(), &[]).unwrap();
    let new_ca = cert.ca_pem.clone().unwrap();
    edit(
        &cfg,
        &format!("app_secret = \"{APP_SECRET}\""),
        &format!("app_secret = \"{NEW_SECRET}\""),
    );
    edit(
        &cfg,
        &format!(
            "access_token = \"{}\"\nmax_per_second = 5\n",
            token_for(NUMBER)
        ),
        &format!(
            "access_token = \"{}\"\nmax_per_second = 12\n",
            token_for(NUMBER)
        ),
    );
    edit(
        &cfg,
        "[server]\n",
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert.cert_path.display().to_string(),
            cert.key_path.display().to_string()
        ),
    );
    edit(
        &cfg,
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"7s\"",
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[[numbers]]\nphone_number_id = \"{ADDED}\"\ndisplay_phone_number = \"15550300003\"\napp = \"main\"\naccess_token = \"tok\"\nmax_per_second = 3\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(d.dir().join("terms.txt"), "free\nwinner\n").unwrap();

    d.sighup();
    eventually("the reload to succeed", Duration::from_secs(20), || async {
        (reloads(&d, "ok").await == 1.0).then_some(())
    })
    .await;

    // Secrets: the new one is accepted, the old one refused.
    let body = text_body(NUMBER, "15557770002", "wamid.RELOAD.2", t + 1, "after");
    assert_eq!(d.post_signed(NEW_SECRET, &body).await, StatusCode::OK);
    let body = text_body(NUMBER, "15557770002", "wamid.RELOAD.3", t + 2, "old");
    assert_eq!(
        d.post_signed(APP_SECRET, &body).await,
        StatusCode::UNAUTHORIZED
    );
    // Numbers: the new ceiling, the added number managed and sending.
    assert_eq!(ceiling(&d, NUMBER).await, Some(12.0));
    assert_eq!(ceiling(&d, "100000000000002").await, Some(5.0));
    assert_eq!(ceiling(&d, ADDED).await, Some(3.0));
    let body = text_body(ADDED, "15557770003", "wamid.RELOAD.4", t + 3, "new number");
    assert_eq!(d.post_signed(NEW_SECRET, &body).await, StatusCode::OK);
    let convs = d
        .get_ok(&format!("/api/v1/conversations?number={ADDED}"))
        .await;
    assert_eq!(convs["items"].as_array().unwrap().len(), 1, "{convs}");
    // The sensitive-word list was read again.
    assert_eq!(refusal(&d, "you are a winner").await, "blocked_term");
    // TLS: new handshakes get the new certificate...
    let new_leaf = handshake(&d, &new_ca)
        .await
        .expect("handshake trusting the new CA");
    assert_ne!(new_leaf, held_leaf);
    assert!(
        handshake(&d, &old_ca).await.is_err(),
        "a client trusting only the old CA must now fail"
    );
    // ...and the connection opened before keeps its own and keeps working.
    assert!(healthz_on(&mut held).await.contains("200"));
    assert_eq!(leaf(&held), held_leaf);
    // The webhook that was in flight finishes under the settings it
    // started with: acknowledged although its secret is no longer valid.
    in_flight.write_all(&slow[slow.len() / 2..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), in_flight.read(&mut buf))
            .await
            .expect("an answer to the webhook in flight")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    d.get_ok(&format!("/api/v1/messages/{}", enc("wamid.RELOAD.SLOW")))
        .await;
    // The restart-only change is reported, and ignored.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains("server.shutdown_timeout")),
        "{log}"
    );
    let status: Value =
        serde_json::from_slice(&std::fs::read(d.data_dir().join("reload-status.json")).unwrap())
            .unwrap();
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["needs_restart"], json!(["server.shutdown_timeout"]));

    // A broken config, through `switchboard reload`: rejected with file,
    // line and key; nothing changes.
    edit(
        &cfg,
        &format!(
            "phone_number_id = \"{ADDED}\"\ndisplay_phone_number = \"15550300003\"\napp = \"main\""
        ),
        &format!(
            "phone_number_id = \"{ADDED}\"\ndisplay_phone_number = \"15550300003\"\napp = \"nope\""
        ),
    );
    edit(&cfg, "max_per_second = 12\n", "max_per_second = 20\n");
    let (code, out) = reload_command(&d).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REJECTED"), "{out}");
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l == "app = \"nope\"")
        .unwrap()
        + 1;
    assert!(
        out.contains(&format!("switchboard.toml:{line}: numbers[9].app")),
        "the problem must name file, line and key:\n{out}"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("config reload rejected") && l.contains("numbers[9].app")),
        "no log line for the rejected reload"
    );
    assert_eq!(reloads(&d, "error").await, 1.0);
    assert_eq!(
        d.metric("switchboard_config_last_reload_success", &[])
            .await,
        0.0
    );
    let body = text_body(NUMBER, "15557770002", "wamid.RELOAD.5", t + 4, "still");
    assert_eq!(d.post_signed(NEW_SECRET, &body).await, StatusCode::OK);
    assert_eq!(ceiling(&d, NUMBER).await, Some(12.0));
    assert_eq!(ceiling(&d, ADDED).await, Some(3.0));
    assert_eq!(new_leaf, handshake(&d, &new_ca).await.unwrap());

    // Fixed (and a number removed): the command reports success, the
    // metric recovers, the ceiling the broken config would have changed
    // now changes, and the removed number is no longer managed.
    edit(&cfg, "app = \"nope\"", "app = \"main\"");
    let removed = "100000000000002";
    edit(
        &cfg,
        &format!(
            "[[numbers]]\nphone_number_id = \"{removed}\"\ndisplay_phone_number = \"15550100002\"\napp = \"main\"\naccess_token = \"{}\"\nmax_per_second = 5\n",
            token_for(removed)
        ),
        "",
    );
    let (code, out) = reload_command(&d).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reloaded"), "{out}");
    assert!(out.contains("send limits changed"), "{out}");
    assert!(
        out.contains(&format!("numbers removed: {removed}")),
        "{out}"
    );
    assert_eq!(ceiling(&d, NUMBER).await, Some(20.0));
    assert_eq!(ceiling(&d, removed).await, None);
    let unrouted = d.metric("switchboard_unrouted_updates_total", &[]).await;
    let body = text_body(removed, "15557770004", "wamid.RELOAD.6", t + 6, "gone");
    assert_eq!(d.post_signed(NEW_SECRET, &body).await, StatusCode::OK);
    assert_eq!(
        d.metric("switchboard_unrouted_updates_total", &[]).await,
        unrouted + 1.0
    );
    assert_eq!(reloads(&d, "ok").await, 2.0);
    assert_eq!(
        d.metric("switchboard_config_last_reload_success", &[])
            .await,
        1.0
    );
    assert!(d.running());
    assert!(!d.log().contains("panicked"));
}

/// A rotated access token: the platform refuses the old one (190, the number
/// pauses); after the config names the new token and the daemon reloads, a
/// resume sends the waiting message with the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_access_token_is_used_by_the_next_send() {
    use switchboard::sim::graph::{SimConfig, SimNumber, Simulator, WindowEnforcement};
    const ROTATED: &str = "token-rotated-by-the-platform";
    let sim = Simulator::start(SimConfig {
        numbers: vec![SimNumber::new(NUMBER, "15550100001", ROTATED)],
        window: WindowEnforcement::Off,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = Daemon::start_with(Options {
        send_ceiling: Some(10.0),
        extra_config: format!("[whatsapp]\ngraph_api_base = {:?}\n", sim.base_url()),
        ..Default::default()
    })
    .await;
    let customer = "15557770009";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    d.post_ok(&text_body(NUMBER, customer, "wamid.TOKEN.1", now, "hello"))
        .await;
    let (status, v) = d
        .api_post(
            "/api/v1/messages",
            &json!({"number_id": NUMBER, "to": customer, "type": "text", "text": "hi there"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    eventually(
        "the old token refused and the number paused",
        Duration::from_secs(20),
        || async { paused(&d, NUMBER).await.then_some(()) },
    )
    .await;
    assert!(sim.sends().is_empty());

    edit(
        &d.config_path(),
        &format!("access_token = \"{}\"", token_for(NUMBER)),
        &format!("access_token = \"{ROTATED}\""),
    );
    d.sighup();
    eventually("the reload", Duration::from_secs(20), || async {
        (reloads(&d, "ok").await == 1.0).then_some(())
    })
    .await;
    let (status, v) = d
        .api_post(&format!("/api/v1/numbers/{NUMBER}/resume"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let sent = eventually(
        "the send with the new token",
        Duration::from_secs(20),
        || async {
            let sends = sim.sends();
            (!sends.is_empty()).then_some(sends)
        },
    )
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].recipient, customer);
    assert!(!paused(&d, NUMBER).await);
    let status: Value =
        serde_json::from_slice(&std::fs::read(d.data_dir().join("reload-status.json")).unwrap())
            .unwrap();
    assert_eq!(
        status["changes"],
        json!([format!("access tokens changed: {NUMBER}")]),
        "{status}"
    );
}
