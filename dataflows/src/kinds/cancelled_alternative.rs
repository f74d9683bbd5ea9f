//! `cancelled_alternative`: an order was cancelled for lack of stock; offer
//! the same item from other sellers.

use std::collections::BTreeMap;

use crate::campaign::CancelledAlternative;
use crate::catalog::{Lookup, Request};
use crate::model::Str;
use crate::operators::{evaluate_with_facts, Candidate, Coll};
use crate::state::{At, OrderFact, User};

/// An `order_cancelled(u, o)` with reason `out_of_stock` at `t`: for each
/// item `p` of `o` (from u's `order_placed` known at `t`), the other
/// products of `p`'s `group_id` from another seller that are in stock at
/// `t`, cheapest first, at most `max_items` per item (looked up on the
/// product side). No record if none. A cancellation only known after its
/// `ts` (late `identify`) fires nothing: at `t` it belonged to nobody.
/// *id*: `(u, o)`.
pub fn cancelled_alternative<'s>(
    campaign: &str,
    params: &CancelledAlternative,
    order_facts: Coll<'s, (User, (At, OrderFact))>,
) -> Coll<'s, Request> {
    let cancels = order_facts.clone().flat_map(|(u, (at, f))| match f {
        OrderFact::Cancelled { order_id, reason } if reason.as_deref() == Some("out_of_stock") => {
            Some((u, (at, order_id)))
        }
        _ => None,
    });
    let placed = order_facts.filter(|(_, (_, f))| matches!(f, OrderFact::Placed { .. }));
    let name = campaign.to_string();
    let max_items = params.max_items;
    evaluate_with_facts(
        cancels,
        placed,
        &format!("{campaign}: cancelled orders"),
        move |user: &User,
              (at, order): (At, Str),
              facts: &BTreeMap<(At, OrderFact), isize>,
              out: &mut Vec<Request>| {
            let t = at.ts();
            if !at.visible(t) {
                return;
            }
            let items = facts.keys().find_map(|(pat, f)| match f {
                OrderFact::Placed { order_id, items } if *order_id == order && pat.visible(t) => {
                    Some(items)
                }
                _ => None,
            });
            let Some(items) = items else { return };
            let mut lines = Vec::new();
            for i in items {
                if !lines.iter().any(|(p, _)| *p == i.product_id) {
                    lines.push((i.product_id.clone(), i.seller_id.clone()));
                }
            }
            let c = Candidate {
                order_id: Some(order.clone()),
                ..Candidate::new(&name, "cancelled_alternative", &[user, &order], Vec::new())
            };
            out.push((
                user.clone(),
                (
                    t,
                    c,
                    Lookup::Alternatives {
                        items: lines,
                        max_items,
                    },
                ),
            ));
        },
    )
}
