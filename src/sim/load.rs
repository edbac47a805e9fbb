//! The webhook load generator behind `switchboard-load`: N keep-alive TLS connections posting
//! signed, Meta-style text-message webhooks, open loop (a fixed schedule) or closed loop (as
//! fast as the server answers), with latency in an HDR histogram; plus the `bare` baseline
//! server and a poster for fixture files.
//!
//! Invariants:
//! - every wamid is unique across runs (`wamid.LOAD.<run id>.<conn>.<seq>`), so the daemon's
//!   dedupe never turns load into cheap duplicates;
//! - bodies are compact JSON in Meta's wire style (non-ASCII as lowercase `\uXXXX`, `/` as
//!   `\/`) and are signed over exactly the bytes sent;
//! - open loop: latency runs from the *scheduled* send time, so a slow server cannot hide its
//!   queueing by slowing the generator down (coordinated omission); sends the schedule could
//!   not start before the end are counted as `unsent`, never silently dropped;
//! - only requests whose (scheduled) start falls in the measurement window, after the warm-up,
//!   are reported;
//! - one request in flight per connection (HTTP/1.1 and HTTP/2 alike), so `--connections` is
//!   the concurrency.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::{sleep, sleep_until, Instant};

use super::bare::bare_server;
use super::client::{ClientError, Connection, HttpsClient, TlsTarget};
use crate::http::server::{Protocol, ServeReport};
use crate::http::tls::{client_config, load_ca, load_or_generate, TlsError, TlsSource};
use crate::http::tls::{ALPN_H2, ALPN_HTTP11};
use crate::whatsapp::sign;

/// Where Meta posts webhooks on the daemon.
pub const WEBHOOK_PATH: &str = "/webhooks/whatsapp";
/// Meta's crawler user agent, as its webhook requests carry it.
const META_USER_AGENT: &str = "facebookexternalua";
/// Latency histogram range: 1 µs .. 60 s at 3 significant digits (larger values saturate).
const HIST_MAX_US: u64 = 60_000_000;
/// Pause between reconnect attempts, so a dead target is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Why a load run, the bare server or a fixture post could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid target {0:?} (expected host:port)")]
    Target(String),
    #[error("resolving {target}: {source}")]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("connection {conn} could not connect: {source}")]
    Connect {
        conn: u32,
        #[source]
        source: ClientError,
    },
    #[error("request: {0}")]
    Client(#[from] ClientError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a connection task failed: {0}")]
    Join(String),
}

// ---------------------------------------------------------------------------
// Payloads

/// One of our numbers as the load generator names it: `ID` or `ID:DISPLAY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberSpec {
    pub phone_number_id: String,
    pub display_phone_number: String,
}

impl FromStr for NumberSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, display) = match s.split_once(':') {
            Some((id, display)) => (id, Some(display)),
            None => (s, None),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(id) || !display.is_none_or(digits) {
            return Err(format!(
                "{s:?}: expected a phone_number_id (digits), optionally :display_number"
            ));
        }
        // The display number only matters to account-level changes, never to messages.
        let display = display.map(str::to_owned).unwrap_or_else(|| {
            let tail = &id[id.len().saturating_sub(7)..];
            format!("1555{tail:0>7}")
        });
        Ok(NumberSpec {
            phone_number_id: id.to_owned(),
            display_phone_number: display,
        })
    }
}

/// What the generated webhooks look like.
#[derive(Clone, Debug)]
pub struct PayloadConfig {
    pub numbers: Vec<NumberSpec>,
    /// `entry[].id`: the WhatsApp Business Account.
    pub waba_id: String,
    /// Size of the customer pool senders are drawn from.
    pub customers: u32,
    pub messages_per_post: u32,
    /// Pad each body to this many bytes (nothing is cut when it is already larger).
    pub body_bytes: Option<usize>,
    /// Part of every wamid, so runs never collide.
    pub run_id: String,
}

/// A customer's language: decides their phone prefix, name and texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    English,
    Korean,
    Chinese,
}

const LANGUAGES: [Language; 3] = [Language::English, Language::Korean, Language::Chinese];

struct Phrasebook {
    /// Country code and mobile prefix; the customer index fills the rest.
    prefix: &'static str,
    digits: usize,
    names: &'static [&'static str],
    texts: &'static [&'static str],
    /// Repeated to pad a body towards `--body-bytes`.
    filler: &'static str,
}

