//! Hand-made recordings (`tests/fixtures/*.jsonl`) replayed with exact
//! expected outputs for the core kinds and the corner cases of
//! `shared/spec/triggers.md`. Every replay runs at 1 and 2 workers and at
//! bucket widths 1 ms, 1 s and 1 h, and must give byte-identical records.

mod common_replay;

use common_replay::{campaigns, n, norm_all, replay_all, replay_once, serialise, Norm};
use dataflows::model::Trigger;
use serde_json::json;

const T0: u64 = 1_700_000_000_000;
const M: u64 = 60_000;
const H: u64 = 60 * M;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn only(kind: &str) -> String {
    campaigns(&[(kind, "")])
}

fn sorted(mut v: Vec<Norm>) -> Vec<Norm> {
    v.sort();
    v
}

fn find<'a>(triggers: &'a [Trigger], kind: &str, user: &str) -> &'a Trigger {
    triggers
        .iter()
        .find(|t| t.kind == kind && t.user_id == user)
        .unwrap_or_else(|| panic!("no {kind} trigger for {user}"))
}

fn item_ids(t: &Trigger) -> Vec<&str> {
    t.items.iter().map(|i| i.product_id.as_str()).collect()
}

// ---------------------------------------------------------------- abandoned_cart

/// Timer reset, order inside the delay and exactly at L and at T, removal
/// emptying the cart, ties at one ms, latest quantity.
#[test]
fn abandoned_cart_cases() {
    let s = replay_all(
        &fixture("abandoned_cart.jsonl"),
        &only("abandoned_cart"),
        None,
    );
    let ac = |u: &str, ts: u64, ps: &[&str]| n("abandoned_cart", u, T0 + ts, ps, None);
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            // a: the second cart_add at 30 min resets the timer.
            ac("a", 90 * M, &["p1", "p2"]),
            // bx: an order 1 ms after T does not cancel.
            ac("bx", H, &["p1"]),
            // c2: p3 removed, p4 left.
            ac("c2", 65 * M, &["p4"]),
            // q: latest quantity.
            ac("q", 70 * M, &["p5"]),
            // r2: at one ms, cart_add before cart_remove: p1 removed, p2 left.
            ac("r2", H, &["p2"]),
        ])
    );
    assert_eq!(s.bad_records, 0);
    let q = find(&s.triggers, "abandoned_cart", "q");
    assert_eq!(q.items.len(), 1);
    assert_eq!(q.items[0].quantity, Some(5), "latest quantity of p5");
    let a = find(&s.triggers, "abandoned_cart", "a");
    let quantities: Vec<Option<u64>> = a.items.iter().map(|i| i.quantity).collect();
    assert_eq!(quantities, vec![Some(1), Some(1)], "quantity defaults to 1");
}

/// triggers.md: "`items` = cart(u) at `T` (each with its latest `quantity`,
/// and price(p) at `T` when a price is known)". p5's price at T (70 min) is
/// 19.5 (set at 30 min, replacing 20.0).
#[test]

fn abandoned_cart_items_carry_price_at_t() {
    let s = replay_all(
        &fixture("abandoned_cart.jsonl"),
        &only("abandoned_cart"),
        None,
    );
    let q = find(&s.triggers, "abandoned_cart", "q");
    assert_eq!(
        tripwire::codec::items_value(&q.items),
        json!([{"product_id": "p5", "quantity": 5, "price": 19.5}])
    );
}

/// The whole record of a cart trigger (everything but the hashed id).
#[test]
fn abandoned_cart_record_json() {
    let s = replay_all(
        &fixture("abandoned_cart.jsonl"),
        &only("abandoned_cart"),
        None,
    );
    let a = find(&s.triggers, "abandoned_cart", "a");
    let mut v = tripwire::codec::trigger_value(a);
    let id = v.as_object_mut().unwrap().remove("trigger_id").unwrap();
    assert!(id
        .as_str()
        .is_some_and(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())));
    assert_eq!(
        v,
        json!({
            "campaign": "abandoned_cart",
            "kind": "abandoned_cart",
            "user_id": "a",
            "ts": T0 + 90 * M,
            "items": [{"product_id": "p1", "quantity": 1}, {"product_id": "p2", "quantity": 1}],
        })
    );
}

