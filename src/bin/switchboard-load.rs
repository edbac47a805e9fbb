//! `switchboard-load`: the command line of the webhook load generator. The logic lives in
//! `switchboard::sim::load` so tests and benches can call it; this file only parses
//! arguments, builds the runtime and prints.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use switchboard::config::parse_duration;
use switchboard::sim::client::HttpsClient;
use switchboard::sim::load::{self, LoadConfig, NumberSpec, PayloadConfig};
use switchboard::sim::outbound_load::{self, OutboundLoadConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard-load",
    version,
    about = "Load generator for Switchboard's WhatsApp webhook front door"
)]
struct Cli {
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Target {
    /// host:port of the HTTPS listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    target: String,
    /// PEM file of the CA to trust (the daemon prints it as "ca" when it generated one).
    #[arg(long)]
    ca: PathBuf,
    /// TLS name to verify (default: the host of --target).
    #[arg(long)]
    server_name: Option<String>,
    /// The Meta app secret that signs the webhooks.
    #[arg(long)]
    secret: String,
    /// Offer only h2 (default: only http/1.1).
    #[arg(long)]
    http2: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Post signed single-message webhooks over N keep-alive connections and report.
    Run(RunArgs),
    /// Serve a bare hyper+rustls server answering 200 (the baseline).
    Bare {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where the generated certificate is kept (default: a temporary directory).
        #[arg(long)]
        cert_dir: Option<PathBuf>,
    },
    /// Start the daemon against an in-process Graph API simulator, queue a campaign backlog,
    /// reply as agents while it drains, and report send rate and agent latency (JSON).
    Outbound(OutboundArgs),
    /// Post the given files, signed, and print each status and response body.
    Fixture {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// A phone_number_id the daemon serves (ID or ID:DISPLAY); repeat for several.
    #[arg(long = "number", required = true)]
    numbers: Vec<NumberSpec>,
    /// entry[].id of the generated webhooks.
    #[arg(long, default_value = "900000000000001")]
    waba_id: String,
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Measurement window (after the warm-up).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Target messages per second over all connections (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Size of the customer pool.
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    #[arg(long, default_value_t = 1)]
    messages_per_post: u32,
    /// Pad each body to this many bytes (default: realistic bodies of ~600-900 bytes).
    #[arg(long)]
    body_bytes: Option<usize>,
    /// Bound on one exchange.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Stop after sending this many messages (warm-up included), even before --duration.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Part of every wamid (default: derived from the time and pid).
    #[arg(long)]
    run_id: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct OutboundArgs {
    /// The switchboard binary.
    #[arg(long)]
    daemon: PathBuf,
    /// Config, data and log of the run (created).
    #[arg(long)]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 1000)]
    numbers: usize,
    /// Ceiling per number, known to both sides.
    #[arg(long, default_value_t = 80.0)]
    per_second: f64,
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Messages per batch request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 500)]
    agent_customers: usize,
    #[arg(long, default_value_t = 20.0)]
    agent_rate: f64,
    /// Agent replies start once this many campaign messages are queued.
    #[arg(long, default_value_t = 100_000)]
    agents_after: u64,
    #[arg(long, default_value_t = 0)]
    shards: usize,
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    deadline: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("load");
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-load: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Bare { listen, cert_dir } => bare(listen, cert_dir).await,
        Command::Fixture { target, files } => fixture(target, files).await,
        Command::Outbound(a) => {
            let report = outbound_load::run(OutboundLoadConfig {
                daemon: a.daemon,
                work_dir: a.work_dir,
                numbers: a.numbers,
                per_second: a.per_second,
                backlog: a.backlog,
                connections: a.connections,
                batch: a.batch,
                agent_customers: a.agent_customers,
                agent_rate: a.agent_rate,
                agents_after: a.agents_after,
                shards: a.shards,
                deadline: a.deadline,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let t = &args.target;
    let (addr, tls) = load::tls_target(&t.target, &t.ca, t.server_name.as_deref(), t.http2)?;
    let cfg = LoadConfig {
        addr,
        tls,
        http2: t.http2,
        secret: t.secret.as_bytes().to_vec(),
        payload: PayloadConfig {
            numbers: args.numbers,
            waba_id: args.waba_id,
            customers: args.customers,
            messages_per_post: args.messages_per_post,
            body_bytes: args.body_bytes,
            run_id: args.run_id.unwrap_or_else(load::new_run_id),
        },
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
        request_timeout: args.timeout,
        max_messages: args.max_messages,
    };
    let report = load::run(cfg).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(if report.acknowledged_requests > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bare(listen: SocketAddr, cert_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // A temporary certificate directory is removed again at exit; a given one is kept.
    let (dir, temporary) = match cert_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("switchboard-load-bare-{}", std::process::id())),
            true,
        ),
    };
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without signal handlers the server could not be stopped cleanly: stop now.
            _ => eprintln!("switchboard-load: cannot install signal handlers"),
        }
    };
    let result = load::run_bare(
        listen,
        &dir,
        |l| {
            println!(
                "{}",
                serde_json::json!({
                    "event": "listening",
                    "https": l.https.to_string(),
                    "pid": std::process::id(),
                    "ca": l.ca.display().to_string(),
                })
            );
            let _ = std::io::stdout().flush();
        },
        shutdown,
    )
    .await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result?;
    eprintln!("switchboard-load bare: stopped ({report:?})");
    Ok(ExitCode::SUCCESS)
}

async fn fixture(t: Target, files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let (addr, tls) = load::tls_target(&t.target, &t.ca, t.server_name.as_deref(), t.http2)?;
    let client = HttpsClient::new(addr, Some(tls), t.http2);
    let mut all_ok = true;
    for file in files {
        let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let (status, response) = load::post_signed(&client, t.secret.as_bytes(), Bytes::from(body))
            .await
            .with_context(|| format!("posting {}", file.display()))?;
        all_ok &= status.is_success();
        println!(
            "{} {} {}",
            file.display(),
            status.as_u16(),
            String::from_utf8_lossy(&response)
        );
    }
    if !all_ok {
        bail!("not every file was accepted");
    }
    Ok(ExitCode::SUCCESS)
}
