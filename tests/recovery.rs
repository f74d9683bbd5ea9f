//! Recovery of the live job against a real broker (tansu on 127.0.0.1).
//!
//! - `tripwire run` is killed with SIGKILL at random points while a
//!   producer feeds a recording in real time, and restarted each time from
//!   its state directory.
//! - The broker (sqlite storage) is stopped for 30 s mid-stream and comes
//!   back on the same port; the job keeps running.
//!
//! Either way the trigger topic must then hold exactly the trigger ids of an
//! uninterrupted `tripwire replay` of the same recording, and any id written
//! twice must carry the same bytes both times.
//!
//! The recordings are generated for "now" and produced paced by their `ts`,
//! so that no event is late and the live result is defined to be the
//! replay's. `RECOVERY_SEED` picks other kill points; `RECOVERY_KILLS`
//! another number of kills.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use support::{create_topics, Proc, Reader, Tansu};

/// One test at a time: each runs a broker, a job and a paced producer, and
/// a producer that falls behind would make events late.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tripwire")
}

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/live/recovery.toml")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One record of a recording: `(topic, key, payload, ts)`.
type Rec = (String, Option<String>, Vec<u8>, u64);

/// The job's topics.
fn topics(brokers: &str) {
    create_topics(
        brokers,
        &[
            ("tracking", 2),
            ("prices", 2),
            ("stock", 1),
            ("catalog", 1),
            ("triggers", 2),
            ("tripwire.dlq", 1),
        ],
    );
}

/// `events` records of generated traffic at 100/s from `t0`, each record at
/// or after `gap_from` moved `gap_ms` later (a pause in the traffic);
/// written to `dir/recording.jsonl` and returned in `ts` order.
fn world(dir: &Path, events: u64, t0: u64, gap_from: u64, gap_ms: u64) -> (PathBuf, Vec<Rec>) {
    let generated = dir.join("generated.jsonl");
    let status = Command::new(bin())
        .args([
            "generate",
            "--events",
            &events.to_string(),
            "--users",
            "300",
        ])
        .args(["--products", "100", "--rate-per-s", "100"])
        .args(["--start-ms", &t0.to_string()])
        .arg("--output")
        .arg(&generated)
        .status()
        .unwrap();
    assert!(status.success());
    let mut lines = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    for l in std::fs::read_to_string(&generated).unwrap().lines() {
        let mut v: Value = serde_json::from_str(l).unwrap();
        let mut ts = v["value"]["ts"].as_u64().unwrap();
        if ts >= gap_from {
            ts += gap_ms;
            v["value"]["ts"] = ts.into();
            v["timestamp"] = ts.into();
        }
        lines.push(v.to_string());
        recs.push((
            v["topic"].as_str().unwrap().to_string(),
            v["key"].as_str().map(str::to_string),
            serde_json::to_vec(&v["value"]).unwrap(),
            ts,
        ));
    }
    let recording = dir.join("recording.jsonl");
    std::fs::write(&recording, lines.join("\n") + "\n").unwrap();
    recs.sort_by_key(|r| r.3);
    (recording, recs)
}

/// Sends each record when the wall clock reaches its `ts`; returns how far
/// behind the recording's time it fell at worst (ms).
fn paced_producer(brokers: &str, recs: Vec<Rec>) -> JoinHandle<u64> {
    let brokers = brokers.to_string();
    std::thread::spawn(move || {
        // Not idempotent: tansu on sqlite fails an idempotent producer that
        // resumes after a broker restart (dataflow-notes.md).
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "0")
            .set("enable.idempotence", "false")
            .create()
            .unwrap();
        let mut behind_ms = 0u64;
        for (topic, key, payload, ts) in &recs {
            let now = now_ms();
            if *ts > now {
                std::thread::sleep(Duration::from_millis(ts - now));
            } else {
                behind_ms = behind_ms.max(now - ts);
            }
            let mut rec = BaseRecord::to(topic).payload(payload);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            support::send_retrying(&p, rec, Duration::from_millis(5));
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).unwrap();
        behind_ms
    })
}

fn start_job(brokers: &str, dir: &Path, config: &Path, n: usize) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--brokers", brokers, "--start", "earliest"])
        .args(["--workers", "2", "--checkpoint-interval-ms", "1000"])
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .env("RUST_LOG", "info");
    Proc::spawn(cmd, dir.join(format!("job-{n}.log")))
}

