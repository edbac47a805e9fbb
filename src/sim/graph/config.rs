//! The simulator's configuration: numbers, the webhook target, status behaviour, faults and
//! window enforcement, readable from TOML (the binary) and buildable in code (tests, benches).
//!
//! Invariants:
//! - every field has a working default, so a file may name only what it changes;
//! - [`SimConfig::validate`] is the single gate: fractions are in `0..=1`, rates positive,
//!   ranges ordered, ids unique and digits, bounds non-zero; [`Simulator::start`] refuses
//!   anything else, and so does a runtime [`Faults`] change;
//! - durations read as friendly strings ("250ms", "6s") or as integer milliseconds, and are
//!   written as strings.
//!
//! [`Simulator::start`]: super::Simulator::start

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SimError;
use crate::config::{format_duration, parse_duration};

/// Meta's default per-number throughput (messages per second).
pub const DEFAULT_MAX_PER_SECOND: f64 = 80.0;
/// Messages to one recipient that may go out at once before the pair interval applies.
pub const DEFAULT_PAIR_BURST: u32 = 3;
/// Meta's pair rate: one message every 6 s to the same user.
pub const DEFAULT_PAIR_INTERVAL: Duration = Duration::from_secs(6);

/// Everything a simulator needs. `SimConfig::default()` listens on `127.0.0.1:0` with no
/// numbers and no webhook target.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Where the Graph API listens (plain HTTP/1.1; port 0 picks one).
    pub listen: SocketAddr,
    pub numbers: Vec<SimNumber>,
    /// Where status webhooks and generated inbound messages are posted (the daemon).
    pub webhook: Option<WebhookTarget>,
    pub statuses: StatusBehaviour,
    pub faults: Faults,
    /// What happens to a free-form send outside the customer-service window.
    pub window: WindowEnforcement,
    /// Time between two pair-limit tokens (Meta: 6 s).
    #[serde(with = "dur")]
    pub pair_interval: Duration,
    /// Accepted sends kept for [`SimHandle::sends`](super::SimHandle::sends); later ones are
    /// only counted.
    pub record_limit: usize,
    /// Seeds every random choice (faults, jitter, status fates, inbound mix).
    pub seed: u64,
    /// Part of every generated wamid; default: derived from the time and pid, so wamids never
    /// repeat across runs against the same daemon data.
    pub run_id: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            numbers: Vec::new(),
            webhook: None,
            statuses: StatusBehaviour::default(),
            faults: Faults::default(),
            window: WindowEnforcement::default(),
            pair_interval: DEFAULT_PAIR_INTERVAL,
            record_limit: 100_000,
            seed: 0,
            run_id: None,
        }
    }
}

/// One simulated business number.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimNumber {
    pub phone_number_id: String,
    pub display_phone_number: String,
    /// The access token sends must present as `Authorization: Bearer <token>`.
    pub token: String,
    /// Accepted sends allowed in any sliding 1-second window.
    #[serde(default = "default_max_per_second")]
    pub max_per_second: f64,
    /// Pair-limit burst per recipient (then one per `pair_interval`).
    #[serde(default = "default_pair_burst")]
    pub pair_burst: u32,
}

fn default_max_per_second() -> f64 {
    DEFAULT_MAX_PER_SECOND
}

fn default_pair_burst() -> u32 {
    DEFAULT_PAIR_BURST
}

impl SimNumber {
    /// A number with Meta's default limits.
    pub fn new(phone_number_id: &str, display_phone_number: &str, token: &str) -> Self {
        SimNumber {
            phone_number_id: phone_number_id.to_owned(),
            display_phone_number: display_phone_number.to_owned(),
            token: token.to_owned(),
            max_per_second: DEFAULT_MAX_PER_SECOND,
            pair_burst: DEFAULT_PAIR_BURST,
        }
    }
}

/// Where webhooks go. In TOML: `url` (`https://host:port/path` or `http://...`), `ca` (PEM,
/// required for https), optional `server_name` (default: the URL's host), `app_secret`,
/// `waba_id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "WebhookFile")]
pub struct WebhookTarget {
    pub addr: SocketAddr,
    /// CA file to trust: TLS when set, plain HTTP otherwise.
    pub tls: Option<PathBuf>,
    /// The name the server certificate must carry (TLS only).
    pub server_name: String,
    /// Request path, e.g. `/webhooks/whatsapp`.
    pub path: String,
    /// Signs every POST (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// `entry[].id` of every webhook.
    pub waba_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    app_secret: String,
    #[serde(default = "default_waba_id")]
    waba_id: String,
}

fn default_waba_id() -> String {
    "900000000000001".to_owned()
}

