//! `back_in_stock`: a product in the user's cart or wishlist is available again.

use crate::model::Item;
use crate::operators::{product_audience, Candidate, Coll, ProductChange};
use crate::state::{listed_at, ByProduct, Product};

use super::abandoned_cart::Firing;
use super::price_drop::per_user;

/// A `stock` message for `p` at `t` with quantity `> 0` whose previous
/// quantity was `0` fires at `t` for every user with `p` in cart(u) or
/// wishlist(u) on the state known at `t`; `items = [{p, price(p)}]`.
/// *id*: `(u, p, t)`.
pub fn back_in_stock<'s>(
    campaign: &str,
    changes: Coll<'s, (Product, ProductChange)>,
    lists_by_product: Coll<'s, ByProduct>,
) -> Coll<'s, Firing> {
    let name = campaign.to_string();
    product_audience(
        changes,
        lists_by_product,
        &format!("{campaign}: back in stock audience"),
        move |p, change, facts, out| {
            let ProductChange::Stock {
                ts: t,
                old: Some(0),
                new,
                price,
            } = *change
            else {
                return;
            };
            if new == 0 {
                return;
            }
            per_user(facts, |user, facts| {
                let facts = || facts.iter().copied();
                if !(listed_at(facts(), t, true) || listed_at(facts(), t, false)) {
                    return;
                }
                let items = vec![Item {
                    price,
                    ..Item::product(p)
                }];
                let candidate =
                    Candidate::new(&name, "back_in_stock", &[user, p, &t.to_string()], items);
                out.push((user.into(), (t, candidate)));
            });
        },
    )
}
