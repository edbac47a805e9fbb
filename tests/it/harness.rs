//! The integration harness: runs the real `switchboard` binary as a child
//! process on 127.0.0.1:0 with real TLS, a real sled store and journal on
//! disk, and talks to it over HTTPS like Meta and API clients do.
//!
//! Waits are always on a condition with a deadline, never a bare sleep.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use switchboard::http::tls::{client_config, load_ca, ALPN_HTTP11};
use switchboard::sim::client::HttpsClient;
use tempfile::TempDir;

pub const APP_SECRET: &str = "test_app_secret";
pub const VERIFY_TOKEN: &str = "verify-me";
pub const ADMIN_TOKEN: &str = "swb_integration_admin_token_5a1f";
/// A phone_number_id no test config manages.
pub const UNMANAGED: &str = "199999999999999";
/// Every phone_number_id of the fixtures the test config manages, with its
/// display number (743897493242 and 109999999999999 stay unmanaged: the
/// first shares a display number, the second tests unrouted calls).
pub const MANAGED: &[(&str, &str)] = &[
    ("100000000000001", "15550100001"),
    ("100000000000002", "15550100002"),
    ("106540352242922", "15550783881"),
    ("1111111111111", "1111111111111"),
    ("1122334455667", "972123456789"),
    ("123456123", "16505551111"),
    ("37489742", "16315553602"),
    ("409552778964973", "43330585569"),
    ("5483758353", "16315553601"),
];

const START_DEADLINE: Duration = Duration::from_secs(60);

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp")
}

/// The exact bytes of a fixture file.
pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// One named body of a pywa fixture file (each key holds a whole body).
pub fn pywa(file: &str, key: &str) -> Vec<u8> {
    let all: Value = serde_json::from_slice(&fixture(&format!("david-lev__pywa/{file}"))).unwrap();
    serde_json::to_vec(&all[key]).unwrap_or_else(|_| panic!("pywa {file}#{key}"))
}

/// The access token the test config gives a managed number.
pub fn token_for(number: &str) -> String {
    format!("token-{number}")
}

/// Poll `check` until it returns Some, or panic after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settings a test can change; everything else is the test default.
#[derive(Clone)]
pub struct Options {
    pub shards: usize,
    pub shard_queue: usize,
    pub checkpoint_interval: &'static str,
    pub journal_segment_bytes: u64,
    pub max_body_bytes: usize,
    pub body_read_timeout: &'static str,
    /// Extra `[[apps]]` (name, secret) besides "main".
    pub extra_apps: Vec<(&'static str, &'static str)>,
    /// Give every managed number an access token (`token-<id>`) and this send ceiling.
    pub send_ceiling: Option<f64>,
    /// Appended to the config: e.g. `[whatsapp]` and `[outbound]` sections.
    pub extra_config: String,
    pub max_connections: usize,
    pub tls_handshake_timeout: &'static str,
    pub header_read_timeout: &'static str,
    pub idle_timeout: &'static str,
    /// `storage.data_dir`; `None` is `data` inside the test's directory.
    pub data_dir: Option<PathBuf>,
    /// Extra environment for the daemon process (e.g. LD_PRELOAD).
    pub env: Vec<(String, String)>,
    /// Files written next to the config before the daemon starts (name, content).
    pub files: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 2,
            shard_queue: 65536,
            checkpoint_interval: "1h",
            journal_segment_bytes: 1 << 20,
            // Small records so 1 MiB journal segments rotate under test load.
            max_body_bytes: 64 << 10,
            body_read_timeout: "30s",
            extra_apps: Vec::new(),
            send_ceiling: None,
            extra_config: String::new(),
            max_connections: 10_000,
            tls_handshake_timeout: "10s",
            header_read_timeout: "10s",
            idle_timeout: "120s",
            data_dir: None,
            env: Vec::new(),
            files: Vec::new(),
        }
    }
}

