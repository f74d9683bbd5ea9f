//! The courier binary against a real Kafka-compatible broker (tansu) on
//! 127.0.0.1: profiles rebuilt from the topic, receipts on `deliveries`,
//! malformed records, metrics, a crash in the middle of a batch, repeated
//! SIGKILLs while triggers arrive, and a graceful shutdown that keeps
//! deferred messages.
//!
//! Needs the `tansu` binary (TANSU_BIN, PATH or ~/.cargo/bin); fails
//! clearly without it.

mod common;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tripwire_courier::model::{Receipt, Status};
use tripwire_courier::testkit::HttpSink;

async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in res {
        if let Err((name, e)) = r {
            panic!("cannot create topic {name}: {e}");
        }
    }
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

async fn produce(p: &FutureProducer, topic: &str, key: &str, payload: Option<&[u8]>) {
    let mut rec = FutureRecord::<str, [u8]>::to(topic).key(key);
    if let Some(b) = payload {
        rec = rec.payload(b);
    }
    p.send(rec, Duration::from_secs(10)).await.expect("produce");
}

/// Reads `deliveries` from the start until `done` holds (bounded).
async fn receipts_until(
    brokers: &str,
    timeout: Duration,
    done: impl Fn(&[Receipt]) -> bool,
) -> Vec<Receipt> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", rand_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["deliveries"]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for receipts; got {}: {:#?}",
            out.len(),
            out
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            let r: Receipt = serde_json::from_slice(m.payload().unwrap()).expect("receipt json");
            assert_eq!(
                m.key(),
                Some(r.user_id.as_bytes()),
                "receipt key is user_id"
            );
            out.push(r);
        }
    }
    out
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `quiet`: default quiet hours (22:00-09:00 UTC); else none, so that the
/// tests do not depend on the time of day.
fn courier_config(sink: &HttpSink, quiet: bool) -> String {
    let q = if quiet {
        ""
    } else {
        "quiet_hours_start = \"00:00\"\nquiet_hours_end = \"00:00\""
    };
    format!(
        r#"
[defaults]
{q}
default_timezone = "UTC"
control_share = 0.0
channels = ["push"]
max_age_ms = 31536000000

[engine]
batch_max_records = 1000
batch_max_wait_ms = 300
deferred_poll_ms = 200
shutdown_grace_ms = 3000
max_in_flight = 4

[retry]
initial_backoff_ms = 20
max_backoff_ms = 200

[channels.webhook]
url = "{hook}"
allow_http = true
secret = "k"
[channels.push]
endpoint = "{base}"
allow_http = true
project_id = "p"
access_token = "t"

[campaigns.cart]
[campaigns.cart.templates.en]
title = "{{{{ item.title }}}}"
body = "Back for {{{{ item.title }}}}?"

[campaigns.hook]
channels = ["webhook"]
[campaigns.hook.templates.en]
title = "t"
body = "b"
"#,
        hook = sink.url("/hook"),
        base = sink.url(""),
    )
}

