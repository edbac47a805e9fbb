//! The Graph API simulator behind `switchboard-sim`: a real HTTP server that behaves like the
//! WhatsApp Cloud API's send endpoint (validation, tokens, throughput, pair limit, the
//! customer-service window, injected faults), posts status webhooks back to the daemon, and
//! generates inbound customer traffic. For tests, benchmarks and demos.
//!
//! Layout: [`config`] (what can be configured), [`api`] (validation and Meta's error shape),
//! `limits` (the rate rules as data structures), `webhooks` (status fates, batching, signed
//! posts with retries), `inbound` (the traffic generator), this file (state, HTTP routes and
//! the handle).
//!
//! Invariants:
//! - one lock (`Inner::state`) decides every send: the window, throughput and pair checks and
//!   their commits happen together, so concurrent sends can never overshoot a limit, and a
//!   refused send consumes no quota; the lock is never held across an await;
//! - every random choice comes from one generator seeded by `SimConfig::seed`; each Graph
//!   request draws the same number of values for its faults, so sequential clients see the
//!   same faults for the same seed;
//! - wamids are unique across runs (`wamid.SIM.<run id>.<n>`, inbound `wamid.SIMIN...`);
//! - every wait a request can be put into (latency, hangs, the early `sent` webhook) ends at
//!   shutdown, and the server's own shutdown bound covers the rest;
//! - control routes under `/sim/` need no token: the simulator is meant for loopback.

pub mod api;
pub mod config;
mod inbound;
mod limits;
mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

pub use api::GraphError;
pub use config::{
    DelayRange, Faults, SimConfig, SimNumber, StatusBehaviour, WebhookTarget, WindowEnforcement,
};
pub use inbound::{InboundReport, InboundStats};
pub use webhooks::{meta_wire, WebhookStats};

use api::{Outgoing, Parsed, Recipient, ServerFault};
use inbound::Customers;
use limits::{PairLimit, PeakMeter, SlidingLimit, WindowBook, SERVICE_WINDOW_MS};
use webhooks::{Plan, Pricing, StatusItem, StatusKind, Webhooks};

use crate::http::server::{full, serve_with, Body, Limits, ServeReport, Transport};
use crate::sim::client::ClientError;
use crate::sim::load::{new_run_id, SplitMix};

/// The Graph API version [`SimHandle::base_url`] names (any `vNN.N` is served).
pub const GRAPH_VERSION: &str = "v23.0";
/// Largest request body read.
const MAX_BODY: usize = 1024 * 1024;
/// Bound on reading one request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the simulator could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator config: {0}")]
    Config(String),
    // The I/O error is part of the message, not a `source`, so error chains do not print it
    // twice.
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("listening on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("webhook TLS: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    #[error("unknown number {0:?}")]
    UnknownNumber(String),
    #[error("invalid customer {0:?} (expected digits or a business-scoped user id)")]
    InvalidCustomer(String),
    #[error("no webhook target is configured")]
    NoWebhookTarget,
    #[error("the webhook target answered HTTP {0}")]
    WebhookStatus(u16),
    #[error("posting a webhook: {0}")]
    Client(#[from] ClientError),
    #[error("the simulator is shutting down")]
    Stopped,
}

// ---------------------------------------------------------------------------
// Randomness and clocks

/// The simulator's seeded generator.
pub(crate) struct Rng(SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n.max(1))
    }

    /// Uniform in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (always draws, so the sequence does not depend on `p`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in the range.
    pub fn delay(&mut self, r: DelayRange) -> Duration {
        let span = r.max.saturating_sub(r.min);
        r.min + span.mul_f64(self.unit())
    }
}

/// Wall-clock Unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resolves once `stop` says true, or when its sender is gone.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The window key of a customer named by a control request or [`SimHandle`] call.
pub(crate) fn customer_key(customer: &str) -> Result<String, SimError> {
    Recipient::parse(customer)
        .map(|r| r.key().to_owned())
        .ok_or_else(|| SimError::InvalidCustomer(customer.to_owned()))
}