fn write_config(dir: &Path, o: &Options) -> PathBuf {
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    for (name, content) in &o.files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let mut cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}
body_read_timeout = "{body_timeout}"
shutdown_timeout = "5s"
max_connections = {max_conn}
tls_handshake_timeout = "{handshake}"
header_read_timeout = "{header}"
idle_timeout = "{idle}"
[storage]
data_dir = {data_dir}
checkpoint_interval = "{checkpoint}"
journal_segment_bytes = {segment}
max_record_bytes = {max_record}
[pipeline]
shards = {shards}
shard_queue = {queue}
pin_threads = false
[metrics]
listen = "127.0.0.1:0"
[auth]
admin_token_file = "admin.token"
[logging]
level = "info,switchboard=debug"
[[apps]]
name = "main"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
"#,
        max_body = o.max_body_bytes,
        body_timeout = o.body_read_timeout,
        max_record = o.max_body_bytes.max(64 << 10),
        checkpoint = o.checkpoint_interval,
        segment = o.journal_segment_bytes,
        shards = o.shards,
        queue = o.shard_queue,
        max_conn = o.max_connections,
        handshake = o.tls_handshake_timeout,
        header = o.header_read_timeout,
        idle = o.idle_timeout,
        // A TOML basic string: JSON escaping is a subset that TOML accepts.
        data_dir = serde_json::Value::from(
            o.data_dir
                .as_deref()
                .map_or("data".into(), |p| p.display().to_string())
        ),
    );
    for (name, secret) in &o.extra_apps {
        cfg.push_str(&format!(
            "[[apps]]\nname = \"{name}\"\napp_secret = \"{secret}\"\nverify_token = \"{name}-verify\"\n"
        ));
    }
    for (id, display) in MANAGED {
        cfg.push_str(&format!(
            "[[numbers]]\nphone_number_id = \"{id}\"\ndisplay_phone_number = \"{display}\"\napp = \"main\"\n"
        ));
        if let Some(ceiling) = o.send_ceiling {
            cfg.push_str(&format!(
                "access_token = \"{}\"\nmax_per_second = {ceiling}\n",
                token_for(id)
            ));
        }
    }
    cfg.push_str(&o.extra_config);
    let path = dir.join("switchboard.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

pub struct Daemon {
    pub tmp: TempDir,
    opts: Options,
    child: Option<Child>,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    client: HttpsClient,
    metrics_client: HttpsClient,
}

struct Started {
    child: Child,
    https: SocketAddr,
    metrics: SocketAddr,
    ca: PathBuf,
}

fn spawn(dir: &Path, opts: &Options) -> Started {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config", "switchboard.toml"])
        .current_dir(dir)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start switchboard");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + START_DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            let status = child.try_wait().ok().flatten();
            panic!("no listening line ({e}; exit status {status:?}); log:\n{log}")
        });
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["event"] == "listening" {
            return Started {
                child,
                https: v["https"].as_str().unwrap().parse().unwrap(),
                metrics: v["metrics"].as_str().unwrap().parse().unwrap(),
                ca: dir.join(v["ca"].as_str().unwrap()),
            };
        }
    }
}

