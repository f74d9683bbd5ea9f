//! The live sidecar on Kafka: profile store upkeep, the trigger consumer
//! group, the deferred queue, sending, receipts, metrics and graceful
//! shutdown.
//!
//! Order of one batch: decide -> publish the receipts of non-send
//! decisions -> commit the store (ledger, history, deferred queue, outbox)
//! -> hand sends to the workers -> commit the consumer offsets. A crash at
//! any point loses nothing: records not yet committed are redelivered and
//! recognised by the ledger (`duplicate`), sends not yet done are in the
//! outbox and resumed at start.

use crate::channels::{Channels, OutboxEntry};
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{DeferredEntry, Engine, Input};
use crate::model::Profile;
use crate::sender::{Dispatcher, Outcomes, ReceiptSink, Sender, SenderCtx, SinkError};
use crate::store::{Store, StoreError};
use crate::telemetry::{serve_metrics, MalformedRecord, Metrics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub brokers: String,
    pub group_id: String,
    pub store_path: PathBuf,
    pub triggers_topic: String,
    pub profiles_topic: String,
    pub deliveries_topic: String,
    pub metrics_addr: SocketAddr,
    /// Test hook, see [`SenderCtx::crash_after_sends`]; also disables
    /// offset commits so that the crash happens before them.
    pub crash_after_sends: Option<u64>,
    /// The `[kafka]` properties, for every Kafka client.
    pub kafka: crate::kafka_props::ResolvedProperties,
}

/// Why the sidecar stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Channel(#[from] crate::channels::ChannelSetupError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn consumer(opts: &RunOptions, group: &str) -> Result<StreamConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("enable.partition.eof", "false");
    opts.kafka.apply(&mut c).create()
}

/// Keeps the profile store in step with the `profiles` topic.
struct ProfileFollower {
    consumer: StreamConsumer,
    topic: String,
    next: BTreeMap<i32, i64>,
}

impl ProfileFollower {
    fn start(opts: &RunOptions, store: &Store) -> Result<Option<ProfileFollower>, RunError> {
        let consumer = consumer(opts, &format!("{}-profiles", opts.group_id))?;
        let md = consumer.fetch_metadata(Some(&opts.profiles_topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == opts.profiles_topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            tracing::warn!(topic = %opts.profiles_topic, "profiles topic has no partitions; running without profiles");
            return Ok(None);
        }
        let stored = store.profile_offsets()?;
        if stored.is_none() {
            tracing::info!(topic = %opts.profiles_topic, "profile store is empty: rebuilding from the topic");
        }
        let stored = stored.unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        let mut next = BTreeMap::new();
        for p in parts {
            let (low, _) =
                consumer.fetch_watermarks(&opts.profiles_topic, p, Duration::from_secs(10))?;
            let from = stored.get(&p).copied().unwrap_or(low).max(low);
            next.insert(p, from);
            tpl.add_partition_offset(&opts.profiles_topic, p, Offset::Offset(from))?;
        }
        consumer.assign(&tpl)?;
        Ok(Some(ProfileFollower {
            consumer,
            topic: opts.profiles_topic.clone(),
            next,
        }))
    }

    /// Reads until every partition reaches the high watermark seen now, or
    /// until `timeout`.
    async fn catch_up(
        &mut self,
        store: &Store,
        metrics: &Metrics,
        timeout: Duration,
    ) -> Result<(), RunError> {
        let mut high = BTreeMap::new();
        for &p in self.next.keys() {
            let (_, h) = self
                .consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(10))?;
            high.insert(p, h);
        }
        let deadline = Instant::now() + timeout;
        let t0 = Instant::now();
        let mut n = 0usize;
        while high
            .iter()
            .any(|(p, h)| self.next.get(p).copied().unwrap_or(0) < *h)
        {
            if Instant::now() > deadline {
                tracing::warn!("profile catch-up timed out; continuing while it goes on");
                break;
            }
            n += self
                .step(store, metrics, Duration::from_millis(200))
                .await?;
        }
        tracing::info!(
            records = n,
            ms = t0.elapsed().as_millis() as u64,
            "profile store caught up"
        );
        Ok(())
    }

