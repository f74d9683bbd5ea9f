//! Transport for replay: recording files (wire.md, *Recorded-topic files*)
//! as one stream of lines in event-time order, in bounded memory.
//!
//! A recording may come in any line order, yet the job must see its
//! records in event-time order to close time as it goes. Replay reads its
//! input twice:
//!
//! 1. [`plan`] scans every source once for the `ts` of each line
//!    ([`line_ts`], a small JSON walker that reads only the keys on the way
//!    to `value.ts`) and measures its *disorder*: how far a line's `ts` lies
//!    behind the largest `ts` before it. A source whose disorder is small
//!    (recordings are usually near-ordered) is streamed as it is; one whose
//!    disorder is large and that is not small is sorted externally into
//!    run files (sorted runs on disk, merged on reading), so memory never
//!    grows with the recording's size.
//! 2. [`Plan::lines`] streams the sources merged by `ts`. The job holds back
//!    event time by the disorder bound only: no later line can be earlier
//!    than the largest `ts` read minus that bound.
//!
//! Lines are bytes: a line that is not UTF-8 is a bad record like any other,
//! with its file and line.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use dataflows::model::Time;
use thiserror::Error;

/// A recording that cannot be read.
#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("cannot read input {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write a sorted run of {path} to the temporary directory")]
    Spill {
        path: String,
        source: std::io::Error,
    },
}

/// Where recording lines come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file, streamed.
    File(PathBuf),
    /// Text held in memory (tests, the demo), with a name for locations.
    Text { name: String, text: Arc<String> },
}

impl Source {
    /// The name bad-record locations use.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Text { name, .. } => name.clone(),
        }
    }

    fn len(&self) -> Result<u64, RecordingError> {
        match self {
            Source::File(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| self.err(e)),
            Source::Text { text, .. } => Ok(text.len() as u64),
        }
    }

    fn err(&self, source: std::io::Error) -> RecordingError {
        RecordingError::Read {
            path: self.name(),
            source,
        }
    }

    /// A reader over the bytes from `start` on.
    fn open_at(&self, start: u64) -> Result<Box<dyn BufRead + Send>, RecordingError> {
        match self {
            Source::File(p) => {
                let mut f = File::open(p).map_err(|e| self.err(e))?;
                f.seek(SeekFrom::Start(start)).map_err(|e| self.err(e))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
            }
            Source::Text { text, .. } => {
                let mut c = std::io::Cursor::new(ArcBytes(text.clone()));
                c.set_position(start);
                Ok(Box::new(c))
            }
        }
    }
}

/// Shared text as bytes for a cursor.
struct ArcBytes(Arc<String>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// One line of the merged stream: where it came from and its bytes
/// (without the line end).
pub struct Line {
    /// Index of the source in the plan.
    pub source: usize,
    /// 1-based line number in its source.
    pub line_no: u64,
    pub bytes: Vec<u8>,
}

/// What replay reads: the sources in merge order and the disorder bound.
pub struct Plan {
    names: Vec<String>,
    parts: Vec<Part>,
    /// No line of the merged stream lies more than this behind the largest
    /// `ts` before it (ms).
    pub disorder_ms: Time,
    /// Lines with a `ts`, over every source.
    pub lines: u64,
    /// From the least to the largest `ts` of every source (ms).
    pub span_ms: Time,
    /// Sorted runs on disk, removed when the plan is dropped.
    _spill: Option<tempfile::TempDir>,
}

/// One stream to merge: a source as it is, or a sorted run of one.
enum Part {
    Plain(usize),
    Run { source: usize, path: PathBuf },
}

/// A source whose disorder is above this (ms) is sorted externally, unless
/// it is smaller than [`SPILL_MIN_BYTES`]: held back by that much event
/// time, a dense recording would keep too much in flight.
pub const STREAM_MAX_DISORDER_MS: Time = 10 * 60 * 1000;
/// Sources smaller than this are never spilled: they fit in memory.
pub const SPILL_MIN_BYTES: u64 = 64 << 20;
/// The size of one sorted run in memory while spilling.
const RUN_BYTES: usize = 256 << 20;

/// Disorder of one byte range of a source.
#[derive(Clone, Copy, Debug, Default)]
struct RangeScan {
    min_ts: Option<Time>,
    max_ts: Option<Time>,
    /// Largest lag behind the running maximum within the range.
    disorder: Time,
    /// Lines with a `ts`.
    lines: u64,
}

fn scan_range(source: &Source, start: u64, end: u64) -> Result<RangeScan, RecordingError> {
    let mut r = source.open_at(start)?;
    let mut pos = start;
    let mut buf = Vec::with_capacity(1024);
    if start > 0 {
        // The line that straddles `start` belongs to the previous range.
        pos += r.read_until(b'\n', &mut buf).map_err(|e| source.err(e))? as u64;
    }
    let mut scan = RangeScan::default();
    while pos < end {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| source.err(e))?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        let Some(ts) = line_ts(&buf) else { continue };
        scan.lines += 1;
        scan.min_ts = Some(scan.min_ts.map_or(ts, |m| m.min(ts)));
        match scan.max_ts {
            Some(m) if m > ts => scan.disorder = scan.disorder.max(m - ts),
            _ => scan.max_ts = Some(ts),
        }
    }
    Ok(scan)
}

