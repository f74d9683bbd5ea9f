//! Every type that crosses a timely exchange survives bincode.
//!
//! Within one process timely moves records between workers as they are;
//! between processes (`tripwire run --processes N`) it serialises them with
//! bincode 1 (timely 0.32's `ContainerBytes for Vec<T>`), which writes every
//! field in order and reads them back the same way. A serde form bincode
//! cannot read back (a field left out by `skip_serializing_if`, `untagged`,
//! `flatten`, a self-describing `deserialize_any`, ...) breaks only a
//! cluster: `bincode::deserialize() failed: InvalidTagEncoding` (issue 13).
//!
//! Each type is round-tripped as timely's channels carry it, a `Vec` of
//! `(data, time, diff)` updates, with every `Option` field both `Some` and
//! `None` and every enum variant. [`serde_attributes_are_bincode_safe`]
//! checks the sources, so that a new type or attribute cannot slip past
//! these tests unnoticed.

use std::fmt::Debug;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use dataflows::campaign::Audience;
use dataflows::catalog::{Lookup, ProductInput, Request};
use dataflows::model::{
    Body, CatalogMsg, Channel, Event, Input, Item, Money, OrderItem, PriceMsg, Seq, StockMsg, Str,
    Time, Trigger,
};
use dataflows::operators::{Candidate, ProductChange, ProductMsg, Ready};
use dataflows::state::{
    ActKind, At, AtOp, Basket, ByProduct, Counted, ListOp, OrderFact, ProductFact, UserFact,
};

/// Round-trips `values` through bincode, alone and as timely's channels
/// carry them (one `Vec` of updates), and checks each comes back equal.
fn round_trip<T>(values: &[T])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    assert!(!values.is_empty());
    for v in values {
        let bytes = bincode::serialize(v).expect("bincode serialises");
        assert_eq!(
            bincode::serialized_size(v).unwrap() as usize,
            bytes.len(),
            "{v:?}"
        );
        let back: T = bincode::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("bincode does not read back {v:?}: {e}"));
        assert_eq!(&back, v);
    }
    // Several in one container: a value read back short or long would
    // misplace the next one.
    let updates: Vec<(T, Time, isize)> = values
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (v, 1_700_000_000_000 + i as Time, 1 - 2 * (i as isize % 2)))
        .collect();
    let bytes = bincode::serialize(&updates).expect("bincode serialises");
    let back: Vec<(T, Time, isize)> = bincode::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("bincode does not read back {updates:?}: {e}"));
    assert_eq!(back, updates);
}

fn s(v: &str) -> Str {
    Str::from(v)
}

/// Ids short (inline) and long (shared), with non-ASCII text.
fn ids() -> [Str; 3] {
    [
        s("u1"),
        s("anonymous-0f8b1c2d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"),
        s("Ünïcödé ✓ 商品"),
    ]
}

fn monies() -> Vec<Money> {
    vec![
        Money(19.5),
        Money(0.01),
        Money(-0.0),
        Money(f64::MAX),
        Money(f64::INFINITY),
        Money(f64::NAN),
    ]
}

fn order_items() -> Vec<OrderItem> {
    vec![
        OrderItem {
            product_id: s("p1"),
            quantity: 3,
            price: Some(Money(12.25)),
            seller_id: Some(s("seller-with-a-rather-long-identifier")),
        },
        OrderItem {
            product_id: s("p2"),
            quantity: u64::MAX,
            price: None,
            seller_id: None,
        },
    ]
}

