//! Typed daemon configuration: the TOML schema, loading, validation and secrets.
//!
//! Owns [`Config`] (every key has a working default, so running with no file
//! at all works), the rules that make a configuration valid, and [`Resolved`]:
//! a validated configuration together with the secrets it points at.
//!
//! Invariants:
//! - A [`Resolved`] has passed every check: addresses parse and do not
//!   collide, sizes and durations are in range, app names and number ids are
//!   unique, every number names a configured app, every secret was read.
//! - Secrets are never readable through [`Config`]: inline secrets are
//!   [`Secret`]s (redacting `Debug`, left out when serializing), so the
//!   effective configuration can be printed or logged as is.
//! - Validation reports every problem it can find in one run, each with its
//!   key (`numbers[1].app`) and, when the source is a file, its line.
//! - Relative secret and TLS file paths are relative to the config file's
//!   directory (`Resolved::config` holds the joined paths); `storage.data_dir`
//!   is relative to the working directory, like the no-file default.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Secret files larger than this are refused: a token is tiny, and a bound
/// keeps a mistyped path (a log, `/dev/zero`) from being slurped.
const MAX_SECRET_BYTES: u64 = 64 * KIB;

/// Upper bound for every duration key: far beyond any sane timeout, and small
/// enough that `Instant + duration` can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

// ---------------------------------------------------------------------------
// Secret

/// A secret value (app secret, verify token, access token, admin token).
///
/// `Debug` and `Display` print `<redacted>`; [`Secret::expose`] is the only
/// way to the bytes, so every use is greppable.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into().into_boxed_slice())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value.as_bytes())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Secret {
    /// Compares without an early exit, so equality checks on secrets do not
    /// leak the length of a matching prefix.
    fn eq(&self, other: &Secret) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for Secret {}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

// ---------------------------------------------------------------------------
// Durations

/// Parses a friendly duration ("250ms", "10s", "2m", "1h", "1h 30m"; ISO 8601
/// "PT10S" also works) with jiff's parser.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text.trim().parse().map_err(|e| {
        format!("invalid duration {text:?} (expected e.g. \"250ms\", \"10s\", \"2m\", \"1h\"): {e}")
    })?;
    Duration::try_from(signed).map_err(|_| format!("duration {text:?} is negative"))
}

/// Formats a duration the way [`parse_duration`] reads it ("10s", "2m 30s").
pub fn format_duration(duration: Duration) -> String {
    match jiff::SignedDuration::try_from(duration) {
        Ok(signed) => format!("{signed:#}"),
        // Only durations beyond i64 seconds fail; none pass validation.
        Err(_) => format!("{}s", duration.as_secs()),
    }
}

mod duration_str {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Schema

/// The whole configuration file. `Default` is a working configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub pipeline: PipelineConfig,
    pub metrics: MetricsConfig,
    pub auth: AuthConfig,
    pub logging: LoggingConfig,
    pub whatsapp: WhatsappConfig,
    pub outbound: OutboundConfig,
    pub routing: RoutingConfig,
    pub apps: Vec<AppConfig>,
    pub numbers: Vec<NumberConfig>,
}

impl Config {
    /// Number of shard workers: `pipeline.shards`, or one per available core
    /// when it is 0.
    pub fn shard_count(&self) -> usize {
        match self.pipeline.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `[server]`: the TLS listener for webhooks and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, or neither for a self-signed
    /// certificate kept in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names / IP addresses for the generated certificate.
    pub tls_names: Vec<String>,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub http2_max_concurrent_streams: u32,
    #[serde(with = "duration_str")]
    pub tls_handshake_timeout: Duration,
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// How long a webhook waits for durability and apply before a 503.
    #[serde(with = "duration_str")]
    pub ingest_timeout: Duration,
    #[serde(with = "duration_str")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443),
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            // Meta sends webhook bodies of up to 3 MB.
            max_body_bytes: 3 * MIB as usize,
            max_header_bytes: 64 * KIB as usize,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            ingest_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// `[storage]`: the data directory, journal and sled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// How long delivery ids are remembered for dedupe (Meta retries for up
    /// to 7 days, hence the minimum).
    pub dedupe_days: u32,
    #[serde(with = "duration_str")]
    pub checkpoint_interval: Duration,
    pub journal_segment_bytes: u64,
    /// Webhook batches waiting for the journal writer before a 503.
    pub journal_queue: usize,
    pub sled_cache_bytes: u64,
    pub max_record_bytes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./switchboard-data"),
            dedupe_days: 7,
            checkpoint_interval: Duration::from_secs(10),
            journal_segment_bytes: 64 * MIB,
            journal_queue: 8192,
            sled_cache_bytes: 16 * MIB,
            max_record_bytes: 4 * MIB as usize,
        }
    }
}

/// `[pipeline]`: shard workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// 0 = one per core; see [`Config::shard_count`].
    pub shards: usize,
    /// Events queued per shard before the front door answers 503.
    pub shard_queue: usize,
    pub pin_threads: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: 0,
            shard_queue: 65_536,
            pin_threads: true,
        }
    }
}

/// `[metrics]`: the plain-HTTP Prometheus listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464),
        }
    }
}

/// `[auth]`: where the admin API token comes from. Neither set: a token is
/// generated on first start and only its hash is kept in `data_dir`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_env: Option<String>,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing_subscriber::EnvFilter` directive string.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[[apps]]`: one Meta app (its secret signs webhooks; its verify token
/// answers the subscription handshake).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    #[serde(skip_serializing)]
    pub app_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_secret_env: Option<String>,
    #[serde(skip_serializing)]
    pub verify_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_token_env: Option<String>,
}

/// `[[numbers]]`: one WhatsApp Business phone number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumberConfig {
    pub phone_number_id: String,
    pub display_phone_number: String,
    /// Name of the `[[apps]]` entry whose webhooks carry this number.
    pub app: String,
    #[serde(skip_serializing)]
    pub access_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waba_id: Option<String>,
    /// Send ceiling, messages per second (Meta's default tier is 80/s).
    pub max_per_second: f64,
    /// An additional ceiling per minute (e.g. 20 for a number warming up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// The adaptive rate starts here (default: a quarter of the ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_per_second: Option<f64>,
    /// The ceiling after Meta announces THROUGHPUT_UPGRADE (default: max_per_second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgraded_per_second: Option<f64>,
    /// Routing team that takes this number's new conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl NumberConfig {
    pub const DEFAULT_MAX_PER_SECOND: f64 = 80.0;
}

impl Default for NumberConfig {
    fn default() -> Self {
        NumberConfig {
            phone_number_id: String::new(),
            display_phone_number: String::new(),
            app: String::new(),
            access_token: None,
            access_token_file: None,
            access_token_env: None,
            name: None,
            waba_id: None,
            max_per_second: Self::DEFAULT_MAX_PER_SECOND,
            max_per_minute: None,
            initial_per_second: None,
            upgraded_per_second: None,
            team: None,
        }
    }
}

/// `[whatsapp]`: how to reach the Graph API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsappConfig {
    /// Versioned base URL; `https`, or `http` for a loopback address only
    /// (the simulator in tests and benchmarks).
    pub graph_api_base: String,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Bound on one send request, answer included.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Extra CA certificates (PEM) to trust besides the public roots,
    /// e.g. a corporate proxy's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for WhatsappConfig {
    fn default() -> Self {
        WhatsappConfig {
            graph_api_base: "https://graph.facebook.com/v23.0".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            ca_file: None,
        }
    }
}

