//! End-to-end replay throughput: streams a generated workload through the
//! whole job (JSON lines, decode, dataflow, emission of JSON records to a
//! counting sink) and prints events/s and the process's peak resident
//! memory. Nothing is held outside the dataflow (each worker runs its own
//! generator and keeps every `workers`-th line), so the peak is the job's
//! state; with `RUST_LOG=info` the resident memory is logged as event time
//! advances (the memory-flatness view).
//!
//! `cargo bench --bench throughput -- [--events N] [--users N] [--products N]
//!  [--workers N] [--rate-per-s R] [--bucket-ms MS] [--config FILE]`
//! Defaults: 10M events, 1M users, 100k products, 2 workers.
//!
//! `cargo bench --bench throughput -- --input FILE [--workers N] [--config FILE]`
//! replays a recording file instead, exactly as `tripwire replay` reads it
//! (the figures of the side-by-side table: `../shared/bench/gen.py` files),
//! with the configuration's bucket width.

use std::time::Instant;

use tripwire::config::Config;
use tripwire::generate::{lines, GenerateArgs};

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tripwire::without_huge_pages();
    tripwire::telemetry::init_logging(false);
    let gen = GenerateArgs {
        events: arg("--events", 10_000_000.0) as u64,
        users: arg("--users", 1_000_000.0) as u64,
        products: arg("--products", 100_000.0) as u64,
        rate_per_s: arg("--rate-per-s", 100.0),
        ..GenerateArgs::default()
    };
    let workers = arg("--workers", 2.0) as usize;
    let args: Vec<String> = std::env::args().collect();
    let mut config = match args.iter().position(|a| a == "--config") {
        Some(i) => Config::load(std::path::Path::new(&args[i + 1])).expect("a valid --config"),
        None => Config::default(),
    };
    let encoded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = encoded.clone();
    let sink = Box::new(move |batch: &[dataflows::model::Trigger]| {
        // Encode as the CLI would, and count the bytes.
        let bytes: usize = batch
            .iter()
            .map(|t| tripwire::codec::encode_trigger(t).len() + 1)
            .sum();
        count.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    if let Some(i) = args.iter().position(|a| a == "--input") {
        let input = std::path::PathBuf::from(&args[i + 1]);
        let started = Instant::now();
        let summary = tripwire::replay::replay_with(
            tripwire::replay::file_sources(std::slice::from_ref(&input)),
            &config,
            workers,
            None,
            tripwire::replay::Rounds::Auto,
            sink,
        )
        .expect("replay runs");
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "throughput: {} records of {} in {elapsed:.2} s on {workers} workers = {:.0} events/s; \
             {} triggers ({} MB of JSON); peak RSS {:.0} MB (rounds chosen from the input)",
            summary.records,
            input.display(),
            summary.records as f64 / elapsed,
            summary.triggers,
            encoded.load(std::sync::atomic::Ordering::Relaxed) / 1_000_000,
            peak_rss_mb(),
        );
        return;
    }
    config.time.bucket_ms = arg("--bucket-ms", 60_000.0) as u64;

    let events = gen.events;
    let started = Instant::now();
    let lines_of = gen.clone();
    let summary = tripwire::replay::replay_lines(move || lines(&lines_of), &config, workers, sink)
        .expect("replay runs");
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "throughput: {events} events ({} users, {} products) in {elapsed:.1} s on {workers} workers = {:.0} events/s \
         (generation included); {} triggers ({} MB of JSON); peak RSS {:.0} MB; bucket {} ms",
        gen.users,
        gen.products,
        events as f64 / elapsed,
        summary.triggers,
        encoded.load(std::sync::atomic::Ordering::Relaxed) / 1_000_000,
        peak_rss_mb(),
        config.time.bucket_ms,
    );
}
