//! Commands that write to stdout stop quietly when the reader goes away
//! (`tripwire demo | head`): exit 0, no panic, no error line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn first_line_then_close(args: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tripwire"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tripwire");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first line");
    assert!(!first.is_empty(), "{args:?} wrote nothing");
    // The reader is gone (its end of the pipe dropped with the BufReader).
    let out = child.wait_with_output().expect("waiting for tripwire");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{args:?} exited with {}:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        !stderr.contains("error:"),
        "{args:?} reported an error:\n{stderr}"
    );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    first_line_then_close(&["demo", "--events", "20000", "--show", "1000"]);
    first_line_then_close(&["generate", "--events", "300000"]);
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/gen-small.jsonl"
    );
    first_line_then_close(&["replay", "--input", input, "--output", "-"]);
}

/// The conventions both binaries share (README, *Using it*): `--log-format
/// text|json` (and the earlier `--log-json`), JSON lines when asked, no
/// colour codes when stderr is not a terminal, and a broker default.
#[test]
fn log_format_and_defaults_follow_the_shared_conventions() {
    let tripwire = env!("CARGO_BIN_EXE_tripwire");
    let run = |args: &[&str]| {
        let out = Command::new(tripwire)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("starting tripwire");
        assert!(out.status.success(), "{args:?}: {}", out.status);
        String::from_utf8(out.stderr).expect("UTF-8 logs")
    };
    let gen = ["generate", "--events", "100", "--output", "/dev/null"];
    for flags in [&["--log-format", "json"][..], &["--log-json"][..]] {
        let log = run(&[&gen[..], flags].concat());
        let first = log.lines().next().expect("a log line");
        let v: serde_json::Value = serde_json::from_str(first).expect("a JSON log line");
        assert!(v["fields"]["message"].is_string(), "{first}");
    }
    let text = run(&[&gen[..], &["--log-format", "text"][..]].concat());
    assert!(!text.is_empty() && !text.contains('\u{1b}'), "{text:?}");
    // `generate --start-ms now` dates the first record at the wall clock.
    let out = Command::new(tripwire)
        .args([
            "generate",
            "--events",
            "5",
            "--start-ms",
            "now",
            "--output",
            "/dev/stdout",
        ])
        .output()
        .expect("tripwire generate");
    let first: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ts = first["value"]["ts"].as_u64().expect("a ts");
    assert!(now.abs_diff(ts) < 60_000, "{first}");
    // `run --help` documents the broker default shared with the courier.
    let help = Command::new(tripwire)
        .args(["run", "--help"])
        .output()
        .expect("tripwire run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 127.0.0.1:9092]"), "{help}");
    assert!(help.contains("--log-format"), "{help}");
}