/// `[outbound]`: sending policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Sensitive terms, one per line; reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_file: Option<PathBuf>,
    #[serde(with = "duration_str")]
    pub filter_reload_interval: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_delay`.
    #[serde(with = "duration_str")]
    pub retry_initial_delay: Duration,
    #[serde(with = "duration_str")]
    pub retry_max_delay: Duration,
    /// A message still failing with retryable errors this long after it was
    /// queued fails for good.
    #[serde(with = "duration_str")]
    pub retry_max_age: Duration,
    /// Concurrent Graph API requests per number.
    pub max_in_flight_per_number: usize,
    /// Concurrent automation and campaign requests over all numbers. Agent replies
    /// do not count against it, so they never queue behind bulk requests in flight.
    pub max_bulk_in_flight: usize,
    /// Messages queued per number before new ones are refused (503).
    pub max_queued_per_number: usize,
    /// Pair limit: one message per `pair_interval` to the same user, with
    /// bursts of `pair_burst`.
    #[serde(with = "duration_str")]
    pub pair_interval: Duration,
    pub pair_burst: u32,
    /// After a throughput error the rate is cut and held this long.
    #[serde(with = "duration_str")]
    pub throttle_hold: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            filter_file: None,
            filter_reload_interval: Duration::from_secs(2),
            retry_initial_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            retry_max_age: Duration::from_secs(6 * 3600),
            max_in_flight_per_number: 32,
            max_bulk_in_flight: 256,
            max_queued_per_number: 2_000_000,
            pair_interval: Duration::from_secs(6),
            pair_burst: 3,
            throttle_hold: Duration::from_secs(30),
        }
    }
}

/// `[routing]`: conversation routing to agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// An agent gone offline keeps its conversations this long before they
    /// return to routing (a flapping mobile connection reshuffles nothing).
    #[serde(with = "duration_str")]
    pub grace_period: Duration,
    /// `max_concurrent` of agents created without one.
    pub default_max_concurrent: u32,
    /// Teams created without `first_reply_timeout_ms` in their policy take
    /// this: an assigned conversation without an agent reply returns to
    /// routing. "0s" disables it.
    #[serde(with = "duration_str")]
    pub first_reply_timeout: Duration,
    /// Routing commands waiting for the routing thread at most (503 beyond).
    pub queue: usize,
    /// How often timers (step timeouts, sticky waits, grace periods) are
    /// checked.
    #[serde(with = "duration_str")]
    pub tick_interval: Duration,
    /// Events buffered per `/api/v1/events` subscriber; one that falls
    /// further behind is disconnected.
    pub stream_buffer: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            grace_period: Duration::from_secs(60),
            default_max_concurrent: 6,
            first_reply_timeout: Duration::ZERO,
            queue: 65_536,
            tick_interval: Duration::from_millis(200),
            stream_buffer: 1024,
        }
    }
}

// ---------------------------------------------------------------------------
// Resolved configuration

/// A validated configuration with its secrets read.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    /// The file it came from; `None` for [`defaults`].
    pub source: Option<PathBuf>,
    /// One per `config.apps`, in the same order.
    pub apps: Vec<ResolvedApp>,
    /// One per `config.numbers`, in the same order.
    pub numbers: Vec<ResolvedNumber>,
    /// From `auth.admin_token_file` / `auth.admin_token_env`, if configured.
    pub admin_token: Option<Secret>,
}

impl Resolved {
    pub fn app(&self, name: &str) -> Option<&ResolvedApp> {
        self.apps.iter().find(|app| app.name == name)
    }

    pub fn number(&self, phone_number_id: &str) -> Option<&ResolvedNumber> {
        self.numbers
            .iter()
            .find(|n| n.config.phone_number_id == phone_number_id)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedApp {
    pub name: String,
    pub secret: Secret,
    pub verify_token: Secret,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNumber {
    pub config: NumberConfig,
    pub access_token: Option<Secret>,
}

// ---------------------------------------------------------------------------
// Errors

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `numbers[1].app`; empty for the file as a whole.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in one configuration. `Display` prints one line per
/// issue: `<file>:<line>: <key>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    fn whole_file(file: &Path, message: String) -> ConfigErrors {
        ConfigErrors {
            file: file.to_path_buf(),
            issues: vec![ConfigIssue {
                key: String::new(),
                line: None,
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
            }
            if !issue.key.is_empty() {
                write!(f, ": {}", issue.key)?;
            }
            write!(f, ": {}", issue.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------
// Entry points

/// Reads, validates and resolves the configuration file at `path`.
pub fn load(path: &Path) -> Result<Resolved, ConfigErrors> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(path, format!("cannot read config file: {e}")))?;
    parse(&src, path)
}

/// Validates and resolves configuration text. `origin` names the file in
/// messages, and its directory anchors relative secret and TLS paths.
pub fn parse(src: &str, origin: &Path) -> Result<Resolved, ConfigErrors> {
    parse_with_env(src, origin, &|name| std::env::var_os(name))
}

/// The configuration used when no file is given: TLS with a self-signed
/// certificate on 127.0.0.1:8443, metrics on 127.0.0.1:9464, data in
/// `./switchboard-data`, no apps and no numbers.
pub fn defaults() -> Resolved {
    Resolved {
        config: Config::default(),
        source: None,
        apps: Vec::new(),
        numbers: Vec::new(),
        admin_token: None,
    }
}

/// Validates and resolves a configuration built in code (tests, the
/// simulator). Relative secret and TLS paths are taken from `base_dir`.
pub fn resolve(config: Config, base_dir: &Path) -> Result<Resolved, ConfigErrors> {
    let env = |name: &str| std::env::var_os(name);
    let ctx = Ctx {
        base: base_dir,
        env: &env,
    };
    let mut issues = Vec::new();
    let resolved = validate(config, &ctx, &mut issues);
    finish(Some(resolved), issues, Path::new("<config>"))
}

/// `switchboard check-config FILE`: validates the file and summarizes it.
pub fn check(path: &Path) -> Result<String, ConfigErrors> {
    let resolved = load(path)?;
    let config = &resolved.config;
    Ok(format!(
        "ok: {}, {}; listen {}; data_dir {}",
        plural(config.apps.len(), "app"),
        plural(config.numbers.len(), "number"),
        config.server.listen,
        config.storage.data_dir.display()
    ))
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

// ---------------------------------------------------------------------------
// Parsing

/// Looks up an environment variable; injected so tests need not mutate the
/// process environment.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

struct Ctx<'a> {
    /// Directory that relative file paths are joined to.
    base: &'a Path,
    env: EnvLookup<'a>,
}

const SECTIONS: &[&str] = &[
    "server", "storage", "pipeline", "metrics", "auth", "logging", "whatsapp", "outbound",
    "routing", "apps", "numbers",
];

fn parse_with_env(src: &str, origin: &Path, env: EnvLookup<'_>) -> Result<Resolved, ConfigErrors> {
    let (doc, errors) = DeTable::parse_recoverable(src);
    let table = doc.into_inner();
    let mut issues = Vec::new();
    if !errors.is_empty() {
        // Syntax errors: what was recovered may be garbled, so stop here.
        for error in errors {
            let offset = error.span().map(|span| span.start);
            issues.push(ConfigIssue {
                key: offset.map_or_else(String::new, |o| key_at_offset(&table, o, "")),
                line: offset.map(|o| line_of(src, o)),
                message: error.message().trim().to_owned(),
            });
        }
        return finish(None, issues, origin);
    }

    let config = deserialize_config(src, &table, &mut issues);
    // A key that failed to deserialize holds its default now: checking that
    // default would only add noise about a key already reported.
    let broken: Vec<String> = issues.iter().map(|issue| issue.key.clone()).collect();
    let ctx = Ctx {
        base: origin.parent().unwrap_or(Path::new("")),
        env,
    };
    let mut semantic = Vec::new();
    let mut resolved = validate(config, &ctx, &mut semantic);
    issues.extend(semantic.into_iter().filter(|issue| {
        !broken.iter().any(|b| {
            issue.key == *b
                || issue.key.starts_with(&format!("{b}."))
                || issue.key.starts_with(&format!("{b}["))
        })
    }));
    for issue in &mut issues {
        if issue.line.is_none() {
            issue.line = locate(&table, &issue.key).map(|o| line_of(src, o));
        }
    }
    resolved.source = Some(origin.to_path_buf());
    finish(Some(resolved), issues, origin)
}

fn finish(
    resolved: Option<Resolved>,
    mut issues: Vec<ConfigIssue>,
    file: &Path,
) -> Result<Resolved, ConfigErrors> {
    match resolved {
        Some(resolved) if issues.is_empty() => Ok(resolved),
        _ => {
            // File order reads best; issues without a line go last.
            issues.sort_by_key(|issue| issue.line.unwrap_or(usize::MAX));
            Err(ConfigErrors {
                file: file.to_path_buf(),
                issues,
            })
        }
    }
}

/// Deserializes section by section so that one bad section does not hide
/// the problems of the others.
fn deserialize_config(src: &str, table: &DeTable<'_>, issues: &mut Vec<ConfigIssue>) -> Config {
    let mut config = Config::default();
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let value = value.clone();
        match name {
            "server" => config.server = section(src, name, value, issues),
            "storage" => config.storage = section(src, name, value, issues),
            "pipeline" => config.pipeline = section(src, name, value, issues),
            "metrics" => config.metrics = section(src, name, value, issues),
            "auth" => config.auth = section(src, name, value, issues),
            "logging" => config.logging = section(src, name, value, issues),
            "whatsapp" => config.whatsapp = section(src, name, value, issues),
            "outbound" => config.outbound = section(src, name, value, issues),
            "routing" => config.routing = section(src, name, value, issues),
            "apps" => config.apps = array_of_tables(src, name, value, issues),
            "numbers" => config.numbers = array_of_tables(src, name, value, issues),
            other => issues.push(ConfigIssue {
                key: other.to_owned(),
                line: Some(line_of(src, key.span().start)),
                message: format!(
                    "unknown key `{other}`, expected one of `{}`",
                    SECTIONS.join("`, `")
                ),
            }),
        }
    }
    config
}

/// Deserializes one table. On an error the offending key is recorded and
/// dropped (so its default applies) and the rest is tried again: every bad
/// key of the table gets reported, not just the first.
fn section<T: DeserializeOwned + Default>(
    src: &str,
    path: &str,
    mut value: Spanned<DeValue<'_>>,
    issues: &mut Vec<ConfigIssue>,
) -> T {
    loop {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => return parsed,
            Err(error) => error,
        };
        let span = error.span();
        let line = span.as_ref().map(|span| line_of(src, span.start));
        let message = error.message().trim().to_owned();
        let culprit = match (value.get_ref(), &span) {
            (DeValue::Table(table), Some(span)) => table
                .iter()
                .find(|(k, v)| covers(&k.span(), span.start) || covers(&v.span(), span.start))
                .map(|(k, _)| k.get_ref().to_string()),
            _ => None,
        };
        match (culprit, value.get_mut()) {
            (Some(culprit), DeValue::Table(table)) => {
                issues.push(ConfigIssue {
                    key: format!("{path}.{culprit}"),
                    line,
                    message,
                });
                table.remove(culprit.as_str());
            }
            _ => {
                issues.push(ConfigIssue {
                    key: path.to_owned(),
                    line,
                    message,
                });
                return T::default();
            }
        }
    }
}

