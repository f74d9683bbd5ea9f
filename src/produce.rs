//! `tripwire produce`: send recording files (wire.md, *Recorded-topic
//! files*: what `tripwire generate` and `tripwire record` write) to Kafka,
//! so that a live job can be fed without a script.
//!
//! Each line's `value` becomes one message on the line's `topic`, with the
//! line's `key` as the message key when present, and the line's
//! `timestamp` as the message timestamp when present. The partition is the
//! producer's choice (by key), never the recorded one. The payload is:
//!
//! - for an object, the object re-serialised compactly (field order and
//!   number spelling kept; only whitespace goes);
//! - for a string, its text as is (a non-JSON payload kept by `record`);
//! - for `null`, no payload: a tombstone (an empty payload kept by `record`);
//! - for any other JSON value, its compact JSON text.
//!
//! Topic names go through the configuration's `[topics]`: a line of the
//! default topic `tracking` goes to `topics.tracking`, and so on for every
//! topic `[topics]` names; any other topic is sent as named.
//!
//! Order: the lines of one file are sent in file order; the lines of
//! several files are merged by their `value.ts` (the reader replay uses,
//! `recording.rs`; a line without one counts as time 0, and a file larger
//! than 64 MiB that is more than 10 minutes out of order is sorted by
//! `value.ts`, as replay does).
//!
//! A line that is not JSON, or lacks a string `topic` or a `value`, is
//! skipped, logged with its file and line (not its content) and counted in
//! the summary; it does not stop the command.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, TopicsConfig};
use crate::kafka;
use crate::recording::{self, Source};

/// `tripwire produce` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] (the courier's
    /// default too).
    #[arg(long, env = "TRIPWIRE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Recording files (JSON lines), or directories of `*.jsonl` files.
    /// Several files are merged by their records' `value.ts`; one file is
    /// sent in file order.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Send at most this many records per second (default: as fast as the
    /// broker takes them).
    #[arg(long, value_name = "N")]
    pub rate_per_s: Option<f64>,
    /// Send each record when the wall clock reaches its (shifted) `ts`,
    /// replaying the recording at its own speed; implies --shift-to-now.
    /// Records without a `ts` go at once.
    #[arg(long)]
    pub pace: bool,
    /// Shift every record's time by the same amount so that the first
    /// record's time is the wall-clock now: the payload's top-level `ts`
    /// and the line's `timestamp` (the message timestamp). Without it,
    /// generated recordings (dated November 2023) are late for a live job
    /// started with `--start latest`, and a broker's retention may delete
    /// them soon.
    #[arg(long)]
    pub shift_to_now: bool,
    /// Create the topics the recording sends to that do not exist yet, with
    /// this many partitions each (default replication of the broker).
    /// Without it, a missing topic stops the command before anything is
    /// sent.
    #[arg(long, value_name = "PARTITIONS")]
    pub create_topics: Option<i32>,
}

/// What a `tripwire produce` run sent.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records delivered, per destination topic.
    pub per_topic: BTreeMap<String, u64>,
    /// Lines skipped: not JSON, or without a string `topic` or a `value`.
    pub bad_lines: u64,
    /// Whether SIGINT/SIGTERM stopped the run before the end of the input.
    pub interrupted: bool,
}

/// How record times are shifted (`--shift-to-now`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    /// Times are sent as recorded.
    Off,
    /// The first record with a time is moved to this time (ms); the shift
    /// is fixed then.
    To(u64),
    /// Every time is moved by this much (ms).
    By(i64),
}

impl Shift {
    /// Fixes the shift on the first record with a time `t`.
    fn anchor(&mut self, t: Option<i64>) {
        if let (Shift::To(now), Some(t)) = (*self, t) {
            *self = Shift::By(now as i64 - t);
        }
    }

    fn delta(&self) -> i64 {
        match self {
            Shift::By(d) => *d,
            _ => 0,
        }
    }
}