// Typical support-chat messages; lengths chosen so a one-message body is ~600-900 bytes
// once Meta's escaping (6 bytes per Hangul/Han character) is applied.
const ENGLISH: Phrasebook = Phrasebook {
    prefix: "1555",
    digits: 7,
    names: &["Emily Carter", "James O'Neil", "Priya Raman", "Lucas Silva"],
    texts: &[
        "Hi! I ordered the blue wireless headphones last Tuesday (order #US-20260114-0193) and the tracking page still says \"label created\". Could you check whether it actually shipped? I need them before my flight on Friday. Also, can I change the delivery address to my office at 500 Market St, Suite 1200?",
        "Hello, I'd like to return the running shoes I bought last week: they're half a size too small. The box is unopened apart from trying them on once indoors. Do I need to print a label, or can I drop them at one of your stores? And will the refund go back to my card or come as store credit?",
        "Quick question about the business plan: we're a team of 12 and the website says $15 per seat per month, but checkout shows $18. Is there an annual discount we're missing? We'd also need the invoice to show our company name and VAT number. Thanks!",
    ],
    filler: " Thanks again for your help, have a great day.",
};

const KOREAN: Phrasebook = Phrasebook {
    prefix: "8210",
    digits: 8,
    names: &["김민준", "이서연", "박지훈", "최유나"],
    texts: &[
        "안녕하세요! 지난주 화요일에 주문한 블루투스 스피커가 아직 도착하지 않았어요. 주문번호는 KR-20260114-0042입니다. 배송 상태 확인 부탁드립니다.",
        "이 제품 색상이 사진과 많이 달라서 교환하고 싶어요. 포장은 그대로 있고 한 번도 사용하지 않았습니다. 반품 택배는 어떻게 신청하나요?",
        "회원 가입할 때 받은 할인 쿠폰이 결제 화면에서 적용되지 않아요. 쿠폰 코드는 WELCOME10이고 유효기간은 이번 달 말까지입니다.",
    ],
    filler: " 감사합니다.",
};

const CHINESE: Phrasebook = Phrasebook {
    prefix: "86130",
    digits: 8,
    names: &["王小明", "李静", "张伟", "陈佳怡"],
    texts: &[
        "你好，我上周二买的保温杯到现在还没收到，订单号是 CN20260114007。物流信息三天没有更新了，麻烦帮我查一下是不是丢件了？",
        "请问这款空气净化器的滤网多久需要更换一次？官方旗舰店卖的滤网和第三方的有什么区别？家里有小孩，想买好一点的。",
        "我想开发票，公司抬头是上海某某科技有限公司，税号我稍后发给你。之前的两个订单也能一起开吗？谢谢！",
    ],
    filler: " 谢谢。",
};

impl Language {
    fn book(self) -> &'static Phrasebook {
        match self {
            Language::English => &ENGLISH,
            Language::Korean => &KOREAN,
            Language::Chinese => &CHINESE,
        }
    }

    /// The texts a customer of this language sends, as written (unescaped).
    pub fn texts(self) -> &'static [&'static str] {
        self.book().texts
    }
}

/// Appends `text` as the inside of a JSON string the way Meta writes it: `"`, `\` and `/`
/// escaped, control and non-ASCII characters as lowercase `\uXXXX` (UTF-16, so characters
/// beyond the BMP become surrogate pairs).
pub fn meta_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
}

fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    meta_escape(text, &mut out);
    out
}

/// A phrasebook with every string escaped once, up front.
struct EscapedBook {
    prefix: &'static str,
    digits: usize,
    names: Vec<String>,
    texts: Vec<String>,
    filler: String,
}

/// Builds webhook bodies; deterministic in its inputs so tests can check them.
pub struct PayloadGen {
    cfg: PayloadConfig,
    books: Vec<EscapedBook>,
}

impl PayloadGen {
    pub fn new(cfg: PayloadConfig) -> Result<Self, LoadError> {
        if cfg.numbers.is_empty() {
            return Err(LoadError::Invalid("at least one --number is needed".into()));
        }
        if cfg.customers == 0 || cfg.messages_per_post == 0 {
            return Err(LoadError::Invalid(
                "--customers and --messages-per-post must be at least 1".into(),
            ));
        }
        let books = LANGUAGES
            .iter()
            .map(|lang| {
                let book = lang.book();
                EscapedBook {
                    prefix: book.prefix,
                    digits: book.digits,
                    names: book.names.iter().map(|n| escaped(n)).collect(),
                    texts: book.texts.iter().map(|t| escaped(t)).collect(),
                    filler: escaped(book.filler),
                }
            })
            .collect();
        Ok(PayloadGen { cfg, books })
    }

    pub fn config(&self) -> &PayloadConfig {
        &self.cfg
    }

    /// The language of customer `customer` (the pool is split evenly).
    pub fn language(customer: u32) -> Language {
        LANGUAGES[customer as usize % LANGUAGES.len()]
    }

    /// The `wa_id` of customer `customer`.
    pub fn wa_id(&self, customer: u32) -> String {
        let book = &self.books[customer as usize % self.books.len()];
        format!("{}{:0>width$}", book.prefix, customer, width = book.digits)
    }

