//! Start, stop and configuration from the operator's side: no-config start,
//! check-config, SIGTERM with work in flight.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use parking_lot::Mutex;

use crate::harness::*;

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn check_config_accepts_a_good_file_and_names_every_problem_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[apps]]\nname = \"main\"\napp_secret = \"s\"\nverify_token = \"v\"\n",
    )
    .unwrap();
    let out = switchboard()
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 app"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:8443\"\nbogus = 1\n\n[storage]\ndedupe_days = 3\n\n[[numbers]]\nphone_number_id = \"123\"\ndisplay_phone_number = \"456\"\napp = \"missing\"\n",
    )
    .unwrap();
    let out = switchboard()
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    assert!(err.contains(&format!("{name}:3: server.bogus")), "{err}");
    assert!(
        err.contains(&format!("{name}:6: storage.dedupe_days")),
        "{err}"
    );
    assert!(err.contains(&format!("{name}:11: numbers[0].app")), "{err}");
    // `serve` refuses the same file before binding anything.
    let out = switchboard()
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("numbers[0].app"));
}

#[tokio::test]
async fn serve_without_a_config_file_works_out_of_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = switchboard()
        .arg("serve")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let token_line = lines.next().unwrap().unwrap();
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    assert!(
        token_line.contains("admin API token") && token.starts_with("swb_"),
        "{token_line}"
    );
    let listening: serde_json::Value =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(listening["https"], "127.0.0.1:8443");
    assert_eq!(listening["metrics"], "127.0.0.1:9464");
    let data = dir.path().join("switchboard-data");
    for f in [
        "tls/ca.pem",
        "tls/cert.pem",
        "tls/key.pem",
        "admin_token.sha256",
    ] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    let hash = std::fs::read_to_string(data.join("admin_token.sha256")).unwrap();
    assert!(!hash.contains(&token), "only the token's hash is stored");
    let roots = switchboard::http::tls::load_ca(&data.join("tls/ca.pem")).unwrap();
    let tls =
        switchboard::http::tls::client_config(&roots, &[switchboard::http::tls::ALPN_H2]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = switchboard::sim::client::HttpsClient::new(
        "127.0.0.1:8443".parse().unwrap(),
        Some((tls, name)),
        true,
    );
    let auth = format!("Bearer {token}");
    eventually(
        "the default daemon to be ready",
        Duration::from_secs(60),
        || async {
            let r = client
                .request(
                    Method::GET,
                    "/api/v1/numbers",
                    &[("authorization", &auth)],
                    Vec::new(),
                )
                .await
                .ok()?;
            (r.0 == StatusCode::OK).then_some(())
        },
    )
    .await;
    sigterm(child.id());
    assert!(child.wait().unwrap().success(), "SIGTERM exits 0");
    // A second start keeps the token (nothing printed) and the certificate.
    let out = {
        let mut c = switchboard()
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let first = BufReader::new(c.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        sigterm(c.id());
        assert!(c.wait().unwrap().success());
        first
    };
    assert!(out.starts_with("{\"ca\""), "no second token: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_a_clean_stop_leaves_nothing_to_replay() {
    let mut d = Daemon::start().await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..4 {
        let poster = d.poster();
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let wamid = format!("wamid.TERM.{p}.{seq}");
                let body = text_body(
                    "100000000000001",
                    &format!("155540000{p}"),
                    &wamid,
                    1_768_000_000 + seq,
                    "x",
                );
                match poster.post(&body).await {
                    Some(StatusCode::OK) => acked.lock().push(wamid),
                    Some(_) => {}
                    None => break,
                }
            }
        }));
    }
    eventually("some traffic", Duration::from_secs(30), || {
        let n = acked.lock().len();
        async move { (n >= 100).then_some(()) }
    })
    .await;
    let status = d.terminate();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert!(d.log().contains("stopped cleanly"));
    d.restart().await;
    assert!(
        d.log().contains("replayed=0"),
        "a clean stop checkpoints everything"
    );
    let msgs = d.all_messages().await;
    let acked = acked.lock().clone();
    for w in &acked {
        assert!(msgs.iter().any(|m| m["wamid"] == w.as_str()), "{w} lost");
    }
}
