//! Time density and round width change the cost of a replay, never its
//! output: a sparse recording spanning months (retention windows open and
//! close in it) gives the same records at rounds of 1 ms, 1 s and 1 h, with
//! the rounds replay chooses itself, at 1 and 2 workers and in shuffled line
//! order; and retention ends at its exact millisecond whatever the round.

mod common_replay;

use common_replay::{config, replay_all, serialise};
use tripwire::config::Config;
use tripwire::generate::{lines, GenerateArgs};
use tripwire::replay::{replay_with, text_sources, Rounds};

const T0: u64 = 1_700_000_000_000;
const M: u64 = 60_000;
const H: u64 = 60 * M;
const D: u64 = 24 * H;

/// Replays `text` with every kind at `rounds` (bucket `bucket_ms`) and
/// returns the serialised records, sorted.
fn run(text: &str, workers: usize, bucket_ms: u64, rounds: Rounds) -> Vec<String> {
    run_with(text, workers, &config(bucket_ms, ""), rounds)
}

/// Replays `text` with `config` at `rounds`; the serialised records, sorted.
fn run_with(text: &str, workers: usize, config: &Config, rounds: Rounds) -> Vec<String> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = out.clone();
    replay_with(
        text_sources(vec![("sparse.jsonl".into(), text.to_string())]),
        config,
        workers,
        None,
        rounds,
        Box::new(move |batch| {
            into.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }),
    )
    .expect("replay runs");
    let mut v = serialise(&out.lock().unwrap());
    v.sort();
    v
}

#[test]
fn sparse_recording_gives_the_same_records_at_any_round_width() {
    // 6,000 events over about 139 days (one per 2000 s on average): carts
    // and activity outlive their retention (90 d, 31 d) within the file.
    let gen = GenerateArgs {
        events: 6_000,
        users: 300,
        products: 60,
        rate_per_s: 1.0 / 2000.0,
        ..GenerateArgs::default()
    };
    let text: String = lines(&gen).map(|l| l + "\n").collect();
    let reference = run(&text, 1, 1_000, Rounds::Configured);
    assert!(
        reference.len() > 100,
        "the workload fires ({} records)",
        reference.len()
    );
    for (workers, bucket, rounds) in [
        (1, 1, Rounds::Configured),
        (2, 3_600_000, Rounds::Configured),
        (1, 1_000, Rounds::Auto),
        (2, 1_000, Rounds::Auto),
    ] {
        assert_eq!(
            run(&text, workers, bucket, rounds),
            reference,
            "{workers} workers, bucket {bucket} ms, {rounds:?}"
        );
    }
    // Any line order: the same records (the input is scanned for its
    // disorder and held back by exactly that much).
    let mut shuffled: Vec<&str> = text.lines().collect();
    shuffled.reverse();
    let shuffled: String = shuffled.into_iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(run(&shuffled, 2, 1_000, Rounds::Auto), reference);
}

/// Retention of seconds (the live recovery test's configuration): facts
/// expire inside rounds, anonymous events are linked after their own or
/// their link's retention ended, carts become known after their prices
/// expired. One minute of traffic gives the same records at rounds of
/// 1 ms, 1 s and 10 s and with the rounds replay chooses.
#[test]
fn short_retention_gives_the_same_records_at_any_round_width() {
    let gen = GenerateArgs {
        events: 6_000,
        users: 300,
        products: 100,
        rate_per_s: 100.0,
        ..GenerateArgs::default()
    };
    let text: String = lines(&gen).map(|l| l + "\n").collect();
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/live/recovery.toml"
    ))
    .unwrap();
    let with_bucket = |b: u64| {
        let text = fixture.replace("[time]\n", &format!("[time]\nbucket_ms = {b}\n"));
        Config::parse(&text, "recovery.toml").expect("valid configuration")
    };
    // The same minute with a 40 s pause after its first 15 s: users come
    // back after their facts (and identity links) expired.
    let gapped: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ts = v["value"]["ts"].as_u64().unwrap();
            if ts >= T0 + 15_000 {
                v["value"]["ts"] = (ts + 40_000).into();
            }
            format!("{v}\n")
        })
        .collect();
    for text in [&text, &gapped] {
        let reference = run_with(text, 2, &with_bucket(1_000), Rounds::Configured);
        assert!(reference.len() > 1_000, "{} records", reference.len());
        for (workers, bucket, rounds) in [
            (1, 1, Rounds::Configured),
            (2, 10_000, Rounds::Configured),
            (2, 20_000, Rounds::Configured),
            (2, 1_000, Rounds::Auto),
        ] {
            let got = run_with(text, workers, &with_bucket(bucket), rounds);
            let differ: Vec<_> = got
                .iter()
                .filter(|r| !reference.contains(r))
                .chain(reference.iter().filter(|r| !got.contains(r)))
                .take(3)
                .collect();
            assert!(
                differ.is_empty(),
                "{workers} workers, bucket {bucket} ms, {rounds:?}: {} vs {} records, e.g. {differ:?}",
                got.len(),
                reference.len()
            );
        }
    }
}

/// A cart item added 90 d (`retention.cart_ms`) before a price drop no
/// longer draws it: retention ends at the exact millisecond, also with
/// 1 h rounds (the item was added 34 min into an hour).
#[test]
fn retention_ends_at_its_exact_millisecond() {
    let line = |topic: &str, v: serde_json::Value| {
        serde_json::json!({"topic": topic, "value": v}).to_string() + "\n"
    };
    let add = T0 + 34 * M;
    let mut text = String::new();
    text += &line(
        "tracking",
        serde_json::json!({"event_id": "a", "type": "cart_add", "ts": add, "user_id": "u", "product_id": "p"}),
    );
    text += &line(
        "prices",
        serde_json::json!({"product_id": "p", "price": 10.0, "ts": T0}),
    );
    // Drops at 90 d - 1 ms (still in the cart), 90 d (gone) and 90 d + 1 ms.
    for (i, at) in [add + 90 * D - 1, add + 90 * D, add + 90 * D + 1]
        .into_iter()
        .enumerate()
    {
        let price = 9.0 - i as f64;
        text += &line(
            "prices",
            serde_json::json!({"product_id": "p", "price": price, "ts": at}),
        );
    }
    let s = replay_all(
        &text,
        "[[campaign]]\nname = \"price_drop\"\nkind = \"price_drop\"\naudiences = [\"cart\"]\n",
        None,
    );
    let fired: Vec<u64> = s.triggers.iter().map(|t| t.ts).collect();
    assert_eq!(fired, vec![add + 90 * D - 1]);
}
