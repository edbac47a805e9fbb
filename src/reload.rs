//! Configuration reload without a restart: `SIGHUP`, or `switchboard reload`
//! (which sends it to the daemon named by the pid file in the data directory
//! and waits for the outcome the daemon writes next to it).
//!
//! A reload reads the daemon's config file again and validates all of it
//! exactly as a start would (every secret readable, certificates parse, names
//! consistent), then builds what it needs (the TLS server config, the
//! sensitive-word list) — all before anything changes. Only when everything
//! is good does it swap, in this order: webhook keys and verify tokens, the
//! TLS certificate, the sensitive-word list, the managed numbers, the
//! dispatchers' lanes (tokens, send ceilings, numbers added and removed).
//! A config with any problem changes nothing: every problem is logged with
//! its file, line and key, `switchboard_config_reloads_total{result="error"}`
//! goes up and `switchboard_config_last_reload_success` reads 0.
//!
//! What a reload applies: `[[apps]]`, `[[numbers]]`, `server.tls_cert` and
//! `server.tls_key` (the files are read again even when the paths did not
//! change, so a renewed certificate is picked up), `server.max_body_bytes`,
//! `server.body_read_timeout` and `outbound.filter_file`. Every other key is
//! read at start only: a change is reported in the log as needing a restart
//! and otherwise ignored (the value in force stays, also for a store reopen).
//!
//! Invariants: requests in flight are not disturbed (a webhook keeps the
//! settings it started with, an established TLS connection keeps its
//! certificate, a send keeps the token it read); reloads are serialised (one
//! supervisor task runs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigErrors, Resolved};
use crate::http::app::WebhookSettings;
use crate::http::tls::{load_or_generate, TlsError};
use crate::outbound::filter::{Filter, FilterError, FilterSet, WatcherGuard};
use crate::outbound::TermCheck;
use crate::telemetry::names;
use crate::whatsapp::AppKeys;

