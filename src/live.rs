//! The live job: Kafka in, triggers out.
//!
//! Each timely worker reads a static share of the input partitions
//! (partition `p` of every input topic to worker `p % peers`; worker
//! indices and `peers` span every process of a cluster, `--processes`;
//! assigned explicitly, no group balancing), decodes each record with the
//! codec and hands it to its [`Job`]. Bad records go to the dead-letter
//! topic. Event time follows triggers.md (*Time*): a partition's watermark is
//! the largest `ts` read from it minus `time.lateness_ms`; a caught-up
//! partition (position at its high-water mark, as reported by the latest
//! fetch response and re-read every `time.watermark_poll_ms`) holds nothing back beyond wall-clock now minus
//! the lateness; the worker's frontier is the least watermark over its
//! partitions (wall-clock now minus the lateness if it has none).
//!
//! Recovery (on unless `--no-recovery`; see `checkpoint.rs` for the
//! design): every `--checkpoint-interval-ms` the workers agree on a closed
//! time `S` whose triggers are all delivered and write a checkpoint to
//! `--state-dir`: per input partition the offset to re-read from (covering
//! the lookback before `S`), and the facts kept for good that lie before
//! it. A restart feeds those facts, re-reads from those offsets (`--start`
//! applies only when there is no checkpoint), emits nothing firing at or
//! before `S`, and does not write again the triggers it finds already on
//! the trigger topic after the previous checkpoint. Trigger ids are
//! deterministic, so whatever is derived again carries the same id and bytes.
//!
//! Cluster mode (`--processes N`, docs/cluster.md): timely's multi-process
//! mode; records that cross a process boundary are serialised with bincode
//! (`dataflows/tests/bincode_roundtrip.rs`). Each worker has its own
//! producer, each process its own metrics endpoint; a stop (signal) of any
//! process stops every process (`JobStop`); a process that dies takes the
//! others down (timely's communication threads panic). No recovery yet.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dataflows::model::{Time, Trigger};
use dataflows::operators::Clock;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;

use crate::checkpoint::{self, Board, Checkpoint, Pinned, Share, Tracker};
use crate::codec::{self, TopicNames};
use crate::config::Config;
use crate::kafka::{self, Output, Progress, StartAt};
use crate::runtime::Job;
use crate::telemetry::{
    self, BadRecordSeen, DeadLettered, FrontierAdvanced, LateEvent, LateSummary, RecordsRead,
    Recovered, TriggerCut, TriggerEmitted, TriggerReplayed,
};

