//! Cluster mode (`tripwire run --processes N`, timely's multi-process mode)
//! against a real broker (tansu on 127.0.0.1).
//!
//! Records that cross a process boundary are serialised with bincode (within
//! a process they are not), so a type whose serde form does not round-trip
//! through bincode breaks only a cluster (issue 13). Here two processes of
//! one worker each must write exactly the trigger records of one process of
//! two workers and of `tripwire replay`, byte for byte; and a process that
//! dies takes the whole job down.
//!
//! Needs the `tansu` binary (see `tests/support`).

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{
    assert_same_records, await_stopped, create_topics, free_port, in_time_order, load_recording,
    metric_sum, now_ms, produce, replay_lines, scrape, stop_job, tripwire_bin, Proc, Reader, Tansu,
};

/// One test at a time: each runs a broker and three job processes.
static SERIAL: Mutex<()> = Mutex::new(());

/// Fixtures that together fire every kind (and carry identities, consents,
/// forgets, duplicates and bad records).
const FIXTURES: [&str; 16] = [
    "abandoned_cart",
    "abandoned_browse",
    "price_drop",
    "back_in_stock",
    "abandoned_search",
    "abandoned_category",
    "wishlist_reminder",
    "complementary",
    "new_in_category",
    "reactivation",
    "review_request",
    "cancelled_alternative",
    "identity",
    "consent_forget",
    "forget_erasure",
    "duplicates_bad",
];

const INPUT_TOPICS: [&str; 4] = ["tracking", "prices", "stock", "catalog"];

/// Partitions of every input topic: at least the total number of workers.
const INPUT_PARTITIONS: i32 = 4;

fn fixtures() -> Vec<PathBuf> {
    FIXTURES
        .iter()
        .map(|k| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(format!("{k}.jsonl"))
        })
        .collect()
}

/// A broker with the input topics, the given trigger topics and the
/// dead-letter topic, fed the fixtures in event-time order; returns the
/// broker and the number of records produced.
fn broker_with_fixtures(dir: &Path, trigger_topics: &[&str]) -> (Tansu, usize) {
    let tansu = Tansu::start(dir);
    let mut topics: Vec<(&str, i32)> = INPUT_TOPICS
        .iter()
        .map(|t| (*t, INPUT_PARTITIONS))
        .collect();
    topics.extend(trigger_topics.iter().map(|t| (*t, 2)));
    topics.push(("tripwire.dlq", 1));
    create_topics(&tansu.brokers(), &topics);
    let mut recs = Vec::new();
    for f in fixtures() {
        recs.extend(load_recording(&f));
    }
    // Not the record to a topic the job does not read (`duplicates_bad`):
    // the broker does not have it, and it would hold the producer up.
    recs.retain(|(r, _)| INPUT_TOPICS.contains(&r.topic.as_str()));
    let n = recs.len();
    produce(&tansu.brokers(), &in_time_order(recs));
    (tansu, n)
}

/// A configuration that runs every kind with its defaults and writes the
/// triggers to `triggers`.
fn config(dir: &Path, triggers: &str) -> PathBuf {
    let path = dir.join(format!("{triggers}.toml"));
    std::fs::write(
        &path,
        format!("[time]\nwatermark_poll_ms = 200\n\n[topics]\ntriggers = \"{triggers}\"\n"),
    )
    .unwrap();
    path
}

