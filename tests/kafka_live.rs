//! The live job and the recorder against a real Kafka-compatible broker
//! (tansu, in-memory, started per test on a free 127.0.0.1 port).
//!
//! Needs the `tansu` binary (`$TANSU_BIN`, `PATH` or `~/.cargo/bin`); the
//! tests fail with a clear message without it. Tests take a shared lock and
//! run one at a time (each starts a broker and the job's worker threads).

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use support::{
    create_topics, in_time_order, load_recording, metric_sum, now_ms, produce, scrape, stop_job,
    Proc, Reader, Rec, Tansu,
};

static SERIAL: Mutex<()> = Mutex::new(());

const INPUT_TOPICS: [&str; 4] = ["tracking", "prices", "stock", "catalog"];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tripwire")
}

fn conformance(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance")
        .join(name)
}

/// A broker with the job's topics.
fn broker(dir: &Path) -> Tansu {
    let t = Tansu::start(dir);
    let mut topics: Vec<(&str, i32)> = INPUT_TOPICS.iter().map(|t| (*t, 4)).collect();
    topics.push(("triggers", 1));
    topics.push(("tripwire.dlq", 1));
    create_topics(&t.brokers(), &topics);
    t
}

/// A JSON value as text with object keys sorted (field order does not count).
fn canon(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> = m.iter().map(|(k, v)| (k, canon(v))).collect();
            let fields: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn canon_bytes(b: &[u8]) -> String {
    canon(
        &serde_json::from_slice(b)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b))),
    )
}

/// `tripwire replay` of `inputs`: the trigger records, canonical and sorted.
fn replay(inputs: &[&Path], until: Option<u64>, dir: &Path, name: &str) -> Vec<String> {
    let out = dir.join(format!("{name}.jsonl"));
    let mut lines: Vec<String> = support::replay_lines(inputs, until, None, 2, &out)
        .iter()
        .map(|l| canon_bytes(l.as_bytes()))
        .collect();
    lines.sort();
    lines
}

/// Starts `tripwire run` from the earliest offsets, 2 workers.
fn start_job(brokers: &str, metrics_port: u16, dir: &Path) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args([
        "run",
        "--brokers",
        brokers,
        "--start",
        "earliest",
        "--workers",
        "2",
    ])
    .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
    .arg("--state-dir")
    .arg(dir.join("state"))
    .env("RUST_LOG", "info");
    Proc::spawn(cmd, dir.join("job.log"))
}

/// Asserts the live job's sorted canonical records equal the expected ones.
fn assert_same(live: &[String], expected: &[String], log: &str) {
    support::assert_same_records("live", live, expected, &format!("job log:\n{log}"));
}

fn trigger_lines(reader: &Reader) -> Vec<String> {
    let mut v: Vec<String> = reader.got.iter().map(|g| canon_bytes(&g.payload)).collect();
    v.sort();
    v
}

