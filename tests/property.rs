//! Property test: the dataflow against a recompute-from-scratch reference
//! of `shared/spec/triggers.md` (core kinds) written here without timely:
//! for each candidate time, the state known then is rebuilt from the raw
//! event list and the definitions are evaluated literally. Also checks that
//! the dataflow's output is byte-identical at 1 and 2 workers and at
//! bucket widths 1 ms, 1 s and 1 h.
//!
//! Choices where the spec is silent, shared with the implementation:
//! * events of one user at one `ts` with the same tie rank are applied in
//!   `event_id` order (the generator zero-pads ids, so that is generation
//!   order);
//! * opt-out (every channel's latest consent `false`, or a `forget`)
//!   suppresses a trigger whose firing time `τ` falls while it holds; it
//!   does not postpone it;
//! * a repeated `event_id` is an exact copy (the generator never reuses an
//!   id with other contents).

mod common_replay;

use std::collections::{BTreeMap, BTreeSet};

use common_replay::{campaigns, norm_all, replay_all, Norm};
use proptest::prelude::*;
use serde_json::json;

const T0: u64 = 1_700_000_000_000;
const M: u64 = 60_000;
const DELAY: u64 = 10 * M;
const GAP: u64 = 30 * M;
const WINDOW: u64 = 30 * 24 * 60 * M;
const MIN_DROP_PCT: f64 = 5.0;
const CHANNELS: [&str; 3] = ["push", "email", "sms"];

fn config() -> String {
    campaigns(&[
        ("abandoned_cart", &format!("delay_ms = {DELAY}")),
        ("abandoned_browse", &format!("delay_ms = {DELAY}")),
        ("price_drop", ""),
        ("back_in_stock", ""),
    ])
}

// ------------------------------------------------------------------ input model

#[derive(Clone, Debug, PartialEq)]
enum Body {
    CartAdd(String, u64),
    CartRemove(String),
    WishAdd(String),
    WishRemove(String),
    View(String),
    Search,
    AppOpen,
    Order(Vec<String>),
    Identify,
    Consent(usize, bool),
    Forget,
}

impl Body {
    /// triggers.md, Ties.
    fn rank(&self) -> u8 {
        match self {
            Body::Identify => 0,
            Body::CartAdd(..) => 1,
            Body::WishAdd(_) => 2,
            Body::View(_) | Body::Search => 3,
            Body::CartRemove(_) => 4,
            Body::WishRemove(_) => 5,
            Body::Order(_) => 6,
            _ => 7,
        }
    }
    fn is_activity(&self) -> bool {
        !matches!(self, Body::Identify | Body::Consent(..) | Body::Forget)
    }
}

#[derive(Clone, Debug)]
struct Event {
    eid: String,
    ts: u64,
    user: Option<String>,
    anon: Option<String>,
    body: Body,
}

#[derive(Clone, Debug)]
enum Input {
    Tracking(Event),
    Price { p: String, ts: u64, price: f64 },
    Stock { p: String, ts: u64, q: u64 },
}

impl Input {
    fn ts(&self) -> u64 {
        match self {
            Input::Tracking(e) => e.ts,
            Input::Price { ts, .. } | Input::Stock { ts, .. } => *ts,
        }
    }

    fn line(&self) -> String {
        let v = match self {
            Input::Tracking(e) => {
                let mut v = json!({"event_id": e.eid, "ts": e.ts});
                let o = v.as_object_mut().unwrap();
                if let Some(u) = &e.user {
                    o.insert("user_id".into(), json!(u));
                }
                if let Some(a) = &e.anon {
                    o.insert("anonymous_id".into(), json!(a));
                }
                let (ty, extra) = match &e.body {
                    Body::CartAdd(p, q) => ("cart_add", json!({"product_id": p, "quantity": q})),
                    Body::CartRemove(p) => ("cart_remove", json!({"product_id": p})),
                    Body::WishAdd(p) => ("wishlist_add", json!({"product_id": p})),
                    Body::WishRemove(p) => ("wishlist_remove", json!({"product_id": p})),
                    Body::View(p) => ("product_view", json!({"product_id": p})),
                    Body::Search => ("search", json!({"query": "q"})),
                    Body::AppOpen => ("app_open", json!({})),
                    Body::Order(ps) => {
                        let items: Vec<_> = ps.iter().map(|p| json!({"product_id": p})).collect();
                        (
                            "order_placed",
                            json!({"order_id": format!("o-{}", e.eid), "items": items}),
                        )
                    }
                    Body::Identify => ("identify", json!({})),
                    Body::Consent(c, g) => {
                        ("consent", json!({"channel": CHANNELS[*c], "granted": g}))
                    }
                    Body::Forget => ("forget", json!({})),
                };
                o.insert("type".into(), json!(ty));
                for (k, x) in extra.as_object().unwrap() {
                    o.insert(k.clone(), x.clone());
                }
                return json!({"topic": "tracking", "key": e.user.clone().or(e.anon.clone()), "value": v}).to_string();
            }
            Input::Price { p, ts, price } => {
                json!({"topic": "prices", "key": p, "value": {"product_id": p, "price": price, "ts": ts}})
            }
            Input::Stock { p, ts, q } => {
                json!({"topic": "stock", "key": p, "value": {"product_id": p, "quantity": q, "ts": ts}})
            }
        };
        v.to_string()
    }
}

