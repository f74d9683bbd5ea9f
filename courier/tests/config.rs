//! Configuration: the example file is valid, bad files are rejected at
//! start with an error naming the field.

use std::process::Command;
use tripwire_courier::config::{Config, SmtpTls};

const BASE: &str = r#"
[channels.webhook]
url = "http://127.0.0.1:1/hook"
allow_http = true
secret = "k"
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

/// `BASE` with its webhook table replaced by `webhook`, plus `extra`.
fn with_webhook(webhook: &str, extra: &str) -> String {
    let rest = BASE.split_once("[campaigns.c]").unwrap().1;
    format!("[channels.webhook]\n{webhook}\n[campaigns.c]{rest}\n{extra}")
}

#[test]
fn webhook_needs_a_key_unless_unsigned() {
    let url = "url = \"https://hooks.example/x\"\n";
    // No key: refused, naming the field and the opt-in.
    let e = err(&with_webhook(url, ""));
    assert!(
        e.contains("channels.webhook.secret") && e.contains("unsigned = true"),
        "{e}"
    );
    // An empty key is no key.
    let e = err(&with_webhook(&format!("{url}secret = \"\""), ""));
    assert!(
        e.contains("channels.webhook.secret") && e.contains("empty"),
        "{e}"
    );
    // Explicitly unsigned: accepted.
    let c = Config::from_toml(&with_webhook(&format!("{url}unsigned = true"), "")).unwrap();
    assert!(c.channels.webhook.unwrap().unsigned);
    // A key and `unsigned = true` contradict each other.
    let e = err(&with_webhook(
        &format!("{url}secret = \"k\"\nunsigned = true"),
        "",
    ));
    assert!(e.contains("channels.webhook.unsigned"), "{e}");
    // A key: accepted, signed (the default).
    let c = Config::from_toml(&with_webhook(&format!("{url}secret = \"k\""), "")).unwrap();
    assert!(!c.channels.webhook.unwrap().unsigned);
    // Unknown fields are still refused.
    let e = err(&with_webhook(
        &format!("{url}secret = \"k\"\nsigned = false"),
        "",
    ));
    assert!(e.contains("signed"), "{e}");
}

#[test]
fn plain_http_needs_allow_http() {
    // Refused for every HTTP channel and every host, loopback included.
    let cases = [
        (
            with_webhook("url = \"http://127.0.0.1:8080/x\"\nsecret = \"k\"", ""),
            "channels.webhook.url",
        ),
        (
            with_webhook(
                "url = \"https://h.example/x\"\nsecret = \"k\"",
                "[channels.push]\nendpoint = \"http://localhost:9000\"\nproject_id = \"p\"\n",
            ),
            "channels.push.endpoint",
        ),
        (
            with_webhook(
                "url = \"https://h.example/x\"\nsecret = \"k\"",
                "[channels.sms]\nurl = \"http://sms.example/v1\"\nsender = \"S\"\n",
            ),
            "channels.sms.url",
        ),
    ];
    for (text, field) in &cases {
        let e = err(text);
        assert!(
            e.contains(field) && e.contains("allow_http = true"),
            "{field}: {e}"
        );
        // With the opt-in in the same table: accepted.
        let table = field.rsplit_once('.').unwrap().0;
        let header = format!("[{table}]\n");
        let text = text.replacen(&header, &format!("{header}allow_http = true\n"), 1);
        Config::from_toml(&text).unwrap_or_else(|e| panic!("{field} with allow_http: {e}"));
    }
    // https needs no opt-in; the default FCM endpoint is https.
    Config::from_toml(&with_webhook(
        "url = \"https://h.example/x\"\nsecret = \"k\"",
        "[channels.push]\nproject_id = \"p\"\n[channels.sms]\nurl = \"https://s.example\"\nsender = \"S\"\n",
    ))
    .unwrap();
    // Other schemes stay refused, with or without the opt-in.
    let e = err(&with_webhook(
        "url = \"ftp://h.example/x\"\nsecret = \"k\"\nallow_http = true",
        "",
    ));
    assert!(e.contains("channels.webhook.url"), "{e}");
}