// ---------------------------------------------------------------------------
// State and stats

/// One accepted send, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    pub number: String,
    /// Normalised recipient: digits, or a business-scoped user id.
    pub recipient: String,
    /// Unix milliseconds when it was accepted.
    pub at_ms: i64,
    /// The message `type`.
    pub kind: String,
    pub template: Option<String>,
    pub wamid: String,
}

/// Per-number counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NumberStats {
    pub accepted: u64,
    /// Every refusal by error code (100, 190, 1, 2, 130429, 131047, 131056).
    pub rejected: BTreeMap<i64, u64>,
    /// The most sends accepted in any sliding 1-second window (exact).
    pub max_accepted_per_second: u64,
    /// 130429 refusals.
    pub throttled: u64,
    /// 131056 refusals.
    pub pair_limited: u64,
    /// 131047 refusals (sync; `failed_status` mode accepts and reports by webhook).
    pub outside_window: u64,
    /// 190 refusals (wrong or expired token).
    pub token_errors: u64,
    /// Injected 5xx answers.
    pub server_errors: u64,
    pub marked_read: u64,
    /// Requests whose answer was held back.
    pub hung: u64,
}

impl NumberStats {
    fn refuse(&mut self, code: i64) {
        *self.rejected.entry(code).or_default() += 1;
        match code {
            130429 => self.throttled += 1,
            131056 => self.pair_limited += 1,
            131047 => self.outside_window += 1,
            190 => self.token_errors += 1,
            _ => {}
        }
    }
}

/// Everything the simulator counted; `GET /sim/stats` serves it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// By phone_number_id.
    pub numbers: BTreeMap<String, NumberStats>,
    /// Graph requests naming a phone_number_id the simulator does not have.
    pub unknown_number: u64,
    pub sends_recorded: u64,
    /// Accepted sends beyond `record_limit` (counted, not kept).
    pub sends_not_recorded: u64,
    /// Zero when no webhook target is configured.
    pub webhooks: WebhookStats,
    pub inbound: InboundStats,
}

struct NumberState {
    token: String,
    expired: bool,
    limit: SlidingLimit,
    peak: PeakMeter,
    pairs: PairLimit,
    stats: NumberStats,
}

struct State {
    rng: Rng,
    faults: Faults,
    numbers: Vec<NumberState>,
    windows: WindowBook,
    sends: Vec<SentMessage>,
    sends_not_recorded: u64,
    unknown_number: u64,
    next_wamid: u64,
}

#[derive(Default)]
struct InboundCounters {
    seq: AtomicU64,
    generated: AtomicU64,
    posted_ok: AtomicU64,
    posted_failed: AtomicU64,
}

/// The fault dice of one Graph request, thrown up front under the lock.
struct Dice {
    delay: Duration,
    server_error: Option<ServerFault>,
    hang: Option<Option<Duration>>,
    hang_after: bool,
    throttle_429: bool,
    fbtrace: String,
}

/// What a successful send decision hands to the (lock-free) rest of the request.
struct Accepted {
    wamid: String,
    plan: Plan,
}

pub(crate) struct Inner {
    numbers: Vec<SimNumber>,
    index: HashMap<String, usize>,
    window: WindowEnforcement,
    statuses: StatusBehaviour,
    record_limit: usize,
    run_id: String,
    state: Mutex<State>,
    webhooks: Option<Arc<Webhooks>>,
    customers: Customers,
    inbound: InboundCounters,
    stop: watch::Receiver<bool>,
}

impl Inner {
    fn slot(&self, number: &str) -> Result<usize, SimError> {
        self.index
            .get(number)
            .copied()
            .ok_or_else(|| SimError::UnknownNumber(number.to_owned()))
    }

