//! The `switchboard` command: parse the command line, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{self, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's defaults commit its arenas eagerly and keep freed memory for a
/// second; our events are allocated on I/O threads and freed on shard
/// threads, and with the defaults RSS settled ~100 MB higher (see
/// BENCHMARKS.md). mimalloc reads options from the environment when it starts,
/// before `main`, so `serve` re-executes itself once with these set, unless
/// the operator chose values of their own.
const MIMALLOC_DEFAULTS: &[(&str, &str)] = &[
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "100"),
    ("MIMALLOC_ARENA_RESERVE", "16MiB"),
];
const TUNED_MARKER: &str = "SWITCHBOARD_ALLOCATOR_TUNED";

/// Re-execute this process with the allocator options set; returns only if
/// that is not needed or not possible (then the daemon runs untuned).
fn tune_allocator() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(TUNED_MARKER).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(TUNED_MARKER, "1");
    for (key, value) in MIMALLOC_DEFAULTS {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    let err = cmd.exec();
    eprintln!("switchboard: running with mimalloc's default options ({err})");
}

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Control backend for WhatsApp Business Cloud API numbers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (defaults work without a config file).
    Serve {
        /// Config file (TOML); see config/switchboard.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file without starting: prints every problem with its key and line.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Make the running daemon re-read its config file (as SIGHUP does) and print the outcome.
    Reload {
        /// The daemon's config file: only its storage.data_dir is read here, to find the
        /// daemon's pid file (default: ./switchboard-data).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to wait for the daemon to report the outcome.
        #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match config::check(&file) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Reload { config, timeout } => {
            use switchboard::reload;
            let outcome = reload::data_dir_of(config.as_deref())
                .and_then(|dir| reload::request(&dir, timeout));
            match outcome {
                Ok(status) => {
                    println!("{}", reload::describe(&status));
                    if status.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("switchboard reload: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { config: path } => {
            tune_allocator();
            let resolved = match path {
                Some(p) => match config::load(&p) {
                    Ok(r) => r,
                    Err(errors) => {
                        eprintln!("{errors}");
                        return ExitCode::from(2);
                    }
                },
                None => config::defaults(),
            };
            let logging = &resolved.config.logging;
            if let Err(e) = switchboard::telemetry::init_logging(
                &logging.level,
                logging.format == LogFormat::Json,
            ) {
                eprintln!("switchboard: {e}");
                return ExitCode::from(2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("io")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("switchboard: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(switchboard::daemon::run(resolved)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "switchboard stopped with an error");
                    eprintln!("switchboard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
