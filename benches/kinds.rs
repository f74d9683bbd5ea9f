//! Criterion micro benches: the replay of one generated workload with one
//! campaign of each core kind, and with all four together.
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

fn config_for(kind: Option<&str>) -> Config {
    match kind {
        None => Config::default(),
        Some(k) => Config::parse(
            &format!("[[campaign]]\nname = \"{k}\"\nkind = \"{k}\"\n"),
            "bench",
        )
        .expect("valid bench config"),
    }
}

fn kinds(c: &mut Criterion) {
    let text = workload();
    let events = text.lines().count() as u64;
    let mut group = c.benchmark_group("replay_20k_events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    for kind in [
        Some("abandoned_cart"),
        Some("abandoned_browse"),
        Some("price_drop"),
        Some("back_in_stock"),
        None,
    ] {
        let config = config_for(kind);
        group.bench_function(kind.unwrap_or("all_core_kinds"), |b| {
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
