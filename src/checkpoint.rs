//! Recovery of `tripwire run`: checkpoints of where to re-read the input
//! from, so that a restarted job rebuilds its state from the log.
//!
//! The job's state is a function of the input within its lookback
//! ([`dataflows::campaign::lookback_ms`]: the longest retention plus the
//! longest campaign duration), plus a few facts kept for good: `consent`
//! and `forget` events, and each product's latest `prices` and `stock`
//! record and its first and latest `catalog` record. A checkpoint taken at
//! a closed event time `S` (every trigger firing at or before `S` has been
//! delivered to the broker) therefore holds, per input partition:
//!
//! - `restart`: an offset before which no record can matter after `S`
//!   (tracking: every record before it has a `ts` before `S - lookback`;
//!   product topics: before or at `S`, their latest values being pinned);
//! - `position`: where the job had read to (records before it are not
//!   dead-lettered a second time);
//!
//! and the *pinned* records: the kept-for-good facts found before `restart`,
//! as their original payloads. A restarted job feeds the pinned records,
//! re-reads every partition from `restart`, and emits only triggers firing
//! after `S`; of those, the ones already on the trigger topic (read back
//! from the positions of the checkpoint before) are counted
//! (`tripwire_replayed_triggers_total`) and not written again.
//!
//! A checkpoint is one JSON file, `checkpoint.json` in the state directory,
//! written to a temporary file, synced, and renamed over the previous one.
//! The format is versioned; a file that does not parse stops the job with
//! its path and the reason (no silent empty state).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use dataflows::model::{Body, Input, Time};
use serde::{Deserialize, Serialize};

use crate::codec::Topic;

/// The checkpoint's file name in the state directory.
pub const FILE: &str = "checkpoint.json";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a readable checkpoint ({detail}); move it away to start from --start \
         (state before it is then lost), or restore a copy"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} has format version {found}; this build reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The trigger topic the positions in `output` belong to.
    pub triggers_topic: String,
    /// Wall-clock time of writing (ms since the epoch).
    pub written_at_ms: u64,
    /// `S`: every trigger firing at or before it was delivered.
    pub frontier_ms: Time,
    /// The lookback the restart offsets were chosen for (ms).
    pub lookback_ms: Time,
    /// Per input partition: where to re-read from, and how far it was read.
    pub inputs: Vec<InputPosition>,
    /// Per trigger-topic partition: where triggers written after the
    /// previous checkpoint begin (read back after a restart).
    pub output: Vec<OutputPosition>,
    /// Facts kept for good that lie before their partition's `restart`.
    pub pinned: Vec<Pinned>,
}

/// Where one input partition restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPosition {
    pub topic: String,
    pub partition: i32,
    /// First offset to re-read.
    pub restart: i64,
    /// The next offset the job would have read.
    pub position: i64,
}

/// A position in the trigger topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputPosition {
    pub partition: i32,
    pub offset: i64,
}

/// A record kept for good, as it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinned {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: String,
}