// ------------------------------------------------------------------ generator

#[derive(Clone, Debug)]
struct Raw {
    kind: u8,
    who: u8,
    anon: bool,
    prod: u8,
    slot: u16,
    extra: u8,
}

#[derive(Clone, Debug)]
struct Case {
    /// Spread over about 25 hours with sub-second offsets, else 3 hours.
    wide: bool,
    users: u8,
    products: u8,
    raws: Vec<Raw>,
}

fn raw() -> impl Strategy<Value = Raw> {
    (
        0u8..100,
        0u8..6,
        prop::bool::weighted(0.2),
        0u8..5,
        0u16..300,
        any::<u8>(),
    )
        .prop_map(|(kind, who, anon, prod, slot, extra)| Raw {
            kind,
            who,
            anon,
            prod,
            slot,
            extra,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.25),
        2u8..=6,
        2u8..=5,
        prop::collection::vec(raw(), 5..60),
    )
        .prop_map(|(wide, users, products, raws)| Case {
            wide,
            users,
            products,
            raws,
        })
}

/// Builds the recording: times on a 5-minute grid over 3 hours (many
/// collisions at one ms; the 10-minute delay and the 30-minute session gap
/// are multiples of it), sometimes 1 ms off; or, for a `wide` case, over
/// 25 hours and up to 2 s off the grid.
fn build(case: &Case) -> Vec<Input> {
    let mut out: Vec<Input> = Vec::new();
    let mut next_id = 0usize;
    let mut price_ts: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut stock_ts: BTreeSet<(String, u64)> = BTreeSet::new();
    for r in &case.raws {
        let ts = if case.wide {
            T0 + u64::from(r.slot) * 5 * M + u64::from(r.extra % 3) * 999
        } else {
            T0 + u64::from(r.slot % 37) * 5 * M + u64::from(r.extra % 8 == 7)
        };
        let user = format!("u{}", r.who % case.users);
        let anon_id = format!("a{}", r.extra % 3);
        let p = format!("p{}", r.prod % case.products);
        let p2 = format!("p{}", (r.prod + r.extra) % case.products);
        let mut event = |body: Body, out: &mut Vec<Input>| {
            next_id += 1;
            let identify = body == Body::Identify;
            let (user, anon) = if identify {
                (Some(user.clone()), Some(anon_id.clone()))
            } else if r.anon {
                (None, Some(anon_id.clone()))
            } else {
                (Some(user.clone()), None)
            };
            out.push(Input::Tracking(Event {
                eid: format!("e{next_id:04}"),
                ts,
                user,
                anon,
                body,
            }));
        };
        match r.kind {
            0..=13 => event(Body::CartAdd(p, u64::from(r.extra % 3) + 1), &mut out),
            14..=21 => event(Body::CartRemove(p), &mut out),
            22..=27 => event(Body::WishAdd(p), &mut out),
            28..=31 => event(Body::WishRemove(p), &mut out),
            32..=47 => event(Body::View(p), &mut out),
            48..=50 => event(Body::Search, &mut out),
            51..=53 => event(Body::AppOpen, &mut out),
            54..=59 => {
                let mut ps = vec![p];
                if r.extra % 2 == 0 && !ps.contains(&p2) {
                    ps.push(p2);
                }
                event(Body::Order(ps), &mut out)
            }
            60..=64 => event(Body::Identify, &mut out),
            65..=68 => event(
                Body::Consent(usize::from(r.extra % 3), r.extra & 4 != 0),
                &mut out,
            ),
            69..=70 => {
                for c in 0..3 {
                    event(Body::Consent(c, false), &mut out);
                }
            }
            71 => event(Body::Forget, &mut out),
            72..=73 => {
                let tracking: Vec<&Input> = out
                    .iter()
                    .filter(|i| matches!(i, Input::Tracking(_)))
                    .collect();
                if !tracking.is_empty() {
                    let dup = tracking[usize::from(r.extra) % tracking.len()].clone();
                    out.push(dup);
                }
            }
            74..=86 => {
                if price_ts.insert((p.clone(), ts)) {
                    let price = [100.0, 95.0, 96.0, 90.0, 80.0][usize::from(r.extra % 5)];
                    out.push(Input::Price { p, ts, price });
                }
            }
            _ => {
                if stock_ts.insert((p.clone(), ts)) {
                    let q = [0, 0, 1, 3][usize::from(r.extra % 4)];
                    out.push(Input::Stock { p, ts, q });
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------ reference

/// An event resolved to its user: application order, known time, body.
#[derive(Clone, Debug)]
struct Fact {
    seq: (u64, u8, String),
    known: u64,
    body: Body,
}

impl Fact {
    fn ts(&self) -> u64 {
        self.seq.0
    }
}

/// Each user's facts, sorted in application order (triggers.md, *State*:
/// user; *Time*: known state, ties).
fn resolve(inputs: &[Input]) -> BTreeMap<String, Vec<Fact>> {
    // A repeated event_id is applied once.
    let mut seen = BTreeSet::new();
    let events: Vec<&Event> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::Tracking(e) if seen.insert(e.eid.clone()) => Some(e),
            _ => None,
        })
        .collect();
    // The earliest identify of an anonymous id wins.
    let mut links: BTreeMap<String, ((u64, String), String)> = BTreeMap::new();
    for e in &events {
        if let (Body::Identify, Some(u), Some(a)) = (&e.body, &e.user, &e.anon) {
            let key = (e.ts, e.eid.clone());
            if links.get(a).is_none_or(|(k, _)| key < *k) {
                links.insert(a.clone(), (key, u.clone()));
            }
        }
    }
    let mut users: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
    for e in &events {
        let (user, known) = match (&e.user, &e.anon) {
            (Some(u), _) => (u.clone(), e.ts),
            (None, Some(a)) => match links.get(a) {
                Some(((link_ts, _), u)) => (u.clone(), e.ts.max(*link_ts)),
                None => continue,
            },
            (None, None) => continue,
        };
        users.entry(user).or_default().push(Fact {
            seq: (e.ts, e.body.rank(), e.eid.clone()),
            known,
            body: e.body.clone(),
        });
    }
    for facts in users.values_mut() {
        facts.sort_by(|a, b| a.seq.cmp(&b.seq));
    }
    users
}

fn visible(facts: &[Fact], tau: u64) -> Vec<&Fact> {
    facts.iter().filter(|f| f.known <= tau).collect()
}

/// Opted out at `tau`, on the facts known then.
fn opted_out(facts: &[Fact], tau: u64) -> bool {
    let mut consent = [None::<bool>; 3];
    for f in visible(facts, tau) {
        match f.body {
            Body::Forget => return true,
            Body::Consent(c, g) => consent[c] = Some(g),
            _ => {}
        }
    }
    consent.iter().all(|c| *c == Some(false))
}

/// Cart (`cart = true`) or wishlist: product -> quantity, from `facts` in order.
fn list(facts: &[&Fact], cart: bool) -> BTreeMap<String, u64> {
    let mut l = BTreeMap::new();
    for f in facts {
        match (&f.body, cart) {
            (Body::CartAdd(p, q), true) => {
                l.insert(p.clone(), *q);
            }
            (Body::WishAdd(p), false) => {
                l.insert(p.clone(), 1);
            }
            (Body::CartRemove(p), true) | (Body::WishRemove(p), false) => {
                l.remove(p);
            }
            (Body::Order(ps), _) => {
                for p in ps {
                    l.remove(p);
                }
            }
            _ => {}
        }
    }
    l
}

/// The times at which a timer due at `due` may fire: `due` and every later
/// known time (the known state changes only then).
fn candidate_times(facts: &[Fact], due: u64) -> Vec<u64> {
    let mut v: Vec<u64> = facts.iter().map(|f| f.known).filter(|&k| k > due).collect();
    v.push(due);
    v.sort_unstable();
    v.dedup();
    v
}

fn reference(inputs: &[Input]) -> Vec<Norm> {
    let close = inputs.iter().map(Input::ts).max().unwrap_or(0);
    let users = resolve(inputs);
    let mut out: Vec<Norm> = Vec::new();
    let mut emit = |kind: &str,
                    u: &str,
                    ts: u64,
                    products: Vec<String>,
                    audience: Option<&str>,
                    facts: &[Fact]| {
        if ts <= close && !opted_out(facts, ts) {
            out.push((
                kind.to_string(),
                u.to_string(),
                ts,
                products,
                audience.map(str::to_string),
            ));
        }
    };

    for (u, facts) in &users {
        // abandoned_cart
        let is_change = |b: &Body| matches!(b, Body::CartAdd(..) | Body::CartRemove(_));
        let ls: BTreeSet<u64> = facts
            .iter()
            .filter(|f| is_change(&f.body))
            .map(Fact::ts)
            .collect();
        for &l in &ls {
            let t = l + DELAY;
            for tau in candidate_times(facts, t) {
                let vis = visible(facts, tau);
                match vis
                    .iter()
                    .filter(|f| is_change(&f.body))
                    .map(|f| f.ts())
                    .max()
                {
                    Some(latest) if latest > l => break,
                    Some(latest) if latest == l => {}
                    _ => continue,
                }
                if vis
                    .iter()
                    .any(|f| matches!(f.body, Body::Order(_)) && f.ts() >= l && f.ts() <= t)
                {
                    break;
                }
                let until_t: Vec<&Fact> = vis.iter().copied().filter(|f| f.ts() <= t).collect();
                let cart = list(&until_t, true);
                if cart.is_empty() {
                    continue;
                }
                emit(
                    "abandoned_cart",
                    u,
                    tau,
                    cart.into_keys().collect(),
                    None,
                    facts,
                );
                break;
            }
        }

        // abandoned_browse
        let ls: BTreeSet<u64> = facts
            .iter()
            .filter(|f| f.body.is_activity())
            .map(Fact::ts)
            .collect();
        for &l in &ls {
            let t = l + DELAY;
            for tau in candidate_times(facts, t) {
                let acts: Vec<&Fact> = visible(facts, tau)
                    .into_iter()
                    .filter(|f| f.body.is_activity())
                    .collect();
                match acts.last().map(|f| f.ts()) {
                    Some(latest) if latest > l => break,
                    Some(latest) if latest == l => {}
                    _ => continue,
                }
                let mut start = acts.len() - 1;
                while start > 0 && acts[start].ts() - acts[start - 1].ts() < GAP {
                    start -= 1;
                }
                let session = &acts[start..];
                if session
                    .iter()
                    .any(|f| matches!(f.body, Body::CartAdd(..) | Body::Order(_)))
                {
                    continue;
                }
                let mut items: Vec<String> = Vec::new();
                for f in session.iter().rev() {
                    if let Body::View(p) = &f.body {
                        if !items.contains(p) && items.len() < 10 {
                            items.push(p.clone());
                        }
                    }
                }
                if items.is_empty() {
                    continue;
                }
                items.sort();
                emit("abandoned_browse", u, tau, items, None, facts);
                break;
            }
        }
    }

    // price_drop and back_in_stock: each message against the one it replaced.
    let mut prices: Vec<(&String, u64, f64)> = Vec::new();
    let mut stocks: Vec<(&String, u64, u64)> = Vec::new();
    for i in inputs {
        match i {
            Input::Price { p, ts, price } => prices.push((p, *ts, *price)),
            Input::Stock { p, ts, q } => stocks.push((p, *ts, *q)),
            Input::Tracking(_) => {}
        }
    }
    prices.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    stocks.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let factor = 1.0 - MIN_DROP_PCT / 100.0;
    for w in prices.windows(2) {
        let ((p0, _, old), (p, t, new)) = (w[0], w[1]);
        if p0 != p || new > old * factor {
            continue;
        }
        for (u, facts) in &users {
            let vis = visible(facts, t);
            let audience = if list(&vis, true).contains_key(p) {
                Some("cart")
            } else if list(&vis, false).contains_key(p) {
                Some("wishlist")
            } else {
                let last_view = vis
                    .iter()
                    .filter(|f| {
                        f.body == Body::View(p.clone()) && f.ts() + WINDOW >= t && f.ts() <= t
                    })
                    .map(|f| &f.seq)
                    .max();
                last_view
                    .filter(|v| {
                        !vis.iter().any(|f| {
                            matches!(&f.body, Body::Order(ps) if ps.contains(p)) && f.seq > **v
                        })
                    })
                    .map(|_| "viewed")
            };
            if let Some(a) = audience {
                emit("price_drop", u, t, vec![p.clone()], Some(a), facts);
            }
        }
    }
    for w in stocks.windows(2) {
        let ((p0, _, old), (p, t, new)) = (w[0], w[1]);
        if p0 != p || old != 0 || new == 0 {
            continue;
        }
        for (u, facts) in &users {
            let vis = visible(facts, t);
            if list(&vis, true).contains_key(p) || list(&vis, false).contains_key(p) {
                emit("back_in_stock", u, t, vec![p.clone()], None, facts);
            }
        }
    }
    out.sort();
    out
}

// ------------------------------------------------------------------ the property

fn recording(inputs: &[Input]) -> String {
    inputs.iter().map(|i| i.line() + "\n").collect()
}

proptest! {
    #![proptest_config(common_replay::proptest_config(64))]

    #[test]
    fn dataflow_matches_reference(case in case()) {
        let inputs = build(&case);
        let text = recording(&inputs);
        let summary = replay_all(&text, &config(), None);
        prop_assert_eq!(summary.bad_records, 0);
        let actual = norm_all(&summary.triggers);
        let expected = reference(&inputs);
        prop_assert_eq!(actual, expected, "recording:\n{}", text);
    }
}
