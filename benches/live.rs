//! End-to-end LIVE throughput on a real broker: tansu (in-memory storage, on
//! 127.0.0.1 only), rdkafka clients and the `tripwire run` binary.
//!
//! `cargo bench --bench live -- [--input FILE] [--config FILE] [--workers N]
//!  [--events N] [--partitions N] [--while-running] [--recovery] [--timeout-s S]`
//!
//! - Input: a recording (wire.md: JSON lines `{"topic","key","value"}`).
//!   Without `--input`, `../shared/bench/gen.py` traffic of `--events` events
//!   (default 1M; users N/10, products N/100, seed 4, 20 ms mean gap, as
//!   `side-by-side.sh` makes it), cached as `$BENCH_CACHE/gen-N.jsonl`
//!   (default `/tmp/tripwire-bench`; `gen-1m.jsonl` is the same 1M file).
//! - Reference: `tripwire replay` of the same file, same configuration and
//!   workers, closed at the bench's start time (`--until`): its trigger count
//!   is what the live job must produce.
//! - Phase A, produce: every line to its topic (`--partitions`, default 4,
//!   partition by key as any producer would), key = the line's key, payload
//!   = the `value` JSON text as written; one rdkafka producer tuned for
//!   throughput, idempotence off (dataflow-notes: tansu). Timed from the
//!   first send to the last delivery report.
//! - Phase B, consume: one plain rdkafka consumer reads every topic from the
//!   beginning until it has every record.
//! - Phase C, tripwire live: `tripwire run --start earliest` against the
//!   filled topics; timed from spawning the process until the `triggers`
//!   topic holds the replay's count (and, separately, until its metrics show
//!   every input record read). Peak RSS is the process's `VmHWM`, read just
//!   before SIGTERM.
//! - Phase R (`--recovery`): instead of SIGTERM, once phase C is done (every
//!   input read, the expected triggers on the topic) and a checkpoint
//!   written after that is in `--state-dir` (src/checkpoint.rs, every
//!   `--checkpoint-interval-ms`, 5 s by default), the job gets SIGKILL and is
//!   started again with the same state directory (new metrics port, log
//!   `restart.log`). Reported: the records to re-read (its `recovering from
//!   the checkpoint ... records_to_reread=N` log line), the seconds from
//!   spawning it to its `recovered: state rebuilt up to the checkpoint` line
//!   (and that line's own `elapsed_ms`, `records`, `suppressed_triggers`),
//!   its peak RSS (`VmHWM`) read at that line and again before SIGTERM, and
//!   what it wrote: `tripwire_triggers_emitted_total` and
//!   `tripwire_replayed_triggers_total` from its metrics, scraped 10 s after
//!   `recovered` (two checkpoint intervals), and the records the trigger
//!   topic gained after the kill (and how many of them repeat an id already
//!   there). A recording re-reads only within the lookback before the
//!   checkpoint's time (longest retention + longest campaign duration), so
//!   give it recent timestamps, e.g. `tripwire generate --users 1000000
//!   --products 50000 --events 3000000 --rate-per-s 2000 --start-ms <now - 30
//!   min> --output FILE`.
//! - Phase D (`--while-running`): a fresh broker, the job started first and
//!   idle, then the whole file produced as fast as possible; timed from the
//!   first send until the job has read every record. Its trigger count is
//!   not the replay's: an empty partition is caught up, so the job's
//!   frontier is wall-clock now minus the lateness from the start (and
//!   whenever it keeps up with the producer), and a past recording arrives
//!   late (applied at the frontier, so timers move to now + delay). Read it
//!   as an ingest rate only.
//!
//! How live closes event time at the end of the input (src/live.rs,
//! src/kafka.rs `PartitionProgress::watermark`): there is no idle timeout. A
//! partition whose read position reached the high-water mark of its latest
//! fetch response (re-read every `time.watermark_poll_ms`, 1 s) is caught up
//! and holds nothing back beyond wall-clock now minus `time.lateness_ms`; so
//! at most about a second after the last record of every partition is read,
//! the frontier jumps from the recording's time to now - 5 s and every timer
//! of a past recording fires, including those due after its last `ts`
//! (abandoned carts an hour after the end). That is why the reference replay
//! runs with `--until` now and not to the recording's largest `ts`; the
//! table notes how many triggers are due after it.

#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::value::RawValue;
use support::{create_topics, metric_sum, scrape, Proc, Tansu};

const INPUT_TOPICS: [&str; 4] = ["tracking", "prices", "stock", "catalog"];
const TRIGGERS: &str = "triggers";
const DLQ: &str = "tripwire.dlq";

struct Args {
    input: Option<PathBuf>,
    config: PathBuf,
    workers: usize,
    /// Processes of phase C's job (cluster mode when above 1).
    processes: usize,
    events: u64,
    partitions: i32,
    while_running: bool,
    recovery: bool,
    timeout: Duration,
    tripwire: PathBuf,
}