impl Checkpoint {
    /// Reads the checkpoint of `dir`; `None` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if v.version != VERSION {
            return Err(CheckpointError::Version {
                path,
                found: v.version,
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Writes `self` as the checkpoint of `dir`, atomically: a temporary
    /// file, synced, renamed over the previous checkpoint, directory synced.
    /// Returns the bytes written.
    pub fn write(&self, dir: &Path) -> Result<usize, CheckpointError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec(self).expect("a checkpoint serialises");
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if let Ok(d) = fs::File::open(dir) {
            // Best effort: makes the rename durable on file systems that need it.
            let _ = d.sync_all();
        }
        Ok(bytes.len())
    }
}

/// A record kept for good, with what decides which copy is kept.
#[derive(Clone, Debug)]
struct PinRec {
    ts: Time,
    offset: i64,
    payload: String,
}

/// Why a record is kept for good, and under which key.
#[derive(Debug, Clone)]
enum PinKey {
    /// A `consent` (`forget: false`) or `forget` of the user or anonymous
    /// id `id`: every one is kept, but a `forget` is final, so it drops the
    /// id's consents, and is kept in its minimal form (no context).
    Event { id: String, forget: bool },
    /// A product's `prices`, `stock` or `catalog` record.
    Product(String),
}

/// The kept-for-good records of one partition that lie before `restart`.
#[derive(Debug, Default)]
struct Pins {
    /// `consent` events (tracking) by id, except those of forgotten ids.
    consents: HashMap<String, Vec<PinRec>>,
    /// `forget` events (tracking): all of them, minimal.
    forgets: Vec<PinRec>,
    /// Ids with a pinned `forget`.
    forgotten: HashSet<String>,
    /// Per product: the latest record, and for `catalog` also the first.
    latest: HashMap<String, PinRec>,
    first: HashMap<String, PinRec>,
}

impl Pins {
    fn add(&mut self, key: PinKey, rec: PinRec, keep_first: bool) {
        let key = match key {
            PinKey::Event { id, forget: true } => {
                self.consents.remove(&id);
                self.forgotten.insert(id);
                self.forgets.push(rec);
                return;
            }
            PinKey::Event { id, forget: false } => {
                if !self.forgotten.contains(&id) {
                    self.consents.entry(id).or_default().push(rec);
                }
                return;
            }
            PinKey::Product(key) => key,
        };
        let order = |r: &PinRec| (r.ts, r.offset);
        if keep_first {
            match self.first.get(&key) {
                Some(f) if order(f) <= order(&rec) => {}
                _ => {
                    self.first.insert(key.clone(), rec.clone());
                }
            }
        }
        match self.latest.get(&key) {
            Some(l) if order(l) >= order(&rec) => {}
            _ => {
                self.latest.insert(key, rec);
            }
        }
    }

    fn export(&self, topic: &str, partition: i32, out: &mut Vec<Pinned>) {
        let mut recs: Vec<&PinRec> = self
            .consents
            .values()
            .flatten()
            .chain(&self.forgets)
            .chain(self.latest.values())
            .chain(self.first.values())
            .collect();
        recs.sort_by_key(|r| r.offset);
        recs.dedup_by_key(|r| r.offset);
        out.extend(recs.into_iter().map(|r| Pinned {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            payload: r.payload.clone(),
        }));
    }
}

/// Whether a decoded record is kept for good, and under which key.
fn pin_key(input: &Input) -> Option<PinKey> {
    match input {
        Input::Tracking(e) => {
            let forget = match e.body {
                Body::Consent { .. } => false,
                Body::Forget => true,
                _ => return None,
            };
            let id = e.user_id.as_ref().or(e.anonymous_id.as_ref())?;
            Some(PinKey::Event {
                id: id.to_string(),
                forget,
            })
        }
        Input::Price(p) => Some(PinKey::Product(p.product_id.to_string())),
        Input::Stock(s) => Some(PinKey::Product(s.product_id.to_string())),
        Input::Catalog(c) => Some(PinKey::Product(c.product_id.to_string())),
    }
}

/// The payload a pinned record is kept as: a `forget` in its minimal form
/// (event id, type, time and the id it names: nothing else about the
/// person), anything else as read.
fn pin_payload(input: &Input, payload: &str) -> String {
    match input {
        Input::Tracking(e) if matches!(e.body, Body::Forget) => {
            let mut v = serde_json::json!({
                "event_id": e.event_id.as_str(),
                "type": "forget",
                "ts": e.ts,
            });
            if let Some(u) = &e.user_id {
                v["user_id"] = u.as_str().into();
            }
            if let Some(a) = &e.anonymous_id {
                v["anonymous_id"] = a.as_str().into();
            }
            v.to_string()
        }
        _ => payload.to_string(),
    }
}

/// One partition's recovery bookkeeping.
#[derive(Debug)]
struct PartTrack {
    topic: String,
    partition: i32,
    role: Topic,
    restart: i64,
    position: i64,
    /// One past the largest applied time read since `restart` (0: none).
    end_ts: Time,
    /// `(offset, end_ts of the records read before it)`, oldest first.
    samples: VecDeque<(i64, Time)>,
    /// Kept-for-good records at or after `restart`, in offset order.
    pending: VecDeque<(PinKey, PinRec)>,
    pins: Pins,
}

/// A worker's recovery bookkeeping for the partitions it reads: positions,
/// samples of how far event time had got at which offset, and the records
/// kept for good.
#[derive(Debug)]
pub struct Tracker {
    parts: Vec<PartTrack>,
    /// topic -> partition -> index in `parts` (looked up by `&str`: no
    /// allocation per record read).
    index: HashMap<String, HashMap<i32, usize>>,
    lookback_ms: Time,
    /// Samples closer than this in event time are merged.
    grain_ms: Time,
}

impl Tracker {
    /// Bookkeeping for `parts` (`(topic, role, partition, first offset)`).
    pub fn new(parts: &[(String, Topic, i32, i64)], lookback_ms: Time) -> Self {
        let mut t = Tracker {
            parts: Vec::with_capacity(parts.len()),
            index: HashMap::new(),
            lookback_ms,
            grain_ms: (lookback_ms / 512).max(1_000),
        };
        for (topic, role, partition, offset) in parts {
            t.index
                .entry(topic.clone())
                .or_default()
                .insert(*partition, t.parts.len());
            t.parts.push(PartTrack {
                topic: topic.clone(),
                partition: *partition,
                role: *role,
                restart: *offset,
                position: *offset,
                end_ts: 0,
                samples: VecDeque::new(),
                pending: VecDeque::new(),
                pins: Pins::default(),
            });
        }
        t
    }