/// A hostfile for `n` processes on free 127.0.0.1 ports.
fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("hosts");
    let mut text = String::from("# one host:port per process, in process order\n");
    for _ in 0..n {
        text.push_str(&format!("127.0.0.1:{}\n", free_port()));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// `tripwire run` from the earliest offsets without recovery; a member of
/// a cluster when `cluster` is `(processes, process, hostfile)`.
fn start_job(
    brokers: &str,
    config: &Path,
    workers: usize,
    cluster: Option<(usize, usize, &Path)>,
    metrics_port: u16,
    log: PathBuf,
) -> Proc {
    let mut cmd = Command::new(tripwire_bin());
    cmd.args(["run", "--brokers", brokers, "--start", "earliest"])
        .args(["--workers", &workers.to_string(), "--no-recovery"])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info");
    if let Some((processes, process, hostfile)) = cluster {
        cmd.args(["--processes", &processes.to_string()])
            .args(["--process", &process.to_string()])
            .arg("--hostfile")
            .arg(hostfile);
    }
    Proc::spawn(cmd, log)
}

/// Reads until every reader holds at least `n` records; fails early, with
/// its log, when a job process dies.
fn await_records(readers: &mut [&mut Reader], n: usize, jobs: &mut [&mut Proc]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for job in jobs.iter_mut() {
            assert!(
                job.running(),
                "a job process died ({}):\n{}\n...\n{}",
                job.log.display(),
                panics(&job.log),
                job.log_tail(10)
            );
        }
        if readers.iter().all(|r| r.got.len() >= n) {
            return;
        }
        let counts: Vec<usize> = readers.iter().map(|r| r.got.len()).collect();
        assert!(
            Instant::now() < deadline,
            "only {counts:?} of {n} triggers within 60 s; logs:\n{}",
            jobs.iter()
                .map(|j| format!("{}:\n{}", j.log.display(), j.log_tail(15)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        for r in readers.iter_mut() {
            r.read_at_least(n, Duration::from_millis(200));
        }
    }
}

/// The panic messages in a log (each `panicked at` line and the next).
fn panics(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            out.extend(lines[i..(i + 2).min(lines.len())].iter().copied());
        }
    }
    out.join("\n")
}

/// The payloads read, as text, sorted.
fn sorted_payloads(reader: &Reader) -> Vec<String> {
    let mut v: Vec<String> = reader
        .got
        .iter()
        .map(|g| String::from_utf8(g.payload.clone()).expect("a trigger record is UTF-8"))
        .collect();
    v.sort();
    v
}

/// 2 processes x 1 worker write the same trigger records, byte for byte, as
/// 1 process x 2 workers and as `tripwire replay` (closed at test start
/// now, as in `kafka_live.rs`); the input partitions are read once, split
/// over both processes; and SIGTERM to one process stops both, cleanly.
#[test]
fn two_processes_write_what_one_process_writes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (tansu, produced) = broker_with_fixtures(dir, &["triggers_cluster", "triggers_single"]);
    let brokers = tansu.brokers();
    eprintln!("{:?}: broker up, {produced} records produced", t0.elapsed());

    let inputs = fixtures();
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let mut expected = replay_lines(&inputs, Some(now_ms()), None, 1, &dir.join("replay.jsonl"));
    expected.sort();
    assert!(expected.len() > 400, "replay gave {}", expected.len());

    let hosts = hostfile(dir, 2);
    let cluster_config = config(dir, "triggers_cluster");
    let ports = [free_port(), free_port(), free_port()];
    let mut p0 = start_job(
        &brokers,
        &cluster_config,
        1,
        Some((2, 0, &hosts)),
        ports[0],
        dir.join("process-0.log"),
    );
    let mut p1 = start_job(
        &brokers,
        &cluster_config,
        1,
        Some((2, 1, &hosts)),
        ports[1],
        dir.join("process-1.log"),
    );
    let mut single = start_job(
        &brokers,
        &config(dir, "triggers_single"),
        2,
        None,
        ports[2],
        dir.join("single.log"),
    );
    let mut from_cluster = Reader::new(&brokers, &["triggers_cluster"]);
    let mut from_single = Reader::new(&brokers, &["triggers_single"]);
    await_records(
        &mut [&mut from_cluster, &mut from_single],
        expected.len(),
        &mut [&mut p0, &mut p1, &mut single],
    );
    eprintln!("{:?}: every trigger arrived", t0.elapsed());
    // Let any extra (wrong) trigger arrive before comparing.
    std::thread::sleep(Duration::from_secs(2));

    // Each process read its own share of the partitions, and together all.
    let read = |port: u16| {
        let text = scrape(port).expect("metrics endpoint answers");
        metric_sum(&text, "tripwire_input_records_total")
    };
    let (read0, read1) = (read(ports[0]), read(ports[1]));
    assert!(
        read0 > 0.0 && read1 > 0.0,
        "each process reads: {read0}, {read1}"
    );
    assert_eq!(read0 + read1, produced as f64, "every record read once");
    assert_eq!(read(ports[2]), produced as f64);

    // SIGTERM to one process stops the whole job, cleanly.
    p1.terminate();
    await_stopped(&mut p1);
    await_stopped(&mut p0);
    stop_job(&mut single);
    eprintln!("{:?}: every job stopped", t0.elapsed());

    from_cluster.drain(Duration::from_secs(10));
    from_single.drain(Duration::from_secs(10));
    assert_same_records(
        "1 process x 2 workers",
        &sorted_payloads(&from_single),
        &expected,
        "",
    );
    assert_same_records(
        "2 processes x 1 worker",
        &sorted_payloads(&from_cluster),
        &expected,
        "",
    );
}

/// A process that dies stops the other: the job stops as a whole (no
/// process goes on with a share of the partitions unread).
#[test]
fn a_dead_process_stops_the_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (tansu, _) = broker_with_fixtures(dir, &["triggers"]);
    let brokers = tansu.brokers();
    let hosts = hostfile(dir, 2);
    let cfg = config(dir, "triggers");
    let mut p0 = start_job(
        &brokers,
        &cfg,
        1,
        Some((2, 0, &hosts)),
        free_port(),
        dir.join("process-0.log"),
    );
    let mut p1 = start_job(
        &brokers,
        &cfg,
        1,
        Some((2, 1, &hosts)),
        free_port(),
        dir.join("process-1.log"),
    );
    // Running as a cluster: triggers arrive.
    let mut triggers = Reader::new(&brokers, &["triggers"]);
    await_records(&mut [&mut triggers], 1, &mut [&mut p0, &mut p1]);

    p1.child.kill().expect("killing process 1");
    let _ = p1.child.wait();
    let status = p0.wait(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "process 0 still runs 30 s after process 1 died:\n{}",
            p0.log_tail(30)
        )
    });
    assert!(
        !status.success(),
        "process 0 exits with an error when its peer dies, got {status}:\n{}",
        p0.log_tail(30)
    );
}
