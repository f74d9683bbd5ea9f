//! Telemetry as small event structs that log and bump a pre-registered
//! metric together (after Vector's `internal_events`). Every metric is
//! registered once, in [`Metrics`], so that dashboards see all series from
//! the start; names follow `tripwire_<name>_<unit>_total`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The job's metrics, registered once per process.
pub struct Metrics {
    pub registry: Registry,
    /// Records read, by topic.
    pub records_read: IntCounterVec,
    /// Records rejected, by topic and reason.
    pub bad_records: IntCounterVec,
    /// Events older than the frontier, applied at the frontier, by topic.
    pub late_events: IntCounterVec,
    /// Trigger records emitted, by campaign and kind.
    pub triggers_emitted: IntCounterVec,
    /// Records written to the dead-letter topic, by source topic.
    pub dead_letters: IntCounterVec,
    /// How far the event-time frontier is behind wall-clock now, in seconds.
    pub frontier_lag_seconds: Gauge,
    /// Messages the job could not produce (triggers, dead letters), by topic.
    pub produce_errors: IntCounterVec,
    /// Checkpoints written, and checkpoints that failed.
    pub checkpoints: IntCounterVec,
    /// Wall-clock time of the latest checkpoint written (s since the epoch).
    pub checkpoint_timestamp_seconds: Gauge,
    /// Triggers re-derived after a restart and found already written.
    pub replayed_triggers: IntCounterVec,
    /// How long the latest recovery took to rebuild the state, in seconds.
    pub recovery_seconds: Gauge,
    /// Items dropped from trigger records too large to write, by campaign.
    pub trigger_items_cut: IntCounterVec,
    /// How long after its due time (`ts`) each trigger record was handed
    /// to the producer, in wall-clock seconds.
    pub trigger_delay_seconds: Histogram,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::with_opts(Opts::new(name, help)).expect("valid metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let records_read = counter(
            &registry,
            "tripwire_input_records_total",
            "Input records read, by topic.",
            &["topic"],
        );
        let bad_records = counter(
            &registry,
            "tripwire_bad_records_total",
            "Input records that break the wire contract, by topic and reason.",
            &["topic", "reason"],
        );
        let late_events = counter(
            &registry,
            "tripwire_late_events_total",
            "Input records older than the frontier, applied at the frontier, by topic.",
            &["topic"],
        );
        let triggers_emitted = counter(
            &registry,
            "tripwire_triggers_emitted_total",
            "Trigger records emitted, by campaign and kind.",
            &["campaign", "kind"],
        );
        let dead_letters = counter(
            &registry,
            "tripwire_dead_letter_records_total",
            "Records written to the dead-letter topic, by source topic.",
            &["topic"],
        );
        let produce_errors = counter(
            &registry,
            "tripwire_produce_errors_total",
            "Messages the job could not produce (trigger records, dead letters), by topic.",
            &["topic"],
        );
        let frontier_lag_seconds = gauge(
            &registry,
            "tripwire_frontier_lag_seconds",
            "Wall-clock now minus the job's event-time frontier, in seconds.",
        );
        let checkpoints = counter(
            &registry,
            "tripwire_checkpoints_total",
            "Recovery checkpoints, by outcome (written, failed).",
            &["outcome"],
        );
        let checkpoint_timestamp_seconds = gauge(
            &registry,
            "tripwire_checkpoint_timestamp_seconds",
            "Wall-clock time the latest checkpoint was written, in seconds since the epoch.",
        );
        let replayed_triggers = counter(
            &registry,
            "tripwire_replayed_triggers_total",
            "Triggers re-derived after a restart that were already on the trigger topic \
             (not written again), by campaign.",
            &["campaign"],
        );
        let recovery_seconds = gauge(
            &registry,
            "tripwire_recovery_seconds",
            "How long the latest start took to rebuild the state up to its checkpoint, in seconds.",
        );
        let trigger_items_cut = counter(
            &registry,
            "tripwire_trigger_items_cut_total",
            "Items dropped from trigger records larger than the largest record written, by campaign.",
            &["campaign"],
        );
        let trigger_delay_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tripwire_trigger_delay_seconds",
                "Wall-clock time at which a trigger record was handed to the producer minus its due time (ts), in seconds. Its floor is time.lateness_ms plus a bucket; records of a backfill or a restart re-read count their age.",
            )
            .buckets(vec![
                // Fine around the default floor (5 s lateness + a 1 s bucket).
                0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 5.25, 5.5, 5.75, 6.0, 6.25, 6.5, 6.75, 7.0, 8.0,
                10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0,
            ]),
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(trigger_delay_seconds.clone()))
            .expect("metric registered once");
        for outcome in ["written", "failed"] {
            checkpoints.with_label_values(&[outcome]);
        }
        Metrics {
            registry,
            records_read,
            bad_records,
            late_events,
            triggers_emitted,
            dead_letters,
            frontier_lag_seconds,
            produce_errors,
            checkpoints,
            checkpoint_timestamp_seconds,
            replayed_triggers,
            recovery_seconds,
            trigger_items_cut,
            trigger_delay_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text exposition is UTF-8")
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Input records were read from a topic.
pub struct RecordsRead<'a> {
    pub topic: &'a str,
    pub count: u64,
}