/// `tripwire run` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] (the courier's
    /// default too).
    #[arg(long, env = "TRIPWIRE_BROKERS", default_value = "127.0.0.1:9092")]
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
    /// Directory of the recovery checkpoint (a persistent volume in
    /// production; one directory per job). Created when missing.
    #[arg(long, default_value = "tripwire-state")]
    pub state_dir: PathBuf,
    /// Run without recovery: every start reads from `--start` and no
    /// checkpoint is read or written.
    #[arg(long)]
    pub no_recovery: bool,
    /// How often a checkpoint is taken, in ms: after a crash, at most about
    /// this much output is derived again (and not written twice when it is
    /// found on the trigger topic).
    #[arg(long, default_value_t = 5000)]
    pub checkpoint_interval_ms: u64,
    /// Start even when an input partition no longer holds records the
    /// checkpoint re-reads (deleted by the topic's retention): re-read from
    /// its first record instead; the state those records carried is lost.
    #[arg(long)]
    pub accept_lost_history: bool,
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
    let lookback_ms = dataflows::campaign::lookback_ms(&config.campaigns, &config.retention);
    let saved = if args.no_recovery {
        None
    } else {
        anyhow::ensure!(
            args.processes <= 1,
            "recovery is not available in cluster mode (--processes > 1) yet: pass --no-recovery"
        );
        anyhow::ensure!(
            args.checkpoint_interval_ms > 0,
            "--checkpoint-interval-ms must be at least 1"
        );
        Some(Checkpoint::load(&args.state_dir)?)
    };
    let (starts, resume, output_at) = {
        let probe = kafka::consumer(&args.brokers, &group_id)?;
        let parts = kafka::partitions(&probe, &names)?;
        anyhow::ensure!(
            !parts.is_empty(),
            "none of the input topics ({}) exists on {}",
            names.join(", "),
            args.brokers
        );
        check_output_topics(&probe, &args, &config)?;
        warn_few_partitions(&parts, &names, workers * args.processes.max(1));
        match &saved {
            Some(Some(cp)) => {
                let starts = resume_starts(&probe, &parts, cp, &args)?;
                let resume = resume_from(cp, &args, &config, &group_id, lookback_ms)?;
                let output = cp.output.iter().map(|o| (o.partition, o.offset)).collect();
                (starts, Some(resume), output)
            }
            _ => {
                let output = if saved.is_some() {
                    trigger_topic_ends(&probe, &config.topics.triggers)?
                } else {
                    HashMap::new()
                };
                (kafka::resolve_starts(&probe, &parts, start)?, None, output)
            }
        }
    };
    let recovery = match saved {
        None => None,
        Some(_) => Some(Recovery {
            board: Board::new(
                args.state_dir.clone(),
                workers,
                config.topics.triggers.clone(),
                lookback_ms,
                resume.as_ref().map_or(0, |r| r.frontier_ms),
                output_at,
            )
            .context("starting the checkpoint writer")?,
            interval: Duration::from_millis(args.checkpoint_interval_ms),
            lookback_ms,
            resume,
            started: Instant::now(),
            reread: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }),
    };
    tracing::info!(
        brokers = %args.brokers,
        group_id = %group_id,
        partitions = starts.len(),
        workers,
        processes = args.processes,
        process = args.process,
        start = %args.start,
        recovery = if recovery.is_some() { args.state_dir.display().to_string() } else { "off".into() },
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
        recovery,
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

/// Whether the state is rebuilt up to the checkpoint the job started from
/// (`through`: the time every trigger has been emitted through); worker 0
/// logs progress every 5 s and the end.
fn recovery_progress(r: &Recovery, index: usize, through: Time, next_report: &mut Instant) -> bool {
    let Some(resume) = &r.resume else { return true };
    if through >= resume.frontier_ms {
        if index == 0 {
            Recovered {
                frontier_ms: resume.frontier_ms,
                records: r.reread.load(Ordering::Relaxed),
                suppressed: r.suppressed.load(Ordering::Relaxed),
                elapsed: r.started.elapsed(),
            }
            .emit();
        }
        return true;
    }
    if index == 0 && Instant::now() >= *next_report {
        *next_report = Instant::now() + Duration::from_secs(5);
        tracing::info!(
            frontier = through,
            checkpoint_frontier = resume.frontier_ms,
            records = r.reread.load(Ordering::Relaxed),
            elapsed_ms = r.started.elapsed().as_millis() as u64,
            "recovering: rebuilding the state up to the checkpoint"
        );
    }
    false
}

/// One worker's part of a checkpoint: deliver what the sink emitted, report
/// it, and, once every worker has delivered through a common time, share
/// the restart offsets for it.
fn take_checkpoint(
    r: &Recovery,
    index: usize,
    job: &Job,
    tracker: &mut Tracker,
    output: &Output,
    triggers_topic: &str,
) {
    tracker.sample();
    let through = job.completed_through();
    if let Err(e) = output.flush(Duration::from_secs(2)) {
        tracing::warn!(worker = index, error = %format!("{e:#}"), "checkpoint skipped: the producer has not delivered");
        return;
    }
    if let Some(all) = r
        .board
        .delivered(index, through, &output.delivered(triggers_topic))
    {
        let (inputs, pinned) = tracker.advance(all);
        r.board.share(
            index,
            Share {
                frontier_ms: all,
                inputs,
                pinned,
            },
        );
    }
}

/// Warns about input topics with fewer partitions than there are workers
/// in all (every process's): partition `p` is read by worker `p % peers`,
/// so the workers from the partition count up read nothing of that topic.
fn warn_few_partitions(parts: &[(String, i32)], topics: &[String], peers: usize) {
    for topic in topics {
        let n = parts.iter().filter(|(t, _)| t == topic).count();
        if n > 0 && n < peers {
            tracing::warn!(
                topic = %topic,
                partitions = n,
                workers = peers,
                "fewer partitions than workers in all: some workers read nothing of this topic"
            );
        }
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
    recovery: Option<Recovery>,
}

/// Recovery: the checkpoint board, and what the checkpoint started from says.
struct Recovery {
    board: Board,
    interval: Duration,
    lookback_ms: Time,
    resume: Option<Resume>,
    started: Instant,
    /// Records read while rebuilding the state (every worker).
    reread: AtomicU64,
    /// Triggers at or before the checkpoint's frontier not emitted again.
    suppressed: AtomicU64,
}

/// What a restart takes from its checkpoint.
struct Resume {
    /// `S`: triggers firing at or before it were delivered before.
    frontier_ms: Time,
    /// Trigger ids found on the trigger topic after the previous checkpoint.
    written: HashSet<String>,
    /// Per input partition: the offset the job had read to.
    positions: HashMap<(String, i32), i64>,
    pinned: Vec<Pinned>,
}

/// Start offsets from a checkpoint: each partition's restart offset; a
/// partition the checkpoint does not know (new) from its first record. A
/// restart offset the partition no longer holds stops the job, unless
/// `--accept-lost-history`.
fn resume_starts<C: rdkafka::consumer::ConsumerContext>(
    probe: &rdkafka::consumer::BaseConsumer<C>,
    parts: &[(String, i32)],
    cp: &Checkpoint,
    args: &RunArgs,
) -> anyhow::Result<Vec<kafka::PartitionStart>> {
    let mut starts = Vec::with_capacity(parts.len());
    for (topic, partition) in parts {
        let (low, high) = probe
            .fetch_watermarks(topic, *partition, kafka::LOOKUP_TIMEOUT)
            .with_context(|| format!("reading the watermarks of {topic}/{partition}"))?;
        let saved = cp
            .inputs
            .iter()
            .find(|i| &i.topic == topic && i.partition == *partition);
        let offset = match saved {
            None => {
                tracing::info!(
                    topic,
                    partition,
                    "a partition the checkpoint does not know: reading it from its first record"
                );
                low
            }
            Some(i) if i.restart < low => {
                let message = format!(
                    "{topic}/{partition}: the checkpoint re-reads from offset {} but the partition \
                     now begins at {low} (deleted by the topic's retention, which must keep at \
                     least the lookback, {} days, plus the time the job may be down)",
                    i.restart,
                    cp.lookback_ms / dataflows::campaign::DAY_MS
                );
                anyhow::ensure!(
                    args.accept_lost_history,
                    "{message}; pass --accept-lost-history to start anyway with the state those \
                     records carried lost"
                );
                tracing::warn!("{message}; starting from {low} (--accept-lost-history)");
                low
            }
            Some(i) => {
                // The trigger-topic end may be reported low by some brokers;
                // an offset past the end means the topic was recreated.
                if i.restart > high && high > 0 {
                    tracing::warn!(
                        topic,
                        partition,
                        restart = i.restart,
                        high,
                        "the checkpoint's offset lies past the partition's end (recreated topic?)"
                    );
                }
                i.restart
            }
        };
        starts.push(kafka::PartitionStart {
            topic: topic.clone(),
            partition: *partition,
            offset,
        });
    }
    Ok(starts)
}

/// Reads what a restart needs besides offsets: the trigger ids written
/// after the previous checkpoint, the read positions and the pinned facts.
fn resume_from(
    cp: &Checkpoint,
    args: &RunArgs,
    config: &Config,
    group_id: &str,
    lookback_ms: Time,
) -> anyhow::Result<Resume> {
    if lookback_ms > cp.lookback_ms {
        tracing::warn!(
            checkpoint_lookback_ms = cp.lookback_ms,
            lookback_ms,
            "the configuration looks further back than the checkpoint covered: facts older \
             than the checkpoint's lookback are missing until the next checkpoints"
        );
    }
    let written = if cp.triggers_topic == config.topics.triggers {
        checkpoint::read_trigger_ids(
            &args.brokers,
            group_id,
            &cp.triggers_topic,
            &cp.output,
            Duration::from_secs(3),
        )?
    } else {
        tracing::warn!(
            checkpoint_topic = %cp.triggers_topic,
            topic = %config.topics.triggers,
            "the trigger topic changed since the checkpoint: triggers after it are written again"
        );
        HashSet::new()
    };
    let reread: i64 = cp.inputs.iter().map(|i| i.position - i.restart).sum();
    tracing::info!(
        state_dir = %args.state_dir.display(),
        frontier = cp.frontier_ms,
        written_at = cp.written_at_ms,
        records_to_reread = reread,
        pinned = cp.pinned.len(),
        triggers_found = written.len(),
        "recovering from the checkpoint (--start ignored)"
    );
    Ok(Resume {
        frontier_ms: cp.frontier_ms,
        written,
        positions: cp
            .inputs
            .iter()
            .map(|i| ((i.topic.clone(), i.partition), i.position))
            .collect(),
        pinned: cp.pinned.clone(),
    })
}

/// The current end of every partition of the trigger topic (where the
/// triggers of this run begin).
fn trigger_topic_ends<C: rdkafka::consumer::ConsumerContext>(
    probe: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut ends = HashMap::new();
    for (_, p) in kafka::partitions(probe, &[topic.to_string()])? {
        let (_, high) = probe
            .fetch_watermarks(topic, p, kafka::LOOKUP_TIMEOUT)
            .with_context(|| format!("reading the watermarks of {topic}/{p}"))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// The stop of the whole job. A process asked to stop (SIGINT/SIGTERM, or
/// Kafka clients that did not start) sets its `stop` flag; each of its
/// workers then broadcasts a stop request to every worker of every process,
/// and a worker leaves its loop once a request has reached it. In one
/// process the flag alone would do; in a cluster a process that stopped by
/// itself would leave the others running with a frontier that can no
/// longer advance (its workers' share of the progress gone), and would wait
/// for them at exit.
struct JobStop {
    input: timely::dataflow::InputHandleVec<Time, ()>,
    seen: Rc<Cell<bool>>,
    requested: bool,
}

impl JobStop {
    fn build(worker: &mut timely::worker::Worker) -> JobStop {
        use timely::dataflow::operators::vec::{Broadcast, Input};
        use timely::dataflow::operators::Inspect;
        let seen = Rc::new(Cell::new(false));
        let flag = seen.clone();
        let input = worker.dataflow::<Time, _, _>(move |scope| {
            let (input, requests) = scope.new_input::<()>();
            requests.broadcast().inspect(move |_| flag.set(true));
            input
        });
        JobStop {
            input,
            seen,
            requested: false,
        }
    }

    /// Whether to leave the loop: requests the job's stop once `local` (this
    /// process's flag) is set, and says whether any worker's request has
    /// arrived (then sets `local` too: the producer stops waiting on a full
    /// queue).
    fn now(&mut self, local: &AtomicBool) -> bool {
        if !self.requested && local.load(Ordering::Relaxed) {
            self.requested = true;
            self.input.send(());
            self.input.flush();
        }
        if self.seen.get() {
            local.store(true, Ordering::SeqCst);
        }
        self.seen.get()
    }
}

/// Trigger counts shared between the sink (inside the dataflow) and the loop.
#[derive(Default)]
struct SinkState {
    triggers: u64,
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    shared: &Arc<Shared>,
) -> anyhow::Result<WorkerSummary> {
    let index = worker.index();
    let peers = worker.peers();
    let mine = kafka::share(&shared.starts, index, peers);
    let recovery = shared.recovery.as_ref();
    let resume = recovery.and_then(|r| r.resume.as_ref());
    let mut tracker = recovery.map(|r| {
        let parts: Vec<_> = mine
            .iter()
            .filter_map(|s| {
                let role = shared.topics.role(&s.topic)?;
                Some((s.topic.clone(), role, s.partition, s.offset))
            })
            .collect();
        Tracker::new(&parts, r.lookback_ms)
    });
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
        let in_sink = shared.clone();
        Job::build(
            worker,
            &shared.campaigns,
            &shared.retention,
            shared.clock,
            move |t: Trigger| {
                if let Some(r) = &in_sink.recovery {
                    if let Some(resume) = &r.resume {
                        // Delivered before the restart: not again.
                        if t.ts <= resume.frontier_ms {
                            r.suppressed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        if resume.written.contains(t.trigger_id.as_str()) {
                            TriggerReplayed {
                                campaign: &t.campaign,
                            }
                            .emit();
                            return;
                        }
                    }
                }
                if let Some(out) = &output {
                    let (payload, dropped) = codec::encode_trigger_cut(&t);
                    if dropped > 0 {
                        TriggerCut {
                            trigger_id: &t.trigger_id,
                            campaign: &t.campaign,
                            dropped,
                        }
                        .emit();
                    }
                    out.borrow_mut()
                        .send(&topic, Some(t.user_id.as_bytes()), &payload);
                    TriggerEmitted {
                        campaign: &t.campaign,
                        kind: &t.kind,
                        delay_ms: Some(kafka::now_ms().saturating_sub(t.ts)),
                    }
                    .emit();
                    state.borrow_mut().triggers += 1;
                }
            },
        )
    };
    // Built after the job, on every worker in the same order (building is collective).
    let mut stop = JobStop::build(worker);
    tracing::debug!(worker = index, partitions = mine.len(), "worker started");

    // The facts the checkpoint kept for good, for this worker's partitions.
    if let (Some(tracker), Some(resume)) = (tracker.as_mut(), resume) {
        for pin in &resume.pinned {
            if !mine
                .iter()
                .any(|s| s.topic == pin.topic && s.partition == pin.partition)
            {
                continue;
            }
            let Some(role) = shared.topics.role(&pin.topic) else {
                continue;
            };
            match codec::decode_within(role, pin.payload.as_bytes(), &shared.limits) {
                Ok(input) => {
                    tracker.restore_pin(
                        &pin.topic,
                        pin.partition,
                        pin.offset,
                        &input,
                        &pin.payload,
                    );
                    job.send(input);
                }
                Err(bad) => tracing::warn!(
                    topic = %pin.topic,
                    partition = pin.partition,
                    offset = pin.offset,
                    reason = bad.reason.label(),
                    "a pinned record of the checkpoint no longer decodes (limits changed?): skipped"
                ),
            }
        }
    }
    let mut recovered = resume.is_none();
    let mut next_report = Instant::now() + Duration::from_secs(5);
    let mut next_checkpoint = Instant::now() + recovery.map_or(Duration::ZERO, |r| r.interval);

    let mut progress = Progress::new(&mine);
    let mut next_refresh = Instant::now() + shared.watermark_poll;
    let mut frontier = 0u64;
    let mut late = LateSummary::default();
    let mut error = None;
    if let (Some(consumer), Some(output)) = (&consumer, &output) {
        while !stop.now(&shared.stop) {
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
                        if let Some(tracker) = tracker.as_mut() {
                            tracker.read(
                                topic,
                                msg.partition(),
                                msg.offset(),
                                Some((&input, ts.max(frontier))),
                                msg.payload().unwrap_or_default(),
                            );
                        }
                        if job.send(input) {
                            summary.late_events += 1;
                            late.add(LateEvent {
                                topic,
                                ts,
                                frontier,
                            });
                        }
                    }
                    Err(bad) => {
                        progress.read(topic, msg.partition(), msg.offset(), None);
                        if let Some(tracker) = tracker.as_mut() {
                            tracker.read(topic, msg.partition(), msg.offset(), None, &[]);
                        }
                        // Dead-lettered before the restart: not again.
                        let again = resume.is_some_and(|r| {
                            r.positions
                                .get(&(topic.to_string(), msg.partition()))
                                .is_some_and(|&p| msg.offset() < p)
                        });
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
                        if !again {
                            output.borrow_mut().send(
                                &shared.dead_letter_topic,
                                msg.key(),
                                &payload,
                            );
                            summary.dead_letters += 1;
                            DeadLettered { topic }.emit();
                        }
                    }
                }
            }
            let tick = Instant::now();
            late.maybe_log(tick);
            if tick >= next_refresh {
                progress.refresh_highs(consumer);
                next_refresh = tick + shared.watermark_poll;
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
            if let Some(r) = recovery {
                if !recovered {
                    r.reread.fetch_add(n as u64, Ordering::Relaxed);
                    recovered =
                        recovery_progress(r, index, job.completed_through(), &mut next_report);
                }
                if Instant::now() >= next_checkpoint {
                    next_checkpoint = Instant::now() + r.interval;
                    if let Some(tracker) = tracker.as_mut() {
                        take_checkpoint(
                            r,
                            index,
                            &job,
                            tracker,
                            &output.borrow(),
                            &shared.triggers_topic,
                        );
                    }
                }
            }
        }
    } else {
        error = Some(anyhow::anyhow!(
            "worker {index}: the Kafka clients did not start (see the log)"
        ));
        // The stop is the whole job's: every worker of every process learns it.
        while !stop.now(&shared.stop) {
            worker.step_or_park(Some(IDLE_PARK));
        }
    }

    // Stop: every worker leaves its loop before any drops the dataflow, and
    // the dataflow is dropped rather than drained, so that timers not yet due
    // do not fire on the way out. (Other processes' workers leave theirs
    // as the stop reaches them; none steps after dropping, so none releases
    // its share of the progress to let timers fire elsewhere.)
    shared.barrier.wait();
    drop(job);
    drop(stop);
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
