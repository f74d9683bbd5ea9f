//! The `tripwire` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tripwire::config::{campaign_json, describe, Config};
use tripwire::{live, produce, record, replay, telemetry};

/// Tripwire: real-time behavioural triggers for e-commerce (abandoned cart,
/// abandoned browse, price drop, back in stock, ...) on timely and
/// differential dataflow.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format: `text` (colour only on a terminal) or `json` lines; the
    /// level comes from RUST_LOG (default info). The courier takes the same flag.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// The same as `--log-format json` (the earlier spelling).
    #[arg(long, global = true, hide = true)]
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
        /// Rounds of event time of exactly this width (ms); by default replay
        /// chooses them from the input's density, from `time.bucket_ms` up to
        /// 1 h (results do not depend on the width, only the cost does).
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
        /// Configuration file (TOML); only its `[kafka]` client properties
        /// are used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Send recording files (what `generate` and `record` write) to Kafka:
    /// each line's `value` to its `topic` (renamed per `[topics]`), keyed by
    /// its `key`.
    Produce {
        #[command(flatten)]
        args: produce::ProduceArgs,
        /// Configuration file (TOML); only its `[topics]` names and `[kafka]`
        /// client properties are used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the job on generated traffic, with no broker, and show what fires.
    Demo {
        #[command(flatten)]
        traffic: tripwire::generate::GenerateArgs,
        /// Configuration file (TOML); without it every kind runs with default parameters.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// How many trigger records to print.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// Write generated traffic as a recording (JSON lines), for replay or a Kafka producer.
    Generate {
        #[command(flatten)]
        traffic: tripwire::generate::GenerateArgs,
        /// Where to write the recording (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: PathBuf,
    },
    /// Validate a configuration file and print the resolved campaigns, one
    /// line each (name, kind, every parameter with its unit, filters,
    /// metadata); exits non-zero naming the offending field.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
        /// Print one JSON object per campaign and line instead.
        #[arg(long)]
        json: bool,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    tripwire::without_huge_pages();
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_json || cli.log_format == "json");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): not an error.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether `e` comes from writing to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Warns when `workers` threads exceed the cores available: timely's
/// workers spin while they wait for each other, so more workers than cores
/// slow the job down instead of speeding it up.
fn warn_if_oversubscribed(workers: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers > cores {
        tracing::warn!(
            workers,
            cores,
            "more workers than cores: the job will be slower, not faster"
        );
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
            let mut rounds = replay::Rounds::Auto;
            if let Some(b) = bucket_ms {
                anyhow::ensure!(b > 0, "--bucket-ms must be at least 1");
                config.time.bucket_ms = b;
                rounds = replay::Rounds::Configured;
            }
            if workers == 0 {
                anyhow::bail!("--workers must be at least 1");
            }
            warn_if_oversubscribed(workers);
            let files = replay::input_files(&input)?;
            let sources = replay::file_sources(&files);
            let started = std::time::Instant::now();
            let sink = replay::file_sink(&output)?;
            let summary = replay::replay_with(sources, &config, workers, until, rounds, sink)
                .map_err(|e| match e {
                    replay::ReplayError::Output { source, .. } => replay::ReplayError::Output {
                        path: output.display().to_string(),
                        source,
                    },
                    other => other,
                })?;
            tracing::info!(
                records = summary.records,
                bad_records = summary.bad_records,
                triggers = summary.triggers,
                closed_at = summary.closed_at,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replay done"
            );
            Ok(())
        }
        Command::Run {
            args,
            config,
            workers,
        } => {
            let config = load_config(config.as_ref())?;
            warn_if_oversubscribed(workers);
            tripwire::kafka::use_properties(config.kafka.clone());
            live::run(args, config, workers)
        }
        Command::Record { args, config } => {
            let config = load_config(config.as_ref())?;
            tripwire::kafka::use_properties(config.kafka.clone());
            record::run(args)
        }
        Command::Produce { args, config } => {
            let config = load_config(config.as_ref())?;
            tripwire::kafka::use_properties(config.kafka.clone());
            produce::run(args, &config).map(|_| ())
        }
        Command::Demo {
            traffic,
            config,
            workers,
            show,
        } => {
            let config = load_config(config.as_ref())?;
            anyhow::ensure!(workers > 0, "--workers must be at least 1");
            warn_if_oversubscribed(workers);
            demo(&traffic, &config, workers, show)
        }
        Command::Generate { traffic, output } => {
            let mut out: Box<dyn std::io::Write> = if output.as_os_str() == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(
                    std::fs::File::create(&output)
                        .with_context(|| format!("creating {}", output.display()))?,
                )
            };
            let n = tripwire::generate::write_jsonl(&traffic, &mut out)?;
            tracing::info!(records = n, "generated");
            Ok(())
        }
        Command::CheckConfig { file, json } => {
            let config =
                Config::load(&file).with_context(|| format!("checking {}", file.display()))?;
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for c in &config.campaigns {
                let line = if json { campaign_json(c) } else { describe(c) };
                match writeln!(out, "{line}") {
                    // A closed pipe (`| head`) is not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    other => other?,
                }
            }
            Ok(())
        }
    }
}

/// Generates traffic in memory, replays it and prints a sample and a summary.
fn demo(
    traffic: &tripwire::generate::GenerateArgs,
    config: &Config,
    workers: usize,
    show: usize,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    let started = std::time::Instant::now();
    let mut text = String::new();
    let mut events = 0u64;
    for line in tripwire::generate::lines(traffic) {
        text.push_str(&line);
        text.push('\n');
        events += 1;
    }
    let generated = started.elapsed();
    let started = std::time::Instant::now();
    let summary = replay::replay(vec![("generated".into(), text)], config, workers, None)?;
    let elapsed = started.elapsed();
    // A sample across kinds: the first records of each, in time order.
    let mut kinds: Vec<&str> = summary.triggers.iter().map(|t| t.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let per_kind = show.div_ceil(kinds.len().max(1));
    let mut sample: Vec<&dataflows::model::Trigger> = Vec::new();
    for kind in &kinds {
        sample.extend(
            summary
                .triggers
                .iter()
                .filter(|t| t.kind == *kind)
                .take(per_kind),
        );
    }
    sample.sort_by_key(|t| t.ts);
    sample.truncate(show);
    // Written, not printed: a closed pipe (`| head`) ends the demo quietly.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "A sample of {} of the {} trigger records:",
        sample.len(),
        summary.triggers.len()
    )?;
    for t in sample {
        writeln!(
            out,
            "  {}",
            serde_json::to_string(&tripwire::codec::TriggerJson::from(t))?
        )?;
    }
    let mut per_campaign: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for t in &summary.triggers {
        *per_campaign
            .entry((t.campaign.as_str(), t.kind.as_str()))
            .or_default() += 1;
    }
    writeln!(out)?;
    writeln!(out, "Summary")?;
    writeln!(
        out,
        "  records replayed   {events} ({} bad), generated in {:.2} s",
        summary.bad_records,
        generated.as_secs_f64()
    )?;
    writeln!(out, "  event time closed  {} ms", summary.closed_at)?;
    writeln!(
        out,
        "  replay             {:.2} s on {workers} worker(s), {:.0} records/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(1e-9)
    )?;
    writeln!(out, "  triggers by campaign:")?;
    for ((campaign, kind), n) in per_campaign {
        writeln!(out, "    {campaign:<24} {kind:<22} {n}")?;
    }
    Ok(())
}
