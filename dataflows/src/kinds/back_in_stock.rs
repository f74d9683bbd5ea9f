//! `back_in_stock`: a product in the user's cart or wishlist is available again.

use crate::model::{Item, Money, Time};
use crate::operators::{Candidate, Coll, ProductChange};
use crate::state::{listed_at, trigger_id, ByProduct, Product, User};

use super::abandoned_cart::Firing;

/// A `stock` message for `p` at `t` with quantity `> 0` whose previous
/// quantity was `0` fires at `t` for every user with `p` in cart(u) or
/// wishlist(u) on the state known at `t`; `items = [{p, price(p)}]`.
/// *id*: `(u, p, t)`.
pub fn back_in_stock<'s>(
    campaign: &str,
    changes: Coll<'s, (Product, ProductChange)>,
    lists_by_product: Coll<'s, ByProduct>,
) -> Coll<'s, Firing> {
    let restocks = changes.flat_map(|(p, change)| match change {
        ProductChange::Stock {
            ts,
            old: Some(0),
            new,
            price,
        } if new > 0 => Some((p, (ts, price))),
        _ => None,
    });
    let name = campaign.to_string();
    restocks
        .join_map(lists_by_product, |p, (t, price), (u, at, fact)| {
            (
                (u.clone(), p.clone(), *t, *price),
                (at.clone(), fact.clone()),
            )
        })
        .filter(|((_, _, t, _), (at, _))| at.known <= *t)
        .reduce_named(
            &format!("{campaign}: back in stock audience"),
            |key: &(User, Product, Time, Option<Money>), input, output| {
                let t = key.2;
                let facts = || input.iter().map(|((at, f), _)| (at, f));
                if listed_at(facts(), t, true) || listed_at(facts(), t, false) {
                    output.push(((), 1));
                }
            },
        )
        .map(move |((user, p, t, price), ())| {
            let candidate = Candidate {
                trigger_id: trigger_id(&name, &[&user, &p, &t.to_string()]),
                campaign: name.clone(),
                kind: "back_in_stock".into(),
                items: vec![Item {
                    price,
                    ..Item::product(p)
                }],
                query: None,
                category_id: None,
                order_id: None,
                audience: None,
                reminder: None,
            };
            (user, (t, candidate))
        })
}
