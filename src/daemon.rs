//! Start-up, serving, and orderly shutdown of the whole daemon.
//!
//! Order matters:
//! 1. Bind both listeners first, so a busy port fails fast; serve at once,
//!    with `/healthz` alive and webhooks/API answering 503 `not_ready`.
//! 2. Open the store and the journal, load state, replay the journal from
//!    the checkpoint, start the journal writer and the checkpointer; only
//!    then mark ready (and tell systemd READY=1).
//! 3. While serving, watch the store: sled cannot write again after a write
//!    failed (ENOSPC, EIO; see `store`), so once the disk takes writes again
//!    (a write probe in the store's directory succeeds) the core is stopped without a
//!    final checkpoint and started again on the same data, exactly as a
//!    restart would: replay from the last checkpoint rebuilds whatever the
//!    failed store lost. Until then webhooks answer 503 (the journal and the
//!    acknowledged data are untouched) and reads are served by the old core;
//!    during the reopen itself the API answers 503 `not_ready` too.
//! 4. On SIGTERM/SIGINT: readiness false, stop accepting, let in-flight
//!    requests finish (bounded by `server.shutdown_timeout`), then a final
//!    checkpoint, journal writer stop, shard stop, store sync: a clean stop
//!    leaves nothing to replay.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::AdminAuth;
use crate::config::Resolved;
use crate::http::app::{App, Core};
use crate::http::metrics_server::{serve_metrics, Probes};
use crate::http::server::{serve, Limits};
use crate::http::tls::{load_or_generate, TlsSource};
use crate::journal::{Journal, JournalConfig, JournalHandle, JournalReader};
use crate::outbound::dispatcher::Dispatcher;
use crate::outbound::graph::GraphClient;
use crate::outbound::{Outbound, TermCheck};
use crate::pipeline::checkpoint::{self, Checkpointer};
use crate::pipeline::ingest::{self, Ingest, IngestCtx, ShardSink};
use crate::pipeline::liveness::{Heartbeat, Prober};
use crate::pipeline::numbers::{NumberInfo, Numbers};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::reload::{self, ReloadStatus, Terms};
use crate::store::Store;
use crate::telemetry::names;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    #[error("admin token: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("pipeline: {0}")]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::pipeline::checkpoint::CheckpointError),
    #[error("start-up task failed: {0}")]
    Join(String),
    #[error("outbound: {0}")]
    Outbound(String),
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
    #[error("sensitive-word list: {0}")]
    Filter(#[from] crate::outbound::filter::FilterError),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

/// How often the daemon looks at the store's health and, after a failure,
/// whether the disk takes writes again.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// What the write probe writes (then removes) next to the store: room for a few
/// sled log buffers and journal batches, so the reopen does not fail at once.
const SPACE_PROBE_BYTES: usize = 4 << 20;
/// Pauses between attempts to reopen the store double up to this.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(16);

/// The running core (storage, pipeline, outbound), owned by the daemon for an
/// orderly stop.
struct Spine {
    pipeline: Arc<Pipeline>,
    journal: JournalHandle<IngestCtx>,
    checkpointer: Checkpointer,
    /// Started once the core serves (not during a stop requested at start-up).
    outbound: Option<Arc<Outbound>>,
    /// Liveness probes through the writer and the shards, when systemd's
    /// watchdog is on.
    prober: Option<(Prober, Arc<Heartbeat>)>,
}

/// The systemd watchdog, when `WatchdogSec=` is set: its period and the
/// heartbeat the write path's probes keep up.
#[derive(Clone)]
struct Watchdog {
    period: Duration,
    heartbeat: Arc<Heartbeat>,
}

impl Watchdog {
    fn from_env() -> Option<Watchdog> {
        let period = sd_notify::watchdog_enabled()?;
        Some(Watchdog {
            period,
            heartbeat: Heartbeat::new(),
        })
    }

    /// Probes go through the write path several times per ping.
    fn probe_interval(&self) -> Duration {
        (self.period / 8).clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// A write path silent this long is wedged.
    fn max_silence(&self) -> Duration {
        self.period / 2
    }

    /// Ping `WATCHDOG=1` every quarter period while the heartbeat is alive
    /// (or excused: start-up, store reopen, shutdown). When the journal
    /// writer or a shard stops answering, the pings stop and systemd
    /// restarts the daemon. Ends when `stop` is dropped.
    fn spawn_pinger(&self) -> std::io::Result<crossbeam::channel::Sender<()>> {
        let (stop, stop_rx) = crossbeam::channel::bounded::<()>(1);
        let w = self.clone();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut wedged = false;
                loop {
                    if w.heartbeat.alive(w.max_silence()) {
                        if wedged {
                            tracing::warn!("the write path answers its liveness probe again");
                            wedged = false;
                        }
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    } else if !wedged {
                        wedged = true;
                        tracing::error!(
                            silent_ms = w.heartbeat.age().as_millis() as u64,
                            "the journal writer or a shard has not answered a liveness probe: \
                             withholding WATCHDOG=1, so systemd restarts the daemon"
                        );
                    }
                    match stop_rx.recv_timeout(w.period / 4) {
                        Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(stop)
    }
}

fn number_infos(resolved: &Resolved) -> Vec<NumberInfo> {
    resolved
        .config
        .numbers
        .iter()
        .map(|n| NumberInfo {
            phone_number_id: n.phone_number_id.clone(),
            display_phone_number: n.display_phone_number.clone(),
            app: n.app.clone(),
            name: n.name.clone(),
            waba_id: n.waba_id.clone(),
        })
        .collect()
}

fn numbers_from(resolved: &Resolved, store: &Store) -> Result<Numbers, DaemonError> {
    Ok(Numbers::new(number_infos(resolved), store.load_numbers()?))
}

/// Config and secrets of the numbers that send, for the dispatcher.
fn sending_numbers(
    resolved: &Resolved,
) -> Vec<(crate::config::NumberConfig, Option<crate::config::Secret>)> {
    resolved
        .numbers
        .iter()
        .map(|n| (n.config.clone(), n.access_token.clone()))
        .collect()
}

/// Open storage, replay, and start the writer and checkpointer. Blocking.
fn start_core(resolved: &Resolved, watchdog: Option<&Watchdog>) -> Result<Spine, DaemonError> {
    let cfg = &resolved.config;
    let data_dir = &cfg.storage.data_dir;
    let started = Instant::now();
    let store = Arc::new(Store::open(
        &data_dir.join("db"),
        cfg.storage.sled_cache_bytes,
    )?);
    let numbers = Arc::new(numbers_from(resolved, &store)?);
    let pipeline_cfg = PipelineConfig {
        shards: cfg.shard_count(),
        shard_queue: cfg.pipeline.shard_queue,
        pin_threads: cfg.pipeline.pin_threads,
    };
    let journal_dir = data_dir.join("journal");
    let pipeline = Arc::new(Pipeline::start(
        store.clone(),
        numbers,
        JournalReader::new(&journal_dir),
        &pipeline_cfg,
    )?);
    let mut jcfg = JournalConfig::new(&journal_dir);
    jcfg.segment_bytes = cfg.storage.journal_segment_bytes;
    jcfg.max_record_bytes = cfg.storage.max_record_bytes;
    jcfg.queue_capacity = cfg.storage.journal_queue;
    let (journal, recovery) = Journal::open(jcfg)?;
    if !recovery.is_clean() {
        tracing::warn!(
            ?recovery,
            "journal needed repair at start-up (see the log lines above)"
        );
    }
    let from = checkpoint::replay_position(&store)?;
    let replayed = ingest::replay(&pipeline, &journal, from, pipeline_cfg.shard_queue)?;
    let handle = journal.start(ShardSink::new(pipeline.clone()))?;
    // Move the replay position past what was just replayed.
    checkpoint::checkpoint(&pipeline, &handle, &mut Default::default())?;
    let checkpointer = Checkpointer::spawn(
        pipeline.clone(),
        handle.appender(),
        cfg.storage.checkpoint_interval,
        cfg.storage.dedupe_days,
    )
    .map_err(|source| DaemonError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let prober = match watchdog {
        Some(w) => Some((
            Prober::spawn(
                pipeline.clone(),
                handle.appender(),
                w.heartbeat.clone(),
                w.probe_interval(),
            )
            .map_err(|e| DaemonError::Thread("liveness-probe", e))?,
            w.heartbeat.clone(),
        )),
        None => None,
    };
    tracing::info!(
        replayed,
        from,
        shards = pipeline.shard_count(),
        conversations = pipeline.shards().map(|s| s.len()).sum::<usize>(),
        customers = pipeline.directory().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state loaded and journal replayed"
    );
    Ok(Spine {
        prober,
        outbound: None,
        pipeline,
        journal: handle,
        checkpointer,
    })
}

impl Spine {
    /// Starts the outbound dispatchers on this core and returns what the
    /// handlers serve from.
    fn serve(
        &mut self,
        resolved: &Resolved,
        terms: Arc<dyn TermCheck>,
    ) -> Result<Core, DaemonError> {
        let ingest = Ingest::new(
            self.pipeline.clone(),
            self.journal.appender(),
            resolved.config.server.ingest_timeout,
        );
        let outbound = start_outbound(resolved, self, ingest.clone(), terms)?;
        self.outbound = Some(outbound.clone());
        Ok(Core { ingest, outbound })
    }

    /// In-flight sends finish and record their outcome before the journal closes.
    async fn stop_outbound(&mut self, resolved: &Resolved) {
        if let Some(outbound) = self.outbound.take() {
            let deadline = resolved.config.whatsapp.request_timeout + Duration::from_secs(2);
            outbound.dispatcher().shutdown(deadline).await;
        }
    }

    /// Stop a core whose store failed, without the final checkpoint (it
    /// cannot be written): queued requests complete (with 503s), threads
    /// stop. The journal keeps everything acknowledged; the next start
    /// replays it from the last checkpoint.
    fn abandon(mut self) {
        self.stop_probing();
        drop(self.checkpointer.stop());
        if let Err(e) = self.journal.shutdown() {
            tracing::warn!(error = %e, "journal: shutdown after a store failure");
        }
        self.pipeline.stop();
    }

    /// The core is about to stop on purpose: not a wedge.
    fn stop_probing(&mut self) {
        if let Some((prober, heartbeat)) = self.prober.take() {
            heartbeat.set_excused(true);
            prober.stop();
        }
    }

    fn stop(mut self) -> Result<(), DaemonError> {
        self.stop_probing();
        if !self.pipeline.store().healthy() {
            tracing::warn!("the store cannot write: stopping without a final checkpoint; the next start replays the journal from the last one");
            self.abandon();
            return Ok(());
        }
        let mut unwritten = self.checkpointer.stop();
        let result = checkpoint::checkpoint(&self.pipeline, &self.journal, &mut unwritten);
        let journal = self.journal.shutdown();
        self.pipeline.stop();
        self.pipeline.store().sync()?;
        journal?;
        result.map(|_| ()).map_err(Into::into)
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { addr, source })
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn write_pid_file(data_dir: &Path) -> Option<PathBuf> {
    let path = data_dir.join("switchboard.pid");
    match std::fs::write(&path, format!("{}\n", std::process::id())) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
            None
        }
    }
}

/// SIGTERM and SIGINT (stop) and SIGHUP (reload the config), caught from
/// the first moment of `run` (a signal that arrived before the handlers
/// existed would kill the process outright). A SIGHUP during start-up is
/// kept and served once the daemon is ready.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
            hup: signal(SignalKind::hangup()).map_err(DaemonError::Signal)?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// The next stop (its name) or reload (`None`) request.
    async fn next(&mut self) -> Option<&'static str> {
        tokio::select! {
            _ = self.term.recv() => Some("SIGTERM"),
            _ = self.int.recv() => Some("SIGINT"),
            _ = self.hup.recv() => None,
        }
    }
}

/// The Graph API client, the per-number dispatchers (with what a previous
/// run left unsent) and the outbound service.
fn start_outbound(
    resolved: &Resolved,
    core: &Spine,
    ingest: Ingest,
    terms: Arc<dyn TermCheck>,
) -> Result<Arc<Outbound>, DaemonError> {
    let w = &resolved.config.whatsapp;
    let graph = GraphClient::new(
        &w.graph_api_base,
        w.connect_timeout,
        w.request_timeout,
        w.ca_file.as_deref(),
    )
    .map_err(|e| DaemonError::Outbound(e.to_string()))?;
    let dispatcher = Dispatcher::new(
        &sending_numbers(resolved),
        core.pipeline.numbers().clone(),
        ingest.clone(),
        core.pipeline.journal_reader().clone(),
        graph,
        resolved.config.outbound.clone(),
    );
    dispatcher.start(core.pipeline.store().all_pending()?);
    Ok(Arc::new(Outbound::new(ingest, dispatcher, terms)))
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(resolved: Resolved) -> Result<(), DaemonError> {
    let mut signals = StopSignals::install()?;
    let cfg = resolved.config.clone();
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| DaemonError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let metrics = crate::telemetry::install_metrics()?;
    // The sensitive-word list (empty without a file), watched for edits.
    let terms = Arc::new(Terms::start(
        cfg.outbound.filter_file.clone(),
        cfg.outbound.filter_reload_interval,
    )?);

    let listener = bind(cfg.server.listen).await?;
    let https_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: cfg.server.listen,
        source,
    })?;
    let metrics_listener = if cfg.metrics.enabled {
        Some(bind(cfg.metrics.listen).await?)
    } else {
        None
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let paths = cfg
        .server
        .tls_cert
        .as_deref()
        .zip(cfg.server.tls_key.as_deref());
    let tls = load_or_generate(paths, &data_dir, &cfg.server.tls_names)?;
    let (auth, new_token) = AdminAuth::init(&data_dir, resolved.admin_token.as_ref())?;
    if let Some(token) = new_token {
        // Printed once; only its hash is kept.
        println!("switchboard: admin API token (shown only this once): {token}");
    }
    let app = Arc::new(App::new(auth, reload::webhook_settings(&resolved)));
    reload::init_metrics();

    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Limits {
        max_connections: cfg.server.max_connections,
        tls_handshake_timeout: cfg.server.tls_handshake_timeout,
        header_read_timeout: cfg.server.header_read_timeout,
        idle_timeout: cfg.server.idle_timeout,
        h2_max_concurrent_streams: cfg.server.http2_max_concurrent_streams,
        max_header_bytes: cfg.server.max_header_bytes,
        shutdown_timeout: cfg.server.shutdown_timeout,
    };
    let service_app = app.clone();
    let tls_source = Arc::new(TlsSource::new(tls.server_config.clone()));
    let server = tokio::spawn(serve(
        listener,
        tls_source.clone(),
        limits,
        move |req, conn| service_app.clone().handle(req, conn),
        wait_for(stop_rx.clone()),
    ));
    let metrics_server = metrics_listener.map(|l| {
        let ready_app = app.clone();
        let probes = Probes {
            metrics: Arc::new(move || metrics.render()),
            ready: Arc::new(move || ready_app.is_ready()),
        };
        tokio::spawn(serve_metrics(l, probes, wait_for(stop_rx.clone())))
    });
    // One machine-readable line for supervisors and tests (ports may be 0 in config).
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "https": https_addr.to_string(),
            "metrics": metrics_addr.map(|a| a.to_string()),
            "pid": std::process::id(),
            "ca": tls.ca_pem.as_ref().map(|p| p.display().to_string()),
        })
    );
    let pid_file = write_pid_file(&data_dir);
    ReloadStatus::new(0, resolved.source.as_deref()).write(&data_dir);

    let watchdog = Watchdog::from_env();
    let pinger = match &watchdog {
        Some(w) => {
            tracing::info!(
                period_ms = w.period.as_millis() as u64,
                "systemd watchdog on: pinging while the write path answers liveness probes"
            );
            Some(
                w.spawn_pinger()
                    .map_err(|e| DaemonError::Thread("watchdog", e))?,
            )
        }
        None => None,
    };
    let core_resolved = resolved.clone();
    let core_watchdog = watchdog.clone();
    let starting =
        tokio::task::spawn_blocking(move || start_core(&core_resolved, core_watchdog.as_ref()));
    tokio::pin!(starting);
    let mut stop: Option<&'static str> = None;
    // A stop request during start-up lets start-up (replay) finish, so the
    // shutdown below can checkpoint and close everything in order.
    let core = loop {
        tokio::select! {
            core = &mut starting => break core.map_err(|e| DaemonError::Join(e.to_string()))??,
            sig = signals.recv(), if stop.is_none() => {
                tracing::info!(signal = sig, "stop requested during start-up; finishing start-up first");
                stop = Some(sig);
            }
        }
    };
    let mut core = core;
    let served = match stop {
        Some(_) => None,
        None => Some(core.serve(&resolved, terms.clone())),
    };
    let mut state = CoreState::Running(core);
    let sig = match (stop, served) {
        (Some(sig), _) => sig,
        (None, Some(Err(e))) => {
            if let CoreState::Running(core) = state {
                let _ = tokio::task::spawn_blocking(move || core.stop()).await;
            }
            return Err(e);
        }
        (None, served) => {
            if let Some(Ok(served)) = served {
                app.set_ready(served);
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            tracing::info!(%https_addr, metrics = ?metrics_addr, "ready");
            let mut live = Live {
                app: app.clone(),
                tls: tls_source,
                terms,
                current: resolved.clone(),
                generation: 0,
            };
            supervise(&mut live, watchdog.as_ref(), &mut state, &mut signals).await
        }
    };
    tracing::info!(signal = sig, "shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(w) = &watchdog {
        w.heartbeat.set_excused(true);
    }
    app.set_unready();
    let _ = stop_tx.send(true);
    let grace = cfg.server.shutdown_timeout + Duration::from_secs(2);
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("the HTTPS listener did not stop in time");
    }
    if let Some(m) = metrics_server {
        let _ = tokio::time::timeout(grace, m).await;
    }
    if let CoreState::Running(core) = &mut state {
        core.stop_outbound(&resolved).await;
    }
    let stopped = tokio::task::spawn_blocking(move || match state {
        CoreState::Running(core) => core.stop(),
        CoreState::Down { .. } => {
            tracing::warn!("the store had failed and was not reopened: nothing to checkpoint; the next start replays the journal");
            Ok(())
        }
    })
    .await;
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    drop(pinger);
    stopped.map_err(|e| DaemonError::Join(e.to_string()))??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The core as the supervisor sees it.