fn https_client(addr: SocketAddr, ca: &Path) -> HttpsClient {
    let roots = load_ca(ca).unwrap();
    let tls = client_config(&roots, &[ALPN_HTTP11]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    HttpsClient::new(addr, Some((tls, name)), false).with_request_timeout(Duration::from_secs(30))
}

fn clients(s: &Started) -> (HttpsClient, HttpsClient) {
    (
        https_client(s.https, &s.ca),
        HttpsClient::new(s.metrics, None, false),
    )
}

impl Daemon {
    pub async fn start() -> Daemon {
        Daemon::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        write_config(tmp.path(), &opts);
        let started = spawn(tmp.path(), &opts);
        let (client, metrics_client) = clients(&started);
        let d = Daemon {
            tmp,
            opts,
            child: Some(started.child),
            https: started.https,
            metrics: started.metrics,
            client,
            metrics_client,
        };
        d.wait_ready().await;
        d
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.opts
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir().join("data"))
    }

    /// A raw TLS connection to the HTTPS listener, for hand-written requests.
    pub async fn tls_stream(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let ca = self.data_dir().join("tls/ca.pem");
        let tls = client_config(&load_ca(&ca).unwrap(), &[ALPN_HTTP11]).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// An independent signed-webhook poster (its own connections), for
    /// tasks that keep posting while the test kills or stops the daemon.
    pub fn poster(&self) -> Poster {
        let client = https_client(self.https, &self.data_dir().join("tls/ca.pem"));
        Poster {
            client: std::sync::Arc::new(client.with_request_timeout(Duration::from_secs(10))),
        }
    }

    pub async fn wait_ready(&self) {
        eventually("readiness", START_DEADLINE, || async {
            match self
                .client
                .request(Method::GET, "/readyz", &[], Bytes::new())
                .await
            {
                Ok((StatusCode::OK, _, _)) => Some(()),
                _ => None,
            }
        })
        .await
    }

    /// Start again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon before restarting it");
        let started = spawn(self.tmp.path(), &self.opts);
        let (client, metrics_client) = clients(&started);
        self.child = Some(started.child);
        self.https = started.https;
        self.metrics = started.metrics;
        self.client = client;
        self.metrics_client = metrics_client;
        self.wait_ready().await;
    }

    /// True while the daemon process has not exited.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("wait on the daemon").is_none(),
            None => false,
        }
    }

    /// POST a signed body and return everything of the answer.
    pub async fn post_raw(&self, body: &[u8]) -> (StatusCode, HeaderMap, Value) {
        let sig = switchboard::whatsapp::sign(APP_SECRET.as_bytes(), body);
        let (status, headers, bytes) = self
            .raw(
                Method::POST,
                "/webhooks/whatsapp",
                &[
                    ("x-hub-signature-256", &sig),
                    ("content-type", "application/json"),
                ],
                body.to_vec(),
            )
            .await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, v)
    }

    /// The status of `GET /readyz`.
    pub async fn readyz(&self) -> StatusCode {
        self.raw(Method::GET, "/readyz", &[], Bytes::new()).await.0
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Ask the daemon to reload its config.
    pub fn sighup(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a real pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("switchboard.toml")
    }

    /// POST a body signed with `secret`; the status.
    pub async fn post_signed(&self, secret: &str, body: &[u8]) -> StatusCode {
        let sig = switchboard::whatsapp::sign(secret.as_bytes(), body);
        self.raw(
            Method::POST,
            "/webhooks/whatsapp",
            &[
                ("x-hub-signature-256", &sig),
                ("content-type", "application/json"),
            ],
            body.to_vec(),
        )
        .await
        .0
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        sigterm(c.id());
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "daemon did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("daemon.log")).unwrap_or_default()
    }

    /// POST a body signed with the main app's secret.
    pub async fn post(&self, body: &[u8]) -> (StatusCode, Value) {
        let sig = switchboard::whatsapp::sign(APP_SECRET.as_bytes(), body);
        let (status, _, bytes) = self
            .raw(
                Method::POST,
                "/webhooks/whatsapp",
                &[
                    ("x-hub-signature-256", &sig),
                    ("content-type", "application/json"),
                ],
                body.to_vec(),
            )
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POST and insist on 200.
    pub async fn post_ok(&self, body: &[u8]) -> Value {
        let (status, v) = self.post(body).await;
        assert_eq!(status, StatusCode::OK, "webhook answered {status}: {v}");
        v
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        self.client
            .request(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// POST JSON to an API path with the admin token.
    pub async fn api_post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, _, bytes) = self
            .raw(
                Method::POST,
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                serde_json::to_vec(body).unwrap(),
            )
            .await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    /// The CA that signed the daemon's self-signed certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("tls/ca.pem")
    }

    /// GET an API path with the admin token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, _, bytes) = self
            .raw(Method::GET, path, &[("authorization", &auth)], Bytes::new())
            .await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"));
        (status, v)
    }

    /// GET and insist on 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, v) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Follow `next_cursor` and collect every item of a paginated list.
    pub async fn get_all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=200&cursor={c}"),
                None => format!("{path}{sep}limit=200"),
            };
            let page = self.get_ok(&url).await;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }

    /// Every message of every conversation.
    pub async fn all_messages(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for conv in self.get_all("/api/v1/conversations").await {
            let id = conv["id"].as_str().unwrap().to_string();
            out.extend(
                self.get_all(&format!("/api/v1/conversations/{id}/messages"))
                    .await,
            );
        }
        out
    }

    /// The Prometheus text exposition.
    pub async fn metrics_text(&self) -> String {
        let (status, _, body) = self
            .metrics_client
            .request(Method::GET, "/metrics", &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }
}

#[derive(Clone)]
pub struct Poster {
    client: std::sync::Arc<HttpsClient>,
}

impl Poster {
    /// Post signed; None when the daemon is gone (connection refused/reset).
    pub async fn post(&self, body: &[u8]) -> Option<StatusCode> {
        let sig = switchboard::whatsapp::sign(APP_SECRET.as_bytes(), body);
        let headers = [
            ("x-hub-signature-256", sig.as_str()),
            ("content-type", "application/json"),
        ];
        self.client
            .request(Method::POST, "/webhooks/whatsapp", &headers, body.to_vec())
            .await
            .ok()
            .map(|r| r.0)
    }
}

/// Send SIGTERM to a process.
pub fn sigterm(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a real pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- daemon.log (last lines) ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill9();
    }
}

/// A single text message from `customer` to `number` in Meta's wire style.
pub fn text_body(number: &str, customer: &str, wamid: &str, timestamp: i64, text: &str) -> Vec<u8> {
    let display = MANAGED
        .iter()
        .find(|(id, _)| *id == number)
        .map(|(_, d)| *d)
        .unwrap_or("15550000000");
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "900000000000001", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display, "phone_number_id": number},
            "contacts": [{"profile": {"name": format!("Customer {customer}")}, "wa_id": customer}],
            "messages": [{"from": customer, "id": wamid, "timestamp": timestamp.to_string(), "type": "text", "text": {"body": text}}]
        }}]}]
    }))
    .unwrap()
}

/// One status update in Meta's wire style.
pub fn status_body(
    number: &str,
    recipient: &str,
    wamid: &str,
    status: &str,
    timestamp: i64,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "900000000000001", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100001", "phone_number_id": number},
            "statuses": [{"id": wamid, "status": status, "timestamp": timestamp.to_string(), "recipient_id": recipient}]
        }}]}]
    }))
    .unwrap()
}

/// URL path segment encoding (wamids may hold '/', '+', '=').
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
