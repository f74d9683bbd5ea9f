//! The live job: Kafka in, triggers out.
//!
//! Each timely worker of this process reads a static share of the input
//! partitions (partition `p` of every input topic to worker `p % peers`,
//! assigned explicitly, no group balancing), decodes each record with the
//! codec and hands it to its [`Job`]. Bad records go to the dead-letter
//! topic. Event time follows triggers.md (*Time*): a partition's watermark is
//! the largest `ts` read from it minus `time.lateness_ms`; a caught-up
//! partition (position at its high-water mark, as reported by the latest
//! fetch response and re-read every `time.watermark_poll_ms`) holds nothing back beyond wall-clock now minus
//! the lateness; the worker's frontier is the least watermark over its
//! partitions (wall-clock now minus the lateness if it has none).
//!
//! Recovery model: at-least-once, with nothing persisted. The job commits no
//! offsets and keeps no state outside memory: after a restart it re-reads
//! from `--start` and rebuilds its state from what it reads. Trigger ids are
//! deterministic, so a trigger re-derived after a restart carries the same
//! id and the same bytes (wire.md allows the repeat; the delivery side
//! deduplicates on it). With `--start earliest` (and topics retaining at
//! least the retention windows) nothing is lost, at the price of repeats;
//! with `latest` or a time, state older than the start is lost, so timers
//! pending at the crash and facts read before the start do not count.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dataflows::model::Trigger;
use dataflows::operators::Clock;
use rdkafka::message::Message;

use crate::codec::{self, TopicNames};
use crate::config::Config;
use crate::kafka::{self, Output, Progress, StartAt};
use crate::runtime::Job;
use crate::telemetry::{
    self, BadRecordSeen, DeadLettered, FrontierAdvanced, LateEvent, RecordsRead, TriggerEmitted,
};

/// `tripwire run` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub brokers: String,
    /// Where to start reading: `earliest`, `latest`, or a time in ms since the
    /// epoch (ListOffsets by timestamp: Apache Kafka only, not tansu).
    #[arg(long, default_value = "latest")]
    pub start: String,
    /// Prometheus endpoint address.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Consumer group id (only names the instance: partitions are assigned
    /// statically and no offsets are committed). Default: unique per run.
    #[arg(long)]
    pub group_id: Option<String>,
    /// Create the output topics (`topics.triggers`, `topics.dead_letter`)
    /// when they are missing, with this many partitions each and the
    /// broker's default replication. Without it a missing output topic
    /// stops the job at start (triggers would otherwise be dropped).
    #[arg(long, value_name = "PARTITIONS")]
    pub create_output_topics: Option<i32>,
    /// Cluster mode: number of processes of this job (timely's multi-process
    /// mode; each runs `--workers` threads and reads its workers' partitions).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Cluster mode: this process's index, 0 .. processes.
    #[arg(long, default_value_t = 0)]
    pub process: usize,
    /// Cluster mode: file with one `host:port` per process, in index order.
    #[arg(long)]
    pub hostfile: Option<std::path::PathBuf>,
}

/// The timely configuration: one process, or a member of a cluster.
fn timely_config(args: &RunArgs, workers: usize) -> anyhow::Result<timely::Config> {
    if args.processes <= 1 {
        return Ok(timely::Config::process(workers));
    }
    anyhow::ensure!(
        args.process < args.processes,
        "--process must be below --processes ({})",
        args.processes
    );
    let path = args
        .hostfile
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--processes > 1 needs --hostfile"))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        addresses.len() == args.processes,
        "{} lists {} addresses for --processes {}",
        path.display(),
        addresses.len(),
        args.processes
    );
    Ok(timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: workers,
            process: args.process,
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    })
}

/// Records read per poll round before the dataflow gets a step.
const BATCH: usize = 2048;
/// Longest park of an idle worker.
const IDLE_PARK: Duration = Duration::from_millis(20);
/// How long shutdown waits for the producer to deliver what it holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What one worker did.
#[derive(Debug, Default)]
struct WorkerSummary {
    partitions: usize,
    records: u64,
    bad_records: u64,
    late_events: u64,
    triggers: u64,
    dead_letters: u64,
    produce_failures: u64,
    frontier: u64,
}