    fn stats(&self) -> SimStats {
        let st = self.state.lock();
        let numbers = self
            .numbers
            .iter()
            .zip(&st.numbers)
            .map(|(n, s)| {
                let mut stats = s.stats.clone();
                stats.max_accepted_per_second = s.peak.peak();
                (n.phone_number_id.clone(), stats)
            })
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            numbers,
            unknown_number: st.unknown_number,
            sends_recorded: st.sends.len() as u64,
            sends_not_recorded: st.sends_not_recorded,
            webhooks: self
                .webhooks
                .as_ref()
                .map(|w| w.stats())
                .unwrap_or_default(),
            inbound: InboundStats {
                generated: load(&self.inbound.generated),
                posted_ok: load(&self.inbound.posted_ok),
                posted_failed: load(&self.inbound.posted_failed),
            },
        }
    }

    fn dice(&self) -> Dice {
        let mut st = self.state.lock();
        let f = st.faults.clone();
        let jitter = f.jitter.mul_f64(st.rng.unit());
        let error_roll = st.rng.chance(f.error_fraction);
        let which = match st.rng.below(3) {
            0 => ServerFault::Unknown,
            1 => ServerFault::Unavailable,
            _ => ServerFault::Overloaded,
        };
        let hang = st.rng.chance(f.hang_fraction);
        const TRACE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let fbtrace = (0..11)
            .map(|_| TRACE[st.rng.below(TRACE.len() as u64) as usize] as char)
            .collect();
        Dice {
            delay: f.latency + jitter,
            server_error: error_roll.then_some(which),
            hang: hang.then_some(f.hang_for),
            hang_after: f.hang_after_processing,
            throttle_429: f.throttle_http_429,
            fbtrace,
        }
    }

    /// The window, throughput and pair checks and, when they pass, every commit: one
    /// critical section.
    fn decide(
        &self,
        slot: usize,
        out: &Outgoing,
        throttle_429: bool,
    ) -> Result<Accepted, GraphError> {
        let now = Instant::now();
        let now_ms = unix_ms();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let key = out.recipient.key();
        let (in_window, entry_point) = st.windows.get(slot, key).map_or((false, false), |w| {
            (w.is_open(now_ms), w.in_entry_point(now_ms))
        });
        let window_failure =
            out.template.is_none() && !in_window && self.window != WindowEnforcement::Off;
        let ns = &mut st.numbers[slot];
        let refusal = if window_failure && self.window == WindowEnforcement::Reject {
            Some(GraphError::outside_window())
        } else if !ns.limit.allows(now) {
            Some(GraphError::throttled(throttle_429))
        } else if !ns.pairs.allows(key, now) {
            Some(GraphError::pair_limited())
        } else {
            None
        };
        if let Some(e) = refusal {
            ns.stats.refuse(e.code);
            return Err(e);
        }
        ns.limit.record(now);
        ns.peak.record(now);
        ns.pairs.record(key, now);
        ns.stats.accepted += 1;

        st.next_wamid += 1;
        let wamid = format!("wamid.SIM.{}.{}", self.run_id, st.next_wamid);
        if st.sends.len() < self.record_limit {
            st.sends.push(SentMessage {
                number: self.numbers[slot].phone_number_id.clone(),
                recipient: key.to_owned(),
                at_ms: now_ms,
                kind: out.kind.to_owned(),
                template: out.template.as_ref().map(|(name, _)| name.clone()),
                wamid: wamid.clone(),
            });
        } else {
            st.sends_not_recorded += 1;
        }
        if let Some(w) = st.windows.get_mut(slot, key) {
            // What a generated reply from this customer will quote.
            w.last_outbound_wamid = Some(wamid.clone());
        }

        let plan = if self.webhooks.is_some() {
            let base = StatusItem {
                number: slot,
                wamid: Arc::from(wamid.as_str()),
                status: StatusKind::Sent,
                timestamp: now_ms / 1000,
                recipient: out.recipient.clone(),
                pricing: Some(Pricing::of(
                    out.template.as_ref().map(|(_, c)| *c),
                    in_window,
                    entry_point,
                )),
                error: None,
            };
            webhooks::plan(&self.statuses, &mut st.rng, &base, now_ms, window_failure)
        } else {
            Plan::default()
        };
        Ok(Accepted { wamid, plan })
    }

    fn number_stats(&self, slot: Option<usize>, f: impl FnOnce(&mut NumberStats)) {
        let mut st = self.state.lock();
        match slot {
            Some(i) => f(&mut st.numbers[i].stats),
            None => st.unknown_number += 1,
        }
    }

    fn declare_window(&self, number: &str, customer: &str, at_ms: i64) -> Result<(), SimError> {
        let slot = self.slot(number)?;
        let key = customer_key(customer)?;
        self.state
            .lock()
            .windows
            .inbound(slot, &key, at_ms, unix_ms());
        Ok(())
    }

    fn with_number<T>(
        &self,
        number: &str,
        f: impl FnOnce(&mut NumberState) -> T,
    ) -> Result<T, SimError> {
        let slot = self.slot(number)?;
        Ok(f(&mut self.state.lock().numbers[slot]))
    }
}

