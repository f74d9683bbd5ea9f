//! `price_drop`: the price of a product the user cares about fell.

use crate::campaign::{Audience, PriceDrop};
use crate::model::{Item, Money, Time};
use crate::operators::{Candidate, Coll, ProductChange};
use crate::state::{listed_at, trigger_id, At, ByProduct, Product, ProductFact, User};

use super::abandoned_cart::Firing;

type DropKey = (User, Product, Time, Money, Money);

/// A `prices` message for `p` at `t` whose new price is at most the old one
/// times `1 - min_drop` fires at `t` for every user in the first audience
/// that holds on the state known at `t`: `cart` (p in cart(u)), `wishlist`
/// (p in wishlist(u)), `viewed` (u viewed p in `[t - view_window, t]` and
/// ordered no p after the latest such view). *id*: `(u, p, t)`.
///
/// `changes` holds transient facts, present in the bucket of `t` only; each
/// joined fact carries its known time, and only those known at `t` count.
pub fn price_drop<'s>(
    campaign: &str,
    params: &PriceDrop,
    changes: Coll<'s, (Product, ProductChange)>,
    lists_by_product: Coll<'s, ByProduct>,
    views_by_product: Coll<'s, ByProduct>,
) -> Coll<'s, Firing> {
    let factor = 1.0 - params.min_drop_pct / 100.0;
    let drops = changes.flat_map(move |(p, change)| match change {
        ProductChange::Price {
            ts,
            old: Some(old),
            new,
        } if new.0 <= old.0 * factor => Some((p, (ts, old, new))),
        _ => None,
    });
    let facts = if params.audiences.contains(&Audience::Viewed) {
        lists_by_product.concat(views_by_product)
    } else {
        lists_by_product
    };
    let window = params.view_window_ms;
    let audiences = params.audiences.clone();
    let name = campaign.to_string();
    drops
        .join_map(facts, |p, (t, old, new), (u, at, fact)| {
            (
                (u.clone(), p.clone(), *t, *old, *new),
                (at.clone(), fact.clone()),
            )
        })
        .filter(|((_, _, t, _, _), (at, _))| at.known <= *t)
        .reduce_named(
            &format!("{campaign}: price drop audience"),
            move |key: &DropKey, input, output| {
                let t = key.2;
                let facts = || input.iter().map(|((at, f), _)| (at, f));
                let holds = |a: &Audience| match a {
                    Audience::Cart => listed_at(facts(), t, true),
                    Audience::Wishlist => listed_at(facts(), t, false),
                    Audience::Viewed => {
                        let last_view: Option<&At> = facts()
                            .filter(|(at, f)| {
                                **f == ProductFact::Viewed
                                    && at.ts().saturating_add(window) >= t
                                    && at.ts() <= t
                            })
                            .map(|(at, _)| at)
                            .max();
                        last_view.is_some_and(|v| {
                            !facts().any(|(at, f)| *f == ProductFact::Ordered && at.seq > v.seq)
                        })
                    }
                };
                if let Some(a) = audiences.iter().find(|a| holds(a)) {
                    output.push((a.name().to_string(), 1));
                }
            },
        )
        .map(move |((user, p, t, old, new), audience)| {
            let candidate = Candidate {
                trigger_id: trigger_id(&name, &[&user, &p, &t.to_string()]),
                campaign: name.clone(),
                kind: "price_drop".into(),
                items: vec![Item {
                    price: Some(new),
                    old_price: Some(old),
                    ..Item::product(p)
                }],
                query: None,
                category_id: None,
                order_id: None,
                audience: Some(audience),
                reminder: None,
            };
            (user, (t, candidate))
        })
}