/// The live job over gen-small gives the triggers of the replay of the same
/// recording, closed at (test start) now.
///
/// Why `--until now` and not the recording's largest `ts`: once every
/// partition is caught up the live frontier is wall-clock now minus the
/// lateness, so timers due after the recording's end (abandoned carts whose
/// delay runs past the last record, ...) do fire live; replay closed at the
/// largest `ts` would not fire them. Closing replay at now makes both sides
/// complete the same event-time interval (nothing in a 2023 recording is due
/// between "now at test start" and "now minus 5 s a few seconds later").
#[test]
fn live_matches_replay() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let input = conformance("gen-small.jsonl");
    produce(&brokers, &in_time_order(load_recording(&input)));

    let until = now_ms();
    let expected = replay(&[&input], Some(until), dir.path(), "expected");
    assert!(
        expected.len() > 18_000,
        "replay gave only {} triggers",
        expected.len()
    );

    let metrics_port = support::free_port();
    let mut job = start_job(&brokers, metrics_port, dir.path());
    let mut triggers = Reader::new(&brokers, &["triggers"]);
    let arrived = triggers.read_at_least(expected.len(), Duration::from_secs(60));
    assert!(
        arrived,
        "only {} of {} triggers within 60 s; job log:\n{}",
        triggers.got.len(),
        expected.len(),
        job.log_tail(30)
    );
    // Let any extra (wrong) trigger arrive before comparing.
    std::thread::sleep(Duration::from_secs(2));
    let text = scrape(metrics_port).expect("metrics endpoint answers");
    assert_eq!(
        metric_sum(&text, "tripwire_input_records_total"),
        20_000.0,
        "{text}"
    );
    // Each partition is in event-time order: nothing may be late.
    assert_eq!(
        metric_sum(&text, "tripwire_late_events_total"),
        0.0,
        "{text}"
    );
    // Every record written has its delay observed (this recording is
    // years old: each one in the last bucket).
    let emitted = metric_sum(&text, "tripwire_triggers_emitted_total");
    assert!(emitted >= expected.len() as f64, "{text}");
    assert_eq!(
        metric_sum(&text, "tripwire_trigger_delay_seconds_count"),
        emitted,
        "{text}"
    );
    let bucket = |le: &str| {
        let name = format!("tripwire_trigger_delay_seconds_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}in {text}"))
    };
    assert_eq!(bucket("86400"), 0.0, "every delay is above a day: {text}");
    assert_eq!(bucket("+Inf"), emitted, "{text}");
    stop_job(&mut job);
    triggers.drain(Duration::from_secs(10));
    for g in &triggers.got {
        let t: Value = serde_json::from_slice(&g.payload).unwrap();
        assert_eq!(
            g.key.as_deref(),
            t["user_id"].as_str().map(str::as_bytes),
            "trigger key is its user_id"
        );
    }
    assert_same(&trigger_lines(&triggers), &expected, &job.log_tail(10));
}

/// The same for the further kinds, whose hand-made recordings carry
/// `catalog` messages, deliveries, cancellations, reviews and month-long
/// gaps: every kind fires live exactly as in replay.
#[test]
fn live_matches_replay_for_every_kind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let fixtures: Vec<PathBuf> = [
        "abandoned_search",
        "abandoned_category",
        "wishlist_reminder",
        "complementary",
        "new_in_category",
        "reactivation",
        "review_request",
        "cancelled_alternative",
    ]
    .iter()
    .map(|k| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{k}.jsonl"))
    })
    .collect();
    let mut recs = Vec::new();
    for f in &fixtures {
        recs.extend(load_recording(f));
    }
    produce(&brokers, &in_time_order(recs));

    let until = now_ms();
    let inputs: Vec<&Path> = fixtures.iter().map(|p| p.as_path()).collect();
    let expected = replay(&inputs, Some(until), dir.path(), "expected");
    let kinds: std::collections::BTreeSet<String> = expected
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert!(kinds.len() >= 8, "replay fired only {kinds:?}");

    let metrics_port = support::free_port();
    let mut job = start_job(&brokers, metrics_port, dir.path());
    let mut triggers = Reader::new(&brokers, &["triggers"]);
    let arrived = triggers.read_at_least(expected.len(), Duration::from_secs(60));
    assert!(
        arrived,
        "only {} of {} triggers within 60 s; job log:\n{}",
        triggers.got.len(),
        expected.len(),
        job.log_tail(30)
    );
    std::thread::sleep(Duration::from_secs(2));
    stop_job(&mut job);
    triggers.drain(Duration::from_secs(10));
    assert_same(&trigger_lines(&triggers), &expected, &job.log_tail(10));
}

