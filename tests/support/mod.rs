//! Test support for the Kafka tests: a tansu broker as a child process,
//! topic creation, a producer and readers, and child-process helpers. Every
//! wait is bounded; everything talks to 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The tansu binary: `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
fn tansu_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tansu");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".cargo/bin/tansu");
    p.is_file().then_some(p)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A tansu broker on a free 127.0.0.1 port (in-memory storage, or the one
/// given); killed on drop.
pub struct Tansu {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: PathBuf,
    storage: String,
}

impl Tansu {
    /// Starts tansu with in-memory storage and waits until it accepts
    /// connections; panics (fails the test) if it is not installed or does
    /// not come up.
    pub fn start(dir: &Path) -> Tansu {
        Tansu::start_with(dir, "memory://tansu/")
    }

    /// [`Tansu::start`] with a storage engine URL (`sqlite://FILE.db`, a
    /// path relative to `dir`, keeps the topics across [`Tansu::restart`]).
    pub fn start_with(dir: &Path, storage: &str) -> Tansu {
        let mut last_err = String::new();
        for attempt in 0..3 {
            match Tansu::spawn(dir, storage, free_port()) {
                Ok(t) => return t,
                Err(e) => last_err = format!("{e} (attempt {attempt})"),
            }
        }
        panic!("{last_err}");
    }

    fn spawn(dir: &Path, storage: &str, port: u16) -> Result<Tansu, String> {
        let bin = tansu_bin().unwrap_or_else(|| {
            panic!(
                "the tansu broker is needed for the Kafka tests: set TANSU_BIN, put `tansu` on PATH, \
                 or run `cargo install tansu --locked --features dynostore,libsql`"
            )
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let log = dir.join(format!(
            "tansu-{port}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ));
        let out = std::fs::File::create(&log).expect("creating the tansu log");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(dir)
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("cloning a file handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut t = Tansu {
            child,
            port,
            log,
            dir: dir.to_path_buf(),
            storage: storage.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = t.child.try_wait() {
                return Err(format!("tansu exited with {status}:\n{}", tail(&t.log, 20)));
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(t);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "tansu did not accept connections on {port} within 15 s:\n{}",
            tail(&t.log, 20)
        ))
    }

    /// Stops the broker (SIGKILL).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Tansu::spawn(&self.dir.clone(), &self.storage.clone(), self.port) {
                Ok(t) => {
                    // The old child has exited: dropping it only reaps it.
                    drop(std::mem::replace(self, t));
                    return;
                }
                Err(e) => {
                    // The port may take a moment to be free again.
                    assert!(Instant::now() < deadline, "restarting tansu: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// The bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates topics (name, partitions) and waits until their metadata shows up.
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("creating an admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                admin.create_topics(new.iter(), &opts),
            )
            .await
        })
        .expect("creating topics timed out")
        .expect("creating topics");
    for r in results {
        r.unwrap_or_else(|(name, e)| panic!("creating topic {name}: {e}"));
    }
    let consumer = consumer(brokers);
    for (name, n) in topics {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5));
            if let Ok(md) = md {
                if md
                    .topics()
                    .first()
                    .is_some_and(|t| t.error().is_none() && t.partitions().len() == *n as usize)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "topic {name} did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One record to produce.
pub struct Rec {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// The `tripwire` binary under test.
pub fn tripwire_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tripwire")
}

/// Wall-clock now, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A recording's lines as records to produce, with their event time; a line
/// that is not JSON goes to `tracking` as raw bytes, without a key.
pub fn load_recording(path: &Path) -> Vec<(Rec, Option<u64>)> {
    use serde_json::Value;
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let ts = v["value"]["ts"].as_u64();
                let rec = Rec {
                    topic: v["topic"].as_str().expect("a topic").to_string(),
                    key: v["key"].as_str().map(str::to_string),
                    payload: serde_json::to_vec(&v["value"]).unwrap(),
                };
                (rec, ts)
            }
            Err(_) => (
                Rec {
                    topic: "tracking".into(),
                    key: None,
                    payload: line.as_bytes().to_vec(),
                },
                None,
            ),
        })
        .collect()
}

/// Records in event-time order (records without a time first), so that each
/// partition is in event-time order as a live stream is: then no record is
/// late and the live result must equal the replay.
pub fn in_time_order(mut recs: Vec<(Rec, Option<u64>)>) -> Vec<Rec> {
    recs.sort_by_key(|(_, ts)| *ts);
    recs.into_iter().map(|(r, _)| r).collect()
}

/// `tripwire replay` of `inputs` with `workers` threads (closed at `until`
/// when given; the default configuration unless `config`), written to
/// `out`: the trigger lines as written.
pub fn replay_lines(
    inputs: &[&Path],
    until: Option<u64>,
    config: Option<&Path>,
    workers: usize,
    out: &Path,
) -> Vec<String> {
    let mut cmd = Command::new(tripwire_bin());
    cmd.arg("replay")
        .arg("--input")
        .args(inputs)
        .arg("--output")
        .arg(out)
        .args(["--workers", &workers.to_string()]);
    if let Some(u) = until {
        cmd.args(["--until", &u.to_string()]);
    }
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let res = cmd.output().expect("running tripwire replay");
    assert!(
        res.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Produces `recs` in order (partition chosen by librdkafka from the key)
/// and waits for every delivery.
/// Sends `rec`, serving delivery reports for `backoff` and trying again
/// while the producer's queue is full.
pub fn send_retrying<K, P, C>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, K, P>,
    backoff: Duration,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: rdkafka::producer::ProducerContext<DeliveryOpaque = ()>,
{
    loop {
        match producer.send(rec) {
            Ok(()) => break,
            Err((_, back)) => {
                rec = back;
                producer.poll(backoff);
            }
        }
    }
    producer.poll(Duration::ZERO);
}

pub fn produce(brokers: &str, recs: &[Rec]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("creating a producer");
    for r in recs {
        let mut rec = BaseRecord::to(&r.topic).payload(&r.payload);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        send_retrying(&producer, rec, Duration::from_millis(20));
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flushing the test producer");
}

fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tripwire-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("creating a consumer")
}

/// One consumed record.
#[derive(Clone, Debug)]
pub struct Got {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Reads topics from the beginning.
pub struct Reader {
    consumer: BaseConsumer,
    topics: Vec<String>,
    pub got: Vec<Got>,
}

impl Reader {
    pub fn new(brokers: &str, topics: &[&str]) -> Reader {
        let consumer = consumer(brokers);
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            let md = consumer
                .fetch_metadata(Some(t), Duration::from_secs(10))
                .expect("metadata");
            for p in md.topics()[0].partitions() {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        Reader {
            consumer,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            got: Vec::new(),
        }
    }

    fn poll_once(&mut self, timeout: Duration) -> bool {
        match self.consumer.poll(timeout) {
            Some(Ok(m)) => {
                self.got.push(Got {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
                true
            }
            Some(Err(e)) => panic!("consuming: {e}"),
            None => false,
        }
    }

    /// Reads until at least `n` records were read or `timeout` passed;
    /// returns whether `n` were reached.
    pub fn read_at_least(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.got.len() < n && Instant::now() < deadline {
            self.poll_once(Duration::from_millis(100));
        }
        self.got.len() >= n
    }

    /// Reads everything up to the high-water marks of the consumer's fetch
    /// responses (bounded by `timeout`). Not ListOffsets: tansu answers it
    /// with a too-low offset when the last record batch holds several records.
    pub fn drain(&mut self, timeout: Duration) {
        let mut parts: Vec<(String, i32)> = Vec::new();
        for t in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(t), Duration::from_secs(10))
                .expect("metadata");
            parts.extend(
                md.topics()[0]
                    .partitions()
                    .iter()
                    .map(|p| (t.clone(), p.id())),
            );
        }
        let deadline = Instant::now() + timeout;
        loop {
            let done = parts.iter().all(|(t, p)| {
                match tripwire::kafka::cached_high(&self.consumer, t, *p) {
                    None => false,
                    Some(0) => true,
                    Some(high) => self
                        .got
                        .iter()
                        .any(|g| &g.topic == t && g.partition == *p && g.offset + 1 >= high),
                }
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "draining {:?} timed out",
                self.topics
            );
            self.poll_once(Duration::from_millis(100));
        }
    }
}

/// A child process killed on drop (if still running).
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("creating a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning a child process");
        Proc { child, log }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    /// Waits until the process's log holds `text`; panics (with the log's
    /// tail) when the process dies first or `timeout` passes.
    pub fn await_log(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(text)
        {
            assert!(self.running(), "the process died:\n{}", self.log_tail(30));
            assert!(
                Instant::now() < deadline,
                "no `{text}` in the log within {timeout:?}:\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops a `tripwire run` with SIGTERM and checks it exits 0 with its
/// shutdown summary (with `TRIPWIRE_TEST_SHOW_LOGS` set, prints its log).
pub fn stop_job(job: &mut Proc) {
    assert!(job.running(), "the job died:\n{}", job.log_tail(30));
    job.terminate();
    await_stopped(job);
}

/// Waits (30 s at most) for a `tripwire run` sent SIGTERM to exit, and
/// checks it exits 0 with its shutdown summary.
pub fn await_stopped(job: &mut Proc) {
    let status = job.wait(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the job did not stop within 30 s of SIGTERM:\n{}",
            job.log_tail(30)
        )
    });
    if std::env::var_os("TRIPWIRE_TEST_SHOW_LOGS").is_some() {
        eprintln!("job log:\n{}", job.log_tail(200));
    }
    assert!(
        status.success(),
        "the job exited with {status}:\n{}",
        job.log_tail(30)
    );
    assert!(
        std::fs::read_to_string(&job.log)
            .unwrap()
            .contains("live job stopped"),
        "no shutdown summary in the log:\n{}",
        job.log_tail(30)
    );
}

/// `GET /metrics` from 127.0.0.1:`port`; the body, or `None` if it cannot be reached.
pub fn scrape(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The sum of every sample of metric `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asserts two sorted lists of trigger records are equal; if not, panics
/// with the counts, the first few missing and extra records and `context`
/// (e.g. a job's log tail).
pub fn assert_same_records(what: &str, got: &[String], expected: &[String], context: &str) {
    if got == expected {
        return;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| got.binary_search(e).is_err())
        .take(5)
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| expected.binary_search(l).is_err())
        .take(5)
        .collect();
    panic!(
        "{what} gave {} triggers, expected {}\nmissing (first 5): {missing:#?}\nextra (first 5): {extra:#?}\n{context}",
        got.len(),
        expected.len()
    );
}
