//! The JSON Schemas in `schemas/` against the wire contract's fixtures, the
//! generator's output and hand-written bad payloads. No network: every
//! schema is loaded from its file and the recording schema's `$ref`s to the
//! topic schemas are resolved from those files.

use std::collections::BTreeSet;
use std::path::PathBuf;

use jsonschema::{Draft, Resource, Validator};
use serde_json::{json, Value};
use tripwire::generate::{records, GenerateArgs};

const TOPICS: [&str; 7] = [
    "tracking",
    "prices",
    "stock",
    "catalog",
    "profiles",
    "triggers",
    "deliveries",
];

fn schema_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(format!("{name}.v1.json"))
}

fn load_schema(name: &str) -> Value {
    let path = schema_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A validator for `schemas/{name}.v1.json`, with every topic schema
/// registered under its `$id` so that cross-file `$ref`s resolve offline.
fn validator(name: &str) -> Validator {
    let mut options = jsonschema::options().with_draft(Draft::Draft202012);
    for topic in TOPICS {
        let schema = load_schema(topic);
        let id = schema["$id"].as_str().expect("$id").to_string();
        options = options.with_resource(id, Resource::from_contents(schema).expect("resource"));
    }
    options
        .build(&load_schema(name))
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

struct Validators {
    recording: Validator,
    topics: Vec<(&'static str, Validator)>,
}

impl Validators {
    fn new() -> Self {
        Validators {
            recording: validator("recording"),
            topics: TOPICS.iter().map(|t| (*t, validator(t))).collect(),
        }
    }

    fn topic(&self, topic: &str) -> &Validator {
        &self
            .topics
            .iter()
            .find(|(t, _)| *t == topic)
            .unwrap_or_else(|| panic!("no schema for topic {topic}"))
            .1
    }

    /// Checks one recording line: the envelope (with the recording schema,
    /// which also checks the payload) and, independently, the payload with
    /// its topic's own schema. `Err` says why the line is a bad record.
    fn check_line(&self, line: &str) -> Result<(), String> {
        let record: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        self.check_record(&record)
    }

    fn check_record(&self, record: &Value) -> Result<(), String> {
        if let Err(e) = self.recording.validate(record) {
            return Err(format!("recording: {e} at {}", e.instance_path));
        }
        let topic = record["topic"].as_str().expect("topic checked above");
        if TOPICS.contains(&topic) {
            let v = self.topic(topic);
            if let Err(e) = v.validate(&record["value"]) {
                return Err(format!("{topic}: {e} at {}", e.instance_path));
            }
        }
        Ok(())
    }
}

fn fixture(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance/");
    std::fs::read_to_string(format!("{path}{name}"))
        .unwrap_or_else(|e| panic!("cannot read {path}{name}: {e}"))
}

#[test]
fn schemas_are_valid_draft_2020_12() {
    for name in TOPICS.iter().copied().chain(["recording"]) {
        let schema = load_schema(name);
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema"),
            "{name}"
        );
        assert_eq!(
            schema["$id"],
            json!(format!("https://tripwire.example/schemas/{name}.v1.json")),
            "{name}"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name}.v1.json is not a valid schema: {e}");
        }
        let _ = validator(name);
    }
}

#[test]
fn edge_cases_fixture_only_the_bad_records_are_rejected() {
    let v = Validators::new();
    let text = fixture("edge-cases.jsonl");
    let mut rejected = BTreeSet::new();
    let mut expected = BTreeSet::new();
    let mut total = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let n = i + 1;
        // The three deliberately bad records of the fixture.
        let bad = line == "this is not json"
            || (line.contains("\"cart_add\"") && !line.contains("event_id"))
            || line.contains("\"price\":-3");
        if bad {
            expected.insert(n);
        }
        match v.check_line(line) {
            Ok(()) => assert!(!bad, "line {n} should be rejected: {line}"),
            Err(why) => {
                assert!(bad, "line {n} rejected ({why}): {line}");
                rejected.insert(n);
            }
        }
    }
    assert_eq!(expected.len(), 3, "the fixture changed: {expected:?}");
    assert_eq!(rejected, expected);
    assert!(total > 30);
}

#[test]
fn gen_small_fixture_is_accepted() {
    let v = Validators::new();
    let text = fixture("gen-small.jsonl");
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        if let Err(why) = v.check_line(line) {
            panic!("gen-small.jsonl line {}: {why}: {line}", i + 1);
        }
        n += 1;
    }
    assert_eq!(n, 20_000);
}

