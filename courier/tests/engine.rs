//! Decisions, content and every channel end to end without a broker: the
//! engine, the redb store and the senders against real HTTP and SMTP
//! servers on 127.0.0.1.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tripwire_courier::model::{Status, Variant};
use tripwire_courier::testkit::HttpSink;

fn config(sink: &HttpSink, smtp_port: u16, extra: &str) -> String {
    format!(
        r#"
[defaults]
default_timezone = "UTC"
fallback_language = "en"
control_share = 0.0
channels = ["push", "email"]

[retry]
max_attempts = 4
initial_backoff_ms = 20
max_backoff_ms = 100

[channels.webhook]
url = "{hook}"
allow_http = true
secret = "s3cret"
timeout_ms = 2000
rate_per_sec = 1000

[channels.push]
endpoint = "{base}"
allow_http = true
project_id = "shop-app"
access_token = "fcm-token"
rate_per_sec = 1000

[channels.sms]
url = "{sms}"
allow_http = true
sender = "SHOP"
auth_token = "sms-token"
rate_per_sec = 1000

[channels.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "Shop <noreply@shop.example>"
rate_per_sec = 1000

[campaigns.cart]
priority = 10
deep_link = "https://shop.example/cart?utm_campaign={{{{ campaign }}}}"
[campaigns.cart.templates.en]
title = "{{{{ item.title }}}} is waiting"
body = "Your cart: {{{{ item.title }}}} for {{{{ item.price }}}} AZN {{{{ deep_link }}}}"
subject = "Your cart at Shop"
[campaigns.cart.templates.az]
title = "{{{{ item.title }}}} sizi gözləyir"
body = "Səbətiniz: {{{{ item.title }}}}"
[campaigns.cart.templates.ru]
title = "{{{{ item.title }}}} ждёт вас"
body = "Ваша корзина: {{{{ item.title }}}}"

[campaigns.browse]
priority = 1
[campaigns.browse.templates.en]
title = "Still thinking about {{{{ item.title }}}}?"
body = "Take another look"

[campaigns.hook]
channels = ["webhook"]
[campaigns.hook.templates.en]
title = "t"
body = "b {{{{ item.product_id }}}}"

[campaigns.text]
channels = ["sms"]
[campaigns.text.templates.en]
title = "t"
body = "Kettle now {{{{ item.price }}}} AZN"
{extra}
"#,
        hook = sink.url("/hook"),
        base = sink.url(""),
        sms = sink.url("/sms"),
    )
}

fn push_profile(user: &str) -> serde_json::Value {
    json!({"user_id": user, "ts": 1, "push_tokens": [{"platform": "android", "token": "dev-1"}, {"platform": "ios", "token": "dev-2"}],
           "email": "user@example.com", "phone": "+994501234567", "language": "az",
           "consent": {"push": true, "email": true, "sms": true}})
}

async fn setup(extra: &str) -> (HttpSink, SmtpServer, Harness, tempfile::TempDir) {
    setup_with(extra, |c| c).await
}

/// `setup` with the configuration text edited by `edit`.
async fn setup_with(
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> (HttpSink, SmtpServer, Harness, tempfile::TempDir) {
    let sink = HttpSink::start(true).await.unwrap();
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(
        &edit(config(&sink, smtp.port, extra)),
        &dir.path().join("s.redb"),
        NOON_UTC,
    );
    (sink, smtp, h, dir)
}

/// A webhook outbox entry for `Channels::send` called directly.
fn webhook_entry(id: &str) -> tripwire_courier::channels::OutboxEntry {
    use tripwire_courier::channels::{Destination, OutboxEntry};
    OutboxEntry {
        trigger: serde_json::from_value(trigger(id, "hook", "u1", NOON_UTC)).unwrap(),
        channel: "webhook".into(),
        variant: Variant::Treatment,
        destination: Destination::Webhook,
        message: tripwire_courier::template::Rendered {
            language: "en".into(),
            title: "t".into(),
            subject: "t".into(),
            body: "b".into(),
            deep_link: String::new(),
        },
        decided_at: NOON_UTC,
    }
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    // RFC 4231, test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block.
    assert_eq!(
        hex::encode(hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn courier_sign_matches_rfc_4231() {
    use tripwire_courier::channels::sign;
    // RFC 4231, test case 2, against the courier's signing function.
    assert_eq!(
        sign(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block.
    assert_eq!(
        sign(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn signature_header_is_the_documented_hmac() {
    use tripwire_courier::channels::signature_header;
    let body = br#"{"trigger_id":"t.1","body":"x"}"#;
    for key in [&b"s3cret"[..], &[0x42; 100][..]] {
        let h = signature_header(key, 1_705_320_000, "t.1", body);
        assert_signature_shape(&h);
        // Recomputed from the documented string with the test's own HMAC.
        let expected = hex::encode(hmac_sha256(
            key,
            &[&b"1705320000.t.1."[..], &body[..]].concat(),
        ));
        assert_eq!(h, format!("t=1705320000,v1={expected}"));
        assert_eq!(
            verify_webhook(key, &h, "t.1", body, 1_705_320_000, 300),
            Ok(1_705_320_000)
        );
    }
}

#[test]
fn documented_signature_example() {
    // The worked example of docs/courier.md ("Webhook signature"),
    // computed there with Python's hmac module.
    let body = br#"{"trigger_id":"t1"}"#;
    let h = tripwire_courier::channels::signature_header(b"s3cret", 1_705_320_000, "t1", body);
    let expected =
        "t=1705320000,v1=80a9db50d214fc8381f4ba3e756b27c5de9c3f5795f2f338596707214dabf18c";
    assert_eq!(h, expected);
    assert_eq!(
        verify_webhook(b"s3cret", expected, "t1", body, 1_705_320_000, 300),
        Ok(1_705_320_000)
    );
}

#[tokio::test]
async fn webhook_is_signed_and_idempotent() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.feed(&[trigger("t1", "hook", "u1", NOON_UTC - 1000)])
        .await;
    h.wait_sends(1).await;
    let reqs = sink.accepted();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["idempotency-key"], "t1");
    assert!(
        !r.headers.contains_key("x-tripwire-signature"),
        "the old body-only header is gone"
    );
    // `t=<secs>,v1=<hex>`, checked as a receiver would, with an HMAC written
    // here from RFC 2104 over SHA-256, not with the code under test, over
    // "<t>.<idempotency key>.<body>".
    let sig = &r.headers["tripwire-signature"];
    assert_signature_shape(sig);
    let now_s = tripwire_courier::clock::Clock::now_ms(&h.clock) / 1000;
    let t = verify_webhook(b"s3cret", sig, "t1", &r.body, now_s, 5).unwrap();
    // The courier's clock at the attempt (the harness pins it at noon).
    assert_eq!(t, NOON_UTC / 1000);
    // What the signature protects: the body, the idempotency key, the time,
    // and it takes the right key.
    let mut tampered = r.body.clone();
    let n = tampered.len();
    tampered[n - 2] ^= 1;
    assert!(verify_webhook(b"s3cret", sig, "t1", &tampered, now_s, 5).is_err());
    assert!(verify_webhook(b"s3cret", sig, "t2", &r.body, now_s, 5).is_err());
    assert!(verify_webhook(b"other", sig, "t1", &r.body, now_s, 5).is_err());
    let v1 = sig.split_once(",v1=").unwrap().1;
    let shifted = format!("t={},v1={v1}", t + 1);
    assert!(verify_webhook(b"s3cret", &shifted, "t1", &r.body, now_s, 5).is_err());
    // A replay 10 minutes later is refused by the tolerance.
    assert!(verify_webhook(b"s3cret", sig, "t1", &r.body, now_s + 600, 300).is_err());
    let body = r.json();
    assert_eq!(body["trigger_id"], "t1");
    assert_eq!(body["body"], "b p1");
    assert_eq!(body["trigger"]["items"][0]["product_id"], "p1");
    let rec = h.receipt("t1");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].status, Status::Sent);
    assert_eq!(rec[0].channel.as_deref(), Some("webhook"));
    assert_eq!(rec[0].variant, Variant::Treatment);
    // Redelivery: recognised, not sent again.
    h.feed(&[trigger("t1", "hook", "u1", NOON_UTC - 1000)])
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.accepted().len(), 1);
    let rec = h.receipt("t1");
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[1].status, Status::Suppressed);
    assert_eq!(rec[1].reason.as_deref(), Some("duplicate"));
    h.stop().await;
}

#[tokio::test]
async fn push_uses_fcm_v1_shape_and_profile_language() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.profiles(&[push_profile("u1")]);
    h.feed(&[trigger("t1", "cart", "u1", NOON_UTC)]).await;
    h.wait_sends(1).await;
    let reqs = sink.accepted();
    assert_eq!(reqs.len(), 2, "one request per device token");
    for r in &reqs {
        assert_eq!(r.path, "/v1/projects/shop-app/messages:send");
        assert_eq!(r.headers["authorization"], "Bearer fcm-token");
        let m = &r.json()["message"];
        assert_eq!(m["notification"]["title"], "Kettle sizi gözləyir");
        assert_eq!(m["data"]["trigger_id"], "t1");
        assert_eq!(
            m["data"]["deep_link"],
            "https://shop.example/cart?utm_campaign=cart"
        );
    }
    let tokens: Vec<_> = reqs
        .iter()
        .map(|r| r.json()["message"]["token"].clone())
        .collect();
    assert!(tokens.contains(&json!("dev-1")) && tokens.contains(&json!("dev-2")));
    assert_eq!(h.receipt("t1")[0].channel.as_deref(), Some("push"));
    h.stop().await;
}

#[tokio::test]
async fn sms_through_generic_http_provider() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.profiles(&[push_profile("u1")]);
    h.feed(&[trigger("t1", "text", "u1", NOON_UTC)]).await;
    h.wait_sends(1).await;
    let reqs = sink.accepted();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/sms");
    assert_eq!(reqs[0].headers["authorization"], "Bearer sms-token");
    assert_eq!(
        reqs[0].json(),
        json!({"to": "+994501234567", "from": "SHOP", "text": "Kettle now 19.5 AZN", "reference": "t1"})
    );
    assert_eq!(h.receipt("t1")[0].status, Status::Sent);
    h.stop().await;
}

#[tokio::test]
async fn email_over_smtp_when_push_has_no_consent() {
    let (sink, smtp, mut h, _d) = setup("").await;
    let mut p = push_profile("u1");
    p["consent"]["push"] = json!(false);
    p["language"] = json!("en");
    h.profiles(&[p]);
    h.feed(&[trigger("t1", "cart", "u1", NOON_UTC)]).await;
    h.wait_sends(1).await;
    assert_eq!(sink.count(), 0);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["user@example.com".to_string()]);
    assert!(
        mails[0].data.contains("Subject: Your cart at Shop"),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains("Kettle for 19.5 AZN"));
    assert!(mails[0].data.contains("Message-ID: <t1@tripwire-courier>"));
    let r = &h.receipt("t1")[0];
    assert_eq!(
        (r.status, r.channel.as_deref()),
        (Status::Sent, Some("email"))
    );
    h.stop().await;
}

#[tokio::test]
async fn consent_contact_and_staleness() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.profiles(&[
        json!({"user_id": "noconsent", "ts": 1, "email": "a@b.c", "consent": {"email": false}}),
        json!({"user_id": "noaddress", "ts": 1, "consent": {"email": true, "push": true}}),
        push_profile("fresh"),
    ]);
    h.feed(&[
        trigger("a", "cart", "noconsent", NOON_UTC),
        trigger("b", "cart", "noaddress", NOON_UTC),
        trigger("c", "cart", "nobody", NOON_UTC),
        trigger("d", "cart", "fresh", NOON_UTC - 13 * H),
    ])
    .await;
    let reason = |id: &str| h.receipt(id)[0].reason.clone().unwrap();
    assert_eq!(reason("a"), "no_consent");
    assert_eq!(reason("b"), "no_contact");
    assert_eq!(reason("c"), "no_consent");
    assert_eq!(reason("d"), "stale");
    for id in ["a", "b", "c", "d"] {
        assert_eq!(h.receipt(id)[0].status, Status::Suppressed);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn priority_decides_between_competing_triggers_and_caps_hold() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.profiles(&[push_profile("u1")]);
    let t0 = NOON_UTC - 2 * H - H / 2; // 09:30 UTC
    h.clock.set(t0);
    // Lower priority first in the batch: the higher priority one still wins.
    h.feed(&[
        trigger("low", "browse", "u1", t0),
        trigger("high", "cart", "u1", t0),
    ])
    .await;
    h.wait_sends(1).await;
    assert_eq!(h.receipt("high")[0].status, Status::Sent);
    let low = &h.receipt("low")[0];
    assert_eq!(low.status, Status::Suppressed);
    assert_eq!(low.reason.as_deref(), Some("frequency_cap"));
    assert_eq!(low.detail.as_deref(), Some("min_gap"));
    // 8 h later still inside the 9 h gap; 9.5 h later allowed.
    h.clock.set(t0 + 8 * H);
    h.feed(&[trigger("b2", "browse", "u1", t0 + 8 * H)]).await;
    assert_eq!(h.receipt("b2")[0].detail.as_deref(), Some("min_gap"));
    h.clock.set(t0 + 9 * H + H / 2);
    h.feed(&[trigger("b3", "browse", "u1", t0 + 9 * H)]).await;
    h.wait_sends(2).await;
    assert_eq!(h.receipt("b3")[0].status, Status::Sent);
    // The same campaign again within its re-eligibility window (7 days).
    let later = t0 + 24 * H + 9 * H + H / 2;
    h.clock.set(later);
    h.feed(&[trigger("c2", "cart", "u1", later)]).await;
    assert_eq!(h.receipt("c2")[0].detail.as_deref(), Some("reeligibility"));
    assert_eq!(sink.accepted().len(), 4); // two pushes x two tokens
    h.stop().await;
}

#[tokio::test]
async fn frequency_cap_per_window() {
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A campaign with no gap and no re-eligibility: only the 3 per 24 h cap.
    let cfg = config(&sink, 1, "").replace(
        "[campaigns.hook]\nchannels = [\"webhook\"]",
        "[campaigns.hook]\nchannels = [\"webhook\"]\nmin_gap_ms = 0\nreeligible_after_ms = 0",
    );
    let mut h2 = Harness::new(&cfg, &dir.path().join("s.redb"), NOON_UTC);
    let ts: Vec<_> = (0..5)
        .map(|i| trigger(&format!("w{i}"), "hook", "u9", NOON_UTC))
        .collect();
    h2.feed(&ts).await;
    h2.wait_sends(3).await;
    let statuses: Vec<_> = (0..5)
        .map(|i| h2.receipt(&format!("w{i}"))[0].clone())
        .collect();
    assert_eq!(
        statuses.iter().filter(|r| r.status == Status::Sent).count(),
        3
    );
    let capped: Vec<_> = statuses
        .iter()
        .filter(|r| r.status == Status::Suppressed)
        .collect();
    assert_eq!(capped.len(), 2);
    assert!(capped
        .iter()
        .all(|r| r.detail.as_deref() == Some("max_per_window")));
    // 24 h later the window has passed.
    h2.clock.advance(24 * H);
    h2.feed(&[trigger("w9", "hook", "u9", NOON_UTC + 24 * H)])
        .await;
    h2.wait_sends(4).await;
    assert_eq!(h2.receipt("w9")[0].status, Status::Sent);
    h2.stop().await;
}

#[tokio::test]
async fn quiet_hours_defer_and_release_in_priority_order() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    let mut p = push_profile("u1");
    p["timezone"] = json!("Asia/Baku"); // UTC+4
    h.profiles(&[p]);
    // 19:30 UTC = 23:30 in Baku: quiet until 09:00 Baku = 05:00 UTC next day.
    let now = NOON_UTC + 7 * H + H / 2;
    h.clock.set(now);
    h.feed(&[
        trigger("low", "browse", "u1", now),
        trigger("high", "cart", "u1", now),
    ])
    .await;
    let until = NOON_UTC + 17 * H;
    for id in ["low", "high"] {
        let r = &h.receipt(id)[0];
        assert_eq!(r.status, Status::Deferred);
        assert_eq!(r.until, Some(until));
        assert_eq!(r.reason.as_deref(), Some("quiet_hours"));
    }
    assert_eq!(h.store.deferred_len().unwrap(), 2);
    // Just before the end nothing is released.
    h.clock.set(until - 1);
    h.release().await;
    assert_eq!(h.store.deferred_len().unwrap(), 2);
    // 8 h later the triggers are older than max_age, yet they were fresh
    // when deferred: released, not dropped.
    h.clock.set(until);
    h.release().await;
    h.wait_sends(1).await;
    assert_eq!(h.store.deferred_len().unwrap(), 0);
    assert_eq!(h.receipt("high")[1].status, Status::Sent);
    let low = &h.receipt("low")[1];
    assert_eq!(
        (low.status, low.reason.as_deref()),
        (Status::Suppressed, Some("frequency_cap"))
    );
    assert_eq!(sink.accepted().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn control_group_is_held_out() {
    let extra = "\n[campaigns.holdout]\ncontrol_share = 1.0\nchannels = [\"webhook\"]\n[campaigns.holdout.templates.en]\ntitle = \"t\"\nbody = \"b\"\n";
    let (sink, _smtp, mut h, _d) = setup(extra).await;
    h.feed(&[trigger("t1", "holdout", "u1", NOON_UTC)]).await;
    let r = &h.receipt("t1")[0];
    assert_eq!(r.status, Status::HeldOut);
    assert_eq!(r.variant, Variant::Control);
    assert_eq!(r.channel.as_deref(), Some("webhook"));
    // Held out counts for re-eligibility of the campaign.
    h.feed(&[trigger("t2", "holdout", "u1", NOON_UTC)]).await;
    assert_eq!(h.receipt("t2")[0].detail.as_deref(), Some("reeligibility"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sink.count(), 0);
    h.stop().await;
}

#[tokio::test]
async fn endpoint_fails_then_recovers_and_permanent_failures() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    sink.fail_next(2, 503);
    h.feed(&[trigger("t1", "hook", "u1", NOON_UTC)]).await;
    h.wait_sends(1).await;
    let r = &h.receipt("t1")[0];
    assert_eq!(r.status, Status::Sent);
    assert_eq!(r.attempts, Some(3));
    assert_eq!(sink.accepted().len(), 1);
    // Every attempt is signed the same way (the same key, its own time).
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 3);
    for q in &reqs {
        verify_webhook(
            b"s3cret",
            &q.headers["tripwire-signature"],
            "t1",
            &q.body,
            NOON_UTC / 1000,
            5,
        )
        .unwrap();
    }
    // Permanent: 400 is not retried.
    sink.fail_next(1, 400);
    h.feed(&[trigger("t2", "hook", "u2", NOON_UTC)]).await;
    h.wait_sends(2).await;
    let r = &h.receipt("t2")[0];
    assert_eq!(
        (r.status, r.reason.as_deref(), r.attempts),
        (Status::Failed, Some("permanent_error"), Some(1))
    );
    // Transient until the attempts run out.
    sink.fail_next(100, 500);
    h.feed(&[trigger("t3", "hook", "u3", NOON_UTC)]).await;
    h.wait_sends(3).await;
    let r = &h.receipt("t3")[0];
    assert_eq!(
        (r.status, r.reason.as_deref(), r.attempts),
        (Status::Failed, Some("retries_exhausted"), Some(4))
    );
    sink.fail_next(0, 500);
    let m = h.metrics.render();
    assert!(m.contains(
        "tripwire_courier_send_attempts_total{channel=\"webhook\",outcome=\"transient\"}"
    ));
    assert!(m.contains("tripwire_courier_send_latency_seconds_bucket"));
    h.stop().await;
}

#[tokio::test]
async fn malformed_records_are_counted_receipted_and_do_not_stop() {
    let (sink, _smtp, mut h, _d) = setup("").await;
    h.feed_raw(vec![
        b"not json".to_vec(),
        br#"{"trigger_id": "m2", "campaign": "hook"}"#.to_vec(),
        br#"{"trigger_id": "", "campaign": "hook", "kind": "k", "user_id": "u", "ts": 1}"#.to_vec(),
        Vec::new(),
        serde_json::to_vec(&trigger("ok", "hook", "u1", NOON_UTC)).unwrap(),
        serde_json::to_vec(&trigger("x", "no-such-campaign", "u1", NOON_UTC)).unwrap(),
    ])
    .await;
    h.wait_sends(1).await;
    let rs = h.receipts();
    let failed: Vec<_> = rs
        .iter()
        .filter(|r| r.reason.as_deref() == Some("malformed"))
        .collect();
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|r| r.status == Status::Failed));
    assert!(failed.iter().any(|r| r.trigger_id == "m2"));
    assert_eq!(
        h.receipt("x")[0].reason.as_deref(),
        Some("unknown_campaign")
    );
    assert_eq!(h.receipt("ok")[0].status, Status::Sent);
    assert_eq!(sink.accepted().len(), 1);
    assert!(h
        .metrics
        .render()
        .contains("tripwire_courier_malformed_records_total{topic=\"triggers\"} 4"));
    h.stop().await;
}