    fn part(&mut self, topic: &str, partition: i32) -> Option<&mut PartTrack> {
        let i = *self.index.get(topic)?.get(&partition)?;
        Some(&mut self.parts[i])
    }

    /// A pinned record restored from the checkpoint (it lies before the
    /// partition's restart offset).
    pub fn restore_pin(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        input: &Input,
        payload: &str,
    ) {
        let Some(key) = pin_key(input) else { return };
        if let Some(p) = self.part(topic, partition) {
            let keep_first = p.role == Topic::Catalog;
            let rec = PinRec {
                ts: input.ts(),
                offset,
                payload: pin_payload(input, payload),
            };
            p.pins.add(key, rec, keep_first);
        }
    }

    /// Notes a record read at `offset`; `decoded` is the record as applied
    /// (`applied_ms`: the time it took effect) or `None` for a bad record.
    pub fn read(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        decoded: Option<(&Input, Time)>,
        payload: &[u8],
    ) {
        let Some(p) = self.part(topic, partition) else {
            return;
        };
        p.position = p.position.max(offset + 1);
        let Some((input, applied_ms)) = decoded else {
            return;
        };
        p.end_ts = p.end_ts.max(applied_ms.max(input.ts()).saturating_add(1));
        if let Some(key) = pin_key(input) {
            if let Ok(text) = std::str::from_utf8(payload) {
                p.pending.push_back((
                    key,
                    PinRec {
                        ts: input.ts(),
                        offset,
                        payload: pin_payload(input, text),
                    },
                ));
            }
        }
    }

    /// Takes a sample of every partition's position (call once per interval).
    pub fn sample(&mut self) {
        let grain = self.grain_ms;
        for p in &mut self.parts {
            let n = p.samples.len();
            if n >= 2 && p.samples[n - 1].1 < p.samples[n - 2].1.saturating_add(grain) {
                p.samples.pop_back();
            }
            if p.samples.back() != Some(&(p.position, p.end_ts)) {
                p.samples.push_back((p.position, p.end_ts));
            }
        }
    }

