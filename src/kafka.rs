//! Kafka transport shared by the live job (`tripwire run`) and the topic
//! recorder (`tripwire record`): client construction, static partition
//! assignment, start-offset resolution, per-partition watermarks, the trigger
//! and dead-letter producers, and stopping on SIGINT/SIGTERM.
//!
//! Nothing here knows the dataflow: the live job (`live.rs`) glues this to
//! the worker runtime (`runtime::Job`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka_props::ResolvedProperties;
use crate::telemetry::ProduceFailed;

/// How long metadata and offset look-ups may take before they count as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Wall-clock now, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where to start reading each partition (`--start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The partition's low-water mark (everything retained).
    Earliest,
    /// The partition's high-water mark at start-up (only new records).
    Latest,
    /// The first record whose Kafka timestamp is at or after this time (ms),
    /// via ListOffsets by timestamp (`offsets_for_times`). Works on Apache
    /// Kafka; tansu does not support it.
    Time(i64),
}

impl FromStr for StartAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            ms => ms
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .map(StartAt::Time)
                .ok_or_else(|| {
                    format!("`{s}`: expected `earliest`, `latest` or a time in ms since the epoch")
                }),
        }
    }
}

/// Client context: librdkafka's logs and errors go to `tracing`, failed
/// deliveries are counted and reported.
#[derive(Default)]
pub struct Ctx {
    /// Messages the producer could not deliver.
    pub delivery_failures: AtomicU64,
    /// Per topic and partition: one past the highest offset delivered.
    pub delivered: std::sync::Mutex<HashMap<String, HashMap<i32, i64>>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(msg) = result {
            let mut d = self.delivered.lock().expect("delivered lock");
            let by_partition = match d.get_mut(msg.topic()) {
                Some(m) => m,
                None => d.entry(msg.topic().to_string()).or_default(),
            };
            let e = by_partition.entry(msg.partition()).or_insert(0);
            *e = (*e).max(msg.offset() + 1);
        }
        if let Err((error, msg)) = result {
            self.delivery_failures.fetch_add(1, Ordering::Relaxed);
            ProduceFailed {
                topic: msg.topic(),
                error: &error.to_string(),
            }
            .emit();
        }
    }
}

/// The `[kafka]` properties every client of this process gets (set once at
/// start, from the configuration).
static PROPERTIES: std::sync::OnceLock<ResolvedProperties> = std::sync::OnceLock::new();

/// Gives every Kafka client this process creates from now on the `[kafka]`
/// properties (a second call is ignored).
pub fn use_properties(p: ResolvedProperties) {
    let _ = PROPERTIES.set(p);
}

/// A client configuration for `brokers` with the `[kafka]` properties
/// applied on top of `own` (the table wins where both set a property).
fn client(brokers: &str, own: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", "tripwire");
    for (k, v) in own {
        c.set(*k, *v);
    }
    if let Some(p) = PROPERTIES.get() {
        p.apply(&mut c);
    }
    c
}

/// A consumer that is only ever assigned partitions explicitly: no group
/// membership, no offset commits (see the recovery model in `live.rs`).
pub fn consumer(brokers: &str, group_id: &str) -> anyhow::Result<BaseConsumer<Ctx>> {
    client(brokers, &[])
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Where to go if an assigned offset is out of range (e.g. deleted by retention).
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(Ctx::default())
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))
}

/// An idempotent producer (acks=all, no duplicates from internal retries)
/// that never gives a record up (`message.timeout.ms` 0: while the broker
/// is away, records wait) and holds at most 64 MiB: once that is queued,
/// [`Output::send`] waits, so the job stops reading instead of buffering
/// without bound.
pub fn producer(brokers: &str) -> anyhow::Result<BaseProducer<Ctx>> {
    client(
        brokers,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "0"),
            ("queue.buffering.max.kbytes", "65536"),
            ("linger.ms", "5"),
        ],
    )
    .create_with_context(Ctx::default())
    .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// A group id unique to this job instance (no offsets are committed under it;
/// it only keeps instances apart).
pub fn unique_group_id(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_ms())
}

/// One partition to read, with its concrete start offset.
#[derive(Clone, Debug)]
pub struct PartitionStart {
    pub topic: String,
    pub partition: i32,
    /// First offset to read.
    pub offset: i64,
}