const USAGE: &str = "\
usage: cargo bench --bench live -- [--input FILE] [--config FILE] [--workers N]
         [--processes N] [--events N] [--partitions N] [--while-running] [--recovery]
         [--timeout-s S]
         [--tripwire BIN]

  --input FILE      a recording (JSON lines); default: gen.py traffic of --events events
  --config FILE     the job's configuration (default ../shared/bench/cart-pd.toml)
  --workers N       timely workers of replay and run (default 2; per process)
  --processes N     phase C runs the job as a cluster of N processes (`--processes`,
                    a hostfile on 127.0.0.1, --no-recovery), N x --workers workers
  --events N        events of the generated input without --input (default 1000000)
  --partitions N    partitions per input topic (default 4)
  --while-running   phase D: produce into a fresh broker while the job runs
  --recovery        phase R: after phase C, SIGKILL the job, restart it on the same
                    --state-dir and report the records re-read, the time to its
                    `recovered` log line, its peak RSS and what it wrote again
                    (tripwire_triggers_emitted_total / tripwire_replayed_triggers_total);
                    needs a recording with recent timestamps (within the lookback)
  --timeout-s S     give up waiting for a live run after S seconds (default 1800)
  --tripwire BIN    the tripwire binary (default: the one cargo built)";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        input: None,
        config: manifest.join("../shared/bench/cart-pd.toml"),
        workers: 2,
        processes: 1,
        events: 1_000_000,
        partitions: 4,
        while_running: false,
        recovery: false,
        timeout: Duration::from_secs(1800),
        tripwire: PathBuf::from(env!("CARGO_BIN_EXE_tripwire")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            // cargo bench passes `--bench` to harness-less benches.
            "--bench" => {}
            "--input" => a.input = Some(value().into()),
            "--config" => a.config = value().into(),
            "--workers" => a.workers = value().parse().unwrap_or_else(|_| usage()),
            "--processes" => a.processes = value().parse().unwrap_or_else(|_| usage()),
            "--events" => a.events = value().parse().unwrap_or_else(|_| usage()),
            "--partitions" => a.partitions = value().parse().unwrap_or_else(|_| usage()),
            "--timeout-s" => {
                a.timeout = Duration::from_secs(value().parse().unwrap_or_else(|_| usage()))
            }
            "--tripwire" => a.tripwire = value().into(),
            "--while-running" => a.while_running = true,
            "--recovery" => a.recovery = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => usage(),
        }
    }
    if a.processes == 0 || (a.processes > 1 && (a.recovery || a.while_running)) {
        eprintln!("--processes above 1 takes neither --recovery nor --while-running");
        usage()
    }
    a
}

/// The recording to use: `--input`, else a cached or freshly generated gen.py file.
fn input_file(args: &Args) -> PathBuf {
    if let Some(p) = &args.input {
        return p.clone();
    }
    let cache = std::env::var_os("BENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/tripwire-bench"));
    std::fs::create_dir_all(&cache).expect("creating the bench cache directory");
    let n = args.events;
    let path = cache.join(format!("gen-{n}.jsonl"));
    if path.is_file() {
        return path;
    }
    if n == 1_000_000 && cache.join("gen-1m.jsonl").is_file() {
        return cache.join("gen-1m.jsonl");
    }
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen.py");
    eprintln!("generating {} with {}", path.display(), gen.display());
    let tmp = cache.join(format!("gen-{n}.jsonl.part"));
    let status = Command::new("python3")
        .arg(&gen)
        .arg(&tmp)
        .args([
            n.to_string(),
            (n / 10).max(10).to_string(),
            (n / 100).max(10).to_string(),
            "4".into(),
            "20".into(),
        ])
        .status()
        .expect("running python3 gen.py");
    assert!(status.success(), "gen.py failed: {status}");
    std::fs::rename(&tmp, &path).expect("renaming the generated file");
    path
}

/// One line of a recording, borrowed from the file's bytes.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// A record to produce: topic index, key, payload (the `value` JSON text).
struct Rec<'a> {
    topic: u16,
    key: Option<Cow<'a, str>>,
    payload: &'a str,
}

struct Loaded<'a> {
    topics: Vec<String>,
    recs: Vec<Rec<'a>>,
    /// Records on the job's input topics.
    inputs: u64,
    /// Key and payload bytes.
    bytes: u64,
    max_ts: u64,
}