fn bodies() -> Vec<Body> {
    vec![
        Body::Identify {
            language: Some(s("az")),
            timezone: Some(s("Asia/Baku")),
        },
        Body::Identify {
            language: None,
            timezone: None,
        },
        Body::CartAdd {
            product_id: s("p1"),
            quantity: 2,
            price: Some(Money(5.0)),
        },
        Body::CartAdd {
            product_id: s("p1"),
            quantity: 1,
            price: None,
        },
        Body::WishlistAdd {
            product_id: s("p2"),
        },
        Body::ProductView {
            product_id: s("p3"),
            category_id: Some(s("c1")),
            price: Some(Money(9.99)),
        },
        Body::ProductView {
            product_id: s("p3"),
            category_id: None,
            price: None,
        },
        Body::CategoryView {
            category_id: s("c2"),
        },
        Body::Search {
            query: s("red running shoes, size 42"),
            result_count: Some(17),
        },
        Body::Search {
            query: s(""),
            result_count: None,
        },
        Body::CartRemove {
            product_id: s("p1"),
        },
        Body::WishlistRemove {
            product_id: s("p2"),
        },
        Body::OrderPlaced {
            order_id: s("o1"),
            items: order_items(),
            payment: Some(s("card")),
        },
        Body::OrderPlaced {
            order_id: s("o2"),
            items: vec![],
            payment: None,
        },
        Body::OrderDelivered { order_id: s("o1") },
        Body::OrderCancelled {
            order_id: s("o1"),
            reason: Some(s("out_of_stock")),
        },
        Body::OrderCancelled {
            order_id: s("o1"),
            reason: None,
        },
        Body::ReviewSubmitted {
            order_id: Some(s("o1")),
            product_id: Some(s("p1")),
            seller_id: Some(s("s1")),
        },
        Body::ReviewSubmitted {
            order_id: None,
            product_id: None,
            seller_id: None,
        },
        Body::AppOpen,
        Body::Consent {
            channel: Channel::Sms,
            granted: false,
        },
        Body::Forget,
        Body::Other {
            type_name: s("brand_new_type"),
        },
    ]
}

fn events() -> Vec<Event> {
    bodies()
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let [a, b, c] = ids();
            Event {
                ts: 1_700_000_000_000 + i as Time,
                known: 1_700_000_000_500 + i as Time,
                link_until: if i % 2 == 0 {
                    Time::MAX
                } else {
                    1_800_000_000_000
                },
                event_id: s(&format!("event-{i}")),
                user_id: (i % 2 == 0).then_some(a),
                anonymous_id: (i % 3 != 0).then_some(b),
                language: (i % 4 == 0).then(|| s("ru")),
                timezone: (i % 5 == 0).then_some(c),
                body,
            }
        })
        .collect()
}

fn catalog_msgs() -> Vec<CatalogMsg> {
    vec![
        CatalogMsg {
            product_id: s("p1"),
            category_id: s("c1"),
            ts: 1,
            seller_id: Some(s("s1")),
            group_id: Some(s("g1")),
            title: Some(s("Kettle \"Steel\" 1.7 l")),
            url: Some(s("https://shop.example/p1")),
            image_url: Some(s("https://img.example/p1.jpg")),
            deleted: false,
        },
        CatalogMsg {
            product_id: s("p2"),
            category_id: s("c1"),
            ts: 2,
            seller_id: None,
            group_id: None,
            title: None,
            url: None,
            image_url: None,
            deleted: true,
        },
    ]
}

fn price(p: &str, ts: Time, price: Money, currency: Option<&str>) -> PriceMsg {
    PriceMsg {
        product_id: s(p),
        ts,
        price,
        currency: currency.map(s),
    }
}

fn stock(p: &str, ts: Time, quantity: u64) -> StockMsg {
    StockMsg {
        product_id: s(p),
        ts,
        quantity,
    }
}

/// Items with every field set, none set, and some set.
fn items() -> Vec<Item> {
    vec![
        Item {
            product_id: s("p1"),
            quantity: Some(2),
            price: Some(Money(19.5)),
            old_price: Some(Money(25.0)),
            category_id: Some(s("c1")),
            title: Some(s("Lamp")),
            url: Some(s("https://shop.example/p1")),
            image_url: Some(s("https://img.example/p1.jpg")),
        },
        Item::product("p2"),
        Item {
            price: Some(Money(3.5)),
            title: Some(s("Mug with a title longer than twenty-three bytes")),
            ..Item::product("p3")
        },
        Item {
            quantity: Some(0),
            old_price: Some(Money(1.0)),
            image_url: Some(s("https://img.example/p4.jpg")),
            ..Item::product("p4")
        },
    ]
}