/// Bad records go to the dead-letter topic with their reason and origin, are
/// counted in the metrics, and neither stop the job nor the good records.
#[test]
fn bad_records_are_dead_lettered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let input = conformance("edge-cases.jsonl");
    let mut recs = load_recording(&input);
    let items: Vec<String> = (0..1001)
        .map(|i| format!(r#"{{"product_id":"p{i}"}}"#))
        .collect();
    let big_order = format!(
        r#"{{"event_id":"g2","type":"order_placed","ts":1700000000000,"user_id":"u1","order_id":"o1","items":[{}]}}"#,
        items.join(",")
    );
    let garbage: [(&str, Option<&str>, &[u8]); 6] = [
        ("tracking", Some("u1"), big_order.as_bytes()),
        ("tracking", Some("k1"), b"\xff\xfe not utf-8, not json"),
        (
            "tracking",
            Some("k2"),
            br#"{"event_id":"g1","type":"cart_add"}"#,
        ),
        (
            "prices",
            Some("p1"),
            br#"{"product_id":"p1","ts":1700000000000}"#,
        ),
        ("stock", None, b"[1,2,3]"),
        ("catalog", Some("p2"), b"{\"product_id\": \"p2\", trailing"),
    ];
    for (topic, key, payload) in garbage {
        recs.push((
            Rec {
                topic: topic.into(),
                key: key.map(str::to_string),
                payload: payload.to_vec(),
            },
            None,
        ));
    }
    let recs = in_time_order(recs);
    // Which records are bad and why, written out here (not asked of the
    // codec under test): the 3 bad lines of edge-cases.jsonl and the 6
    // garbage records; every reason the live job can give, at least once.
    let expected_bad: [(&str, &[u8], &str); 9] = [
        ("tracking", b"this is not json", "invalid_json"),
        (
            "tracking",
            br#"{"type":"cart_add","ts":1700000000000}"#,
            "missing_field",
        ),
        (
            "prices",
            br#"{"product_id":"p12","price":-3,"ts":1700000000000}"#,
            "invalid_value",
        ),
        ("tracking", big_order.as_bytes(), "too_large"),
        ("tracking", b"\xff\xfe not utf-8, not json", "invalid_json"),
        (
            "tracking",
            br#"{"event_id":"g1","type":"cart_add"}"#,
            "missing_field",
        ),
        (
            "prices",
            br#"{"product_id":"p1","ts":1700000000000}"#,
            "missing_field",
        ),
        ("stock", b"[1,2,3]", "invalid_payload"),
        (
            "catalog",
            b"{\"product_id\": \"p2\", trailing",
            "invalid_json",
        ),
    ];
    // The same payload: equal JSON values (recordings are re-serialised
    // when loaded), or equal bytes.
    let same = |a: &[u8], b: &[u8]| match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    let bad: Vec<(&Rec, &'static str)> = expected_bad
        .iter()
        .map(|(topic, payload, reason)| {
            let found: Vec<&Rec> = recs
                .iter()
                .filter(|r| r.topic == *topic && same(&r.payload, payload))
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{topic}: {}",
                String::from_utf8_lossy(payload)
            );
            (found[0], *reason)
        })
        .collect();
    for reason in [
        "invalid_json",
        "invalid_payload",
        "missing_field",
        "invalid_value",
        "too_large",
    ] {
        assert!(
            bad.iter().any(|(_, r)| *r == reason),
            "{reason} is not covered"
        );
    }
    produce(&brokers, &recs);

    let until = now_ms();
    let expected = replay(&[&input], Some(until), dir.path(), "expected");
    let metrics_port = support::free_port();
    let mut job = start_job(&brokers, metrics_port, dir.path());

    let mut dlq = Reader::new(&brokers, &["tripwire.dlq"]);
    assert!(
        dlq.read_at_least(bad.len(), Duration::from_secs(30)),
        "only {} of {} dead letters within 30 s; job log:\n{}",
        dlq.got.len(),
        bad.len(),
        job.log_tail(30)
    );
    // Every dead letter names its origin: the record there is the bad one.
    let mut inputs = Reader::new(&brokers, &INPUT_TOPICS);
    inputs.drain(Duration::from_secs(20));
    let mut seen = Vec::new();
    for g in &dlq.got {
        let d: Value = serde_json::from_slice(&g.payload).expect("dead letters are JSON");
        let topic = d["topic"].as_str().expect("topic");
        let partition = d["partition"].as_i64().expect("partition") as i32;
        let offset = d["offset"].as_i64().expect("offset");
        let origin = inputs
            .got
            .iter()
            .find(|r| r.topic == topic && r.partition == partition && r.offset == offset)
            .unwrap_or_else(|| panic!("no input record at {topic}/{partition}@{offset}"));
        assert_eq!(
            d["payload"].as_str(),
            Some(&*String::from_utf8_lossy(&origin.payload)),
            "{d}"
        );
        assert_eq!(g.key, origin.key, "dead letter keeps the original key: {d}");
        let (_, reason) = bad
            .iter()
            .find(|(r, _)| r.topic == topic && r.payload == origin.payload)
            .unwrap_or_else(|| panic!("dead-lettered a good record: {d}"));
        assert_eq!(d["reason"].as_str(), Some(*reason), "{d}");
        assert!(d["detail"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        seen.push((topic.to_string(), partition, offset));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), bad.len(), "each bad record dead-lettered once");

    // The good records still fire their triggers.
    let mut triggers = Reader::new(&brokers, &["triggers"]);
    assert!(
        triggers.read_at_least(expected.len(), Duration::from_secs(30)),
        "only {} of {} triggers; job log:\n{}",
        triggers.got.len(),
        expected.len(),
        job.log_tail(30)
    );
    assert!(job.running(), "the job stopped:\n{}", job.log_tail(30));

    // The metrics count them.
    let text = scrape(metrics_port).expect("metrics endpoint answers");
    assert_eq!(
        metric_sum(&text, "tripwire_bad_records_total"),
        bad.len() as f64,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "tripwire_dead_letter_records_total"),
        bad.len() as f64,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "tripwire_input_records_total"),
        recs.len() as f64,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "tripwire_late_events_total"),
        0.0,
        "{text}"
    );

    // The job keeps going in real time: a price drop on a wishlisted product now.
    let t0 = now_ms();
    let live = [
        (
            "prices",
            "p-live",
            format!(r#"{{"product_id":"p-live","price":100.0,"ts":{t0}}}"#),
        ),
        (
            "tracking",
            "u-live",
            format!(
                r#"{{"event_id":"live-1","type":"wishlist_add","ts":{},"user_id":"u-live","product_id":"p-live"}}"#,
                t0 + 1
            ),
        ),
        (
            "prices",
            "p-live",
            format!(r#"{{"product_id":"p-live","price":50.0,"ts":{}}}"#, t0 + 2),
        ),
    ];
    let live: Vec<Rec> = live
        .into_iter()
        .map(|(topic, key, payload)| Rec {
            topic: topic.into(),
            key: Some(key.into()),
            payload: payload.into_bytes(),
        })
        .collect();
    produce(&brokers, &live);
    assert!(
        triggers.read_at_least(expected.len() + 1, Duration::from_secs(30)),
        "no trigger for a price drop produced now; job log:\n{}",
        job.log_tail(30)
    );
    let last: Value = serde_json::from_slice(&triggers.got.last().unwrap().payload).unwrap();
    assert_eq!(last["kind"], "price_drop", "{last}");
    assert_eq!(last["user_id"], "u-live", "{last}");
    assert_eq!(last["ts"], t0 + 2, "{last}");

    stop_job(&mut job);
    triggers.drain(Duration::from_secs(10));
    let mut got = trigger_lines(&triggers);
    let live_line = canon(&last);
    got.retain(|l| *l != live_line);
    assert_same(&got, &expected, &job.log_tail(10));
}

/// `tripwire record` of the topics, replayed, gives the triggers of the
/// original recordings (bad records included: they stay bad).
#[test]
fn record_round_trip() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let edge = conformance("edge-cases.jsonl");
    let small = conformance("gen-small.jsonl");
    let mut recs = load_recording(&edge);
    recs.extend(load_recording(&small));
    let n = recs.len();
    // Recording order is irrelevant to replay; keep the file order.
    let recs: Vec<Rec> = recs.into_iter().map(|(r, _)| r).collect();
    produce(&brokers, &recs);

    let out = dir.path().join("recorded");
    let mut rec = Proc::spawn(
        {
            let mut c = Command::new(bin());
            c.args([
                "record",
                "--brokers",
                &brokers,
                "--topics",
                "tracking,prices,stock,catalog",
                "--output",
            ])
            .arg(&out)
            .env("RUST_LOG", "info");
            c
        },
        dir.path().join("record.log"),
    );
    let status = rec
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("record did not finish within 60 s:\n{}", rec.log_tail(20)));
    assert!(status.success(), "record failed:\n{}", rec.log_tail(20));
    let lines: usize = INPUT_TOPICS
        .iter()
        .map(|t| {
            std::fs::read_to_string(out.join(format!("{t}.jsonl")))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    if lines != n {
        let mut inputs = Reader::new(&brokers, &INPUT_TOPICS);
        inputs.drain(Duration::from_secs(20));
        let mut per: BTreeMap<(String, i32), (usize, i64)> = BTreeMap::new();
        for g in &inputs.got {
            let e = per.entry((g.topic.clone(), g.partition)).or_default();
            e.0 += 1;
            e.1 = e.1.max(g.offset);
        }
        eprintln!("DEBUG topic read by test: {per:?}");
        for t in INPUT_TOPICS {
            let text = std::fs::read_to_string(out.join(format!("{t}.jsonl"))).unwrap();
            let mut per: BTreeMap<i64, (usize, i64)> = BTreeMap::new();
            for l in text.lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                let e = per.entry(v["partition"].as_i64().unwrap()).or_default();
                e.0 += 1;
                e.1 = e.1.max(v["offset"].as_i64().unwrap());
            }
            eprintln!("DEBUG recorded {t}: {per:?}");
        }
        eprintln!("{}", rec.log_tail(20));
    }
    assert_eq!(lines, n, "every produced record recorded once");

    let expected = replay(&[&edge, &small], None, dir.path(), "expected");
    let replayed = replay(&[&out], None, dir.path(), "replayed");
    assert!(!expected.is_empty());
    assert_same(&replayed, &expected, &rec.log_tail(5));
}