enum CoreState {
    /// Serving (the store may have failed: see [`supervise`]).
    Running(Spine),
    /// Stopped after a store failure; to be started again.
    Down {
        /// The failed store, which must be closed (every handle dropped)
        /// before sled lets the next attempt open the same files.
        old: Weak<Store>,
        next_attempt: tokio::time::Instant,
        backoff: Duration,
    },
}

impl CoreState {
    fn down(old: Weak<Store>) -> CoreState {
        CoreState::Down {
            old,
            next_attempt: tokio::time::Instant::now(),
            backoff: STORE_CHECK_INTERVAL,
        }
    }
}

/// What a config reload changes, and the config in force.
struct Live {
    app: Arc<App>,
    tls: Arc<TlsSource>,
    terms: Arc<Terms>,
    /// The config in force (restart-only keys as at start); a store reopen
    /// starts from it too.
    current: Resolved,
    /// Reloads asked for since start.
    generation: u64,
}

/// Serve until a stop signal, reopening the store in place after a write
/// failure (see the module docs, step 3) and reloading the config on
/// SIGHUP (see `reload`). Returns the signal's name.
async fn supervise(
    live: &mut Live,
    watchdog: Option<&Watchdog>,
    state: &mut CoreState,
    signals: &mut StopSignals,
) -> &'static str {
    let app = &live.app.clone();
    let mut tick = tokio::time::interval(STORE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_logged = false;
    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Some(sig) => return sig,
                None => {
                    reload_config(live, state).await;
                    continue;
                }
            },
            _ = tick.tick() => {}
        }
        let resolved = &live.current.clone();
        let failed = matches!(state, CoreState::Running(core) if !core.pipeline.store().healthy());
        if failed {
            let dir = match state {
                CoreState::Running(core) => core.pipeline.store().dir().to_path_buf(),
                CoreState::Down { .. } => continue,
            };
            let probe = tokio::task::spawn_blocking(move || space_probe(&dir))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(e) = probe {
                if !waiting_logged {
                    waiting_logged = true;
                    tracing::warn!(error = %e, "the store cannot write; webhooks answer 503 until the disk takes writes again");
                }
                continue;
            }
            waiting_logged = false;
            tracing::warn!("the disk takes writes again: reopening the store (the core stops and starts as in a restart)");
            app.withdraw_core();
            let CoreState::Running(mut core) =
                std::mem::replace(state, CoreState::down(Weak::new()))
            else {
                continue;
            };
            core.stop_outbound(resolved).await;
            let old = Arc::downgrade(core.pipeline.store());
            if let Err(e) = tokio::task::spawn_blocking(move || core.abandon()).await {
                tracing::error!(error = %e, "stopping the failed core panicked");
            }
            *state = CoreState::down(old);
            continue;
        }
        let CoreState::Down {
            old,
            next_attempt,
            backoff,
        } = state
        else {
            continue;
        };
        // Requests in flight may hold the old store for a moment; sled
        // refuses to open files that are still open.
        if old.strong_count() > 0 || tokio::time::Instant::now() < *next_attempt {
            continue;
        }
        let r = resolved.clone();
        let w = watchdog.cloned();
        let attempt = tokio::task::spawn_blocking(move || start_core(&r, w.as_ref()))
            .await
            .map_err(|e| DaemonError::Join(e.to_string()))
            .and_then(|started| started);
        match attempt {
            Ok(mut core) => match core.serve(resolved, live.terms.clone()) {
                Ok(served) => {
                    metrics::counter!(names::STORE_REOPENS, "outcome" => "ok").increment(1);
                    app.set_ready(served);
                    *state = CoreState::Running(core);
                    tracing::info!("store reopened; ready again");
                }
                Err(error) => {
                    metrics::counter!(names::STORE_REOPENS, "outcome" => "failed").increment(1);
                    core.stop_outbound(resolved).await;
                    let old = Arc::downgrade(core.pipeline.store());
                    let _ = tokio::task::spawn_blocking(move || core.abandon()).await;
                    *state = CoreState::down(old);
                    tracing::warn!(%error, "restarting outbound on the reopened store failed");
                }
            },
            Err(error) => {
                metrics::counter!(names::STORE_REOPENS, "outcome" => "failed").increment(1);
                *backoff = (*backoff * 2).min(MAX_REOPEN_BACKOFF);
                *next_attempt = tokio::time::Instant::now() + *backoff;
                tracing::warn!(%error, retry_in = ?*backoff, "reopening the store failed");
            }
        }
    }
}