fn candidates() -> Vec<Candidate> {
    vec![
        Candidate {
            trigger_id: s("0123456789abcdef0123456789abcdef"),
            campaign: s("cart"),
            kind: s("abandoned_cart"),
            items: items(),
            query: Some(s("lamp")),
            category_id: Some(s("c1")),
            order_id: Some(s("o1")),
            audience: Some(s("wishlist")),
            reminder: Some(true),
        },
        Candidate::new(
            "drop",
            "price_drop",
            &["u1", "p1"],
            vec![Item::product("p1")],
        ),
        Candidate {
            reminder: Some(false),
            ..Candidate::new("search", "abandoned_search", &["u2"], vec![])
        },
    ]
}

fn at(i: u64) -> At {
    At {
        seq: Seq {
            ts: 1_700_000_000_000 + i,
            rank: (i % 8) as u8,
            event_id: s(&format!("e{i}")),
        },
        known: 1_700_000_000_000 + 2 * i,
        until: if i.is_multiple_of(2) {
            Time::MAX
        } else {
            1_800_000_000_000
        },
    }
}

fn baskets() -> Vec<Basket> {
    vec![
        Basket {
            order_id: s("o1"),
            ts: 5,
            known: 7,
            lines: vec![(s("p1"), 2), (s("p2"), 1)],
        },
        Basket {
            order_id: s("o2"),
            ts: 6,
            known: 6,
            lines: vec![],
        },
    ]
}

#[test]
fn model_types() {
    round_trip(&monies());
    round_trip(&[Channel::Push, Channel::Email, Channel::Sms]);
    round_trip(&order_items());
    round_trip(&bodies());
    round_trip(&events());
    round_trip(&events().iter().map(Event::seq).collect::<Vec<Seq>>());
    round_trip(&[
        price("p1", 1, Money(10.0), Some("EUR")),
        price("p1", 2, Money(9.0), None),
    ]);
    round_trip(&[stock("p1", 1, 0), stock("p2", Time::MAX, u64::MAX)]);
    round_trip(&catalog_msgs());
    let mut inputs: Vec<Input> = events().into_iter().map(Input::Tracking).collect();
    inputs.push(Input::Price(price("p1", 3, Money(8.0), Some("AZN"))));
    inputs.push(Input::Price(price("p1", 4, Money(7.0), None)));
    inputs.push(Input::Stock(stock("p1", 5, 3)));
    inputs.extend(catalog_msgs().into_iter().map(Input::Catalog));
    round_trip(&inputs);
    round_trip(&items());
    round_trip(&[Audience::Cart, Audience::Wishlist, Audience::Viewed]);
}

#[test]
fn trigger_records() {
    let full = Trigger {
        trigger_id: s("0123456789abcdef0123456789abcdef"),
        campaign: s("cart"),
        kind: s("abandoned_cart"),
        user_id: s("u1"),
        ts: 1_700_000_000_123,
        items: items(),
        query: Some(s("lamp")),
        category_id: Some(s("c1")),
        order_id: Some(s("o1")),
        language: Some(s("az")),
        timezone: Some(s("Asia/Baku")),
        audience: Some(s("cart")),
        reminder: Some(false),
        priority: Some(-7),
        channels: Some(vec!["push".into(), "email".into()]),
        template: Some("cart-reminder-v2".into()),
    };
    let bare = Trigger {
        items: vec![],
        query: None,
        category_id: None,
        order_id: None,
        language: None,
        timezone: None,
        audience: None,
        reminder: None,
        priority: None,
        channels: None,
        template: None,
        ..full.clone()
    };
    let some = Trigger {
        items: vec![Item::product("p9")],
        language: Some(s("ru")),
        priority: Some(0),
        channels: Some(vec![]),
        ..bare.clone()
    };
    round_trip(&[full, bare, some]);
}