fn load(text: &[u8]) -> Loaded<'_> {
    let mut topics: Vec<String> = Vec::new();
    let mut recs = Vec::new();
    let (mut inputs, mut bytes, mut max_ts) = (0, 0, 0);
    #[derive(Deserialize)]
    struct Ts {
        ts: Option<u64>,
    }
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let l: Line = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("line {}: not a recording line: {e}", i + 1));
        if let Ok(Ts { ts: Some(ts) }) = serde_json::from_str::<Ts>(l.value.get()) {
            max_ts = max_ts.max(ts);
        }
        let topic = match topics.iter().position(|t| *t == l.topic) {
            Some(t) => t,
            None => {
                topics.push(l.topic.to_string());
                topics.len() - 1
            }
        };
        if INPUT_TOPICS.contains(&&*l.topic) {
            inputs += 1;
        }
        bytes += (l.value.get().len() + l.key.as_ref().map_or(0, |k| k.len())) as u64;
        recs.push(Rec {
            topic: topic as u16,
            key: l.key,
            payload: l.value.get(),
        });
    }
    Loaded {
        topics,
        recs,
        inputs,
        bytes,
        max_ts,
    }
}

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Produces every record; returns the seconds from the first send to the
/// last delivery report.
fn produce_all(brokers: &str, data: &Loaded) -> f64 {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "tripwire-bench")
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .set("message.timeout.ms", "600000")
        .create_with_context(Deliveries::default())
        .expect("creating the producer");
    let t0 = Instant::now();
    for r in &data.recs {
        let mut rec = BaseRecord::to(&data.topics[r.topic as usize]).payload(r.payload);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_bytes());
        }
        support::send_retrying(&producer, rec, Duration::from_millis(5));
    }
    producer
        .flush(Duration::from_secs(600))
        .expect("flushing the producer");
    let secs = t0.elapsed().as_secs_f64();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} records not delivered, first error: {:?}",
        ctx.first_error.lock().unwrap()
    );
    assert_eq!(ctx.ok.load(Ordering::Relaxed), data.recs.len() as u64);
    secs
}

fn consumer(brokers: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", format!("tripwire-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("creating a consumer")
}

/// Assigns every partition of `topics` from the beginning.
fn assign_all(c: &BaseConsumer, topics: &[String]) {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = c
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .expect("metadata");
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(t, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    c.assign(&tpl).expect("assign");
}

/// Reads every topic of the input from the beginning until `n` records
/// arrived; returns (records, bytes, seconds).
fn consume_all(brokers: &str, topics: &[String], n: u64) -> (u64, u64, f64) {
    let c = consumer(
        brokers,
        &[
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "10485760"),
            ("queued.max.messages.kbytes", "262144"),
        ],
    );
    let t0 = Instant::now();
    assign_all(&c, topics);
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    while got < n {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                last = Instant::now();
            }
            Some(Err(e)) => panic!("consuming: {e}"),
            None => {
                if last.elapsed() > Duration::from_secs(30) {
                    eprintln!("consume: stalled at {got} of {n} records for 30 s, giving up");
                    break;
                }
            }
        }
    }
    (got, bytes, t0.elapsed().as_secs_f64())
}

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The pid of the tansu process listening on `brokers` (its command line
/// names the listener URL).
fn tansu_pid(brokers: &str) -> Option<u32> {
    let url = format!("tcp://{brokers}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("tansu") && cmd.split('\0').any(|a| a == url)).then_some(pid)
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A broker with the input's topics, `triggers` and the dead-letter topic.
fn broker(dir: &Path, topics: &[String], partitions: i32) -> Tansu {
    let t = Tansu::start(dir);
    let mut all: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), partitions)).collect();
    for t in INPUT_TOPICS {
        if !topics.iter().any(|x| x == t) {
            all.push((t, partitions));
        }
    }
    all.push((TRIGGERS, 1));
    all.push((DLQ, 1));
    create_topics(&t.brokers(), &all);
    t
}

/// The reference: `tripwire replay` closed at `until`; (trigger ids, lines,
/// lines due after the recording's largest ts, seconds).
fn replay(
    args: &Args,
    input: &Path,
    until: u64,
    max_ts: u64,
    dir: &Path,
) -> (HashSet<String>, u64, u64, f64) {
    let out = dir.join("replay.jsonl");
    let t0 = Instant::now();
    let res = Command::new(&args.tripwire)
        .arg("replay")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&out)
        .arg("--config")
        .arg(&args.config)
        .args(["--workers", &args.workers.to_string()])
        .args(["--until", &until.to_string()])
        .output()
        .expect("running tripwire replay");
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        res.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("reading the replay output");
    let (mut ids, mut lines, mut after) = (HashSet::new(), 0, 0);
    for l in text.lines() {
        let t: TriggerHead = serde_json::from_str(l).expect("a trigger record");
        lines += 1;
        if t.ts > max_ts {
            after += 1;
        }
        ids.insert(t.trigger_id);
    }
    let _ = std::fs::remove_file(&out);
    (ids, lines, after, secs)
}

#[derive(Deserialize)]
struct TriggerHead {
    trigger_id: String,
    ts: u64,
}

/// Reads the `triggers` topic as it fills.
struct TriggerReader {
    consumer: BaseConsumer,
    ids: HashSet<String>,
    records: u64,
    last_at: Option<Instant>,
}