/// Where the daemon writes the outcome of its last reload (in `data_dir`).
pub const STATUS_FILE: &str = "reload-status.json";
/// The daemon's pid file (in `data_dir`).
pub const PID_FILE: &str = "switchboard.pid";

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the daemon was started without a config file: there is nothing to reload")]
    NoConfigFile,
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("TLS certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("sensitive-word list: {0}")]
    Filter(#[from] FilterError),
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// One line per problem (a config error names file, line and key).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Config(errors) => errors.to_string().lines().map(String::from).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// What the webhook endpoint authenticates with, from a resolved config.
pub fn webhook_settings(resolved: &Resolved) -> WebhookSettings {
    let keys = AppKeys::new(
        &resolved
            .apps
            .iter()
            .map(|a| (a.name.clone(), a.secret.expose().to_vec()))
            .collect::<Vec<_>>(),
    );
    WebhookSettings {
        keys,
        verify_tokens: resolved
            .apps
            .iter()
            .map(|a| a.verify_token.clone())
            .collect(),
        max_body_bytes: resolved.config.server.max_body_bytes,
        body_read_timeout: resolved.config.server.body_read_timeout,
    }
}

/// The config that will be in force after a reload from `new`: the
/// reloadable parts from `new`, everything else from `old`; and the dotted
/// keys whose new value is ignored until a restart.
pub fn in_force(old: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut merged = old.clone();
    merged.apps = new.apps.clone();
    merged.numbers = new.numbers.clone();
    merged.server.tls_cert = new.server.tls_cert.clone();
    merged.server.tls_key = new.server.tls_key.clone();
    merged.server.max_body_bytes = new.server.max_body_bytes;
    merged.server.body_read_timeout = new.server.body_read_timeout;
    merged.outbound.filter_file = new.outbound.filter_file.clone();
    let mut ignored = Vec::new();
    let (a, b) = (
        serde_json::to_value(&merged).unwrap_or_default(),
        serde_json::to_value(new).unwrap_or_default(),
    );
    diff_keys(&a, &b, "", &mut ignored);
    (merged, ignored)
}

/// Dotted keys (`server.listen`) under which `a` and `b` differ.
fn diff_keys(a: &serde_json::Value, b: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_keys(va, vb, &key, out),
                    _ => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The sensitive-word list to put in force.
pub enum FilterPlan {
    /// The same file: read it again (`FilterSet::reload`).
    Reload,
    /// Another file (or none).
    Replace(Option<PathBuf>),
}

/// A new configuration, read and checked; nothing changed yet.
pub struct Prepared {
    /// What will be in force (restart-only keys keep their current values).
    pub resolved: Resolved,
    pub tls: Arc<rustls::ServerConfig>,
    pub filter: FilterPlan,
    /// Keys whose change needs a restart (ignored).
    pub needs_restart: Vec<String>,
}

/// Read and validate the config file `current` came from, and everything it
/// points at. Blocking (file reads, PEM parsing, the filter's automaton).
pub fn prepare(
    current: &Resolved,
    filter_in_force: Option<&Path>,
) -> Result<Prepared, ReloadError> {
    let path = current.source.as_deref().ok_or(ReloadError::NoConfigFile)?;
    let new = config::load(path).map_err(ReloadError::Config)?;
    let (merged, needs_restart) = in_force(&current.config, &new.config);
    let server = &merged.server;
    let paths = server.tls_cert.as_deref().zip(server.tls_key.as_deref());
    let tls = load_or_generate(paths, &merged.storage.data_dir, &server.tls_names)?;
    let filter_file = merged.outbound.filter_file.clone();
    // Validate the list now; it is read again when put in force.
    if let Some(p) = &filter_file {
        Filter::load(p)?;
    }
    let filter = if filter_file.as_deref() == filter_in_force {
        FilterPlan::Reload
    } else {
        FilterPlan::Replace(filter_file)
    };
    Ok(Prepared {
        resolved: Resolved {
            config: merged,
            source: current.source.clone(),
            apps: new.apps,
            numbers: new.numbers,
            // `[auth]` is read at start only.
            admin_token: current.admin_token.clone(),
        },
        tls: tls.server_config,
        filter,
        needs_restart,
    })
}

/// The sensitive-word list in force for outbound checks, watched for edits;
/// a reload may read it again or point it at another file.
pub struct Terms {
    set: ArcSwap<FilterSet>,
    watcher: Mutex<Option<WatcherGuard>>,
    interval: Duration,
}

impl std::fmt::Debug for Terms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terms")
            .field("set", &self.set.load())
            .finish()
    }
}

impl Terms {
    /// Load the list (`None`: no terms) and watch its file every `interval`.
    pub fn start(path: Option<PathBuf>, interval: Duration) -> Result<Terms, FilterError> {
        let set = Arc::new(FilterSet::new(path)?);
        let watcher = watch(&set, interval);
        Ok(Terms {
            set: ArcSwap::new(set),
            watcher: Mutex::new(watcher),
            interval,
        })
    }

    /// The file the list in force comes from.
    pub fn path(&self) -> Option<PathBuf> {
        self.set.load().path().map(Path::to_path_buf)
    }

    /// Put a prepared plan in force. An error (the file changed again since
    /// it was validated) keeps the list in force and is logged.
    pub fn apply(&self, plan: FilterPlan) -> Result<(), FilterError> {
        match plan {
            FilterPlan::Reload => self.set.load().reload().map(|_| ()),
            FilterPlan::Replace(path) => {
                let set = Arc::new(FilterSet::new(path.clone())?);
                let watcher = watch(&set, self.interval);
                self.set.store(set);
                // The old watcher thread stops (and is joined) here.
                *self.watcher.lock() = watcher;
                metrics::counter!(names::FILTER_RELOADS, "result" => "ok").increment(1);
                tracing::info!(path = ?path, terms = self.set.load().current().len(), "sensitive-word list replaced");
                Ok(())
            }
        }
    }
}

fn watch(set: &Arc<FilterSet>, interval: Duration) -> Option<WatcherGuard> {
    match set.spawn_watcher(interval) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the sensitive-word list watcher; edits take effect on reload only");
            None
        }
    }
}

impl TermCheck for Terms {
    fn blocked_term(&self, text: &str) -> Option<String> {
        self.set.load().check(text).map(|m| m.term)
    }
}