#[test]
fn keyed_state_types() {
    round_trip(&(0..4).map(at).collect::<Vec<At>>());
    let list_ops = vec![
        ListOp::Add {
            product: s("p1"),
            quantity: 2,
        },
        ListOp::Remove { product: s("p1") },
        ListOp::Order {
            products: vec![s("p1"), s("p2")],
        },
        ListOp::Order { products: vec![] },
    ];
    round_trip(&list_ops);
    let at_ops: Vec<(Str, AtOp)> = list_ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| (s("u1"), (at(i as u64), op)))
        .collect();
    round_trip(&at_ops);
    let product_facts = [
        ProductFact::CartAdd,
        ProductFact::CartRemove,
        ProductFact::WishlistAdd,
        ProductFact::WishlistRemove,
        ProductFact::Ordered,
        ProductFact::Viewed,
    ];
    round_trip(&product_facts);
    let by_product: Vec<ByProduct> = product_facts
        .iter()
        .enumerate()
        .map(|(i, f)| (s("p1"), (s("u1"), at(i as u64), f.clone())))
        .collect();
    round_trip(&by_product);
    let acts = vec![
        ActKind::View { product: s("p1") },
        ActKind::CategoryView { category: s("c1") },
        ActKind::Search { query: s("shoes") },
        ActKind::CartAdd,
        ActKind::Order,
        ActKind::Other,
    ];
    round_trip(&acts);
    round_trip(
        &acts
            .into_iter()
            .enumerate()
            .map(|(i, k)| (s("u1"), (at(i as u64), k)))
            .collect::<Vec<_>>(),
    );
    let user_facts = vec![
        UserFact::Consent {
            channel: Channel::Email,
            granted: true,
        },
        UserFact::Forget,
        UserFact::Context {
            language: Some(s("az")),
            timezone: Some(s("Asia/Baku")),
        },
        UserFact::Context {
            language: None,
            timezone: None,
        },
        UserFact::Context {
            language: None,
            timezone: Some(s("UTC")),
        },
        UserFact::Active,
        UserFact::Ordered,
    ];
    round_trip(&user_facts);
    round_trip(
        &user_facts
            .into_iter()
            .enumerate()
            .map(|(i, f)| (s("u1"), (at(i as u64), f)))
            .collect::<Vec<_>>(),
    );
    let order_facts = vec![
        OrderFact::Placed {
            order_id: s("o1"),
            items: order_items(),
        },
        OrderFact::Delivered { order_id: s("o1") },
        OrderFact::Cancelled {
            order_id: s("o1"),
            reason: Some(s("changed_mind")),
        },
        OrderFact::Cancelled {
            order_id: s("o1"),
            reason: None,
        },
        OrderFact::Review { order_id: s("o1") },
    ];
    round_trip(&order_facts);
    round_trip(
        &order_facts
            .into_iter()
            .enumerate()
            .map(|(i, f)| (s("u1"), (at(i as u64), f)))
            .collect::<Vec<_>>(),
    );
    round_trip(&baskets());
    let [b1, b2] = [baskets()[0].clone(), baskets()[1].clone()];
    round_trip(&[
        Counted::Placed(b1.clone()),
        Counted::Erased { basket: b2, at: 9 },
    ]);
    // A reactivation visit: activity with the product viewed, if any.
    round_trip(&[(s("u1"), (at(1), Some(s("p1")))), (s("u1"), (at(2), None))]);
    // Prices kept with their expiry.
    round_trip(&[(s("p1"), (5u64, Money(4.5)))]);
}

