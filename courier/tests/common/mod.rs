//! Shared test support: an in-process harness around the engine, store and
//! senders (no broker), a real SMTP server (mailin-embedded) and the tansu
//! Kafka broker.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tripwire_courier::channels::Channels;
use tripwire_courier::clock::{Clock, ManualClock};
use tripwire_courier::config::Config;
use tripwire_courier::engine::{Engine, Input};
use tripwire_courier::model::{Profile, Receipt};
use tripwire_courier::runner::{decide_and_apply, release_due};
use tripwire_courier::sender::{ReceiptSink, Sender, SenderCtx};
use tripwire_courier::store::Store;
use tripwire_courier::telemetry::Metrics;

/// 2024-01-15T12:00:00Z
pub const NOON_UTC: i64 = 1_705_320_000_000;
pub const H: i64 = 3_600_000;

pub struct Harness {
    pub store: Arc<Store>,
    pub engine: Engine,
    pub sink: ReceiptSink,
    pub receipts: Arc<Mutex<Vec<Receipt>>>,
    pub sender: Option<Sender>,
    pub clock: ManualClock,
    pub metrics: Metrics,
    pub offset: i64,
}

impl Harness {
    pub fn new(cfg: &str, store_path: &Path, now: i64) -> Harness {
        let cfg = Config::from_toml(cfg).expect("config");
        let metrics = Metrics::new();
        let store = Arc::new(Store::open(store_path).expect("store"));
        let receipts = Arc::new(Mutex::new(Vec::new()));
        let sink = ReceiptSink::Memory(receipts.clone());
        let clock = ManualClock::new(now);
        let engine = Engine::new(&cfg, metrics.clone(), "triggers").expect("engine");
        let channels = Arc::new(Channels::new(&cfg).expect("channels"));
        let sender = Sender::spawn(SenderCtx {
            channels,
            retry: cfg.retry.clone(),
            store: store.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            clock: Arc::new(clock.clone()) as Arc<dyn Clock>,
            max_in_flight: cfg.engine.max_in_flight,
            crash_after_sends: None,
        });
        Harness {
            store,
            engine,
            sink,
            receipts,
            sender: Some(sender),
            clock,
            metrics,
            offset: 0,
        }
    }

    /// Resumes the outbox as the runner does at start.
    pub async fn resume_outbox(&self) {
        let pending: Vec<tripwire_courier::channels::OutboxEntry> = self.store.outbox().unwrap();
        for e in pending {
            self.sender.as_ref().unwrap().dispatch(e).await;
        }
    }

    pub fn profiles(&self, ps: &[serde_json::Value]) {
        let ps: Vec<Profile> = ps
            .iter()
            .map(|p| serde_json::from_value(p.clone()).unwrap())
            .collect();
        self.store.put_profiles(&ps).unwrap();
    }

    /// Trigger records as batch inputs.
    pub fn inputs(&mut self, triggers: &[serde_json::Value]) -> Vec<Input> {
        triggers
            .iter()
            .map(|t| {
                self.offset += 1;
                Input::Record {
                    partition: 0,
                    offset: self.offset,
                    key: None,
                    payload: Some(serde_json::to_vec(t).unwrap()),
                }
            })
            .collect()
    }

    /// Feeds raw payloads as one batch.
    pub async fn feed_raw(&mut self, payloads: Vec<Vec<u8>>) {
        let inputs = payloads
            .into_iter()
            .map(|p| {
                self.offset += 1;
                Input::Record {
                    partition: 0,
                    offset: self.offset,
                    key: None,
                    payload: Some(p),
                }
            })
            .collect();
        decide_and_apply(
            &mut self.engine,
            &self.store,
            &self.sink,
            self.sender.as_ref().unwrap(),
            &self.metrics,
            self.clock.now_ms(),
            inputs,
        )
        .await
        .unwrap();
    }

    pub async fn feed(&mut self, triggers: &[serde_json::Value]) {
        self.feed_raw(
            triggers
                .iter()
                .map(|t| serde_json::to_vec(t).unwrap())
                .collect(),
        )
        .await
    }

    pub async fn release(&mut self) {
        release_due(
            &mut self.engine,
            &self.store,
            &self.sink,
            self.sender.as_ref().unwrap(),
            &self.metrics,
            &self.clock,
            1000,
        )
        .await
        .unwrap();
    }

    /// Waits until `n` send outcomes are recorded (bounded).
    pub async fn wait_sends(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .sender
            .as_ref()
            .unwrap()
            .recorded
            .load(Ordering::SeqCst)
            < n
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} send outcomes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn receipts(&self) -> Vec<Receipt> {
        self.receipts.lock().unwrap().clone()
    }