impl RecordsRead<'_> {
    pub fn emit(&self) {
        METRICS
            .records_read
            .with_label_values(&[self.topic])
            .inc_by(self.count);
    }
}

/// A record broke the contract; `location` is `file:line` or `topic/partition@offset`.
pub struct BadRecordSeen<'a> {
    pub topic: &'a str,
    pub reason: &'a str,
    pub location: &'a str,
    pub detail: &'a str,
}

impl BadRecordSeen<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            reason = self.reason,
            location = self.location,
            detail = self.detail,
            "bad record skipped"
        );
        METRICS
            .bad_records
            .with_label_values(&[self.topic, self.reason])
            .inc();
    }
}

/// A record older than the frontier was applied at the frontier.
pub struct LateEvent<'a> {
    pub topic: &'a str,
    pub ts: u64,
    pub frontier: u64,
}

impl LateEvent<'_> {
    pub fn emit(&self) {
        tracing::debug!(
            topic = self.topic,
            ts = self.ts,
            frontier = self.frontier,
            "late event applied at the frontier"
        );
        METRICS.late_events.with_label_values(&[self.topic]).inc();
    }
}

/// Late events of one worker, summarised in one log line at most every
/// [`LateSummary::EVERY`] (the per-event log is at debug level): how many
/// were applied at the frontier and how far behind it the oldest was.
#[derive(Default)]
pub struct LateSummary {
    count: u64,
    max_lag_ms: u64,
    topic: String,
    next: Option<std::time::Instant>,
}

impl LateSummary {
    /// The shortest time between two summary lines.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Counts a late event (and logs it at debug level).
    pub fn add(&mut self, late: LateEvent<'_>) {
        late.emit();
        self.count += 1;
        let lag = late.frontier.saturating_sub(late.ts);
        if lag >= self.max_lag_ms {
            self.max_lag_ms = lag;
            if self.topic != late.topic {
                self.topic = late.topic.to_string();
            }
        }
    }

    /// Logs the summary once [`Self::EVERY`] has passed since the last one,
    /// if any event was late since.
    pub fn maybe_log(&mut self, now: std::time::Instant) {
        if self.count == 0 || self.next.is_some_and(|n| now < n) {
            return;
        }
        tracing::warn!(
            late_events = self.count,
            oldest_lag_ms = self.max_lag_ms,
            oldest_topic = %self.topic,
            "late events applied at the frontier (their time had passed; \
             a trigger they would have fired earlier fires now or not at all): \
             raise time.lateness_ms if producers lag"
        );
        *self = LateSummary {
            next: Some(now + Self::EVERY),
            ..LateSummary::default()
        };
    }
}

/// A trigger record left the job.
pub struct TriggerEmitted<'a> {
    pub campaign: &'a str,
    pub kind: &'a str,
    /// Live: wall-clock ms at which the record was handed to the producer
    /// minus its due time (`ts`); `None` in replay.
    pub delay_ms: Option<u64>,
}

impl TriggerEmitted<'_> {
    pub fn emit(&self) {
        METRICS
            .triggers_emitted
            .with_label_values(&[self.campaign, self.kind])
            .inc();
        if let Some(d) = self.delay_ms {
            METRICS.trigger_delay_seconds.observe(d as f64 / 1000.0);
        }
    }
}

/// A bad record was written to the dead-letter topic.
pub struct DeadLettered<'a> {
    pub topic: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self) {
        METRICS.dead_letters.with_label_values(&[self.topic]).inc();
    }
}

/// The frontier moved; records its lag behind wall-clock.
pub struct FrontierAdvanced {
    pub frontier_ms: u64,
    pub now_ms: u64,
}

impl FrontierAdvanced {
    pub fn emit(&self) {
        let lag = self.now_ms.saturating_sub(self.frontier_ms) as f64 / 1000.0;
        METRICS.frontier_lag_seconds.set(lag);
    }
}