// ---------------------------------------------------------------- abandoned_browse

/// Items order, distinctness and limit, session gap (exactly 30 min starts
/// a new session), cart_add / order_placed in the session, unknown types as
/// activity, consent not activity.
#[test]
fn abandoned_browse_cases() {
    let s = replay_all(
        &fixture("abandoned_browse.jsonl"),
        &only("abandoned_browse"),
        None,
    );
    let ab = |u: &str, ts: u64, ps: &[&str]| n("abandoned_browse", u, T0 + ts, ps, None);
    let v6: Vec<String> = (3..=12).map(|i| format!("p{i}")).collect();
    let v6: Vec<&str> = v6.iter().map(String::as_str).collect();
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            ab("v1", 85 * M, &["p1", "p2", "p3"]),
            ab("v2", 90 * M, &["p2"]),
            ab("v3", 30 * M - 1 + H, &["p1", "p2"]),
            ab("v5", 100 * M, &["p1"]),
            ab("v6", 71 * M, &v6),
            ab("w1", 70 * M, &["p1"]),
            ab("w3", 80 * M, &["p1"]),
        ])
    );
    // Most recently viewed first, distinct.
    assert_eq!(
        item_ids(find(&s.triggers, "abandoned_browse", "v1")),
        vec!["p3", "p1", "p2"]
    );
    assert_eq!(
        item_ids(find(&s.triggers, "abandoned_browse", "v3")),
        vec!["p2", "p1"]
    );
    let v6_order: Vec<String> = (3..=12).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(
        item_ids(find(&s.triggers, "abandoned_browse", "v6")),
        v6_order
    );
    let v1 = tripwire::codec::items_value(&find(&s.triggers, "abandoned_browse", "v1").items);
    assert_eq!(
        v1,
        json!([{"product_id": "p3"}, {"product_id": "p1"}, {"product_id": "p2"}])
    );
}

// ---------------------------------------------------------------- price_drop

/// Audiences and their priority, first price, threshold, view window,
/// view followed by an order, ties at one ms.
#[test]
fn price_drop_cases() {
    let s = replay_all(&fixture("price_drop.jsonl"), &only("price_drop"), None);
    let t = 20 * M;
    let pd = |u: &str, ts: u64, p: &str, a: &str| n("price_drop", u, T0 + ts, &[p], Some(a));
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            pd("i1", t, "p10", "cart"),
            pd("i2", t, "p10", "wishlist"),
            pd("i3", t, "p10", "viewed"),
            pd("i5b", t, "p10", "viewed"),
            pd("i6", t, "p10", "cart"),
            pd("i7", t, "p10", "wishlist"),
            pd("i8", t, "p10", "viewed"),
            pd("i9", t, "p10", "viewed"),
            pd("i10", t, "p10", "viewed"),
            pd("k1", 30 * M, "p20", "wishlist"),
        ])
    );
    let i1 = find(&s.triggers, "price_drop", "i1");
    assert_eq!(
        tripwire::codec::items_value(&i1.items),
        json!([{"product_id": "p10", "price": 80.0, "old_price": 96.0}])
    );
    assert_eq!(i1.audience.as_deref(), Some("cart"));
    let k1 = find(&s.triggers, "price_drop", "k1");
    assert_eq!(
        tripwire::codec::items_value(&k1.items),
        json!([{"product_id": "p20", "price": 95.0, "old_price": 100.0}])
    );
}

/// Audiences restricted by configuration: without `cart`, a cart holder
/// who also wishes the product is in `wishlist`; a cart-only holder is in none.
#[test]
fn price_drop_configured_audiences() {
    let cfg = campaigns(&[("price_drop", "audiences = [\"wishlist\", \"viewed\"]")]);
    let s = replay_all(&fixture("price_drop.jsonl"), &cfg, None);
    let users: Vec<(String, Option<String>)> = s
        .triggers
        .iter()
        .filter(|t| t.user_id == "i1" || t.user_id == "i6")
        .map(|t| {
            (
                t.user_id.to_string(),
                t.audience.as_ref().map(|a| a.to_string()),
            )
        })
        .collect();
    assert_eq!(
        users,
        vec![("i6".to_string(), Some("wishlist".to_string()))]
    );
}

// ---------------------------------------------------------------- back_in_stock