fn array_of_tables<T: DeserializeOwned + Default>(
    src: &str,
    path: &str,
    value: Spanned<DeValue<'_>>,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<T> {
    let start = value.span().start;
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| section(src, &format!("{path}[{i}]"), item, issues))
            .collect(),
        _ => {
            issues.push(ConfigIssue {
                key: path.to_owned(),
                line: Some(line_of(src, start)),
                message: format!("expected an array of tables (`[[{path}]]` sections)"),
            });
            Vec::new()
        }
    }
}

fn covers(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Byte offset of `key` (`numbers[1].app`) in the document, or of its
/// nearest ancestor present there (a missing key is reported where its table
/// starts).
fn locate(table: &DeTable<'_>, key: &str) -> Option<usize> {
    let mut found = None;
    let mut current = Some(table);
    for part in key.split('.').filter(|part| !part.is_empty()) {
        let Some(table) = current else { break };
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, mut v)) = table.get_key_value(name) else {
            break;
        };
        found = Some(k.span().start);
        if let Some(index) = index {
            match v.get_ref() {
                DeValue::Array(items) if index < items.len() => {
                    v = &items[index];
                    found = Some(v.span().start);
                }
                _ => break,
            }
        }
        current = match v.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => None,
        };
    }
    found
}

/// Names the key a syntax error at `offset` is in: the deepest key whose
/// name or value covers it, else the last table opened before it.
fn key_at_offset(table: &DeTable<'_>, offset: usize, prefix: &str) -> String {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let mut enclosing: Option<(usize, String, &Spanned<DeValue<'_>>)> = None;
    for (k, v) in table.iter() {
        if covers(&k.span(), offset) {
            return join(k.get_ref());
        }
        if covers(&v.span(), offset) {
            return descend(&join(k.get_ref()), v, offset);
        }
        let opened_before = k.span().start <= offset
            && matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_));
        if opened_before
            && enclosing
                .as_ref()
                .is_none_or(|(start, ..)| *start < k.span().start)
        {
            enclosing = Some((k.span().start, join(k.get_ref()), v));
        }
    }
    match enclosing {
        Some((_, name, value)) => descend(&name, value, offset),
        None => prefix.to_owned(),
    }
}

fn descend(name: &str, value: &Spanned<DeValue<'_>>, offset: usize) -> String {
    match value.get_ref() {
        DeValue::Table(inner) => key_at_offset(inner, offset, name),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .rev()
            .find(|(_, item)| item.span().start <= offset)
            .map(|(i, item)| {
                let name = format!("{name}[{i}]");
                match item.get_ref() {
                    DeValue::Table(inner) => key_at_offset(inner, offset, &name),
                    _ => name,
                }
            })
            .unwrap_or_else(|| name.to_owned()),
        _ => name.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Validation

struct Checker<'a> {
    issues: &'a mut Vec<ConfigIssue>,
}

impl Checker<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    fn range(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.fail(key, format!("must be between {min} and {max} (is {value})"));
        }
    }

    fn bytes(&mut self, key: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.fail(
                key,
                format!(
                    "must be between {} and {} (is {value})",
                    human_bytes(min),
                    human_bytes(max)
                ),
            );
        }
    }

    fn duration(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.fail(key, "must be greater than 0");
        } else if value > MAX_DURATION {
            self.fail(
                key,
                format!("must be at most {}", format_duration(MAX_DURATION)),
            );
        }
    }

    fn digits(&mut self, key: &str, value: &str, max_len: usize) -> bool {
        if value.is_empty() {
            self.fail(key, "must be set");
        } else if !value.bytes().all(|b| b.is_ascii_digit()) {
            self.fail(
                key,
                format!("{value:?} must contain digits only (no '+', spaces or dashes)"),
            );
        } else if value.len() > max_len {
            self.fail(key, format!("must be at most {max_len} digits"));
        } else {
            return true;
        }
        false
    }
}

fn human_bytes(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1024 * GIB),
        ("GiB", GIB),
        ("MiB", MIB),
        ("KiB", KIB),
    ] {
        if n >= size && n % size == 0 {
            return format!("{n} ({} {unit})", n / size);
        }
    }
    n.to_string()
}

/// Runs every check and reads every secret, recording each problem. The
/// value returned is only meaningful when no issue was recorded.
fn validate(mut config: Config, ctx: &Ctx<'_>, issues: &mut Vec<ConfigIssue>) -> Resolved {
    let mut check = Checker { issues };
    check_server(&mut config.server, ctx, &mut check);
    check_storage(&config, &mut check);

    let pipeline = &config.pipeline;
    if pipeline.shards > 1024 {
        check.fail(
            "pipeline.shards",
            format!(
                "must be at most 1024, or 0 for one per core (is {})",
                pipeline.shards
            ),
        );
    }
    check.range(
        "pipeline.shard_queue",
        pipeline.shard_queue as u64,
        16,
        1 << 24,
    );

    let metrics = &config.metrics;
    if metrics.enabled && addresses_collide(config.server.listen, metrics.listen) {
        check.fail(
            "metrics.listen",
            format!(
                "{} collides with server.listen ({}); use another port or set metrics.enabled = false",
                metrics.listen, config.server.listen
            ),
        );
    }

    let level = &config.logging.level;
    if level.trim().is_empty() {
        check.fail("logging.level", "must not be empty (e.g. \"info\")");
    } else if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level) {
        check.fail(
            "logging.level",
            format!("{level:?} is not a valid tracing filter: {e}"),
        );
    }

    let admin_token = resolve_secret(
        &mut check,
        ctx,
        SecretSlot {
            table: "auth",
            name: "admin_token",
            inline_form: false,
            inline: None,
            file: config.auth.admin_token_file.as_deref(),
            env: config.auth.admin_token_env.as_deref(),
            required: false,
        },
    );

    check_whatsapp(&mut config.whatsapp, ctx, &mut check);
    check_outbound(&mut config.outbound, ctx, &mut check);
    check_routing(&config.routing, &mut check);
    for (i, n) in config.numbers.iter().enumerate() {
        if let Some(team) = &n.team {
            if team.trim().is_empty() || team.len() > crate::routing::MAX_ID_LEN {
                check.fail(
                    format!("numbers[{i}].team"),
                    format!(
                        "must be a team id of 1 to {} bytes",
                        crate::routing::MAX_ID_LEN
                    ),
                );
            }
        }
    }
    let apps = check_apps(&config.apps, ctx, &mut check);
    let numbers = check_numbers(&config, ctx, &mut check);

    Resolved {
        config,
        source: None,
        apps,
        numbers,
        admin_token: admin_token.flatten(),
    }
}