// ---------------------------------------------------------------------------
// Starting and the handle

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Validates `cfg`, binds its listener and starts serving (and, with a webhook target,
    /// the status scheduler).
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        cfg.validate()?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|error| SimError::Bind {
                addr: cfg.listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| SimError::Bind {
            addr: cfg.listen,
            error,
        })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let webhooks = match &cfg.webhook {
            None => None,
            Some(target) => Some(Arc::new(Webhooks::new(
                target.clone(),
                cfg.numbers
                    .iter()
                    .map(|n| (n.phone_number_id.clone(), n.display_phone_number.clone()))
                    .collect(),
                cfg.statuses.clone(),
            )?)),
        };
        let state = State {
            rng: Rng::new(cfg.seed),
            faults: cfg.faults.clone(),
            numbers: cfg
                .numbers
                .iter()
                .map(|n| NumberState {
                    token: n.token.clone(),
                    expired: false,
                    limit: SlidingLimit::per_second(n.max_per_second),
                    peak: PeakMeter::default(),
                    pairs: PairLimit::new(n.pair_burst, cfg.pair_interval),
                    stats: NumberStats::default(),
                })
                .collect(),
            windows: WindowBook::default(),
            sends: Vec::new(),
            sends_not_recorded: 0,
            unknown_number: 0,
            next_wamid: 0,
        };
        let inner = Arc::new(Inner {
            index: cfg
                .numbers
                .iter()
                .enumerate()
                .map(|(i, n)| (n.phone_number_id.clone(), i))
                .collect(),
            numbers: cfg.numbers.clone(),
            window: cfg.window,
            statuses: cfg.statuses.clone(),
            record_limit: cfg.record_limit,
            run_id: cfg.run_id.clone().unwrap_or_else(new_run_id),
            state: Mutex::new(state),
            webhooks: webhooks.clone(),
            customers: Customers::new(),
            inbound: InboundCounters::default(),
            stop: stop_rx.clone(),
        });
        let scheduler = webhooks.map(|w| tokio::spawn(w.run(stop_rx.clone())));
        let limits = Limits {
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let service_inner = inner.clone();
        let service = move |req: Request<Incoming>, _info| {
            let inner = service_inner.clone();
            async move { route(inner, req).await }
        };
        let server = tokio::spawn(serve_with(
            listener,
            Transport::Plain,
            "sim",
            limits,
            service,
            stopped(stop_rx),
        ));
        Ok(SimHandle {
            inner,
            addr,
            stop: stop_tx,
            server: Some(server),
            scheduler,
        })
    }
}

/// A running simulator. Dropping it stops it (without waiting); [`shutdown`](Self::shutdown)
/// stops it and waits.
pub struct SimHandle {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<ServeReport>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl SimHandle {
    /// Points status webhooks and generated inbound at `target` from now on. Only a simulator
    /// started with a webhook target can be retargeted (one without never plans statuses).
    pub fn set_webhook(&self, target: WebhookTarget) -> Result<(), SimError> {
        match &self.inner.webhooks {
            Some(hooks) => hooks.retarget(target),
            None => Err(SimError::NoWebhookTarget),
        }
    }