/// A message could not be produced (queueing or delivery failed).
pub struct ProduceFailed<'a> {
    pub topic: &'a str,
    pub error: &'a str,
}

impl ProduceFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(
            topic = self.topic,
            error = self.error,
            "message not produced"
        );
        METRICS
            .produce_errors
            .with_label_values(&[self.topic])
            .inc();
    }
}

/// A checkpoint was written.
pub struct CheckpointWritten {
    pub frontier_ms: u64,
    pub bytes: usize,
    pub elapsed: std::time::Duration,
}

impl CheckpointWritten {
    pub fn emit(&self) {
        tracing::debug!(
            frontier = self.frontier_ms,
            bytes = self.bytes,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "checkpoint written"
        );
        METRICS.checkpoints.with_label_values(&["written"]).inc();
        METRICS
            .checkpoint_timestamp_seconds
            .set(crate::kafka::now_ms() as f64 / 1000.0);
    }
}

/// A checkpoint could not be written.
pub struct CheckpointFailed<'a> {
    pub error: &'a str,
}

impl CheckpointFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = self.error, "checkpoint not written");
        METRICS.checkpoints.with_label_values(&["failed"]).inc();
    }
}

/// A trigger re-derived after a restart was already on the trigger topic.
pub struct TriggerReplayed<'a> {
    pub campaign: &'a str,
}

impl TriggerReplayed<'_> {
    pub fn emit(&self) {
        METRICS
            .replayed_triggers
            .with_label_values(&[self.campaign])
            .inc();
    }
}

/// A trigger record was too large to write and lost its trailing items.
pub struct TriggerCut<'a> {
    pub trigger_id: &'a str,
    pub campaign: &'a str,
    pub dropped: usize,
}

impl TriggerCut<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            trigger_id = self.trigger_id,
            campaign = self.campaign,
            dropped_items = self.dropped,
            "trigger record too large: trailing items dropped"
        );
        METRICS
            .trigger_items_cut
            .with_label_values(&[self.campaign])
            .inc_by(self.dropped as u64);
    }
}

/// The state was rebuilt up to the checkpoint the job started from.
pub struct Recovered {
    pub frontier_ms: u64,
    pub records: u64,
    pub suppressed: u64,
    pub elapsed: std::time::Duration,
}

impl Recovered {
    pub fn emit(&self) {
        tracing::info!(
            frontier = self.frontier_ms,
            records = self.records,
            suppressed_triggers = self.suppressed,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "recovered: state rebuilt up to the checkpoint"
        );
        METRICS.recovery_seconds.set(self.elapsed.as_secs_f64());
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `addr` from a
/// background thread. Returns the bound address (useful with port 0).
pub fn serve_metrics(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // One thread per connection, at most `MAX_CONNECTIONS` at
                // once, each bounded in time and size: an idle or slow
                // client never stops the scraping of others.
                use std::sync::atomic::Ordering::SeqCst;
                if open.fetch_add(1, SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, SeqCst);
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = respond(&stream, "503 Service Unavailable", "busy\n");
                    continue;
                }
                let done = open.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        serve_one(stream);
                        done.fetch_sub(1, SeqCst);
                    });
                if spawned.is_err() {
                    open.fetch_sub(1, SeqCst);
                }
            }
        })?;
    Ok(bound)
}

/// Most metrics connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a metrics client may take to send its request or read the reply.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Largest request (line and headers) read from a metrics client.
const MAX_REQUEST_BYTES: u64 = 16 * 1024;

fn serve_one(stream: TcpStream) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(std::io::Read::take(read_half, MAX_REQUEST_BYTES));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers (up to the size limit).
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    if path == "/metrics" {
        let _ = respond(&stream, "200 OK", &METRICS.render());
    } else {
        let _ = respond(&stream, "404 Not Found", "see /metrics\n");
    }
}

fn respond(mut stream: &TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Installs the tracing subscriber: human-readable to stderr, or JSON lines
/// with `json`; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: logs redirected to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The process's resident memory in MiB (Linux), for progress logs.
pub fn resident_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn scrape(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        // Below the server's own timeout: a server that waited for the
        // idle clients first would not answer within it.
        s.set_read_timeout(Some(IO_TIMEOUT / 2)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("a reply");
        out
    }

    /// Idle connections (a client that connects and sends nothing, one that
    /// sends a header without end) do not stop others from scraping.
    #[test]
    fn idle_clients_do_not_block_scraping() {
        let addr = serve_metrics("127.0.0.1:0".parse().unwrap()).expect("serving");
        let _idle: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut slow = TcpStream::connect(addr).expect("connect");
        write!(slow, "GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
        let reply = scrape(addr);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    }
}
