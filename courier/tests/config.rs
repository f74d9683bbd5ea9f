//! Configuration: the example file is valid, bad files are rejected at
//! start with an error naming the field.

use std::process::Command;
use tripwire_courier::config::Config;

const BASE: &str = r#"
[channels.webhook]
url = "http://127.0.0.1:1/hook"
[campaigns.c]
channels = ["webhook"]
[campaigns.c.templates.en]
title = "t"
body = "b"
"#;

fn err(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn base_is_valid_with_documented_defaults() {
    let c = Config::from_toml(BASE).unwrap();
    let p = c.policy("c").unwrap();
    assert_eq!(p.quiet_hours, Some((22 * 60, 9 * 60)));
    assert_eq!(p.max_messages_per_window, 3);
    assert_eq!(p.cap_window_ms, 86_400_000);
    assert_eq!(p.min_gap_ms, 9 * 3_600_000);
    assert_eq!(c.defaults.fallback_language, "en");
}

#[test]
fn bad_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        ("[defaults]\nquiet_hours_start = \"25:00\"\n", "defaults.quiet_hours_start"),
        ("[defaults]\ncontrol_share = 1.5\n", "defaults.control_share"),
        ("[defaults]\ndefault_timezone = \"Mars/Base\"\n", "defaults.default_timezone"),
        ("[defaults]\nmin_gap = 5\n", "min_gap"),
        ("[defaults]\nmin_gap_ms = \"soon\"\n", "min_gap_ms"),
        ("[engine]\nmax_in_flight = 0\n", "engine.max_in_flight"),
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("[campaigns.d]\nchannels = [\"sms\"]\n[campaigns.d.templates.en]\ntitle = \"t\"\nbody = \"b\"\n", "campaigns.d.channels"),
        ("[campaigns.d]\nchannels = [\"webhook\"]\n[campaigns.d.templates.az]\ntitle = \"t\"\nbody = \"b\"\n", "campaigns.d.templates"),
        ("[campaigns.d]\nchannels = [\"webhook\"]\ncontrol_share = -0.1\n[campaigns.d.templates.en]\ntitle = \"t\"\nbody = \"b\"\n", "campaigns.d.control_share"),
        ("[campaigns.d]\nchannels = [\"webhook\"]\n[campaigns.d.templates.en]\ntitle = \"{% if %}\"\nbody = \"b\"\n", "campaigns.d.templates.en.title"),
        ("[campaigns.d]\nchannels = [\"fax\"]\n", "fax"),
        ("[channels.sms]\nurl = \"not a url\"\nsender = \"S\"\n", "channels.sms.url"),
        ("[channels.email]\nsmtp_host = \"h\"\nfrom = \"nobody\"\n", "channels.email.from"),
        ("[channels.push]\nproject_id = \"p\"\naccess_token_env = \"TRIPWIRE_TEST_SURELY_UNSET\"\n", "channels.push.access_token_env"),
    ];
    for (extra, field) in cases {
        let text = format!("{BASE}\n{extra}");
        // Put [defaults]/[engine] first-level tables in a valid place.
        let e = err(&text);
        assert!(
            e.contains(field),
            "error for {extra:?} should name `{field}`: {e}"
        );
    }
}

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/courier.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .args(["--config", path, "--check-config"])
        .env("COURIER_WEBHOOK_SECRET", "x")
        .env("COURIER_SMTP_PASSWORD", "x")
        .env("COURIER_FCM_TOKEN", "x")
        .env("COURIER_SMS_TOKEN", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn binary_rejects_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, format!("{BASE}\n[defaults]\nmax_age_ms = -1\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .arg("--config")
        .arg(&path)
        .args(["--brokers", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_age_ms"), "{stderr}");
    // Missing secret environment variable of the example.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/courier.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .args(["--config", path, "--check-config"])
        .env_remove("COURIER_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("channels.webhook.secret_env"));
}

#[test]
fn help_describes_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--brokers",
        "--config",
        "--group-id",
        "--store",
        "--triggers-topic",
        "--profiles-topic",
        "--deliveries-topic",
        "--metrics-addr",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
    assert!(!help.contains("crash-after-sends"));
}
