//! `price_drop`: the price of a product the user cares about fell.

use crate::campaign::{Audience, PriceDrop};
use crate::model::{Item, Time};
use crate::operators::{product_audience, Candidate, Coll, ProductChange, ProductFacts};
use crate::state::{listed_at, At, ByProduct, Product, ProductFact};

use super::abandoned_cart::Firing;

/// Calls `each(user, facts)` for every user in `facts`, with that user's
/// facts in application order.
pub(crate) fn per_user<'a>(
    facts: &'a ProductFacts,
    mut each: impl FnMut(&'a str, &[(&'a At, &'a ProductFact)]),
) {
    let mut group: Vec<(&At, &ProductFact)> = Vec::new();
    let mut current: Option<&str> = None;
    for (u, at, f) in facts.keys() {
        if current != Some(u.as_str()) {
            if let Some(c) = current {
                each(c, &group);
            }
            group.clear();
            current = Some(u.as_str());
        }
        group.push((at, f));
    }
    if let Some(c) = current {
        each(c, &group);
    }
}

/// A `prices` message for `p` at `t` whose new price is at most the old one
/// times `1 - min_drop` fires at `t` for every user in the first audience
/// that holds on the state known at `t`: `cart` (p in cart(u)), `wishlist`
/// (p in wishlist(u)), `viewed` (u viewed p in `[t - view_window, t]` and
/// ordered no p after the latest such view). *id*: `(u, p, t)`.
/// `views_by_product` is given when the campaign's audiences include `viewed`.
pub fn price_drop<'s>(
    campaign: &str,
    params: &PriceDrop,
    changes: Coll<'s, (Product, ProductChange)>,
    lists_by_product: Coll<'s, ByProduct>,
    views_by_product: Option<Coll<'s, ByProduct>>,
) -> Coll<'s, Firing> {
    let factor = 1.0 - params.min_drop_pct / 100.0;
    let facts = match views_by_product {
        Some(views) => lists_by_product.concat(views),
        None => lists_by_product,
    };
    let window = params.view_window_ms;
    let audiences = params.audiences.clone();
    let name = campaign.to_string();
    product_audience(
        changes,
        facts,
        &format!("{campaign}: price drop audience"),
        move |p, change, facts, out| {
            let ProductChange::Price {
                ts: t,
                old: Some(old),
                new,
            } = *change
            else {
                return;
            };
            if new.0 > old.0 * factor {
                return;
            }
            per_user(facts, |user, facts| {
                let facts = || facts.iter().copied();
                let holds = |a: &Audience| match a {
                    Audience::Cart => listed_at(facts(), t, true),
                    Audience::Wishlist => listed_at(facts(), t, false),
                    Audience::Viewed => {
                        let last_view: Option<&At> = facts()
                            .filter(|(at, f)| {
                                **f == ProductFact::Viewed
                                    && at.visible(t)
                                    && at.ts() <= t
                                    && at.ts().saturating_add(window) >= t
                            })
                            .map(|(at, _)| at)
                            .max();
                        last_view.is_some_and(|v| {
                            !facts().any(|(at, f)| {
                                *f == ProductFact::Ordered && at.visible(t) && at.seq > v.seq
                            })
                        })
                    }
                };
                let Some(audience) = audiences.iter().find(|a| holds(a)) else {
                    return;
                };
                let items = vec![Item {
                    price: Some(new),
                    old_price: Some(old),
                    ..Item::product(p)
                }];
                let candidate = Candidate {
                    audience: Some(audience.name().into()),
                    ..Candidate::new(&name, "price_drop", &[user, p, &t.to_string()], items)
                };
                out.push((user.into(), (t as Time, candidate)));
            });
        },
    )
}