#[test]
fn back_in_stock_cases() {
    let s = replay_all(
        &fixture("back_in_stock.jsonl"),
        &only("back_in_stock"),
        None,
    );
    let bis = |u: &str, ts: u64, p: &str| n("back_in_stock", u, T0 + ts, &[p], None);
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            bis("j1", 25 * M, "p11"),
            bis("j2", 25 * M, "p11"),
            bis("j5", 25 * M, "p11"),
            bis("j6", 20 * M, "p15"),
            bis("j6", 30 * M, "p13"),
        ])
    );
    // price(p) at t: the price message at the same ms counts.
    let j1 = find(&s.triggers, "back_in_stock", "j1");
    assert_eq!(
        tripwire::codec::items_value(&j1.items),
        json!([{"product_id": "p11", "price": 45.0}])
    );
    // No price known: only the product.
    let j6 = s
        .triggers
        .iter()
        .find(|t| t.user_id == "j6" && t.items[0].product_id == "p13")
        .unwrap();
    assert_eq!(
        tripwire::codec::items_value(&j6.items),
        json!([{"product_id": "p13"}])
    );
}

// ---------------------------------------------------------------- identity

/// Anonymous events stitched by a later identify: fires at the identify's
/// time when the delay has passed; the earliest identify wins; events of
/// an anonymous id never linked fire nothing.
#[test]
fn identity_stitching() {
    let s = replay_all(&fixture("identity.jsonl"), &only("abandoned_cart"), None);
    let ac = |u: &str, ts: u64, ps: &[&str]| n("abandoned_cart", u, T0 + ts, ps, None);
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            ac("f", 2 * H, &["p6"]),
            ac("g", H, &["p6"]),
            ac("h1", 2 * H, &["p7"]),
            // m: the own cart_add fires at 60 min (the anonymous add at 30
            // min is not known yet); the anonymous one, known at 2 h,
            // fires then with both products (another id: (m, 30 min)).
            ac("m", H, &["p1"]),
            ac("m", 2 * H, &["p1", "p2"]),
        ])
    );
}

// ---------------------------------------------------------------- consent, forget

/// forget is final; consent false on every channel suppresses a trigger
/// firing while it holds (not postponed); a later grant re-enables.
#[test]
fn consent_and_forget() {
    let s = replay_all(
        &fixture("consent_forget.jsonl"),
        &only("abandoned_cart"),
        None,
    );
    let ac = |u: &str, ts: u64, ps: &[&str]| n("abandoned_cart", u, T0 + ts, ps, None);
    assert_eq!(
        norm_all(&s.triggers),
        sorted(vec![
            ac("h", 160 * M, &["p7", "p8"]),
            ac("h2", H, &["p1"]),
            ac("h3", H, &["p1"]),
        ])
    );
}

// ---------------------------------------------------------------- duplicates, bad records

/// The default configuration (every kind): of the further kinds none
/// fires here either (no search, category, wishlist or order; reactivation
/// is due 30 d after the close), so the one cart record is all.
#[test]
fn duplicates_and_bad_records() {
    let s = replay_all(&fixture("duplicates_bad.jsonl"), "", None);
    assert_eq!(s.bad_records, 8);
    assert_eq!(s.records, 15);
    assert_eq!(
        norm_all(&s.triggers),
        vec![n("abandoned_cart", "d1", T0 + H, &["p1"], None)]
    );
    assert_eq!(s.triggers[0].items[0].quantity, Some(2));
}

