//! Metrics and logs: every metric is declared here once, with its type, unit,
//! labels and help text; code elsewhere uses the `names` constants.
//!
//! Invariants: label values come only from bounded sets (the helpers below map
//! anything a payload controls onto a fixed list); never a customer id, wamid
//! or phone number as a label. Process metrics (`switchboard_process_*`) are
//! read from `/proc/self` on the metrics-upkeep thread, once at install and
//! then every [`UPKEEP_INTERVAL`]; a file that cannot be read leaves its
//! metric at the last value (or absent), never a made-up one.

use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One entry of the metric catalogue.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub mod names {
    pub const WEBHOOK_REQUESTS: &str = "switchboard_webhook_requests_total";
    pub const WEBHOOK_INGEST_SECONDS: &str = "switchboard_webhook_ingest_seconds";
    pub const WEBHOOK_BODY_BYTES: &str = "switchboard_webhook_body_bytes";
    pub const WEBHOOK_EVENTS: &str = "switchboard_webhook_events_total";
    pub const API_REQUESTS: &str = "switchboard_api_requests_total";
    pub const MESSAGES: &str = "switchboard_messages_total";
    pub const STATUSES: &str = "switchboard_statuses_total";
    pub const ACCOUNT_EVENTS: &str = "switchboard_account_events_total";
    pub const DEDUPE_HITS: &str = "switchboard_dedupe_hits_total";
    pub const UNROUTED: &str = "switchboard_unrouted_updates_total";
    pub const INVALID_ITEMS: &str = "switchboard_invalid_items_total";
    pub const SHARD_QUEUE_DEPTH: &str = "switchboard_shard_queue_depth";
    pub const SHARD_BATCH_EVENTS: &str = "switchboard_shard_batch_events";
    pub const SHARD_APPLY_SECONDS: &str = "switchboard_shard_apply_seconds";
    pub const SHARD_REJECTED: &str = "switchboard_shard_rejected_total";
    pub const APPLY_ERRORS: &str = "switchboard_apply_errors_total";
    pub const CHECKPOINT_SECONDS: &str = "switchboard_checkpoint_seconds";
    pub const CHECKPOINT_LSN: &str = "switchboard_checkpoint_lsn";
    pub const CHECKPOINT_ERRORS: &str = "switchboard_checkpoint_errors_total";
    pub const REPLAYED_RECORDS: &str = "switchboard_replayed_records_total";
    pub const STORE_DISK_BYTES: &str = "switchboard_store_disk_bytes";
    pub const STORE_HEALTHY: &str = "switchboard_store_healthy";
    pub const STORE_REOPENS: &str = "switchboard_store_reopens_total";
    pub const CONVERSATIONS: &str = "switchboard_conversations";
    pub const CUSTOMERS: &str = "switchboard_customers";
    pub const READY: &str = "switchboard_ready";
    pub const BUILD_INFO: &str = "switchboard_build_info";
    pub const OUTBOUND_REQUESTS: &str = "switchboard_outbound_requests_total";
    pub const ALERTS: &str = "switchboard_alerts_total";
    pub const OUTBOUND_REFUSED: &str = "switchboard_outbound_refused_total";
    pub const OUTBOUND_SENDS: &str = "switchboard_outbound_sends_total";
    pub const GRAPH_ERRORS: &str = "switchboard_graph_errors_total";
    pub const GRAPH_REQUEST_SECONDS: &str = "switchboard_graph_request_seconds";
    pub const OUTBOUND_QUEUE_SECONDS: &str = "switchboard_outbound_queue_seconds";
    pub const OUTBOUND_UNCERTAIN_RESENDS: &str = "switchboard_outbound_uncertain_resends_total";
    pub const NUMBER_SEND_RATE: &str = "switchboard_number_send_rate";
    pub const NUMBER_SEND_CEILING: &str = "switchboard_number_send_ceiling";
    pub const NUMBER_OUTBOX_QUEUED: &str = "switchboard_number_outbox_queued";
    pub const NUMBER_PAUSED: &str = "switchboard_number_paused";
    pub const CONNECTIONS_ACTIVE: &str = "switchboard_connections_active";
    pub const CONNECTIONS_ACCEPTED: &str = "switchboard_connections_accepted_total";
    pub const CONNECTIONS_REJECTED: &str = "switchboard_connections_rejected_total";
    pub const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
    pub const TLS_HANDSHAKE_SECONDS: &str = "switchboard_tls_handshake_seconds";
    pub const JOURNAL_FSYNC_SECONDS: &str = "switchboard_journal_fsync_seconds";
    pub const JOURNAL_BATCH_RECORDS: &str = "switchboard_journal_batch_records";
    pub const JOURNAL_BATCH_BYTES: &str = "switchboard_journal_batch_bytes";
    pub const JOURNAL_APPENDED_BYTES: &str = "switchboard_journal_appended_bytes_total";
    pub const JOURNAL_APPENDED_RECORDS: &str = "switchboard_journal_appended_records_total";
    pub const JOURNAL_WRITE_ERRORS: &str = "switchboard_journal_write_errors_total";
    pub const JOURNAL_TRUNCATED_BYTES: &str = "switchboard_journal_truncated_bytes_total";
    pub const JOURNAL_CORRUPT_RECORDS: &str = "switchboard_journal_corrupt_records_total";
    pub const JOURNAL_CORRUPT_BYTES: &str = "switchboard_journal_corrupt_bytes_total";
    pub const JOURNAL_LSN_ANOMALIES: &str = "switchboard_journal_lsn_anomalies_total";
    pub const JOURNAL_REJECTED: &str = "switchboard_journal_rejected_total";
    pub const JOURNAL_SEGMENTS_REMOVED: &str = "switchboard_journal_segments_removed_total";
    pub const JOURNAL_SEGMENTS: &str = "switchboard_journal_segments";
    pub const JOURNAL_DISK_BYTES: &str = "switchboard_journal_disk_bytes";
    pub const JOURNAL_HEALTHY: &str = "switchboard_journal_healthy";
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "switchboard_process_resident_memory_bytes";
    pub const PROCESS_OPEN_FDS: &str = "switchboard_process_open_fds";
    pub const PROCESS_THREADS: &str = "switchboard_process_threads";
    pub const PROCESS_CPU_SECONDS: &str = "switchboard_process_cpu_seconds_total";
    pub const PROCESS_START_TIME_SECONDS: &str = "switchboard_process_start_time_seconds";
    // --- filter ---
    pub const FILTER_TERMS: &str = "switchboard_filter_terms";
    pub const FILTER_RELOADS: &str = "switchboard_filter_reloads_total";
    pub const FILTER_BLOCKED: &str = "switchboard_filter_blocked_total";
    // --- config reload ---
    pub const CONFIG_RELOADS: &str = "switchboard_config_reloads_total";
    pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "switchboard_config_last_reload_success";
}

