//! The outbound benchmark: the real daemon (a child process) sending through the Graph API
//! simulator (in this process) for many numbers, while a campaign backlog drains and agent
//! replies cut in front of it.
//!
//! What it measures:
//! - how fast the backlog is queued through the API (202 = durable in the outbox);
//! - the aggregate rate the platform accepts sends, sampled every second;
//! - queue-to-send latency of agent replies: from the start of their API call to the moment
//!   the simulator accepted them (both clocks are this machine's);
//! - rate-limit violations: throughput (130429) and pair-limit (131056) refusals, and the
//!   busiest second of any number, which must stay at or below its ceiling.
//!
//! The simulator posts no status webhooks here: at 10,000 sends/s they would be another
//! 20,000-30,000 webhook events per second for the same two cores, which is the ingest
//! benchmark's subject, not this one's. Agent customers' windows are opened by a signed
//! inbound webhook to the daemon and declared to the simulator.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use serde::Serialize;

use super::client::HttpsClient;
use super::graph::{SimConfig, SimHandle, SimNumber, Simulator, WindowEnforcement};
use super::load::{post_signed, tls_target, LoadError};

const SECRET: &str = "outbound-bench-secret";
const ADMIN_TOKEN: &str = "swb_outbound_bench_admin_token_0001";

/// What an outbound benchmark run does.
#[derive(Clone, Debug)]
pub struct OutboundLoadConfig {
    /// The `switchboard` binary to start.
    pub daemon: PathBuf,
    /// Config, data and logs of the run.
    pub work_dir: PathBuf,
    pub numbers: usize,
    /// Ceiling per number, in the daemon and in the simulator (known ceilings).
    pub per_second: f64,
    /// Campaign messages queued before and while sending.
    pub backlog: u64,
    /// API connections queueing the backlog.
    pub connections: usize,
    /// Messages per `POST /api/v1/messages/batch`.
    pub batch: usize,
    /// Customers with an open window that agents answer.
    pub agent_customers: usize,
    /// Agent replies per second while the backlog drains.
    pub agent_rate: f64,
    /// Agent replies start once this many campaign messages are queued.
    pub agents_after: u64,
    /// Pipeline shards (0: one per core).
    pub shards: usize,
    /// Give up after this long.
    pub deadline: Duration,
}

#[derive(Debug, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct OutboundReport {
    pub numbers: usize,
    pub per_second: f64,
    pub backlog: u64,
    /// Seconds to queue the whole backlog, and the rate.
    pub queue_seconds: f64,
    pub queued_per_second: f64,
    /// Seconds from the first 202 until the platform had accepted everything.
    pub drain_seconds: f64,
    /// Everything sent / drain_seconds.
    pub sent_per_second_overall: f64,
    /// Median of the per-second accepted counts, the first and last (partial) seconds
    /// left out. Sending starts with the first queued batch, so on a fast machine the
    /// drain keeps pace with the queueing and this covers both phases.
    pub sent_per_second_median: f64,
    pub sent_per_second_samples: Vec<u64>,
    pub agent_replies: LatencyMs,
    /// 130429 answers: zero once the ceilings are known.
    pub throttled: u64,
    pub pair_limited: u64,
    pub other_rejections: u64,
    /// The busiest 1-second window of any number.
    pub max_number_per_second: u64,
    pub daemon_peak_rss_bytes: Option<u64>,
    pub daemon_cpu_seconds: Option<f64>,
}

