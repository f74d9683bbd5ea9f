//! `wishlist_reminder`: a wished-for product is still wished for, and available.

use serde::{Deserialize, Serialize};

use crate::campaign::WishlistReminder;
use crate::catalog::{Lookup, Request};
use crate::model::{Item, Time};
use crate::operators::{shift_to, Candidate, Clock, Coll};
use crate::state::{apply_ops, timer_firings, AtOp, Evaluated, ListOp, Product, Step, User};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum WishIn {
    Op(AtOp),
    /// The timer of the `wishlist_add` of `product` at `ts`.
    Due(Time, Product),
}

/// For each `wishlist_add(u, p)` at `t`: fires at the first `τ >= t +
/// delay` at which, on the state known at `τ`, `p` is in wishlist(u) (from
/// events with `ts <= T`), and, on the product side, `p` is not out of
/// stock (unknown stock counts as in stock). *id*: `(u, p, t)`.
pub fn wishlist_reminder<'s>(
    campaign: &str,
    params: &WishlistReminder,
    clock: Clock,
    wishlist_ops: Coll<'s, (User, AtOp)>,
) -> Coll<'s, Request> {
    let delay = params.delay_ms;
    let adds = wishlist_ops.clone().flat_map(|(u, (at, op))| match op {
        ListOp::Add { product, .. } => Some((u, WishIn::Due(at.ts(), product))),
        _ => None,
    });
    let timers = shift_to(
        adds,
        clock,
        &format!("{campaign}: wishlist timers"),
        move |(_, due)| match due {
            WishIn::Due(ts, _) => ts.saturating_add(delay),
            WishIn::Op(_) => 0,
        },
    );
    let name = campaign.to_string();
    wishlist_ops
        .map(|(u, op)| (u, WishIn::Op(op)))
        .concat(timers)
        .reduce_named(
            &format!("{campaign}: wishlist reminder"),
            move |user, input, output| {
                let mut ops: Vec<&AtOp> = Vec::new();
                let mut due: Vec<(Time, (Time, &Product))> = Vec::new();
                for (x, _) in input {
                    match x {
                        WishIn::Op(op) => ops.push(op),
                        WishIn::Due(ts, p) => due.push((ts.saturating_add(delay), (*ts, p))),
                    }
                }
                let known: Vec<(Time, Time)> =
                    ops.iter().map(|(at, _)| (at.ts(), at.known)).collect();
                let ev = Evaluated::new(clock, &known, due.iter().map(|d| d.0));
                let mut found = Vec::new();
                timer_firings(
                    ev,
                    &known,
                    &due,
                    |&(t, p), tau| {
                        let end = t.saturating_add(delay);
                        let added = ops.iter().any(|(at, op)| {
                            at.ts() == t
                                && at.visible(tau)
                                && matches!(op, ListOp::Add { product, .. } if product == p)
                        });
                        if !added {
                            return Step::Retry;
                        }
                        let list = apply_ops(
                            ops.iter()
                                .filter(|(at, _)| at.visible(tau) && at.ts() <= end)
                                .copied(),
                        );
                        if !list.contains_key(p) {
                            return Step::Retry;
                        }
                        let c = Candidate::new(
                            &name,
                            "wishlist_reminder",
                            &[user, p, &t.to_string()],
                            vec![Item::product(p.clone())],
                        );
                        Step::Fire((c, Lookup::InStock(p.clone())))
                    },
                    &mut found,
                );
                for (tau, (c, l)) in found {
                    output.push(((tau, c, l), 1));
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::At;

    /// `WishIn` crosses the reduce's exchange: between processes it goes
    /// through bincode (see `tests/bincode_roundtrip.rs`).
    #[test]
    fn wish_in_round_trips_through_bincode() {
        let at = At {
            seq: crate::model::Seq {
                ts: 1_700_000_000_000,
                rank: 2,
                event_id: "e1".into(),
            },
            known: 1_700_000_000_001,
            until: Time::MAX,
        };
        let values = vec![
            (
                Product::from("u1"),
                WishIn::Op((
                    at.clone(),
                    ListOp::Add {
                        product: "p1".into(),
                        quantity: 2,
                    },
                )),
            ),
            (
                "u1".into(),
                WishIn::Op((
                    at,
                    ListOp::Order {
                        products: vec!["p1".into(), "a-product-id-longer-than-23-bytes".into()],
                    },
                )),
            ),
            ("u2".into(), WishIn::Due(1_700_000_600_000, "p1".into())),
        ];
        let bytes = bincode::serialize(&values).unwrap();
        let back: Vec<(User, WishIn)> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, values);
    }
}
