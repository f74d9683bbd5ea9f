//! Sending: a bounded pool of workers takes persisted outbox entries,
//! respects per-channel rate limits, retries transient failures with
//! exponential backoff and jitter, and hands outcomes to one writer that
//! publishes `sent` / `failed` receipts and records them durably.

use crate::channels::{Channels, OutboxEntry, Progress};
use crate::clock::Clock;
use crate::config::{ChannelKind, RetryConfig};
use crate::model::{Receipt, Status};
use crate::store::{LedgerStatus, Store, WriteSet};
use crate::telemetry::{DecisionEvent, Metrics, SendAttempt};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// Where receipts go.
#[derive(Clone)]
pub enum ReceiptSink {
    /// The `deliveries` topic.
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<Receipt>>>),
    /// Counted and dropped (benchmark).
    Null(Arc<AtomicU64>),
}

/// Receipts could not be published.
#[derive(Debug, thiserror::Error)]
#[error("publishing receipts: {0}")]
pub struct SinkError(pub String);

impl ReceiptSink {
    /// Publishes receipts and waits until they are acknowledged.
    pub async fn publish(&self, receipts: &[Receipt]) -> Result<(), SinkError> {
        if receipts.is_empty() {
            return Ok(());
        }
        match self {
            ReceiptSink::Memory(v) => {
                v.lock().expect("lock").extend_from_slice(receipts);
                Ok(())
            }
            ReceiptSink::Null(n) => {
                n.fetch_add(receipts.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            ReceiptSink::Kafka { producer, topic } => {
                let mut futures = Vec::with_capacity(receipts.len());
                for r in receipts {
                    let payload = serde_json::to_vec(r).map_err(|e| SinkError(e.to_string()))?;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let rec = FutureRecord::to(topic).key(&r.user_id).payload(&payload);
                        match producer.send_result(rec) {
                            Ok(f) => {
                                futures.push(f);
                                break;
                            }
                            Err((e, _)) => {
                                if Instant::now() > deadline {
                                    return Err(SinkError(e.to_string()));
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                }
                for f in futures {
                    match f.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => return Err(SinkError(e.to_string())),
                        Err(_) => return Err(SinkError("producer dropped".into())),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Everything a send worker needs.
#[derive(Clone)]
pub struct SenderCtx {
    pub channels: Arc<Channels>,
    pub retry: RetryConfig,
    pub store: Arc<Store>,
    pub sink: ReceiptSink,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub max_in_flight: usize,
    /// Test hook: abort the process instead of starting send N+1 (after
    /// the first N are recorded).
    pub crash_after_sends: Option<u64>,
}

struct Completion {
    /// Not attempted or not finished because of shutdown: stays in the
    /// outbox, nothing is recorded.
    abandoned: bool,
    entry: OutboxEntry,
    result: Result<(), String>,
    permanent: bool,
    attempts: u32,
}

enum WriterMsg {
    Done(Box<Completion>),
    Stop,
}

/// Send outcomes whose receipts are published but which are not yet
/// recorded in the store. They ride along with the next decision batch's
/// commit (one fsync for both), or the writer commits them itself after
/// 20 ms.
pub struct Outcomes {
    buf: Mutex<(WriteSet, u64, Option<Instant>)>,
    recorded: Arc<AtomicU64>,
    metrics: Metrics,
}

impl Outcomes {
    fn push(&self, ws: WriteSet, n: u64) {
        let mut b = self.buf.lock().expect("lock");
        b.0.ledger.extend(ws.ledger);
        b.0.outbox_del.extend(ws.outbox_del);
        b.0.history_drop.extend(ws.history_drop);
        b.1 += n;
        b.2.get_or_insert_with(Instant::now);
    }

    fn age(&self) -> Option<Duration> {
        self.buf.lock().expect("lock").2.map(|t| t.elapsed())
    }

    /// Moves the pending outcomes into `ws`; returns how many there were.
    /// Call [`Outcomes::committed`] with it once `ws` is committed.
    pub fn take_into(&self, ws: &mut WriteSet) -> u64 {
        let mut b = self.buf.lock().expect("lock");
        let (pending, n, _) = std::mem::take(&mut *b);
        ws.ledger.extend(pending.ledger);
        ws.outbox_del.extend(pending.outbox_del);
        ws.history_drop.extend(pending.history_drop);
        n
    }

    pub fn committed(&self, n: u64) {
        if n > 0 {
            self.metrics.outbox.sub(n as i64);
            self.recorded.fetch_add(n, Ordering::SeqCst);
        }
    }
}

/// A cloneable handle to queue sends.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<OutboxEntry>,
    outcomes: Arc<Outcomes>,
}

impl Dispatcher {
    pub async fn dispatch(&self, e: OutboxEntry) {
        let _ = self.tx.send(e).await;
    }

    /// Pending send outcomes to commit along with a batch.
    pub fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }
}

/// Handle of the sending machinery.
pub struct Sender {
    tx: mpsc::Sender<OutboxEntry>,
    done_tx: mpsc::Sender<WriterMsg>,
    dispatcher: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Outcomes recorded durably so far.
    pub recorded: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    outcomes: Arc<Outcomes>,
}

/// Backoff before attempt `attempt + 1` (attempt >= 1), with jitter in
/// [d/2, d].
pub fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let exp = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << (attempt - 1).min(30))
        .min(retry.max_backoff_ms);
    let jittered = rand::thread_rng().gen_range(exp / 2..=exp.max(1));
    Duration::from_millis(jittered)
}

impl Sender {
    pub fn spawn(ctx: SenderCtx) -> Sender {
        let (tx, mut rx) = mpsc::channel::<OutboxEntry>(ctx.max_in_flight * 4);
        // Roomy, so that outcomes queue up while the writer commits: each
        // commit (an fsync) then records thousands of them.
        let (done_tx, mut done_rx) = mpsc::channel::<WriterMsg>(16_384);
        let recorded = Arc::new(AtomicU64::new(0));
        let outcomes = Arc::new(Outcomes {
            buf: Mutex::new(Default::default()),
            recorded: recorded.clone(),
            metrics: ctx.metrics.clone(),
        });
        let started = Arc::new(AtomicU64::new(0));
        let sem = Arc::new(Semaphore::new(ctx.max_in_flight));
        let stopping = Arc::new(AtomicBool::new(false));
        let dstopping = stopping.clone();
        let dctx = ctx.clone();
        let dtx = done_tx.clone();
        let drecorded = recorded.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                let ctx = dctx.clone();
                let dtx = dtx.clone();
                let started = started.clone();
                let recorded = drecorded.clone();
                let stopping = dstopping.clone();
                tokio::spawn(async move {
                    if let Some(k) = ctx.crash_after_sends {
                        if started.fetch_add(1, Ordering::SeqCst) >= k {
                            let deadline = Instant::now() + Duration::from_secs(10);
                            while recorded.load(Ordering::SeqCst) < k && Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            tracing::warn!(after = k, "crash hook: aborting");
                            std::process::abort();
                        }
                    }
                    let c = deliver(&ctx, entry, &stopping).await;
                    let _ = dtx.send(WriterMsg::Done(Box::new(c))).await;
                    drop(permit);
                });
            }
            // Wait for every worker.
            let _ = sem.acquire_many(dctx.max_in_flight as u32).await;
        });
        let wctx = ctx;
        let woutcomes = outcomes.clone();
        let writer = tokio::spawn(async move {
            let window = Duration::from_millis(20);
            let mut stop = false;
            while !stop {
                let mut items = Vec::new();
                match tokio::time::timeout(window, done_rx.recv()).await {
                    Ok(Some(WriterMsg::Done(c))) => items.push(*c),
                    Ok(Some(WriterMsg::Stop)) | Ok(None) => stop = true,
                    Err(_) => {}
                }
                if !items.is_empty() {
                    // Gather what arrives within the window.
                    let deadline = tokio::time::Instant::now() + window;
                    while items.len() < 16_384 && !stop {
                        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                            Ok(Some(WriterMsg::Done(c))) => items.push(*c),
                            Ok(Some(WriterMsg::Stop)) | Ok(None) => stop = true,
                            Err(_) => break,
                        }
                    }
                    publish_outcomes(&wctx, items, &woutcomes).await;
                }
                // Not picked up by a decision batch in time: commit alone.
                if stop || woutcomes.age().is_some_and(|a| a >= window) {
                    commit_outcomes(&wctx, &woutcomes).await;
                }
            }
        });
        Sender {
            tx,
            done_tx,
            dispatcher,
            writer,
            recorded,
            stopping,
            outcomes,
        }
    }

    /// Queues a persisted outbox entry for sending (waits when the queue is
    /// full).
    pub async fn dispatch(&self, e: OutboxEntry) {
        let _ = self.tx.send(e).await;
    }

    /// A handle that queues sends from another task. Drop every handle
    /// before [`Sender::shutdown`].
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            tx: self.tx.clone(),
            outcomes: self.outcomes.clone(),
        }
    }

