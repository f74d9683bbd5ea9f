//! `back_in_stock`: a product in the user's cart or wishlist is available again.

use crate::model::Item;
use crate::operators::{Candidate, Coll, ProductChange};
use crate::state::{trigger_id, Product, User};

/// A `stock` message for `p` at `t` with quantity `> 0` whose previous
/// quantity was `0` fires at `t` for every user with `p` in cart(u) or
/// wishlist(u) at `t`; `items = [{p, price(p)}]`. *id*: `(u, p, t)`.
pub fn back_in_stock<'s>(
    campaign: &str,
    changes: Coll<'s, (Product, ProductChange)>,
    cart: Coll<'s, (User, (Product, u64))>,
    wishlist: Coll<'s, (User, (Product, u64))>,
) -> Coll<'s, (User, Candidate)> {
    let restocks = changes.flat_map(|(p, change)| match change {
        ProductChange::Stock { ts, old: Some(0), new, price } if new > 0 => Some((p, (ts, price))),
        _ => None,
    });
    let holders = cart.concat(wishlist).map(|(u, (p, _))| (p, u));
    let name = campaign.to_string();
    restocks
        .join_map(holders, |p, (ts, price), u| (u.clone(), p.clone(), *ts, *price))
        .distinct()
        .map(move |(user, p, ts, price)| {
            let candidate = Candidate {
                trigger_id: trigger_id(&name, &[&user, &p, &ts.to_string()]),
                campaign: name.clone(),
                kind: "back_in_stock".into(),
                items: vec![Item { price, ..Item::product(p) }],
                query: None,
                category_id: None,
                order_id: None,
                audience: None,
                reminder: None,
            };
            (user, candidate)
        })
}