/// Can the store's disk take writes? Writes, syncs and removes a file of
/// [`SPACE_PROBE_BYTES`] in its directory (sled ignores files it does not
/// know; this runs only while the store is failed, before it is reopened).
fn space_probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".switchboard-write-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// SIGHUP: read the config file again and, if all of it is good, put the
/// reloadable parts in force (see [`crate::reload`]). Logs, counts and
/// writes the outcome for `switchboard reload`.
async fn reload_config(live: &mut Live, state: &CoreState) {
    live.generation += 1;
    let data_dir = live.current.config.storage.data_dir.clone();
    let mut status = ReloadStatus::new(live.generation, live.current.source.as_deref());
    let current = live.current.clone();
    let filter_path = live.terms.path();
    tracing::info!(config = ?current.source, "SIGHUP: reloading the config");
    let prepared =
        tokio::task::spawn_blocking(move || reload::prepare(&current, filter_path.as_deref()))
            .await
            .unwrap_or_else(|e| Err(reload::ReloadError::Task(e.to_string())));
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            for line in e.lines() {
                tracing::error!(problem = %line, "config reload rejected; the config in force stays");
            }
            reload::count(false);
            status.ok = false;
            status.errors = e.lines();
            status.write(&data_dir);
            return;
        }
    };
    let resolved = prepared.resolved;
    let mut changes = Vec::new();
    live.app.set_webhook(reload::webhook_settings(&resolved));
    live.tls.replace(prepared.tls);
    if let Err(e) = live.terms.apply(prepared.filter) {
        // The file changed again since it was checked; the list in force stays.
        tracing::warn!(error = %e, "sensitive-word list not replaced");
        changes.push(format!("sensitive-word list kept: {e}"));
    }
    if let CoreState::Running(core) = state {
        // What the store holds for numbers that are new here: read off the
        // runtime (an outbox may hold many unsent messages).
        let store = core.pipeline.store().clone();
        let numbers = core.pipeline.numbers().clone();
        let adds = resolved
            .config
            .numbers
            .iter()
            .any(|n| !numbers.is_managed(&n.phone_number_id));
        let (persisted, pending) = tokio::task::spawn_blocking(move || {
            if !adds {
                return (Vec::new(), Vec::new());
            }
            let persisted = store.load_numbers().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading persisted number records; added numbers start from zero");
                Vec::new()
            });
            let pending = store.all_pending().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading unsent messages of the added numbers; they are sent after a restart");
                Vec::new()
            });
            (persisted, pending)
        })
        .await
        .unwrap_or_default();
        let numbers = numbers.reconfigure(number_infos(&resolved), persisted);
        for (what, ids) in [
            ("numbers added", &numbers.added),
            ("numbers removed", &numbers.removed),
            ("numbers changed", &numbers.changed),
        ] {
            if !ids.is_empty() {
                changes.push(format!("{what}: {}", ids.join(", ")));
            }
        }
        if let Some(outbound) = &core.outbound {
            let lanes = outbound
                .dispatcher()
                .reconfigure(&sending_numbers(&resolved), || pending);
            for (what, ids) in [
                ("send limits changed", &lanes.limits),
                ("access tokens changed", &lanes.tokens),
            ] {
                if !ids.is_empty() {
                    changes.push(format!("{what}: {}", ids.join(", ")));
                }
            }
        }
    }
    for key in &prepared.needs_restart {
        tracing::warn!(key = %key, "config reload: this key changed and needs a restart; the value in force stays until then");
    }
    tracing::info!(
        apps = resolved.apps.len(),
        numbers = resolved.numbers.len(),
        changes = ?changes,
        needs_restart = ?prepared.needs_restart,
        "config reloaded"
    );
    reload::count(true);
    status.changes = changes;
    status.needs_restart = prepared.needs_restart;
    status.write(&data_dir);
    live.current = resolved;
}
