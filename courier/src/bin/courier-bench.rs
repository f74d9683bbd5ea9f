//! Decision throughput of the courier with every policy on and real sends
//! to a local HTTP sink (webhook, FCM-shaped push and SMS all go to one
//! keep-alive HTTP/1.1 server on 127.0.0.1). No broker: records are fed to
//! the same batch path the Kafka runner uses (decide -> store commit ->
//! outbox -> senders -> outcome commit), receipts are counted and dropped.
//!
//! `cargo run --release -p tripwire-courier --bin courier-bench -- --help`

use clap::Parser;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tripwire_courier::channels::Channels;
use tripwire_courier::clock::{Clock, OffsetClock};
use tripwire_courier::config::Config;
use tripwire_courier::engine::{Engine, Input};
use tripwire_courier::model::{Consent, Profile, PushToken};
use tripwire_courier::runner::Pipeline;
use tripwire_courier::sender::{ReceiptSink, Sender, SenderCtx};
use tripwire_courier::store::Store;
use tripwire_courier::telemetry::Metrics;
use tripwire_courier::testkit::HttpSink;

/// mimalloc: markedly less allocator overhead than glibc malloc for the
/// many small, short-lived allocations of JSON records.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark of tripwire-courier decisions per second.
#[derive(Debug, Parser)]
struct Args {
    /// Trigger records to decide.
    #[arg(long, default_value_t = 500_000)]
    triggers: usize,
    /// Distinct users (all have a profile).
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Records per batch (one store commit each).
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Sends in flight.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Control-group share of every campaign (1.0: nothing is sent, which
    /// measures the decisions alone).
    #[arg(long, default_value_t = 0.1)]
    control_share: f64,
}

// 2024-01-15T12:00:00Z: daytime in UTC and Baku, night in Auckland.
const START: i64 = 1_705_320_000_000;

fn config(sink: &HttpSink, in_flight: usize, batch: usize, control_share: f64) -> String {
    let mut s = format!(
        r#"
[defaults]
default_timezone = "Asia/Baku"
fallback_language = "en"
quiet_hours_start = "22:00"
quiet_hours_end = "09:00"
max_messages_per_window = 3
cap_window_ms = 86400000
min_gap_ms = 32400000
reeligible_after_ms = 604800000
control_share = {control_share}
max_age_ms = 21600000
channels = ["push", "sms", "webhook"]

[engine]
batch_max_records = {batch}
max_in_flight = {in_flight}

[channels.webhook]
url = "{hook}"
allow_http = true
secret = "bench-secret"
rate_per_sec = 1000000
[channels.push]
endpoint = "{base}"
allow_http = true
project_id = "bench"
access_token = "t"
rate_per_sec = 1000000
[channels.sms]
url = "{sms}"
allow_http = true
sender = "SHOP"
rate_per_sec = 1000000
"#,
        hook = sink.url("/hook"),
        base = sink.url(""),
        sms = sink.url("/sms"),
    );
    for (i, c) in [
        "abandoned_cart",
        "price_drop",
        "abandoned_browse",
        "reactivation",
    ]
    .iter()
    .enumerate()
    {
        s.push_str(&format!(
            r#"
[campaigns.{c}]
priority = {p}
deep_link = "https://shop.example/p/{{{{ item.product_id }}}}?utm_campaign={{{{ campaign }}}}"
[campaigns.{c}.templates.en]
title = "{{{{ item.title }}}}: now {{{{ item.price }}}} AZN"
body = "Was {{{{ item.old_price }}}} AZN. {{{{ deep_link }}}}"
[campaigns.{c}.templates.az]
title = "{{{{ item.title }}}}: indi {{{{ item.price }}}} AZN"
body = "Əvvəl {{{{ item.old_price }}}} AZN idi. {{{{ deep_link }}}}"
[campaigns.{c}.templates.ru]
title = "{{{{ item.title }}}}: теперь {{{{ item.price }}}} AZN"
body = "Было {{{{ item.old_price }}}} AZN. {{{{ deep_link }}}}"
"#,
            p = 10 - i
        ));
    }
    s
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of this process so far (/proc/self/stat,
/// assuming the usual 100 ticks per second).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0)
}

fn payload(i: usize, users: usize, now: i64) -> Vec<u8> {
    if i % 1000 == 999 {
        return b"{\"trigger_id\": 42}".to_vec(); // malformed
    }
    // 0.5% redeliveries of the previous record
    let n = if i % 200 == 199 { i - 1 } else { i };
    let campaigns = [
        "abandoned_cart",
        "price_drop",
        "abandoned_browse",
        "reactivation",
    ];
    let user = (n * 7919) % users;
    let ts = if n % 100 == 0 {
        now - 7 * 3_600_000
    } else {
        now - 1000
    };
    let lang = ["az", "en", "ru", "fr"][n % 4];
    format!(
        r#"{{"trigger_id":"t{n:016x}","campaign":"{c}","kind":"{c}","user_id":"u{user}","ts":{ts},"items":[{{"product_id":"p{p}","price":19.9,"old_price":24.5,"title":"Kettle {p}","url":"https://shop.example/p{p}"}}],"language":"{lang}","timezone":"Asia/Baku"}}"#,
        c = campaigns[n % 4],
        p = n % 5000
    )
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let sink = HttpSink::start(false).await?;
    let cfg = Config::from_toml(&config(
        &sink,
        args.in_flight,
        args.batch,
        args.control_share,
    ))?;
    let dir = std::env::temp_dir().join(format!("courier-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(Store::open(&dir.join("bench.redb"))?);
    let clock = Arc::new(OffsetClock::new(START));
    let metrics = Metrics::new();

    // Profiles: a third push, a third SMS, a third without consent (they
    // fall back to the webhook); one in ten lives in Auckland (night:
    // deferred by quiet hours).
    let profiles: Vec<Profile> = (0..args.users)
        .map(|u| Profile {
            user_id: format!("u{u}"),
            ts: 1,
            email: None,
            phone: (u % 3 == 1).then(|| format!("+99450{u:07}")),
            push_tokens: if u % 3 == 0 {
                vec![PushToken {
                    platform: Some("android".into()),
                    token: format!("tok-{u}"),
                }]
            } else {
                vec![]
            },
            language: None,
            timezone: Some(
                if u % 10 == 0 {
                    "Pacific/Auckland"
                } else {
                    "Asia/Baku"
                }
                .into(),
            ),
            consent: Consent {
                push: Some(u % 3 == 0),
                email: Some(false),
                sms: Some(u % 3 == 1),
            },
        })
        .collect();
    for chunk in profiles.chunks(10_000) {
        store.put_profiles(chunk)?;
    }
    drop(profiles);

    let mut engine = Engine::new(&cfg, metrics.clone(), "triggers")?;
    let receipts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink_r = ReceiptSink::Null(receipts.clone());
    let sender = Sender::spawn(SenderCtx {
        channels: Arc::new(Channels::new(&cfg)?),
        retry: cfg.retry.clone(),
        store: store.clone(),
        sink: sink_r.clone(),
        metrics: metrics.clone(),
        clock: clock.clone() as Arc<dyn Clock>,
        max_in_flight: cfg.engine.max_in_flight,
        crash_after_sends: None,
    });

    let rss_start = rss_kb("VmRSS:");
    let mut rss_samples = Vec::new();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let mut pipeline = Pipeline::new(
        store.clone(),
        sink_r.clone(),
        sender.dispatcher(),
        metrics.clone(),
    );
    let mut i = 0;
    while i < args.triggers {
        let end = (i + args.batch).min(args.triggers);
        let now = clock.now_ms();
        let inputs: Vec<Input> = (i..end)
            .map(|k| Input::Record {
                partition: 0,
                offset: k as i64,
                key: None,
                payload: Some(payload(k, args.users, START)),
            })
            .collect();
        pipeline.submit(&mut engine, inputs, now, ()).await?;
        i = end;
        if (i / args.batch).is_multiple_of(25) {
            rss_samples.push(rss_kb("VmRSS:") / 1024);
        }
    }
    pipeline.flush(&mut engine).await?;
    drop(pipeline);
    let decided = t0.elapsed();
    // Wait for the sends to drain.
    let deadline = Instant::now() + Duration::from_secs(300);
    while metrics.outbox.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    sender.shutdown(Duration::from_secs(10)).await;
    let m = metrics.render();
    let count = |status: &str| -> u64 {
        m.lines()
            .filter(|l| {
                l.starts_with("tripwire_courier_trigger_decisions_total{")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>() as u64
    };
    println!("triggers decided      {}", args.triggers);
    println!(
        "decision phase        {:.2} s  -> {:.0} decisions/s",
        decided.as_secs_f64(),
        args.triggers as f64 / decided.as_secs_f64()
    );
    println!(
        "end to end (sends in) {:.2} s  -> {:.0} decisions/s",
        total.as_secs_f64(),
        args.triggers as f64 / total.as_secs_f64()
    );
    println!(
        "sends                 {} HTTP requests at the sink ({:.0}/s)",
        sink.count(),
        sink.count() as f64 / total.as_secs_f64()
    );
    println!(
        "cpu (user+sys)        {:.2} s -> {:.0} decisions per CPU-second (load-independent; the machine has 2 cores)",
        cpu,
        args.triggers as f64 / cpu
    );
    for s in ["sent", "deferred", "suppressed", "held_out", "failed"] {
        println!("  {s:<20}{}", count(s));
    }
    println!("receipts              {}", receipts.load(Ordering::Relaxed));

    println!(
        "rss                   start {} MiB, samples (MiB) {:?}",
        rss_start / 1024,
        rss_samples
    );
    println!("peak rss              {} MiB", rss_kb("VmHWM:") / 1024);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
