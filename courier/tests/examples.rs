//! The two example configurations work together: the job's
//! `deploy/tripwire.toml` and the courier's `courier/courier.example.toml`
//! both pass their `check-config` (the courier's with no environment at
//! all), every campaign the job emits has a `[campaigns.NAME]` entry in the
//! courier's example (else its triggers are `failed` / `unknown_campaign`),
//! the example's templates render for the fields each kind carries, and a
//! trigger of every job campaign goes through the courier's real batch path
//! (decision, store, webhook and SMTP sends) without a failure.

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tripwire_courier::config::{ChannelKind, Config};
use tripwire_courier::model::{Status, Trigger};
use tripwire_courier::template::Templates;
use tripwire_courier::testkit::HttpSink;

const COURIER_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/courier.example.toml");
const JOB_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/tripwire.toml");

/// The webhook and SMTP endpoints of the courier example, swapped for local
/// test servers in the end-to-end test.
const EXAMPLE_WEBHOOK_URL: &str = "url = \"http://127.0.0.1:8080/hook\"";
const EXAMPLE_SMTP: &str = "smtp_host = \"127.0.0.1\"\nsmtp_port = 25\n";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// `(name, kind)` of every `[[campaign]]` of the job's example, read from
/// the TOML itself (no job binary needed).
fn job_campaigns() -> Vec<(String, String)> {
    let doc: toml::Table = read(JOB_EXAMPLE)
        .parse()
        .unwrap_or_else(|e| panic!("{JOB_EXAMPLE} is not TOML: {e}"));
    let campaigns = doc
        .get("campaign")
        .and_then(|c| c.as_array())
        .unwrap_or_else(|| panic!("{JOB_EXAMPLE} has no [[campaign]] tables"));
    campaigns
        .iter()
        .map(|c| {
            let field = |f: &str| {
                c.get(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_else(|| panic!("a [[campaign]] of {JOB_EXAMPLE} lacks `{f}`: {c}"))
                    .to_string()
            };
            (field("name"), field("kind"))
        })
        .collect()
}

/// Names of the `[campaigns.NAME]` tables of the courier example, read
/// from the TOML itself.
fn courier_campaign_names() -> BTreeSet<String> {
    let doc: toml::Table = read(COURIER_EXAMPLE)
        .parse()
        .unwrap_or_else(|e| panic!("{COURIER_EXAMPLE} is not TOML: {e}"));
    doc.get("campaigns")
        .and_then(|c| c.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// The courier example, loaded as the courier loads it.
fn courier_config() -> Config {
    Config::load(Path::new(COURIER_EXAMPLE)).unwrap_or_else(|e| panic!("{COURIER_EXAMPLE}: {e}"))
}

#[test]
fn courier_example_passes_check_config_with_no_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_tripwire-courier"))
        .args(["--config", COURIER_EXAMPLE, "--check-config"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tripwire-courier --check-config {COURIER_EXAMPLE} with no environment:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The job's binary: next to this package's binary (same target directory
/// and profile), else the workspace's `target/release/tripwire` (built by
/// scripts/test.sh before the tests).
fn job_binary() -> Option<PathBuf> {
    let sibling = Path::new(env!("CARGO_BIN_EXE_tripwire-courier")).with_file_name("tripwire");
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tripwire");
    [sibling, release].into_iter().find(|p| p.is_file())
}

#[test]
fn job_example_passes_check_config_with_the_same_campaigns() {
    let Some(bin) = job_binary() else {
        // The campaign names are compared from the TOML in the next test;
        // only the job's own validation is left out.
        eprintln!(
            "SKIPPED: no job binary (target/release/tripwire); \
             `cargo build --release -p tripwire` to check {JOB_EXAMPLE} too"
        );
        return;
    };
    let out = Command::new(&bin)
        .args(["check-config", "--json", JOB_EXAMPLE])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} check-config {JOB_EXAMPLE}:\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON object per campaign, as the job resolved them.
    let resolved: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("check-config --json line {l:?}: {e}"));
            (
                v["name"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        resolved,
        job_campaigns(),
        "the job resolved other campaigns"
    );
}

#[test]
fn every_job_campaign_has_a_courier_campaign() {
    let job: BTreeSet<String> = job_campaigns().into_iter().map(|(n, _)| n).collect();
    assert!(
        job.len() >= 10,
        "only {} campaigns in {JOB_EXAMPLE}",
        job.len()
    );
    let courier = courier_campaign_names();
    let missing: Vec<&String> = job.difference(&courier).collect();
    assert!(
        missing.is_empty(),
        "campaigns of {JOB_EXAMPLE} without [campaigns.NAME] in {COURIER_EXAMPLE} \
         (their triggers would be failed / unknown_campaign): {missing:?}"
    );
    // And nothing the job never emits (a leftover or a misspelling).
    let extra: Vec<&String> = courier.difference(&job).collect();
    assert!(
        extra.is_empty(),
        "[campaigns.NAME] of {COURIER_EXAMPLE} that {JOB_EXAMPLE} has no campaign for: {extra:?}"
    );
    // The loaded configuration has them too.
    let cfg = courier_config();
    for name in &job {
        assert!(cfg.policy(name).is_some(), "no policy for {name}");
    }
}

/// A trigger of `kind` with the fields the job gives that kind
/// (`/work/shared/spec/triggers.md`); every value is distinct, so that a
/// template's output shows which fields it used.
fn sample_trigger(campaign: &str, kind: &str, id: &str, user: &str) -> serde_json::Value {
    let product = |p: &str, title: &str| {
        json!({"product_id": p, "title": title, "price": 19.5, "category_id": "c-7",
               "url": format!("https://shop.example/p/{p}")})
    };
    let mut t = json!({"trigger_id": id, "campaign": campaign, "kind": kind,
                       "user_id": user, "ts": NOON_UTC});
    let mut set = |k: &str, v: serde_json::Value| t[k] = v;
    match kind {
        "abandoned_cart" => {
            let mut a = product("p-1", "Kettle");
            a["quantity"] = json!(2);
            set("items", json!([a, product("p-2", "Teapot")]));
        }
        "abandoned_browse" | "back_in_stock" | "wishlist_reminder" | "new_in_category" => {
            set("items", json!([product("p-1", "Kettle")]))
        }
        "price_drop" => {
            let mut a = product("p-1", "Kettle");
            a["price"] = json!(17.0);
            a["old_price"] = json!(20.0);
            set("items", json!([a]));
            set("audience", json!("wishlist"));
        }
        "abandoned_search" => set("query", json!("red shoes")),
        "abandoned_category" => {
            set("category_id", json!("c-7"));
            set(
                "items",
                json!([product("p-1", "Kettle"), product("p-2", "Teapot")]),
            );
        }
        "complementary" | "cancelled_alternative" => {
            set("order_id", json!("o-42"));
            set("items", json!([product("p-1", "Kettle")]));
        }
        "reactivation" => {}
        "review_request" => {
            set("order_id", json!("o-42"));
            set("reminder", json!(true));
        }
        other => panic!(
            "kind `{other}` of {JOB_EXAMPLE} has no sample trigger here: add one with its fields"
        ),
    }
    t
}

#[test]
fn example_templates_render_with_the_fields_of_each_kind() {
    let cfg = courier_config();
    let templates = Templates::new(&cfg).unwrap();
    for (name, kind) in job_campaigns() {
        let campaign = &cfg.campaigns[&name];
        let full: Trigger =
            serde_json::from_value(sample_trigger(&name, kind.as_str(), "t1", "u1")).unwrap();
        // The bare minimum of a record: no items, no optional field.
        let bare: Trigger = serde_json::from_value(json!({
            "trigger_id": "t2", "campaign": name, "kind": kind, "user_id": "u2", "ts": NOON_UTC
        }))
        .unwrap();
        let mut languages: Vec<&str> = campaign.templates.keys().map(String::as_str).collect();
        languages.push("xx"); // no template: the fallback language
        for lang in languages {
            let m = templates
                .render(&full, Some(lang))
                .unwrap_or_else(|e| panic!("{name} ({kind}), {lang}: {e}"));
            let expected = if lang == "xx" {
                cfg.defaults.fallback_language.as_str()
            } else {
                lang
            };
            assert_eq!(m.language, expected, "{name}");
            assert!(
                !m.title.trim().is_empty() && !m.body.trim().is_empty() && !m.subject.is_empty(),
                "{name} ({kind}), {lang}: empty text {m:?}"
            );
            // A variable a template uses must be one the kind carries: the
            // sample's value then shows up in the message.
            let t = &campaign.templates[&m.language];
            let source = [
                t.title.as_str(),
                &t.body,
                t.subject.as_deref().unwrap_or(""),
                campaign.deep_link.as_deref().unwrap_or(""),
            ]
            .concat();
            let text = [m.title.as_str(), &m.body, &m.subject, &m.deep_link].concat();
            for (var, value) in [
                ("item.title", "Kettle"),
                ("item.product_id", "p-1"),
                (
                    "item.price",
                    if kind == "price_drop" { "17.0" } else { "19.5" },
                ),
                ("item.old_price", "20.0"),
                ("query", "red shoes"),
                ("order_id", "o-42"),
                ("category_id", "c-7"),
                (
                    "items | length",
                    if kind == "abandoned_cart" || kind == "abandoned_category" {
                        "2"
                    } else {
                        "1"
                    },
                ),
            ] {
                if source.contains(var) {
                    assert!(
                        text.contains(value),
                        "{name} ({kind}), {lang}: uses `{var}`, which this kind does not carry \
                         (sample value {value:?} missing from {m:?})"
                    );
                }
            }
            // A record without its optional fields still renders (undefined
            // values are empty): no failed / template receipts.
            templates
                .render(&bare, Some(lang))
                .unwrap_or_else(|e| panic!("{name} ({kind}), {lang}, bare record: {e}"));
        }
    }
}

/// One trigger of every job campaign for a user without a profile (the
/// webhook, or no consent for the e-mail-only campaigns) and one for a user
/// with e-mail consent (e-mail), through the courier's batch path with the
/// example's configuration, its webhook and SMTP endpoints pointed at
/// local test servers: no receipt is `failed`.
#[tokio::test]
async fn example_delivers_a_trigger_of_every_job_campaign() {
    let sink = HttpSink::start(true).await.unwrap();
    let smtp = SmtpServer::start();
    let text = read(COURIER_EXAMPLE);
    assert!(
        text.contains(EXAMPLE_WEBHOOK_URL) && text.contains(EXAMPLE_SMTP),
        "the example's webhook url or SMTP relay changed: update this test"
    );
    let text = text
        .replacen(
            EXAMPLE_WEBHOOK_URL,
            &format!("url = {:?}", sink.url("/hook")),
            1,
        )
        .replacen(
            EXAMPLE_SMTP,
            &format!("smtp_host = \"127.0.0.1\"\nsmtp_port = {}\n", smtp.port),
            1,
        );
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(&text, &dir.path().join("s.redb"), NOON_UTC);

    let campaigns = job_campaigns();
    let languages = ["az", "en", "ru"];
    let mut triggers = Vec::new();
    let mut profiles = Vec::new();
    for (i, (name, kind)) in campaigns.iter().enumerate() {
        let anon = format!("anon-{i}");
        let mail = format!("mail-{i}");
        triggers.push(sample_trigger(name, kind, &format!("{name}-anon"), &anon));
        triggers.push(sample_trigger(name, kind, &format!("{name}-mail"), &mail));
        profiles.push(
            json!({"user_id": mail, "ts": 1, "email": format!("{mail}@shop.example"),
                             "language": languages[i % 3], "consent": {"email": true}}),
        );
    }
    h.profiles(&profiles);
    h.feed(&triggers).await;
    // Receipts so far are the decisions without a send.
    let sends = triggers.len() - h.receipts().len();
    h.wait_sends(sends as u64).await;
    let receipts = h.receipts();

    let failed: Vec<_> = receipts
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    assert!(failed.is_empty(), "failed receipts: {failed:#?}");
    let by_id: BTreeMap<&str, _> = receipts
        .iter()
        .map(|r| (r.trigger_id.as_str(), r))
        .collect();
    assert_eq!(by_id.len(), triggers.len(), "one receipt per trigger");
    let cfg = Config::from_toml(&text).unwrap();
    let mut webhook_sends = 0;
    let mut email_sends = 0;
    for (name, _) in &campaigns {
        let channels = cfg.policy(name).unwrap().channels;
        // The first channel of the campaign that reaches the user: without
        // a profile only the webhook, with e-mail consent e-mail too.
        let first = |reachable: &[ChannelKind]| {
            channels
                .iter()
                .find(|c| reachable.contains(c))
                .map(|c| c.as_str())
        };
        for (who, expected) in [
            ("anon", first(&[ChannelKind::Webhook])),
            ("mail", first(&[ChannelKind::Email, ChannelKind::Webhook])),
        ] {
            let r = by_id[format!("{name}-{who}").as_str()];
            match (r.status, expected) {
                (Status::Sent, Some(ch)) => {
                    assert_eq!(r.channel.as_deref(), Some(ch), "{r:?}");
                    if ch == "webhook" {
                        webhook_sends += 1;
                    } else {
                        email_sends += 1;
                    }
                }
                // The control group: decided like a send, not sent.
                (Status::HeldOut, Some(ch)) => assert_eq!(r.channel.as_deref(), Some(ch), "{r:?}"),
                (Status::Suppressed, None) => {
                    assert_eq!(r.reason.as_deref(), Some("no_consent"), "{r:?}")
                }
                _ => panic!("{name}, {who}: unexpected receipt {r:?} (expected {expected:?})"),
            }
        }
    }
    assert!(webhook_sends > 0 && email_sends > 0);
    let requests = sink.state.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), webhook_sends, "webhook requests");
    for req in &requests {
        let body = req.json();
        assert!(
            !body["title"].as_str().unwrap_or("").is_empty(),
            "webhook without a title: {body}"
        );
    }
    assert_eq!(smtp.mails().len(), email_sends, "e-mails");
    h.stop().await;
}