struct Running {
    child: Child,
    https: SocketAddr,
    ca: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn number_id(i: usize) -> String {
    format!("2{i:014}")
}

fn token(i: usize) -> String {
    format!("bench-token-{i}")
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_config(cfg: &OutboundLoadConfig, base_url: &str) -> Result<PathBuf, LoadError> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(io_err(&cfg.work_dir))?;
    let token_path = cfg.work_dir.join("admin.token");
    std::fs::write(&token_path, ADMIN_TOKEN).map_err(io_err(&token_path))?;
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\ndata_dir = \"data\"\n\
         [pipeline]\nshards = {shards}\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\nadmin_token_file = \"admin.token\"\n\
         [logging]\nlevel = \"warn\"\n\
         [whatsapp]\ngraph_api_base = \"{base_url}\"\n\
         [[apps]]\nname = \"main\"\napp_secret = \"{SECRET}\"\nverify_token = \"bench\"\n",
        shards = cfg.shards,
    );
    for i in 0..cfg.numbers {
        text.push_str(&format!(
            "[[numbers]]\nphone_number_id = \"{}\"\ndisplay_phone_number = \"1555{i:07}\"\n\
             app = \"main\"\naccess_token = \"{}\"\nmax_per_second = {}\n",
            number_id(i),
            token(i),
            cfg.per_second
        ));
    }
    let path = cfg.work_dir.join("switchboard.toml");
    std::fs::write(&path, text).map_err(io_err(&path))?;
    Ok(path)
}

fn start_daemon(cfg: &OutboundLoadConfig) -> Result<Running, LoadError> {
    let log_path = cfg.work_dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).map_err(io_err(&log_path))?;
    let mut child = Command::new(&cfg.daemon)
        .args(["serve", "--config", "switchboard.toml"])
        .current_dir(&cfg.work_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(io_err(&cfg.daemon))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| LoadError::Invalid("the daemon's standard output is not captured".into()))?;
    let mut running = Running {
        child,
        https: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca: PathBuf::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(io_err(&cfg.daemon))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] == "listening" {
            running.https = v["https"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| LoadError::Invalid(format!("listening line: {line}")))?;
            running.ca = cfg
                .work_dir
                .join(v["ca"].as_str().unwrap_or("data/tls/ca.pem"));
            return Ok(running);
        }
    }
    Err(LoadError::Invalid(format!(
        "the daemon exited before listening; see {}",
        log_path.display()
    )))
}

fn client(d: &Running) -> Result<HttpsClient, LoadError> {
    let (addr, tls) = tls_target(&d.https.to_string(), &d.ca, Some("localhost"), false)?;
    Ok(HttpsClient::new(addr, Some(tls), false).with_request_timeout(Duration::from_secs(60)))
}

async fn api_post(c: &HttpsClient, body: String) -> Result<StatusCode, LoadError> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, _) = c
        .request(
            Method::POST,
            "/api/v1/messages",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await?;
    Ok(status)
}