    /// Reads one batch of profile records (waiting at most `wait`) and
    /// applies it durably. Returns the number of records.
    async fn step(
        &mut self,
        store: &Store,
        metrics: &Metrics,
        wait: Duration,
    ) -> Result<usize, RunError> {
        let mut updates: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while updates.len() < 2000 {
            let m = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "profiles consumer error");
                    break;
                }
                Ok(Ok(m)) => m,
            };
            self.next.insert(m.partition(), m.offset() + 1);
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            match m.payload() {
                None => {
                    if let Some(k) = key {
                        metrics.profile_updates.with_label_values(&["erase"]).inc();
                        updates.push((k, None));
                    }
                }
                Some(p) => match Profile::parse(p) {
                    // The key is the user_id (wire.md): a record keyed by
                    // another user would overwrite that user's profile
                    // while compaction and erasure follow the key.
                    Ok(pr) if key.as_ref().is_some_and(|k| *k != pr.user_id) => {
                        MalformedRecord {
                            topic: &self.topic,
                            partition: m.partition(),
                            offset: m.offset(),
                            error: "the record's key is not its user_id",
                        }
                        .emit(metrics);
                    }
                    Ok(pr) => {
                        metrics.profile_updates.with_label_values(&["upsert"]).inc();
                        let bytes = serde_json::to_vec(&pr).unwrap_or_default();
                        updates.push((pr.user_id, Some(bytes)));
                    }
                    Err(e) => {
                        // JSON `null` is an erasure too.
                        if p.trim_ascii() == b"null" {
                            if let Some(k) = key {
                                metrics.profile_updates.with_label_values(&["erase"]).inc();
                                updates.push((k, None));
                            }
                            continue;
                        }
                        MalformedRecord {
                            topic: &self.topic,
                            partition: m.partition(),
                            offset: m.offset(),
                            error: &e.to_string(),
                        }
                        .emit(metrics);
                    }
                },
            }
        }
        if !updates.is_empty() {
            store.apply_profiles(&updates, &self.next)?;
            metrics.store_commits.inc();
        }
        Ok(updates.len())
    }
}