    /// Where the Graph API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v23.0`: the Graph base URL to give the daemon.
    pub fn base_url(&self) -> String {
        format!("http://{}/{GRAPH_VERSION}", self.addr)
    }

    /// The run id inside every wamid.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    pub fn stats(&self) -> SimStats {
        self.inner.stats()
    }

    /// Accepted sends, oldest first (up to `record_limit`).
    pub fn sends(&self) -> Vec<SentMessage> {
        self.inner.state.lock().sends.clone()
    }

    pub fn faults(&self) -> Faults {
        self.inner.state.lock().faults.clone()
    }

    /// Replaces the faults from the next request on.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate()?;
        self.inner.state.lock().faults = faults;
        Ok(())
    }

    /// From now on sends for `number` get 401/190 (subcode 463).
    pub fn expire_token(&self, number: &str) -> Result<(), SimError> {
        self.inner.with_number(number, |n| n.expired = true)
    }

    /// Gives `number` a new valid token.
    pub fn renew_token(&self, number: &str, token: &str) -> Result<(), SimError> {
        self.inner.with_number(number, |n| {
            n.token = token.to_owned();
            n.expired = false;
        })
    }

    /// Opens the customer-service window of (number, customer) as if the customer wrote now.
    pub fn declare_window(&self, number: &str, customer: &str) -> Result<(), SimError> {
        self.inner.declare_window(number, customer, unix_ms())
    }

    /// Like [`declare_window`](Self::declare_window) for a message at `at`.
    pub fn declare_window_at(
        &self,
        number: &str,
        customer: &str,
        at: SystemTime,
    ) -> Result<(), SimError> {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.inner.declare_window(number, customer, at_ms)
    }

    /// Posts one inbound text from `customer` to `number` now and returns its wamid once the
    /// daemon answered 200 (retried like Meta). Opens the window either way.
    pub async fn send_inbound(
        &self,
        number: &str,
        customer: &str,
        text: &str,
    ) -> Result<String, SimError> {
        self.inner.send_inbound(number, customer, text).await
    }

    /// Generates inbound traffic at `rate` messages/s for `duration` from `customers`
    /// customers over every number, in the background.
    pub fn generate_inbound(
        &self,
        rate: f64,
        duration: Duration,
        customers: u32,
    ) -> JoinHandle<Result<InboundReport, SimError>> {
        tokio::spawn(inbound::generate(
            self.inner.clone(),
            rate,
            duration,
            customers,
        ))
    }

    /// Stops serving (in-flight requests get the server's grace period), stops the status
    /// scheduler (pending statuses are dropped) and waits for both.
    pub async fn shutdown(mut self) -> ServeReport {
        let _ = self.stop.send(true);
        let report = match self.server.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => ServeReport::default(),
        };
        if let Some(h) = self.scheduler.take() {
            let _ = h.await;
        }
        report
    }
}

// ---------------------------------------------------------------------------
// HTTP

fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn control_error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json_response(status, &json!({"error": {"message": message.to_string()}}))
}

fn graph_error(e: &GraphError, fbtrace: &str) -> Response<Body> {
    json_response(e.http, &e.body(fbtrace))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, GraphError> {
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await;
    match collected {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(_)) => Err(GraphError::invalid(format!(
            "The request body could not be read (at most {MAX_BODY} bytes)."
        ))),
        Err(_) => Err(GraphError::invalid(
            "The request body took too long to arrive.",
        )),
    }
}

fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            digits(major) && digits(minor)
        })
}

