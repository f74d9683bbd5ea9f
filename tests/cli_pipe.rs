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