use names::*;

const C: Kind = Kind::Counter;
const G: Kind = Kind::Gauge;
const H: Kind = Kind::Histogram;

/// Every metric the daemon exports.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef { name: WEBHOOK_REQUESTS, kind: C, unit: Unit::Count, labels: &["method", "outcome"], help: "Webhook requests by method and outcome (POST: accepted, bad_signature, malformed, overloaded, ...; GET: verified, forbidden)." },
    MetricDef { name: WEBHOOK_INGEST_SECONDS, kind: H, unit: Unit::Seconds, labels: &[], help: "Time from receiving a webhook POST to acknowledging it (durable and applied)." },
    MetricDef { name: WEBHOOK_BODY_BYTES, kind: H, unit: Unit::Bytes, labels: &[], help: "Size of accepted webhook bodies." },
    MetricDef { name: WEBHOOK_EVENTS, kind: C, unit: Unit::Count, labels: &["kind"], help: "Events parsed from signed webhook deliveries, by kind (message, status, account, preference, unrouted, invalid)." },
    MetricDef { name: API_REQUESTS, kind: C, unit: Unit::Count, labels: &["route", "status"], help: "Read API requests by route and HTTP status class." },
    MetricDef { name: MESSAGES, kind: C, unit: Unit::Count, labels: &["type", "direction"], help: "Messages archived (duplicates excluded), by message type and direction." },
    MetricDef { name: STATUSES, kind: C, unit: Unit::Count, labels: &["status"], help: "Message statuses stored (duplicates excluded), by status." },
    MetricDef { name: ACCOUNT_EVENTS, kind: C, unit: Unit::Count, labels: &["field"], help: "Account-level webhook changes stored (duplicates excluded), by field." },
    MetricDef { name: DEDUPE_HITS, kind: C, unit: Unit::Count, labels: &["kind"], help: "Events recognised as already processed (retried deliveries), by kind." },
    MetricDef { name: UNROUTED, kind: C, unit: Unit::Count, labels: &[], help: "Updates for a phone_number_id this deployment does not manage (stored, acknowledged)." },
    MetricDef { name: INVALID_ITEMS, kind: C, unit: Unit::Count, labels: &["reason"], help: "Items of signed deliveries that could not be applied (stored for review, acknowledged), by reason." },
    MetricDef { name: SHARD_QUEUE_DEPTH, kind: G, unit: Unit::Count, labels: &["shard"], help: "Events waiting in a shard's queue." },
    MetricDef { name: SHARD_BATCH_EVENTS, kind: H, unit: Unit::Count, labels: &[], help: "Events a shard applied in one sled batch." },
    MetricDef { name: SHARD_APPLY_SECONDS, kind: H, unit: Unit::Seconds, labels: &[], help: "Time a shard took to apply one batch (state and sled write)." },
    MetricDef { name: SHARD_REJECTED, kind: C, unit: Unit::Count, labels: &[], help: "Deliveries refused with 503 because a shard queue was full." },
    MetricDef { name: APPLY_ERRORS, kind: C, unit: Unit::Count, labels: &[], help: "Batches a shard failed to write to the store." },
    MetricDef { name: CHECKPOINT_SECONDS, kind: H, unit: Unit::Seconds, labels: &[], help: "Duration of a checkpoint (state write, sled flush, fsync)." },
    MetricDef { name: CHECKPOINT_LSN, kind: G, unit: Unit::Count, labels: &[], help: "Journal position replay would start from after a crash now." },
    MetricDef { name: CHECKPOINT_ERRORS, kind: C, unit: Unit::Count, labels: &[], help: "Checkpoints that failed (the previous checkpoint stays in force)." },
    MetricDef { name: REPLAYED_RECORDS, kind: C, unit: Unit::Count, labels: &[], help: "Journal records replayed at start-up." },
    MetricDef { name: STORE_DISK_BYTES, kind: G, unit: Unit::Bytes, labels: &[], help: "Bytes sled uses on disk." },
    MetricDef { name: STORE_HEALTHY, kind: G, unit: Unit::Count, labels: &[], help: "1 unless a store write failed (the store is then reopened in place once the disk takes writes again)." },
    MetricDef { name: STORE_REOPENS, kind: C, unit: Unit::Count, labels: &["outcome"], help: "Attempts to reopen the store in place after a write failure, by outcome (ok, failed)." },
    MetricDef { name: CONVERSATIONS, kind: G, unit: Unit::Count, labels: &[], help: "Conversations held in memory across shards." },
    MetricDef { name: CUSTOMERS, kind: G, unit: Unit::Count, labels: &[], help: "Customers known." },
    MetricDef { name: READY, kind: G, unit: Unit::Count, labels: &[], help: "1 once start-up replay finished and webhooks are accepted." },
    MetricDef { name: CONNECTIONS_ACTIVE, kind: G, unit: Unit::Count, labels: &["listener"], help: "Connections currently open on a listener, TLS handshakes included." },
    MetricDef { name: CONNECTIONS_ACCEPTED, kind: C, unit: Unit::Count, labels: &["listener"], help: "Connections admitted under the connection cap." },
    MetricDef { name: CONNECTIONS_REJECTED, kind: C, unit: Unit::Count, labels: &["listener", "reason"], help: "Connections closed before serving HTTP, and failed accepts, by reason (limit, handshake_timeout, tls_error, accept_error)." },
    MetricDef { name: CONNECTIONS_CLOSED, kind: C, unit: Unit::Count, labels: &["listener", "reason"], help: "Connections that served HTTP and then closed, by reason (client, idle, header_timeout, error, shutdown, forced)." },
    MetricDef { name: TLS_HANDSHAKE_SECONDS, kind: H, unit: Unit::Seconds, labels: &["listener"], help: "Duration of successful TLS handshakes." },
    MetricDef { name: JOURNAL_FSYNC_SECONDS, kind: H, unit: Unit::Seconds, labels: &[], help: "Time of the one fdatasync of a journal group commit." },
    MetricDef { name: JOURNAL_BATCH_RECORDS, kind: H, unit: Unit::Count, labels: &[], help: "Records per successful journal group commit." },
    MetricDef { name: JOURNAL_BATCH_BYTES, kind: H, unit: Unit::Bytes, labels: &[], help: "Framed bytes per successful journal group commit." },
    MetricDef { name: JOURNAL_APPENDED_BYTES, kind: C, unit: Unit::Bytes, labels: &[], help: "Framed journal bytes made durable." },
    MetricDef { name: JOURNAL_APPENDED_RECORDS, kind: C, unit: Unit::Count, labels: &[], help: "Journal records made durable." },
    MetricDef { name: JOURNAL_WRITE_ERRORS, kind: C, unit: Unit::Count, labels: &["op"], help: "Failed journal write steps, by step (write, sync, truncate, rotate)." },
    MetricDef { name: JOURNAL_TRUNCATED_BYTES, kind: C, unit: Unit::Bytes, labels: &[], help: "Torn-tail bytes cut from the journal at start-up." },
    MetricDef { name: JOURNAL_CORRUPT_RECORDS, kind: C, unit: Unit::Count, labels: &[], help: "Damaged journal ranges found at start-up (copied to corrupt/ and skipped)." },
    MetricDef { name: JOURNAL_CORRUPT_BYTES, kind: C, unit: Unit::Bytes, labels: &[], help: "Bytes in damaged journal ranges found at start-up." },
    MetricDef { name: JOURNAL_LSN_ANOMALIES, kind: C, unit: Unit::Count, labels: &["kind"], help: "Journal LSN discontinuities found at start-up, by kind (gap, regression)." },
    MetricDef { name: JOURNAL_REJECTED, kind: C, unit: Unit::Count, labels: &["reason"], help: "Journal appends refused, by reason (full, closed, too_large)." },
    MetricDef { name: JOURNAL_SEGMENTS_REMOVED, kind: C, unit: Unit::Count, labels: &[], help: "Journal segment files deleted after checkpoints." },
    MetricDef { name: JOURNAL_SEGMENTS, kind: G, unit: Unit::Count, labels: &[], help: "Journal segment files on disk." },
    MetricDef { name: JOURNAL_DISK_BYTES, kind: G, unit: Unit::Bytes, labels: &[], help: "Bytes of journal segment files on disk." },
    MetricDef { name: JOURNAL_HEALTHY, kind: G, unit: Unit::Count, labels: &[], help: "1 unless the last journal group commit failed." },
    MetricDef { name: BUILD_INFO, kind: G, unit: Unit::Count, labels: &["version"], help: "Always 1; labelled with the build version." },
    MetricDef { name: PROCESS_RESIDENT_MEMORY_BYTES, kind: G, unit: Unit::Bytes, labels: &[], help: "Resident set size of the daemon process (VmRSS of /proc/self/status)." },
    MetricDef { name: PROCESS_OPEN_FDS, kind: G, unit: Unit::Count, labels: &[], help: "File descriptors the daemon process holds open (sockets, journal and sled files)." },
    MetricDef { name: PROCESS_THREADS, kind: G, unit: Unit::Count, labels: &[], help: "Threads of the daemon process." },
    MetricDef { name: PROCESS_CPU_SECONDS, kind: C, unit: Unit::Seconds, labels: &[], help: "User plus system CPU time of the daemon process, all threads, in whole seconds." },
    MetricDef { name: PROCESS_START_TIME_SECONDS, kind: G, unit: Unit::Seconds, labels: &[], help: "Start time of the daemon process in seconds since the Unix epoch." },
    // --- outbound ---
    MetricDef { name: OUTBOUND_REQUESTS, kind: C, unit: Unit::Count, labels: &["priority"], help: "Outbound messages accepted into the outbox, by priority." },
    MetricDef { name: OUTBOUND_REFUSED, kind: C, unit: Unit::Count, labels: &["reason"], help: "Outbound messages refused before queueing (window_closed, blocked_term, opted_out, unknown_number, invalid_payload)." },
    MetricDef { name: OUTBOUND_SENDS, kind: C, unit: Unit::Count, labels: &["result"], help: "Graph API send attempts by result (accepted, retry, failed)." },
    MetricDef { name: GRAPH_ERRORS, kind: C, unit: Unit::Count, labels: &["code"], help: "Errors from the Graph API by platform error code (known codes; others as other, transport errors as transport)." },
    MetricDef { name: GRAPH_REQUEST_SECONDS, kind: H, unit: Unit::Seconds, labels: &[], help: "Duration of Graph API send requests." },
    MetricDef { name: OUTBOUND_QUEUE_SECONDS, kind: H, unit: Unit::Seconds, labels: &["priority"], help: "Time from accepting an outbound message to the Graph API accepting it, by priority." },
    MetricDef { name: OUTBOUND_UNCERTAIN_RESENDS, kind: C, unit: Unit::Count, labels: &[], help: "Messages resent after a restart although an attempt had started before it (the one window where a message may be sent twice)." },
    MetricDef { name: NUMBER_SEND_RATE, kind: G, unit: Unit::Count, labels: &["number"], help: "Current adaptive send rate of a number, messages per second." },
    MetricDef { name: NUMBER_SEND_CEILING, kind: G, unit: Unit::Count, labels: &["number"], help: "Current send ceiling of a number (configured, adjusted by quality), messages per second." },
    MetricDef { name: NUMBER_OUTBOX_QUEUED, kind: G, unit: Unit::Count, labels: &["number"], help: "Outbound messages waiting for a number's dispatcher." },
    MetricDef { name: NUMBER_PAUSED, kind: G, unit: Unit::Count, labels: &["number"], help: "1 while a number is paused (its access token was refused)." },
    MetricDef { name: ALERTS, kind: C, unit: Unit::Count, labels: &["kind"], help: "Alerts raised (blocked_term, token_expired, ...)." },
    // --- filter ---
    MetricDef { name: FILTER_TERMS, kind: G, unit: Unit::Count, labels: &[], help: "Distinct terms in the sensitive-word list in force." },
    MetricDef { name: FILTER_RELOADS, kind: C, unit: Unit::Count, labels: &["result"], help: "Reloads of the sensitive-word list, by result (ok, error; an error keeps the previous list)." },
    MetricDef { name: FILTER_BLOCKED, kind: C, unit: Unit::Count, labels: &[], help: "Outbound messages refused because they contain a sensitive term." },
    // --- config reload ---
    MetricDef { name: CONFIG_RELOADS, kind: C, unit: Unit::Count, labels: &["result"], help: "Config reloads (SIGHUP, switchboard reload), by result (ok, error; an error keeps the config in force)." },
    MetricDef { name: CONFIG_LAST_RELOAD_SUCCESS, kind: G, unit: Unit::Count, labels: &[], help: "1 if the last config reload succeeded (or none was asked for since start), 0 if it was rejected." },
];

