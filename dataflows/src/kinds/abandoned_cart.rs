//! `abandoned_cart`: the cart was left alone for `delay_ms`.

use serde::{Deserialize, Serialize};

use crate::campaign::AbandonedCart;
use crate::model::{Item, Time};
use crate::operators::{shift_to, Candidate, Coll};
use crate::state::{apply_ops, trigger_id, ListOp, SeqOp, User};

/// The reduce's input: the user's cart operations, and one timer per cart
/// change, present from the change's `ts + delay_ms` on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum CartIn {
    Op(SeqOp),
    /// The timer of the cart change at this `ts`.
    Due(Time),
}

/// Let `L` be the time of the user's latest `cart_add` or `cart_remove`.
/// Fires at the first time `τ >= T = L + delay` at which cart(u) at `T` is
/// non-empty and no order was placed in `[L, T]`; `items` = cart(u) at `T`
/// with latest quantities. *id*: `(u, L)`.
pub fn abandoned_cart<'s>(campaign: &str, params: &AbandonedCart, cart_ops: Coll<'s, (User, SeqOp)>) -> Coll<'s, (User, Candidate)> {
    let delay = params.delay_ms;
    let changes = cart_ops.clone().flat_map(|(u, (seq, op))| match op {
        ListOp::Add { .. } | ListOp::Remove { .. } => Some((u, CartIn::Due(seq.ts))),
        ListOp::Order { .. } => None,
    });
    let timers = shift_to(changes, &format!("{campaign}: cart timers"), move |(_, due)| match due {
        CartIn::Due(ts) => ts.saturating_add(delay),
        CartIn::Op(_) => 0,
    });
    let name = campaign.to_string();
    cart_ops
        .map(|(u, op)| (u, CartIn::Op(op)))
        .concat(timers)
        .reduce_named(&format!("{campaign}: abandoned cart"), move |user, input, output| {
            let mut ops: Vec<&SeqOp> = Vec::with_capacity(input.len());
            let mut due: Vec<Time> = Vec::new();
            for (x, _) in input {
                match x {
                    CartIn::Op(op) => ops.push(op),
                    CartIn::Due(ts) => due.push(*ts),
                }
            }
            let Some(last) = ops
                .iter()
                .filter(|(_, op)| !matches!(op, ListOp::Order { .. }))
                .map(|(seq, _)| seq.ts)
                .max()
            else {
                return;
            };
            if !due.contains(&last) {
                return;
            }
            let end = last.saturating_add(delay);
            let ordered = ops
                .iter()
                .any(|(seq, op)| matches!(op, ListOp::Order { .. }) && seq.ts >= last && seq.ts <= end);
            if ordered {
                return;
            }
            let cart = apply_ops(ops.into_iter().filter(|(seq, _)| seq.ts <= end));
            if cart.is_empty() {
                return;
            }
            let items = cart
                .into_iter()
                .map(|(p, q)| Item {
                    quantity: Some(q),
                    ..Item::product(p)
                })
                .collect();
            output.push((
                Candidate {
                    trigger_id: trigger_id(&name, &[user, &last.to_string()]),
                    campaign: name.clone(),
                    kind: "abandoned_cart".into(),
                    items,
                    query: None,
                    category_id: None,
                    order_id: None,
                    audience: None,
                    reminder: None,
                },
                1,
            ));
        })
}