fn check_generated(v: &Validators, args: &GenerateArgs) {
    let mut n = 0u64;
    let mut topics = BTreeSet::new();
    for record in records(args) {
        if let Err(why) = v.check_record(&record) {
            panic!("generated record {n}: {why}: {record}");
        }
        topics.insert(record["topic"].as_str().unwrap().to_string());
        n += 1;
    }
    assert_eq!(n, args.events);
    for t in ["tracking", "prices", "stock", "catalog"] {
        assert!(topics.contains(t), "no {t} record");
    }
}

#[test]
fn generated_records_are_accepted() {
    let v = Validators::new();
    // Like gen-small: about three days, so orders are delivered and reviewed.
    check_generated(
        &v,
        &GenerateArgs {
            events: 20_000,
            users: 2_000,
            products: 300,
            seed: 1,
            rate_per_s: 0.08,
            anonymous_share: 0.2,
            ..GenerateArgs::default()
        },
    );
    // The defaults (time-compressed), another seed.
    check_generated(
        &v,
        &GenerateArgs {
            events: 20_000,
            seed: 2,
            ..GenerateArgs::default()
        },
    );
}

fn assert_verdicts(schema: &str, cases: &[(bool, Value)]) {
    let v = validator(schema);
    for (ok, value) in cases {
        let verdict = v.validate(value).map_err(|e| e.to_string());
        assert_eq!(
            verdict.is_ok(),
            *ok,
            "{schema}: {value} should be {}: {verdict:?}",
            if *ok { "accepted" } else { "rejected" }
        );
    }
}

#[test]
fn tracking_payloads() {
    let long = "x".repeat(257);
    let max = "x".repeat(256);
    assert_verdicts(
        "tracking",
        &[
            // Accepted.
            (
                true,
                json!({"event_id": "e1", "type": "app_open", "ts": 0, "user_id": "u1"}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "app_open", "ts": 1, "anonymous_id": "a1"}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "some_new_type", "ts": 1, "user_id": "u1", "whatever": [1, {"x": null}]}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "product_view", "ts": 1, "user_id": "u1", "product_id": "p1", "category_id": "c1", "price": 0.01, "unknown": true, "context": {"language": "az", "timezone": "Asia/Baku", "platform": "ios", "country": "AZ", "extra": 1}}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "cart_add", "ts": 1, "user_id": max, "product_id": "p1", "quantity": 0}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "order_placed", "ts": 1, "user_id": "u1", "order_id": "o1", "items": [{"product_id": "p1"}, {"product_id": "p2", "quantity": 2, "price": 3.5, "seller_id": "s1"}], "payment": "cash_on_delivery"}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "identify", "ts": 1, "user_id": "u1", "anonymous_id": "a1", "traits": {"language": "ru", "timezone": "Europe/Moscow", "email": "x@y.z", "phone": "+994"}}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "review_submitted", "ts": 1, "user_id": "u1"}),
            ),
            (
                true,
                json!({"event_id": "e1", "type": "forget", "ts": 1, "user_id": "u1"}),
            ),
            // Rejected: common fields.
            (false, json!({"type": "app_open", "ts": 1, "user_id": "u1"})),
            (false, json!({"event_id": "e1", "ts": 1, "user_id": "u1"})),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": 1}),
            ),
            (
                false,
                json!({"event_id": "", "type": "app_open", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": 1, "user_id": long}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": -1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": 1.5, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": "1700000000000", "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": 1, "type": "app_open", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "app_open", "ts": 1, "user_id": "u1", "context": "az"}),
            ),
            (false, json!(["e1"])),
            (false, json!(null)),
            // Rejected: type-specific fields.
            (
                false,
                json!({"event_id": "e1", "type": "product_view", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "product_view", "ts": 1, "user_id": "u1", "product_id": "p1", "price": 0}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "category_view", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "search", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "search", "ts": 1, "user_id": "u1", "query": "tv", "result_count": -1}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "cart_add", "ts": 1, "user_id": "u1", "product_id": "p1", "quantity": 1.5}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "cart_add", "ts": 1, "user_id": "u1", "product_id": "p1", "price": -3}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "cart_remove", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "wishlist_add", "ts": 1, "user_id": "u1", "product_id": ""}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "wishlist_remove", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_placed", "ts": 1, "user_id": "u1", "order_id": "o1", "items": []}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_placed", "ts": 1, "user_id": "u1", "items": [{"product_id": "p1"}]}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_placed", "ts": 1, "user_id": "u1", "order_id": "o1", "items": [{"quantity": 1}]}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_placed", "ts": 1, "user_id": "u1", "order_id": "o1", "items": [{"product_id": "p1"}], "payment": "card"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_delivered", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "order_cancelled", "ts": 1, "user_id": "u1", "order_id": "o1", "reason": "bored"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "identify", "ts": 1, "user_id": "u1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "identify", "ts": 1, "anonymous_id": "a1"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "consent", "ts": 1, "user_id": "u1", "channel": "push"}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "consent", "ts": 1, "user_id": "u1", "channel": "fax", "granted": true}),
            ),
            (
                false,
                json!({"event_id": "e1", "type": "consent", "ts": 1, "user_id": "u1", "channel": "sms", "granted": "no"}),
            ),
        ],
    );
}