#[test]
fn product_side_and_candidates() {
    let lookups = vec![
        Lookup::Enrich,
        Lookup::InStock(s("p1")),
        Lookup::BestSellers {
            category: s("c1"),
            top_n: 5,
            window_ms: 7 * 86_400_000,
        },
        Lookup::CoPurchase {
            items: vec![(s("p1"), Some(Money(3.0))), (s("p2"), None)],
            bought: vec![s("p3")],
            top_n: 3,
            window_ms: 1,
        },
        Lookup::CoPurchase {
            items: vec![],
            bought: vec![],
            top_n: 0,
            window_ms: 0,
        },
        Lookup::Alternatives {
            items: vec![(s("p1"), Some(s("s1"))), (s("p2"), None)],
            max_items: usize::MAX,
        },
    ];
    round_trip(&lookups);
    let mut product_inputs = vec![
        ProductInput::Price(price("p1", 1, Money(2.0), Some("EUR"))),
        ProductInput::Price(price("p1", 2, Money(1.0), None)),
        ProductInput::Stock(stock("p1", 3, 0)),
    ];
    product_inputs.extend(catalog_msgs().into_iter().map(ProductInput::Catalog));
    product_inputs.push(ProductInput::Order(baskets()[0].clone()));
    product_inputs.push(ProductInput::Erase {
        basket: baskets()[1].clone(),
        at: 11,
    });
    round_trip(&product_inputs);
    round_trip(&[
        ProductMsg::Price(price("p1", 1, Money(2.0), Some("EUR"))),
        ProductMsg::Price(price("p1", 2, Money(1.0), None)),
        ProductMsg::Stock(stock("p1", 3, 5)),
    ]);
    let changes = vec![
        ProductChange::Price {
            ts: 1,
            old: Some(Money(2.0)),
            new: Money(1.5),
        },
        ProductChange::Price {
            ts: 1,
            old: None,
            new: Money(1.5),
        },
        ProductChange::Stock {
            ts: 2,
            old: Some(0),
            new: 4,
            price: Some(Money(1.5)),
        },
        ProductChange::Stock {
            ts: 2,
            old: None,
            new: 4,
            price: None,
        },
    ];
    round_trip(&changes);
    round_trip(
        &changes
            .into_iter()
            .map(|c| (s("p1"), c))
            .collect::<Vec<_>>(),
    );
    round_trip(&candidates());
    let requests: Vec<Request> = candidates()
        .into_iter()
        .zip(lookups)
        .map(|(c, l)| (s("u1"), (1_700_000_000_000, c, l)))
        .collect();
    round_trip(&requests);
    let ready: Vec<Ready> = candidates()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let lang = (i % 2 == 0).then(|| s("az"));
            let tz = (i % 3 == 0).then(|| s("Europe/Berlin"));
            (s("u1"), (1_700_000_000_000 + i as Time, c, lang, tz))
        })
        .collect();
    round_trip(&ready);
    // A firing without its lookup.
    round_trip(&[(s("u1"), (5u64, candidates()[0].clone()))]);
}

/// The serde attributes in this crate's sources are bincode-safe, and no
/// type serialises by hand: `skip_serializing(_if)`, `untagged`, `flatten`,
/// `tag`/`content` (internally or adjacently tagged enums need
/// `deserialize_any`), `skip`, ... would write a form bincode cannot read
/// back. `default` (read only for a missing field, which bincode never has),
/// `transparent` and `rename_all` are safe.
#[test]
fn serde_attributes_are_bincode_safe() {
    const SAFE: [&str; 4] = [
        "transparent",
        "rename_all = \"snake_case\"",
        "default",
        "deny_unknown_fields",
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut sources = Vec::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                files.push(e.unwrap().path());
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            sources.push(p);
        }
    }
    assert!(sources.len() > 10, "found {sources:?}");
    let mut unsafe_uses = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let at = || format!("{}:{}: {line}", path.display(), n + 1);
            if let Some(rest) = line.strip_prefix("#[serde(") {
                let inner = rest.trim_end_matches(")]");
                for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !SAFE.contains(&part) {
                        unsafe_uses.push(at());
                    }
                }
            }
            let by_hand = ["impl Serialize for", "impl serde::Serialize for"]
                .iter()
                .any(|p| line.contains(p))
                || (line.contains("impl<'de>") && line.contains("Deserialize<'de> for"));
            if by_hand {
                unsafe_uses.push(at());
            }
        }
    }
    assert!(
        unsafe_uses.is_empty(),
        "serde attributes or impls bincode may not round-trip (types here cross timely \
         exchanges; put JSON-only forms in the binary's codec):\n{}",
        unsafe_uses.join("\n")
    );
}