/// A missing output topic stops the job at start, naming it (triggers would
/// otherwise be counted and then dropped by the producer); with
/// `--create-output-topics N` the job creates the missing ones and runs.
#[test]
fn missing_output_topics_stop_the_job_or_are_created() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path());
    let brokers = tansu.brokers();
    let inputs: Vec<(&str, i32)> = INPUT_TOPICS.iter().map(|t| (*t, 1)).collect();
    create_topics(&brokers, &inputs);

    let run = |extra: &[&str], log: &str| {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--brokers", &brokers, "--start", "earliest"])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", support::free_port()),
            ])
            .arg("--state-dir")
            .arg(dir.path().join(format!("{log}.state")))
            .args(extra);
        Proc::spawn(cmd, dir.path().join(log))
    };
    let mut job = run(&[], "refused.log");
    let status = job
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the job did not stop:\n{}", job.log_tail(20)));
    let log = std::fs::read_to_string(&job.log).unwrap();
    assert!(
        !status.success(),
        "the job ran without its output topics:\n{log}"
    );
    assert!(
        log.contains("triggers")
            && log.contains("tripwire.dlq")
            && log.contains("--create-output-topics"),
        "the error names neither the topics nor the way out:\n{log}"
    );

    let mut job = run(&["--create-output-topics", "2"], "created.log");
    job.await_log("created the output topics", Duration::from_secs(30));
    stop_job(&mut job);
    // They exist now: a plain start runs.
    let mut job = run(&[], "plain.log");
    job.await_log("starting the live job", Duration::from_secs(30));
    stop_job(&mut job);
}