fn check_server(server: &mut ServerConfig, ctx: &Ctx<'_>, check: &mut Checker<'_>) {
    check.bytes(
        "server.max_body_bytes",
        server.max_body_bytes as u64,
        KIB,
        64 * MIB,
    );
    // hyper panics on an HTTP/1 read buffer below 8 KiB.
    check.bytes(
        "server.max_header_bytes",
        server.max_header_bytes as u64,
        8 * KIB,
        MIB,
    );
    check.range(
        "server.max_connections",
        server.max_connections as u64,
        1,
        1_000_000,
    );
    check.range(
        "server.http2_max_concurrent_streams",
        u64::from(server.http2_max_concurrent_streams),
        1,
        10_000,
    );
    for (key, value) in [
        ("server.tls_handshake_timeout", server.tls_handshake_timeout),
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.body_read_timeout", server.body_read_timeout),
        ("server.idle_timeout", server.idle_timeout),
        ("server.ingest_timeout", server.ingest_timeout),
        ("server.shutdown_timeout", server.shutdown_timeout),
    ] {
        check.duration(key, value);
    }
    for (i, name) in server.tls_names.iter().enumerate() {
        if ServerName::try_from(name.as_str()).is_err() {
            check.fail(
                format!("server.tls_names[{i}]"),
                format!("{name:?} is not a valid DNS name or IP address"),
            );
        }
    }

    match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = resolve_file(cert, ctx);
            let key = resolve_file(key, ctx);
            if let Err(e) = &cert {
                check.fail("server.tls_cert", e.clone());
            }
            if let Err(e) = &key {
                check.fail("server.tls_key", e.clone());
            }
            if let (Ok(cert), Ok(key)) = (cert, key) {
                check_tls_files(&cert, &key, check);
                server.tls_cert = Some(cert);
                server.tls_key = Some(key);
            }
        }
        (Some(_), None) => check.fail(
            "server.tls_cert",
            "is set but tls_key is not: set both, or neither for a self-signed certificate",
        ),
        (None, Some(_)) => check.fail(
            "server.tls_key",
            "is set but tls_cert is not: set both, or neither for a self-signed certificate",
        ),
        (None, None) => {}
    }
}

/// Loads the certificate chain and key the way the listener will, so a bad
/// pair fails `check-config` rather than the first handshake.
fn check_tls_files(cert_path: &Path, key_path: &Path, check: &mut Checker<'_>) {
    let certs = match CertificateDer::pem_file_iter(cert_path) {
        Err(e) => Err(format!("cannot read {}: {e}", cert_path.display())),
        Ok(iter) => match iter.collect::<Result<Vec<_>, _>>() {
            Err(e) => Err(format!("bad PEM in {}: {e}", cert_path.display())),
            Ok(certs) if certs.is_empty() => {
                Err(format!("no CERTIFICATE block in {}", cert_path.display()))
            }
            Ok(certs) => Ok(certs),
        },
    };
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no PRIVATE KEY block in {}", key_path.display())
        }
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read {}: {e}", key_path.display()),
        e => format!("bad PEM in {}: {e}", key_path.display()),
    });
    if let Err(e) = &certs {
        check.fail("server.tls_cert", e.clone());
    }
    let key = match key {
        Ok(key) => key,
        Err(e) => return check.fail("server.tls_key", e),
    };
    let signing_key = match rustls::crypto::ring::sign::any_supported_type(&key) {
        Ok(signing_key) => signing_key,
        Err(e) => {
            return check.fail(
                "server.tls_key",
                format!("unsupported private key in {}: {e}", key_path.display()),
            )
        }
    };
    if let Ok(certs) = certs {
        let pair = rustls::sign::CertifiedKey::new(certs, Arc::clone(&signing_key));
        if let Err(e) = pair.keys_match() {
            check.fail(
                "server.tls_key",
                format!(
                    "{} does not match the certificate in {}: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
            );
        }
    }
}

fn check_storage(config: &Config, check: &mut Checker<'_>) {
    let storage = &config.storage;
    if storage.data_dir.as_os_str().is_empty() {
        check.fail("storage.data_dir", "must not be empty");
    }
    if storage.dedupe_days < 7 {
        check.fail(
            "storage.dedupe_days",
            format!(
                "must be at least 7 (Meta retries deliveries for up to 7 days; is {})",
                storage.dedupe_days
            ),
        );
    } else {
        check.range("storage.dedupe_days", storage.dedupe_days.into(), 7, 3650);
    }
    check.duration("storage.checkpoint_interval", storage.checkpoint_interval);
    check.bytes(
        "storage.max_record_bytes",
        storage.max_record_bytes as u64,
        64 * KIB,
        256 * MIB,
    );
    check.bytes(
        "storage.journal_segment_bytes",
        storage.journal_segment_bytes,
        MIB,
        4 * GIB,
    );
    check.range(
        "storage.journal_queue",
        storage.journal_queue as u64,
        1,
        1 << 20,
    );
    check.bytes(
        "storage.sled_cache_bytes",
        storage.sled_cache_bytes,
        MIB,
        1 << 40,
    );
    // One webhook item (journaled whole, as raw bytes) may be as large as
    // the body, and a record never spans segments.
    if storage.max_record_bytes < config.server.max_body_bytes {
        check.fail(
            "storage.max_record_bytes",
            format!(
                "must be at least server.max_body_bytes ({})",
                config.server.max_body_bytes
            ),
        );
    }
    if storage.journal_segment_bytes < storage.max_record_bytes as u64 {
        check.fail(
            "storage.journal_segment_bytes",
            format!(
                "must be at least storage.max_record_bytes ({})",
                storage.max_record_bytes
            ),
        );
    }
}

/// Two listeners collide when they would bind the same port on overlapping
/// addresses. Port 0 (pick any) never collides.
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_apps(apps: &[AppConfig], ctx: &Ctx<'_>, check: &mut Checker<'_>) -> Vec<ResolvedApp> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(apps.len());
    for (i, app) in apps.iter().enumerate() {
        let table = format!("apps[{i}]");
        let name = app.name.as_str();
        if name.is_empty() {
            check.fail(format!("{table}.name"), "must be set");
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || name.len() > 64
        {
            // Names appear in URLs and metric labels.
            check.fail(
                format!("{table}.name"),
                format!("{name:?} must be 1-64 letters, digits, '-', '_' or '.'"),
            );
        } else if let Some(first) = seen.insert(name, i) {
            seen.insert(name, first);
            check.fail(
                format!("{table}.name"),
                format!("duplicate app name {name:?} (already used by apps[{first}])"),
            );
        }
        let secret = resolve_secret(
            check,
            ctx,
            SecretSlot {
                table: &table,
                name: "app_secret",
                inline_form: true,
                inline: app.app_secret.as_ref(),
                file: app.app_secret_file.as_deref(),
                env: app.app_secret_env.as_deref(),
                required: true,
            },
        );
        let verify_token = resolve_secret(
            check,
            ctx,
            SecretSlot {
                table: &table,
                name: "verify_token",
                inline_form: true,
                inline: app.verify_token.as_ref(),
                file: app.verify_token_file.as_deref(),
                env: app.verify_token_env.as_deref(),
                required: true,
            },
        );
        if let (Some(Some(secret)), Some(Some(verify_token))) = (secret, verify_token) {
            resolved.push(ResolvedApp {
                name: app.name.clone(),
                secret,
                verify_token,
            });
        }
    }
    resolved
}

/// A messages-per-second figure: positive and at most Meta's top tier.
fn check_rate(check: &mut Checker<'_>, key: &str, value: f64) {
    if !(value.is_finite() && value > 0.0 && value <= 1000.0) {
        check.fail(
            key,
            format!("must be more than 0 and at most 1000 messages per second (is {value})"),
        );
    }
}

fn check_whatsapp(w: &mut WhatsappConfig, ctx: &Ctx<'_>, check: &mut Checker<'_>) {
    match graph_base_error(&w.graph_api_base) {
        Some(problem) => check.fail("whatsapp.graph_api_base", problem),
        None => w.graph_api_base = w.graph_api_base.trim_end_matches('/').to_owned(),
    }
    check.duration("whatsapp.connect_timeout", w.connect_timeout);
    check.duration("whatsapp.request_timeout", w.request_timeout);
    if let Some(path) = &w.ca_file {
        let path = ctx.base.join(path);
        match rustls_pki_types::CertificateDer::pem_file_iter(&path) {
            Ok(certs) => {
                if certs
                    .collect::<Result<Vec<_>, _>>()
                    .map_or(true, |c| c.is_empty())
                {
                    check.fail(
                        "whatsapp.ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    );
                }
            }
            Err(e) => check.fail(
                "whatsapp.ca_file",
                format!("cannot read {}: {e}", path.display()),
            ),
        }
        w.ca_file = Some(path);
    }
}

/// Why a Graph API base URL is not acceptable: it must be `https://host[:port]/path`,
/// or plain `http` to a loopback address (the simulator).
pub fn graph_base_error(base: &str) -> Option<String> {
    let Ok(uri) = base.parse::<http::Uri>() else {
        return Some(format!("{base:?} is not a URL"));
    };
    let Some(host) = uri.host() else {
        return Some(format!("{base:?} has no host"));
    };
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") => {
            let loopback = host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            (!loopback)
                .then(|| format!("plain http is only allowed to a loopback address, not {host}"))
        }
        _ => Some(format!("{base:?} must start with https://")),
    }
}