/// Maps recorded topic names (the defaults) to the configured ones.
pub struct TopicMap {
    renamed: Vec<(String, String)>,
}

impl TopicMap {
    pub fn new(configured: &TopicsConfig) -> Self {
        let d = TopicsConfig::default();
        let pairs = [
            (d.tracking, &configured.tracking),
            (d.prices, &configured.prices),
            (d.stock, &configured.stock),
            (d.catalog, &configured.catalog),
            (d.triggers, &configured.triggers),
            (d.dead_letter, &configured.dead_letter),
        ];
        TopicMap {
            renamed: pairs
                .into_iter()
                .filter(|(from, to)| from != *to)
                .map(|(from, to)| (from, to.clone()))
                .collect(),
        }
    }

    /// The topic a line recorded from `topic` is sent to.
    pub fn destination<'a>(&'a self, topic: &'a str) -> &'a str {
        self.renamed
            .iter()
            .find(|(from, _)| from == topic)
            .map_or(topic, |(_, to)| to.as_str())
    }
}

/// One recording line as read here.
#[derive(Deserialize)]
struct InLine<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// A line ready to send; its payload is in the caller's buffer.
#[derive(Debug)]
pub struct Prepared<'l> {
    /// The recorded topic (before mapping).
    pub topic: Cow<'l, str>,
    pub key: Option<Cow<'l, str>>,
    /// The message timestamp (shifted), if the line has a usable one.
    pub timestamp: Option<i64>,
    /// The payload's top-level `ts` (shifted), if it has one; only read
    /// when shifting.
    pub ts: Option<u64>,
    /// No payload (the value was `null`).
    pub tombstone: bool,
}

/// Why a line is skipped (fixed text: never the line's content).
pub fn bad_line_reason(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => "not a recording line: needs a string `topic` and a `value` (and a string `key`, an integer `timestamp` if present)",
        Category::Syntax | Category::Eof | Category::Io => "not valid JSON",
    }
}

/// Reads one recording line: writes its payload into `out` (cleared
/// first) and returns the rest. `shift` is fixed on the first line with a
/// time (`value.ts`, else `timestamp`).
pub fn prepare<'l>(
    line: &'l [u8],
    shift: &mut Shift,
    out: &mut Vec<u8>,
) -> Result<Prepared<'l>, serde_json::Error> {
    out.clear();
    let rec: InLine<'l> = serde_json::from_slice(line)?;
    let raw = rec.value.get().trim_start();
    let mut ts = None;
    let mut tombstone = false;
    match raw.as_bytes().first() {
        Some(b'{') if *shift != Shift::Off => {
            let members = Members::deserialize(rec.value)?;
            ts = members
                .0
                .iter()
                .find(|(k, _)| k == "ts")
                .and_then(|(_, v)| v.get().parse::<u64>().ok());
            shift.anchor(ts.and_then(|t| i64::try_from(t).ok()).or(rec.timestamp));
            let delta = shift.delta();
            ts = ts.and_then(|t| shifted(t as i64, delta)).map(|t| t as u64);
            out.push(b'{');
            let mut ts_done = false;
            for (i, (k, v)) in members.0.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                match ts {
                    Some(t) if k == "ts" && !ts_done => {
                        ts_done = true;
                        out.extend_from_slice(t.to_string().as_bytes());
                    }
                    _ => compact_into(v.get(), out),
                }
            }
            out.push(b'}');
        }
        Some(b'"') => {
            let text: Cow<'_, str> = serde_json::from_str(raw)?;
            out.extend_from_slice(text.as_bytes());
        }
        _ if raw.trim_end() == "null" => tombstone = true,
        _ => compact_into(raw, out),
    }
    shift.anchor(rec.timestamp);
    let timestamp = rec
        .timestamp
        .and_then(|t| shifted(t, shift.delta()))
        .filter(|t| *t >= 0);
    Ok(Prepared {
        topic: rec.topic,
        key: rec.key,
        timestamp,
        ts,
        tombstone,
    })
}