/// Runs the sidecar until `shutdown` resolves.
pub async fn run<F: Future<Output = ()>>(
    cfg: Config,
    opts: RunOptions,
    clock: Arc<dyn Clock>,
    shutdown: F,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let (maddr, metrics_task) = serve_metrics(opts.metrics_addr, metrics.clone())
        .await
        .map_err(|source| RunError::Metrics {
            addr: opts.metrics_addr,
            source,
        })?;
    tracing::info!(metrics = %maddr, triggers = %opts.triggers_topic, profiles = %opts.profiles_topic,
        deliveries = %opts.deliveries_topic, group = %opts.group_id, "tripwire-courier starting");
    let store = Arc::new(Store::open(&opts.store_path)?);
    let mut engine = Engine::new(&cfg, metrics.clone(), &opts.triggers_topic)?;
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &opts.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    let producer: FutureProducer = opts.kafka.apply(&mut producer_config).create()?;
    let sink = ReceiptSink::Kafka {
        producer: producer.clone(),
        topic: opts.deliveries_topic.clone(),
    };

    // Profiles first, so that triggers meet up-to-date consent.
    let mut follower = ProfileFollower::start(&opts, &store)?;
    if let Some(f) = follower.as_mut() {
        f.catch_up(
            &store,
            &metrics,
            Duration::from_millis(cfg.engine.profiles_catchup_timeout_ms),
        )
        .await?;
    }
    let follower_task = follower.map(|mut f| {
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = f.step(&store, &metrics, Duration::from_millis(200)).await {
                    tracing::error!(error = %e, "profile store update failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    });

    let channels = Arc::new(Channels::new(&cfg)?);
    let sender = Sender::spawn(SenderCtx {
        channels,
        retry: cfg.retry.clone(),
        store: store.clone(),
        sink: sink.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        max_in_flight: cfg.engine.max_in_flight,
        crash_after_sends: opts.crash_after_sends,
    });
    // Resume sends decided before a stop or crash.
    let pending: Vec<OutboxEntry> = store.outbox()?;
    if !pending.is_empty() {
        tracing::info!(count = pending.len(), "resuming sends from the outbox");
    }
    metrics.outbox.set(pending.len() as i64);
    metrics.deferred.set(store.deferred_len()? as i64);
    for e in pending {
        sender.dispatch(e).await;
    }

    let consumer = consumer(&opts, &opts.group_id)?;
    consumer.subscribe(&[&opts.triggers_topic])?;
    let mut deferred_tick =
        tokio::time::interval(Duration::from_millis(cfg.engine.deferred_poll_ms));
    deferred_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune_tick = tokio::time::interval(Duration::from_secs(60));
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch_max = cfg.engine.batch_max_records;
    let batch_wait = Duration::from_millis(cfg.engine.batch_max_wait_ms);
    let mut last_commit: Option<TopicPartitionList> = None;
    let mut pipeline: Pipeline<Option<TopicPartitionList>> = Pipeline::new(
        store.clone(),
        sink.clone(),
        sender.dispatcher(),
        metrics.clone(),
    );
    let commit_offsets = |tpl: Option<TopicPartitionList>,
                          last: &mut Option<TopicPartitionList>| {
        if let Some(tpl) = tpl {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "offset commit failed; records will be redelivered and deduplicated");
            }
            *last = Some(tpl);
        }
    };
    tokio::pin!(shutdown);
    let result: Result<(), RunError> = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested");
                    break;
                }
                _ = deferred_tick.tick() => {
                    // Also completes a batch left in flight by a quiet topic.
                    if let Some(tag) = pipeline.flush(&mut engine).await? {
                        commit_offsets(tag, &mut last_commit);
                    }
                    release_due(&mut engine, &store, &sink, &sender, &metrics, &*clock, batch_max).await?;
                }
                _ = prune_tick.tick() => {
                    // By trigger time: a redelivery of a trigger older than
                    // this is not recognised (it is stale anyway).
                    let cutoff = clock.now_ms() - cfg.engine.ledger_retention_ms as i64;
                    let n = store.prune_ledger(cutoff, 100_000)?;
                    if n > 0 {
                        tracing::info!(removed = n, "pruned the decision ledger");
                    }
                }
                first = consumer.recv() => {
                    let first = match first {
                        Ok(m) => m.detach(),
                        Err(e) => {
                            tracing::warn!(error = %e, "triggers consumer error");
                            continue;
                        }
                    };
                    let mut msgs = vec![first];
                    let deadline = tokio::time::Instant::now() + batch_wait;
                    while msgs.len() < batch_max {
                        match tokio::time::timeout_at(deadline, consumer.recv()).await {
                            Ok(Ok(m)) => msgs.push(m.detach()),
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "triggers consumer error");
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut offsets: HashMap<i32, i64> = HashMap::new();
                    let inputs: Vec<Input> = msgs
                        .into_iter()
                        .map(|m| {
                            let e = offsets.entry(m.partition()).or_insert(m.offset());
                            *e = (*e).max(m.offset());
                            Input::Record {
                                partition: m.partition(),
                                offset: m.offset(),
                                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                                payload: m.payload().map(<[u8]>::to_vec),
                            }
                        })
                        .collect();
                    let tag = if opts.crash_after_sends.is_none() {
                        let mut tpl = TopicPartitionList::new();
                        for (p, o) in offsets {
                            tpl.add_partition_offset(&opts.triggers_topic, p, Offset::Offset(o + 1))?;
                        }
                        Some(tpl)
                    } else {
                        None
                    };
                    if let Some(done) = pipeline.submit(&mut engine, inputs, clock.now_ms(), tag).await? {
                        commit_offsets(done, &mut last_commit);
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let result = match (result, pipeline.flush(&mut engine).await) {
        (Ok(()), Ok(tag)) => {
            commit_offsets(tag.flatten(), &mut last_commit);
            Ok(())
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    };
    drop(pipeline);

    // Graceful stop: finish sends in flight, record them, flush receipts.
    sender
        .shutdown(Duration::from_millis(cfg.engine.shutdown_grace_ms))
        .await;
    if let Some(tpl) = last_commit {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed");
        }
    }
    let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10));
    if let Some(t) = follower_task {
        t.abort();
    }
    metrics_task.abort();
    tracing::info!(
        deferred = store.deferred_len().unwrap_or(0),
        outbox = store.outbox_len().unwrap_or(0),
        "tripwire-courier stopped"
    );
    result
}

/// Overlaps deciding batch N+1 with applying batch N (receipts, store
/// commit, sends). At most one batch is being applied; the engine sees
/// its decisions through an overlay until its commit is done. Each batch
/// carries a tag (its consumer offsets) returned once it is applied.
pub struct Pipeline<T: Send + 'static> {
    store: Arc<Store>,
    sink: ReceiptSink,
    dispatcher: Dispatcher,
    metrics: Metrics,
    inflight: Option<tokio::task::JoinHandle<Result<T, RunError>>>,
}

impl<T: Send + 'static> Pipeline<T> {
    pub fn new(
        store: Arc<Store>,
        sink: ReceiptSink,
        dispatcher: Dispatcher,
        metrics: Metrics,
    ) -> Self {
        Pipeline {
            store,
            sink,
            dispatcher,
            metrics,
            inflight: None,
        }
    }

    /// Decides `inputs` now, waits for the previous batch to be applied
    /// (returning its tag), and starts applying this one.
    pub async fn submit(
        &mut self,
        engine: &mut Engine,
        inputs: Vec<Input>,
        now: i64,
        tag: T,
    ) -> Result<Option<T>, RunError> {
        let batch = engine.decide_batch(&self.store, inputs, now)?;
        let done = self.flush(engine).await?;
        engine.set_overlay(&batch);
        let store = self.store.clone();
        let sink = self.sink.clone();
        let dispatcher = self.dispatcher.clone();
        let metrics = self.metrics.clone();
        self.inflight = Some(tokio::spawn(async move {
            apply(batch, &store, &sink, &metrics, dispatcher.outcomes(), |e| {
                dispatcher.dispatch(e)
            })
            .await?;
            Ok(tag)
        }));
        Ok(done)
    }

    /// Waits until the batch in flight is applied; returns its tag.
    pub async fn flush(&mut self, engine: &mut Engine) -> Result<Option<T>, RunError> {
        let Some(h) = self.inflight.take() else {
            return Ok(None);
        };
        let tag = h
            .await
            .map_err(|e| RunError::Store(StoreError::Db(format!("apply task: {e}"))))??;
        engine.clear_overlay();
        Ok(Some(tag))
    }
}