#[test]
fn product_topic_payloads() {
    assert_verdicts(
        "prices",
        &[
            (
                true,
                json!({"product_id": "p1", "price": 19.99, "currency": "AZN", "ts": 1700000000000u64}),
            ),
            (
                true,
                json!({"product_id": "p1", "price": 1, "ts": 0, "extra": "x"}),
            ),
            (false, json!({"product_id": "p1", "price": 0, "ts": 1})),
            (false, json!({"product_id": "p1", "price": -3, "ts": 1})),
            (
                false,
                json!({"product_id": "p1", "price": "19.99", "ts": 1}),
            ),
            (false, json!({"product_id": "p1", "ts": 1})),
            (false, json!({"price": 1, "ts": 1})),
            (false, json!({"product_id": "p1", "price": 1})),
        ],
    );
    assert_verdicts(
        "stock",
        &[
            (true, json!({"product_id": "p1", "quantity": 0, "ts": 1})),
            (
                true,
                json!({"product_id": "p1", "quantity": 7, "ts": 1, "warehouse": "w1"}),
            ),
            (false, json!({"product_id": "p1", "quantity": -1, "ts": 1})),
            (false, json!({"product_id": "p1", "quantity": 2.5, "ts": 1})),
            (false, json!({"product_id": "p1", "ts": 1})),
            (false, json!({"quantity": 1, "ts": 1})),
        ],
    );
    assert_verdicts(
        "catalog",
        &[
            (
                true,
                json!({"product_id": "p1", "category_id": "c7", "ts": 1}),
            ),
            (
                true,
                json!({"product_id": "p1", "category_id": "c7", "seller_id": "s3", "group_id": "g9", "title": "T", "url": "https://x", "image_url": "https://x/i.jpg", "ts": 1, "deleted": false}),
            ),
            (false, json!({"product_id": "p1", "ts": 1})),
            (false, json!({"product_id": "p1", "category_id": "c7"})),
            (
                false,
                json!({"product_id": "p1", "category_id": "c7", "ts": 1, "deleted": "no"}),
            ),
            (
                false,
                json!({"product_id": "p1", "category_id": "c7", "ts": 1, "group_id": ""}),
            ),
        ],
    );
}

#[test]
fn profile_payloads() {
    assert_verdicts(
        "profiles",
        &[
            (true, json!(null)),
            (true, json!({"user_id": "u1", "ts": 1})),
            (
                true,
                json!({"user_id": "u1", "ts": 1, "email": "a@b.c", "phone": "+994", "push_tokens": [{"platform": "android", "token": "t"}], "language": "az", "timezone": "Asia/Baku", "consent": {"push": true, "email": false, "sms": false}}),
            ),
            (false, json!({"ts": 1})),
            (false, json!({"user_id": "u1"})),
            (
                false,
                json!({"user_id": "u1", "ts": 1, "consent": {"push": "yes"}}),
            ),
            (
                false,
                json!({"user_id": "u1", "ts": 1, "push_tokens": [{"platform": "ios"}]}),
            ),
            (false, json!("u1")),
        ],
    );
}