#[tokio::test]
async fn rate_limit_per_channel() {
    let (sink, _smtp, _h, _d) = setup("").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sink, 1, "").replace(
        "secret = \"s3cret\"\ntimeout_ms = 2000\nrate_per_sec = 1000",
        "secret = \"s3cret\"\ntimeout_ms = 2000\nrate_per_sec = 20\nburst = 1",
    );
    let mut h = Harness::new(&cfg, &dir.path().join("s.redb"), NOON_UTC);
    let ts: Vec<_> = (0..10)
        .map(|i| trigger(&format!("r{i}"), "hook", &format!("u{i}"), NOON_UTC))
        .collect();
    let t0 = Instant::now();
    h.feed(&ts).await;
    h.wait_sends(10).await;
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(400),
        "10 sends at 20/s took only {el:?}"
    );
    assert_eq!(sink.accepted().len(), 10);
    h.stop().await;
}

#[tokio::test]
async fn outbox_survives_a_stop_before_sending() {
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let cfg = config(&sink, 1, "");
    // Endpoint down: the send stays in the outbox when we stop.
    sink.fail_next(1_000_000, 503);
    {
        let cfg = cfg.replace("max_attempts = 4", "max_attempts = 1000");
        let mut h = Harness::new(&cfg, &path, NOON_UTC);
        h.feed(&[trigger("t1", "hook", "u1", NOON_UTC)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.stop_within(Duration::from_millis(200)).await;
    }
    sink.fail_next(0, 503);
    let h = Harness::new(&cfg, &path, NOON_UTC);
    assert_eq!(h.store.outbox_len().unwrap(), 1);
    h.resume_outbox().await;
    h.wait_sends(1).await;
    assert_eq!(sink.accepted().len(), 1);
    assert_eq!(h.store.outbox_len().unwrap(), 0);
    assert_eq!(h.receipt("t1")[0].status, Status::Sent);
    h.stop().await;
}

#[tokio::test]
async fn pipelined_batches_see_each_other_before_commit() {
    use tripwire_courier::clock::Clock;
    use tripwire_courier::runner::Pipeline;
    let (sink, _smtp, mut h, _d) = setup("").await;
    let mut p = Pipeline::new(
        h.store.clone(),
        h.sink.clone(),
        h.sender.as_ref().unwrap().dispatcher(),
        h.metrics.clone(),
    );
    let now = h.clock.now_ms();
    let first = h.inputs(&[trigger("a", "hook", "u1", NOON_UTC)]);
    p.submit(&mut h.engine, first, now, 1).await.unwrap();
    // Decided while the first batch may still be committing: `a` is a
    // redelivery, `b` (same campaign) is not re-eligible after `a`.
    let second = h.inputs(&[
        trigger("a", "hook", "u1", NOON_UTC),
        trigger("b", "hook", "u1", NOON_UTC),
    ]);
    assert_eq!(
        p.submit(&mut h.engine, second, now, 2).await.unwrap(),
        Some(1)
    );
    assert_eq!(p.flush(&mut h.engine).await.unwrap(), Some(2));
    drop(p);
    h.wait_sends(1).await;
    let a = h.receipt("a");
    assert_eq!(a.len(), 2);
    assert!(a.iter().any(|r| r.reason.as_deref() == Some("duplicate")));
    assert_eq!(h.receipt("b")[0].detail.as_deref(), Some("reeligibility"));
    assert_eq!(sink.accepted().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn webhook_timeout_is_transient_and_retried() {
    let sink = HttpSink::start(true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sink, 1, "").replace("timeout_ms = 2000", "timeout_ms = 200");
    let mut h = Harness::new(&cfg, &dir.path().join("s.redb"), NOON_UTC);
    sink.hang_next(1, 1000);
    let t0 = Instant::now();
    h.feed(&[trigger("slow", "hook", "u1", NOON_UTC)]).await;
    h.wait_sends(1).await;
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "the hanging request was not cut off"
    );
    let r = &h.receipt("slow")[0];
    assert_eq!((r.status, r.attempts), (Status::Sent, Some(2)));
    assert!(h.metrics.render().contains(
        "tripwire_courier_send_attempts_total{channel=\"webhook\",outcome=\"transient\"} 1"
    ));
    h.stop().await;
}

#[tokio::test]
async fn each_attempt_signs_with_its_own_time() {
    use tripwire_courier::channels::{Channels, Progress};
    use tripwire_courier::config::Config;
    let sink = HttpSink::start(true).await.unwrap();
    let cfg = Config::from_toml(&config(&sink, 1, "")).unwrap();
    let ch = Channels::new(&cfg).unwrap();
    let e = webhook_entry("t.9");
    // A first attempt, and a retry 6 minutes later: the retry carries its
    // own timestamp, so a receiver with a 5-minute tolerance accepts it.
    let t0 = NOON_UTC + 999; // ms are cut, not rounded
    for now_ms in [t0, t0 + 360_000] {
        ch.send(&e, &mut Progress::default(), now_ms).await.unwrap();
    }
    let reqs = sink.requests();
    assert_eq!(reqs.len(), 2);
    for (q, now_ms) in reqs.iter().zip([t0, t0 + 360_000]) {
        assert_eq!(q.headers["idempotency-key"], "t.9");
        let t = verify_webhook(
            b"s3cret",
            &q.headers["tripwire-signature"],
            "t.9",
            &q.body,
            now_ms / 1000,
            300,
        )
        .unwrap();
        assert_eq!(t, now_ms / 1000);
    }
}

#[tokio::test]
async fn unsigned_webhook_only_when_configured_so() {
    use tripwire_courier::channels::{Channels, Progress};
    use tripwire_courier::config::Config;
    let sink = HttpSink::start(true).await.unwrap();
    let text = config(&sink, 1, "").replace("secret = \"s3cret\"", "unsigned = true");
    let cfg = Config::from_toml(&text).unwrap();
    let ch = Channels::new(&cfg).unwrap();
    ch.send(&webhook_entry("u.1"), &mut Progress::default(), NOON_UTC)
        .await
        .unwrap();
    let q = &sink.requests()[0];
    assert_eq!(q.headers["idempotency-key"], "u.1");
    assert!(!q.headers.contains_key("tripwire-signature"));
    // Without the opt-in, the same table without a key is refused.
    let text = config(&sink, 1, "").replace("secret = \"s3cret\"", "");
    let e = Config::from_toml(&text).unwrap_err().to_string();
    assert!(
        e.contains("channels.webhook.secret") && e.contains("unsigned = true"),
        "{e}"
    );
}

/// `tls = "implicit"` and `tls = "starttls"` against a plain-text SMTP
/// server that offers no STARTTLS: nothing is delivered (no fallback to
/// plain text), the send fails after its retries.
#[tokio::test]
async fn smtp_tls_modes_never_fall_back_to_plain_text() {
    for mode in ["implicit", "starttls"] {
        let (sink, smtp, mut h, _d) = setup_with("", |c| {
            c.replace("tls = \"none\"", &format!("tls = \"{mode}\""))
        })
        .await;
        let mut p = push_profile("u1");
        p["consent"]["push"] = json!(false);
        h.profiles(&[p]);
        h.feed(&[trigger("t1", "cart", "u1", NOON_UTC)]).await;
        h.wait_sends(1).await;
        assert_eq!(sink.count(), 0);
        assert!(smtp.mails().is_empty(), "{mode}: delivered in plain text");
        let r = &h.receipt("t1")[0];
        assert_eq!(
            (r.status, r.channel.as_deref(), r.reason.as_deref()),
            (Status::Failed, Some("email"), Some("retries_exhausted")),
            "{mode}"
        );
        h.stop().await;
    }
}
