//! The `[kafka]` table reaches every Kafka client of the job: a property
//! librdkafka rejects stops `tripwire run` and `tripwire record` at client
//! creation, naming it; an `env:` value that is not set stops the start
//! while reading the configuration. No broker is needed (the clients fail
//! before connecting).

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tripwire")
}

fn config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("tripwire.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn properties_reach_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[kafka]\n\"security.protocol\" = \"bogus_protocol\"\n",
    );
    for args in [
        vec!["run", "--no-recovery", "--metrics-addr", "127.0.0.1:0"],
        vec!["record", "--topics", "tracking", "--output", "out"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .args(["--brokers", "127.0.0.1:1"])
            .arg("--config")
            .arg(&cfg)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started:\n{err}");
        assert!(
            err.contains("security.protocol") && err.contains("bogus_protocol"),
            "{args:?}: the property did not reach the client:\n{err}"
        );
    }
}

#[test]
fn secrets_come_from_the_environment_and_are_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[kafka]\n\"sasl.password\" = \"env:TRIPWIRE_TEST_KAFKA_PASSWORD\"\n\"security.protocol\" = \"bogus_protocol\"\n",
    );
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--no-recovery", "--metrics-addr", "127.0.0.1:0"])
            .args(["--brokers", "127.0.0.1:1"])
            .arg("--config")
            .arg(&cfg)
            .env_remove("TRIPWIRE_TEST_KAFKA_PASSWORD");
        if let Some(v) = env {
            cmd.env("TRIPWIRE_TEST_KAFKA_PASSWORD", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(None);
    assert!(
        err.contains("TRIPWIRE_TEST_KAFKA_PASSWORD") && err.contains("not set"),
        "{err}"
    );
    // Set: read, and it goes no further than the client (which then fails
    // on the bogus protocol) without appearing in the output.
    let err = run(Some("hunter2-secret"));
    assert!(err.contains("bogus_protocol"), "{err}");
    assert!(
        !err.contains("hunter2-secret"),
        "the secret was printed:\n{err}"
    );
}
