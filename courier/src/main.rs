//! `tripwire-courier`: the delivery sidecar's command line.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tripwire_courier::clock::{Clock, OffsetClock, SystemClock};
use tripwire_courier::config::Config;
use tripwire_courier::runner::{run, RunOptions};

/// mimalloc: markedly less allocator overhead than glibc malloc for the
/// many small, short-lived allocations of JSON records.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tripwire's delivery sidecar: consumes trigger records, decides whether,
/// when and how to contact each user (quiet hours, frequency caps, minimum
/// gap, re-eligibility, control groups, staleness, consent), sends by push,
/// e-mail, SMS or webhook, and writes a receipt for every decision to the
/// `deliveries` topic.
///
/// Stops gracefully on SIGINT/SIGTERM: sends in flight finish (within
/// `engine.shutdown_grace_ms`), deferred and unsent messages stay in the
/// store and are picked up at the next start.
#[derive(Debug, Parser)]
#[command(name = "tripwire-courier", version)]
struct Args {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "TRIPWIRE_COURIER_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Policy, channel and template configuration (TOML; see
    /// docs/courier.md and courier/courier.example.toml).
    #[arg(long, env = "TRIPWIRE_COURIER_CONFIG")]
    config: PathBuf,
    /// Kafka consumer group of the triggers consumer.
    #[arg(long, default_value = "tripwire-courier")]
    group_id: String,
    /// Path of the embedded store file (profiles, decision ledger, history,
    /// deferred queue, outbox). Created when missing; profiles are then
    /// rebuilt from the compacted `profiles` topic.
    #[arg(long, default_value = "courier.redb")]
    store: PathBuf,
    /// Input topic of trigger records.
    #[arg(long, default_value = "triggers")]
    triggers_topic: String,
    /// Compacted topic of contact profiles.
    #[arg(long, default_value = "profiles")]
    profiles_topic: String,
    /// Output topic of delivery receipts.
    #[arg(long, default_value = "deliveries")]
    deliveries_topic: String,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9465")]
    metrics_addr: SocketAddr,
    /// Log format: `text` (colour only on a terminal) or `json` lines; the
    /// level comes from RUST_LOG (default info). The job takes the same flag.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// The same as `--log-format json` (the job's earlier spelling).
    #[arg(long, hide = true)]
    log_json: bool,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
    /// Testing only (feature `test-hooks`): pretend the wall clock started
    /// at this time (ms since the epoch) and runs at normal speed.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, env = "TRIPWIRE_COURIER_FAKE_CLOCK_START_MS")]
    fake_clock_start_ms: Option<i64>,
    /// Testing only (feature `test-hooks`): abort the process (as a crash
    /// would) once this many sends are recorded, without committing
    /// consumer offsets.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    crash_after_sends: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json || args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        // Colour only on a terminal: logs redirected to a file stay plain.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    let cfg = Config::load(&args.config)
        .with_context(|| format!("invalid configuration {}", args.config.display()))?;
    if args.check_config {
        println!("configuration {} is valid", args.config.display());
        return Ok(());
    }
    #[cfg(feature = "test-hooks")]
    let (fake_clock_start_ms, crash_after_sends) =
        (args.fake_clock_start_ms, args.crash_after_sends);
    #[cfg(not(feature = "test-hooks"))]
    let (fake_clock_start_ms, crash_after_sends) = (None::<i64>, None);
    let clock: Arc<dyn Clock> = match fake_clock_start_ms {
        Some(ms) => Arc::new(OffsetClock::new(ms)),
        None => Arc::new(SystemClock),
    };
    let opts = RunOptions {
        brokers: args.brokers,
        group_id: args.group_id,
        store_path: args.store,
        triggers_topic: args.triggers_topic,
        profiles_topic: args.profiles_topic,
        deliveries_topic: args.deliveries_topic,
        metrics_addr: args.metrics_addr,
        crash_after_sends,
        kafka: cfg.kafka_properties()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        run(cfg, opts, clock, shutdown_signal())
            .await
            .context("tripwire-courier failed")
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