    /// Stops taking work, lets in-flight sends finish within `grace`, and
    /// records their outcomes. Unfinished sends stay in the outbox.
    pub async fn shutdown(self, grace: Duration) {
        // Queued sends are not started any more; sends in flight finish
        // their current attempt but are not retried.
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.tx);
        if tokio::time::timeout(grace, self.dispatcher).await.is_err() {
            tracing::warn!("shutdown grace expired with sends in flight; they stay in the outbox");
        }
        let _ = self.done_tx.send(WriterMsg::Stop).await;
        drop(self.done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.writer).await;
    }
}

async fn deliver(ctx: &SenderCtx, entry: OutboxEntry, stopping: &AtomicBool) -> Completion {
    let abandon = |entry| Completion {
        abandoned: true,
        entry,
        result: Err("shutdown".into()),
        permanent: false,
        attempts: 0,
    };
    let Some(kind) = ChannelKind::parse(&entry.channel) else {
        return Completion {
            abandoned: false,
            entry,
            result: Err("unknown channel".into()),
            permanent: true,
            attempts: 0,
        };
    };
    let mut progress = Progress::default();
    let max = ctx.retry.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        if stopping.load(Ordering::SeqCst) {
            return abandon(entry);
        }
        attempt += 1;
        ctx.channels.throttle(kind).await;
        let t0 = Instant::now();
        let r = ctx
            .channels
            .send(&entry, &mut progress, ctx.clock.now_ms())
            .await;
        let secs = t0.elapsed().as_secs_f64();
        let (outcome, err) = match &r {
            Ok(()) => ("ok", None),
            Err(e) if e.is_transient() => ("transient", Some(e.message())),
            Err(e) => ("permanent", Some(e.message())),
        };
        SendAttempt {
            trigger_id: &entry.trigger.trigger_id,
            channel: kind.as_str(),
            outcome,
            attempt,
            seconds: secs,
            error: err,
        }
        .emit(&ctx.metrics);
        match r {
            Ok(()) => {
                return Completion {
                    abandoned: false,
                    entry,
                    result: Ok(()),
                    permanent: false,
                    attempts: attempt,
                }
            }
            Err(e) if !e.is_transient() || attempt >= max => {
                if progress.delivered > 0 {
                    // Some push token took it: that is a delivery.
                    return Completion {
                        abandoned: false,
                        entry,
                        result: Ok(()),
                        permanent: false,
                        attempts: attempt,
                    };
                }
                return Completion {
                    abandoned: false,
                    entry,
                    permanent: !e.is_transient(),
                    result: Err(e.message().to_string()),
                    attempts: attempt,
                };
            }
            Err(_) => tokio::time::sleep(backoff(&ctx.retry, attempt)).await,
        }
    }
}