    /// Moves every partition's restart offset as far as `s` allows (see the
    /// module doc) and returns this worker's share of a checkpoint at `s`.
    pub fn advance(&mut self, s: Time) -> (Vec<InputPosition>, Vec<Pinned>) {
        let lookback = self.lookback_ms;
        let mut inputs = Vec::with_capacity(self.parts.len());
        let mut pinned = Vec::new();
        for p in &mut self.parts {
            // Records before the restart offset must end (exclusive) by:
            let bound = match p.role {
                Topic::Tracking => s.saturating_sub(lookback),
                Topic::Prices | Topic::Stock | Topic::Catalog => s.saturating_add(1),
            };
            if let Some(i) = p.samples.iter().rposition(|(_, end)| *end <= bound) {
                let (offset, _) = p.samples[i];
                p.samples.drain(..i);
                if offset > p.restart {
                    p.restart = offset;
                    let keep_first = p.role == Topic::Catalog;
                    while p.pending.front().is_some_and(|(_, r)| r.offset < offset) {
                        let (key, rec) = p.pending.pop_front().expect("checked");
                        p.pins.add(key, rec, keep_first);
                    }
                }
            }
            inputs.push(InputPosition {
                topic: p.topic.clone(),
                partition: p.partition,
                restart: p.restart,
                position: p.position,
            });
            p.pins.export(&p.topic, p.partition, &mut pinned);
        }
        (inputs, pinned)
    }
}

/// One worker's share of a checkpoint.
#[derive(Debug)]
pub struct Share {
    /// The closed time its restart offsets were chosen for.
    pub frontier_ms: Time,
    pub inputs: Vec<InputPosition>,
    pub pinned: Vec<Pinned>,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Per worker: the latest time through which it had delivered every
    /// trigger it emitted (the probe had passed it, then its producer flushed).
    flushed: Vec<Option<Time>>,
    /// Per worker: its share of the next checkpoint.
    shares: Vec<Option<Share>>,
    /// Trigger-topic positions delivered so far (max over workers).
    delivered: HashMap<i32, i64>,
    /// The trigger-topic positions recorded at the previous checkpoint.
    output: HashMap<i32, i64>,
}

/// The workers' meeting point for checkpoints (one per process): every
/// worker reports what it has delivered and its share; the last share of a
/// round completes a checkpoint, handed to a writer thread.
pub struct Board {
    state: Mutex<BoardState>,
    triggers_topic: String,
    lookback_ms: Time,
    /// No checkpoint is written below this (the one recovered from).
    floor_ms: Time,
    writer: mpsc::SyncSender<Checkpoint>,
}

impl Board {
    /// A board for `workers` workers writing to `dir` through a writer
    /// thread. `output` is where the trigger topic stood at start;
    /// `floor_ms` the frontier of the checkpoint recovered from (0: none).
    pub fn new(
        dir: PathBuf,
        workers: usize,
        triggers_topic: String,
        lookback_ms: Time,
        floor_ms: Time,
        output: HashMap<i32, i64>,
    ) -> std::io::Result<Board> {
        let (writer, rx) = mpsc::sync_channel::<Checkpoint>(1);
        std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || {
                for cp in rx {
                    let started = std::time::Instant::now();
                    match cp.write(&dir) {
                        Ok(bytes) => crate::telemetry::CheckpointWritten {
                            frontier_ms: cp.frontier_ms,
                            bytes,
                            elapsed: started.elapsed(),
                        }
                        .emit(),
                        Err(e) => crate::telemetry::CheckpointFailed {
                            error: &e.to_string(),
                        }
                        .emit(),
                    }
                }
            })?;
        Ok(Board {
            state: Mutex::new(BoardState {
                flushed: vec![None; workers],
                shares: (0..workers).map(|_| None).collect(),
                delivered: output.clone(),
                output,
            }),
            triggers_topic,
            lookback_ms,
            floor_ms,
            writer,
        })
    }