fn check_outbound(o: &mut OutboundConfig, ctx: &Ctx<'_>, check: &mut Checker<'_>) {
    if let Some(path) = &o.filter_file {
        let path = ctx.base.join(path);
        // Loaded in full: a term that normalises to nothing is named with its line.
        if let Err(e) = crate::outbound::filter::Filter::load(&path) {
            check.fail("outbound.filter_file", e.to_string());
        }
        o.filter_file = Some(path);
    }
    check.duration("outbound.filter_reload_interval", o.filter_reload_interval);
    check.duration("outbound.retry_initial_delay", o.retry_initial_delay);
    check.duration("outbound.retry_max_delay", o.retry_max_delay);
    check.duration("outbound.retry_max_age", o.retry_max_age);
    check.duration("outbound.pair_interval", o.pair_interval);
    check.duration("outbound.throttle_hold", o.throttle_hold);
    check.range(
        "outbound.max_in_flight_per_number",
        o.max_in_flight_per_number as u64,
        1,
        1024,
    );
    check.range(
        "outbound.max_bulk_in_flight",
        o.max_bulk_in_flight as u64,
        1,
        65_536,
    );
    check.range(
        "outbound.max_queued_per_number",
        o.max_queued_per_number as u64,
        1,
        100_000_000,
    );
    check.range("outbound.pair_burst", o.pair_burst.into(), 1, 100);
}

fn check_routing(r: &RoutingConfig, check: &mut Checker<'_>) {
    if r.grace_period > Duration::from_secs(7 * 24 * 3600) {
        check.fail("routing.grace_period", "must be at most 7 days");
    }
    if r.first_reply_timeout > Duration::from_secs(7 * 24 * 3600) {
        check.fail("routing.first_reply_timeout", "must be at most 7 days");
    }
    check.duration("routing.tick_interval", r.tick_interval);
    if r.tick_interval > Duration::from_secs(10) {
        check.fail("routing.tick_interval", "must be at most 10s");
    }
    check.range(
        "routing.default_max_concurrent",
        r.default_max_concurrent.into(),
        1,
        1000,
    );
    check.range("routing.queue", r.queue as u64, 16, 1 << 24);
    check.range("routing.stream_buffer", r.stream_buffer as u64, 16, 1 << 20);
}

fn check_numbers(config: &Config, ctx: &Ctx<'_>, check: &mut Checker<'_>) -> Vec<ResolvedNumber> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut displays: HashMap<&str, usize> = HashMap::new();
    let mut resolved = Vec::with_capacity(config.numbers.len());
    for (i, number) in config.numbers.iter().enumerate() {
        let table = format!("numbers[{i}]");
        let id = number.phone_number_id.as_str();
        if check.digits(&format!("{table}.phone_number_id"), id, 32) {
            if let Some(&first) = ids.get(id) {
                check.fail(
                    format!("{table}.phone_number_id"),
                    format!("duplicate phone_number_id {id} (already used by numbers[{first}])"),
                );
            } else {
                ids.insert(id, i);
            }
        }
        let display = number.display_phone_number.as_str();
        if check.digits(&format!("{table}.display_phone_number"), display, 20) {
            if let Some(&first) = displays.get(display) {
                check.fail(
                    format!("{table}.display_phone_number"),
                    format!(
                        "duplicate display_phone_number {display} (already used by numbers[{first}])"
                    ),
                );
            } else {
                displays.insert(display, i);
            }
        }
        if number.app.is_empty() {
            check.fail(
                format!("{table}.app"),
                "must be set to the name of an [[apps]] entry",
            );
        } else if !config.apps.iter().any(|app| app.name == number.app) {
            let mut known: Vec<&str> = config.apps.iter().map(|app| app.name.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            let hint = if known.is_empty() {
                "no [[apps]] are configured".to_owned()
            } else {
                format!("configured apps: {}", known.join(", "))
            };
            check.fail(
                format!("{table}.app"),
                format!("no app named {:?} ({hint})", number.app),
            );
        }
        if let Some(name) = &number.name {
            if name.trim().is_empty() {
                check.fail(format!("{table}.name"), "must not be empty when set");
            }
        }
        if let Some(waba_id) = &number.waba_id {
            check.digits(&format!("{table}.waba_id"), waba_id, 32);
        }
        check_rate(
            check,
            &format!("{table}.max_per_second"),
            number.max_per_second,
        );
        if let Some(r) = number.initial_per_second {
            check_rate(check, &format!("{table}.initial_per_second"), r);
            if r > number.max_per_second {
                check.fail(
                    format!("{table}.initial_per_second"),
                    "must not exceed max_per_second",
                );
            }
        }
        if let Some(r) = number.upgraded_per_second {
            check_rate(check, &format!("{table}.upgraded_per_second"), r);
        }
        if let Some(m) = number.max_per_minute {
            check.range(&format!("{table}.max_per_minute"), m.into(), 1, 60_000);
        }
        let access_token = resolve_secret(
            check,
            ctx,
            SecretSlot {
                table: &table,
                name: "access_token",
                inline_form: true,
                inline: number.access_token.as_ref(),
                file: number.access_token_file.as_deref(),
                env: number.access_token_env.as_deref(),
                required: false,
            },
        );
        if let Some(access_token) = access_token {
            resolved.push(ResolvedNumber {
                config: number.clone(),
                access_token,
            });
        }
    }
    resolved
}

// ---------------------------------------------------------------------------
// Secrets

/// The three ways one secret can be given: `<name>`, `<name>_file`,
/// `<name>_env`.
struct SecretSlot<'a> {
    table: &'a str,
    name: &'a str,
    /// Whether `<name>` itself is a key (not for the admin token: a token
    /// written into a config file tends to leak with it).
    inline_form: bool,
    inline: Option<&'a Secret>,
    file: Option<&'a Path>,
    env: Option<&'a str>,
    /// Exactly one form must be set; otherwise at most one.
    required: bool,
}

/// `Some(Some(secret))` when read, `Some(None)` when optional and not set,
/// `None` when there was a problem (recorded).
fn resolve_secret(
    check: &mut Checker<'_>,
    ctx: &Ctx<'_>,
    slot: SecretSlot<'_>,
) -> Option<Option<Secret>> {
    let name = slot.name;
    let inline_key = name.to_owned();
    let file_key = format!("{name}_file");
    let env_key = format!("{name}_env");
    let mut forms = Vec::new();
    if slot.inline.is_some() {
        forms.push(inline_key.as_str());
    }
    if slot.file.is_some() {
        forms.push(file_key.as_str());
    }
    if slot.env.is_some() {
        forms.push(env_key.as_str());
    }
    let choices = if slot.inline_form {
        format!("{inline_key}, {file_key} or {env_key}")
    } else {
        format!("{file_key} or {env_key}")
    };
    let key = |field: &str| format!("{}.{field}", slot.table);

    match forms.as_slice() {
        [] if slot.required => {
            check.fail(key(name), format!("not set: set exactly one of {choices}"));
            None
        }
        [] => Some(None),
        [_] => {
            let result = if let Some(secret) = slot.inline {
                if secret.is_empty() {
                    Err((inline_key.clone(), "must not be empty".to_owned()))
                } else {
                    Ok(secret.clone())
                }
            } else if let Some(path) = slot.file {
                read_secret_file(path, ctx).map_err(|e| (file_key.clone(), e))
            } else {
                let var = slot.env.unwrap_or_default();
                read_secret_env(var, ctx).map_err(|e| (env_key.clone(), e))
            };
            match result {
                Ok(secret) => Some(Some(secret)),
                Err((field, message)) => {
                    check.fail(key(&field), message);
                    None
                }
            }
        }
        [first, second, ..] => {
            let rule = if slot.required {
                "exactly one"
            } else {
                "at most one"
            };
            check.fail(
                key(second),
                format!("conflicts with {first}: set {rule} of {choices}"),
            );
            None
        }
    }
}