/// Alert kind as a bounded label value.
pub fn alert_kind_label(kind: &str) -> &'static str {
    bounded(kind, &["blocked_term", "token_expired", "number_paused"])
}

/// Latency buckets from 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
const BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
];
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics recorder: {0}")]
    Recorder(String),
    #[error("logging: {0}")]
    Logging(String),
}

/// Install the Prometheus recorder, describe every metric, and keep the
/// exporter's histograms trimmed on a timer. Call once per process.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let err = |e: metrics_exporter_prometheus::BuildError| TelemetryError::Recorder(e.to_string());
    let mut builder = PrometheusBuilder::new();
    for def in CATALOGUE.iter().filter(|d| d.kind == Kind::Histogram) {
        let buckets = match def.unit {
            Unit::Seconds => SECONDS_BUCKETS,
            Unit::Bytes => BYTES_BUCKETS,
            _ => COUNT_BUCKETS,
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full(def.name.to_string()), buckets)
            .map_err(err)?;
    }
    let handle = builder.install_recorder().map_err(err)?;
    describe_all();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let process = ProcessMetrics::new();
    process.refresh();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            process.refresh();
            upkeep.run_upkeep();
        })
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    Ok(handle)
}

/// How often the upkeep thread trims histograms and re-reads `/proc/self`.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// One reading of `/proc/self`; `None` where a file could not be read or parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: Option<u64>,
    /// Start time after boot, in clock ticks.
    pub start_ticks: Option<u64>,
}