/// The disorder of a source, scanned in `threads` byte ranges at once, and
/// its lines with a `ts` and their least and largest `ts`.
fn disorder(source: &Source, threads: usize) -> Result<(Time, RangeScan), RecordingError> {
    let len = source.len()?;
    let threads = if len < (8 << 20) { 1 } else { threads.max(1) };
    let step = len.div_ceil(threads as u64).max(1);
    let scans: Vec<Result<RangeScan, RecordingError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|i| s.spawn(move || scan_range(source, i * step, ((i + 1) * step).min(len))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread"))
            .collect()
    });
    let mut worst = 0;
    let mut before: Option<Time> = None;
    let mut total = RangeScan::default();
    for scan in scans {
        let scan = scan?;
        total.lines += scan.lines;
        total.min_ts = match (total.min_ts, scan.min_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        worst = worst.max(scan.disorder);
        if let (Some(b), Some(min)) = (before, scan.min_ts) {
            worst = worst.max(b.saturating_sub(min));
        }
        before = match (before, scan.max_ts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    total.max_ts = before;
    Ok((worst, total))
}

/// Scans `sources` and decides how to stream them (see the module doc),
/// using up to `threads` threads for the scan.
pub fn plan(sources: &[Source], threads: usize) -> Result<Plan, RecordingError> {
    let mut parts = Vec::new();
    let mut bound = 0;
    let mut spill: Option<tempfile::TempDir> = None;
    let mut lines = 0;
    let (mut first, mut last): (Option<Time>, Option<Time>) = (None, None);
    for (i, source) in sources.iter().enumerate() {
        let (d, scan) = disorder(source, threads)?;
        lines += scan.lines;
        first = match (first, scan.min_ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(scan.max_ts);
        if d > STREAM_MAX_DISORDER_MS && source.len()? >= SPILL_MIN_BYTES {
            let dir = match &spill {
                Some(d) => d,
                None => spill.insert(tempfile::tempdir().map_err(|e| RecordingError::Spill {
                    path: source.name(),
                    source: e,
                })?),
            };
            let runs = sort_runs(source, i, dir.path())?;
            tracing::info!(
                source = %source.name(),
                disorder_ms = d,
                runs = runs.len(),
                "input out of order: sorted externally"
            );
            parts.extend(runs.into_iter().map(|path| Part::Run { source: i, path }));
        } else {
            bound = bound.max(d);
            parts.push(Part::Plain(i));
        }
    }
    Ok(Plan {
        names: sources.iter().map(Source::name).collect(),
        parts,
        disorder_ms: bound,
        lines,
        span_ms: match (first, last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        },
        _spill: spill,
    })
}

/// Writes `source` as sorted runs of at most [`RUN_BYTES`] into `dir`.
/// A run line is `ts line_no len` (little-endian u64, u64, u32) and the
/// line's bytes; lines without a readable `ts` sort first (they are bad
/// records, and order does not matter for them).
fn sort_runs(
    source: &Source,
    index: usize,
    dir: &std::path::Path,
) -> Result<Vec<PathBuf>, RecordingError> {
    let spill_err = |e| RecordingError::Spill {
        path: source.name(),
        source: e,
    };
    let mut r = source.open_at(0)?;
    let mut runs = Vec::new();
    let mut held: Vec<(Time, u64, Vec<u8>)> = Vec::new();
    let mut held_bytes = 0usize;
    let mut line_no = 0u64;
    let flush = |held: &mut Vec<(Time, u64, Vec<u8>)>,
                 runs: &mut Vec<PathBuf>|
     -> Result<(), RecordingError> {
        held.sort_by_key(|(ts, n, _)| (*ts, *n));
        let path = dir.join(format!("run-{index}-{}", runs.len()));
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(spill_err)?);
        for (ts, n, bytes) in held.drain(..) {
            w.write_all(&ts.to_le_bytes()).map_err(spill_err)?;
            w.write_all(&n.to_le_bytes()).map_err(spill_err)?;
            w.write_all(&(bytes.len() as u32).to_le_bytes())
                .map_err(spill_err)?;
            w.write_all(&bytes).map_err(spill_err)?;
        }
        w.flush().map_err(spill_err)?;
        runs.push(path);
        Ok(())
    };
    loop {
        let mut buf = Vec::new();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| source.err(e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        trim_line_end(&mut buf);
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ts = line_ts(&buf).unwrap_or(0);
        held_bytes += buf.len() + 48;
        held.push((ts, line_no, buf));
        if held_bytes >= RUN_BYTES {
            flush(&mut held, &mut runs)?;
            held_bytes = 0;
        }
    }
    if !held.is_empty() {
        flush(&mut held, &mut runs)?;
    }
    Ok(runs)
}

fn trim_line_end(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

/// One part being read: its next line and that line's `ts`.
struct Cursor {
    reader: Box<dyn BufRead + Send>,
    source: usize,
    run: bool,
    line_no: u64,
    /// The next line, with the `ts` it merges by.
    head: Option<(Time, Line)>,
}

impl Cursor {
    fn advance(&mut self, need_ts: bool) -> std::io::Result<()> {
        self.head = None;
        if self.run {
            let mut hdr = [0u8; 20];
            match self.reader.read_exact(&mut hdr) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let ts = u64::from_le_bytes(hdr[0..8].try_into().expect("8 bytes"));
            let line_no = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(hdr[16..20].try_into().expect("4 bytes")) as usize;
            let mut bytes = vec![0; len];
            self.reader.read_exact(&mut bytes)?;
            self.head = Some((
                ts,
                Line {
                    source: self.source,
                    line_no,
                    bytes,
                },
            ));
            return Ok(());
        }
        loop {
            let mut bytes = Vec::with_capacity(256);
            if self.reader.read_until(b'\n', &mut bytes)? == 0 {
                return Ok(());
            }
            self.line_no += 1;
            trim_line_end(&mut bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ts = if need_ts {
                line_ts(&bytes).unwrap_or(0)
            } else {
                0
            };
            self.head = Some((
                ts,
                Line {
                    source: self.source,
                    line_no: self.line_no,
                    bytes,
                },
            ));
            return Ok(());
        }
    }
}

/// The merged stream of a plan's lines (see [`Plan::lines`]).
pub struct Lines {
    names: Vec<String>,
    cursors: Vec<Cursor>,
    /// Cursors by their head's `(ts, part)`, least first.
    heap: BinaryHeap<Reverse<(Time, usize)>>,
    error: Option<RecordingError>,
}

impl Plan {
    /// The name of source `i`, for locations.
    pub fn source_name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Every non-blank line of every source, merged by `ts` across parts
    /// (each part in its own order). Read errors end the stream; see
    /// [`Lines::error`].
    pub fn lines(&self, sources: &[Source]) -> Result<Lines, RecordingError> {
        let merging = self.parts.len() > 1;
        let mut cursors = Vec::new();
        let mut heap = BinaryHeap::new();
        for (k, part) in self.parts.iter().enumerate() {
            let (reader, source, run) = match part {
                Part::Plain(i) => (sources[*i].open_at(0)?, *i, false),
                Part::Run { source, path } => {
                    let f = File::open(path).map_err(|e| RecordingError::Read {
                        path: path.display().to_string(),
                        source: e,
                    })?;
                    let r: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, f));
                    (r, *source, true)
                }
            };
            let mut c = Cursor {
                reader,
                source,
                run,
                line_no: 0,
                head: None,
            };
            c.advance(merging).map_err(|e| sources[source].err(e))?;
            if let Some((ts, _)) = &c.head {
                heap.push(Reverse((*ts, k)));
            }
            cursors.push(c);
        }
        Ok(Lines {
            names: self.names.clone(),
            cursors,
            heap,
            error: None,
        })
    }
}

impl Lines {
    /// The read error that ended the stream early, if any.
    pub fn error(&mut self) -> Option<RecordingError> {
        self.error.take()
    }
}

impl Iterator for Lines {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        let Reverse((_, k)) = self.heap.pop()?;
        let merging = self.cursors.len() > 1;
        let c = &mut self.cursors[k];
        let (_, line) = c.head.take().expect("a cursor in the heap has a head");
        if let Err(e) = c.advance(merging) {
            self.error = Some(RecordingError::Read {
                path: self.names[c.source].clone(),
                source: e,
            });
            self.heap.clear();
        } else if let Some((ts, _)) = &c.head {
            self.heap.push(Reverse((*ts, k)));
        }
        Some(line)
    }
}

/// The `ts` of a recording line's payload (`value.ts`), as the codec would
/// read it: `None` for a line without one (a bad record). A small walker
/// reads the keys on the way and skips everything else; lines it cannot
/// follow (escaped keys, odd spacing it does not expect) are read with
/// serde instead, so the answer is always the codec's.
pub fn line_ts(line: &[u8]) -> Option<Time> {
    match (Walker { b: line, i: 0 }).value_ts() {
        Walk::Found(ts) => Some(ts),
        Walk::Absent => None,
        Walk::Unsure => slow_ts(line),
    }
}

fn slow_ts(line: &[u8]) -> Option<Time> {
    #[derive(serde::Deserialize)]
    struct Outer {
        value: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        ts: Option<Time>,
    }
    serde_json::from_slice::<Outer>(line).ok()?.value?.ts
}

enum Walk {
    Found(Time),
    Absent,
    Unsure,
}

struct Walker<'a> {
    b: &'a [u8],
    i: usize,
}

impl Walker<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A string starting at the cursor; returns its raw contents, or
    /// `None` if it is malformed. `escaped` says whether it held a `\`.
    fn string(&mut self) -> Option<(&[u8], bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            let k = j + memchr::memchr2(b'"', b'\\', &self.b[j..])?;
            if self.b[k] == b'\\' {
                escaped = true;
                j = k + 2;
                if j > self.b.len() {
                    return None;
                }
            } else {
                self.i = k + 1;
                return Some((&self.b[start..k], escaped));
            }
        }
    }

    /// Skips one value of any kind.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'
                    )
                {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// Finds `key` among the members of the object at the cursor and leaves
    /// the cursor on its value.
    fn member(&mut self, key: &[u8]) -> Walk {
        self.ws();
        if self.peek() != Some(b'{') {
            return Walk::Absent;
        }
        self.i += 1;
        loop {
            self.ws();
            if self.peek() == Some(b'}') {
                return Walk::Absent;
            }
            let Some((k, escaped)) = self.string() else {
                return Walk::Unsure;
            };
            if escaped {
                return Walk::Unsure;
            }
            let found = k == key;
            self.ws();
            if self.peek() != Some(b':') {
                return Walk::Unsure;
            }
            self.i += 1;
            self.ws();
            if found {
                return Walk::Found(0);
            }
            if self.skip().is_none() {
                return Walk::Unsure;
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => return Walk::Absent,
                _ => return Walk::Unsure,
            }
        }
    }

    fn value_ts(&mut self) -> Walk {
        match self.member(b"value") {
            Walk::Found(_) => {}
            other => return other,
        }
        match self.member(b"ts") {
            Walk::Found(_) => {}
            other => return other,
        }
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            let Some(n) = v
                .checked_mul(10)
                .and_then(|x| x.checked_add((d - b'0') as u64))
            else {
                return Walk::Unsure;
            };
            v = n;
            self.i += 1;
        }
        // Only a plain integer followed by the end of the member is certain.
        if self.i == start || (self.b[start] == b'0' && self.i - start > 1) {
            return Walk::Unsure;
        }
        self.ws();
        match self.peek() {
            Some(b',') | Some(b'}') => Walk::Found(v),
            _ => Walk::Unsure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_value_ts_like_the_codec() {
        let cases: &[(&str, Option<Time>)] = &[
            (r#"{"topic":"tracking","value":{"ts":5,"x":1}}"#, Some(5)),
            (
                r#"{"topic":"t","key":"a\"b","value":{"a":[1,{"ts":9}],"ts": 17 }}"#,
                Some(17),
            ),
            (r#"{"ts":3,"value":{"b":"}","ts":4}}"#, Some(4)),
            (r#"{"topic":"t","value":{"x":1}}"#, None),
            (r#"{"topic":"t","value":{"ts":-1}}"#, None),
            (r#"{"topic":"t","value":{"ts":1.5}}"#, None),
            (r#"{"topic":"t","value":{"t\u0073":7}}"#, Some(7)),
            (r#"{"topic":"t","v\u0061lue":{"ts":8}}"#, Some(8)),
            (r#"not json"#, None),
            (r#"{"topic":"t","value":[1,2]}"#, None),
        ];
        for (line, want) in cases {
            assert_eq!(line_ts(line.as_bytes()), *want, "{line}");
        }
    }

    fn text(name: &str, s: &str) -> Source {
        Source::Text {
            name: name.into(),
            text: Arc::new(s.to_string()),
        }
    }

    #[test]
    fn merges_sources_by_ts_and_bounds_disorder() {
        let a = text(
            "a",
            "{\"value\":{\"ts\":1}}\n{\"value\":{\"ts\":5}}\n\n{\"value\":{\"ts\":4}}\n",
        );
        let b = text("b", "{\"value\":{\"ts\":2}}\n{\"value\":{\"ts\":3}}\n");
        let sources = vec![a, b];
        let plan = plan(&sources, 2).unwrap();
        assert_eq!(plan.disorder_ms, 1);
        let got: Vec<(usize, u64)> = plan
            .lines(&sources)
            .unwrap()
            .map(|l| (l.source, l.line_no))
            .collect();
        assert_eq!(got, vec![(0, 1), (1, 1), (1, 2), (0, 2), (0, 4)]);
    }

    #[test]
    fn sorted_runs_keep_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(
            &path,
            "{\"value\":{\"ts\":9}}\nbad\n{\"value\":{\"ts\":2}}\n",
        )
        .unwrap();
        let src = Source::File(path);
        let runs = sort_runs(&src, 0, dir.path()).unwrap();
        let plan = Plan {
            names: vec![src.name()],
            parts: runs
                .into_iter()
                .map(|path| Part::Run { source: 0, path })
                .collect(),
            disorder_ms: 0,
            lines: 3,
            span_ms: 7,
            _spill: None,
        };
        let got: Vec<(u64, Vec<u8>)> = plan
            .lines(std::slice::from_ref(&src))
            .unwrap()
            .map(|l| (l.line_no, l.bytes))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, b"bad".to_vec()),
                (3, b"{\"value\":{\"ts\":2}}".to_vec()),
                (1, b"{\"value\":{\"ts\":9}}".to_vec())
            ]
        );
    }
}