/// Repeats that differ: of several events with one `event_id`, the first
/// by time (then by the whole event) is applied, whichever arrives first,
/// in one round or in different ones (the later-timed one was already
/// waiting to be applied when the earlier one arrived).
#[test]
fn differing_repeats_apply_the_first_by_time() {
    let line = |id: &str, user: &str, product: &str, ts: u64| {
        format!(
            "{{\"topic\":\"tracking\",\"key\":\"{user}\",\"value\":{{\"event_id\":\"{id}\",\"type\":\"cart_add\",\"ts\":{},\"user_id\":\"{user}\",\"product_id\":\"{product}\"}}}}\n",
            T0 + ts
        )
    };
    let text = [
        // r1: the later one (10 s) arrives first; the one at 5 s wins.
        line("r1", "a", "p2", 10_000),
        line("r1", "a", "p1", 5_000),
        // r2: one time, two products: the lesser event (p3) wins.
        line("r2", "b", "p4", 20_000),
        line("r2", "b", "p3", 20_000),
        // r3: an exact copy changes nothing.
        line("r3", "c", "p5", 30_000),
        line("r3", "c", "p5", 30_000),
        // Close event time past every cart's hour.
        line("x", "z", "p9", 2 * H),
    ]
    .concat();
    let s = replay_all(&text, &only("abandoned_cart"), None);
    let ac = |u: &str, ts: u64, ps: &[&str]| n("abandoned_cart", u, T0 + ts, ps, None);
    assert_eq!(
        norm_all(&s.triggers),
        vec![
            ac("a", 5_000 + H, &["p1"]),
            ac("b", 20_000 + H, &["p3"]),
            ac("c", 30_000 + H, &["p5"]),
        ]
    );
}

// ---------------------------------------------------------------- closing event time

#[test]
fn until_closes_event_time() {
    let text = fixture("until.jsonl");
    let cfg = only("abandoned_cart");
    let ac = |u: &str, ts: u64, ps: &[&str]| n("abandoned_cart", u, T0 + ts, ps, None);
    let run = |until: Option<u64>| norm_all(&replay_all(&text, &cfg, until).triggers);
    // Closed at the largest ts (90 min): both, u2's exactly at the close.
    assert_eq!(
        run(None),
        vec![ac("u1", H, &["p1"]), ac("u2", 90 * M, &["p2"])]
    );
    assert_eq!(run(Some(T0 + 90 * M - 1)), vec![ac("u1", H, &["p1"])]);
    assert_eq!(run(Some(T0 + H)), vec![ac("u1", H, &["p1"])]);
    assert_eq!(run(Some(T0 + H - 1)), vec![]);
    assert_eq!(
        run(Some(T0 + 3 * H)),
        vec![ac("u1", H, &["p1"]), ac("u2", 90 * M, &["p2"])]
    );
}

#[test]
fn closes_at_largest_ts() {
    let line = |u: &str, ty: &str, ts: u64| {
        json!({"topic": "tracking", "key": u, "value": {"event_id": format!("{u}-{ts}"), "type": ty, "ts": ts, "user_id": u, "product_id": "p1"}})
            .to_string()
    };
    let cfg = only("abandoned_cart");
    let before = format!(
        "{}\n{}\n",
        line("u", "cart_add", T0),
        line("x", "app_open", T0 + H - 1)
    );
    assert!(replay_all(&before, &cfg, None).triggers.is_empty());
    let at = format!(
        "{}\n{}\n",
        line("u", "cart_add", T0),
        line("x", "app_open", T0 + H)
    );
    assert_eq!(
        norm_all(&replay_all(&at, &cfg, None).triggers),
        vec![n("abandoned_cart", "u", T0 + H, &["p1"], None)]
    );
}

/// Line order does not matter: the fixtures reversed give the same bytes.
#[test]
fn line_order_does_not_matter() {
    for name in [
        "abandoned_cart.jsonl",
        "identity.jsonl",
        "price_drop.jsonl",
        "back_in_stock.jsonl",
    ] {
        let text = fixture(name);
        let reversed: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
        let a = serialise(&replay_once(&text, "", 2, 1_000, None).triggers);
        let b = serialise(&replay_once(&reversed, "", 2, 1_000, None).triggers);
        assert_eq!(a, b, "{name}");
    }
}

// ---------------------------------------------------------------- conformance files