impl ProcessSample {
    /// Read the current process's figures.
    pub fn read() -> ProcessSample {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let status = std::fs::read_to_string("/proc/self/status").ok();
        // The directory handle read_dir holds is listed too: not ours to count.
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count().saturating_sub(1) as u64);
        ProcessSample {
            resident_bytes: status.as_deref().and_then(parse_vm_rss),
            open_fds,
            threads: stat.map(|s| s.threads),
            cpu_ticks: stat.map(|s| s.utime + s.stime),
            start_ticks: stat.map(|s| s.starttime),
        }
    }
}

/// The fields of `/proc/<pid>/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    pub starttime: u64,
}

/// Parse `/proc/<pid>/stat` (proc(5)). The command name is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        starttime: field(22)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (the file gives kB).
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// `btime` of `/proc/stat`: boot time in seconds since the Unix epoch.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Publishes [`ProcessSample`]s as the `switchboard_process_*` metrics.
struct ProcessMetrics {
    ticks_per_second: u64,
    resident: metrics::Gauge,
    open_fds: metrics::Gauge,
    threads: metrics::Gauge,
    cpu: metrics::Counter,
}

impl ProcessMetrics {
    /// Register the metrics and set the start time, which never changes.
    fn new() -> ProcessMetrics {
        let ticks_per_second = rustix::param::clock_ticks_per_second().max(1);
        // Boot time plus the start offset, as ps does. `/proc/stat` is hidden
        // under systemd's ProcSubset=pid: then the moment metrics were
        // installed stands in (the first thing `serve` does, so milliseconds off).
        let from_proc = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_btime(&t))
            .zip(ProcessSample::read().start_ticks)
            .map(|(btime, ticks)| btime as f64 + ticks as f64 / ticks_per_second as f64);
        let start = from_proc.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        metrics::gauge!(PROCESS_START_TIME_SECONDS).set(start);
        ProcessMetrics {
            ticks_per_second,
            resident: metrics::gauge!(PROCESS_RESIDENT_MEMORY_BYTES),
            open_fds: metrics::gauge!(PROCESS_OPEN_FDS),
            threads: metrics::gauge!(PROCESS_THREADS),
            cpu: metrics::counter!(PROCESS_CPU_SECONDS),
        }
    }

    fn refresh(&self) {
        let s = ProcessSample::read();
        if let Some(v) = s.resident_bytes {
            self.resident.set(v as f64);
        }
        if let Some(v) = s.open_fds {
            self.open_fds.set(v as f64);
        }
        if let Some(v) = s.threads {
            self.threads.set(v as f64);
        }
        // The metrics facade's counters are integers: whole seconds.
        if let Some(ticks) = s.cpu_ticks {
            self.cpu.absolute(ticks / self.ticks_per_second);
        }
    }
}