/// `t` moved by `delta`, if that stays a time (>= 0).
fn shifted(t: i64, delta: i64) -> Option<i64> {
    t.checked_add(delta).filter(|t| *t >= 0)
}

/// The members of a JSON object, in their order, values still raw.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the line when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k.0, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Appends valid JSON `json` to `out` without its insignificant whitespace.
pub fn compact_into(json: &str, out: &mut Vec<u8>) {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
}

/// The topics the lines of `sources` are sent to (a line that cannot be
/// read is left to the sending pass, which reports it).
fn destinations(
    plan: &recording::Plan,
    sources: &[Source],
    map: &TopicMap,
) -> anyhow::Result<(BTreeSet<String>, u64)> {
    let mut topics = BTreeSet::new();
    let mut lines = 0u64;
    let mut it = plan.lines(sources)?;
    for line in &mut it {
        lines += 1;
        if let Ok(t) = serde_json::from_slice::<InLine>(&line.bytes) {
            if !topics.contains(map.destination(&t.topic)) {
                topics.insert(map.destination(&t.topic).to_string());
            }
        }
    }
    if let Some(e) = it.error() {
        return Err(e.into());
    }
    Ok((topics, lines))
}

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the final flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Logs progress every [`PROGRESS_EVERY`].
struct Progress {
    started: Instant,
    last: Instant,
    last_sent: u64,
    total: u64,
}

impl Progress {
    fn tick(&mut self, sent: u64, in_flight: i32) {
        let now = Instant::now();
        let dt = now.duration_since(self.last);
        if dt < PROGRESS_EVERY {
            return;
        }
        tracing::info!(
            records = sent,
            of = self.total,
            rate_per_s = ((sent - self.last_sent) as f64 / dt.as_secs_f64()).round(),
            in_flight,
            elapsed_s = self.started.elapsed().as_secs(),
            "producing"
        );
        self.last = now;
        self.last_sent = sent;
    }
}