fn conformance(name: &str) -> String {
    let path = format!(
        "{}/../shared/conformance/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Normalised expected records as `compare.py` reads them.
fn expected(name: &str) -> Vec<Norm> {
    let mut v: Vec<Norm> = conformance(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("expected line is JSON");
            let products = r["products"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            (
                r["kind"].as_str().unwrap().to_string(),
                r["user_id"].as_str().unwrap().to_string(),
                r["ts"].as_u64().unwrap(),
                products,
                r["audience"].as_str().map(str::to_string),
            )
        })
        .collect();
    v.sort();
    v
}

/// The kinds the conformance files cover (`run.sh` compares only these).
const CORE_KINDS: [&str; 4] = [
    "abandoned_cart",
    "abandoned_browse",
    "price_drop",
    "back_in_stock",
];

/// The records of the core kinds. The conformance replays run the default
/// configuration (every kind), whose further kinds the expected files do
/// not cover; `tests/replay_more.rs` checks those.
fn core(triggers: &[Trigger]) -> Vec<Trigger> {
    triggers
        .iter()
        .filter(|t| CORE_KINDS.contains(&t.kind.as_str()))
        .cloned()
        .collect()
}

#[test]
fn conformance_edge_cases() {
    let s = replay_all(&conformance("edge-cases.jsonl"), "", None);
    assert_eq!(
        norm_all(&core(&s.triggers)),
        expected("edge-cases.expected.jsonl")
    );
    assert_eq!(s.bad_records, 3);
}

#[test]
fn conformance_gen_small() {
    let text = conformance("gen-small.jsonl");
    let one = replay_once(&text, "", 1, 1_000, None);
    let two = replay_once(&text, "", 2, 1_000, None);
    assert_eq!(
        serialise(&one.triggers),
        serialise(&two.triggers),
        "1 vs 2 workers"
    );
    let actual = norm_all(&core(&one.triggers));
    let mut dedup = actual.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), actual.len(), "duplicated normalised records");
    let want = expected("gen-small.expected.jsonl");
    if actual != want {
        let missing: Vec<&Norm> = want
            .iter()
            .filter(|w| actual.binary_search(w).is_err())
            .take(5)
            .collect();
        let extra: Vec<&Norm> = actual
            .iter()
            .filter(|a| want.binary_search(a).is_err())
            .take(5)
            .collect();
        panic!(
            "gen-small differs: {} expected, {} actual; missing {missing:?}; extra {extra:?}",
            want.len(),
            actual.len()
        );
    }
}

/// The user's language and timezone outlive the retention of the events
/// that carried them: a later event repeating the same language must not
/// leave the record without it (regression: the gate only holds changes,
/// and the change once expired with its event).
#[test]
fn language_outlives_event_retention() {
    const D: u64 = 24 * H;
    let ev = |id: &str, ts: u64, ty: &str, extra: &str| {
        format!(
            "{{\"topic\":\"tracking\",\"value\":{{\"event_id\":\"{id}\",\"type\":\"{ty}\",\"ts\":{},\"user_id\":\"u\",\"context\":{{\"language\":\"az\",\"timezone\":\"Asia/Baku\"}}{extra}}}}}\n",
            T0 + ts
        )
    };
    let text = [
        ev("e1", 0, "app_open", ""),
        ev("e2", 3 * D, "cart_add", ",\"product_id\":\"p1\""),
    ]
    .concat();
    let campaigns = format!(
        "[retention]\nactivity_ms = {D}\ncart_ms = {}\nidentity_ms = {D}\n\n{}",
        10 * D,
        only("abandoned_cart")
    );
    let s = replay_all(&text, &campaigns, Some(T0 + 4 * D));
    let t = find(&s.triggers, "abandoned_cart", "u");
    assert_eq!(t.ts, T0 + 3 * D + H);
    assert_eq!(t.language.as_deref(), Some("az"));
    assert_eq!(t.timezone.as_deref(), Some("Asia/Baku"));
}

/// State leaving its retention window must not make an old timer fire: a
/// session of a product view then a category view never fires
/// `abandoned_category`, also not once the view is forgotten after
/// `retention.activity_ms` (31 d) while the category view is still held
/// (regression: the session reduce re-evaluated the truncated session).
#[test]
fn retention_never_fires_old_timers() {
    const D: u64 = 24 * H;
    let ev = |id: &str, ts: u64, ty: &str, extra: &str| {
        format!(
            "{{\"topic\":\"tracking\",\"value\":{{\"event_id\":\"{id}\",\"type\":\"{ty}\",\"ts\":{},\"user_id\":\"u\"{extra}}}}}\n",
            T0 + ts
        )
    };
    let text = [
        ev("e1", 0, "product_view", ",\"product_id\":\"p1\""),
        ev("e2", M, "category_view", ",\"category_id\":\"c1\""),
        ev("e3", 40 * D, "app_open", ""),
    ]
    .concat();
    let s = replay_all(&text, &only("abandoned_category"), None);
    assert!(s.triggers.is_empty(), "{:?}", s.triggers);
}
