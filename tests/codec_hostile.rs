//! Hostile input for the codec: arbitrary bytes, truncated and mutated
//! valid records, wrong types, deep nesting and huge values. Whatever the
//! bytes, decoding returns a typed record or a classified bad record; it
//! never panics, and a bad record's text never quotes the input.
//!
//! Bounded for CI: a fixed number of cases from a fixed seed.

use proptest::prelude::*;
use tripwire::codec::{decode, decode_line, BadReason, Topic, TopicNames};

/// Valid records of every topic, the seeds the mutations start from.
const VALID: &[(Topic, &str)] = &[
    (
        Topic::Tracking,
        r#"{"event_id":"e1","type":"cart_add","ts":1700000000000,"user_id":"u1","product_id":"p1","quantity":2,"price":9.5,"context":{"language":"de","timezone":"Europe/Berlin"}}"#,
    ),
    (
        Topic::Tracking,
        r#"{"event_id":"e2","type":"order_placed","ts":1700000000000,"user_id":"u1","order_id":"o1","items":[{"product_id":"p1","quantity":1,"price":9.5,"seller_id":"s"}],"payment":"secure"}"#,
    ),
    (
        Topic::Tracking,
        r#"{"event_id":"e3","type":"identify","ts":1700000000000,"user_id":"u1","anonymous_id":"a1","traits":{"language":"en"}}"#,
    ),
    (
        Topic::Tracking,
        r#"{"event_id":"e4","type":"consent","ts":1700000000000,"user_id":"u1","channel":"email","granted":false}"#,
    ),
    (
        Topic::Tracking,
        r#"{"event_id":"e5","type":"search","ts":1700000000000,"anonymous_id":"a1","query":"red shoes","result_count":0}"#,
    ),
    (
        Topic::Prices,
        r#"{"product_id":"p1","price":19.99,"currency":"EUR","ts":1700000000000}"#,
    ),
    (
        Topic::Stock,
        r#"{"product_id":"p1","quantity":0,"ts":1700000000000}"#,
    ),
    (
        Topic::Catalog,
        r#"{"product_id":"p1","category_id":"c1","seller_id":"s","title":"Shoe","url":"https://x/p1","ts":1700000000000}"#,
    ),
];

fn topic_strategy() -> impl Strategy<Value = Topic> {
    prop::sample::select(Topic::ALL.to_vec())
}

/// A decode that must not panic; returns whether it succeeded.
fn survives(topic: Topic, bytes: &[u8]) -> bool {
    match decode(topic, bytes) {
        Ok(_) => true,
        Err(e) => {
            assert!(!e.reason.label().is_empty());
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 5_000,
        // Fixed, so that a failure in CI happens again anywhere.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7219_e5ee),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(topic in topic_strategy(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        survives(topic, &bytes);
        let line = String::from_utf8_lossy(&bytes);
        let _ = decode_line(&line, &TopicNames::default());
    }

    #[test]
    fn truncated_records_are_bad_never_a_panic(i in 0..VALID.len(), cut in 0usize..400) {
        let (topic, text) = VALID[i];
        let cut = cut.min(text.len() - 1);
        let e = decode(topic, &text.as_bytes()[..cut]).expect_err("a truncated object is not JSON");
        prop_assert_eq!(e.reason, BadReason::InvalidJson);
    }

    #[test]
    fn mutated_records_never_panic(
        i in 0..VALID.len(),
        edits in prop::collection::vec((0usize..400, any::<u8>()), 1..8),
    ) {
        let (topic, text) = VALID[i];
        let mut bytes = text.as_bytes().to_vec();
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        survives(topic, &bytes);
    }

    #[test]
    fn values_of_the_wrong_type_are_invalid_payloads_without_the_value(
        i in 0..VALID.len(),
        field in 0usize..12,
        secret in "[a-z]{6,12}@example\\.com",
    ) {
        let (topic, text) = VALID[i];
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        let obj = v.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        let key = &keys[field % keys.len()];
        // A string where a number, bool, object or array belongs (and an
        // object where a string belongs).
        let wrong = match &obj[key] {
            serde_json::Value::String(_) => serde_json::json!({ "v": secret }),
            _ => serde_json::Value::String(secret.clone()),
        };
        obj.insert(key.clone(), wrong);
        let bytes = serde_json::to_vec(&v).unwrap();
        let e = decode(topic, &bytes).expect_err("a field of the wrong type");
        prop_assert_eq!(e.reason, BadReason::InvalidPayload, "{}", e.detail);
        prop_assert!(!e.detail.contains(&secret), "{}", e.detail);
    }
}

#[test]
fn deep_nesting_and_huge_values_are_bad_records() {
    // Deep nesting: under an unknown field it is skipped (without
    // recursion, so no stack overflow) and the record is good; where a field
    // of the contract is, it is a bad record.
    let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let ignored = format!(
        r#"{{"event_id":"e","type":"search","ts":1,"user_id":"u","query":"q","x":{}}}"#,
        nest(100_000)
    );
    assert!(decode(Topic::Tracking, ignored.as_bytes()).is_ok());
    let deep = format!(
        r#"{{"event_id":"e","type":"search","ts":1,"user_id":"u","query":"q","context":{}}}"#,
        nest(100_000)
    );
    assert!(decode(Topic::Tracking, deep.as_bytes()).is_err());
    // A 10 MB query is too large; a 10 MB unknown field is read and ignored.
    let big = "q".repeat(10 << 20);
    let huge =
        format!(r#"{{"event_id":"e","type":"search","ts":1,"user_id":"u","query":"{big}"}}"#);
    assert_eq!(
        decode(Topic::Tracking, huge.as_bytes())
            .expect_err("10 MB query")
            .reason,
        BadReason::TooLarge
    );
    let ignored = format!(
        r#"{{"event_id":"e","type":"search","ts":1,"user_id":"u","query":"q","note":"{big}"}}"#
    );
    assert!(decode(Topic::Tracking, ignored.as_bytes()).is_ok());
    // Times beyond u64, negative, fractional: wrong types.
    for ts in ["18446744073709551616", "-1", "1.5", "1e3"] {
        let p = format!(r#"{{"event_id":"e","type":"app_open","ts":{ts},"user_id":"u"}}"#);
        let e = decode(Topic::Tracking, p.as_bytes()).expect_err(&p);
        assert!(
            matches!(e.reason, BadReason::InvalidPayload | BadReason::InvalidJson),
            "{p}: {e:?}"
        );
    }
}