async fn apply<F, Fut>(
    batch: crate::engine::Batch,
    store: &Arc<Store>,
    sink: &ReceiptSink,
    metrics: &Metrics,
    outcomes: &Outcomes,
    dispatch: F,
) -> Result<(), RunError>
where
    F: Fn(OutboxEntry) -> Fut,
    Fut: Future<Output = ()>,
{
    sink.publish(&batch.receipts).await?;
    let deferred_delta =
        batch.writes.deferred_put.len() as i64 - batch.writes.deferred_del.len() as i64;
    let mut writes = batch.writes;
    // Send outcomes published since the last commit share this fsync.
    let n = outcomes.take_into(&mut writes);
    store.commit_async(Arc::new(writes)).await?;
    outcomes.committed(n);
    metrics.store_commits.inc();
    metrics.deferred.add(deferred_delta);
    metrics.outbox.add(batch.sends.len() as i64);
    for s in batch.sends {
        dispatch(s).await;
    }
    Ok(())
}

/// Decides one batch and applies it (receipts, store, sends).
pub async fn decide_and_apply(
    engine: &mut Engine,
    store: &Arc<Store>,
    sink: &ReceiptSink,
    sender: &Sender,
    metrics: &Metrics,
    now: i64,
    inputs: Vec<Input>,
) -> Result<(), RunError> {
    let batch = engine.decide_batch(store, inputs, now)?;
    let d = sender.dispatcher();
    apply(batch, store, sink, metrics, d.outcomes(), |e| {
        sender.dispatch(e)
    })
    .await
}

/// Releases every deferred trigger that is due.
pub async fn release_due(
    engine: &mut Engine,
    store: &Arc<Store>,
    sink: &ReceiptSink,
    sender: &Sender,
    metrics: &Metrics,
    clock: &dyn Clock,
    batch_max: usize,
) -> Result<(), RunError> {
    loop {
        let now = clock.now_ms();
        let due: Vec<(i64, String, DeferredEntry)> = store.due_deferred(now, batch_max)?;
        let n = due.len();
        if n == 0 {
            return Ok(());
        }
        let inputs = due
            .into_iter()
            .map(|(until, _, entry)| Input::Release {
                until,
                entry: Box::new(entry),
            })
            .collect();
        decide_and_apply(engine, store, sink, sender, metrics, now, inputs).await?;
        if n < batch_max {
            return Ok(());
        }
    }
}