/// Sends the recording; see the module doc.
pub fn run(args: ProduceArgs, config: &Config) -> anyhow::Result<Summary> {
    if let Some(r) = args.rate_per_s {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate-per-s must be a number above 0"
        );
    }
    if let Some(p) = args.create_topics {
        anyhow::ensure!(p >= 1, "--create-topics must be at least 1 partition");
    }
    let files = crate::replay::input_files(&args.input)?;
    let sources: Vec<Source> = crate::replay::file_sources(&files);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = recording::plan(&sources, threads)?;
    let map = TopicMap::new(&config.topics);
    let (topics, total) = destinations(&plan, &sources, &map)?;

    let stop = kafka::stop_on_signals()?;
    let probe = kafka::consumer(&args.brokers, &kafka::unique_group_id("tripwire-produce"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let missing = kafka::missing_topics(&probe, &names)?;
    if !missing.is_empty() {
        match args.create_topics {
            Some(p) => {
                kafka::create_topics(&args.brokers, &probe, &missing, p)?;
                tracing::info!(topics = ?missing, partitions = p, "created the missing topics");
            }
            None => bail!(
                "topics {} do not exist on {}: create them, or pass --create-topics PARTITIONS",
                missing.join(", "),
                args.brokers
            ),
        }
    }
    drop(probe);

    let producer = kafka::producer(&args.brokers)?;
    tracing::info!(
        brokers = %args.brokers,
        files = files.len(),
        lines = total,
        topics = ?topics,
        "sending the recording"
    );
    let pace = args.pace;
    let mut shift = if args.shift_to_now || pace {
        Shift::To(kafka::now_ms())
    } else {
        Shift::Off
    };
    let started = Instant::now();
    let mut progress = Progress {
        started,
        last: started,
        last_sent: 0,
        total,
    };
    let mut summary = Summary::default();
    let mut sent = 0u64;
    let mut rejected = 0u64;
    let mut buf = Vec::with_capacity(4096);
    let mut lines = plan.lines(&sources)?;

    // Waits until `deadline` serving delivery reports; false if stopped.
    let wait_until = |deadline: Instant, progress: &mut Progress, sent: u64| -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            producer.poll((deadline - now).min(Duration::from_millis(100)));
            progress.tick(sent, producer.in_flight_count());
        }
    };

    'lines: for line in &mut lines {
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        let location = || format!("{}:{}", plan.source_name(line.source), line.line_no);
        let rec = match prepare(&line.bytes, &mut shift, &mut buf) {
            Ok(r) => r,
            Err(e) => {
                summary.bad_lines += 1;
                tracing::warn!(location = %location(), reason = bad_line_reason(&e), "bad line skipped");
                continue;
            }
        };
        // When this record may go: its rate slot, and with --pace its time.
        if let Some(r) = args.rate_per_s {
            let slot = started + Duration::from_secs_f64(sent as f64 / r);
            if slot > Instant::now() + Duration::from_millis(1)
                && !wait_until(slot, &mut progress, sent)
            {
                summary.interrupted = true;
                break;
            }
        }
        if pace {
            if let Some(ts) = rec.ts {
                let ahead = ts.saturating_sub(kafka::now_ms());
                if ahead > 0
                    && !wait_until(
                        Instant::now() + Duration::from_millis(ahead),
                        &mut progress,
                        sent,
                    )
                {
                    summary.interrupted = true;
                    break;
                }
            }
        }
        let topic = map.destination(&rec.topic);
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
        if !rec.tombstone {
            record = record.payload(&buf[..]);
        }
        if let Some(k) = &rec.key {
            record = record.key(k.as_ref());
        }
        if let Some(t) = rec.timestamp {
            record = record.timestamp(t);
        }
        let mut waited = false;
        loop {
            match producer.send(record) {
                Ok(()) => {
                    sent += 1;
                    match summary.per_topic.get_mut(topic) {
                        Some(n) => *n += 1,
                        None => {
                            summary.per_topic.insert(topic.to_string(), 1);
                        }
                    }
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    if !waited {
                        tracing::debug!(topic, "producer queue full; waiting");
                        waited = true;
                    }
                    if stop.load(Ordering::Relaxed) {
                        summary.interrupted = true;
                        break 'lines;
                    }
                    producer.poll(Duration::from_millis(50));
                    progress.tick(sent, producer.in_flight_count());
                }
                Err((e, _)) => {
                    rejected += 1;
                    tracing::error!(location = %location(), topic, error = %e, "record not sent");
                    break;
                }
            }
        }
        if sent.is_multiple_of(256) {
            producer.poll(Duration::ZERO);
        }
        progress.tick(sent, producer.in_flight_count());
    }
    if let Some(e) = lines.error() {
        // Send what was queued before reporting the read error.
        let _ = producer.flush(FLUSH_TIMEOUT);
        return Err(e.into());
    }
    if producer.flush(FLUSH_TIMEOUT).is_err() {
        bail!(
            "{} of {sent} records were not delivered within {} s (is {} reachable?)",
            producer.in_flight_count(),
            FLUSH_TIMEOUT.as_secs(),
            args.brokers
        );
    }
    let failed = producer.context().delivery_failures.load(Ordering::Relaxed);
    if failed > 0 || rejected > 0 {
        bail!(
            "{} of {} records were not delivered (see the errors above)",
            failed + rejected,
            sent + rejected
        );
    }
    let elapsed = started.elapsed();
    tracing::info!(
        records = sent,
        bad_lines = summary.bad_lines,
        per_topic = ?summary.per_topic,
        shifted_by_ms = shift.delta(),
        elapsed_ms = elapsed.as_millis() as u64,
        rate_per_s = (sent as f64 / elapsed.as_secs_f64().max(1e-9)).round(),
        stopped_by = if summary.interrupted { "signal" } else { "end_of_input" },
        "produce done"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(line: &str, shift: &mut Shift) -> (String, Option<i64>, Option<u64>, bool) {
        let mut out = Vec::new();
        let p = prepare(line.as_bytes(), shift, &mut out).unwrap();
        (
            String::from_utf8(out).unwrap(),
            p.timestamp,
            p.ts,
            p.tombstone,
        )
    }

    #[test]
    fn payloads() {
        let mut off = Shift::Off;
        assert_eq!(
            prep(
                r#"{"topic":"t","timestamp":5,"key":"k","value":{ "b" : [1, 2], "a":"x y", "ts":5 }}"#,
                &mut off
            ),
            (
                r#"{"b":[1,2],"a":"x y","ts":5}"#.into(),
                Some(5),
                None,
                false
            )
        );
        assert_eq!(
            prep(r#"{"topic":"t","value":"not \"json\""}"#, &mut off).0,
            r#"not "json""#
        );
        assert_eq!(
            prep(r#"{"topic":"t","value":null}"#, &mut off),
            (String::new(), None, None, true)
        );
        assert_eq!(prep(r#"{"topic":"t","value":[1, 2]}"#, &mut off).0, "[1,2]");
        assert_eq!(off, Shift::Off);
    }

    #[test]
    fn shifts_every_time_by_the_first_one() {
        let mut s = Shift::To(1_000_000);
        assert_eq!(
            prep(
                r#"{"topic":"t","timestamp":90,"value":{"x":{"ts":1},"ts":100,"k\"":"a b"}}"#,
                &mut s
            ),
            (
                r#"{"x":{"ts":1},"ts":1000000,"k\"":"a b"}"#.into(),
                Some(999_990),
                Some(1_000_000),
                false
            )
        );
        assert_eq!(s, Shift::By(999_900));
        assert_eq!(
            prep(
                r#"{"topic":"t","timestamp":150,"value":{"ts":160}}"#,
                &mut s
            ),
            (
                r#"{"ts":1000060}"#.into(),
                Some(1_000_050),
                Some(1_000_060),
                false
            )
        );
        // A `ts` that is not a plain integer is left as it is.
        assert_eq!(
            prep(r#"{"topic":"t","value":{"ts":"soon"}}"#, &mut s).0,
            r#"{"ts":"soon"}"#
        );
        // Without `value.ts`, the line's timestamp anchors the shift.
        let mut s = Shift::To(1000);
        assert_eq!(
            prep(r#"{"topic":"t","timestamp":400,"value":"x"}"#, &mut s).1,
            Some(1000)
        );
        assert_eq!(s, Shift::By(600));
    }

    #[test]
    fn bad_lines() {
        let mut s = Shift::Off;
        let mut out = Vec::new();
        for (line, reason) in [
            ("not json", "not valid JSON"),
            (r#"{"topic":"t","value":{"#, "not valid JSON"),
            (r#"{"value":{}}"#, "not a recording line"),
            (r#"{"topic":"t"}"#, "not a recording line"),
            (r#"{"topic":1,"value":{}}"#, "not a recording line"),
        ] {
            let e = prepare(line.as_bytes(), &mut s, &mut out).unwrap_err();
            assert!(bad_line_reason(&e).starts_with(reason), "{line}");
        }
    }

    #[test]
    fn maps_topic_names() {
        let m = TopicMap::new(&TopicsConfig {
            tracking: "shop.tracking".into(),
            ..TopicsConfig::default()
        });
        assert_eq!(m.destination("tracking"), "shop.tracking");
        assert_eq!(m.destination("prices"), "prices");
        assert_eq!(m.destination("other"), "other");
    }

    #[test]
    fn compacts() {
        let mut out = Vec::new();
        compact_into("{ \"a b\" : \"c\\\" d\" ,\n\"e\": [ 1 ] }", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":"c\" d","e":[1]}"#
        );
    }
}
