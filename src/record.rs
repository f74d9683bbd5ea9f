//! `tripwire record`: dump live topics into recording files
//! (`DIR/<topic>.jsonl`, the wire.md recording format) so that an incident
//! can be replayed with `tripwire replay --input DIR`.
//!
//! Each line is `{"topic","partition","offset","timestamp","key","value"}`.
//! `value` is the payload as-is when it is JSON (re-serialised onto one line
//! if it spans several); a payload that is not JSON (or not UTF-8) is kept
//! as a JSON *string* holding its lossy UTF-8 text, and an empty payload
//! (tombstone) as `null`: replay then reports that line as a bad record
//! (reason `invalid_payload`, where the live job said `invalid_json`), with
//! its file and line, so that nothing read is silently lost.
//!
//! Stops when every partition has reached its high-water mark (default; as
//! reported by the consumer's fetch responses, re-read every 100 ms), or after `--until-idle-ms` without a new record, or
//! after `--max-records`, or on SIGINT/SIGTERM, whichever comes first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::message::Message;
use serde_json::value::RawValue;

use crate::kafka::{self, Progress, StartAt};

/// `tripwire record` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] (the courier's
    /// default too).
    #[arg(long, env = "TRIPWIRE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topics to record, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tracking,prices,stock,catalog"
    )]
    pub topics: Vec<String>,
    /// Directory to write one `<topic>.jsonl` per topic into (created if
    /// missing; existing files of these topics are overwritten).
    #[arg(long)]
    pub output: PathBuf,
    /// Where to start: `earliest`, `latest`, or a time in ms since the epoch
    /// (Apache Kafka only, not tansu).
    #[arg(long, default_value = "earliest")]
    pub start: String,
    /// Keep following the topics and stop once no record has arrived for this
    /// long (ms), instead of stopping when every partition is caught up.
    #[arg(long)]
    pub until_idle_ms: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
}

/// One recording line.
#[derive(serde::Serialize)]
struct Line<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<std::borrow::Cow<'a, str>>,
    value: Value<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Value<'a> {
    Raw(&'a RawValue),
    Parsed(serde_json::Value),
    Text(String),
    Null(()),
}

/// The recording form of a payload, and whether it was JSON.
fn value_of(payload: Option<&[u8]>) -> (Value<'_>, bool) {
    let Some(bytes) = payload.filter(|p| !p.is_empty()) else {
        return (Value::Null(()), false);
    };
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(raw) = serde_json::from_str::<&RawValue>(text) {
            if !text.contains(['\n', '\r']) {
                return (Value::Raw(raw), true);
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                return (Value::Parsed(v), true);
            }
        }
    }
    (
        Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        false,
    )
}

/// Records the topics into files until a stop condition holds.
pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let start: StartAt = args
        .start
        .parse()
        .map_err(|e| anyhow::anyhow!("--start {e}"))?;
    anyhow::ensure!(!args.topics.is_empty(), "--topics names no topic");
    let stop = kafka::stop_on_signals()?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;

    let consumer = kafka::consumer(&args.brokers, &kafka::unique_group_id("tripwire-record"))?;
    let parts = kafka::partitions(&consumer, &args.topics)?;
    let starts = kafka::resolve_starts(&consumer, &parts, start)?;
    kafka::assign(&consumer, &starts)?;
    let mut progress = Progress::new(&starts);

    let mut files: BTreeMap<String, BufWriter<File>> = BTreeMap::new();
    for topic in &args.topics {
        let path = args.output.join(format!("{topic}.jsonl"));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        files.insert(topic.clone(), BufWriter::new(f));
    }
    tracing::info!(
        brokers = %args.brokers,
        partitions = starts.len(),
        output = %args.output.display(),
        "recording"
    );

    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut next_refresh = Instant::now();
    let mut records = 0u64;
    let mut not_json = 0u64;
    let mut per_topic: BTreeMap<String, u64> = BTreeMap::new();
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if args.max_records.is_some_and(|m| records >= m) {
            break "max_records";
        }
        match args.until_idle_ms {
            Some(idle) if last_record.elapsed() >= Duration::from_millis(idle) => break "idle",
            None if Instant::now() >= next_refresh => {
                next_refresh = Instant::now() + Duration::from_millis(100);
                progress.refresh_highs(&consumer);
                if progress.all_caught_up() {
                    break "caught_up";
                }
            }
            _ => {}
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                continue;
            }
            Some(Ok(m)) => m,
        };
        last_record = Instant::now();
        progress.read(msg.topic(), msg.partition(), msg.offset(), None);
        let (value, is_json) = value_of(msg.payload());
        if !is_json {
            not_json += 1;
            tracing::warn!(
                location = %format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset()),
                "payload is not JSON; recorded as a JSON string (replay reports it as a bad record)"
            );
        }
        let line = Line {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: msg.key().map(String::from_utf8_lossy),
            value,
        };
        let Some(out) = files.get_mut(msg.topic()) else {
            continue;
        };
        serde_json::to_writer(&mut *out, &line).context("writing a recording line")?;
        out.write_all(b"\n").context("writing a recording line")?;
        records += 1;
        *per_topic.entry(msg.topic().to_string()).or_default() += 1;
    };
    for (topic, mut f) in files {
        f.flush()
            .with_context(|| format!("writing {topic}.jsonl"))?;
    }
    tracing::info!(
        stopped_by = reason,
        records,
        not_json,
        per_topic = ?per_topic,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recording done"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(payload: Option<&[u8]>) -> String {
        serde_json::to_string(&value_of(payload).0).unwrap()
    }

    #[test]
    fn values() {
        assert_eq!(encode(Some(br#"{"a": 1}"#)), r#"{"a": 1}"#);
        assert_eq!(encode(Some(b"{\"a\":\n1}")), r#"{"a":1}"#);
        assert_eq!(encode(Some(b"not json")), r#""not json""#);
        assert_eq!(encode(Some(b"\xff")), "\"\u{fffd}\"");
        assert_eq!(encode(None), "null");
        assert_eq!(encode(Some(b"")), "null");
    }
}