    /// The wamid of message `seq` on connection `conn`.
    pub fn wamid(&self, conn: u32, seq: u64) -> String {
        format!("wamid.LOAD.{}.{conn}.{seq}", self.cfg.run_id)
    }

    /// One webhook body: `messages_per_post` text messages (wamids `seq..`) from `customer` to
    /// number `number` (an index into the configured numbers), stamped `timestamp`.
    pub fn body(
        &self,
        conn: u32,
        seq: u64,
        customer: u32,
        number: usize,
        timestamp: i64,
    ) -> String {
        let cfg = &self.cfg;
        let book = &self.books[customer as usize % self.books.len()];
        let num = &cfg.numbers[number % cfg.numbers.len()];
        let wa_id = self.wa_id(customer);
        let name = &book.names[(customer as usize / LANGUAGES.len()) % book.names.len()];
        let mut out = String::with_capacity(cfg.body_bytes.unwrap_or(1024).max(1024));
        let _ = write!(
            out,
            "{{\"object\":\"whatsapp_business_account\",\"entry\":[{{\"id\":\"{}\",\"changes\":[{{\"value\":{{\"messaging_product\":\"whatsapp\",\"metadata\":{{\"display_phone_number\":\"{}\",\"phone_number_id\":\"{}\"}},\"contacts\":[{{\"profile\":{{\"name\":\"{name}\"}},\"wa_id\":\"{wa_id}\"}}],\"messages\":[",
            cfg.waba_id, num.display_phone_number, num.phone_number_id
        );
        // Where padding goes: the end of the first message's text.
        let mut pad_at = 0;
        for i in 0..cfg.messages_per_post {
            let s = seq + u64::from(i);
            if i > 0 {
                out.push(',');
            }
            let text = &book.texts[(s % book.texts.len() as u64) as usize];
            let _ = write!(
                out,
                "{{\"from\":\"{wa_id}\",\"id\":\"{}\",\"timestamp\":\"{timestamp}\",\"text\":{{\"body\":\"{text}",
                self.wamid(conn, s)
            );
            if i == 0 {
                pad_at = out.len();
            }
            out.push_str("\"},\"type\":\"text\"}");
        }
        out.push_str("]},\"field\":\"messages\"}]}]}");
        if let Some(target) = cfg.body_bytes {
            if target > out.len() {
                let padding = padding(&book.filler, target - out.len());
                out.insert_str(pad_at, &padding);
            }
        }
        out
    }
}

/// `len` bytes of escaped filler: whole filler phrases, then spaces (escapes are never cut).
fn padding(filler: &str, len: usize) -> String {
    let mut pad = String::with_capacity(len);
    while pad.len() + filler.len() <= len {
        pad.push_str(filler);
    }
    while pad.len() < len {
        pad.push(' ');
    }
    pad
}

/// SplitMix64: small, fast and good enough to spread customers and numbers.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A run id unlikely to repeat: time and pid.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}", nanos ^ (u64::from(std::process::id()) << 48))
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Targets

/// Resolves `host:port` and builds the TLS client side trusting `ca`, offering only `h2`
/// (when `http2`) or only `http/1.1`, and verifying `server_name` (default: the host).
pub fn tls_target(
    target: &str,
    ca: &Path,
    server_name: Option<&str>,
    http2: bool,
) -> Result<(SocketAddr, TlsTarget), LoadError> {
    let (host, _port) = target
        .rsplit_once(':')
        .ok_or_else(|| LoadError::Target(target.to_owned()))?;
    let addr = target
        .to_socket_addrs()
        .map_err(|source| LoadError::Resolve {
            target: target.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| LoadError::Target(target.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = server_name.unwrap_or(host).to_owned();
    let name = ServerName::try_from(name.clone())
        .map_err(|_| LoadError::Invalid(format!("{name:?} is not a valid TLS server name")))?;
    let roots = load_ca(ca)?;
    let alpn: &[&[u8]] = if http2 { &[ALPN_H2] } else { &[ALPN_HTTP11] };
    Ok((addr, (client_config(&roots, alpn)?, name)))
}

// ---------------------------------------------------------------------------
// Load runs

/// Everything a load run needs.
#[derive(Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub tls: TlsTarget,
    pub http2: bool,
    pub secret: Vec<u8>,
    pub payload: PayloadConfig,
    pub connections: u32,
    /// The measurement window, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    /// Target messages per second over all connections; 0 = closed loop.
    pub rate: f64,
    pub request_timeout: Duration,
    /// Stop once this many messages have been sent (warm-up included), even before the
    /// window ends: for "RSS after N messages" runs.
    pub max_messages: Option<u64>,
}

/// Latency summary in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// CPU time this process used during the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct CpuUse {
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / window, in percent of one core.
    pub percent_of_one_core: f64,
}

/// The outcome of a run, counting only the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    /// `"closed"` (as fast as possible) or `"open"` (fixed rate).
    pub mode: &'static str,
    pub target: String,
    pub protocol: &'static str,
    pub connections: u32,
    /// The measured window: `--duration`, or less when `max_messages` ran out first.
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Target messages/s (open loop only).
    pub rate_target: Option<f64>,
    pub messages_per_post: u32,
    pub body_bytes_mean: f64,
    /// Requests started in the window (any outcome).
    pub requests: u64,
    /// Requests answered 200, and the messages they carried.
    pub acknowledged_requests: u64,
    pub acknowledged_messages: u64,
    pub msgs_per_s: f64,
    pub requests_per_s: f64,
    /// Latency of the 200 answers (open loop: from the scheduled send time).
    pub latency_us: Latency,
    pub status_503: u64,
    /// Other HTTP statuses by code.
    pub status_other: BTreeMap<u16, u64>,
    /// Failed exchanges by kind (connect, tls, timeout, http, closed, ...).
    pub transport_errors: BTreeMap<&'static str, u64>,
    pub reconnects: u64,
    /// Open loop: sends scheduled in the window that had not started by its end (the target
    /// rate was not sustained when this is not 0).
    pub unsent: u64,
    /// Requests outside the window (warm-up), any outcome.
    pub warmup_requests: u64,
    pub cpu: Option<CpuUse>,
}