async fn route(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["sim", "stats"]) => json_response(StatusCode::OK, &inner.stats()),
        (&Method::GET, ["sim", "sends"]) => {
            json_response(StatusCode::OK, &inner.state.lock().sends)
        }
        (&Method::GET, ["sim", "faults"]) => {
            json_response(StatusCode::OK, &inner.state.lock().faults)
        }
        (&Method::POST, ["sim", "faults"]) => post_faults(&inner, req).await,
        (&Method::POST, ["sim", "window"]) => post_window(&inner, req).await,
        (&Method::POST, ["sim", "inbound"]) => post_inbound(&inner, req).await,
        (&Method::POST, ["sim", "numbers", id, "expire-token"]) => {
            match inner.with_number(id, |n| n.expired = true) {
                Ok(()) => json_response(StatusCode::OK, &json!({"ok": true})),
                Err(e) => control_error(StatusCode::NOT_FOUND, e),
            }
        }
        (&Method::POST, ["sim", "numbers", id, "token"]) => {
            let id = id.to_string();
            match control_json(req).await {
                Ok(v) => match v.get("token").and_then(Value::as_str) {
                    Some(t) if !t.is_empty() => match inner.with_number(&id, |n| {
                        n.token = t.to_owned();
                        n.expired = false;
                    }) {
                        Ok(()) => json_response(StatusCode::OK, &json!({"ok": true})),
                        Err(e) => control_error(StatusCode::NOT_FOUND, e),
                    },
                    _ => control_error(StatusCode::BAD_REQUEST, "`token` is required"),
                },
                Err(r) => r,
            }
        }
        (_, [version, rest @ ..]) if is_version(version) => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            graph(inner, req, rest).await
        }
        _ => control_error(
            StatusCode::NOT_FOUND,
            format!("no route for {method} {path}"),
        ),
    }
}

async fn control_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let body = read_body(req)
        .await
        .map_err(|e| control_error(StatusCode::BAD_REQUEST, e.details))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| control_error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(control_error(
            StatusCode::BAD_REQUEST,
            "expected a JSON object",
        ))
    }
}

/// Merges the given keys into the current faults.
async fn post_faults(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let patch = match control_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = inner.state.lock();
    let mut merged = match serde_json::to_value(&st.faults) {
        Ok(v) => v,
        Err(e) => return control_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            m.insert(k.clone(), v.clone());
        }
    }
    let faults: Faults = match serde_json::from_value(merged) {
        Ok(f) => f,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = faults.validate() {
        return control_error(StatusCode::BAD_REQUEST, e);
    }
    st.faults = faults;
    json_response(StatusCode::OK, &st.faults)
}

/// `{"number","customer","at"?}` with `at` in Unix seconds (number or string).
async fn post_window(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let v = match control_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(number), Some(customer)) = (
        v.get("number").and_then(Value::as_str),
        v.get("customer").and_then(Value::as_str),
    ) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "`number` and `customer` are required",
        );
    };
    let at_ms = match v.get("at") {
        None | Some(Value::Null) => unix_ms(),
        Some(at) => {
            let secs = at
                .as_i64()
                .or_else(|| at.as_str().and_then(|s| s.trim().parse().ok()));
            match secs {
                Some(s) => s.saturating_mul(1000),
                None => {
                    return control_error(
                        StatusCode::BAD_REQUEST,
                        "`at` must be Unix seconds (a number or a string of digits)",
                    )
                }
            }
        }
    };
    match inner.declare_window(number, customer, at_ms) {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"ok": true, "open_until": (at_ms + SERVICE_WINDOW_MS) / 1000}),
        ),
        Err(e @ SimError::UnknownNumber(_)) => control_error(StatusCode::NOT_FOUND, e),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

