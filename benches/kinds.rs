//! Criterion micro benches: the replay of one generated workload with one
//! campaign of each kind, with the four core kinds together, and with every
//! kind together (the default configuration).
//!
//! `cargo bench --bench kinds`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tripwire::config::Config;
use tripwire::generate::{lines, GenerateArgs};

fn workload() -> String {
    let args = GenerateArgs {
        events: 20_000,
        users: 2_000,
        products: 500,
        rate_per_s: 0.5,
        ..GenerateArgs::default()
    };
    let mut text = String::new();
    for l in lines(&args) {
        text.push_str(&l);
        text.push('\n');
    }
    text
}

const CORE: [&str; 4] = [
    "abandoned_cart",
    "abandoned_browse",
    "price_drop",
    "back_in_stock",
];

fn config_for(kinds: &[&str]) -> Config {
    if kinds.is_empty() {
        return Config::default();
    }
    let text: String = kinds
        .iter()
        .map(|k| format!("[[campaign]]\nname = \"{k}\"\nkind = \"{k}\"\n"))
        .collect();
    Config::parse(&text, "bench").expect("valid bench config")
}

fn kinds(c: &mut Criterion) {
    let text = workload();
    let events = text.lines().count() as u64;
    let mut group = c.benchmark_group("replay_20k_events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    let mut cases: Vec<(String, Vec<&str>)> = dataflows::campaign::Kind::defaults()
        .iter()
        .map(|k| (k.name().to_string(), vec![k.name()]))
        .collect();
    cases.push(("all_core_kinds".into(), CORE.to_vec()));
    cases.push(("all_kinds".into(), Vec::new()));
    for (name, kinds) in cases {
        let config = config_for(&kinds);
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                let summary = tripwire::replay::replay(
                    vec![("bench".into(), text.clone())],
                    &config,
                    1,
                    None,
                )
                .expect("replay runs");
                criterion::black_box(summary.triggers.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kinds);
criterion_main!(benches);