#[test]
fn trigger_payloads() {
    let ok = json!({
        "trigger_id": "3f2a", "campaign": "price_drop", "kind": "price_drop", "user_id": "u1",
        "ts": 1700000000000u64,
        "items": [{"product_id": "p1", "price": 80.0, "old_price": 100.0, "category_id": "c1", "title": "T", "url": "u", "image_url": "i", "quantity": 1}],
        "audience": "cart", "language": "az", "timezone": "Asia/Baku"
    });
    let mut cases = vec![
        (true, ok.clone()),
        (
            true,
            json!({"trigger_id": "t", "campaign": "c", "kind": "abandoned_search", "user_id": "u1", "ts": 1, "items": [], "query": "tv"}),
        ),
        (
            true,
            json!({"trigger_id": "t", "campaign": "c", "kind": "review_request", "user_id": "u1", "ts": 1, "items": [], "order_id": "o1", "reminder": true}),
        ),
        (
            true,
            json!({"trigger_id": "t", "campaign": "c", "kind": "abandoned_category", "user_id": "u1", "ts": 1, "items": [{"product_id": "p1"}], "category_id": "c1"}),
        ),
    ];
    for field in ["trigger_id", "campaign", "kind", "user_id", "ts", "items"] {
        let mut bad = ok.clone();
        bad.as_object_mut().unwrap().remove(field);
        cases.push((false, bad));
    }
    for (field, value) in [
        ("audience", json!("everyone")),
        ("reminder", json!("yes")),
        ("ts", json!(-5)),
        ("items", json!([{"price": 1.0}])),
        ("items", json!([{"product_id": "p1", "old_price": 0}])),
        ("items", json!({"product_id": "p1"})),
        ("order_id", json!("")),
    ] {
        let mut bad = ok.clone();
        bad[field] = value;
        cases.push((false, bad));
    }
    assert_verdicts("triggers", &cases);
}

#[test]
fn delivery_payloads() {
    let base = |status: &str| json!({"trigger_id": "t", "campaign": "c", "user_id": "u1", "ts": 1, "status": status, "variant": "treatment"});
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    assert_verdicts(
        "deliveries",
        &[
            (true, with(base("sent"), "channel", json!("push"))),
            (true, with(base("deferred"), "until", json!(2))),
            (
                true,
                with(base("suppressed"), "reason", json!("quiet_hours")),
            ),
            (true, with(base("failed"), "reason", json!("smtp 550"))),
            (true, with(base("held_out"), "variant", json!("control"))),
            (false, base("deferred")),
            (false, base("suppressed")),
            (false, with(base("suppressed"), "reason", json!("tired"))),
            (false, base("failed")),
            (false, base("delivered")),
            (false, with(base("sent"), "variant", json!("b"))),
            (false, with(base("sent"), "channel", json!("fax"))),
            (
                false,
                json!({"trigger_id": "t", "campaign": "c", "user_id": "u1", "ts": 1, "status": "sent"}),
            ),
        ],
    );
}

#[test]
fn recording_envelopes() {
    let v = Validators::new();
    let cases = [
        // Accepted: hand-written lines may omit partition, offset, timestamp, key.
        (
            true,
            json!({"topic": "stock", "value": {"product_id": "p1", "quantity": 0, "ts": 1}}),
        ),
        (
            true,
            json!({"topic": "stock", "partition": 0, "offset": 41, "timestamp": 1, "key": "p1", "value": {"product_id": "p1", "quantity": 0, "ts": 1}}),
        ),
        (
            true,
            json!({"topic": "profiles", "key": "u1", "value": null}),
        ),
        (
            true,
            json!({"topic": "my-custom-topic", "key": null, "value": {"anything": 1}}),
        ),
        (
            true,
            json!({"topic": "tracking", "key": "u1", "value": {"event_id": "e1", "type": "x", "ts": 1, "user_id": "u1"}, "headers": {}}),
        ),
        // Rejected.
        (false, json!({"value": {}})),
        (false, json!({"topic": "stock"})),
        (false, json!({"topic": "", "value": {}})),
        (false, json!({"topic": "stock", "value": null})),
        (false, json!({"topic": "stock", "value": "p1"})),
        (
            false,
            json!({"topic": "stock", "partition": -1, "value": {"product_id": "p1", "quantity": 0, "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "stock", "offset": 1.5, "value": {"product_id": "p1", "quantity": 0, "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "stock", "key": 7, "value": {"product_id": "p1", "quantity": 0, "ts": 1}}),
        ),
        // The payload is checked against its topic's schema too.
        (
            false,
            json!({"topic": "stock", "value": {"product_id": "p1", "quantity": -1, "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "tracking", "value": {"type": "cart_add", "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "catalog", "value": {"product_id": "p1", "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "prices", "value": {"product_id": "p1", "price": 0, "ts": 1}}),
        ),
        (
            false,
            json!({"topic": "triggers", "value": {"trigger_id": "t"}}),
        ),
        (
            false,
            json!({"topic": "deliveries", "value": {"trigger_id": "t"}}),
        ),
        (false, json!({"topic": "profiles", "value": {"ts": 1}})),
    ];
    for (ok, record) in cases {
        let verdict = v.recording.validate(&record).map_err(|e| e.to_string());
        assert_eq!(verdict.is_ok(), ok, "{record}: {verdict:?}");
    }
}