impl Report {
    pub fn errors(&self) -> u64 {
        self.status_503
            + self.status_other.values().sum::<u64>()
            + self.transport_errors.values().sum::<u64>()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = match self.rate_target {
            Some(r) => format!("open loop at {r:.0} msgs/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "switchboard-load run {}: {} over {} {} connection(s) to {}",
            self.run_id, rate, self.connections, self.protocol, self.target
        )?;
        writeln!(
            f,
            "  window          {:.1} s after {:.1} s warm-up; {} message(s)/post, {:.0} body bytes",
            self.duration_s, self.warmup_s, self.messages_per_post, self.body_bytes_mean
        )?;
        writeln!(
            f,
            "  acknowledged    {:.0} msgs/s ({} messages, {:.0} requests/s)",
            self.msgs_per_s, self.acknowledged_messages, self.requests_per_s
        )?;
        let l = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "  latency (ms)    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.mean / 1000.0
        )?;
        writeln!(
            f,
            "  errors          {} (503: {}, other: {:?}, transport: {:?}); reconnects {}",
            self.errors(),
            self.status_503,
            self.status_other,
            self.transport_errors,
            self.reconnects
        )?;
        if self.rate_target.is_some() {
            writeln!(
                f,
                "  unsent          {}{}",
                self.unsent,
                if self.unsent > 0 {
                    "  (target rate NOT sustained)"
                } else {
                    ""
                }
            )?;
        }
        if let Some(cpu) = &self.cpu {
            writeln!(
                f,
                "  generator cpu   {:.0}% of one core (user {:.2} s, system {:.2} s)",
                cpu.percent_of_one_core, cpu.user_s, cpu.system_s
            )?;
        }
        Ok(())
    }
}

/// One connection's tallies; merged into the [`Report`].
struct ConnStats {
    latency: Histogram<u64>,
    requests: u64,
    ok: u64,
    s503: u64,
    other: BTreeMap<u16, u64>,
    transport: BTreeMap<&'static str, u64>,
    reconnects: u64,
    unsent: u64,
    warmup_requests: u64,
    body_bytes: u64,
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            latency: new_histogram(),
            requests: 0,
            ok: 0,
            s503: 0,
            other: BTreeMap::new(),
            transport: BTreeMap::new(),
            reconnects: 0,
            unsent: 0,
            warmup_requests: 0,
            body_bytes: 0,
        }
    }

    fn merge(&mut self, other: ConnStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.ok += other.ok;
        self.s503 += other.s503;
        for (k, v) in other.other {
            *self.other.entry(k).or_default() += v;
        }
        for (k, v) in other.transport {
            *self.transport.entry(k).or_default() += v;
        }
        self.reconnects += other.reconnects;
        self.unsent += other.unsent;
        self.warmup_requests += other.warmup_requests;
        self.body_bytes += other.body_bytes;
    }
}

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

fn error_kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Connect(_) => "connect",
        ClientError::Tls(_) => "tls",
        ClientError::Handshake(_) => "handshake",
        ClientError::ConnectionClosed => "closed",
        ClientError::Http(_) => "http",
        ClientError::Body(_) => "body",
        ClientError::Timeout(_) => "timeout",
        ClientError::InvalidRequest(_) => "invalid_request",
    }
}