impl TriggerReader {
    fn new(brokers: &str) -> Self {
        let consumer = consumer(brokers, &[]);
        assign_all(&consumer, &[TRIGGERS.to_string()]);
        TriggerReader {
            consumer,
            ids: HashSet::new(),
            records: 0,
            last_at: None,
        }
    }

    /// Reads what is there, waiting at most `wait` for the first record.
    fn poll(&mut self, wait: Duration) {
        let mut timeout = wait;
        while let Some(m) = self.consumer.poll(timeout) {
            let m = m.expect("reading triggers");
            let t: TriggerHead =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("a trigger record");
            self.ids.insert(t.trigger_id);
            self.records += 1;
            self.last_at = Some(Instant::now());
            timeout = Duration::ZERO;
        }
    }
}

/// `tripwire run --start earliest` on `brokers` with the bench's
/// configuration, workers and consumer group `name`, its metrics on `port`.
fn job_command(args: &Args, brokers: &str, name: &str, port: u16) -> Command {
    let mut cmd = Command::new(&args.tripwire);
    cmd.args(["run", "--brokers", brokers, "--start", "earliest"])
        .args(["--workers", &args.workers.to_string()])
        .arg("--config")
        .arg(&args.config)
        .args(["--group-id", &format!("tripwire-bench-{name}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info");
    cmd
}

/// Starts `tripwire run --start earliest` with its metrics on a free port,
/// its log in `dir/{name}.log` and its state in `dir/{state}.state`.
fn start_job(args: &Args, brokers: &str, dir: &Path, name: &str, state: &str) -> (Proc, u16) {
    let port = support::free_port();
    let mut cmd = job_command(args, brokers, name, port);
    cmd.arg("--state-dir")
        .arg(dir.join(format!("{state}.state")));
    (Proc::spawn(cmd, dir.join(format!("{name}.log"))), port)
}

/// Starts the job as a cluster of `args.processes` processes on 127.0.0.1
/// (each with `args.workers` workers, its own metrics port and log
/// `dir/{name}-{i}.log`); process 0 first.
fn start_cluster(args: &Args, brokers: &str, dir: &Path, name: &str) -> Vec<(Proc, u16)> {
    let hostfile = dir.join(format!("{name}.hosts"));
    let hosts: Vec<String> = (0..args.processes)
        .map(|_| format!("127.0.0.1:{}", support::free_port()))
        .collect();
    std::fs::write(&hostfile, hosts.join("\n")).expect("writing the hostfile");
    (0..args.processes)
        .map(|i| {
            let port = support::free_port();
            let mut cmd = job_command(args, brokers, name, port);
            cmd.arg("--no-recovery")
                .args(["--processes", &args.processes.to_string()])
                .args(["--process", &i.to_string()])
                .arg("--hostfile")
                .arg(&hostfile);
            (Proc::spawn(cmd, dir.join(format!("{name}-{i}.log"))), port)
        })
        .collect()
}

/// What the job's metrics say, summed over its processes' endpoints:
/// (input records read, late events); `None` until every one answers.
fn job_metrics_of(ports: &[u16]) -> Option<(u64, u64)> {
    let mut sum = (0, 0);
    for &port in ports {
        let (read, late) = job_metrics(port)?;
        sum = (sum.0 + read, sum.1 + late);
    }
    Some(sum)
}

/// What the job's metrics say: (input records read, late events).
fn job_metrics(port: u16) -> Option<(u64, u64)> {
    let text = scrape(port)?;
    Some((
        metric_sum(&text, "tripwire_input_records_total") as u64,
        metric_sum(&text, "tripwire_late_events_total") as u64,
    ))
}

/// Stops the job with SIGTERM; panics if it does not exit cleanly.
fn stop_job(job: &mut Proc) {
    assert!(job.running(), "the job died:\n{}", job.log_tail(30));
    job.terminate();
    let status = job
        .wait(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no exit within 120 s of SIGTERM:\n{}", job.log_tail(30)));
    assert!(
        status.success(),
        "the job exited with {status}:\n{}",
        job.log_tail(30)
    );
}

/// What one live run observed.
struct LiveRun {
    /// Seconds from the start (spawn or first send) until every input record was read.
    input_read_s: Option<f64>,
    /// Seconds until the expected trigger count was reached.
    expected_s: Option<f64>,
    /// Seconds until the last trigger seen.
    last_trigger_s: Option<f64>,
    triggers: TriggerReader,
    late: u64,
    peak_rss_mib: f64,
}

/// What [`follow`] waits for.
struct Wait {
    inputs: u64,
    expected: u64,
    idle: Duration,
    timeout: Duration,
}

/// Follows a running job until it has read `inputs` records and either the
/// `triggers` topic holds `expected` records or none arrived for `idle`.
fn follow(job: &mut Proc, port: u16, triggers: TriggerReader, t0: Instant, w: Wait) -> LiveRun {
    follow_all(job, port, &mut [], triggers, t0, w)
}

/// [`follow`] for a job of several processes: `job` (process 0) and
/// `peers`; metrics are summed and peak RSS added over all of them.
fn follow_all(
    job: &mut Proc,
    port: u16,
    peers: &mut [(Proc, u16)],
    mut triggers: TriggerReader,
    t0: Instant,
    w: Wait,
) -> LiveRun {
    let ports: Vec<u16> = std::iter::once(port)
        .chain(peers.iter().map(|p| p.1))
        .collect();
    let Wait {
        inputs,
        expected,
        idle,
        timeout,
    } = w;
    let (mut input_read, mut expected_at) = (None::<Instant>, None::<Instant>);
    let mut late = 0;
    let mut next_scrape = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    loop {
        triggers.poll(Duration::from_millis(50));
        let now = Instant::now();
        if expected_at.is_none() && triggers.records >= expected {
            expected_at = Some(now);
        }
        if now >= next_scrape {
            next_scrape = now + Duration::from_millis(200);
            if let Some((read, l)) = job_metrics_of(&ports) {
                late = l;
                if input_read.is_none() && read >= inputs {
                    input_read = Some(now);
                }
                if now >= next_report {
                    next_report = now + Duration::from_secs(10);
                    eprintln!(
                        "  {:>6.1} s: input read {read}/{inputs}, triggers {}/{expected}",
                        t0.elapsed().as_secs_f64(),
                        triggers.records
                    );
                }
            }
        }
        assert!(job.running(), "the job died:\n{}", job.log_tail(30));
        for (p, _) in peers.iter_mut() {
            assert!(p.running(), "a process died:\n{}", p.log_tail(30));
        }
        if let Some(done) = input_read {
            let quiet = triggers.last_at.unwrap_or(done).max(done);
            // Expected count reached: a short wait shows any extra record.
            if expected_at.is_some_and(|e| now - e >= Duration::from_secs(3)) || now - quiet >= idle
            {
                break;
            }
        }
        if t0.elapsed() > timeout {
            eprintln!("timed out after {} s", timeout.as_secs());
            break;
        }
    }
    let peak_rss_mib = std::iter::once(job.child.id())
        .chain(peers.iter().map(|p| p.0.child.id()))
        .map(|pid| peak_rss_mib(pid).unwrap_or(f64::NAN))
        .sum();
    let secs = |i: Option<Instant>| i.map(|i| (i - t0).as_secs_f64());
    LiveRun {
        input_read_s: secs(input_read),
        expected_s: secs(expected_at),
        last_trigger_s: secs(triggers.last_at),
        triggers,
        late,
        peak_rss_mib,
    }
}

/// What the checkpoint file of a state directory says.
struct CheckpointInfo {
    written_at_ms: u64,
    frontier_ms: u64,
    lookback_ms: u64,
    /// Sum over input partitions of `position - restart`.
    reread: i64,
    pinned: usize,
    bytes: u64,
}

fn read_checkpoint(state: &Path) -> Option<CheckpointInfo> {
    let bytes = std::fs::read(state.join("checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let u = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let reread = v
        .get("inputs")?
        .as_array()?
        .iter()
        .map(|i| {
            let o = |k: &str| i.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
            o("position") - o("restart")
        })
        .sum();
    Some(CheckpointInfo {
        written_at_ms: u("written_at_ms")?,
        frontier_ms: u("frontier_ms")?,
        lookback_ms: u("lookback_ms")?,
        reread,
        pinned: v.get("pinned")?.as_array()?.len(),
        bytes: bytes.len() as u64,
    })
}

/// The integer value of field `name` in a tracing log line (`name=123`).
fn log_field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first line of `log` that contains `text`.
fn log_line(log: &str, text: &str) -> Option<String> {
    log.lines().find(|l| l.contains(text)).map(str::to_string)
}

/// What the restart after SIGKILL observed (phase R).
struct RecoveryRun {
    /// The checkpoint the restart read (as on disk after the kill).
    checkpoint: CheckpointInfo,
    /// ms between that checkpoint's writing and the kill.
    checkpoint_age_ms: u64,
    /// From the `recovering from the checkpoint` line.
    to_reread: Option<u64>,
    pinned_logged: Option<u64>,
    triggers_found: Option<u64>,
    /// Seconds from spawning the restarted job to seeing its `recovered` line.
    recovered_s: f64,
    /// From the `recovered` line.
    elapsed_ms: Option<u64>,
    records: Option<u64>,
    suppressed: Option<u64>,
    rss_at_recovered_mib: f64,
    rss_at_end_mib: f64,
    /// From the restarted job's metrics, 10 s after `recovered`.
    emitted: u64,
    replayed: u64,
    recovery_gauge_s: f64,
    /// Records the trigger topic gained after the kill, and how many of them
    /// carry an id already on it.
    topic_new: u64,
    topic_repeats: u64,
}

/// Phase R: waits for a checkpoint written after now, SIGKILLs `job`,
/// restarts it on the same state directory and follows its recovery.
fn recover_after_kill(
    args: &Args,
    brokers: &str,
    dir: &Path,
    mut job: Proc,
    triggers: &mut TriggerReader,
) -> RecoveryRun {
    let state = dir.join("live.state");
    let after = now_ms();
    let deadline = Instant::now() + Duration::from_secs(120);
    eprintln!("phase R: waiting for a checkpoint written after the input was read ...");
    loop {
        triggers.poll(Duration::from_millis(200));
        assert!(job.running(), "the job died:\n{}", job.log_tail(30));
        if read_checkpoint(&state).is_some_and(|c| c.written_at_ms >= after) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint written in {} within 120 s:\n{}",
            state.display(),
            job.log_tail(30)
        );
    }
    triggers.poll(Duration::from_millis(500));
    job.child.kill().expect("SIGKILL to the job");
    let status = job.child.wait().expect("waiting for the killed job");
    let killed_at = now_ms();
    let checkpoint = read_checkpoint(&state).expect("the checkpoint after the kill");
    eprintln!(
        "  killed ({status}); checkpoint frontier {} written {} ms before the kill, {} records \
         to re-read, {} pinned, {} bytes",
        checkpoint.frontier_ms,
        killed_at.saturating_sub(checkpoint.written_at_ms),
        checkpoint.reread,
        checkpoint.pinned,
        checkpoint.bytes
    );
    // Whatever the killed job had delivered.
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        triggers.poll(Duration::from_millis(100));
    }
    let (base_records, base_ids) = (triggers.records, triggers.ids.len() as u64);

    eprintln!("  restarting on {} ...", state.display());
    let t0 = Instant::now();
    let (mut job, port) = start_job(args, brokers, dir, "restart", "live");
    let (mut recovering, mut recovered) = (None::<String>, None::<(String, f64)>);
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while recovered.is_none() {
        triggers.poll(Duration::from_millis(50));
        let log = std::fs::read_to_string(&job.log).unwrap_or_default();
        if recovering.is_none() {
            recovering = log_line(&log, "recovering from the checkpoint");
            assert!(
                recovering.is_some() || !log.contains("starting the live job"),
                "the restarted job did not recover from the checkpoint:\n{}",
                job.log_tail(30)
            );
        }
        if let Some(l) = log_line(&log, "recovered: state rebuilt") {
            recovered = Some((l, t0.elapsed().as_secs_f64()));
            break;
        }
        assert!(
            job.running(),
            "the restarted job died:\n{}",
            job.log_tail(30)
        );
        assert!(
            t0.elapsed() < args.timeout,
            "no `recovered` line within {} s:\n{}",
            args.timeout.as_secs(),
            job.log_tail(30)
        );
        if Instant::now() >= next_report {
            next_report = Instant::now() + Duration::from_secs(10);
            let progress = log
                .lines()
                .rev()
                .find(|l| l.contains("recovering: rebuilding"))
                .and_then(|l| log_field(l, "records"));
            eprintln!(
                "  {:>6.1} s: recovering, {} records re-read so far",
                t0.elapsed().as_secs_f64(),
                progress.map_or("?".into(), |n| n.to_string())
            );
        }
    }
    let rss_at_recovered_mib = peak_rss_mib(job.child.id()).unwrap_or(f64::NAN);
    let (line, recovered_s) = recovered.expect("the recovered line");
    let recovering = recovering.unwrap_or_default();
    eprintln!("  recovered after {recovered_s:.1} s; watching the trigger topic for 10 s ...");
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        triggers.poll(Duration::from_millis(100));
        assert!(
            job.running(),
            "the restarted job died:\n{}",
            job.log_tail(30)
        );
    }
    let text = scrape(port)
        .unwrap_or_else(|| panic!("no metrics from the restarted job:\n{}", job.log_tail(30)));
    let rss_at_end_mib = peak_rss_mib(job.child.id()).unwrap_or(f64::NAN);
    stop_job(&mut job);
    triggers.poll(Duration::from_secs(1));
    let topic_new = triggers.records - base_records;
    let topic_repeats = topic_new - (triggers.ids.len() as u64 - base_ids);
    RecoveryRun {
        checkpoint_age_ms: killed_at.saturating_sub(checkpoint.written_at_ms),
        checkpoint,
        to_reread: log_field(&recovering, "records_to_reread"),
        pinned_logged: log_field(&recovering, "pinned"),
        triggers_found: log_field(&recovering, "triggers_found"),
        recovered_s,
        elapsed_ms: log_field(&line, "elapsed_ms"),
        records: log_field(&line, "records"),
        suppressed: log_field(&line, "suppressed_triggers"),
        rss_at_recovered_mib,
        rss_at_end_mib,
        emitted: metric_sum(&text, "tripwire_triggers_emitted_total") as u64,
        replayed: metric_sum(&text, "tripwire_replayed_triggers_total") as u64,
        recovery_gauge_s: metric_sum(&text, "tripwire_recovery_seconds"),
        topic_new,
        topic_repeats,
    }
}

struct Row {
    phase: String,
    records: u64,
    secs: f64,
    mb: Option<f64>,
    rss: Option<f64>,
    note: String,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<34} | {:>10} | {:>8} | {:>11} | {:>7} | {:>13} | note",
        "phase", "records", "seconds", "events/s", "MB/s", "peak RSS MiB"
    );
    println!(
        "|{:-<36}|{:->12}|{:->10}|{:->13}|{:->9}|{:->15}|------",
        "", "", "", "", "", ""
    );
    for r in rows {
        let rate = if r.secs > 0.0 {
            format!("{:.0}", r.records as f64 / r.secs)
        } else {
            "-".into()
        };
        let mb =
            r.mb.map_or("-".into(), |b| format!("{:.1}", b / 1e6 / r.secs));
        let rss = r.rss.map_or("-".into(), |m| format!("{m:.0}"));
        println!(
            "| {:<34} | {:>10} | {:>8.2} | {:>11} | {:>7} | {:>13} | {}",
            r.phase, r.records, r.secs, rate, mb, rss, r.note
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args = parse_args();
    let command: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let until = now_ms();
    let input = input_file(&args);
    let dir = tempfile::Builder::new()
        .prefix("tripwire-live-bench")
        .tempdir()
        .expect("a temporary directory");
    eprintln!(
        "input {}, config {}, {} workers, tripwire {}, logs in {}",
        input.display(),
        args.config.display(),
        args.workers,
        args.tripwire.display(),
        dir.path().display()
    );
    let mut rows = Vec::new();

    let t = Instant::now();
    let text = std::fs::read(&input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
    let data = load(&text);
    let n = data.recs.len() as u64;
    eprintln!(
        "loaded {n} records ({} on input topics, {:.0} MB of keys and payloads) in {:.1} s",
        data.inputs,
        data.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    eprintln!("reference: tripwire replay --until {until} ...");
    let (expected_ids, expected, after_end, replay_s) =
        replay(&args, &input, until, data.max_ts, dir.path());
    rows.push(Row {
        phase: "replay (reference, no broker)".into(),
        records: data.inputs,
        secs: replay_s,
        mb: None,
        rss: None,
        note: format!(
            "{expected} triggers ({after_end} due after the last input ts {})",
            data.max_ts
        ),
    });

    let tansu = broker(dir.path(), &data.topics, args.partitions);
    let brokers = tansu.brokers();
    let tansu_pid = tansu_pid(&brokers);
    eprintln!("tansu on {brokers} (pid {tansu_pid:?}); phase A: produce {n} records ...");
    let produce_s = produce_all(&brokers, &data);
    rows.push(Row {
        phase: format!("A produce ({} partitions/topic)", args.partitions),
        records: n,
        secs: produce_s,
        mb: Some(data.bytes as f64),
        rss: tansu_pid.and_then(peak_rss_mib),
        note: "RSS: tansu".into(),
    });

    eprintln!("phase B: consume {n} records ...");
    let (got, bytes, consume_s) = consume_all(&brokers, &data.topics, n);
    rows.push(Row {
        phase: "B consume (1 plain consumer)".into(),
        records: got,
        secs: consume_s,
        mb: Some(bytes as f64),
        rss: None,
        note: if got == n {
            String::new()
        } else {
            format!("INCOMPLETE: {got} of {n}")
        },
    });

    eprintln!("phase C: tripwire run over the filled topics ...");
    let triggers = TriggerReader::new(&brokers);
    let t0 = Instant::now();
    let (mut job, port, mut peers) = if args.processes > 1 {
        let mut all = start_cluster(&args, &brokers, dir.path(), "live");
        let (job, port) = all.remove(0);
        (job, port, all)
    } else {
        let (job, port) = start_job(&args, &brokers, dir.path(), "live", "live");
        (job, port, Vec::new())
    };
    let mut run = follow_all(
        &mut job,
        port,
        &mut peers,
        triggers,
        t0,
        Wait {
            inputs: data.inputs,
            expected,
            idle: Duration::from_secs(30),
            timeout: args.timeout,
        },
    );
    if !args.recovery {
        // A stop of one process stops the cluster.
        stop_job(&mut job);
        for (p, _) in &mut peers {
            let status = p.wait(Duration::from_secs(120));
            assert!(status.is_some_and(|s| s.success()), "{}", p.log_tail(30));
        }
    }
    let missing = expected_ids.difference(&run.triggers.ids).count();
    let extra = run.triggers.ids.difference(&expected_ids).count();
    let live_n = run.triggers.records;
    let (secs, what) = match (run.expected_s, run.last_trigger_s) {
        (Some(s), _) => (s, "to the expected trigger count"),
        (None, Some(s)) => (s, "to the LAST trigger seen (count differs)"),
        (None, None) => (f64::NAN, "no trigger seen"),
    };
    rows.push(Row {
        phase: if args.processes > 1 {
            format!(
                "C tripwire run ({} processes x {} workers)",
                args.processes, args.workers
            )
        } else {
            format!("C tripwire run ({} workers)", args.workers)
        },
        records: data.inputs,
        secs,
        mb: None,
        rss: Some(run.peak_rss_mib),
        note: format!(
            "{what}; {live_n} trigger records ({} distinct) vs {expected} replay, {missing} missing, \
             {extra} extra; {} late",
            run.triggers.ids.len(),
            run.late
        ),
    });
    if let Some(s) = run.input_read_s {
        rows.push(Row {
            phase: "C  (until every input record read)".into(),
            records: data.inputs,
            secs: s,
            mb: None,
            rss: None,
            note: "from the job's metrics".into(),
        });
    }
    let recovery = args.recovery.then(|| {
        let r = recover_after_kill(&args, &brokers, dir.path(), job, &mut run.triggers);
        rows.push(Row {
            phase: "R restart after SIGKILL (recovery)".into(),
            records: r.to_reread.unwrap_or(0),
            secs: r.recovered_s,
            mb: None,
            rss: Some(r.rss_at_recovered_mib),
            note: format!(
                "records re-read from the log line; to the `recovered` line (its elapsed_ms {}); \
                 afterwards {} emitted, {} replayed, {} suppressed",
                opt(r.elapsed_ms),
                r.emitted,
                r.replayed,
                opt(r.suppressed)
            ),
        });
        r
    });
    let tansu_peak = tansu_pid.and_then(peak_rss_mib);
    drop(tansu);

    if args.while_running {
        eprintln!("phase D: a fresh broker, tripwire first, then produce while it runs ...");
        let tansu = broker(dir.path(), &data.topics, args.partitions);
        let brokers = tansu.brokers();
        let triggers = TriggerReader::new(&brokers);
        let (mut job, port) = start_job(
            &args,
            &brokers,
            dir.path(),
            "while-running",
            "while-running",
        );
        let up = Instant::now();
        while job_metrics(port).is_none() {
            assert!(
                up.elapsed() < Duration::from_secs(30) && job.running(),
                "the job did not come up:\n{}",
                job.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        let produce_s = produce_all(&brokers, &data);
        let run = follow(
            &mut job,
            port,
            triggers,
            t0,
            Wait {
                inputs: data.inputs,
                expected,
                idle: Duration::from_secs(10),
                timeout: args.timeout,
            },
        );
        stop_job(&mut job);
        drop(tansu);
        rows.push(Row {
            phase: "D produce while tripwire runs".into(),
            records: n,
            secs: produce_s,
            mb: Some(data.bytes as f64),
            rss: None,
            note: "the producer's part".into(),
        });
        rows.push(Row {
            phase: "D  end to end (every input read)".into(),
            records: data.inputs,
            secs: run.input_read_s.unwrap_or(f64::NAN),
            mb: None,
            rss: Some(run.peak_rss_mib),
            note: format!(
                "{} trigger records, {} late events: rate only, not comparable with replay \
                 (empty partitions are caught up, so the frontier starts at now - lateness \
                 and a past recording arrives late)",
                run.triggers.records, run.late
            ),
        });
    }

    print_table(&rows);
    if let Some(m) = tansu_peak {
        println!("tansu peak RSS after phases A-C: {m:.0} MiB");
    }
    let topic_set: BTreeSet<&str> = data.topics.iter().map(String::as_str).collect();
    println!(
        "input {} ({n} records on topics {topic_set:?}, {:.0} MB)",
        input.display(),
        data.bytes as f64 / 1e6
    );
    if let Some(r) = &recovery {
        let c = &r.checkpoint;
        println!(
            "recovery: SIGKILL {} ms after checkpoint frontier {} (lookback {} ms, {} pinned, {} \
             bytes); restart re-read {} records (checkpoint: {}), `recovered` after {:.2} s \
             (elapsed_ms {}, gauge {:.2} s, records {}), peak RSS {:.0} MiB at it, {:.0} MiB 10 s \
             later; triggers: {} found on the topic at start, {} suppressed (at or before the \
             frontier), {} replayed, {} emitted; trigger topic +{} records after the kill ({} \
             repeating an id)",
            r.checkpoint_age_ms,
            c.frontier_ms,
            c.lookback_ms,
            opt(r.pinned_logged),
            c.bytes,
            opt(r.to_reread),
            c.reread,
            r.recovered_s,
            opt(r.elapsed_ms),
            r.recovery_gauge_s,
            opt(r.records),
            r.rss_at_recovered_mib,
            r.rss_at_end_mib,
            opt(r.triggers_found),
            opt(r.suppressed),
            r.replayed,
            r.emitted,
            r.topic_new,
            r.topic_repeats
        );
    }
    println!("command: cargo bench --bench live -- {}", command.join(" "));
}

/// An optional figure, `?` when missing.
fn opt(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}