/// The outcome of the last reload, as the daemon writes it to
/// [`STATUS_FILE`] for `switchboard reload` (generation 0: the start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub pid: u32,
    pub generation: u64,
    pub ok: bool,
    /// RFC 3339 UTC.
    pub at: String,
    pub config: Option<PathBuf>,
    /// One line per problem (rejected reload).
    pub errors: Vec<String>,
    /// Keys whose change was ignored until a restart.
    pub needs_restart: Vec<String>,
    /// What changed, e.g. `numbers added: 1061...`.
    pub changes: Vec<String>,
}

impl ReloadStatus {
    pub fn new(generation: u64, source: Option<&Path>) -> ReloadStatus {
        ReloadStatus {
            pid: std::process::id(),
            generation,
            ok: true,
            at: jiff::Timestamp::now().to_string(),
            config: source.map(Path::to_path_buf),
            errors: Vec::new(),
            needs_restart: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Written atomically (temporary file, rename); a failure is logged.
    pub fn write(&self, data_dir: &Path) {
        let path = data_dir.join(STATUS_FILE);
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the reload status file");
        }
    }

    pub fn read(data_dir: &Path) -> Option<ReloadStatus> {
        let bytes = std::fs::read(data_dir.join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Count a reload's result in the metrics.
pub fn count(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(names::CONFIG_RELOADS, "result" => result).increment(1);
    metrics::gauge!(names::CONFIG_LAST_RELOAD_SUCCESS).set(if ok { 1.0 } else { 0.0 });
}

/// Declare the reload metrics at start (both results at 0, success 1).
pub fn init_metrics() {
    for result in ["ok", "error"] {
        metrics::counter!(names::CONFIG_RELOADS, "result" => result).increment(0);
    }
    metrics::gauge!(names::CONFIG_LAST_RELOAD_SUCCESS).set(1.0);
}

// ---------------------------------------------------------------------------
// `switchboard reload`

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not TOML: {message}", path.display())]
    ParseConfig { path: PathBuf, message: String },
    #[error("no running daemon: cannot read its pid file {} ({source})", path.display())]
    NoPidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the pid file {} does not hold a process id", path.display())]
    BadPidFile { path: PathBuf },
    #[error("process {pid} from {} is not a running switchboard (stale pid file?)", path.display())]
    NotRunning { pid: i32, path: PathBuf },
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
    #[error("the daemon (pid {pid}) did not report the reload within {timeout:?}; see its log")]
    NoAnswer { pid: i32, timeout: Duration },
}

/// The data directory a config file names (only `storage.data_dir` is
/// read: the daemon validates the whole file itself, with its own
/// environment and credentials). Relative paths are taken from the current
/// directory, as the daemon does.
pub fn data_dir_of(config_file: Option<&Path>) -> Result<PathBuf, RequestError> {
    let default = Config::default().storage.data_dir;
    let Some(path) = config_file else {
        return Ok(default);
    };
    let text = std::fs::read_to_string(path).map_err(|source| RequestError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| RequestError::ParseConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(table
        .get("storage")
        .and_then(|s| s.get("data_dir"))
        .and_then(|d| d.as_str())
        .map_or(default, PathBuf::from))
}

/// Is `pid` a running switchboard? Where `/proc` cannot tell, assume so.
fn is_switchboard(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("switchboard"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}

/// Signal the daemon whose pid file is in `data_dir` and wait (up to
/// `timeout`) for the outcome it reports.
pub fn request(data_dir: &Path, timeout: Duration) -> Result<ReloadStatus, RequestError> {
    let pid_path = data_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&pid_path).map_err(|source| RequestError::NoPidFile {
        path: pid_path.clone(),
        source,
    })?;
    let pid: i32 =
        text.trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| RequestError::BadPidFile {
                path: pid_path.clone(),
            })?;
    if !is_switchboard(pid) {
        return Err(RequestError::NotRunning {
            pid,
            path: pid_path,
        });
    }
    let before = ReloadStatus::read(data_dir)
        .filter(|s| s.pid == pid as u32)
        .map_or(0, |s| s.generation);
    let target = rustix::process::Pid::from_raw(pid).ok_or(RequestError::BadPidFile {
        path: pid_path.clone(),
    })?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        RequestError::Signal {
            pid,
            source: e.into(),
        }
    })?;
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = ReloadStatus::read(data_dir) {
            if s.pid == pid as u32 && s.generation > before {
                return Ok(s);
            }
        }
        if Instant::now() >= end {
            return Err(RequestError::NoAnswer { pid, timeout });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A human summary of a reload status, one item per line.
pub fn describe(status: &ReloadStatus) -> String {
    let mut out = BTreeMap::new();
    let head = if status.ok {
        format!(
            "reloaded (pid {}, reload #{})",
            status.pid, status.generation
        )
    } else {
        format!(
            "reload REJECTED; the previous config stays in force (pid {}, reload #{})",
            status.pid, status.generation
        )
    };
    out.insert(0, vec![head]);
    out.insert(1, status.errors.clone());
    out.insert(2, status.changes.clone());
    out.insert(
        3,
        status
            .needs_restart
            .iter()
            .map(|k| format!("{k}: changed, needs a restart (ignored until then)"))
            .collect(),
    );
    out.into_values().flatten().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_force_takes_reloadable_keys_and_names_the_rest() {
        let old = Config::default();
        let mut new = old.clone();
        new.server.listen = "127.0.0.1:9443".parse().unwrap();
        new.server.tls_cert = Some("new.pem".into());
        new.server.max_body_bytes = 1 << 20;
        new.storage.data_dir = "/elsewhere".into();
        new.pipeline.shards = 7;
        new.outbound.filter_file = Some("terms.txt".into());
        new.numbers.push(crate::config::NumberConfig {
            phone_number_id: "1".into(),
            ..Default::default()
        });
        let (merged, ignored) = in_force(&old, &new);
        assert_eq!(
            ignored,
            vec!["pipeline.shards", "server.listen", "storage.data_dir"]
        );
        assert_eq!(merged.server.listen, old.server.listen);
        assert_eq!(merged.storage, old.storage);
        assert_eq!(merged.server.tls_cert, new.server.tls_cert);
        assert_eq!(merged.server.max_body_bytes, 1 << 20);
        assert_eq!(merged.outbound.filter_file, new.outbound.filter_file);
        assert_eq!(merged.numbers, new.numbers);
        // Nothing changed: nothing to report.
        assert!(in_force(&old, &old).1.is_empty());
    }

    #[test]
    fn data_dir_comes_from_the_file_or_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "[storage]\ndata_dir = \"/var/lib/sb\"\n[[apps]]\nname = 1\n",
        )
        .unwrap();
        assert_eq!(data_dir_of(Some(&f)).unwrap(), PathBuf::from("/var/lib/sb"));
        std::fs::write(&f, "[server]\n").unwrap();
        assert_eq!(
            data_dir_of(Some(&f)).unwrap(),
            Config::default().storage.data_dir
        );
        std::fs::write(&f, "[server\n").unwrap();
        assert!(matches!(
            data_dir_of(Some(&f)),
            Err(RequestError::ParseConfig { .. })
        ));
    }

    #[test]
    fn request_refuses_a_missing_or_stale_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            request(dir.path(), Duration::from_millis(10)),
            Err(RequestError::NoPidFile { .. })
        ));
        std::fs::write(dir.path().join(PID_FILE), "nonsense\n").unwrap();
        assert!(matches!(
            request(dir.path(), Duration::from_millis(10)),
            Err(RequestError::BadPidFile { .. })
        ));
        // A process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{gone}\n")).unwrap();
        assert!(matches!(
            request(dir.path(), Duration::from_millis(10)),
            Err(RequestError::NotRunning { .. })
        ));
    }

    #[test]
    fn status_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReloadStatus::read(dir.path()).is_none());
        let mut s = ReloadStatus::new(3, Some(Path::new("/etc/s.toml")));
        s.ok = false;
        s.errors = vec!["/etc/s.toml:4: apps[0].name: must not be empty".into()];
        s.write(dir.path());
        assert_eq!(ReloadStatus::read(dir.path()), Some(s.clone()));
        let text = describe(&s);
        assert!(
            text.contains("REJECTED") && text.contains("apps[0].name"),
            "{text}"
        );
    }
}