    /// Worker `w` delivered every trigger at or before `through_ms`;
    /// `delivered` are its producer's trigger-topic positions.
    /// Returns the time every worker has delivered through, once all have
    /// reported.
    pub fn delivered(
        &self,
        w: usize,
        through_ms: Time,
        delivered: &HashMap<i32, i64>,
    ) -> Option<Time> {
        let mut st = self.state.lock().expect("board lock");
        let slot = &mut st.flushed[w];
        *slot = Some(slot.map_or(through_ms, |t| t.max(through_ms)));
        for (&p, &o) in delivered {
            let e = st.delivered.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
        st.flushed
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }

    /// Worker `w`'s share; completes a checkpoint when every worker has
    /// given one since the last.
    pub fn share(&self, w: usize, share: Share) {
        let mut st = self.state.lock().expect("board lock");
        st.shares[w] = Some(share);
        if st.shares.iter().any(Option::is_none) {
            return;
        }
        let shares: Vec<Share> = st.shares.iter_mut().filter_map(Option::take).collect();
        // Each share's offsets hold for its own time and every later one;
        // every share's time was delivered by all workers when it was taken.
        let frontier_ms = shares.iter().map(|s| s.frontier_ms).max().unwrap_or(0);
        if frontier_ms < self.floor_ms {
            return;
        }
        let mut inputs = Vec::new();
        let mut pinned = Vec::new();
        for s in shares {
            inputs.extend(s.inputs);
            pinned.extend(s.pinned);
        }
        inputs.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut output: Vec<OutputPosition> = st
            .output
            .iter()
            .map(|(&partition, &offset)| OutputPosition { partition, offset })
            .collect();
        output.sort_by_key(|o| o.partition);
        st.output = st.delivered.clone();
        let cp = Checkpoint {
            version: VERSION,
            triggers_topic: self.triggers_topic.clone(),
            written_at_ms: crate::kafka::now_ms(),
            frontier_ms,
            lookback_ms: self.lookback_ms,
            inputs,
            output,
            pinned,
        };
        // A checkpoint still being written: skip this one (the next follows).
        let _ = self.writer.try_send(cp);
    }
}

/// The trigger ids written to `topic` from `from` on (the tail after the
/// previous checkpoint), read until every partition is at its end or
/// nothing arrives for `idle`.
pub fn read_trigger_ids(
    brokers: &str,
    group_id: &str,
    topic: &str,
    from: &[OutputPosition],
    idle: Duration,
) -> anyhow::Result<HashSet<String>> {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::message::Message as _;
    let mut ids = HashSet::new();
    if from.is_empty() {
        return Ok(ids);
    }
    let consumer = crate::kafka::consumer(brokers, group_id)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for o in from {
        tpl.add_partition_offset(topic, o.partition, rdkafka::Offset::Offset(o.offset))?;
    }
    consumer.assign(&tpl)?;
    #[derive(Deserialize)]
    struct Id {
        trigger_id: String,
    }
    let mut next: HashMap<i32, i64> = from.iter().map(|o| (o.partition, o.offset)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut last = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = std::time::Instant::now();
                next.insert(m.partition(), m.offset() + 1);
                if let Some(id) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Id>(p).ok())
                {
                    ids.insert(id.trigger_id);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading back the trigger topic"),
            None => {
                let at_end = next.iter().all(|(&p, &o)| {
                    crate::kafka::cached_high(&consumer, topic, p).is_some_and(|h| o >= h)
                });
                if at_end || last.elapsed() >= idle {
                    break;
                }
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::model::{Event, PriceMsg};

    fn price(p: &str, ts: Time) -> Input {
        Input::Price(PriceMsg {
            product_id: p.into(),
            ts,
            price: dataflows::model::Money(1.0),
            currency: None,
        })
    }

    #[test]
    fn round_trips_and_rejects_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let cp = Checkpoint {
            version: VERSION,
            triggers_topic: "triggers".into(),
            written_at_ms: 5,
            frontier_ms: 4,
            lookback_ms: 3,
            inputs: vec![InputPosition {
                topic: "tracking".into(),
                partition: 0,
                restart: 1,
                position: 2,
            }],
            output: vec![OutputPosition {
                partition: 0,
                offset: 9,
            }],
            pinned: vec![],
        };
        cp.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(cp));
        fs::write(dir.path().join(FILE), b"{\"version\":1,\"trig").unwrap();
        let e = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a readable checkpoint"), "{e}");
        fs::write(dir.path().join(FILE), b"{\"version\":7}").unwrap();
        let e = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("version 7"), "{e}");
    }