impl TryFrom<WebhookFile> for WebhookTarget {
    type Error = String;

    fn try_from(file: WebhookFile) -> Result<Self, String> {
        let mut target = WebhookTarget::from_url(&file.url, file.ca, &file.app_secret)?;
        if let Some(name) = file.server_name {
            target.server_name = name;
        }
        target.waba_id = file.waba_id;
        Ok(target)
    }
}

impl WebhookTarget {
    /// Parses `https://host:port/path` (needs `ca`) or `http://host:port/path`; resolves the
    /// host now. The WABA id defaults to `900000000000001`.
    pub fn from_url(url: &str, ca: Option<PathBuf>, app_secret: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("webhook url {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => {
                Some(ca.ok_or_else(|| format!("webhook url {url:?} is https: `ca` is required"))?)
            }
            Some("http") => None,
            _ => return Err(format!("webhook url {url:?}: expected http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("webhook url {url:?} has no host"))?;
        let port = uri
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare_host, port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_owned();
        Ok(WebhookTarget {
            addr,
            tls,
            server_name: bare_host.to_owned(),
            path,
            app_secret: app_secret.to_owned(),
            waba_id: default_waba_id(),
        })
    }

    /// A plain-HTTP target (tests' small servers).
    pub fn plain(addr: SocketAddr, path: &str, app_secret: &str, waba_id: &str) -> Self {
        WebhookTarget {
            addr,
            tls: None,
            server_name: "localhost".to_owned(),
            path: path.to_owned(),
            app_secret: app_secret.to_owned(),
            waba_id: waba_id.to_owned(),
        }
    }
}

/// What the simulator does with a free-form (non-template) send to a customer whose last
/// inbound message is more than 24 h old (or unknown). On by default (`reject`), as on Meta.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowEnforcement {
    /// Accept everything (benchmarks that send to arbitrary recipients).
    Off,
    /// Refuse at once: HTTP 400, code 131047.
    #[default]
    Reject,
    /// Accept (200, a wamid), then post a `failed` status with 131047, which is how Meta
    /// commonly reports it: the daemon must handle both.
    FailedStatus,
}

/// A uniform random delay in `min..=max`. In TOML: `["20ms", "80ms"]` or one duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayRange {
    pub min: Duration,
    pub max: Duration,
}

impl DelayRange {
    pub const fn new(min: Duration, max: Duration) -> Self {
        DelayRange { min, max }
    }

    pub const fn fixed(d: Duration) -> Self {
        DelayRange { min: d, max: d }
    }

    pub const fn ms(min: u64, max: u64) -> Self {
        DelayRange::new(Duration::from_millis(min), Duration::from_millis(max))
    }
}

impl Serialize for DelayRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [format_duration(self.min), format_duration(self.max)].serialize(s)
    }
}

impl<'de> Deserialize<'de> for DelayRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(DurationValue),
            Two([DurationValue; 2]),
        }
        Ok(match Form::deserialize(d)? {
            Form::One(v) => DelayRange::fixed(v.0),
            Form::Two([a, b]) => DelayRange::new(a.0, b.0),
        })
    }
}

/// How status webhooks behave. Fractions are probabilities per accepted send (or per status
/// for `duplicate`), drawn from the seeded generator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusBehaviour {
    /// From the send to its `sent` status.
    pub sent_delay: DelayRange,
    /// From `sent` to `delivered` (or `failed`).
    pub delivered_delay: DelayRange,
    /// From `delivered` to `read`.
    pub read_delay: DelayRange,
    /// Sends that are read.
    pub read_fraction: f64,
    /// Sends that fail (after `sent`) with `fail_code` instead of being delivered.
    pub fail_fraction: f64,
    pub fail_code: i64,
    /// Read sends whose `read` is posted before their `delivered`.
    pub out_of_order_fraction: f64,
    /// Statuses posted twice (the copy a little later).
    pub duplicate_fraction: f64,
    /// Sends whose `sent` status is posted, and answered by the target, before the send's
    /// HTTP 200 goes out.
    pub sent_before_response_fraction: f64,
    /// Statuses per POST at most.
    pub max_batch: usize,
    /// Once a status is due, how long to wait for others to share its POST.
    #[serde(with = "dur")]
    pub batch_linger: Duration,
    /// Statuses waiting to be posted; beyond it new ones are dropped and counted.
    pub max_pending: usize,
    /// Webhook POSTs in flight at once (retries included).
    pub max_in_flight: usize,
    /// Further attempts after a non-200 answer or a transport error.
    pub retries: u32,
    /// Backoff before the first retry; doubled for each later one.
    #[serde(with = "dur")]
    pub retry_backoff: Duration,
    /// Bound on one webhook POST.
    #[serde(with = "dur")]
    pub request_timeout: Duration,
}

