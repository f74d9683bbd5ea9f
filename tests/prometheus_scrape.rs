//! A real Prometheus server (Debian's `prometheus`) scrapes the live job
//! and the courier and evaluates the project's alerting rules: the metrics
//! are what the rules in `deploy/prometheus/` and the dashboard in
//! `deploy/grafana/` expect (every panel's query returns series).
//! Everything runs on 127.0.0.1: a tansu broker, `tripwire run`,
//! `tripwire-courier` and Prometheus.

#[allow(dead_code)]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{create_topics, free_port, produce, Proc, Rec, Tansu};

fn prometheus_bin() -> String {
    std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into())
}

/// `GET path` from 127.0.0.1:`port`; the body of a 200 answer.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Prometheus answers with chunked encoding: keep the JSON object.
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    Some(body[start..=end].to_string())
}

/// The result of an instant query (its `data.result`), if Prometheus answered.
fn api_query(port: u16, promql: &str) -> Option<Vec<serde_json::Value>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = get(port, &format!("/api/v1/query?query={encoded}"))?;
    let mut v: serde_json::Value = serde_json::from_str(&body).ok()?;
    match v["data"]["result"].take() {
        serde_json::Value::Array(a) => Some(a),
        _ => None,
    }
}

/// How many series an instant query returns (`None`: no answer).
fn series(port: u16, promql: &str) -> Option<usize> {
    Some(api_query(port, promql)?.len())
}

/// The value of an instant query's single sample, if any.
fn query(port: u16, promql: &str) -> Option<f64> {
    api_query(port, promql)?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[test]
fn prometheus_scrapes_the_live_job() {
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path());
    let brokers = tansu.brokers();
    create_topics(
        &brokers,
        &[
            ("tracking", 2),
            ("prices", 1),
            ("stock", 1),
            ("catalog", 1),
            ("triggers", 1),
            ("tripwire.dlq", 1),
            ("profiles", 1),
            ("deliveries", 1),
        ],
    );
    // A price drop on a product in a cart: triggers for the dashboard's
    // per-campaign panel and decisions for the courier's.
    let product = |price: u32, ts: u64| Rec {
        topic: "prices".into(),
        key: Some("p1".into()),
        payload: format!(r#"{{"product_id":"p1","price":{price},"currency":"AZN","ts":{ts}}}"#)
            .into_bytes(),
    };
    let cart = Rec {
        topic: "tracking".into(),
        key: Some("u1".into()),
        payload: br#"{"event_id":"c1","type":"cart_add","ts":1700000100000,"user_id":"u1","product_id":"p1"}"#.to_vec(),
    };
    produce(
        &brokers,
        &[
            product(100, 1_700_000_000_000),
            cart,
            product(70, 1_700_000_200_000),
        ],
    );
    let recs: Vec<Rec> = (0..50)
        .map(|i| Rec {
            topic: "tracking".into(),
            key: Some(format!("u{}", i % 5)),
            payload: format!(
                r#"{{"event_id":"e{i}","type":"product_view","ts":{},"user_id":"u{}","product_id":"p{}"}}"#,
                1_700_000_000_000u64 + i * 1000,
                i % 5,
                i % 7
            )
            .into_bytes(),
        })
        .chain(std::iter::once(Rec {
            topic: "tracking".into(),
            key: None,
            payload: b"not json".to_vec(),
        }))
        .collect();
    produce(&brokers, &recs);

    let metrics_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tripwire"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    cmd.args(["run", "--brokers", &brokers, "--start", "earliest"])
        .arg("--config")
        .arg(root.join("deploy/tripwire.toml"))
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let mut job = Proc::spawn(cmd, dir.path().join("job.log"));

    // The courier with the example configuration (its campaigns are the
    // job's); built beside the job's binary (`cargo build --workspace`).
    let courier_bin = Path::new(env!("CARGO_BIN_EXE_tripwire")).with_file_name("tripwire-courier");
    assert!(
        courier_bin.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --release --workspace --bins)",
        courier_bin.display()
    );
    let courier_port = free_port();
    let mut cmd = Command::new(&courier_bin);
    cmd.args(["--brokers", &brokers])
        .arg("--config")
        .arg(root.join("courier/courier.example.toml"))
        .arg("--store")
        .arg(dir.path().join("courier.redb"))
        .args(["--metrics-addr", &format!("127.0.0.1:{courier_port}")]);
    let courier = Proc::spawn(cmd, dir.path().join("courier.log"));

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: tripwire\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n  - job_name: tripwire-courier\n    static_configs:\n      - targets: ['127.0.0.1:{courier_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prom = Command::new(prometheus_bin());
    prom.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let prom = Proc::spawn(prom, dir.path().join("prometheus.log"));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = None;
    let mut bad = None;
    while Instant::now() < deadline {
        read = query(prom_port, "sum(tripwire_input_records_total)");
        bad = query(prom_port, "sum(tripwire_bad_records_total)");
        if read.unwrap_or(0.0) >= 54.0 && bad.unwrap_or(0.0) >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        read,
        Some(54.0),
        "records read as Prometheus sees them; prometheus log:\n{}",
        prom.log_tail(20)
    );
    assert_eq!(bad, Some(1.0), "bad records as Prometheus sees them");
    assert_eq!(query(prom_port, r#"up{job="tripwire"}"#), Some(1.0));
    // The recording rules of deploy/prometheus/rules.yml evaluate on the job's series.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recorded = None;
    while Instant::now() < deadline && recorded.is_none() {
        recorded = query(prom_port, "sum(tripwire:input_records:rate5m)");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(recorded.is_some(), "the recording rule produced no series");
    // Every query of the Grafana dashboard returns series.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/tripwire.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    assert!(exprs.len() >= 14, "{} queries", exprs.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty: Vec<&(String, String)> = exprs.iter().collect();
    while Instant::now() < deadline && !empty.is_empty() {
        empty.retain(|(_, e)| series(prom_port, e).unwrap_or(0) == 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without series: {empty:#?}\ncourier log:\n{}\njob log:\n{}",
        courier.log_tail(20),
        job.log_tail(20)
    );
    assert!(job.running(), "the job died:\n{}", job.log_tail(20));
    job.terminate();
    assert!(job
        .wait(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    drop(courier);
    drop(prom);
    drop(tansu);
}