async fn publish_outcomes(ctx: &SenderCtx, items: Vec<Completion>, outcomes: &Outcomes) {
    let items: Vec<_> = items.into_iter().filter(|c| !c.abandoned).collect();
    if items.is_empty() {
        return;
    }
    let now = ctx.clock.now_ms();
    let mut receipts = Vec::with_capacity(items.len());
    let mut ws = WriteSet::default();
    for c in &items {
        let t = &c.entry.trigger;
        let (status, reason, detail) = match &c.result {
            Ok(()) => (Status::Sent, None, None),
            Err(m) => (
                Status::Failed,
                Some(if c.permanent {
                    "permanent_error"
                } else {
                    "retries_exhausted"
                }),
                Some(m.clone()),
            ),
        };
        DecisionEvent {
            trigger_id: &t.trigger_id,
            campaign: &t.campaign,
            status: status.as_str(),
            reason,
            channel: Some(&c.entry.channel),
        }
        .emit(&ctx.metrics);
        receipts.push(Receipt {
            trigger_id: t.trigger_id.clone(),
            campaign: t.campaign.clone(),
            user_id: t.user_id.clone(),
            ts: now,
            status,
            channel: Some(c.entry.channel.clone()),
            reason: reason.map(str::to_owned),
            until: None,
            variant: c.entry.variant,
            detail,
            attempts: Some(c.attempts),
        });
        let ls = if status == Status::Sent {
            LedgerStatus::Sent
        } else {
            LedgerStatus::Failed
        };
        ws.ledger.push((t.trigger_id.clone(), t.ts, ls, now));
        ws.outbox_del
            .push((c.entry.decided_at, t.trigger_id.clone()));
        if status != Status::Sent {
            // Never left: it counts toward neither the cap nor the gap.
            ws.history_drop
                .push((t.user_id.clone(), c.entry.decided_at, t.campaign.clone()));
        }
    }
    // Receipts first: a crash after them re-sends (at-least-once), a crash
    // before them loses nothing.
    let mut wait = Duration::from_millis(100);
    while let Err(e) = ctx.sink.publish(&receipts).await {
        tracing::error!(error = %e, "cannot publish receipts; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    outcomes.push(ws, items.len() as u64);
}

async fn commit_outcomes(ctx: &SenderCtx, outcomes: &Outcomes) {
    let mut ws = WriteSet::default();
    let n = outcomes.take_into(&mut ws);
    if n == 0 {
        return;
    }
    let mut wait = Duration::from_millis(100);
    let ws = Arc::new(ws);
    while let Err(e) = ctx.store.commit_async(ws.clone()).await {
        tracing::error!(error = %e, "cannot record send outcomes; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    ctx.metrics.store_commits.inc();
    outcomes.committed(n);
}