/// Waits until every timer of the recording is due and past the frontier
/// (the latest is due 12 s after the last event; the frontier trails the
/// wall clock by the 5 s lateness), stops the job, and compares the trigger
/// topic with a replay up to `last_ts + 13 s`: the same ids, and the same
/// bytes for an id written twice. Returns (expected, repeats).
fn stop_and_compare(
    job: &mut Proc,
    brokers: &str,
    tmp: tempfile::TempDir,
    recording: &Path,
    last_ts: u64,
) -> (usize, usize) {
    let dir = tmp.path().to_path_buf();
    while now_ms() < last_ts + 20_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    job.terminate();
    assert!(
        job.wait(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "the job did not stop cleanly:\n{}",
        job.log_tail(30)
    );
    let until = last_ts + 13_000;

    let mut reader = Reader::new(brokers, &["triggers"]);
    reader.drain(Duration::from_secs(60));
    let mut live: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for g in &reader.got {
        let v: Value = serde_json::from_slice(&g.payload).unwrap();
        if v["ts"].as_u64().unwrap() <= until {
            live.entry(v["trigger_id"].as_str().unwrap().to_string())
                .or_default()
                .push(g.payload.clone());
        }
    }

    let out = dir.join("replay.jsonl");
    let status = Command::new(bin())
        .args(["replay", "--workers", "2", "--until", &until.to_string()])
        .arg("--config")
        .arg(config())
        .arg("--input")
        .arg(recording)
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let expected: BTreeMap<String, Vec<u8>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["trigger_id"].as_str().unwrap().to_string(),
                l.as_bytes().to_vec(),
            )
        })
        .collect();

    let live_ids: BTreeSet<&String> = live.keys().collect();
    let expected_ids: BTreeSet<&String> = expected.keys().collect();
    if live_ids != expected_ids {
        // Keep the recording, the logs, the state and the triggers for a look.
        let text: String = reader
            .got
            .iter()
            .map(|g| format!("{}\n", String::from_utf8_lossy(&g.payload)))
            .collect();
        std::fs::write(dir.join("live.jsonl"), text).unwrap();
        eprintln!("kept {}", tmp.keep().display());
    }
    let missing: Vec<String> = expected_ids
        .difference(&live_ids)
        .take(5)
        .map(|id| String::from_utf8_lossy(&expected[*id]).into_owned())
        .collect();
    let extra: Vec<_> = live_ids.difference(&expected_ids).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing (e.g. {missing:?}), {} extra (e.g. {extra:?})\nlast job log:\n{}",
        expected_ids.difference(&live_ids).count(),
        live_ids.difference(&expected_ids).count(),
        job.log_tail(20)
    );
    for (id, copies) in &live {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "trigger {id} written twice with different bytes"
        );
    }
    assert!(expected.len() > 500, "too few triggers to mean much");
    let repeats = live.values().map(|v| v.len() - 1).sum();
    (expected.len(), repeats)
}

#[test]
fn killed_job_resumes_without_loss_or_repeats() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("RECOVERY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let cycles: usize = std::env::var("RECOVERY_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let tansu = Tansu::start(&dir);
    let brokers = tansu.brokers();
    topics(&brokers);

    // One minute of traffic from 5 s from now.
    let (recording, recs) = world(&dir, 6_000, now_ms() + 5_000, u64::MAX, 0);
    let last_ts = recs.last().unwrap().3;
    let producer = paced_producer(&brokers, recs);

    // Kill and restart the job at random points while traffic flows.
    let mut job = start_job(&brokers, &dir, &config(), 0);
    let mut kills = 0;
    while kills < cycles {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1_500..5_000)));
        assert!(job.running(), "the job died:\n{}", job.log_tail(30));
        job.child.kill().unwrap();
        job.child.wait().unwrap();
        kills += 1;
        job = start_job(&brokers, &dir, &config(), kills);
    }
    let behind_ms = producer.join().unwrap();
    assert!(
        behind_ms < 2_000,
        "the producer fell {behind_ms} ms behind the recording's time (events would be late)"
    );
    let logs: String = (0..=kills)
        .map(|n| std::fs::read_to_string(dir.join(format!("job-{n}.log"))).unwrap_or_default())
        .collect();
    assert!(
        kills == 0 || logs.contains("recovering from the checkpoint"),
        "no restart recovered from a checkpoint"
    );
    let (expected, repeats) = stop_and_compare(&mut job, &brokers, tmp, &recording, last_ts);
    eprintln!(
        "recovery: seed {seed}, {kills} kills, {expected} triggers as the replay, {repeats} repeats"
    );
}

/// Resident memory of a process (KiB), from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn broker_outage_mid_stream_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut tansu = Tansu::start_with(&dir, "sqlite://tansu.db");
    let brokers = tansu.brokers();
    topics(&brokers);
    // The job's producer not idempotent either (see `paced_producer`).
    let cfg = dir.join("tripwire.toml");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(config()).unwrap()
            + "\n[kafka]\n\"enable.idempotence\" = \"false\"\n",
    )
    .unwrap();

    // 40 s of traffic from 5 s from now, with a 40 s pause after its first
    // 15 s; the broker is away for 30 s of the pause (the producer has
    // nothing to send then: events written while the broker is away would
    // reach the job after the frontier passed them, late).
    let t0 = now_ms() + 5_000;
    let (recording, recs) = world(&dir, 4_000, t0, t0 + 15_000, 40_000);
    let last_ts = recs.last().unwrap().3;
    let producer = paced_producer(&brokers, recs);
    let mut job = start_job(&brokers, &dir, &cfg, 0);

    while now_ms() < t0 + 20_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = rss_kib(job.child.id());
    tansu.stop();
    let mut during = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            job.running(),
            "the job died with the broker away:\n{}",
            job.log_tail(30)
        );
        during = during.max(rss_kib(job.child.id()));
    }
    tansu.restart();
    let behind_ms = producer.join().unwrap();
    assert!(
        behind_ms < 2_000,
        "the producer fell {behind_ms} ms behind the recording's time"
    );
    assert!(
        during < before + 256 * 1024,
        "memory grew from {before} KiB to {during} KiB with the broker away"
    );
    let (expected, repeats) = stop_and_compare(&mut job, &brokers, tmp, &recording, last_ts);
    eprintln!(
        "broker outage: 30 s; job RSS {before} KiB before, at most {during} KiB during; \
         {expected} triggers as the replay, {repeats} repeats"
    );
}