/// A record dated further after the wall clock than `time.max_future_ms`
/// is dead-lettered (`future_ts`) instead of holding its partition's
/// watermark, and memory, until then; a record just inside the bound is
/// read as usual.
#[test]
fn records_far_in_the_future_are_dead_lettered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let now = now_ms();
    let event = |id: &str, ts: u64| Rec {
        topic: "tracking".into(),
        key: Some("u1".into()),
        payload: format!(r#"{{"event_id":"{id}","type":"app_open","ts":{ts},"user_id":"u1"}}"#)
            .into_bytes(),
    };
    let day = 86_400_000;
    produce(
        &brokers,
        &[event("near", now + day / 2), event("far", now + 2 * day)],
    );
    let mut job = start_job(&brokers, support::free_port(), dir.path());
    let mut dlq = Reader::new(&brokers, &["tripwire.dlq"]);
    assert!(
        dlq.read_at_least(1, Duration::from_secs(30)),
        "no dead letter within 30 s; job log:\n{}",
        job.log_tail(30)
    );
    dlq.drain(Duration::from_secs(3));
    assert_eq!(dlq.got.len(), 1, "only the far record is dead-lettered");
    let d: Value = serde_json::from_slice(&dlq.got[0].payload).unwrap();
    assert_eq!(d["reason"], "future_ts", "{d}");
    assert!(
        d["payload"]
            .as_str()
            .unwrap()
            .contains(r#""event_id":"far""#),
        "{d}"
    );
    stop_job(&mut job);
}

/// A record older than the frontier is applied at the frontier, counted
/// per topic, and summarised in one warning line (count and the oldest
/// lag) rather than logged one by one.
#[test]
fn late_events_are_counted_and_summarised() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let event = |id: &str, ts: u64| Rec {
        topic: "tracking".into(),
        key: Some("u1".into()),
        payload: format!(r#"{{"event_id":"{id}","type":"app_open","ts":{ts},"user_id":"u1"}}"#)
            .into_bytes(),
    };
    produce(&brokers, &[event("on-time", now_ms())]);
    let port = support::free_port();
    let mut job = start_job(&brokers, port, dir.path());
    // Once the first record is read, the frontier follows the wall clock
    // (minus `time.lateness_ms`): a minute ago is late.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let scraped = |name: &str| scrape(port).map_or(0.0, |t| metric_sum(&t, name));
    let caught_up = || {
        scrape(port).is_some_and(|t| {
            metric_sum(&t, "tripwire_input_records_total") >= 1.0
                && t.lines().any(|l| {
                    l.strip_prefix("tripwire_frontier_lag_seconds ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .is_some_and(|lag| lag > 1.0 && lag < 30.0)
                })
        })
    };
    while !caught_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "the frontier did not reach the wall clock within 60 s:\n{}",
            job.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = now_ms();
    produce(
        &brokers,
        &[
            event("late-1", now - 600_000),
            event("late-2", now - 60_000),
        ],
    );
    job.await_log(
        "late events applied at the frontier",
        Duration::from_secs(30),
    );
    let log = std::fs::read_to_string(dir.path().join("job.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("late events applied at the frontier"))
        .unwrap();
    assert!(line.contains("late_events=2"), "{line}");
    let lag: u64 = line
        .split("oldest_lag_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no oldest_lag_ms in {line}"));
    assert!((590_000..660_000).contains(&lag), "{line}");
    assert!(line.contains("oldest_topic=tracking"), "{line}");
    assert_eq!(scraped("tripwire_late_events_total"), 2.0);
    stop_job(&mut job);
}

/// `tripwire produce --shift-to-now` sends a generated recording as it is:
/// every line's value to its topic with its key, every time moved by the
/// same amount so that the first record is dated now.
#[test]
fn produce_sends_a_recording() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tansu = broker(dir.path());
    let brokers = tansu.brokers();
    let input = dir.path().join("traffic.jsonl");
    let res = Command::new(bin())
        .args(["generate", "--events", "2000", "--users", "100", "--output"])
        .arg(&input)
        .output()
        .expect("running tripwire generate");
    assert!(
        res.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let recorded: Vec<Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 2000);

    let before = now_ms();
    let res = Command::new(bin())
        .args(["produce", "--brokers", &brokers, "--input"])
        .arg(&input)
        .arg("--shift-to-now")
        .env("RUST_LOG", "info")
        .output()
        .expect("running tripwire produce");
    let after = now_ms();
    let log = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "produce failed:\n{log}");
    assert!(
        log.contains("produce done"),
        "no summary in the log:\n{log}"
    );

    let mut inputs = Reader::new(&brokers, &INPUT_TOPICS);
    assert!(
        inputs.read_at_least(recorded.len(), Duration::from_secs(30)),
        "only {} of {} records arrived",
        inputs.got.len(),
        recorded.len()
    );
    inputs.drain(Duration::from_secs(20));
    let got: Vec<(String, Option<String>, Value)> = inputs
        .got
        .iter()
        .map(|g| {
            (
                g.topic.clone(),
                g.key
                    .as_ref()
                    .map(|k| String::from_utf8(k.clone()).unwrap()),
                serde_json::from_slice(&g.payload).expect("payloads are JSON"),
            )
        })
        .collect();

    // Records per topic, and keys, as recorded.
    let per_topic = |topics: Vec<&str>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for t in topics {
            *m.entry(t.to_string()).or_default() += 1;
        }
        m
    };
    assert_eq!(
        per_topic(got.iter().map(|(t, _, _)| t.as_str()).collect()),
        per_topic(
            recorded
                .iter()
                .map(|l| l["topic"].as_str().unwrap())
                .collect()
        )
    );
    let mut keys_got: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|(t, k, _)| (t.as_str(), k.as_deref()))
        .collect();
    let mut keys_recorded: Vec<(&str, Option<&str>)> = recorded
        .iter()
        .map(|l| (l["topic"].as_str().unwrap(), l["key"].as_str()))
        .collect();
    keys_got.sort();
    keys_recorded.sort();
    assert_eq!(keys_got, keys_recorded, "keys are kept");

    // The first tracking record is dated now, and every other `ts` moved
    // by the same amount: the payloads are the recorded ones otherwise.
    let first = recorded
        .iter()
        .find(|l| l["topic"] == "tracking")
        .expect("a tracking record");
    let sent_first = got
        .iter()
        .find(|(t, _, v)| t == "tracking" && v["event_id"] == first["value"]["event_id"])
        .expect("the first tracking record arrived");
    let ts = sent_first.2["ts"].as_u64().expect("a ts");
    assert!(
        (before..=after).contains(&ts) && now_ms().abs_diff(ts) < 60_000,
        "the first tracking record is dated {ts}, not now ({before}..{after})"
    );
    let delta = ts - first["value"]["ts"].as_u64().unwrap();
    let mut payloads_got: Vec<String> = got
        .iter()
        .map(|(t, k, v)| {
            let mut v = v.clone();
            v["ts"] = (v["ts"].as_u64().unwrap() - delta).into();
            format!("{t} {k:?} {}", canon(&v))
        })
        .collect();
    let mut payloads_recorded: Vec<String> = recorded
        .iter()
        .map(|l| {
            format!(
                "{} {:?} {}",
                l["topic"].as_str().unwrap(),
                l["key"].as_str(),
                canon(&l["value"])
            )
        })
        .collect();
    payloads_got.sort();
    payloads_recorded.sort();
    assert!(
        payloads_got == payloads_recorded,
        "payloads differ beyond the time shift"
    );
}
