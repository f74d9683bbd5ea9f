//! `price_drop`: the price of a product the user cares about fell.

use serde::{Deserialize, Serialize};

use crate::campaign::{Audience, PriceDrop};
use crate::model::{Item, Money, Seq, Time};
use crate::operators::{Candidate, Coll, ProductChange};
use crate::state::{trigger_id, Product, User};

/// Why a user may be in the audience of one drop.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Reason {
    Cart,
    Wishlist,
    Viewed(Seq),
    Ordered(Seq),
}

type DropKey = (User, Product, Time, Money, Money);

/// A `prices` message for `p` at `t` whose new price is at most the old one
/// times `1 - min_drop` fires at `t` for every user in the first audience
/// that holds: `cart` (p in cart(u) at t), `wishlist` (p in wishlist(u) at
/// t), `viewed` (u viewed p within `view_window_ms` before t and ordered no p
/// after the latest such view). *id*: `(u, p, t)`.
///
/// `changes` holds transient facts (present during `[t, t+1)`), so each join
/// below sees the users' state known at `t` and nothing later.
pub fn price_drop<'s>(
    campaign: &str,
    params: &PriceDrop,
    changes: Coll<'s, (Product, ProductChange)>,
    cart: Coll<'s, (User, (Product, u64))>,
    wishlist: Coll<'s, (User, (Product, u64))>,
    views_by_product: Coll<'s, (Product, (User, Seq))>,
    orders_by_product: Coll<'s, (Product, (User, Seq))>,
) -> Coll<'s, (User, Candidate)> {
    let factor = 1.0 - params.min_drop_pct / 100.0;
    let drops = changes.flat_map(move |(p, change)| match change {
        ProductChange::Price { ts, old: Some(old), new } if new.0 <= old.0 * factor => Some((p, (ts, old, new))),
        _ => None,
    });
    let key = |p: &Product, (ts, old, new): &(Time, Money, Money), u: &User| -> DropKey { (u.clone(), p.clone(), *ts, *old, *new) };
    let mut reasons: Vec<Coll<'s, (DropKey, Reason)>> = Vec::new();
    for audience in &params.audiences {
        match audience {
            Audience::Cart => reasons.push(
                drops
                    .clone()
                    .join_map(cart.clone().map(|(u, (p, _))| (p, u)), move |p, d, u| (key(p, d, u), Reason::Cart)),
            ),
            Audience::Wishlist => reasons.push(
                drops
                    .clone()
                    .join_map(wishlist.clone().map(|(u, (p, _))| (p, u)), move |p, d, u| (key(p, d, u), Reason::Wishlist)),
            ),
            Audience::Viewed => {
                reasons.push(
                    drops
                        .clone()
                        .join_map(views_by_product.clone(), move |p, d, (u, seq)| (key(p, d, u), Reason::Viewed(seq.clone()))),
                );
                reasons.push(
                    drops
                        .clone()
                        .join_map(orders_by_product.clone(), move |p, d, (u, seq)| (key(p, d, u), Reason::Ordered(seq.clone()))),
                );
            }
        }
    }
    let audiences = params.audiences.clone();
    let name = campaign.to_string();
    differential_dataflow::collection::concatenate(drops.scope(), reasons)
        .reduce_named(&format!("{campaign}: price drop audience"), move |_key, input, output| {
            let holds = |a: &Audience| match a {
                Audience::Cart => input.iter().any(|(r, _)| matches!(r, Reason::Cart)),
                Audience::Wishlist => input.iter().any(|(r, _)| matches!(r, Reason::Wishlist)),
                Audience::Viewed => {
                    let last_view = input
                        .iter()
                        .filter_map(|(r, _)| match r {
                            Reason::Viewed(s) => Some(s),
                            _ => None,
                        })
                        .max();
                    last_view.is_some_and(|v| !input.iter().any(|(r, _)| matches!(r, Reason::Ordered(o) if o > v)))
                }
            };
            if let Some(a) = audiences.iter().find(|a| holds(a)) {
                output.push((a.name().to_string(), 1));
            }
        })
        .map(move |((user, p, ts, old, new), audience)| {
            let candidate = Candidate {
                trigger_id: trigger_id(&name, &[&user, &p, &ts.to_string()]),
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
            (user, candidate)
        })
}