/// The high-water mark of `topic`/`partition` as of the consumer's latest
/// fetch response for it (librdkafka's cache, no round trip); `None` before
/// the first fetch response.
///
/// Used instead of ListOffsets (`fetch_watermarks`) to tell whether a
/// partition is caught up: tansu answers ListOffsets(latest) with the first
/// offset of the partition's last record batch plus one, which is too low
/// whenever that batch holds several records, while the high-water mark in
/// its fetch responses is right.
pub fn cached_high<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, `topic` is
    // a NUL-terminated string that outlives the call, and librdkafka only
    // writes the two out-parameters, which point to live locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// The partitions of `topics`, per the broker's metadata. A topic that does
/// not exist is skipped with a warning (the job does not pick it up later).
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
) -> anyhow::Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
            .with_context(|| format!("reading metadata of topic `{topic}`"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            tracing::warn!(topic, "topic not found; not reading it");
            continue;
        };
        if let Some(err) = t.error() {
            tracing::warn!(topic, error = ?RDKafkaErrorCode::from(err), "topic not available; not reading it");
            continue;
        }
        let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        if ps.is_empty() {
            tracing::warn!(topic, "topic has no partitions; not reading it");
        }
        ps.sort_unstable();
        out.extend(ps.into_iter().map(|p| (topic.clone(), p)));
    }
    Ok(out)
}

/// The topics of `names` that do not exist (or are not available) on the
/// broker, per its metadata.
pub fn missing_topics<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    names: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    for &topic in names {
        let md = consumer
            .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
            .with_context(|| format!("reading metadata of topic `{topic}`"))?;
        let present = md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !present {
            missing.push(topic.to_string());
        }
    }
    Ok(missing)
}

/// Creates `topics` with `partitions` partitions each and the broker's
/// default replication, then waits until the broker's metadata shows them.
pub fn create_topics<C: ConsumerContext>(
    brokers: &str,
    probe: &BaseConsumer<C>,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client(brokers, &[])
        .create()
        .with_context(|| format!("creating a Kafka admin client for {brokers}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the admin client's runtime")?;
    let opts = AdminOptions::new().operation_timeout(Some(LOOKUP_TIMEOUT));
    let results = rt
        .block_on(async {
            tokio::time::timeout(2 * LOOKUP_TIMEOUT, admin.create_topics(new.iter(), &opts)).await
        })
        .map_err(|_| anyhow!("creating topics {} timed out", topics.join(", ")))?
        .with_context(|| format!("creating topics {}", topics.join(", ")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => bail!("creating topic `{name}`: {e}"),
        }
    }
    let deadline = std::time::Instant::now() + 2 * LOOKUP_TIMEOUT;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    while !missing_topics(probe, &names)?.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!(
                "created topics {} do not appear in the broker's metadata",
                topics.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Resolves `start` to a concrete offset for each partition (ListOffsets;
/// on tansu `latest` lands at the start of the last record batch, so a few
/// records may be read again).
pub fn resolve_starts<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[(String, i32)],
    start: StartAt,
) -> anyhow::Result<Vec<PartitionStart>> {
    let mut out = Vec::with_capacity(parts.len());
    let mut by_time = TopicPartitionList::new();
    for (topic, p) in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, LOOKUP_TIMEOUT)
            .with_context(|| format!("reading the watermarks of {topic}/{p}"))?;
        let offset = match start {
            StartAt::Earliest => low,
            StartAt::Latest | StartAt::Time(_) => high,
        };
        if let StartAt::Time(t) = start {
            by_time.add_partition_offset(topic, *p, Offset::Offset(t))?;
        }
        out.push(PartitionStart {
            topic: topic.clone(),
            partition: *p,
            offset,
        });
    }
    if let StartAt::Time(t) = start {
        if !out.is_empty() {
            let found = consumer
                .offsets_for_times(by_time, LOOKUP_TIMEOUT)
                .with_context(|| format!("looking up offsets for time {t} (ListOffsets by timestamp; tansu does not support it)"))?;
            for s in &mut out {
                let e = found.find_partition(&s.topic, s.partition).ok_or_else(|| {
                    anyhow!("no offset for time {t} in {}/{}", s.topic, s.partition)
                })?;
                if let Err(e) = e.error() {
                    bail!(
                        "looking up offsets for time {t} in {}/{}: {e}",
                        s.topic,
                        s.partition
                    );
                }
                // No record at or after `t`: start at the end (already so).
                if let Offset::Offset(o) = e.offset() {
                    s.offset = o;
                }
            }
        }
    }
    Ok(out)
}

/// Assigns `parts` to `consumer` at their start offsets.
pub fn assign<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    parts: &[PartitionStart],
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for s in parts {
        tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.offset))?;
    }
    consumer.assign(&tpl).context("assigning partitions")
}