    pub fn receipt(&self, trigger_id: &str) -> Vec<Receipt> {
        self.receipts()
            .into_iter()
            .filter(|r| r.trigger_id == trigger_id)
            .collect()
    }

    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(5)).await
    }

    pub async fn stop_within(mut self, grace: Duration) {
        if let Some(s) = self.sender.take() {
            s.shutdown(grace).await;
        }
    }
}

pub fn trigger(id: &str, campaign: &str, user: &str, ts: i64) -> serde_json::Value {
    serde_json::json!({
        "trigger_id": id, "campaign": campaign, "kind": "abandoned_cart", "user_id": user, "ts": ts,
        "items": [{"product_id": "p1", "title": "Kettle", "price": 19.5, "old_price": 25.0, "url": "https://shop.example/p1"}],
        "language": "en", "unknown_field": {"ignored": true}
    })
}

/// One e-mail received by the test SMTP server.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Clone, Default)]
struct MailHandler {
    current: Arc<Mutex<Mail>>,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl mailin_embedded::Handler for MailHandler {
    fn data_start(
        &mut self,
        _domain: &str,
        from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        *self.current.lock().unwrap() = Mail {
            from: from.to_string(),
            to: to.to_vec(),
            data: String::new(),
        };
        mailin_embedded::response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current
            .lock()
            .unwrap()
            .data
            .push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }
    fn data_end(&mut self) -> mailin_embedded::Response {
        let m = std::mem::take(&mut *self.current.lock().unwrap());
        self.mails.lock().unwrap().push(m);
        mailin_embedded::response::OK
    }
}

/// A real SMTP server (mailin-embedded) on 127.0.0.1, in its own threads.
pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = MailHandler::default();
        let mails = handler.mails.clone();
        let mut server = mailin_embedded::Server::new(handler);
        server
            .with_name("smtp.test")
            .with_ssl(mailin_embedded::SslConfig::None)
            .unwrap()
            .with_num_threads(2)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { port, mails }
    }
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// HMAC-SHA256 (RFC 2104), independent of the courier's signing code.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A receiver's check of a webhook request as docs/courier.md describes it,
/// written from the documentation with the independent HMAC above (never
/// with `channels::sign`): parse `t=<secs>,v1=<hex>` (unknown keys ignored,
/// several `v1` allowed), refuse a `t` more than `tolerance_s` away from
/// `now_s`, recompute HMAC-SHA256(key, "<t>.<idempotency key>.<body>") and
/// compare in constant time. Returns `t`.
pub fn verify_webhook(
    key: &[u8],
    header: &str,
    idempotency_key: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<i64, String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("malformed element {part:?}"))?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| format!("bad t {v:?}"))?),
            "v1" => v1.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or("no t")?;
    if (now_s - t).abs() > tolerance_s {
        return Err(format!("t={t} is more than {tolerance_s} s from {now_s}"));
    }
    let mut signed = format!("{t}.{idempotency_key}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = hex::encode(hmac_sha256(key, &signed));
    if v1.iter().any(|s| ct_eq(s.as_bytes(), expected.as_bytes())) {
        Ok(t)
    } else {
        Err("signature mismatch".into())
    }
}

/// Checks the exact shape `t=<decimal>,v1=<64 lower-case hex>`.
pub fn assert_signature_shape(header: &str) {
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|r| r.split_once(",v1="))
        .unwrap_or_else(|| panic!("not t=..,v1=..: {header:?}"));
    assert!(
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()),
        "t is not decimal seconds: {header:?}"
    );
    assert!(
        v1.len() == 64 && v1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "v1 is not 64 lower-case hex digits: {header:?}"
    );
}

/// The system clock, Unix seconds.
pub fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------- tansu

/// The tansu binary: $TANSU_BIN, else `tansu` on PATH, else
/// ~/.cargo/bin/tansu. Panics (fails the test) with a clear message when
/// absent.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TANSU_BIN={} does not exist", p.display());
        return p;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("tansu");
            if c.is_file() {
                return c;
            }
        }
    }
    if let Ok(home) = std::env::var("HOME") {
        let c = PathBuf::from(home).join(".cargo/bin/tansu");
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "the tansu Kafka broker is required for this test but was not found: set TANSU_BIN, \
         put `tansu` on PATH, or install it with `cargo install tansu --locked --features dynostore,libsql`"
    );
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker on 127.0.0.1 with in-memory storage; killed on drop.
pub struct Broker {
    pub port: u16,
    child: std::process::Child,
    /// Holds the broker's log (removed with the broker).
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = tansu_bin();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = std::process::Command::new(&bin)
            .args(tansu_args(&url))
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tansu_args(url: &str) -> Vec<String> {
    vec![
        "broker".into(),
        "--listener-url".into(),
        url.into(),
        "--advertised-listener-url".into(),
        url.into(),
        "--storage-engine".into(),
        "memory://tansu/".into(),
    ]
}
