//! `abandoned_cart`: the cart was left alone for `delay_ms`.

use std::collections::{BTreeMap, HashMap};

use crate::campaign::AbandonedCart;
use crate::model::{Item, Money, Time};
use crate::operators::{keyed_timers, Candidate, Clock, Coll};
use crate::state::{apply_ops, firing_times, AtOp, ListOp, Product, User};

/// A candidate firing at `τ` (ms).
pub type Firing = (User, (Time, Candidate));

/// Each product's prices within retention: `(ts, price) -> multiplicity`.
pub type PriceHistory = HashMap<Product, BTreeMap<(Time, Money), isize>>;

/// Let `L` be the time of the user's latest `cart_add` or `cart_remove`.
/// Fires at the first time `τ >= T = L + delay` at which, on the state known
/// at `τ`, `L` is still the latest change, cart(u) at `T` is non-empty and no
/// order was placed in `[L, T]`; `items` = cart(u) at `T` with latest
/// quantities and price(p) at `T` where a price is known (the latest
/// `prices` message with `ts <= T`, while `T < ts + price_retention_ms`).
/// *id*: `(u, L)`.
///
/// State: the user's cart operations, each change with its timer at
/// `L + delay` ([`keyed_timers`]); prices are kept on every worker.
pub fn abandoned_cart<'s>(
    campaign: &str,
    params: &AbandonedCart,
    clock: Clock,
    cart_ops: Coll<'s, (User, AtOp)>,
    prices: Coll<'s, (Product, (Time, Money))>,
    price_retention_ms: Time,
) -> Coll<'s, Firing> {
    let delay = params.delay_ms;
    let name = campaign.to_string();
    keyed_timers(
        cart_ops,
        Some(prices),
        &format!("{campaign}: abandoned cart"),
        clock,
        move |(at, op): &AtOp, due: &mut Vec<Time>| {
            if is_change(op) {
                due.push(at.ts().saturating_add(delay));
            }
        },
        PriceHistory::new(),
        |prices: &mut PriceHistory, (p, (ts, price)), r| {
            let history = prices.entry(p.clone()).or_default();
            let n = history.entry((ts, price)).or_insert(0);
            *n += r;
            if *n == 0 {
                history.remove(&(ts, price));
                if history.is_empty() {
                    prices.remove(&p);
                }
            }
        },
        move |user, ops, prices, recent, out| {
            let price = |p: &Product, t: Time| price_at(prices, p, t, price_retention_ms);
            fire(&name, user, ops, &price, clock, delay, recent, out)
        },
    )
}

fn is_change(op: &ListOp) -> bool {
    !matches!(op, ListOp::Order { .. })
}

/// The user's timers evaluated in bucket `recent` (see
/// [`crate::state::Evaluated`]): each change's timer at `end = L + delay`
/// that is due by then is tried at `τ = end` and at every later known
/// time, until it fires or can no longer fire.
#[allow(clippy::too_many_arguments)]
fn fire(
    name: &str,
    user: &User,
    ops: &[(AtOp, isize)],
    price: &dyn Fn(&Product, Time) -> Option<Money>,
    clock: Clock,
    delay: Time,
    recent: Time,
    out: &mut Vec<Firing>,
) {
    let ops: Vec<&AtOp> = ops.iter().map(|(op, _)| op).collect();
    // Timers present in `recent`: one per change time, due by its bucket.
    let mut due: Vec<Time> = ops
        .iter()
        .filter(|(at, op)| is_change(op) && clock.at(at.ts().saturating_add(delay)) <= recent)
        .map(|(at, _)| at.ts())
        .collect();
    due.sort_unstable();
    due.dedup();
    let late_now = ops
        .iter()
        .any(|(at, _)| at.known >= recent && at.known > at.ts());
    for &last in &due {
        let end = last.saturating_add(delay);
        if end < recent && !late_now {
            continue;
        }
        // Superseded before it was due: a later change known by `end`.
        if ops
            .iter()
            .any(|(at, op)| is_change(op) && at.ts() > last && at.visible(end))
        {
            continue;
        }
        for tau in firing_times(end, ops.iter().map(|(at, _)| at.known)) {
            let visible = || ops.iter().filter(move |(at, _)| at.visible(tau));
            let latest = visible()
                .filter(|(_, op)| is_change(op))
                .map(|(at, _)| at.ts())
                .max();
            match latest {
                Some(l) if l > last => break,
                Some(l) if l == last => {}
                _ => continue,
            }
            if visible().any(|(at, op)| !is_change(op) && at.ts() >= last && at.ts() <= end) {
                break;
            }
            let cart = apply_ops(visible().filter(|(at, _)| at.ts() <= end).copied());
            if cart.is_empty() {
                continue;
            }
            let items = cart
                .into_iter()
                .map(|(p, q)| Item {
                    quantity: Some(q),
                    price: price(&p, end),
                    ..Item::product(p)
                })
                .collect();
            let candidate =
                Candidate::new(name, "abandoned_cart", &[user, &last.to_string()], items);
            if tau >= recent {
                out.push((user.clone(), (tau, candidate)));
            }
            break;
        }
    }
}

/// price(p) at `t`: the latest price with `ts <= t` (the highest of one
/// ms), unless its retention (`retention_ms` after its `ts`) ended by `t`.
/// Decided here, to the ms: the history itself forgets at bucket boundaries.
fn price_at(prices: &PriceHistory, p: &Product, t: Time, retention_ms: Time) -> Option<Money> {
    prices
        .get(p)?
        .range(..=(t, Money(f64::INFINITY)))
        .next_back()
        .filter(|((ts, _), _)| t < ts.saturating_add(retention_ms))
        .map(|((_, price), _)| *price)
}