/// The static share of worker `index` of `peers`: partition `p` of every
/// topic goes to worker `p % peers`.
pub fn share(parts: &[PartitionStart], index: usize, peers: usize) -> Vec<PartitionStart> {
    parts
        .iter()
        .filter(|s| s.partition as usize % peers == index)
        .cloned()
        .collect()
}

/// Read progress of one partition.
#[derive(Clone, Debug)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read.
    pub next: i64,
    /// The latest known high-water mark (`None` until the first fetch response).
    pub high: Option<i64>,
    /// The largest event time read from it.
    pub max_ts: Option<u64>,
}

impl PartitionProgress {
    /// Whether everything up to the latest known high-water mark was read.
    pub fn caught_up(&self) -> bool {
        self.high.is_some_and(|h| self.next >= h)
    }

    /// The partition's watermark (triggers.md, *Time*): the largest `ts`
    /// read minus the lateness; a caught-up partition holds nothing back
    /// beyond wall-clock now minus the lateness; a partition that has not
    /// delivered anything yet and is behind holds everything back.
    pub fn watermark(&self, now_ms: u64, lateness_ms: u64) -> u64 {
        let read = self.max_ts.unwrap_or(0);
        let t = if self.caught_up() {
            read.max(now_ms)
        } else {
            read
        };
        t.saturating_sub(lateness_ms)
    }
}

/// Read progress of the partitions one consumer reads.
#[derive(Debug, Default)]
pub struct Progress {
    parts: Vec<PartitionProgress>,
    index: HashMap<String, HashMap<i32, usize>>,
}

impl Progress {
    pub fn new(parts: &[PartitionStart]) -> Self {
        let mut p = Progress::default();
        for s in parts {
            let i = p.parts.len();
            p.parts.push(PartitionProgress {
                topic: s.topic.clone(),
                partition: s.partition,
                next: s.offset,
                high: None,
                max_ts: None,
            });
            p.index
                .entry(s.topic.clone())
                .or_default()
                .insert(s.partition, i);
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn parts(&self) -> &[PartitionProgress] {
        &self.parts
    }

    /// The progress of `topic`/`partition`, if this consumer reads it.
    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionProgress> {
        let i = *self.index.get(topic)?.get(&partition)?;
        Some(&mut self.parts[i])
    }

    /// Notes that the record at `offset` was read (and its event time, if any).
    pub fn read(&mut self, topic: &str, partition: i32, offset: i64, ts: Option<u64>) {
        if let Some(p) = self.get_mut(topic, partition) {
            p.next = p.next.max(offset + 1);
            if let Some(ts) = ts {
                p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
            }
        }
    }

    /// Re-reads every partition's high-water mark from the consumer's latest
    /// fetch responses (see [`cached_high`]); an unknown one keeps the
    /// previous value.
    pub fn refresh_highs<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        for p in &mut self.parts {
            if let Some(h) = cached_high(consumer, &p.topic, p.partition) {
                p.high = Some(h);
            }
        }
    }

    /// Whether every partition is caught up.
    pub fn all_caught_up(&self) -> bool {
        self.parts.iter().all(PartitionProgress::caught_up)
    }

    /// The least watermark over the partitions; with no partition, wall-clock
    /// now minus the lateness.
    pub fn frontier(&self, now_ms: u64, lateness_ms: u64) -> u64 {
        self.parts
            .iter()
            .map(|p| p.watermark(now_ms, lateness_ms))
            .min()
            .unwrap_or_else(|| now_ms.saturating_sub(lateness_ms))
    }
}

/// The job's producer: trigger records and dead letters.
pub struct Output {
    producer: BaseProducer<Ctx>,
    stop: Arc<AtomicBool>,
    /// Messages handed to the producer.
    pub sent: u64,
    /// Messages dropped because the local queue stayed full while stopping.
    pub dropped: u64,
}

impl Output {
    pub fn new(brokers: &str, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        Ok(Output {
            producer: producer(brokers)?,
            stop,
            sent: 0,
            dropped: 0,
        })
    }