/// The shared clock of a run.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

struct ConnTask {
    index: u32,
    cfg: Arc<LoadConfig>,
    gen: Arc<PayloadGen>,
    window: Window,
    /// Posts left to send under `max_messages`, shared by all connections.
    budget: Option<Arc<AtomicU64>>,
}

impl ConnTask {
    async fn run(self, mut conn: Connection) -> ConnStats {
        let cfg = &*self.cfg;
        let mut stats = ConnStats::new();
        let mut rng = SplitMix::new(seed_of(&cfg.payload.run_id) ^ u64::from(self.index));
        let per_post = u64::from(cfg.payload.messages_per_post);
        let customers = u64::from(cfg.payload.customers);
        let numbers = cfg.payload.numbers.len() as u64;
        let mut seq: u64 = 0;
        // Open loop: this connection's share of the posts, phase-shifted so connections
        // do not fire in lock-step.
        let schedule = (cfg.rate > 0.0).then(|| {
            let posts_per_s = cfg.rate / per_post as f64 / f64::from(cfg.connections);
            let interval = Duration::from_secs_f64(1.0 / posts_per_s);
            let phase = interval.mul_f64(f64::from(self.index) / f64::from(cfg.connections));
            (interval, phase)
        });
        let mut post: u32 = 0;
        loop {
            let scheduled = match schedule {
                Some((interval, phase)) => {
                    let at = self.window.start + phase + interval * post;
                    if at >= self.window.end {
                        break;
                    }
                    if Instant::now() >= self.window.end {
                        // Behind schedule at the end: what is left of the window is unsent.
                        stats.unsent += unsent_between(at, interval, &self.window);
                        break;
                    }
                    sleep_until(at).await;
                    at
                }
                None => {
                    let now = Instant::now();
                    if now >= self.window.end {
                        break;
                    }
                    now
                }
            };
            post += 1;
            if let Some(budget) = &self.budget {
                let claimed = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                });
                if claimed.is_err() {
                    break;
                }
            }
            let customer = rng.below(customers) as u32;
            let number = rng.below(numbers) as usize;
            let body = self
                .gen
                .body(self.index, seq, customer, number, unix_seconds());
            seq += per_post;
            let signature = sign(&cfg.secret, body.as_bytes());
            let body_len = body.len() as u64;
            let req = Request::builder()
                .method(Method::POST)
                .uri(WEBHOOK_PATH)
                .header(CONTENT_TYPE, "application/json")
                .header(USER_AGENT, META_USER_AGENT)
                .header("x-hub-signature-256", signature)
                .body(Full::new(Bytes::from(body)));
            let req = match req {
                Ok(r) => r,
                Err(_) => {
                    *stats.transport.entry("invalid_request").or_default() += 1;
                    continue;
                }
            };
            let result = conn.send(req).await;
            let measured = scheduled >= self.window.measure_from;
            if !measured {
                stats.warmup_requests += 1;
            } else {
                stats.requests += 1;
                stats.body_bytes += body_len;
                match &result {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        stats.ok += 1;
                        let us = scheduled.elapsed().as_micros() as u64;
                        stats.latency.saturating_record(us.max(1));
                    }
                    Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => stats.s503 += 1,
                    Ok(resp) => *stats.other.entry(resp.status().as_u16()).or_default() += 1,
                    Err(e) => *stats.transport.entry(error_kind(e)).or_default() += 1,
                }
            }
            if result.is_err() || conn.is_closed() {
                match self.reconnect(&mut stats).await {
                    Some(c) => conn = c,
                    None => break,
                }
            }
        }
        stats
    }

    /// A new connection, retried until the window ends (`None` then).
    async fn reconnect(&self, stats: &mut ConnStats) -> Option<Connection> {
        let cfg = &*self.cfg;
        while Instant::now() < self.window.end {
            stats.reconnects += 1;
            match Connection::connect(cfg.addr, Some(cfg.tls.clone()), cfg.http2).await {
                Ok(mut c) => {
                    c.set_request_timeout(cfg.request_timeout);
                    return Some(c);
                }
                Err(e) => {
                    if Instant::now() >= self.window.measure_from {
                        *stats.transport.entry(error_kind(&e)).or_default() += 1;
                    }
                    sleep(RECONNECT_PAUSE).await;
                }
            }
        }
        None
    }
}

/// How many of the sends scheduled at `first + k * interval` (k ≥ 0) fall in the
/// measurement window.
fn unsent_between(first: Instant, interval: Duration, window: &Window) -> u64 {
    let step = interval.as_nanos().max(1);
    // Index of the first send at or after `instant` (ceiling division).
    let index = |instant: Instant| {
        instant
            .saturating_duration_since(first)
            .as_nanos()
            .div_ceil(step)
    };
    let from = index(window.measure_from.max(first));
    let to = index(window.end);
    to.saturating_sub(from) as u64
}