impl Default for StatusBehaviour {
    fn default() -> Self {
        StatusBehaviour {
            sent_delay: DelayRange::ms(20, 80),
            delivered_delay: DelayRange::ms(50, 300),
            read_delay: DelayRange::ms(200, 1500),
            read_fraction: 0.5,
            fail_fraction: 0.02,
            fail_code: 131026,
            out_of_order_fraction: 0.05,
            duplicate_fraction: 0.02,
            sent_before_response_fraction: 0.05,
            max_batch: 50,
            batch_linger: Duration::from_millis(5),
            max_pending: 100_000,
            max_in_flight: 8,
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl StatusBehaviour {
    /// Every status in order, one at a time, nothing random beyond the delays: for tests that
    /// want plain sent → delivered → read.
    pub fn orderly() -> Self {
        StatusBehaviour {
            read_fraction: 1.0,
            fail_fraction: 0.0,
            out_of_order_fraction: 0.0,
            duplicate_fraction: 0.0,
            sent_before_response_fraction: 0.0,
            ..StatusBehaviour::default()
        }
    }
}

/// Faults of the Graph API itself; changeable at runtime ([`SimHandle::set_faults`],
/// `POST /sim/faults`, which merges the keys it is given).
///
/// [`SimHandle::set_faults`]: super::SimHandle::set_faults
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every Graph API request before it is processed.
    #[serde(with = "dur")]
    pub latency: Duration,
    /// Plus a uniform random `0..=jitter`.
    #[serde(with = "dur")]
    pub jitter: Duration,
    /// Requests answered 500 (code 1 or 2) or 503 (code 2) instead of being processed.
    pub error_fraction: f64,
    /// Requests whose answer is held back.
    pub hang_fraction: f64,
    /// How long a hanging request is held; `None` (`"never"`) = until shutdown.
    #[serde(with = "opt_dur")]
    pub hang_for: Option<Duration>,
    /// Hang after processing (the message is sent, the client never learns it) instead of
    /// before (nothing happens until the hang ends).
    pub hang_after_processing: bool,
    /// Answer 130429 with HTTP 429 instead of Meta's HTTP 400.
    pub throttle_http_429: bool,
}

impl SimConfig {
    /// Reads a TOML file (relative `ca` paths are relative to the file).
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|error| SimError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg = Self::from_toml(&text).map_err(|e| match e {
            SimError::Config(msg) => SimError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        if let (Some(target), Some(dir)) = (cfg.webhook.as_mut(), path.parent()) {
            if let Some(ca) = target.tls.as_mut() {
                if ca.is_relative() {
                    *ca = dir.join(&*ca);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let cfg: SimConfig = toml::from_str(text).map_err(|e| SimError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every rule; the first problem is the error.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::Config(msg));
        let mut ids = HashSet::new();
        for n in &self.numbers {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(&n.phone_number_id) || !digits(&n.display_phone_number) {
                return bad(format!(
                    "number {:?}: phone_number_id and display_phone_number must be digits",
                    n.phone_number_id
                ));
            }
            if !ids.insert(n.phone_number_id.as_str()) {
                return bad(format!("number {:?} is listed twice", n.phone_number_id));
            }
            if n.token.is_empty() {
                return bad(format!("number {:?}: empty token", n.phone_number_id));
            }
            if !(n.max_per_second.is_finite() && n.max_per_second > 0.0) {
                return bad(format!(
                    "number {:?}: max_per_second must be positive",
                    n.phone_number_id
                ));
            }
            if n.pair_burst == 0 {
                return bad(format!(
                    "number {:?}: pair_burst must be at least 1",
                    n.phone_number_id
                ));
            }
        }
        if self.pair_interval.is_zero() {
            return bad("pair_interval must be positive".into());
        }
        if let Some(w) = &self.webhook {
            if !w.path.starts_with('/') {
                return bad(format!("webhook path {:?} must start with /", w.path));
            }
        }
        let s = &self.statuses;
        for (name, f) in [
            ("read_fraction", s.read_fraction),
            ("fail_fraction", s.fail_fraction),
            ("out_of_order_fraction", s.out_of_order_fraction),
            ("duplicate_fraction", s.duplicate_fraction),
            (
                "sent_before_response_fraction",
                s.sent_before_response_fraction,
            ),
        ] {
            check_fraction(&format!("statuses.{name}"), f)?;
        }
        for (name, r) in [
            ("sent_delay", s.sent_delay),
            ("delivered_delay", s.delivered_delay),
            ("read_delay", s.read_delay),
        ] {
            if r.min > r.max {
                return bad(format!("statuses.{name}: min is above max"));
            }
        }
        if s.max_batch == 0 || s.max_pending == 0 || s.max_in_flight == 0 {
            return bad(
                "statuses.max_batch, max_pending and max_in_flight must be at least 1".into(),
            );
        }
        if s.request_timeout.is_zero() {
            return bad("statuses.request_timeout must be positive".into());
        }
        self.faults.validate()
    }
}

impl Faults {
    /// Fractions in `0..=1`.
    pub fn validate(&self) -> Result<(), SimError> {
        check_fraction("faults.error_fraction", self.error_fraction)?;
        check_fraction("faults.hang_fraction", self.hang_fraction)
    }
}

fn check_fraction(name: &str, f: f64) -> Result<(), SimError> {
    if (0.0..=1.0).contains(&f) {
        Ok(())
    } else {
        Err(SimError::Config(format!(
            "{name} must be within 0..=1, not {f}"
        )))
    }
}

/// A duration written as a string ("250ms") or as integer milliseconds.
struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Millis(u64),
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Millis(ms) => Ok(DurationValue(Duration::from_millis(ms))),
            Form::Text(t) => parse_duration(&t)
                .map(DurationValue)
                .map_err(serde::de::Error::custom),
        }
    }
}

mod dur {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        DurationValue::deserialize(d).map(|v| v.0)
    }
}

mod opt_dur {
    use super::*;

    const NEVER: &str = "never";

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_str(NEVER),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Millis(u64),
            Text(String),
        }
        match Form::deserialize(d)? {
            Form::Millis(ms) => Ok(Some(Duration::from_millis(ms))),
            Form::Text(t) if t == NEVER => Ok(None),
            Form::Text(t) => parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../../../config/sim.toml");
        let cfg = SimConfig::from_toml(text).unwrap();
        assert_eq!(cfg.numbers.len(), 2);
        assert_eq!(cfg.window, WindowEnforcement::Reject);
        let target = cfg.webhook.unwrap();
        assert_eq!(target.path, "/webhooks/whatsapp");
        assert!(target.tls.is_some());
        assert_eq!(cfg.statuses.sent_delay, DelayRange::ms(20, 80));
    }

    #[test]
    fn defaults_fill_what_a_file_leaves_out_and_bad_values_are_refused() {
        let cfg = SimConfig::from_toml(
            "[[numbers]]\nphone_number_id = \"1\"\ndisplay_phone_number = \"2\"\ntoken = \"t\"\n",
        )
        .unwrap();
        assert_eq!(cfg.numbers[0].max_per_second, 80.0);
        assert_eq!(cfg.numbers[0].pair_burst, 3);
        assert_eq!(cfg.pair_interval, Duration::from_secs(6));
        assert!(cfg.webhook.is_none());

        for bad in [
            "[faults]\nerror_fraction = 1.5\n",
            "[statuses]\nsent_delay = [\"80ms\", \"20ms\"]\n",
            "[[numbers]]\nphone_number_id = \"x\"\ndisplay_phone_number = \"2\"\ntoken = \"t\"\n",
            "[webhook]\nurl = \"https://127.0.0.1:1/w\"\napp_secret = \"s\"\n",
            "unknown = 1\n",
        ] {
            assert!(
                matches!(SimConfig::from_toml(bad), Err(SimError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_read_as_strings_or_milliseconds_and_never() {
        let f: Faults =
            serde_json::from_str(r#"{"latency":"15ms","jitter":5,"hang_for":"never"}"#).unwrap();
        assert_eq!(f.latency, Duration::from_millis(15));
        assert_eq!(f.jitter, Duration::from_millis(5));
        assert_eq!(f.hang_for, None);
        let back = serde_json::to_value(&f).unwrap();
        assert_eq!(back["latency"], "15ms");
        assert_eq!(back["hang_for"], "never");
    }

    #[test]
    fn urls_become_targets() {
        let t = WebhookTarget::from_url("http://127.0.0.1:9000/hook", None, "s").unwrap();
        assert_eq!(t.addr, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!((t.path.as_str(), t.tls.is_none()), ("/hook", true));
        let t = WebhookTarget::from_url("https://localhost:8443/w", Some("ca.pem".into()), "s")
            .unwrap();
        assert_eq!((t.server_name.as_str(), t.addr.port()), ("localhost", 8443));
        assert!(WebhookTarget::from_url("ftp://x/y", None, "s").is_err());
    }
}