    /// Queues one message; waits (serving delivery reports) while the local
    /// queue is full, unless the job is stopping.
    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let mut record = BaseRecord::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut waited = 0u32;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if waited == 0 {
                        tracing::warn!(topic, "producer queue full; waiting");
                    }
                    waited += 1;
                    if self.stop.load(Ordering::Relaxed) && waited > 100 {
                        self.dropped += 1;
                        tracing::error!(
                            topic,
                            "producer queue still full while stopping; message dropped"
                        );
                        return;
                    }
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    self.dropped += 1;
                    ProduceFailed {
                        topic,
                        error: &e.to_string(),
                    }
                    .emit();
                    return;
                }
            }
        }
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits up to `timeout` for every queued message to be delivered.
    pub fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        self.producer
            .flush(timeout)
            .context("flushing the producer")
    }

    /// Per partition of `topic`: one past the highest offset delivered.
    pub fn delivered(&self, topic: &str) -> HashMap<i32, i64> {
        self.producer
            .context()
            .delivered
            .lock()
            .expect("delivered lock")
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Messages that could not be delivered (after librdkafka's retries).
    pub fn delivery_failures(&self) -> u64 {
        self.producer
            .context()
            .delivery_failures
            .load(Ordering::Relaxed)
    }
}

/// The dead-letter payload of a bad record: why, where it came from, and the
/// original payload as (lossy UTF-8) text.
pub fn dead_letter_payload(
    reason: &str,
    detail: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) -> Vec<u8> {
    let v = serde_json::json!({
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "payload": payload.map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    serde_json::to_vec(&v).expect("a JSON value serialises")
}

/// A flag set by the first SIGINT or SIGTERM (a second one exits at once).
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let flag = stop.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::interrupt())?,
                ))
            })
            .context("installing signal handlers")?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut seen = 0;
                    loop {
                        let name = tokio::select! {
                            _ = term.recv() => "SIGTERM",
                            _ = int.recv() => "SIGINT",
                        };
                        seen += 1;
                        if seen == 1 {
                            tracing::info!(signal = name, "stopping");
                            flag.store(true, Ordering::SeqCst);
                        } else {
                            tracing::warn!(
                                signal = name,
                                "second signal: exiting without flushing"
                            );
                            std::process::exit(130);
                        }
                    }
                })
            })
            .context("starting the signal handler")?;
    }
    #[cfg(not(unix))]
    {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                rt.block_on(async move {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        tracing::info!("stopping");
                        flag.store(true, Ordering::SeqCst);
                    }
                })
            })
            .context("starting the signal handler")?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(topic: &str, partition: i32, offset: i64) -> PartitionStart {
        PartitionStart {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn parses_start() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("latest".parse(), Ok(StartAt::Latest));
        assert_eq!(
            "1700000000000".parse(),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        assert!("-5".parse::<StartAt>().is_err());
        assert!("soon".parse::<StartAt>().is_err());
    }

    #[test]
    fn shares_partitions_by_index() {
        let parts: Vec<_> = (0..4)
            .flat_map(|p| [start("a", p, 0), start("b", p, 0)])
            .collect();
        let w1: Vec<_> = share(&parts, 1, 2)
            .iter()
            .map(|s| (s.topic.clone(), s.partition))
            .collect();
        assert_eq!(
            w1,
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("a".into(), 3),
                ("b".into(), 3)
            ]
        );
        assert_eq!(share(&parts, 0, 1).len(), 8);
    }

    #[test]
    fn watermarks_and_frontier() {
        let mut p = Progress::new(&[start("t", 0, 0), start("t", 1, 5)]);
        let now = 1_000_000;
        // High-water marks not known yet: not caught up, everything held back.
        assert_eq!(p.frontier(now, 10), 0);
        p.get_mut("t", 0).unwrap().high = Some(2);
        p.get_mut("t", 1).unwrap().high = Some(5);
        // Partition 0 is behind and has read nothing: it holds everything back.
        assert_eq!(p.frontier(now, 10), 0);
        p.read("t", 0, 0, Some(500));
        assert_eq!(p.frontier(now, 10), 490);
        // Caught up: nothing held back beyond now minus lateness.
        p.read("t", 0, 1, Some(400));
        assert_eq!(p.parts()[0].watermark(now, 10), now - 10);
        assert_eq!(p.frontier(now, 10), now - 10);
        // Records ahead of wall-clock now keep their own watermark.
        p.read("t", 1, 5, Some(now + 100));
        p.get_mut("t", 1).unwrap().high = Some(6);
        assert_eq!(p.parts()[1].watermark(now, 10), now + 90);
        assert!(p.all_caught_up());
        assert_eq!(Progress::new(&[]).frontier(now, 10), now - 10);
    }

    #[test]
    fn dead_letter_is_json() {
        let v: serde_json::Value = serde_json::from_slice(&dead_letter_payload(
            "invalid_json",
            "x",
            "tracking",
            3,
            41,
            Some(b"no\xffjson"),
        ))
        .unwrap();
        assert_eq!(v["reason"], "invalid_json");
        assert_eq!(v["partition"], 3);
        assert_eq!(v["offset"], 41);
        assert_eq!(v["payload"], "no\u{fffd}json");
    }
}
