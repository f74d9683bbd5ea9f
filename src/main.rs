//! The `tripwire` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tripwire::config::Config;
use tripwire::{live, record, replay, telemetry};

/// Tripwire: real-time behavioural triggers for e-commerce (abandoned cart,
/// abandoned browse, price drop, back in stock, ...) on timely and
/// differential dataflow.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log as JSON lines instead of human-readable text (level from RUST_LOG).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job over recording files, with no broker, and write the trigger records.
    Replay {
        /// Recording files, or directories of `*.jsonl` files.
        #[arg(long, num_args = 1.., required = true)]
        input: Vec<PathBuf>,
        /// Where to write trigger records as JSON lines (`-` for stdout).
        #[arg(long)]
        output: PathBuf,
        /// Configuration file (TOML); without it every kind runs with default parameters.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Close event time here (ms) instead of at the largest `ts` in the input.
        #[arg(long)]
        until: Option<u64>,
        /// Override `time.bucket_ms` (timely time granularity; results do not depend on it).
        #[arg(long)]
        bucket_ms: Option<u64>,
    },
    /// Run the live job on Kafka until SIGINT/SIGTERM.
    Run {
        #[command(flatten)]
        args: live::RunArgs,
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Dump live topics into recording files, for replay in tests.
    Record {
        #[command(flatten)]
        args: record::RecordArgs,
    },
    /// Validate a configuration file and print the resolved campaigns.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay {
            input,
            output,
            config,
            workers,
            until,
            bucket_ms,
        } => {
            let mut config = load_config(config.as_ref())?;
            if let Some(b) = bucket_ms {
                anyhow::ensure!(b > 0, "--bucket-ms must be at least 1");
                config.time.bucket_ms = b;
            }
            if workers == 0 {
                anyhow::bail!("--workers must be at least 1");
            }
            let files = replay::input_files(&input)?;
            let sources = replay::read_sources(&files)?;
            let started = std::time::Instant::now();
            let summary = replay::replay(sources, &config, workers, until)?;
            replay::write_triggers(&output, &summary.triggers)?;
            tracing::info!(
                records = summary.records,
                bad_records = summary.bad_records,
                triggers = summary.triggers.len(),
                closed_at = summary.closed_at,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replay done"
            );
            Ok(())
        }
        Command::Run { .. } => anyhow::bail!("`run` is not built yet"),
        Command::Record { .. } => anyhow::bail!("`record` is not built yet"),
        Command::CheckConfig { file } => {
            let config = Config::load(&file).with_context(|| format!("checking {}", file.display()))?;
            for c in &config.campaigns {
                println!("{}", serde_json::to_string(c)?);
            }
            Ok(())
        }
    }
}