async fn wait_ready(c: &HttpsClient, deadline: Instant) -> Result<(), LoadError> {
    loop {
        if let Ok((StatusCode::OK, _, _)) = c.request(Method::GET, "/readyz", &[], "").await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadError::Invalid("the daemon did not become ready".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_customer(i: usize) -> String {
    format!("8299{i:08}")
}

/// Queues a message and insists on 202, retrying 503 (a full queue) after a pause.
async fn queue(c: &HttpsClient, body: String) -> Result<(), LoadError> {
    loop {
        match api_post(c, body.clone()).await? {
            StatusCode::ACCEPTED => return Ok(()),
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(20)).await,
            other => {
                return Err(LoadError::Invalid(format!(
                    "queueing answered {other}: {body}"
                )))
            }
        }
    }
}

/// Queues a batch and insists that every message in it was queued.
async fn queue_batch(c: &HttpsClient, body: String, count: u64) -> Result<(), LoadError> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    loop {
        let (status, _, answer) = c
            .request(
                Method::POST,
                "/api/v1/messages/batch",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.clone(),
            )
            .await?;
        match status {
            StatusCode::ACCEPTED => {
                let v: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|e| LoadError::Invalid(format!("batch answer: {e}")))?;
                let ok = v["items"].as_array().map_or(0, |items| {
                    items.iter().filter(|i| i["id"].is_string()).count()
                });
                if ok as u64 != count {
                    return Err(LoadError::Invalid(format!(
                        "{ok} of {count} queued: {}",
                        String::from_utf8_lossy(&answer)
                    )));
                }
                return Ok(());
            }
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(20)).await,
            other => {
                return Err(LoadError::Invalid(format!(
                    "batch answered {other}: {}",
                    String::from_utf8_lossy(&answer)
                )))
            }
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> LatencyMs {
    let ms = |v: u64| v as f64 / 1000.0;
    LatencyMs {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

fn proc_stats(pid: u32) -> (Option<u64>, Option<f64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let cpu = stat.rsplit_once(") ").and_then(|(_, rest)| {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    });
    (rss, cpu)
}

/// Runs the whole benchmark and reports.
pub async fn run(cfg: OutboundLoadConfig) -> Result<OutboundReport, LoadError> {
    if cfg.numbers == 0 || cfg.connections == 0 || cfg.agent_customers == 0 || cfg.agent_rate <= 0.0
    {
        return Err(LoadError::Invalid(
            "numbers, connections, agent customers and agent rate must be positive".into(),
        ));
    }
    let end = Instant::now() + cfg.deadline;
    let sim = Simulator::start(SimConfig {
        numbers: (0..cfg.numbers)
            .map(|i| SimNumber {
                max_per_second: cfg.per_second,
                ..SimNumber::new(&number_id(i), &format!("1555{i:07}"), &token(i))
            })
            .collect(),
        window: WindowEnforcement::Reject,
        record_limit: usize::try_from(cfg.backlog).unwrap_or(usize::MAX) + 1_000_000,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| LoadError::Invalid(format!("simulator: {e}")))?;
    write_config(&cfg, &sim.base_url())?;
    let daemon = start_daemon(&cfg)?;
    let api = Arc::new(client(&daemon)?);
    wait_ready(&api, end).await?;

    // Agent customers write first, so their windows are open.
    let now = unix_ms() / 1000;
    for i in 0..cfg.agent_customers {
        let number = number_id(i % cfg.numbers);
        let customer = agent_customer(i);
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555{:07}","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"C{i}"}},"wa_id":"{customer}"}}],"messages":[{{"from":"{customer}","id":"wamid.bench.in.{i}.{now}","timestamp":"{now}","type":"text","text":{{"body":"hi"}}}}]}}}}]}}]}}"#,
            i % cfg.numbers
        );
        let (status, answer) = post_signed(&api, SECRET.as_bytes(), Bytes::from(body)).await?;
        if status != StatusCode::OK {
            return Err(LoadError::Invalid(format!(
                "inbound webhook answered {status}: {answer:?}"
            )));
        }
        sim.declare_window(&number, &customer)
            .map_err(|e| LoadError::Invalid(format!("simulator: {e}")))?;
    }

    let queued = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut queuers = tokio::task::JoinSet::new();
    for _ in 0..cfg.connections {
        let c = client(&daemon)?;
        let (queued, next, cfg) = (queued.clone(), next.clone(), cfg.clone());
        queuers.spawn(async move {
            let batch = cfg.batch.max(1) as u64;
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= cfg.backlog {
                    return Ok::<(), LoadError>(());
                }
                let last = (first + batch).min(cfg.backlog);
                let mut body = String::from(r#"{"messages":["#);
                for k in first..last {
                    let n = (k % cfg.numbers as u64) as usize;
                    let to = format!("8277{:08}", k / cfg.numbers as u64);
                    if k > first {
                        body.push(',');
                    }
                    body.push_str(&format!(
                        r#"{{"number_id":"{}","to":"{to}","type":"template","priority":"campaign","template":{{"name":"spring_sale","language":"ko","category":"utility"}}}}"#,
                        number_id(n)
                    ));
                }
                body.push_str("]}");
                queue_batch(&c, body, last - first).await?;
                queued.fetch_add(last - first, Ordering::Relaxed);
            }
        });
    }

    // Agents reply while the backlog drains.
    let agent_sends: Arc<parking_lot::Mutex<Vec<(String, i64)>>> = Arc::default();
    let agents_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agents = {
        let (c, queued, cfg, sends, done) = (
            client(&daemon)?,
            queued.clone(),
            cfg.clone(),
            agent_sends.clone(),
            agents_done.clone(),
        );
        tokio::spawn(async move {
            while queued.load(Ordering::Relaxed) < cfg.agents_after.min(cfg.backlog) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.agent_rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let customer = agent_customer(i % cfg.agent_customers);
                let body = format!(
                    r#"{{"number_id":"{}","to":"{customer}","type":"text","priority":"agent","text":"네, 바로 확인해 드릴게요 ({i})"}}"#,
                    number_id((i % cfg.agent_customers) % cfg.numbers)
                );
                let at = unix_ms();
                queue(&c, body).await?;
                sends.lock().push((customer, at));
                i += 1;
            }
            Ok::<(), LoadError>(())
        })
    };

    // Sample the platform's accepted count every second until everything is sent.
    let mut samples = Vec::new();
    let mut last = 0u64;
    let mut queue_seconds = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let accepted = total_accepted(&sim);
        let delta = accepted - last;
        last = accepted;
        samples.push(delta);
        let all_queued = queued.load(Ordering::Relaxed) >= cfg.backlog;
        if all_queued && queue_seconds.is_none() {
            queue_seconds = Some(t0.elapsed().as_secs_f64());
        }
        if accepted >= cfg.backlog && all_queued {
            break;
        }
        if Instant::now() > end {
            return Err(LoadError::Invalid(format!(
                "deadline: {accepted} of {} accepted",
                cfg.backlog
            )));
        }
    }
    let drain_seconds = t0.elapsed().as_secs_f64();
    agents_done.store(true, Ordering::Relaxed);
    while let Some(r) = queuers.join_next().await {
        r.map_err(|e| LoadError::Join(e.to_string()))??;
    }
    agents.await.map_err(|e| LoadError::Join(e.to_string()))??;
    // The last agent replies go out within a few pacing slots.
    let agent_total = agent_sends.lock().len() as u64;
    while total_accepted(&sim) < cfg.backlog + agent_total && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss, cpu) = proc_stats(daemon.child.id());

    // Pair each agent reply with the platform's acceptance of it, in order per customer.
    let mut accepted_at: HashMap<String, Vec<i64>> = HashMap::new();
    for s in sim.sends() {
        if s.recipient.starts_with("8299") {
            accepted_at.entry(s.recipient).or_default().push(s.at_ms);
        }
    }
    let mut posted: HashMap<String, Vec<i64>> = HashMap::new();
    for (customer, at) in agent_sends.lock().iter() {
        posted.entry(customer.clone()).or_default().push(*at);
    }
    let mut agent_hist = Histogram::<u64>::new(3).map_err(|e| LoadError::Invalid(e.to_string()))?;
    for (customer, times) in &posted {
        let mut sent = accepted_at.get(customer).cloned().unwrap_or_default();
        sent.sort_unstable();
        for (at, done) in times.iter().zip(sent) {
            agent_hist
                .record(((done - at).max(0) as u64) * 1000)
                .map_err(|e| LoadError::Invalid(e.to_string()))?;
        }
    }

    let stats = sim.stats();
    let mut report = OutboundReport {
        numbers: cfg.numbers,
        per_second: cfg.per_second,
        backlog: cfg.backlog,
        queue_seconds: queue_seconds.unwrap_or(drain_seconds),
        queued_per_second: 0.0,
        drain_seconds,
        sent_per_second_overall: cfg.backlog as f64 / drain_seconds,
        sent_per_second_median: 0.0,
        sent_per_second_samples: samples,
        agent_replies: percentiles(&agent_hist),
        throttled: 0,
        pair_limited: 0,
        other_rejections: 0,
        max_number_per_second: 0,
        daemon_peak_rss_bytes: rss,
        daemon_cpu_seconds: cpu,
    };
    report.queued_per_second = cfg.backlog as f64 / report.queue_seconds;
    let mut steady = report.sent_per_second_samples.clone();
    if steady.len() > 2 {
        steady.pop();
        steady.remove(0);
    }
    steady.sort_unstable();
    report.sent_per_second_median = steady.get(steady.len() / 2).copied().unwrap_or(0) as f64;
    for n in stats.numbers.values() {
        report.throttled += n.throttled;
        report.pair_limited += n.pair_limited;
        report.other_rejections += n.rejected.values().sum::<u64>() - n.throttled - n.pair_limited;
        report.max_number_per_second = report.max_number_per_second.max(n.max_accepted_per_second);
    }
    drop(daemon);
    sim.shutdown().await;
    Ok(report)
}

fn total_accepted(sim: &SimHandle) -> u64 {
    sim.stats().numbers.values().map(|n| n.accepted).sum()
}