fn describe_all() {
    for def in CATALOGUE {
        match def.kind {
            Kind::Counter => metrics::describe_counter!(def.name, def.unit, def.help),
            Kind::Gauge => metrics::describe_gauge!(def.name, def.unit, def.help),
            Kind::Histogram => metrics::describe_histogram!(def.name, def.unit, def.help),
        }
    }
}

/// Logs go to stderr; `level` is an EnvFilter directive (RUST_LOG overrides).
pub fn init_logging(level: &str, json: bool) -> Result<(), TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .map_err(|e| TelemetryError::Logging(e.to_string()))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| TelemetryError::Logging(e.to_string()))
}

/// Message `type` as a bounded label value.
pub fn message_type_label(kind: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "reaction",
        "order",
        "system",
        "unsupported",
        "edit",
        "revoke",
        "request_welcome",
        "errors",
    ];
    bounded(kind, KNOWN)
}

/// Status value as a bounded label value.
pub fn status_label(status: &str) -> &'static str {
    bounded(
        status,
        &[
            "sent",
            "delivered",
            "read",
            "failed",
            "played",
            "deleted",
            "warning",
        ],
    )
}

/// Webhook `field` as a bounded label value.
pub fn field_label(field: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "messages",
        "phone_number_quality_update",
        "phone_number_name_update",
        "message_template_status_update",
        "message_template_quality_update",
        "message_template_components_update",
        "template_category_update",
        "account_update",
        "account_review_update",
        "account_alerts",
        "business_capability_update",
        "user_preferences",
        "smb_message_echoes",
        "calls",
        "security",
        "flows",
        "history",
        "smb_app_state_sync",
    ];
    bounded(field, KNOWN)
}

