//! Replay: the job over recording files, no broker. Deterministic: the
//! result depends neither on the order of lines nor on the worker count.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use dataflows::model::{Input, Time, Trigger};
use dataflows::operators::Clock;
use thiserror::Error;

use crate::codec::{decode_line, TopicNames};
use crate::config::Config;
use crate::runtime::Job;
use crate::telemetry::{BadRecordSeen, RecordsRead, TriggerEmitted};

/// A replay that could not run.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read input {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error("input {0} has no *.jsonl file")]
    EmptyDir(String),
    #[error("cannot write output {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("timely: {0}")]
    Timely(String),
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

/// Recording text to replay: `(name, contents)` per file.
pub type Sources = Vec<(String, String)>;

/// Reads the recording files.
pub fn read_sources(files: &[PathBuf]) -> Result<Sources, ReplayError> {
    files
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|text| (p.display().to_string(), text))
                .map_err(|source| ReplayError::Input {
                    path: p.display().to_string(),
                    source,
                })
        })
        .collect()
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
        sources,
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
/// as their time completes, so replay holds neither the input text after
/// decoding nor the output.
pub fn replay_into(
    sources: Sources,
    config: &Config,
    workers: usize,
    until: Option<Time>,
    sink: Sink,
) -> Result<ReplayStats, ReplayError> {
    let sources = Arc::new(Mutex::new(Some(Arc::new(sources))));
    let campaigns = config.campaigns.clone();
    let retention = config.retention.clone();
    let topics = config.topics.inputs();
    let clock = Clock::new(config.time.bucket_ms);
    let workers = workers.max(1);
    let max_ts = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(workers));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let closed = Arc::new(AtomicU64::new(0));
    let output = Arc::new(Output::new(sink));

    let result = {
        let counts = counts.clone();
        let closed = closed.clone();
        let output = output.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let t0 = std::time::Instant::now();
            let text = sources.lock().expect("sources lock").clone();
            let (local, read, bad) = match text {
                Some(text) => decode_share(&text, &topics, index, peers),
                None => (Vec::new(), 0, 0),
            };
            tracing::debug!(
                worker = index,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "decoded"
            );
            {
                let mut c = counts.lock().expect("counts lock");
                c.0 += read;
                c.1 += bad;
            }
            let local_max = local.iter().map(|i| i.time()).max().unwrap_or(0);
            max_ts.fetch_max(local_max, Ordering::SeqCst);
            barrier.wait();
            // Every worker has decoded its share: the text can go.
            sources.lock().expect("sources lock").take();
            let close = until.unwrap_or_else(|| max_ts.load(Ordering::SeqCst));
            closed.store(close, Ordering::SeqCst);

            let sink = output.clone();
            let mut job = Job::build(worker, &campaigns, &retention, clock, move |t: Trigger| {
                if t.ts <= close {
                    sink.pending.lock().expect("pending lock").push(t);
                }
            });
            // Feed in time order, a chunk at a time, so that only a few
            // distinct times are in flight at once (progress tracking cost
            // grows with them). The sorted input is split into blocks that
            // are freed as they are sent.
            let mut local: Vec<Input> = local.into_iter().filter(|i| i.time() <= close).collect();
            local.sort_unstable_by_key(|i| i.time());
            let mut blocks: Vec<Vec<Input>> = Vec::new();
            let mut rest = local.into_iter();
            loop {
                let block: Vec<Input> = rest.by_ref().take(10 * CHUNK).collect();
                if block.is_empty() {
                    break;
                }
                blocks.push(block);
            }
            feed(
                worker,
                &mut job,
                clock,
                blocks.into_iter().flatten(),
                index == 0,
                &output,
            );
            job.advance_to(clock.after(close));
            tracing::debug!(
                worker = index,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "sent"
            );
            let mut steps = 0u64;
            while !job.done_through(close) {
                worker.step();
                steps += 1;
            }
            tracing::debug!(
                worker = index,
                steps,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "stepped"
            );
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
    output.finish(&counts, closed.load(Ordering::SeqCst))
}