/// `{"number","customer","text"}` → `{"id": wamid}` once the daemon took it.
async fn post_inbound(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let v = match control_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some(number), Some(customer), Some(text)) =
        (field("number"), field("customer"), field("text"))
    else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "`number`, `customer` and `text` are required",
        );
    };
    match inner.send_inbound(number, customer, text).await {
        Ok(id) => json_response(StatusCode::OK, &json!({ "id": id })),
        Err(e @ SimError::UnknownNumber(_)) => control_error(StatusCode::NOT_FOUND, e),
        Err(e @ (SimError::InvalidCustomer(_) | SimError::NoWebhookTarget)) => {
            control_error(StatusCode::BAD_REQUEST, e)
        }
        Err(e) => control_error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Holds a request for `hang` (forever = until shutdown); false when shutdown came first.
async fn hold(inner: &Inner, hang: Option<Duration>) -> bool {
    match hang {
        Some(d) => tokio::select! {
            biased;
            _ = stopped(inner.stop.clone()) => false,
            _ = sleep(d) => true,
        },
        None => {
            stopped(inner.stop.clone()).await;
            false
        }
    }
}

/// `/{version}/{rest..}`: the Graph API proper.
async fn graph(inner: Arc<Inner>, req: Request<Incoming>, rest: Vec<String>) -> Response<Body> {
    let dice = inner.dice();
    let shutting_down = GraphError::server(ServerFault::Overloaded);
    if !dice.delay.is_zero() && !hold(&inner, Some(dice.delay)).await {
        return graph_error(&shutting_down, &dice.fbtrace);
    }
    let (number, is_messages) = match rest.as_slice() {
        [id, m] if m == "messages" && req.method() == Method::POST => (id.clone(), true),
        [id, ..] => (id.clone(), false),
        [] => (String::new(), false),
    };
    let slot = inner.index.get(&number).copied();
    if let Some(fault) = dice.server_error {
        inner.number_stats(slot, |s| {
            s.server_errors += 1;
            s.refuse(GraphError::server(fault).code);
        });
        return graph_error(&GraphError::server(fault), &dice.fbtrace);
    }
    let Some(slot) = slot else {
        inner.number_stats(None, |_| {});
        return graph_error(&GraphError::unknown_object(&number), &dice.fbtrace);
    };
    if !is_messages {
        return graph_error(&GraphError::unknown_path(req.uri().path()), &dice.fbtrace);
    }
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let auth = {
        let st = inner.state.lock();
        let n = &st.numbers[slot];
        match presented {
            Some(t) if t == n.token && !n.expired => Ok(()),
            Some(t) if t == n.token => Err(GraphError::expired_token()),
            _ => Err(GraphError::bad_token()),
        }
    };
    if let Err(e) = auth {
        inner.number_stats(Some(slot), |s| s.refuse(e.code));
        return graph_error(&e, &dice.fbtrace);
    }
    if let Some(hang) = dice.hang {
        inner.number_stats(Some(slot), |s| s.hung += 1);
        if !dice.hang_after && !hold(&inner, hang).await {
            return graph_error(&shutting_down, &dice.fbtrace);
        }
    }
    let response = match read_body(req).await.and_then(|b| api::parse_request(&b)) {
        Err(e) => {
            inner.number_stats(Some(slot), |s| s.refuse(e.code));
            graph_error(&e, &dice.fbtrace)
        }
        Ok(Parsed::MarkRead { .. }) => {
            inner.number_stats(Some(slot), |s| s.marked_read += 1);
            json_response(StatusCode::OK, &json!({"success": true}))
        }
        Ok(Parsed::Send(out)) => match inner.decide(slot, &out, dice.throttle_429) {
            Err(e) => graph_error(&e, &dice.fbtrace),
            Ok(accepted) => {
                let Accepted { wamid, plan } = accepted;
                if let Some(hooks) = &inner.webhooks {
                    hooks.schedule(Instant::now(), plan.scheduled);
                    if let Some(early) = plan.early {
                        hooks.post_early(early, inner.stop.clone()).await;
                    }
                }
                let contact = match &out.recipient {
                    Recipient::Phone(p) => json!({"input": out.to, "wa_id": p}),
                    Recipient::UserId(u) => json!({"input": out.to, "user_id": u}),
                };
                json_response(
                    StatusCode::OK,
                    &json!({
                        "messaging_product": "whatsapp",
                        "contacts": [contact],
                        "messages": [{"id": wamid, "message_status": "accepted"}],
                    }),
                )
            }
        },
    };
    if let (Some(hang), true) = (dice.hang, dice.hang_after) {
        // The answer is ready (the message may be sent); the client just never hears it
        // unless the hang ends.
        hold(&inner, hang).await;
    }
    response
}
