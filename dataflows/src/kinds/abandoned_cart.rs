//! `abandoned_cart`: the cart was left alone for `delay_ms`.

use serde::{Deserialize, Serialize};

use crate::campaign::AbandonedCart;
use crate::model::{Item, Money, Str, Time};
use crate::operators::{shift_to, Candidate, Clock, Coll};
use crate::state::{apply_ops, evaluated_bucket, firing_times, AtOp, ListOp, Product, User};

/// The reduce's input: the user's cart operations, and one timer per cart
/// change, present from the bucket of the change's `ts + delay_ms` on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum CartIn {
    Op(AtOp),
    /// The timer of the cart change at this `ts`.
    Due(Time),
}

/// A candidate firing at `τ` (ms).
pub type Firing = (User, (Time, Candidate));

/// Let `L` be the time of the user's latest `cart_add` or `cart_remove`.
/// Fires at the first time `τ >= T = L + delay` at which, on the state known
/// at `τ`, `L` is still the latest change, cart(u) at `T` is non-empty and no
/// order was placed in `[L, T]`; `items` = cart(u) at `T` with latest
/// quantities. *id*: `(u, L)`.
pub fn abandoned_cart<'s>(
    campaign: &str,
    params: &AbandonedCart,
    clock: Clock,
    cart_ops: Coll<'s, (User, AtOp)>,
    prices: Coll<'s, (Product, (Time, Money))>,
) -> Coll<'s, Firing> {
    let delay = params.delay_ms;
    let changes = cart_ops.clone().flat_map(|(u, (at, op))| match op {
        ListOp::Add { .. } | ListOp::Remove { .. } => Some((u, CartIn::Due(at.ts()))),
        ListOp::Order { .. } => None,
    });
    let timers = shift_to(
        changes,
        clock,
        &format!("{campaign}: cart timers"),
        move |(_, due)| match due {
            CartIn::Due(ts) => ts.saturating_add(delay),
            CartIn::Op(_) => 0,
        },
    );
    let name = campaign.to_string();
    let firings = cart_ops
        .map(|(u, op)| (u, CartIn::Op(op)))
        .concat(timers)
        .reduce_named(
            &format!("{campaign}: abandoned cart"),
            move |user, input, output| {
                // Sorted: operations in application order, then timers by time.
                let mut ops: Vec<&AtOp> = Vec::with_capacity(input.len());
                let mut due: Vec<Time> = Vec::new();
                for (x, _) in input {
                    match x {
                        CartIn::Op(op) => ops.push(op),
                        CartIn::Due(ts) => due.push(*ts),
                    }
                }
                due.dedup();
                let is_change = |op: &ListOp| !matches!(op, ListOp::Order { .. });
                let (recent, late_now) =
                    evaluated_bucket(clock, ops.iter().map(|(at, _)| at), &due, delay);
                for &last in &due {
                    let end = last.saturating_add(delay);
                    if end < recent && !late_now {
                        continue;
                    }
                    // Superseded before it was due: a later change known by `end`.
                    if ops
                        .iter()
                        .any(|(at, op)| is_change(op) && at.ts() > last && at.known <= end)
                    {
                        continue;
                    }
                    for tau in firing_times(end, ops.iter().map(|(at, _)| at.known)) {
                        let visible = || ops.iter().filter(move |(at, _)| at.known <= tau);
                        let latest = visible()
                            .filter(|(_, op)| is_change(op))
                            .map(|(at, _)| at.ts())
                            .max();
                        match latest {
                            Some(l) if l > last => break,
                            Some(l) if l == last => {}
                            _ => continue,
                        }
                        if visible()
                            .any(|(at, op)| !is_change(op) && at.ts() >= last && at.ts() <= end)
                        {
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
                                ..Item::product(p)
                            })
                            .collect();
                        let candidate = Candidate::new(
                            &name,
                            "abandoned_cart",
                            &[user, &last.to_string()],
                            items,
                        );
                        if tau >= recent {
                            output.push(((tau, end, candidate), 1));
                        }
                        break;
                    }
                }
            },
        );
    attach_prices(campaign, firings, prices)
}

/// What the regrouping reduce sees per trigger id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Priced {
    Firing(User, Time, Candidate),
    Price(Product, Money),
}

/// Sets each item's `price` to price(p) at `T` (the latest `prices`
/// message with `ts <= T`), where one is known.
fn attach_prices<'s>(
    campaign: &str,
    firings: Coll<'s, (User, (Time, Time, Candidate))>,
    prices: Coll<'s, (Product, (Time, Money))>,
) -> Coll<'s, Firing> {
    let requests = firings.clone().flat_map(|(_u, (_tau, due, c))| {
        let id = c.trigger_id;
        c.items
            .into_iter()
            .map(move |i| (i.product_id, (id.clone(), due)))
    });
    let found = requests
        .arrange_by_key_named(&format!("{campaign}: items by product"))
        .join_core(
            prices.arrange_by_key_named(&format!("{campaign}: prices by product")),
            |p: &Product, (id, due): &(Str, Time), (ts, price): &(Time, Money)| {
                Some(((id.clone(), p.clone()), (*due, *ts, *price)))
            },
        )
        .filter(|(_, (due, ts, _))| ts <= due)
        .reduce_named(&format!("{campaign}: price at T"), |_key, input, output| {
            // Sorted by (T, ts, price): the last is the latest price at T.
            let ((_, _, price), _) = input[input.len() - 1];
            output.push((*price, 1));
        })
        .map(|((id, p), price)| (id, Priced::Price(p, price)));
    firings
        .map(|(u, (tau, _due, c))| (c.trigger_id.clone(), Priced::Firing(u, tau, c)))
        .concat(found)
        .reduce_named(
            &format!("{campaign}: priced items"),
            |_id, input, output| {
                for (x, _) in input {
                    let Priced::Firing(u, tau, c) = x else {
                        continue;
                    };
                    let mut c = c.clone();
                    for item in &mut c.items {
                        item.price = input.iter().find_map(|(y, _)| match y {
                            Priced::Price(p, price) if *p == item.product_id => Some(*price),
                            _ => None,
                        });
                    }
                    output.push(((u.clone(), *tau, c), 1));
                }
            },
        )
        .map(|(_id, (u, tau, c))| (u, (tau, c)))
}
