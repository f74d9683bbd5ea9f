//! Shared helpers for the replay fixture and property tests: configuration
//! at a given bucket width, replay at every worker count and bucket width
//! with a byte-identity check, and the normalisation of
//! `shared/conformance/compare.py`.

#![allow(dead_code)]

use dataflows::model::Trigger;
use tripwire::config::Config;
use tripwire::replay::{replay, ReplaySummary};

/// Worker counts every replay is checked at.
pub const WORKERS: [usize; 2] = [1, 2];
/// Bucket widths every replay is checked at (results must not depend on them).
pub const BUCKETS: [u64; 3] = [1, 1_000, 3_600_000];

/// A configuration with timely buckets of `bucket_ms` and the extra TOML
/// `campaigns` (empty: every core kind with its defaults).
pub fn config(bucket_ms: u64, campaigns: &str) -> Config {
    let text = format!("[time]\nbucket_ms = {bucket_ms}\n\n{campaigns}");
    Config::parse(&text, "test config").expect("valid test configuration")
}

/// One campaign per kind named after it, with the given extra parameters
/// (`("abandoned_cart", "delay_ms = 600000")`).
pub fn campaigns(kinds: &[(&str, &str)]) -> String {
    kinds
        .iter()
        .map(|(kind, extra)| {
            format!("[[campaign]]\nname = \"{kind}\"\nkind = \"{kind}\"\n{extra}\n")
        })
        .collect()
}

/// The serialised trigger records (their payloads, as the codec writes them).
pub fn serialise(triggers: &[Trigger]) -> Vec<String> {
    triggers
        .iter()
        .map(|t| String::from_utf8(tripwire::codec::encode_trigger(t)).expect("UTF-8 JSON"))
        .collect()
}

/// Replays `text` once.
pub fn replay_once(
    text: &str,
    campaigns: &str,
    workers: usize,
    bucket_ms: u64,
    until: Option<u64>,
) -> ReplaySummary {
    let cfg = config(bucket_ms, campaigns);
    replay(
        vec![("input.jsonl".to_string(), text.to_string())],
        &cfg,
        workers,
        until,
    )
    .expect("replay runs")
}

/// Replays `text` at every worker count and bucket width, asserts that the
/// serialised output is byte-identical across them, and returns the first
/// summary.
pub fn replay_all(text: &str, campaigns: &str, until: Option<u64>) -> ReplaySummary {
    let mut first: Option<(ReplaySummary, Vec<String>)> = None;
    for &workers in &WORKERS {
        for &bucket in &BUCKETS {
            let s = replay_once(text, campaigns, workers, bucket, until);
            let out = serialise(&s.triggers);
            match &first {
                None => first = Some((s, out)),
                Some((f, fo)) => {
                    assert_eq!(
                        fo, &out,
                        "output differs at workers {workers}, bucket_ms {bucket} from workers 1, bucket_ms 1"
                    );
                    assert_eq!(
                        f.bad_records, s.bad_records,
                        "bad records differ at workers {workers}, bucket_ms {bucket}"
                    );
                }
            }
        }
    }
    first.expect("at least one run").0
}

/// A normalised trigger: kind, user, ts, sorted product ids, audience
/// (price drops only), as `compare.py` has it.
pub type Norm = (String, String, u64, Vec<String>, Option<String>);

/// Normalises one trigger record.
pub fn norm(t: &Trigger) -> Norm {
    let mut products: Vec<String> = t.items.iter().map(|i| i.product_id.to_string()).collect();
    products.sort();
    let audience = if t.kind == "price_drop" {
        t.audience.as_ref().map(|a| a.to_string())
    } else {
        None
    };
    (
        t.kind.to_string(),
        t.user_id.to_string(),
        t.ts,
        products,
        audience,
    )
}

/// Normalises and sorts trigger records.
pub fn norm_all(triggers: &[Trigger]) -> Vec<Norm> {
    let mut v: Vec<Norm> = triggers.iter().map(norm).collect();
    v.sort();
    v
}

/// Builds a normalised record (for expected lists).
pub fn n(kind: &str, user: &str, ts: u64, products: &[&str], audience: Option<&str>) -> Norm {
    let mut products: Vec<String> = products.iter().map(|p| p.to_string()).collect();
    products.sort();
    (
        kind.to_string(),
        user.to_string(),
        ts,
        products,
        audience.map(str::to_string),
    )
}

/// The proptest configuration of the property tests: `cases` cases (or
/// `PROPTEST_CASES`, for a longer search) from a fixed seed (or
/// `PROPTEST_SEED`), so that a failure in CI happens again on any machine.
pub fn proptest_config(cases: u32) -> proptest::prelude::ProptestConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    proptest::prelude::ProptestConfig {
        cases: env("PROPTEST_CASES").map_or(cases, |c: u64| c as u32),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            env("PROPTEST_SEED").unwrap_or(0x7219_e5ee),
        ),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}