/// A courier child process, killed on drop (a failing test leaves none).
struct Courier(Child);

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Courier {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Courier {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn start_courier(brokers: &str, dir: &Path, extra: &[&str], env: &[(&str, String)]) -> Courier {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("courier.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"));
    cmd.args(["--brokers", brokers])
        .arg("--config")
        .arg(dir.join("courier.toml"))
        .arg("--store")
        .arg(dir.join("store.redb"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if !extra.contains(&"--group-id") {
        cmd.args(["--group-id", "courier-test"]);
    }
    if !extra.contains(&"--metrics-addr") {
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Courier(cmd.spawn().expect("start tripwire-courier"))
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id() as i32;
    // SIGTERM, then wait (bounded).
    unsafe_kill(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tripwire-courier did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unsafe_kill(pid: i32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

async fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn trig(id: &str, campaign: &str, user: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    serde_json::to_vec(&trigger(id, campaign, user, now)).unwrap()
}

fn status_of<'a>(rs: &'a [Receipt], id: &str) -> Vec<&'a Receipt> {
    rs.iter().filter(|r| r.trigger_id == id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_kafka() {
    let broker = Broker::start();
    let b = broker.brokers();
    create_topics(&b, &[("triggers", 2), ("profiles", 1), ("deliveries", 1)]).await;
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("courier.toml"),
        courier_config(&sink, false),
    )
    .unwrap();
    let p = producer(&b);
    let profile = |u: &str, push: bool| {
        serde_json::to_vec(
            &json!({"user_id": u, "ts": 1, "push_tokens": [{"token": format!("tok-{u}")}],
            "consent": {"push": push}}),
        )
        .unwrap()
    };
    produce(&p, "profiles", "u1", Some(&profile("u1", false))).await;
    produce(&p, "profiles", "u1", Some(&profile("u1", true))).await; // latest wins
    produce(&p, "profiles", "u2", Some(&profile("u2", false))).await;
    // Keyed by u2 but naming u1: rejected, it must not replace u1's profile.
    let hijack = json!({"user_id": "u1", "ts": 2, "push_tokens": [{"token": "tok-hijack"}],
        "consent": {"push": true}});
    produce(
        &p,
        "profiles",
        "u2",
        Some(&serde_json::to_vec(&hijack).unwrap()),
    )
    .await;
    produce(&p, "profiles", "u3", Some(&profile("u3", true))).await;
    produce(&p, "profiles", "u3", None).await; // erased
    produce(&p, "profiles", "bad", Some(b"{not json")).await;
    produce(&p, "triggers", "u1", Some(&trig("t1", "cart", "u1"))).await;
    produce(&p, "triggers", "u2", Some(&trig("t2", "cart", "u2"))).await;
    produce(&p, "triggers", "u3", Some(&trig("t3", "cart", "u3"))).await;
    produce(&p, "triggers", "u4", Some(b"garbage")).await;
    produce(&p, "triggers", "u4", Some(&trig("t4", "hook", "u4"))).await;
    produce(&p, "triggers", "u1", Some(&trig("t1", "cart", "u1"))).await; // redelivery

    let started_s = unix_now_s();
    let mut child = start_courier(&b, dir.path(), &[], &[]);
    let rs = receipts_until(&b, Duration::from_secs(60), |rs| {
        rs.len() >= 6 && rs.iter().filter(|r| r.status == Status::Sent).count() >= 2
    })
    .await;
    let done_s = unix_now_s();
    let one = |id: &str| {
        let v = status_of(&rs, id);
        assert!(!v.is_empty(), "no receipt for {id}: {rs:#?}");
        v[0].clone()
    };
    // The redelivery's receipt may come before the send's.
    let t1 = status_of(&rs, "t1");
    assert_eq!(t1.len(), 2, "{t1:#?}");
    assert!(t1
        .iter()
        .any(|r| r.status == Status::Sent && r.channel.as_deref() == Some("push")));
    assert!(t1.iter().any(|r| r.reason.as_deref() == Some("duplicate")));
    assert_eq!(one("t2").reason.as_deref(), Some("no_consent"));
    assert_eq!(one("t3").reason.as_deref(), Some("no_consent"));
    assert_eq!(one("t4").status, Status::Sent);
    assert!(rs.iter().any(|r| r.status == Status::Failed
        && r.reason.as_deref() == Some("malformed")
        && r.user_id == "u4"));
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 2, "one push (one token) and one webhook");
    // The webhook, signed by the real binary on the system clock: verified
    // with the tests' own HMAC over "<t>.<idempotency key>.<body>", and `t`
    // lies within the run (a few seconds of now).
    let hook = accepted
        .iter()
        .find(|r| r.path == "/hook")
        .expect("webhook");
    assert_eq!(hook.headers["idempotency-key"], "t4");
    let sig = &hook.headers["tripwire-signature"];
    assert_signature_shape(sig);
    let t = verify_webhook(b"k", sig, "t4", &hook.body, done_s, 300).unwrap();
    assert!(
        (started_s..=done_s).contains(&t),
        "t={t} outside the run [{started_s}, {done_s}]"
    );
    assert!(accepted
        .iter()
        .any(|r| r.json()["message"]["token"] == "tok-u1"));
    assert!(
        accepted
            .iter()
            .all(|r| r.json()["message"]["token"] != "tok-hijack"),
        "a profile keyed by another user replaced u1's"
    );
    let status = terminate(&mut child);
    assert!(status.success(), "graceful exit, got {status:?}");
    let log = std::fs::read_to_string(dir.path().join("courier.log")).unwrap();
    assert!(
        log.contains("rebuilding"),
        "profile store rebuilt from the topic:\n{log}"
    );
    assert!(!log.contains("tok-u1"), "no push tokens in logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    let broker = Broker::start();
    let b = broker.brokers();
    create_topics(&b, &[("triggers", 1), ("profiles", 1), ("deliveries", 1)]).await;
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("courier.toml"),
        courier_config(&sink, false),
    )
    .unwrap();
    let p = producer(&b);
    produce(&p, "triggers", "u1", Some(&trig("m1", "hook", "u1"))).await;
    produce(&p, "triggers", "u1", Some(b"{}")).await;
    let port = free_port();
    let mut child = start_courier(
        &b,
        dir.path(),
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
        &[],
    );
    receipts_until(&b, Duration::from_secs(60), |rs| rs.len() >= 2).await;
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "tripwire_courier_trigger_decisions_total{campaign=\"hook\",channel=\"webhook\",reason=\"\",status=\"sent\"} 1",
        "tripwire_courier_malformed_records_total{topic=\"triggers\"} 1",
        "tripwire_courier_send_latency_seconds_bucket",
        "tripwire_courier_deferred_messages 0",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_batch_then_restart() {
    let broker = Broker::start();
    let b = broker.brokers();
    create_topics(&b, &[("triggers", 1), ("profiles", 1), ("deliveries", 1)]).await;
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    std::fs::write(
        dir.path().join("courier.toml"),
        courier_config(&sink, false),
    )
    .unwrap();
    let p = producer(&b);
    let n = 30;
    for i in 0..n {
        produce(
            &p,
            "triggers",
            &format!("u{i}"),
            Some(&trig(&format!("c{i}"), "hook", &format!("u{i}"))),
        )
        .await;
    }
    // Abort once 10 sends are recorded, before any offset commit.
    let mut child = start_courier(&b, dir.path(), &["--crash-after-sends", "10"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the crash hook did not fire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "the first run must crash");
    assert_eq!(sink.accepted().len(), 10, "10 sends before the crash");

    // tansu keeps a crashed member in its consumer group for longer than
    // this test may wait, so the restarted courier joins a fresh group.
    // Nothing was committed by the first run, so it gets exactly the
    // records the old group would redeliver: all of them.
    let mut child = start_courier(
        &b,
        dir.path(),
        &["--group-id", "courier-test-restarted"],
        &[],
    );
    wait_for("all sends after restart", Duration::from_secs(60), || {
        sink.accepted().len() >= n
    })
    .await;
    // Give a would-be duplicate the time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = sink.accepted();
    let keys: HashSet<_> = accepted
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(accepted.len(), n, "no trigger sent twice");
    assert_eq!(keys.len(), n, "none lost");
    // No offset was committed before the crash: every record comes again
    // and is recognised by the ledger.
    let rs = receipts_until(&b, Duration::from_secs(60), |rs| {
        rs.iter().filter(|r| r.status == Status::Sent).count() >= n
            && rs
                .iter()
                .filter(|r| r.reason.as_deref() == Some("duplicate"))
                .count()
                >= n
    })
    .await;
    assert_eq!(rs.iter().filter(|r| r.status == Status::Sent).count(), n);
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_keeps_deferred_messages() {
    let broker = Broker::start();
    let b = broker.brokers();
    create_topics(&b, &[("triggers", 1), ("profiles", 1), ("deliveries", 1)]).await;
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("courier.toml"), courier_config(&sink, true)).unwrap();
    let p = producer(&b);
    // 23:00 UTC: quiet hours until 09:00.
    let night = NOON_UTC + 11 * H;
    for i in 0..3 {
        let t = serde_json::to_vec(&trigger(&format!("n{i}"), "hook", &format!("u{i}"), night))
            .unwrap();
        produce(&p, "triggers", &format!("u{i}"), Some(&t)).await;
    }
    let env = [("TRIPWIRE_COURIER_FAKE_CLOCK_START_MS", night.to_string())];
    let mut child = start_courier(&b, dir.path(), &[], &env);
    let rs = receipts_until(&b, Duration::from_secs(60), |rs| rs.len() >= 3).await;
    assert!(rs
        .iter()
        .all(|r| r.status == Status::Deferred && r.until == Some(NOON_UTC + 21 * H)));
    assert!(terminate(&mut child).success());
    assert_eq!(sink.count(), 0);
    // Restart at 09:00: the deferred messages come out of the store.
    let env = [(
        "TRIPWIRE_COURIER_FAKE_CLOCK_START_MS",
        (NOON_UTC + 21 * H).to_string(),
    )];
    let mut child = start_courier(&b, dir.path(), &[], &env);
    wait_for("deferred sends", Duration::from_secs(60), || {
        sink.accepted().len() >= 3
    })
    .await;
    let rs = receipts_until(&b, Duration::from_secs(30), |rs| {
        rs.iter().filter(|r| r.status == Status::Sent).count() >= 3
    })
    .await;
    assert_eq!(rs.iter().filter(|r| r.status == Status::Sent).count(), 3);
    assert!(terminate(&mut child).success());
    assert_eq!(sink.accepted().len(), 3);
}

/// SIGKILLs `child` (no graceful stop, no crash hook) and reaps it; fails
/// when it had already exited on its own.
fn kill9(child: &mut Courier, log: &Path) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(s) = child.try_wait().unwrap() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("tripwire-courier exited on its own ({s:?}) before its kill:\n{log}");
    }
    child.kill().expect("SIGKILL tripwire-courier");
    let s = child.wait().unwrap();
    assert_eq!(s.signal(), Some(9), "killed by SIGKILL, got {s:?}");
}

/// Trigger ids of the sends the store has decided but not recorded as done.
fn outbox_ids(store: &Path) -> Vec<String> {
    let store = tripwire_courier::store::Store::open(store).expect("open the store after a kill");
    let pending: Vec<tripwire_courier::channels::OutboxEntry> = store.outbox().unwrap();
    pending.into_iter().map(|e| e.trigger.trigger_id).collect()
}

/// Requests per idempotency key received by the sink.
fn requests_per_key(sink: &HttpSink) -> HashMap<String, usize> {
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for r in sink.accepted() {
        *per_key
            .entry(r.headers["idempotency-key"].clone())
            .or_default() += 1;
    }
    per_key
}

/// Triggers arrive while the courier is SIGKILLed at pseudo-random points
/// (seeded; `TRIPWIRE_KILL_SEED` replays a run) and restarted on the same
/// store. Every trigger reaches the endpoint; a request is repeated only
/// for a send that was in the outbox (decided, not recorded as done) when
/// the courier was killed, and at most once per such kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_repeatedly_sends_each_once() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    const N: usize = 300;
    const KILLS: usize = 6;
    let seed: u64 = std::env::var("TRIPWIRE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_suffix);
    eprintln!("killed_repeatedly_sends_each_once: seed {seed} (replay: TRIPWIRE_KILL_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    let broker = Broker::start();
    let b = broker.brokers();
    create_topics(&b, &[("triggers", 2), ("profiles", 1), ("deliveries", 1)]).await;
    let sink = HttpSink::start(true).await.unwrap();
    // Each request takes 20 ms at the endpoint: sends are in flight for a
    // while, so that kills land among them. A request is recorded by the
    // sink (taken) even when the courier dies before the answer.
    sink.hang_next(u64::MAX, 20);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("courier.toml"),
        courier_config(&sink, false),
    )
    .unwrap();
    let store_path = dir.path().join("store.redb");
    let log_path = dir.path().join("courier.log");

    // Distinct users, so that no frequency cap or minimum gap applies.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ids: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
    let feed = {
        let p = producer(&b);
        let ids = ids.clone();
        tokio::spawn(async move {
            for (i, id) in ids.iter().enumerate() {
                let user = format!("ku{i}");
                let t = serde_json::to_vec(&trigger(id, "hook", &user, now + i as i64)).unwrap();
                produce(&p, "triggers", &user, Some(&t)).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    // Per trigger id: at how many kills it was in the outbox.
    let mut pending_at_kills: HashMap<String, usize> = HashMap::new();
    // Sends the endpoint had taken but the store had not recorded as done,
    // summed over the kills: the most requests that may be repeated.
    let mut unrecorded_at_kills = 0usize;
    for k in 0..KILLS {
        // tansu keeps a killed member in its group for long (see above): a
        // fresh group rereads `triggers` from the start, and the ledger
        // must recognise every trigger already decided.
        let group = format!("courier-killed-{k}");
        let started = Instant::now();
        let before = sink.count();
        let mut child = start_courier(&b, dir.path(), &["--group-id", &group], &[]);
        let how = if rng.gen_bool(0.25) {
            // Anywhere, start-up and outbox resumption included.
            let ms = rng.gen_range(50..1500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("{ms} ms after start")
        } else {
            // While sending: after this run's first request (waited for at
            // most 10 s, as the feed may be over), then a random delay.
            let deadline = Instant::now() + Duration::from_secs(10);
            while sink.count() == before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let ms = rng.gen_range(0..400);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!(
                "{ms} ms after its first request ({} ms after start)",
                started.elapsed().as_millis() - ms as u128
            )
        };
        kill9(&mut child, &log_path);
        drop(child);
        // Requests already written by the dead courier reach the sink.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let per_key = requests_per_key(&sink);
        let pending = outbox_ids(&store_path);
        let unrecorded = pending
            .iter()
            .filter(|id| per_key.contains_key(*id))
            .count();
        unrecorded_at_kills += unrecorded;
        for id in &pending {
            *pending_at_kills.entry(id.clone()).or_default() += 1;
        }
        eprintln!(
            "kill {}: {how}; endpoint has {} of {N} triggers ({} requests); outbox {} ({} of them already at the endpoint)",
            k + 1,
            per_key.len(),
            sink.count(),
            pending.len(),
            unrecorded,
        );
    }

    // A last run, left alone until every trigger is sent.
    let mut child = start_courier(&b, dir.path(), &["--group-id", "courier-killed-last"], &[]);
    tokio::time::timeout(Duration::from_secs(20), feed)
        .await
        .expect("the feed finishes")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests_per_key(&sink).len() < N {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let per_key = requests_per_key(&sink);
            let _ = child.kill();
            let _ = child.wait();
            // Where the store says the missing triggers are.
            let store = tripwire_courier::store::Store::open(&store_path).unwrap();
            let r = store.reader().unwrap();
            let missing: Vec<_> = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !per_key.contains_key(*id))
                .map(|(i, id)| (id, r.ledger(id, now + i as i64).unwrap()))
                .collect();
            let outbox = store.outbox::<serde_json::Value>().unwrap().len();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "lost triggers: {} of {N} never reached the endpoint (id, ledger state): \
                 {missing:?}; outbox {outbox}\n{log}",
                missing.len(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a would-be late duplicate the time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(terminate(&mut child).success(), "graceful exit");

    let accepted = sink.accepted();
    let per_key = requests_per_key(&sink);
    let duplicates = accepted.len() - per_key.len();
    eprintln!(
        "killed_repeatedly_sends_each_once: seed {seed}, kills {KILLS}, triggers {N}, \
         requests {}, distinct keys {}, duplicate requests {duplicates}, \
         sends taken but unrecorded at the kills {unrecorded_at_kills}, {:.1} s",
        accepted.len(),
        per_key.len(),
        t0.elapsed().as_secs_f64()
    );
    // None lost, nothing foreign.
    let expected: HashSet<&String> = ids.iter().collect();
    let got: HashSet<&String> = per_key.keys().collect();
    assert_eq!(got, expected, "every trigger reached the endpoint");
    // A repeat only for a send in the outbox at a kill, once per kill.
    for (id, n) in &per_key {
        let allowed = pending_at_kills.get(id).copied().unwrap_or(0);
        assert!(
            n - 1 <= allowed,
            "{id} was sent {n} times but was in the outbox at {allowed} kill(s)"
        );
    }
    assert!(
        duplicates <= unrecorded_at_kills,
        "{duplicates} repeated requests, {unrecorded_at_kills} sends taken but unrecorded at the kills"
    );

    // A `sent` receipt for every trigger (repeated sends repeat it), no
    // failure.
    let sent_ids = |rs: &[Receipt]| -> HashSet<String> {
        rs.iter()
            .filter(|r| r.status == Status::Sent)
            .map(|r| r.trigger_id.clone())
            .collect()
    };
    let rs = receipts_until(&b, Duration::from_secs(30), |rs| sent_ids(rs).len() >= N).await;
    assert_eq!(sent_ids(&rs).len(), N);
    assert!(
        !rs.iter().any(|r| r.status == Status::Failed),
        "no failed receipt"
    );

    // The store agrees: every trigger recorded as sent, nothing pending.
    let store = tripwire_courier::store::Store::open(&store_path).unwrap();
    assert!(store.outbox::<serde_json::Value>().unwrap().is_empty());
    let r = store.reader().unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            r.ledger(id, now + i as i64).unwrap(),
            Some(tripwire_courier::store::LedgerStatus::Sent),
            "ledger state of {id}"
        );
    }
}