/// Runs the live job until SIGINT/SIGTERM.
pub fn run(args: RunArgs, config: Config, workers: usize) -> anyhow::Result<()> {
    anyhow::ensure!(workers > 0, "--workers must be at least 1");
    let start: StartAt = args
        .start
        .parse()
        .map_err(|e| anyhow::anyhow!("--start {e}"))?;
    let stop = kafka::stop_on_signals()?;
    let metrics = telemetry::serve_metrics(args.metrics_addr)
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
    tracing::info!(addr = %metrics, "metrics endpoint at /metrics");

    let group_id = args
        .group_id
        .clone()
        .unwrap_or_else(|| kafka::unique_group_id("tripwire"));
    let topics = config.topics.inputs();
    let names: Vec<String> = codec::Topic::ALL
        .iter()
        .map(|t| topics.name(*t).to_string())
        .collect();
    let starts = {
        let probe = kafka::consumer(&args.brokers, &group_id)?;
        let parts = kafka::partitions(&probe, &names)?;
        anyhow::ensure!(
            !parts.is_empty(),
            "none of the input topics ({}) exists on {}",
            names.join(", "),
            args.brokers
        );
        check_output_topics(&probe, &args, &config)?;
        kafka::resolve_starts(&probe, &parts, start)?
    };
    tracing::info!(
        brokers = %args.brokers,
        group_id = %group_id,
        partitions = starts.len(),
        workers,
        start = %args.start,
        "starting the live job"
    );

    let shared = Arc::new(Shared {
        brokers: args.brokers.clone(),
        group_id,
        topics,
        limits: config.limits,
        triggers_topic: config.topics.triggers.clone(),
        dead_letter_topic: config.topics.dead_letter.clone(),
        lateness_ms: config.time.lateness_ms,
        max_future_ms: config.time.max_future_ms,
        watermark_poll: Duration::from_millis(config.time.watermark_poll_ms.max(1)),
        clock: Clock::new(config.time.bucket_ms),
        campaigns: config.campaigns.clone(),
        retention: config.retention.clone(),
        starts,
        stop: stop.clone(),
        barrier: Barrier::new(workers),
    });
    let started = Instant::now();
    let timely_config = timely_config(&args, workers)?;
    let results = timely::execute(timely_config, move |worker| run_worker(worker, &shared))
        .map_err(|e| anyhow::anyhow!("timely: {e}"))?
        .join();
    let mut total = WorkerSummary::default();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(Ok(s)) => {
                total.partitions += s.partitions;
                total.records += s.records;
                total.bad_records += s.bad_records;
                total.late_events += s.late_events;
                total.triggers += s.triggers;
                total.dead_letters += s.dead_letters;
                total.produce_failures += s.produce_failures;
                total.frontier = if total.frontier == 0 {
                    s.frontier
                } else {
                    total.frontier.min(s.frontier)
                };
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("worker failed: {e}"));
            }
        }
    }
    tracing::info!(
        partitions = total.partitions,
        records = total.records,
        bad_records = total.bad_records,
        late_events = total.late_events,
        triggers = total.triggers,
        dead_letters = total.dead_letters,
        produce_failures = total.produce_failures,
        frontier = total.frontier,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "live job stopped"
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fails, naming them, when the output topics do not exist (a trigger the
/// broker refuses for a missing topic would be lost), or creates them when
/// `--create-output-topics` says so.
fn check_output_topics<C: rdkafka::consumer::ConsumerContext>(
    probe: &rdkafka::consumer::BaseConsumer<C>,
    args: &RunArgs,
    config: &Config,
) -> anyhow::Result<()> {
    let outputs = [
        config.topics.triggers.as_str(),
        config.topics.dead_letter.as_str(),
    ];
    let missing = kafka::missing_topics(probe, &outputs)?;
    if missing.is_empty() {
        return Ok(());
    }
    match args.create_output_topics {
        Some(partitions) if partitions > 0 => {
            kafka::create_topics(&args.brokers, probe, &missing, partitions)?;
            tracing::info!(topics = %missing.join(", "), partitions, "created the output topics");
            Ok(())
        }
        Some(p) => anyhow::bail!("--create-output-topics must be at least 1 (got {p})"),
        None => anyhow::bail!(
            "output topic(s) {} do not exist on {}: create them (topics.triggers, \
             topics.dead_letter in the configuration name them), or start with \
             --create-output-topics PARTITIONS",
            missing.join(", "),
            args.brokers
        ),
    }
}

/// What every worker needs.
struct Shared {
    brokers: String,
    group_id: String,
    topics: TopicNames,
    limits: codec::Limits,
    triggers_topic: String,
    dead_letter_topic: String,
    lateness_ms: u64,
    max_future_ms: u64,
    watermark_poll: Duration,
    clock: Clock,
    campaigns: Vec<dataflows::campaign::Campaign>,
    retention: dataflows::campaign::Retention,
    starts: Vec<kafka::PartitionStart>,
    stop: Arc<AtomicBool>,
    barrier: Barrier,
}

/// Trigger counts shared between the sink (inside the dataflow) and the loop.
#[derive(Default)]
struct SinkState {
    triggers: u64,
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Shared,
) -> anyhow::Result<WorkerSummary> {
    let index = worker.index();
    let peers = worker.peers();
    let mine = kafka::share(&shared.starts, index, peers);
    let mut summary = WorkerSummary {
        partitions: mine.len(),
        ..Default::default()
    };

    // Clients first, so that the sink can own the producer; a failure here
    // stops every worker (after the job is built: building is collective).
    let clients = (|| {
        let output = Output::new(&shared.brokers, shared.stop.clone())?;
        let consumer = kafka::consumer(&shared.brokers, &shared.group_id)?;
        kafka::assign(&consumer, &mine)?;
        anyhow::Ok((output, consumer))
    })();
    let (output, consumer) = match clients {
        Ok((o, c)) => (Some(Rc::new(RefCell::new(o))), Some(c)),
        Err(e) => {
            shared.stop.store(true, Ordering::SeqCst);
            tracing::error!(worker = index, error = %format!("{e:#}"), "cannot start the Kafka clients");
            (None, None)
        }
    };
    let sink_state = Rc::new(RefCell::new(SinkState::default()));
    let mut job = {
        let output = output.clone();
        let topic = shared.triggers_topic.clone();
        let state = sink_state.clone();
        Job::build(
            worker,
            &shared.campaigns,
            &shared.retention,
            shared.clock,
            move |t: Trigger| {
                if let Some(out) = &output {
                    let payload = codec::encode_trigger(&t);
                    out.borrow_mut()
                        .send(&topic, Some(t.user_id.as_bytes()), &payload);
                    TriggerEmitted {
                        campaign: &t.campaign,
                        kind: &t.kind,
                    }
                    .emit();
                    state.borrow_mut().triggers += 1;
                }
            },
        )
    };
    tracing::debug!(worker = index, partitions = mine.len(), "worker started");

    let mut progress = Progress::new(&mine);
    let mut next_refresh = Instant::now() + shared.watermark_poll;
    let mut frontier = 0u64;
    let mut error = None;
    if let (Some(consumer), Some(output)) = (&consumer, &output) {
        while !shared.stop.load(Ordering::Relaxed) {
            let mut n = 0;
            // Records after this are too far in the future (`future_ts`).
            let horizon = kafka::now_ms().saturating_add(shared.max_future_ms);
            while n < BATCH {
                let msg = match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(worker = index, error = %e, "consumer error");
                        break;
                    }
                };
                n += 1;
                summary.records += 1;
                let topic = msg.topic();
                let Some(role) = shared.topics.role(topic) else {
                    continue;
                };
                RecordsRead { topic, count: 1 }.emit();
                let decoded =
                    codec::decode_within(role, msg.payload().unwrap_or_default(), &shared.limits)
                        .and_then(|input| {
                            if input.time() > horizon {
                                return Err(codec::BadRecord {
                                    reason: codec::BadReason::FutureTs,
                                    detail: format!(
                                        "`ts` lies beyond the wall clock by more than time.max_future_ms = {}",
                                        shared.max_future_ms
                                    ),
                                });
                            }
                            Ok(input)
                        });
                match decoded {
                    Ok(input) => {
                        let ts = input.time();
                        progress.read(topic, msg.partition(), msg.offset(), Some(ts));
                        if job.send(input) {
                            summary.late_events += 1;
                            LateEvent {
                                topic,
                                ts,
                                frontier,
                            }
                            .emit();
                        }
                    }
                    Err(bad) => {
                        progress.read(topic, msg.partition(), msg.offset(), None);
                        summary.bad_records += 1;
                        let location = format!("{topic}/{}@{}", msg.partition(), msg.offset());
                        BadRecordSeen {
                            topic,
                            reason: bad.reason.label(),
                            location: &location,
                            detail: &bad.detail,
                        }
                        .emit();
                        let payload = kafka::dead_letter_payload(
                            bad.reason.label(),
                            &bad.detail,
                            topic,
                            msg.partition(),
                            msg.offset(),
                            msg.payload(),
                        );
                        output
                            .borrow_mut()
                            .send(&shared.dead_letter_topic, msg.key(), &payload);
                        summary.dead_letters += 1;
                        DeadLettered { topic }.emit();
                    }
                }
            }
            if Instant::now() >= next_refresh {
                progress.refresh_highs(consumer);
                next_refresh = Instant::now() + shared.watermark_poll;
            }
            let now = kafka::now_ms();
            let f = progress.frontier(now, shared.lateness_ms);
            if f > frontier {
                frontier = f;
                job.advance_to(frontier);
                FrontierAdvanced {
                    frontier_ms: frontier,
                    now_ms: now,
                }
                .emit();
            } else {
                job.flush();
            }
            output.borrow().poll();
            if n == 0 {
                worker.step_or_park(Some(IDLE_PARK));
            } else {
                worker.step();
            }
        }
    } else {
        error = Some(anyhow::anyhow!(
            "worker {index}: the Kafka clients did not start (see the log)"
        ));
    }

    // Stop: every worker leaves its loop before any drops the dataflow, and
    // the dataflow is dropped rather than drained, so that timers not yet due
    // do not fire on the way out.
    shared.barrier.wait();
    drop(job);
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
    summary.triggers = sink_state.borrow().triggers;
    summary.frontier = frontier;
    if let Some(output) = output {
        let out = output.borrow();
        if let Err(e) = out.flush(FLUSH_TIMEOUT) {
            tracing::error!(worker = index, error = %format!("{e:#}"), "producer not flushed");
            error.get_or_insert(e);
        }
        summary.produce_failures = out.delivery_failures() + out.dropped;
    }
    drop(consumer);
    tracing::debug!(worker = index, ?summary, "worker stopped");
    match error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}