/// Turns a configured file path into the path to open: `credential:NAME` is
/// `$CREDENTIALS_DIRECTORY/NAME` (systemd `LoadCredential=`); relative paths
/// are relative to the config file's directory.
fn resolve_file(path: &Path, ctx: &Ctx<'_>) -> Result<PathBuf, String> {
    let Some(name) = path.to_str().and_then(|p| p.strip_prefix("credential:")) else {
        return Ok(ctx.base.join(path));
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "credential name {name:?} must be a plain file name"
        ));
    }
    match (ctx.env)("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(name)),
        _ => Err(format!(
            "\"credential:{name}\" needs $CREDENTIALS_DIRECTORY, which is not set \
             (add LoadCredential={name}:... to the systemd unit)"
        )),
    }
}

/// Reads a whole secret file and strips one trailing line ending (editors
/// and `echo` add one).
fn read_secret_file(path: &Path, ctx: &Ctx<'_>) -> Result<Secret, String> {
    let full = resolve_file(path, ctx)?;
    let shown = full.display();
    let file = std::fs::File::open(&full).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_SECRET_BYTES} bytes; is it the right file?"
        ));
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    if bytes.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(Secret::new(bytes))
}

fn read_secret_env(var: &str, ctx: &Ctx<'_>) -> Result<Secret, String> {
    if var.is_empty() {
        return Err("must name an environment variable".to_owned());
    }
    match (ctx.env)(var) {
        None => Err(format!("environment variable {var} is not set")),
        Some(value) if value.is_empty() => Err(format!("environment variable {var} is empty")),
        Some(value) => Ok(Secret::new(value.into_encoded_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses with a fake environment instead of the process's.
    fn parse_in(src: &str, dir: &Path, vars: &[(&str, &str)]) -> Result<Resolved, ConfigErrors> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        parse_with_env(src, &dir.join("switchboard.toml"), &|name| {
            vars.get(name).cloned()
        })
    }

    fn errors(src: &str) -> Vec<ConfigIssue> {
        let dir = tempfile::tempdir().unwrap();
        parse_in(src, dir.path(), &[]).unwrap_err().issues
    }

    fn issue<'a>(issues: &'a [ConfigIssue], key: &str) -> &'a ConfigIssue {
        issues
            .iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("no issue for {key} in {issues:#?}"))
    }

    const APP: &str = "[[apps]]\nname = \"main\"\napp_secret = \"s3cret\"\nverify_token = \"vt\"\n";

    #[test]
    fn routing_values_are_validated() {
        let src = format!(
            "[routing]\ntick_interval = \"0s\"\ndefault_max_concurrent = 0\nqueue = 1\n\
             grace_period = \"30d\"\nstream_buffer = 0\n{APP}\
             [[numbers]]\nphone_number_id = \"123\"\ndisplay_phone_number = \"15550000000\"\n\
             app = \"main\"\nteam = \" \"\n"
        );
        let issues = errors(&src);
        for key in [
            "routing.tick_interval",
            "routing.default_max_concurrent",
            "routing.queue",
            "routing.grace_period",
            "routing.stream_buffer",
            "numbers[0].team",
        ] {
            issue(&issues, key);
        }
        let ok = format!("[routing]\ngrace_period = \"10s\"\nfirst_reply_timeout = \"2m\"\n{APP}");
        let dir = tempfile::tempdir().unwrap();
        let r = parse_in(&ok, dir.path(), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.config.routing.grace_period, Duration::from_secs(10));
        assert_eq!(
            r.config.routing.first_reply_timeout,
            Duration::from_secs(120)
        );
    }

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A certificate and matching key, as PEM.
    fn pem_pair() -> (String, String) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (pair.cert.pem(), pair.signing_key.serialize_pem())
    }

    #[test]
    fn no_file_means_working_defaults() {
        let resolved = defaults();
        let config = &resolved.config;
        assert_eq!(
            config.server.listen,
            "127.0.0.1:8443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.metrics.listen,
            "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
        );
        assert!(config.metrics.enabled);
        assert_eq!(config.storage.data_dir, Path::new("./switchboard-data"));
        assert_eq!(config.server.tls_cert, None);
        assert_eq!(config.server.max_body_bytes, 3_145_728);
        assert_eq!(config.server.ingest_timeout, Duration::from_secs(30));
        assert_eq!(config.storage.dedupe_days, 7);
        assert_eq!(config.pipeline.shard_queue, 65_536);
        assert_eq!(config.logging.format, LogFormat::Text);
        assert!(resolved.apps.is_empty() && resolved.numbers.is_empty());
        assert!(resolved.admin_token.is_none() && resolved.source.is_none());

        // An empty file means the same, and the defaults pass validation.
        let dir = tempfile::tempdir().unwrap();
        let parsed = parse_in("", dir.path(), &[]).unwrap();
        assert_eq!(parsed.config, *config);
        assert_eq!(parsed.source, Some(dir.path().join("switchboard.toml")));
        assert!(resolve(Config::default(), dir.path()).is_ok());
    }

    #[test]
    fn example_config_is_complete_and_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        let text = text.replace("/etc/switchboard", root.to_str().unwrap());
        let (cert, key) = pem_pair();
        write(&root, "tls/cert.pem", cert.as_bytes());
        write(&root, "tls/key.pem", key.as_bytes());
        write(&root, "admin.token", b"swb_admin\n");
        write(&root, "app_secret", b"app-secret\n");
        write(&root, "tokens/106540352242922", b"EAAG-token\r\n");
        let path = write(&root, "switchboard.toml", text.as_bytes());

        let resolved = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let config = &resolved.config;
        // Every key is written out, with its default value, except where the
        // contract example deliberately differs (TLS files, auth, apps).
        let mut expected = Config::default();
        expected.server.tls_cert = Some(root.join("tls/cert.pem"));
        expected.server.tls_key = Some(root.join("tls/key.pem"));
        expected.auth.admin_token_file = Some(root.join("admin.token"));
        expected.apps = config.apps.clone();
        expected.numbers = config.numbers.clone();
        assert_eq!(*config, expected);
        // Every key of the schema is shown, set or as a commented alternative.
        let mut full = Config::default();
        full.auth.admin_token_env = Some(String::new());
        full.apps.push(AppConfig {
            app_secret_file: Some(PathBuf::new()),
            app_secret_env: Some(String::new()),
            verify_token_file: Some(PathBuf::new()),
            verify_token_env: Some(String::new()),
            ..AppConfig::default()
        });
        full.numbers.push(NumberConfig {
            access_token_file: Some(PathBuf::new()),
            access_token_env: Some(String::new()),
            name: Some(String::new()),
            waba_id: Some(String::new()),
            team: Some(String::new()),
            ..NumberConfig::default()
        });
        let schema: toml::Table = toml::from_str(&toml::to_string(&full).unwrap()).unwrap();
        let mut keys = vec!["tls_cert", "tls_key", "admin_token_file"];
        keys.extend(["app_secret", "verify_token", "access_token"]);
        for (section, value) in &schema {
            let table = match value {
                toml::Value::Array(items) => items[0].as_table().unwrap(),
                other => other.as_table().unwrap(),
            };
            assert!(
                text.contains(&format!("[{section}]")),
                "[{section}] missing"
            );
            keys.extend(table.keys().map(String::as_str));
        }
        for key in keys {
            let shown = text.lines().any(|line| {
                let line = line.trim_start_matches("# ");
                line.starts_with(&format!("{key} = "))
            });
            assert!(shown, "{key} is not in the example");
        }

        assert_eq!(
            resolved.admin_token.as_ref().unwrap().expose(),
            b"swb_admin"
        );
        let app = resolved.app("main").unwrap();
        assert_eq!(app.secret.expose(), b"app-secret");
        assert_eq!(app.verify_token.expose(), b"replace-with-your-verify-token");
        let number = resolved.number("106540352242922").unwrap();
        assert_eq!(number.config.display_phone_number, "15550783881");
        assert_eq!(number.config.app, "main");
        assert_eq!(
            number.access_token.as_ref().unwrap().expose(),
            b"EAAG-token"
        );

        let summary = check(&path).unwrap();
        assert_eq!(
            summary,
            "ok: 1 app, 1 number; listen 127.0.0.1:8443; data_dir ./switchboard-data"
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_in_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_pair();
        write(dir.path(), "cert.pem", cert.as_bytes());
        write(dir.path(), "notpem.pem", b"hello");
        write(dir.path(), "empty", b"\n");
        let src = r#"
[server]
listen = "0.0.0.0:8443"
tls_cert = "cert.pem"
tls_key = "notpem.pem"
tls_names = ["ok.example", "not a name"]
max_body_bytes = 100000000
max_header_bytes = 100
max_connections = 0
http2_max_concurrent_streams = 0
idle_timeout = "0s"
shutdown_timeout = "48h"

[storage]
data_dir = ""
dedupe_days = 3
checkpoint_interval = "0ms"
journal_segment_bytes = 1024
journal_queue = 0
sled_cache_bytes = 5
max_record_bytes = 65536

[pipeline]
shards = 5000
shard_queue = 4

[metrics]
listen = "127.0.0.1:8443"

[auth]
admin_token_file = "missing.token"
admin_token_env = "ADMIN"

[logging]
level = "info,[[[bad"

[[apps]]
name = "main"
app_secret = "x"
app_secret_env = "SECRET"
verify_token_file = "empty"

[[apps]]
name = "main"
app_secret = ""
verify_token_env = "UNSET"

[[apps]]
name = "has space"
app_secret_file = "credential:app"
verify_token = "v"

[[numbers]]
phone_number_id = "123"
display_phone_number = "+1 555"
app = "nope"
access_token = "a"
access_token_env = "TOKEN"
waba_id = "x1"

[[numbers]]
phone_number_id = "123"
display_phone_number = "15550000000"
name = " "

[[numbers]]
phone_number_id = "12a"
display_phone_number = "15550000000"
app = "main"
"#;
        let issues = parse_in(src, dir.path(), &[]).unwrap_err().issues;
        let expect = [
            ("server.tls_key", 5, "no PRIVATE KEY"),
            ("server.tls_names[1]", 6, "not a valid DNS name"),
            ("server.max_body_bytes", 7, "between 1024"),
            ("server.max_header_bytes", 8, "between 8192"),
            ("server.max_connections", 9, "between 1 and"),
            ("server.http2_max_concurrent_streams", 10, "between 1 and"),
            ("server.idle_timeout", 11, "greater than 0"),
            ("server.shutdown_timeout", 12, "at most 24h"),
            ("storage.data_dir", 15, "must not be empty"),
            ("storage.dedupe_days", 16, "at least 7"),
            ("storage.checkpoint_interval", 17, "greater than 0"),
            ("storage.journal_segment_bytes", 18, "between"),
            (
                "storage.journal_segment_bytes",
                18,
                "at least storage.max_record_bytes",
            ),
            ("storage.journal_queue", 19, "between 1"),
            ("storage.sled_cache_bytes", 20, "between"),
            (
                "storage.max_record_bytes",
                21,
                "at least server.max_body_bytes",
            ),
            ("pipeline.shards", 24, "at most 1024"),
            ("pipeline.shard_queue", 25, "between 16"),
            ("metrics.listen", 28, "collides with server.listen"),
            (
                "auth.admin_token_env",
                32,
                "conflicts with admin_token_file",
            ),
            ("logging.level", 35, "not a valid tracing filter"),
            ("apps[0].app_secret_env", 40, "conflicts with app_secret"),
            ("apps[0].verify_token_file", 41, "is empty"),
            ("apps[1].name", 44, "duplicate app name \"main\""),
            ("apps[1].app_secret", 45, "must not be empty"),
            ("apps[1].verify_token_env", 46, "UNSET is not set"),
            ("apps[2].name", 49, "must be 1-64 letters"),
            ("apps[2].app_secret_file", 50, "CREDENTIALS_DIRECTORY"),
            ("numbers[0].display_phone_number", 55, "digits only"),
            ("numbers[0].app", 56, "no app named \"nope\""),
            (
                "numbers[0].access_token_env",
                58,
                "conflicts with access_token",
            ),
            ("numbers[0].waba_id", 59, "digits only"),
            (
                "numbers[1].phone_number_id",
                62,
                "duplicate phone_number_id 123",
            ),
            ("numbers[1].app", 61, "must be set"),
            ("numbers[1].name", 64, "must not be empty"),
            ("numbers[2].phone_number_id", 67, "digits only"),
            (
                "numbers[2].display_phone_number",
                68,
                "duplicate display_phone_number",
            ),
        ];
        for (key, line, text) in expect {
            let found = issues
                .iter()
                .find(|i| i.key == key && i.message.contains(text))
                .unwrap_or_else(|| panic!("no {key}: {text} in {issues:#?}"));
            assert_eq!(found.line, Some(line), "line of {key}: {found:?}");
        }
        assert_eq!(issues.len(), expect.len(), "{issues:#?}");
        // Reported in file order.
        let lines: Vec<usize> = issues.iter().map(|i| i.line.unwrap()).collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let src = "[server]\nlisten = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n\n[storage]\ndatadir = \"/x\"\n\n[extra]\nk = 1\n\n[[numbers]]\nphone = \"1\"\n";
        let issues = errors(src);
        let server = issue(&issues, "server.listen_addr");
        assert_eq!(server.line, Some(3));
        assert!(
            server.message.contains("unknown field `listen_addr`"),
            "{server:?}"
        );
        assert_eq!(issue(&issues, "storage.datadir").line, Some(6));
        let section = issue(&issues, "extra");
        assert_eq!(section.line, Some(8));
        assert!(section.message.contains("unknown key `extra`"));
        assert_eq!(issue(&issues, "numbers[0].phone").line, Some(12));
    }

    #[test]
    fn type_errors_are_reported_per_key_and_other_keys_still_checked() {
        let src = "[server]\nlisten = \"nonsense\"\nmax_connections = \"many\"\nmax_body_bytes = 1\nidle_timeout = \"soon\"\n[pipeline]\npin_threads = \"yes\"\n[logging]\nformat = \"xml\"\n";
        let issues = errors(src);
        assert_eq!(issue(&issues, "server.listen").line, Some(2));
        assert!(issue(&issues, "server.listen")
            .message
            .contains("socket address"));
        assert_eq!(issue(&issues, "server.max_connections").line, Some(3));
        assert_eq!(issue(&issues, "server.max_body_bytes").line, Some(4));
        let timeout = issue(&issues, "server.idle_timeout");
        assert_eq!(timeout.line, Some(5));
        assert!(
            timeout.message.contains("invalid duration \"soon\""),
            "{timeout:?}"
        );
        assert_eq!(issue(&issues, "pipeline.pin_threads").line, Some(7));
        assert_eq!(issue(&issues, "logging.format").line, Some(9));
        // Keys that failed to parse are not also reported with their default.
        assert_eq!(issues.len(), 6, "{issues:#?}");
    }

    #[test]
    fn sections_of_the_wrong_shape_are_reported() {
        let issues = errors("server = 5\n[apps]\nname = \"x\"\n");
        assert_eq!(issue(&issues, "server").line, Some(1));
        let apps = issue(&issues, "apps");
        assert_eq!(apps.line, Some(2));
        assert!(apps.message.contains("[[apps]]"));
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let issues = errors("[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \n");
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].line, Some(3));
        assert!(issues[0].key.starts_with("server"), "{:?}", issues[0]);

        let issues = errors("[server\nlisten = 1\n");
        assert_eq!(issues[0].line, Some(1), "{issues:#?}");

        // A repeated key is a TOML error too.
        let issues = errors("[metrics]\nenabled = true\nenabled = false\n");
        assert_eq!(issues[0].line, Some(3), "{issues:#?}");
    }

    #[test]
    fn errors_display_one_line_each() {
        let errors = ConfigErrors {
            file: PathBuf::from("/etc/switchboard.toml"),
            issues: vec![
                ConfigIssue {
                    key: "numbers[1].app".into(),
                    line: Some(12),
                    message: "no app named \"x\"".into(),
                },
                ConfigIssue {
                    key: "apps[0].app_secret".into(),
                    line: None,
                    message: "not set".into(),
                },
                ConfigIssue {
                    key: String::new(),
                    line: None,
                    message: "cannot read config file".into(),
                },
            ],
        };
        assert_eq!(
            errors.to_string(),
            "/etc/switchboard.toml:12: numbers[1].app: no app named \"x\"\n\
             /etc/switchboard.toml: apps[0].app_secret: not set\n\
             /etc/switchboard.toml: cannot read config file"
        );

        let missing = load(Path::new("/nonexistent/switchboard.toml")).unwrap_err();
        assert_eq!(missing.file, Path::new("/nonexistent/switchboard.toml"));
        assert!(missing.to_string().contains("cannot read config file"));
    }

    #[test]
    fn secrets_come_inline_from_files_env_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        write(&creds, "main-secret", b"from-credential\n");
        write(dir.path(), "secrets/verify", b"from-relative-file\r\n");
        let absolute = write(dir.path(), "abs-token", b"two\n\n");
        write(dir.path(), "admin", b"admin-token");
        let src = format!(
            "[auth]\nadmin_token_file = \"admin\"\n\
             [[apps]]\nname = \"a\"\napp_secret_file = \"credential:main-secret\"\nverify_token_file = \"secrets/verify\"\n\
             [[apps]]\nname = \"b\"\napp_secret = \"inline\"\nverify_token_env = \"VT\"\n\
             [[numbers]]\nphone_number_id = \"1\"\ndisplay_phone_number = \"2\"\napp = \"a\"\naccess_token_file = \"{}\"\n\
             [[numbers]]\nphone_number_id = \"3\"\ndisplay_phone_number = \"4\"\napp = \"b\"\n",
            absolute.display()
        );
        let vars = [
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
            ("VT", "from-env"),
        ];
        let resolved = parse_in(&src, dir.path(), &vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolved.apps[0].secret.expose(), b"from-credential");
        assert_eq!(
            resolved.apps[0].verify_token.expose(),
            b"from-relative-file"
        );
        assert_eq!(resolved.apps[1].secret.expose(), b"inline");
        assert_eq!(resolved.apps[1].verify_token.expose(), b"from-env");
        // Only one trailing newline is stripped.
        let token = resolved.numbers[0].access_token.as_ref().unwrap();
        assert_eq!(token.expose(), b"two\n");
        assert!(resolved.numbers[1].access_token.is_none());
        assert_eq!(resolved.admin_token.unwrap().expose(), b"admin-token");

        // An admin token from the environment; an empty variable is refused.
        let src = "[auth]\nadmin_token_env = \"ADMIN\"\n";
        let resolved = parse_in(src, dir.path(), &[("ADMIN", "t0k3n")]).unwrap();
        assert_eq!(resolved.admin_token.unwrap().expose(), b"t0k3n");
        let issues = parse_in(src, dir.path(), &[("ADMIN", "")])
            .unwrap_err()
            .issues;
        assert!(issue(&issues, "auth.admin_token_env")
            .message
            .contains("empty"));

        // Relative paths follow the config file, not the working directory.
        let elsewhere = tempfile::tempdir().unwrap();
        let src = "[auth]\nadmin_token_file = \"admin\"\n";
        let issues = parse_in(src, elsewhere.path(), &[]).unwrap_err().issues;
        let missing = issue(&issues, "auth.admin_token_file");
        assert!(
            missing
                .message
                .contains(elsewhere.path().join("admin").to_str().unwrap()),
            "{missing:?}"
        );
    }

    #[test]
    fn credential_without_credentials_directory_names_the_key() {
        let src = format!("{APP}[[numbers]]\nphone_number_id = \"1\"\ndisplay_phone_number = \"2\"\napp = \"main\"\naccess_token_file = \"credential:tok\"\n");
        let issues = errors(&src);
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].key, "numbers[0].access_token_file");
        assert_eq!(issues[0].line, Some(9));
        assert!(issues[0].message.contains("CREDENTIALS_DIRECTORY"));

        let issues = errors(&src.replace("credential:tok", "credential:../x"));
        assert!(issues[0].message.contains("plain file name"), "{issues:#?}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_serialized_config() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = parse_in(APP, dir.path(), &[]).unwrap();
        assert_eq!(resolved.apps[0].secret.expose(), b"s3cret");
        let debug = format!("{resolved:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(resolved.apps[0].secret.to_string(), "<redacted>");

        let printed = toml::to_string(&resolved.config).unwrap();
        assert!(
            !printed.contains("s3cret") && !printed.contains("app_secret"),
            "{printed}"
        );
        assert!(printed.contains("ingest_timeout = \"30s\""), "{printed}");
        // What is printed parses back to the same configuration, minus secrets.
        let back: Config = toml::from_str(&printed).unwrap();
        let mut expected = resolved.config.clone();
        expected.apps[0].app_secret = None;
        expected.apps[0].verify_token = None;
        assert_eq!(back, expected);
    }

    #[test]
    fn secret_equality_compares_whole_values() {
        assert_eq!(Secret::from("abc"), Secret::from("abc".to_owned()));
        assert_ne!(Secret::from("abc"), Secret::from("abd"));
        assert_ne!(Secret::from("abc"), Secret::from("abcd"));
        assert!(Secret::new(Vec::new()).is_empty());
    }

    #[test]
    fn durations_use_friendly_strings() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("PT5S").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten seconds").is_err());
        for text in ["250ms", "10s", "2m", "1h", "2m 30s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }

        let dir = tempfile::tempdir().unwrap();
        let src = "[server]\nbody_read_timeout = \"1m 30s\"\n[storage]\ncheckpoint_interval = \"500ms\"\n";
        let config = parse_in(src, dir.path(), &[]).unwrap().config;
        assert_eq!(config.server.body_read_timeout, Duration::from_secs(90));
        assert_eq!(
            config.storage.checkpoint_interval,
            Duration::from_millis(500)
        );
        let issues = errors("[server]\nidle_timeout = 10\n");
        assert_eq!(issue(&issues, "server.idle_timeout").line, Some(2));
    }

    #[test]
    fn tls_files_must_come_in_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_pair();
        let (_, other_key) = pem_pair();
        write(dir.path(), "cert.pem", cert.as_bytes());
        write(dir.path(), "key.pem", key.as_bytes());
        write(dir.path(), "other.pem", other_key.as_bytes());

        let good = "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";
        let resolved = parse_in(good, dir.path(), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            resolved.config.server.tls_cert,
            Some(dir.path().join("cert.pem"))
        );

        // systemd credentials work for the TLS files too.
        let creds =
            "[server]\ntls_cert = \"credential:cert.pem\"\ntls_key = \"credential:key.pem\"\n";
        let vars = [("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())];
        let resolved = parse_in(creds, Path::new("/nowhere"), &vars).unwrap();
        assert_eq!(
            resolved.config.server.tls_key,
            Some(dir.path().join("key.pem"))
        );

        let issues = errors_in(dir.path(), &good.replace("key.pem", "other.pem"));
        assert!(issue(&issues, "server.tls_key")
            .message
            .contains("does not match"));

        let issues = errors_in(dir.path(), "[server]\ntls_cert = \"cert.pem\"\n");
        assert_eq!(issue(&issues, "server.tls_cert").line, Some(2));

        let issues = errors_in(dir.path(), "[server]\ntls_key = \"key.pem\"\n");
        assert!(issue(&issues, "server.tls_key")
            .message
            .contains("tls_cert is not"));

        // The key file holds no certificate, the cert file no key.
        let swapped = "[server]\ntls_cert = \"key.pem\"\ntls_key = \"cert.pem\"\n";
        let issues = errors_in(dir.path(), swapped);
        assert!(issue(&issues, "server.tls_cert")
            .message
            .contains("no CERTIFICATE"));
        assert!(issue(&issues, "server.tls_key")
            .message
            .contains("no PRIVATE KEY"));

        let issues = errors_in(dir.path(), &good.replace("cert.pem", "gone.pem"));
        assert!(issue(&issues, "server.tls_cert")
            .message
            .contains("cannot read"));
    }

    fn errors_in(dir: &Path, src: &str) -> Vec<ConfigIssue> {
        parse_in(src, dir, &[]).unwrap_err().issues
    }

    #[test]
    fn listeners_must_not_collide() {
        let ok = [
            "[server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            "[server]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.2:9000\"\n",
            "[metrics]\nenabled = false\nlisten = \"127.0.0.1:8443\"\n",
        ];
        let dir = tempfile::tempdir().unwrap();
        for src in ok {
            assert!(parse_in(src, dir.path(), &[]).is_ok(), "{src}");
        }
        let issues = errors("[server]\nlisten = \"[::]:9464\"\n");
        assert_eq!(issue(&issues, "metrics.listen").line, None);
    }

    #[test]
    fn shard_count_defaults_to_cores() {
        let mut config = Config::default();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.shard_count(), cores);
        config.pipeline.shards = 3;
        assert_eq!(config.shard_count(), 3);
    }

    #[test]
    fn json_logging_and_levels_parse() {
        let dir = tempfile::tempdir().unwrap();
        let src = "[logging]\nlevel = \"warn,switchboard::http=debug\"\nformat = \"json\"\n";
        let config = parse_in(src, dir.path(), &[]).unwrap().config;
        assert_eq!(config.logging.format, LogFormat::Json);
        assert_eq!(config.logging.level, "warn,switchboard::http=debug");
    }
}