/// Invalid-item reason as a bounded label value.
pub fn invalid_reason_label(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "not_an_object",
        "missing_id",
        "missing_sender",
        "invalid_sender",
        "missing_status",
        "missing_recipient",
        "malformed_change",
        "invalid_timestamp",
    ];
    bounded(reason, KNOWN)
}

fn bounded(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_follow_unit_conventions() {
        let mut seen = std::collections::HashSet::new();
        for def in CATALOGUE {
            assert!(seen.insert(def.name), "{} declared twice", def.name);
            assert!(def.name.starts_with("switchboard_"), "{}", def.name);
            assert!(!def.help.is_empty());
            match def.kind {
                Kind::Counter => assert!(def.name.ends_with("_total"), "{}", def.name),
                _ => assert!(!def.name.ends_with("_total"), "{}", def.name),
            }
            let base = def.name.strip_suffix("_total").unwrap_or(def.name);
            if def.unit == Unit::Seconds {
                assert!(base.ends_with("_seconds"), "{}", def.name);
            }
            if def.unit == Unit::Bytes {
                assert!(base.ends_with("_bytes"), "{}", def.name);
            }
        }
    }

    #[test]
    fn the_readme_catalogue_lists_exactly_the_declared_metrics() {
        let readme = include_str!("../README.md");
        let table: std::collections::BTreeSet<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `switchboard_"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let declared: std::collections::BTreeSet<&str> = CATALOGUE
            .iter()
            .map(|d| d.name.trim_start_matches("switchboard_"))
            .collect();
        assert_eq!(
            table, declared,
            "README.md's metric table and CATALOGUE differ"
        );
    }

    #[test]
    fn proc_files_parse_including_odd_command_names() {
        // proc(5) layout; the command name holds a space and a ')'.
        let stat = "4242 (switch board) x) S 1 4242 4242 0 -1 4194560 2795 0 0 0 \
                    1234 567 0 0 20 0 9 0 889911 123456789 5555 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                utime: 1234,
                stime: 567,
                threads: 9,
                starttime: 889911
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        let status = "Name:\tswitchboard\nVmPeak:\t  300000 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(20480 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1763990000\nprocesses 9\n"),
            Some(1763990000)
        );
    }

    #[test]
    fn this_process_reads_as_alive() {
        // Holding a file, so at least one descriptor is open whatever the
        // test runner did with stdio (other tests open and close their own).
        let held = std::fs::File::open("/proc/self/stat").unwrap();
        let s = ProcessSample::read();
        drop(held);
        assert!(s.resident_bytes.unwrap() > 1 << 20, "{s:?}");
        assert!(s.threads.unwrap() >= 1, "{s:?}");
        assert!(s.open_fds.unwrap() >= 1, "{s:?}");
        assert!(s.start_ticks.is_some() && s.cpu_ticks.is_some(), "{s:?}");
    }

    #[test]
    fn payload_strings_never_become_unbounded_labels() {
        assert_eq!(message_type_label("text"), "text");
        assert_eq!(message_type_label("16505551234"), "other");
        assert_eq!(status_label("in_orbit"), "other");
        assert_eq!(field_label("something_new"), "other");
        assert_eq!(invalid_reason_label("missing_sender"), "missing_sender");
    }
}