#[test]
fn smtp_credentials_need_tls() {
    let email = |tls: &str, user: bool| {
        format!(
            "{BASE}\n[channels.email]\nsmtp_host = \"smtp.example\"\nfrom = \"a@b.example\"\n{tls}\n{}",
            if user { "username = \"u\"\n" } else { "" }
        )
    };
    // Credentials over a connection that may be plain text: refused.
    for (tls, field) in [
        ("", "channels.email.tls"),
        ("tls = \"none\"", "channels.email.tls"),
        ("tls = \"opportunistic\"", "channels.email.tls"),
        ("starttls = \"off\"", "channels.email.starttls"),
        ("starttls = \"opportunistic\"", "channels.email.starttls"),
    ] {
        let e = err(&email(tls, true));
        assert!(
            e.contains(field) && e.contains("starttls") && e.contains("implicit"),
            "{tls:?}: {e}"
        );
        // Without credentials these modes stay allowed.
        Config::from_toml(&email(tls, false)).unwrap();
    }
    // STARTTLS required or implicit TLS: accepted, with the right port.
    for (tls, mode, port) in [
        ("tls = \"starttls\"", SmtpTls::Starttls, 587),
        ("starttls = \"required\"", SmtpTls::Starttls, 587),
        ("tls = \"implicit\"", SmtpTls::Implicit, 465),
        (
            "tls = \"implicit\"\nsmtp_port = 2465",
            SmtpTls::Implicit,
            2465,
        ),
    ] {
        let c = Config::from_toml(&email(tls, true)).unwrap_or_else(|e| panic!("{tls}: {e}"));
        let m = c.channels.email.unwrap();
        assert_eq!((m.tls_mode(), m.port()), (mode, port), "{tls}");
    }
    // Defaults without credentials: opportunistic STARTTLS on 587.
    let m = Config::from_toml(&email("", false))
        .unwrap()
        .channels
        .email
        .unwrap();
    assert_eq!((m.tls_mode(), m.port()), (SmtpTls::Opportunistic, 587));
    // Both spellings at once: refused.
    let e = err(&email("tls = \"starttls\"\nstarttls = \"required\"", true));
    assert!(e.contains("channels.email.starttls"), "{e}");
    // Unknown values: refused.
    let e = err(&email("tls = \"ssl\"", false));
    assert!(e.contains("tls"), "{e}");
}

#[test]
fn example_config_is_valid() {
    // With no environment at all: the example's enabled channels need no
    // secret variable (tests/examples.rs checks it against the job's too).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/courier.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .args(["--config", path, "--check-config"])
        .env_clear()
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
    // Unset secret variables: every one named in one error, not one per
    // start.
    let path = dir.path().join("secrets.toml");
    std::fs::write(&path, SECRETS_FROM_ENV).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (field, var) in SECRET_VARS {
        assert!(
            stderr.contains(field) && stderr.contains(var),
            "{field} / {var}: {stderr}"
        );
    }
    // All set: valid.
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env_clear()
        .envs(SECRET_VARS.iter().map(|(_, var)| (var, "x")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every channel with its secret from the environment.
const SECRETS_FROM_ENV: &str = r#"
[channels.webhook]
url = "https://hooks.example/x"
secret_env = "TRIPWIRE_TEST_WEBHOOK_SECRET"
[channels.email]
smtp_host = "smtp.example"
tls = "starttls"
username = "u"
password_env = "TRIPWIRE_TEST_SMTP_PASSWORD"
from = "a@b.example"
[channels.push]
project_id = "p"
access_token_env = "TRIPWIRE_TEST_FCM_TOKEN"
[channels.sms]
url = "https://sms.example/v1"
sender = "S"
auth_token_env = "TRIPWIRE_TEST_SMS_TOKEN"
[campaigns.c]
channels = ["push", "email", "sms", "webhook"]
[campaigns.c.templates.en]
title = "t"
body = "b"
"#;

const SECRET_VARS: [(&str, &str); 4] = [
    (
        "channels.webhook.secret_env",
        "TRIPWIRE_TEST_WEBHOOK_SECRET",
    ),
    ("channels.email.password_env", "TRIPWIRE_TEST_SMTP_PASSWORD"),
    ("channels.push.access_token_env", "TRIPWIRE_TEST_FCM_TOKEN"),
    ("channels.sms.auth_token_env", "TRIPWIRE_TEST_SMS_TOKEN"),
];

#[test]
fn unset_secret_variables_are_reported_together() {
    // In-process, for the variables this test process surely lacks.
    let e = err(SECRETS_FROM_ENV);
    for (field, var) in SECRET_VARS {
        assert!(e.contains(field) && e.contains(var), "{field} / {var}: {e}");
    }
    assert!(e.contains("4 environment variables are not set"), "{e}");
    // One alone keeps the one-field form.
    let one = SECRETS_FROM_ENV
        .split("[channels.email]")
        .next()
        .unwrap()
        .to_string()
        + "[campaigns.c]\nchannels = [\"webhook\"]\n[campaigns.c.templates.en]\ntitle = \"t\"\nbody = \"b\"\n";
    let e = err(&one);
    assert!(
        e.contains("config field `channels.webhook.secret_env`")
            && e.contains("`TRIPWIRE_TEST_WEBHOOK_SECRET` is not set"),
        "{e}"
    );
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

/// The conventions shared with the job (README, *Using it*): `--log-format
/// text|json` (and `--log-json`), `--brokers` defaulting to 127.0.0.1:9092.
#[test]
fn cli_follows_the_shared_conventions() {
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--log-format"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:9092]"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .args(["--log-json", "--check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/courier.example.toml"))
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