/// Sends `inputs` (in time order) to `job`, a chunk at a time: before the
/// first input of a later bucket once a chunk is full, the job is stepped
/// until the previous buckets are complete (so that only a few distinct
/// times are in flight), and the first worker (`lead`) hands the records
/// that became final to the output and logs progress with resident memory.
fn feed(
    worker: &mut timely::worker::Worker,
    job: &mut Job,
    clock: Clock,
    inputs: impl Iterator<Item = Input>,
    lead: bool,
    output: &Output,
) -> usize {
    let mut since_step = 0usize;
    let mut chunks = 0u64;
    let mut sent = 0usize;
    for input in inputs {
        let at = input.time();
        if since_step >= CHUNK && job.frontier().is_some_and(|f| clock.at(at) > clock.at(f)) {
            job.advance_to(at);
            let through = at.saturating_sub(clock.bucket_ms);
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
                    event_time_ms = at,
                    rss_mb = crate::telemetry::resident_mb().unwrap_or(0),
                    "replay progress"
                );
            }
        }
        job.send(input);
        since_step += 1;
        sent += 1;
    }
    sent
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
    I: Iterator<Item = String>,
{
    let campaigns = config.campaigns.clone();
    let retention = config.retention.clone();
    let topics = config.topics.inputs();
    let clock = Clock::new(config.time.bucket_ms);
    let workers = workers.max(1);
    let max_ts = Arc::new(AtomicU64::new(0));
    let close_at = Arc::new(AtomicU64::new(Time::MAX));
    let barrier = Arc::new(Barrier::new(workers));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let output = Arc::new(Output::new(sink));
    let result = {
        let counts = counts.clone();
        let max_ts = max_ts.clone();
        let output = output.clone();
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
            let (mut read, mut bad, mut local_max) = (0u64, 0u64, 0);
            let mine = lines()
                .enumerate()
                .filter(|(n, _)| n % peers == index)
                .filter_map(|(n, line)| {
                    read += 1;
                    match decode_line(&line, &topics) {
                        Ok((topic, input)) => {
                            RecordsRead {
                                topic: topics.name(topic),
                                count: 1,
                            }
                            .emit();
                            local_max = local_max.max(input.time());
                            Some(input)
                        }
                        Err(e) => {
                            bad += 1;
                            BadRecordSeen {
                                topic: "unknown",
                                reason: e.reason.label(),
                                location: &format!("line {}", n + 1),
                                detail: &e.detail,
                            }
                            .emit();
                            None
                        }
                    }
                });
            feed(worker, &mut job, clock, mine, index == 0, &output);
            max_ts.fetch_max(local_max, Ordering::SeqCst);
            {
                let mut c = counts.lock().expect("counts lock");
                c.0 += read;
                c.1 += bad;
            }
            barrier.wait();
            let close = max_ts.load(Ordering::SeqCst);
            close_at.store(close, Ordering::SeqCst);
            job.advance_to(clock.after(close));
            while !job.done_through(close) {
                worker.step();
            }
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
    let close = max_ts.load(Ordering::SeqCst);
    output
        .pending
        .lock()
        .expect("pending lock")
        .retain(|t| t.ts <= close);
    output.finish(&counts, close)
}

/// Decodes this worker's share of the lines (every `peers`-th line).
fn decode_share(
    sources: &Sources,
    topics: &TopicNames,
    index: usize,
    peers: usize,
) -> (Vec<Input>, u64, u64) {
    let mut local = Vec::new();
    let mut read = 0u64;
    let mut bad = 0u64;
    let mut n = 0usize;
    for (name, text) in sources.iter() {
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            n += 1;
            if (n - 1) % peers != index {
                continue;
            }
            read += 1;
            match decode_line(line, topics) {
                Ok((topic, input)) => {
                    RecordsRead {
                        topic: topics.name(topic),
                        count: 1,
                    }
                    .emit();
                    local.push(input);
                }
                Err(e) => {
                    bad += 1;
                    let topic = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("topic").and_then(|t| t.as_str()).map(str::to_string))
                        .unwrap_or_else(|| "unknown".into());
                    BadRecordSeen {
                        topic: &topic,
                        reason: e.reason.label(),
                        location: &format!("{name}:{}", line_no + 1),
                        detail: &e.detail,
                    }
                    .emit();
                }
            }
        }
    }
    (local, read, bad)
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
            out.write_all(&crate::codec::encode_trigger(t))?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }))
}
