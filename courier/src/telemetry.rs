//! Metrics (Prometheus) and the events that log and count together. Logs
//! never carry e-mail addresses, phone numbers, push tokens or message text.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every metric of the courier, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// status, reason, campaign, channel
    pub decisions: IntCounterVec,
    /// topic
    pub malformed: IntCounterVec,
    /// channel, outcome (ok, transient, permanent)
    pub send_attempts: IntCounterVec,
    /// channel
    pub send_latency: HistogramVec,
    /// op (upsert, erase, malformed)
    pub profile_updates: IntCounterVec,
    pub store_commits: IntCounter,
    pub deferred: IntGauge,
    pub outbox: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "tripwire_courier_trigger_decisions_total",
                "Decisions on trigger records, by status, reason, campaign and channel",
            ),
            &["status", "reason", "campaign", "channel"],
        )
        .expect("metric");
        let malformed = IntCounterVec::new(
            Opts::new(
                "tripwire_courier_malformed_records_total",
                "Records that could not be used, by topic",
            ),
            &["topic"],
        )
        .expect("metric");
        let send_attempts = IntCounterVec::new(
            Opts::new(
                "tripwire_courier_send_attempts_total",
                "Send attempts by channel and outcome",
            ),
            &["channel", "outcome"],
        )
        .expect("metric");
        let send_latency = HistogramVec::new(
            HistogramOpts::new(
                "tripwire_courier_send_latency_seconds",
                "Latency of one send attempt",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["channel"],
        )
        .expect("metric");
        let profile_updates = IntCounterVec::new(
            Opts::new(
                "tripwire_courier_profile_updates_total",
                "Records applied from the profiles topic, by operation",
            ),
            &["op"],
        )
        .expect("metric");
        let store_commits = IntCounter::new(
            "tripwire_courier_store_commits_total",
            "Durable store transactions",
        )
        .expect("metric");
        let deferred = IntGauge::new(
            "tripwire_courier_deferred_messages",
            "Messages waiting in the deferred queue",
        )
        .expect("metric");
        let outbox = IntGauge::new(
            "tripwire_courier_outbox_messages",
            "Messages decided for sending and not yet sent or failed",
        )
        .expect("metric");
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(malformed.clone()),
            Box::new(send_attempts.clone()),
            Box::new(send_latency.clone()),
            Box::new(profile_updates.clone()),
            Box::new(store_commits.clone()),
            Box::new(deferred.clone()),
            Box::new(outbox.clone()),
        ] {
            registry.register(c).expect("register metric");
        }
        Metrics {
            registry,
            decisions,
            malformed,
            send_attempts,
            send_latency,
            profile_updates,
            store_commits,
            deferred,
            outbox,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One decision on one trigger.
pub struct DecisionEvent<'a> {
    pub trigger_id: &'a str,
    /// Campaign label: a configured campaign or `unknown`.
    pub campaign: &'a str,
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub channel: Option<&'a str>,
}

impl DecisionEvent<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::debug!(
            trigger_id = self.trigger_id,
            campaign = self.campaign,
            status = self.status,
            reason = self.reason.unwrap_or(""),
            channel = self.channel.unwrap_or(""),
            "decision"
        );
        m.decisions
            .with_label_values(&[
                self.status,
                self.reason.unwrap_or(""),
                self.campaign,
                self.channel.unwrap_or(""),
            ])
            .inc();
    }
}

/// A record that could not be used.
pub struct MalformedRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub error: &'a str,
}

impl MalformedRecord<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            error = self.error,
            "malformed record"
        );
        m.malformed.with_label_values(&[self.topic]).inc();
    }
}

/// One send attempt.
pub struct SendAttempt<'a> {
    pub trigger_id: &'a str,
    pub channel: &'a str,
    /// `ok`, `transient` or `permanent`
    pub outcome: &'a str,
    pub attempt: u32,
    pub seconds: f64,
    /// Error description without personal data.
    pub error: Option<&'a str>,
}

impl SendAttempt<'_> {
    pub fn emit(&self, m: &Metrics) {
        if let Some(e) = self.error {
            tracing::info!(
                trigger_id = self.trigger_id,
                channel = self.channel,
                outcome = self.outcome,
                attempt = self.attempt,
                error = e,
                "send attempt failed"
            );
        } else {
            tracing::debug!(
                trigger_id = self.trigger_id,
                channel = self.channel,
                attempt = self.attempt,
                "sent"
            );
        }
        m.send_attempts
            .with_label_values(&[self.channel, self.outcome])
            .inc();
        m.send_latency
            .with_label_values(&[self.channel])
            .observe(self.seconds);
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the task is
/// dropped. Returns the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                // Read the request head (bounded).
                while n < buf.len() {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        sock.read(&mut buf[n..]),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
                let body = m.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((local, h))
}
