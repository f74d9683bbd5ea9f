//! Recovery of the live job against a real broker (tansu on 127.0.0.1):
//! `tripwire run` is killed with SIGKILL at random points while a producer
//! feeds a recording in real time, and restarted each time from its state
//! directory. The trigger topic must then hold exactly the trigger ids of an
//! uninterrupted `tripwire replay` of the same recording, and any id written
//! twice must carry the same bytes both times.
//!
//! The recording is generated for "now" (one minute of traffic, paced by
//! its `ts`), so that no event is late and the live result is defined to
//! be the replay's. `RECOVERY_SEED` picks other kill points.

#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use support::{create_topics, Proc, Reader, Tansu};

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

/// `(topic, key, payload, ts)` of every line, in `ts` order.
fn load(path: &Path) -> Vec<(String, Option<String>, Vec<u8>, u64)> {
    let mut recs: Vec<_> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["topic"].as_str().unwrap().to_string(),
                v["key"].as_str().map(str::to_string),
                serde_json::to_vec(&v["value"]).unwrap(),
                v["value"]["ts"].as_u64().unwrap(),
            )
        })
        .collect();
    recs.sort_by_key(|r| r.3);
    recs
}

fn start_job(brokers: &str, dir: &Path, n: usize) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--brokers", brokers, "--start", "earliest"])
        .args(["--workers", "2", "--checkpoint-interval-ms", "1000"])
        .arg("--config")
        .arg(config())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{}", support::free_port()),
        ])
        .env("RUST_LOG", "info");
    Proc::spawn(cmd, dir.join(format!("job-{n}.log")))
}

#[test]
fn killed_job_resumes_without_loss_or_repeats() {
    let seed: u64 = std::env::var("RECOVERY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir_buf = tmp.path().to_path_buf();
    let dir: &Path = &dir_buf;
    let tansu = Tansu::start(dir);
    let brokers = tansu.brokers();
    create_topics(
        &brokers,
        &[
            ("tracking", 2),
            ("prices", 2),
            ("stock", 1),
            ("catalog", 1),
            ("triggers", 2),
            ("tripwire.dlq", 1),
        ],
    );

    // One minute of traffic from 5 s from now.
    let recording = dir.join("recording.jsonl");
    let t0 = now_ms() + 5_000;
    let status = Command::new(bin())
        .args(["generate", "--events", "6000", "--users", "300"])
        .args(["--products", "100", "--rate-per-s", "100"])
        .args(["--start-ms", &t0.to_string()])
        .arg("--output")
        .arg(&recording)
        .status()
        .unwrap();
    assert!(status.success());
    let recs = load(&recording);
    let last_ts = recs.last().unwrap().3;

    // The producer sends each record when the wall clock reaches its ts.
    let producer_brokers = brokers.clone();
    let producer = std::thread::spawn(move || {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &producer_brokers)
            .set("linger.ms", "0")
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
        p.flush(Duration::from_secs(30)).unwrap();
        behind_ms
    });

    // Kill and restart the job at random points while traffic flows.
    let mut job = start_job(&brokers, dir, 0);
    let cycles: usize = std::env::var("RECOVERY_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut kills = 0;
    while kills < cycles {
        std::thread::sleep(Duration::from_millis(rng.gen_range(1_500..5_000)));
        assert!(job.running(), "the job died:\n{}", job.log_tail(30));
        job.child.kill().unwrap();
        job.child.wait().unwrap();
        kills += 1;
        job = start_job(&brokers, dir, kills);
    }
    let behind_ms = producer.join().unwrap();
    assert!(
        behind_ms < 2_000,
        "the producer fell {behind_ms} ms behind the recording's time (events would be late)"
    );
    // Every timer of the recording is due 12 s after its last event at the
    // latest; the frontier trails the wall clock by the lateness (5 s).
    while now_ms() < last_ts + 20_000 {
        std::thread::sleep(Duration::from_millis(200));
    }
    job.terminate();
    assert!(
        job.wait(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "the job did not stop cleanly:\n{}",
        job.log_tail(30)
    );
    let until = last_ts + 13_000;

    let mut reader = Reader::new(&brokers, &["triggers"]);
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
        .arg(&recording)
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
    if !(expected_ids.is_subset(&live_ids) && live_ids.is_subset(&expected_ids)) {
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
    let repeats: usize = live.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "recovery: seed {seed}, {kills} kills, {} triggers expected, {} on the topic, {repeats} repeats",
        expected.len(),
        live.len()
    );
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
    assert!(expected.len() > 1_000, "too few triggers to mean much");
    let logs: String = (0..=kills)
        .map(|n| std::fs::read_to_string(dir.join(format!("job-{n}.log"))).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("recovering from the checkpoint"),
        "no restart recovered from a checkpoint"
    );
}
