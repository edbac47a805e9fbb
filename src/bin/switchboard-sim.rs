//! `switchboard-sim`: the command line of the Graph API simulator. The logic lives in
//! `switchboard::sim::graph` so tests and benches can start it in-process; this file only
//! parses arguments, waits for signals and prints.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use switchboard::config::parse_duration;
use switchboard::sim::graph::{SimConfig, Simulator};

#[derive(Parser)]
#[command(
    name = "switchboard-sim",
    version,
    about = "A simulated WhatsApp Cloud API: send endpoint, status webhooks, inbound traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The simulator's TOML file (see config/sim.toml).
    #[arg(long)]
    config: PathBuf,
    /// Override the seed of the file.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Graph API until SIGTERM/SIGINT; prints one JSON line once listening.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Override `listen` of the file.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Also post generated inbound messages to the webhook target at this rate (msgs/s)
        /// for as long as the simulator runs.
        #[arg(long)]
        inbound_rate: Option<f64>,
        /// Customer pool of --inbound-rate.
        #[arg(long, default_value_t = 1000)]
        inbound_customers: u32,
    },
    /// Post generated inbound messages to the webhook target for a while, then print a JSON
    /// report (the Graph API listens on a free loopback port meanwhile).
    Inbound {
        #[command(flatten)]
        common: Common,
        /// Messages per second over all numbers.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 1000)]
        customers: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sim")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(common: &Common) -> anyhow::Result<SimConfig> {
    let mut cfg = SimConfig::from_file(&common.config)?;
    if let Some(seed) = common.seed {
        cfg.seed = seed;
    }
    Ok(cfg)
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            common,
            listen,
            inbound_rate,
            inbound_customers,
        } => {
            let mut cfg = load(&common)?;
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            serve(cfg, inbound_rate, inbound_customers).await
        }
        Command::Inbound {
            common,
            rate,
            duration,
            customers,
        } => {
            let mut cfg = load(&common)?;
            cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            inbound(cfg, rate, duration, customers).await
        }
    }
}

async fn serve(
    cfg: SimConfig,
    inbound_rate: Option<f64>,
    inbound_customers: u32,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before listening, so a signal right after the "listening" line is not lost.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let sim = Simulator::start(cfg).await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "addr": sim.addr().to_string(),
            "base_url": sim.base_url(),
            "run_id": sim.run_id(),
            "pid": std::process::id(),
        })
    );
    let _ = std::io::stdout().flush();
    // "For as long as the simulator runs": a year, ended by shutdown.
    let generator = inbound_rate.map(|rate| {
        sim.generate_inbound(rate, Duration::from_secs(365 * 86_400), inbound_customers)
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let stats = sim.stats();
    sim.shutdown().await;
    if let Some(g) = generator {
        if let Ok(Err(e)) = g.await {
            eprintln!("switchboard-sim: inbound generation: {e}");
        }
    }
    println!(
        "{}",
        serde_json::json!({"event": "stopped", "stats": stats})
    );
    Ok(ExitCode::SUCCESS)
}

async fn inbound(
    cfg: SimConfig,
    rate: f64,
    duration: Duration,
    customers: u32,
) -> anyhow::Result<ExitCode> {
    if cfg.webhook.is_none() {
        bail!("the config has no [webhook] table: there is nowhere to post");
    }
    let sim = Simulator::start(cfg).await?;
    let report = sim
        .generate_inbound(rate, duration, customers)
        .await
        .context("the generator task failed")??;
    sim.shutdown().await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.posted_failed == 0 && report.posted_ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
