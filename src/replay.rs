//! Replay: the job over recording files, no broker. Deterministic: the
//! result depends neither on the order of lines nor on the worker count.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dataflows::model::{Input, Time, Trigger};
use dataflows::operators::Clock;
use thiserror::Error;

use crate::codec::{decode_line_within, Limits, Topic, TopicNames};
use crate::config::Config;
use crate::recording::{self, RecordingError, Source};
use crate::runtime::Job;
use crate::telemetry::{BadRecordSeen, RecordsRead, TriggerEmitted};

/// A replay that could not run.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read input {path}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("input {0} has no *.jsonl file")]
    EmptyDir(String),
    #[error("cannot write output {path}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("timely: {0}")]
    Timely(String),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// Records sent between two waits for the dataflow to catch up.
const CHUNK: usize = 20_000;

/// What a replay read and fired.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Records read, good and bad.
    pub records: u64,
    /// Records that broke the contract.
    pub bad_records: u64,
    /// The time event time was closed at.
    pub closed_at: Time,
    /// Every trigger record, sorted by time, user, campaign and id.
    pub triggers: Vec<Trigger>,
}

/// The recording files named by `inputs`: files as given, directories as
/// every `*.jsonl` inside, in name order.
pub fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ReplayError> {
    let mut files = Vec::new();
    for path in inputs {
        let meta = std::fs::metadata(path).map_err(|source| ReplayError::Input {
            path: path.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| ReplayError::Input {
                    path: path.display().to_string(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            if found.is_empty() {
                return Err(ReplayError::EmptyDir(path.display().to_string()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Recording text to replay from memory: `(name, contents)` per source.
pub type Sources = Vec<(String, String)>;

/// In-memory recording text as replay sources.
pub fn text_sources(sources: Sources) -> Vec<Source> {
    sources
        .into_iter()
        .map(|(name, text)| Source::Text {
            name,
            text: Arc::new(text),
        })
        .collect()
}

/// The recording files as replay sources (streamed, never held whole).
pub fn file_sources(files: &[PathBuf]) -> Vec<Source> {
    files.iter().cloned().map(Source::File).collect()
}

/// Where a replay's trigger records go: called with batches in
/// (`ts`, `user_id`, `campaign`, `trigger_id`) order as they become final.
pub type Sink = Box<dyn FnMut(&[Trigger]) -> std::io::Result<()> + Send>;

/// What a streaming replay read and fired.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// Records read, good and bad.
    pub records: u64,
    /// Records that broke the contract.
    pub bad_records: u64,
    /// The time event time was closed at.
    pub closed_at: Time,
    /// Trigger records written.
    pub triggers: u64,
}

/// Runs the job over `sources` on `workers` threads, closing event time at
/// `until` or else at the largest `ts` read, and returns every trigger.
pub fn replay(
    sources: Sources,
    config: &Config,
    workers: usize,
    until: Option<Time>,
) -> Result<ReplaySummary, ReplayError> {
    let all = Arc::new(Mutex::new(Vec::new()));
    let into = all.clone();
    let stats = replay_into(
        text_sources(sources),
        config,
        workers,
        until,
        Box::new(move |batch: &[Trigger]| {
            into.lock().expect("output lock").extend_from_slice(batch);
            Ok(())
        }),
    )?;
    let triggers = std::mem::take(&mut *all.lock().expect("output lock"));
    Ok(ReplaySummary {
        records: stats.records,
        bad_records: stats.bad_records,
        closed_at: stats.closed_at,
        triggers,
    })
}

/// The records fired so far and the sink they go to once final.
struct Output {
    pending: Mutex<Vec<Trigger>>,
    sink: Mutex<(Sink, Option<std::io::Error>, u64)>,
}

impl Output {
    /// Nothing fired yet; records will go to `sink`.
    fn new(sink: Sink) -> Self {
        Output {
            pending: Mutex::new(Vec::new()),
            sink: Mutex::new((sink, None, 0)),
        }
    }

    /// Hands the pending records with `ts < limit` (all for `None`) to the
    /// sink, sorted. Records are final once their bucket is complete, and a
    /// record's `ts` is never before the bucket it is emitted at, so the
    /// concatenation of flushes is sorted.
    fn flush(&self, limit: Option<Time>) {
        let mut ready: Vec<Trigger> = {
            let mut pending = self.pending.lock().expect("pending lock");
            match limit {
                None => std::mem::take(&mut *pending),
                Some(l) => {
                    let (ready, keep) = pending.drain(..).partition(|t| t.ts < l);
                    *pending = keep;
                    ready
                }
            }
        };
        if ready.is_empty() {
            return;
        }
        ready.sort_by(|a, b| {
            (a.ts, &a.user_id, &a.campaign, &a.trigger_id).cmp(&(
                b.ts,
                &b.user_id,
                &b.campaign,
                &b.trigger_id,
            ))
        });
        for t in &ready {
            TriggerEmitted {
                campaign: &t.campaign,
                kind: &t.kind,
                delay_ms: None,
            }
            .emit();
        }
        let mut sink = self.sink.lock().expect("sink lock");
        let (write, error, count) = &mut *sink;
        *count += ready.len() as u64;
        if error.is_none() {
            if let Err(e) = write(&ready) {
                *error = Some(e);
            }
        }
    }
}

impl Output {
    /// Hands every remaining record to the sink and sums up the run: the
    /// sink's first error, if any, fails it.
    fn finish(
        &self,
        counts: &Mutex<(u64, u64)>,
        closed_at: Time,
    ) -> Result<ReplayStats, ReplayError> {
        self.flush(None);
        let (_, error, written) = &mut *self.sink.lock().expect("sink lock");
        if let Some(e) = error.take() {
            return Err(ReplayError::Output {
                path: "output".into(),
                source: e,
            });
        }
        let (records, bad_records) = *counts.lock().expect("counts lock");
        Ok(ReplayStats {
            records,
            bad_records,
            closed_at,
            triggers: *written,
        })
    }
}

/// Runs the job over `sources` on `workers` threads, closing event time at
/// `until` or else at the largest `ts` read. Trigger records go to `sink`
/// as their time completes. The input is streamed (see
/// [`crate::recording`]): replay holds neither the input nor the output,
/// only the records within the input's disorder bound.
pub fn replay_into(
    sources: Vec<Source>,
    config: &Config,
    workers: usize,
    until: Option<Time>,
    sink: Sink,
) -> Result<ReplayStats, ReplayError> {
    replay_with(sources, config, workers, until, Rounds::Configured, sink)
}

/// The width of replay's rounds of event time (timely time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounds {
    /// `time.bucket_ms`, as configured.
    Configured,
    /// Chosen from the input's density: about [`EVENTS_PER_ROUND`] events
    /// per round on average, at least `time.bucket_ms`, at most
    /// [`MAX_ROUND_MS`]. Results do not depend on the width (every
    /// condition is evaluated to the millisecond from the data); only the
    /// cost does: sparse recordings (months of history) replay in as few
    /// rounds as dense ones.
    Auto,
}

/// Events per round that [`Rounds::Auto`] aims at.
pub const EVENTS_PER_ROUND: u64 = 1000;
/// The widest round [`Rounds::Auto`] chooses (ms): one hour.
pub const MAX_ROUND_MS: Time = 3_600_000;

/// The round width for `plan`'s input under `rounds`.
fn round_ms(rounds: Rounds, configured: Time, plan: &recording::Plan) -> Time {
    match rounds {
        Rounds::Configured => configured,
        Rounds::Auto => {
            let gap = plan.span_ms / plan.lines.max(1);
            gap.saturating_mul(EVENTS_PER_ROUND)
                .clamp(configured, MAX_ROUND_MS.max(configured))
        }
    }
}

/// [`replay_into`] with a choice of round width.
pub fn replay_with(
    sources: Vec<Source>,
    config: &Config,
    workers: usize,
    until: Option<Time>,
    rounds: Rounds,
    sink: Sink,
) -> Result<ReplayStats, ReplayError> {
    let workers = workers.max(1);
    let t0 = std::time::Instant::now();
    let plan = Arc::new(recording::plan(&sources, workers)?);
    let bucket_ms = round_ms(rounds, config.time.bucket_ms, &plan);
    tracing::info!(
        lines = plan.lines,
        disorder_ms = plan.disorder_ms,
        round_ms = bucket_ms,
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "input scanned"
    );
    let sources = Arc::new(sources);
    let topics = config.topics.inputs();
    let limits = config.limits;
    let read_error: Arc<Mutex<Option<RecordingError>>> = Arc::new(Mutex::new(None));
    let errors = read_error.clone();
    let shape = Shape {
        bucket_ms,
        until,
        disorder_ms: plan.disorder_ms,
    };
    let stats = run_workers(config, workers, shape, sink, move |index, peers| {
        let lines = match plan.lines(&sources) {
            Ok(lines) => lines,
            Err(e) => {
                errors.lock().expect("error lock").get_or_insert(e);
                return Box::new(std::iter::empty()) as Box<dyn Iterator<Item = Decoded>>;
            }
        };
        let plan = plan.clone();
        let mut reads = ReadCounts::new(topics.clone(), limits);
        let errors = errors.clone();
        let mut lines = Some(lines);
        let mut n = 0u64;
        Box::new(std::iter::from_fn(move || loop {
            let l = lines.as_mut()?;
            let Some(line) = l.next() else {
                if let Some(e) = l.error() {
                    errors.lock().expect("error lock").get_or_insert(e);
                }
                lines = None;
                return None;
            };
            n += 1;
            if (n - 1) % peers as u64 != index as u64 {
                continue;
            }
            let location = || format!("{}:{}", plan.source_name(line.source), line.line_no);
            return Some(decode_bytes(&line.bytes, &mut reads, location));
        }))
    });
    if let Some(e) = read_error.lock().expect("error lock").take() {
        return Err(e.into());
    }
    stats
}

/// A decoded line: its record, or its bad-record report already emitted.
type Decoded = Option<Input>;

/// Decodes one recording line; a bad one is reported (with `location`)
/// and counted, and gives `None`.
fn decode_bytes(bytes: &[u8], reads: &mut ReadCounts, location: impl Fn() -> String) -> Decoded {
    let topics = &reads.topics;
    let result = std::str::from_utf8(bytes)
        .map_err(|e| crate::codec::BadRecord {
            reason: crate::codec::BadReason::InvalidJson,
            detail: format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1),
        })
        .and_then(|line| decode_line_within(line, topics, &reads.limits));
    match result {
        Ok((topic, input)) => {
            reads.add(topic);
            Some(input)
        }
        Err(e) => {
            let topic = serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("topic").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            BadRecordSeen {
                topic: &topic,
                reason: e.reason.label(),
                location: &location(),
                detail: &e.detail,
            }
            .emit();
            None
        }
    }
}

/// Records read per topic, emitted as [`RecordsRead`] once per topic and
/// batch of lines (one metric update per batch, not per record) and when
/// dropped.
struct ReadCounts {
    topics: TopicNames,
    limits: Limits,
    counts: [u64; Topic::ALL.len()],
    since_emit: u32,
}

impl ReadCounts {
    fn new(topics: TopicNames, limits: Limits) -> Self {
        ReadCounts {
            topics,
            limits,
            counts: [0; Topic::ALL.len()],
            since_emit: 0,
        }
    }

    fn add(&mut self, topic: Topic) {
        self.counts[topic as usize] += 1;
        self.since_emit += 1;
        if self.since_emit >= 4096 {
            self.emit();
        }
    }

    fn emit(&mut self) {
        for topic in Topic::ALL {
            let count = std::mem::take(&mut self.counts[topic as usize]);
            if count > 0 {
                RecordsRead {
                    topic: self.topics.name(topic),
                    count,
                }
                .emit();
            }
        }
        self.since_emit = 0;
    }
}

impl Drop for ReadCounts {
    fn drop(&mut self) {
        self.emit();
    }
}

/// How a replay runs: its round width, where it closes event time and its
/// input's disorder bound (ms).
struct Shape {
    bucket_ms: Time,
    until: Option<Time>,
    disorder_ms: Time,
}

/// The replay loop shared by files and generated lines: on each of
/// `workers` threads, `inputs(index, peers)` gives that worker's share of
/// the decoded lines in event-time order up to `disorder_ms`; they are fed
/// to the job, event time is closed at `until` or else at the largest time
/// read, and trigger records go to `sink` as their time completes.
fn run_workers<F>(
    config: &Config,
    workers: usize,
    shape: Shape,
    sink: Sink,
    inputs: F,
) -> Result<ReplayStats, ReplayError>
where
    F: Fn(usize, usize) -> Box<dyn Iterator<Item = Decoded>> + Send + Sync + 'static,
{
    let Shape {
        bucket_ms,
        until,
        disorder_ms,
    } = shape;
    let campaigns = config.campaigns.clone();
    let retention = config.retention.clone();
    let clock = Clock::new(bucket_ms);
    let workers = workers.max(1);
    // The largest time any worker has read, and how many have read all
    // their input: a worker that is done follows the others' progress
    // (blocking on a barrier instead would stall a worker waiting for it).
    let max_ts = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let close_at = Arc::new(AtomicU64::new(until.unwrap_or(Time::MAX)));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let output = Arc::new(Output::new(sink));
    let result = {
        let counts = counts.clone();
        let max_ts = max_ts.clone();
        let output = output.clone();
        let close_at = close_at.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let sink = output.clone();
            let close = close_at.clone();
            let mut job = Job::build(worker, &campaigns, &retention, clock, move |t: Trigger| {
                if t.ts <= close.load(Ordering::SeqCst) {
                    sink.pending.lock().expect("pending lock").push(t);
                }
            });
            let (mut read, mut bad) = (0u64, 0u64);
            let mine = inputs(index, peers).filter_map(|d| {
                read += 1;
                let Some(input) = d else {
                    bad += 1;
                    return None;
                };
                let t = input.time();
                if until.is_some_and(|u| t > u) {
                    return None;
                }
                Some(input)
            });
            let progress = Progress {
                newest: &max_ts,
                disorder_ms,
            };
            feed(
                worker,
                &mut job,
                clock,
                mine,
                &progress,
                index == 0,
                &output,
            );
            {
                let mut c = counts.lock().expect("counts lock");
                c.0 += read;
                c.1 += bad;
            }
            finished.fetch_add(1, Ordering::SeqCst);
            while finished.load(Ordering::SeqCst) < peers {
                job.advance_to(progress.safe());
                worker.step();
            }
            let close = until.unwrap_or_else(|| max_ts.load(Ordering::SeqCst));
            close_at.store(close, Ordering::SeqCst);
            job.advance_to(clock.after(close));
            while !job.done_through(close) {
                worker.step();
            }
            // Event time is closed: drop the dataflow rather than let timely
            // run the timers and retractions that lie beyond the close.
            drop(job);
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        })
        .map_err(ReplayError::Timely)?
        .join()
    };
    for r in result {
        r.map_err(ReplayError::Timely)?;
    }
    let close = until.unwrap_or_else(|| max_ts.load(Ordering::SeqCst));
    output
        .pending
        .lock()
        .expect("pending lock")
        .retain(|t| t.ts <= close);
    output.finish(&counts, close)
}

/// Sends `inputs` (in time order up to `disorder_ms`) to `job`, a chunk at
/// a time: once a chunk is full and the safe time (the largest time read
/// minus the disorder bound: no later input is earlier) has entered a later
/// bucket, the frontier moves there and the job is stepped until the
/// previous buckets are complete (so that only a few distinct times are in
/// flight), and the first worker (`lead`) hands the records that became
/// final to the output and logs progress with resident memory.
fn feed(
    worker: &mut timely::worker::Worker,
    job: &mut Job,
    clock: Clock,
    inputs: impl Iterator<Item = Input>,
    progress: &Progress,
    lead: bool,
    output: &Output,
) -> usize {
    let mut since_step = 0usize;
    let mut chunks = 0u64;
    let mut sent = 0usize;
    let mut newest = 0;
    for input in inputs {
        newest = newest.max(input.time());
        let late = job.send(input);
        debug_assert!(!late, "replay never sends behind its frontier");
        since_step += 1;
        sent += 1;
        if since_step < CHUNK {
            continue;
        }
        progress.newest.fetch_max(newest, Ordering::SeqCst);
        let safe = newest.saturating_sub(progress.disorder_ms);
        if job.frontier().is_some_and(|f| clock.at(safe) > clock.at(f)) {
            job.advance_to(safe);
            let through = clock.at(safe).saturating_sub(1);
            while !job.done_through(through) {
                worker.step();
            }
            if lead {
                output.flush(Some(clock.after(through)));
            }
            since_step = 0;
            chunks += 1;
            if lead && chunks.is_multiple_of(10) {
                tracing::info!(
                    sent,
                    event_time_ms = safe,
                    rss_mb = crate::telemetry::resident_mb().unwrap_or(0),
                    "replay progress"
                );
            }
        }
    }
    progress.newest.fetch_max(newest, Ordering::SeqCst);
    sent
}

/// How far the workers have read, shared between them.
struct Progress<'a> {
    /// The largest time any worker has read (published once per chunk).
    newest: &'a AtomicU64,
    /// No input lies further than this behind the largest time before it.
    disorder_ms: Time,
}

impl Progress<'_> {
    /// A time no worker will send an input before.
    fn safe(&self) -> Time {
        self.newest
            .load(Ordering::SeqCst)
            .saturating_sub(self.disorder_ms)
    }
}

/// Runs the job over recording lines produced in time order by `lines`
/// (called once per worker; each worker keeps every `peers`-th line), such
/// as a generator's, without holding them: event time closes at the largest
/// time read. Trigger records go to `sink` as their time completes.
pub fn replay_lines<F, I>(
    lines: F,
    config: &Config,
    workers: usize,
    sink: Sink,
) -> Result<ReplayStats, ReplayError>
where
    F: Fn() -> I + Send + Sync + 'static,
    I: Iterator<Item = String> + 'static,
{
    let topics = config.topics.inputs();
    let limits = config.limits;
    let shape = Shape {
        bucket_ms: config.time.bucket_ms,
        until: None,
        disorder_ms: 0,
    };
    run_workers(config, workers, shape, sink, move |index, peers| {
        let mut reads = ReadCounts::new(topics.clone(), limits);
        Box::new(
            lines()
                .enumerate()
                .filter(move |(n, _)| n % peers == index)
                .map(move |(n, line)| {
                    decode_bytes(line.as_bytes(), &mut reads, || format!("line {}", n + 1))
                }),
        )
    })
}

/// A sink writing trigger records as JSON lines to `path` (`-` for stdout).
pub fn file_sink(path: &Path) -> Result<Sink, ReplayError> {
    let mut out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| ReplayError::Output {
                path: path.display().to_string(),
                source,
            })?,
        ))
    };
    Ok(Box::new(move |batch: &[Trigger]| {
        for t in batch {
            let (bytes, dropped) = crate::codec::encode_trigger_cut(t);
            if dropped > 0 {
                crate::telemetry::TriggerCut {
                    trigger_id: &t.trigger_id,
                    campaign: &t.campaign,
                    dropped,
                }
                .emit();
            }
            out.write_all(&bytes)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }))
}
