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

/// Runs the job over `sources` on `workers` threads, closing event time at
/// `until` or else at the largest `ts` read.
pub fn replay(
    sources: Sources,
    config: &Config,
    workers: usize,
    until: Option<Time>,
) -> Result<ReplaySummary, ReplayError> {
    let sources = Arc::new(sources);
    let campaigns = config.campaigns.clone();
    let retention = config.retention.clone();
    let topics = config.topics.inputs();
    let clock = Clock::new(config.time.bucket_ms);
    let workers = workers.max(1);
    let max_ts = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(workers));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let closed = Arc::new(AtomicU64::new(0));

    let result = {
        let counts = counts.clone();
        let closed = closed.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let t0 = std::time::Instant::now();
            let (local, read, bad) = decode_share(&sources, &topics, index, peers);
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
            let close = until.unwrap_or_else(|| max_ts.load(Ordering::SeqCst));
            closed.store(close, Ordering::SeqCst);

            let fired = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = fired.clone();
            let mut job = Job::build(worker, &campaigns, &retention, clock, move |t: Trigger| {
                if t.ts <= close {
                    sink.borrow_mut().push(t);
                }
            });
            // Feed in time order, a chunk at a time, so that only a few
            // distinct times are in flight at once (progress tracking cost
            // grows with them).
            let mut local: Vec<Input> = local.into_iter().filter(|i| i.time() <= close).collect();
            local.sort_unstable_by_key(|i| i.time());
            let mut since_step = 0usize;
            let mut chunks = 0u64;
            for (sent, input) in local.into_iter().enumerate() {
                let at = input.time();
                if since_step >= CHUNK && job.frontier().is_some_and(|f| clock.at(at) > clock.at(f))
                {
                    job.advance_to(at);
                    let through = at.saturating_sub(clock.bucket_ms);
                    while !job.done_through(through) {
                        worker.step();
                    }
                    since_step = 0;
                    chunks += 1;
                    if index == 0 && chunks.is_multiple_of(10) {
                        tracing::info!(
                            worker = index,
                            sent,
                            event_time_ms = at,
                            rss_mb = crate::telemetry::resident_mb().unwrap_or(0),
                            "replay progress"
                        );
                    }
                }
                job.send(input);
                since_step += 1;
            }
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
            let out = std::mem::take(&mut *fired.borrow_mut());
            // Event time is closed: drop the dataflow rather than let timely
            // run the timers and retractions that lie beyond the close.
            drop(job);
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            out
        })
        .map_err(ReplayError::Timely)?
        .join()
    };
    let mut triggers = Vec::new();
    for r in result {
        triggers.extend(r.map_err(ReplayError::Timely)?);
    }
    triggers.sort_by(|a, b| {
        (a.ts, &a.user_id, &a.campaign, &a.trigger_id).cmp(&(
            b.ts,
            &b.user_id,
            &b.campaign,
            &b.trigger_id,
        ))
    });
    for t in &triggers {
        TriggerEmitted {
            campaign: &t.campaign,
            kind: &t.kind,
        }
        .emit();
    }
    let (records, bad_records) = *counts.lock().expect("counts lock");
    Ok(ReplaySummary {
        records,
        bad_records,
        closed_at: closed.load(Ordering::SeqCst),
        triggers,
    })
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

/// Writes trigger records as JSON lines to `path` (`-` for stdout).
pub fn write_triggers(path: &Path, triggers: &[Trigger]) -> Result<(), ReplayError> {
    let err = |source| ReplayError::Output {
        path: path.display().to_string(),
        source,
    };
    let mut out: Box<dyn Write> = if path.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(err)?,
        ))
    };
    for t in triggers {
        out.write_all(&crate::codec::encode_trigger(t))
            .map_err(err)?;
        out.write_all(b"\n").map_err(err)?;
    }
    out.flush().map_err(err)
}