    #[test]
    fn restart_offsets_follow_the_closed_time() {
        let day = 86_400_000;
        let mut t = Tracker::new(
            &[
                ("tracking".into(), Topic::Tracking, 0, 0),
                ("prices".into(), Topic::Prices, 0, 0),
            ],
            10 * day,
        );
        let ev = |ts: Time, body: Body| {
            Input::Tracking(Event {
                event_id: format!("e{ts}").into(),
                user_id: Some("u".into()),
                anonymous_id: None,
                language: None,
                timezone: None,
                ts,
                known: ts,
                link_until: Time::MAX,
                body,
            })
        };
        // Day 1: a consent and a view; prices of p1 at day 1 and 2.
        let consent = ev(
            day,
            Body::Consent {
                channel: dataflows::model::Channel::Push,
                granted: false,
            },
        );
        t.read("tracking", 0, 0, Some((&consent, day)), b"{\"c\":1}");
        t.read("prices", 0, 0, Some((&price("p1", day), day)), b"{\"p\":1}");
        t.read(
            "prices",
            0,
            1,
            Some((&price("p1", 2 * day), 2 * day)),
            b"{\"p\":2}",
        );
        t.sample();
        let view = ev(5 * day, Body::AppOpen);
        t.read("tracking", 0, 1, Some((&view, 5 * day)), b"{\"v\":1}");
        t.read(
            "prices",
            0,
            2,
            Some((&price("p2", 5 * day), 5 * day)),
            b"{\"p\":3}",
        );
        t.sample();
        // At S = day 3: product records before it are pinned; tracking
        // stays (nothing is older than S - lookback).
        let (inputs, pinned) = t.advance(3 * day);
        assert_eq!((inputs[0].restart, inputs[0].position), (0, 2));
        assert_eq!((inputs[1].restart, inputs[1].position), (2, 3));
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        assert_eq!(pinned[0].payload, "{\"p\":2}");
        // At S = day 12: the consent (day 1) falls out of the lookback and
        // is pinned; the view (day 5) is still within it.
        let (inputs, pinned) = t.advance(12 * day);
        assert_eq!(inputs[0].restart, 1);
        assert_eq!(inputs[1].restart, 3);
        let payloads: Vec<_> = pinned.iter().map(|p| p.payload.as_str()).collect();
        assert_eq!(payloads, ["{\"c\":1}", "{\"p\":2}", "{\"p\":3}"]);
    }

    /// A pinned `forget` is final: it drops the id's pinned consents and is
    /// itself kept without anything but its id, type, time and the id it
    /// names; another id's consent stays.
    #[test]
    fn a_pinned_forget_drops_the_ids_consents_and_is_kept_minimal() {
        let day = 86_400_000;
        let mut t = Tracker::new(&[("tracking".into(), Topic::Tracking, 0, 0)], day);
        let ev = |id: &str, user: &str, ts: Time, body: Body| {
            Input::Tracking(Event {
                event_id: id.into(),
                user_id: Some(user.into()),
                anonymous_id: None,
                language: Some("az".into()),
                timezone: None,
                ts,
                known: ts,
                link_until: Time::MAX,
                body,
            })
        };
        let consent = |id: &str, user: &str, ts: Time| {
            ev(
                id,
                user,
                ts,
                Body::Consent {
                    channel: dataflows::model::Channel::Email,
                    granted: true,
                },
            )
        };
        let reads = [
            (consent("c1", "u1", day), "{\"consent u1\":1}"),
            (consent("c2", "u2", day), "{\"consent u2\":1}"),
            (
                ev("f1", "u1", 2 * day, Body::Forget),
                "{\"forget u1 with context\":1}",
            ),
            (consent("c3", "u1", 3 * day), "{\"consent u1 after\":1}"),
        ];
        for (offset, (input, payload)) in reads.iter().enumerate() {
            let ts = input.ts();
            t.read(
                "tracking",
                0,
                offset as i64,
                Some((input, ts)),
                payload.as_bytes(),
            );
            t.sample();
        }
        let (inputs, pinned) = t.advance(10 * day);
        assert_eq!(inputs[0].restart, 4);
        let payloads: Vec<&str> = pinned.iter().map(|p| p.payload.as_str()).collect();
        assert_eq!(
            payloads,
            [
                "{\"consent u2\":1}",
                r#"{"event_id":"f1","ts":172800000,"type":"forget","user_id":"u1"}"#
            ]
        );
    }
}