fn seed_of(text: &str) -> u64 {
    // FNV-1a: stable across runs and platforms (std's hasher is not).
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// User and system CPU seconds of this process, from `/proc/self/stat` (Linux only).
pub fn process_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15, in USER_HZ ticks, which Linux fixes at 100.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

/// Runs a load test and reports the measurement window. Connects every connection first
/// (any failure aborts the run), then starts the clock.
pub async fn run(cfg: LoadConfig) -> Result<Report, LoadError> {
    if cfg.connections == 0 {
        return Err(LoadError::Invalid(
            "--connections must be at least 1".into(),
        ));
    }
    if !cfg.rate.is_finite() || cfg.rate < 0.0 {
        return Err(LoadError::Invalid("--rate must be 0 or positive".into()));
    }
    if cfg.duration.is_zero() {
        return Err(LoadError::Invalid("--duration must be positive".into()));
    }
    let gen = Arc::new(PayloadGen::new(cfg.payload.clone())?);
    let cfg = Arc::new(cfg);

    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..cfg.connections {
        let cfg = cfg.clone();
        connecting.spawn(async move {
            let result = Connection::connect(cfg.addr, Some(cfg.tls.clone()), cfg.http2).await;
            (index, result)
        });
    }
    let mut conns = Vec::with_capacity(cfg.connections as usize);
    while let Some(joined) = connecting.join_next().await {
        let (index, result) = joined.map_err(|e| LoadError::Join(e.to_string()))?;
        let mut conn = result.map_err(|source| LoadError::Connect {
            conn: index,
            source,
        })?;
        conn.set_request_timeout(cfg.request_timeout);
        conns.push((index, conn));
    }
    let protocol = match conns.first().map(|(_, c)| c.protocol()) {
        Some(Protocol::Http2) => "h2",
        _ => "http/1.1",
    };

    let start = Instant::now();
    let window = Window {
        start,
        measure_from: start + cfg.warmup,
        end: start + cfg.warmup + cfg.duration,
    };
    let per_post = u64::from(cfg.payload.messages_per_post);
    let budget = cfg
        .max_messages
        .map(|n| Arc::new(AtomicU64::new(n.div_ceil(per_post))));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, conn) in conns {
        let task = ConnTask {
            index,
            cfg: cfg.clone(),
            gen: gen.clone(),
            window,
            budget: budget.clone(),
        };
        tasks.spawn(task.run(conn));
    }
    // Collect in a task of its own, so a run that spends its message budget early ends early.
    let mut collector = tokio::spawn(async move {
        let mut total = ConnStats::new();
        while let Some(joined) = tasks.join_next().await {
            total.merge(joined.map_err(|e| LoadError::Join(e.to_string()))?);
        }
        Ok::<_, LoadError>((total, Instant::now()))
    });
    let mut finished = None;
    tokio::select! {
        done = &mut collector => finished = Some(done),
        _ = sleep_until(window.measure_from) => {}
    }
    let cpu_from = process_cpu_seconds();
    if finished.is_none() {
        tokio::select! {
            done = &mut collector => finished = Some(done),
            _ = sleep_until(window.end) => {}
        }
    }
    let cpu_to = process_cpu_seconds();
    let cpu_window = Instant::now().saturating_duration_since(window.measure_from);
    let finished = match finished {
        Some(done) => done,
        None => collector.await,
    };
    let (total, done_at) = finished.map_err(|e| LoadError::Join(e.to_string()))??;

    // In-flight requests finish after the end, and an open loop's last send comes before it:
    // the window is the whole duration, unless an exhausted budget ended it early.
    let measured = match budget {
        Some(b) if b.load(Ordering::Relaxed) == 0 => done_at
            .min(window.end)
            .saturating_duration_since(window.measure_from),
        _ => cfg.duration,
    };
    let secs = measured.as_secs_f64().max(1e-3);
    let cpu = cpu_from.zip(cpu_to).map(|((u0, s0), (u1, s1))| CpuUse {
        user_s: round2(u1 - u0),
        system_s: round2(s1 - s0),
        percent_of_one_core: round2(
            100.0 * ((u1 - u0) + (s1 - s0)) / cpu_window.as_secs_f64().max(1e-3),
        ),
    });
    Ok(Report {
        run_id: cfg.payload.run_id.clone(),
        mode: if cfg.rate > 0.0 { "open" } else { "closed" },
        target: cfg.addr.to_string(),
        protocol,
        connections: cfg.connections,
        duration_s: round2(secs),
        warmup_s: cfg.warmup.as_secs_f64(),
        rate_target: (cfg.rate > 0.0).then_some(cfg.rate),
        messages_per_post: cfg.payload.messages_per_post,
        body_bytes_mean: if total.requests == 0 {
            0.0
        } else {
            round2(total.body_bytes as f64 / total.requests as f64)
        },
        requests: total.requests,
        acknowledged_requests: total.ok,
        acknowledged_messages: total.ok * per_post,
        msgs_per_s: round2((total.ok * per_post) as f64 / secs),
        requests_per_s: round2(total.ok as f64 / secs),
        latency_us: Latency::of(&total.latency),
        status_503: total.s503,
        status_other: total.other,
        transport_errors: total.transport,
        reconnects: total.reconnects,
        unsent: total.unsent,
        warmup_requests: total.warmup_requests,
        cpu,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------
// The bare baseline and fixture posts

/// Where the bare server listens and which CA its certificate chains to.
#[derive(Clone, Debug)]
pub struct BareListening {
    pub https: SocketAddr,
    pub ca: PathBuf,
}

/// Serves [`bare_server`] on `listen` with the certificate kept (or generated) under
/// `cert_dir/tls/`; calls `on_listening` once bound, and stops when `shutdown` resolves.
pub async fn run_bare(
    listen: SocketAddr,
    cert_dir: &Path,
    on_listening: impl FnOnce(&BareListening),
    shutdown: impl Future<Output = ()>,
) -> Result<ServeReport, LoadError> {
    let material = load_or_generate(None, cert_dir, &[])?;
    let ca = material.ca_pem.clone().ok_or_else(|| {
        LoadError::Invalid("the bare server always generates its certificate".into())
    })?;
    let io_err = |source| LoadError::Io {
        path: PathBuf::from(listen.to_string()),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(io_err)?;
    let https = listener.local_addr().map_err(io_err)?;
    on_listening(&BareListening { https, ca });
    let tls = Arc::new(TlsSource::new(material.server_config));
    Ok(bare_server(listener, tls, shutdown).await)
}

/// Posts `body` signed with `secret` to the webhook path; returns the status and body.
pub async fn post_signed(
    client: &HttpsClient,
    secret: &[u8],
    body: Bytes,
) -> Result<(StatusCode, Bytes), LoadError> {
    let signature = sign(secret, &body);
    let (status, _headers, body) = client
        .request(
            Method::POST,
            WEBHOOK_PATH,
            &[
                ("content-type", "application/json"),
                ("user-agent", META_USER_AGENT),
                ("x-hub-signature-256", &signature),
            ],
            body,
        )
        .await?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::whatsapp::{parse_delivery, verify, AppKeys, NumberDirectory};

    struct Dir(Vec<String>);

    impl NumberDirectory for Dir {
        fn is_managed(&self, id: &str) -> bool {
            self.0.iter().any(|n| n == id)
        }
        fn number_for_display(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn payload(body_bytes: Option<usize>, per_post: u32) -> PayloadConfig {
        PayloadConfig {
            numbers: vec!["100000000000001".parse().unwrap()],
            waba_id: "900000000000001".into(),
            customers: 10_000,
            messages_per_post: per_post,
            body_bytes,
            run_id: "t1".into(),
        }
    }

    #[test]
    fn escapes_like_meta() {
        let mut out = String::new();
        meta_escape("김민준 1/14 \"q\" 🙏\n", &mut out);
        assert_eq!(
            out,
            "\\uae40\\ubbfc\\uc900 1\\/14 \\\"q\\\" \\ud83d\\ude4f\\n"
        );
    }

    #[test]
    fn number_specs_parse() {
        let n: NumberSpec = "106540352242922:15550783881".parse().unwrap();
        assert_eq!(n.display_phone_number, "15550783881");
        let n: NumberSpec = "12".parse().unwrap();
        assert_eq!(n.display_phone_number, "15550000012");
        assert!("abc".parse::<NumberSpec>().is_err());
        assert!("1:x".parse::<NumberSpec>().is_err());
    }

    #[test]
    fn bodies_parse_into_the_intended_messages_and_sizes_are_realistic() {
        let gen = PayloadGen::new(payload(None, 1)).unwrap();
        let dir = Dir(vec!["100000000000001".into()]);
        for customer in 0..12u32 {
            for seq in 0..3u64 {
                let body = gen.body(7, seq, customer, 0, 1_768_467_700);
                assert!(body.is_ascii());
                assert!(
                    (600..=900).contains(&body.len()),
                    "customer {customer} seq {seq}: {} bytes",
                    body.len()
                );
                let delivery = parse_delivery(body.as_bytes(), &dir, 0).unwrap();
                let [Event::Message(m)] = delivery.events.as_slice() else {
                    panic!("{:?}", delivery.events);
                };
                assert_eq!(m.wamid, format!("wamid.LOAD.t1.7.{seq}"));
                assert_eq!(
                    m.customer.wa_id.as_deref(),
                    Some(gen.wa_id(customer).as_str())
                );
                let lang = PayloadGen::language(customer);
                assert_eq!(
                    m.text.as_deref(),
                    Some(lang.texts()[seq as usize % lang.texts().len()])
                );
                assert_eq!(m.timestamp, 1_768_467_700);
            }
        }
    }

    #[test]
    fn padding_hits_the_requested_size_and_several_messages_fit_in_one_post() {
        let dir = Dir(vec!["100000000000001".into()]);
        let gen = PayloadGen::new(payload(Some(1024), 1)).unwrap();
        for customer in 0..3 {
            let body = gen.body(0, 5, customer, 0, 1);
            assert_eq!(body.len(), 1024);
            let delivery = parse_delivery(body.as_bytes(), &dir, 0).unwrap();
            assert_eq!(delivery.events.len(), 1);
        }
        let gen = PayloadGen::new(payload(None, 3)).unwrap();
        let body = gen.body(1, 30, 4, 0, 1);
        let delivery = parse_delivery(body.as_bytes(), &dir, 0).unwrap();
        let wamids: Vec<_> = delivery
            .events
            .iter()
            .map(|e| match e {
                Event::Message(m) => m.wamid.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            wamids,
            [
                "wamid.LOAD.t1.1.30",
                "wamid.LOAD.t1.1.31",
                "wamid.LOAD.t1.1.32"
            ]
        );
        let keys = AppKeys::new(&[("main".into(), b"s3cret".to_vec())]);
        let sig = sign(b"s3cret", body.as_bytes());
        assert_eq!(verify(&keys, Some(sig.as_bytes()), body.as_bytes()), Ok(0));
    }

    async fn bare() -> (
        SocketAddr,
        PathBuf,
        tempfile::TempDir,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cert_dir = dir.path().to_path_buf();
        tokio::spawn(async move {
            run_bare(
                "127.0.0.1:0".parse().unwrap(),
                &cert_dir,
                |l| {
                    let _ = tx.send(l.clone());
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap()
        });
        let listening = rx.await.unwrap();
        (listening.https, listening.ca, dir, stop)
    }

    fn load_cfg(addr: SocketAddr, ca: &Path, http2: bool, rate: f64) -> LoadConfig {
        let target = addr.to_string();
        let (addr, tls) = tls_target(&target, ca, None, http2).unwrap();
        LoadConfig {
            addr,
            tls,
            http2,
            secret: b"s".to_vec(),
            payload: payload(None, 1),
            connections: 2,
            duration: Duration::from_millis(400),
            warmup: Duration::from_millis(100),
            rate,
            request_timeout: Duration::from_secs(5),
            max_messages: None,
        }
    }

    #[tokio::test]
    async fn closed_and_open_loop_runs_against_the_bare_server() {
        let (addr, ca, _dir, stop) = bare().await;
        let report = run(load_cfg(addr, &ca, false, 0.0)).await.unwrap();
        assert_eq!(report.mode, "closed");
        assert_eq!(report.protocol, "http/1.1");
        assert!(report.acknowledged_messages > 0, "{report}");
        assert_eq!(report.errors(), 0, "{report}");
        assert_eq!(report.latency_us.count, report.acknowledged_requests);
        assert!(report.warmup_requests > 0);

        // 200 msgs/s for 0.4 s: about 80 in the window.
        let report = run(load_cfg(addr, &ca, true, 200.0)).await.unwrap();
        assert_eq!((report.mode, report.protocol), ("open", "h2"));
        assert!((70..=90).contains(&report.requests), "{report}\n{report:?}");
        assert_eq!(report.errors(), 0, "{report}");
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn a_message_budget_ends_the_run_early() {
        let (addr, ca, _dir, stop) = bare().await;
        let cfg = LoadConfig {
            duration: Duration::from_secs(30),
            warmup: Duration::ZERO,
            max_messages: Some(50),
            ..load_cfg(addr, &ca, false, 0.0)
        };
        let started = std::time::Instant::now();
        let report = run(cfg).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(report.acknowledged_messages, 50, "{report}");
        assert!(report.duration_s < 10.0);
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn a_target_that_is_not_listening_fails_the_run() {
        let (addr, ca, _dir, stop) = bare().await;
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let result = run(load_cfg(addr, &ca, false, 0.0)).await;
        assert!(
            matches!(result, Err(LoadError::Connect { .. })),
            "{result:?}"
        );
    }
}
