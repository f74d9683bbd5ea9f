//! The maintained collections every trigger kind reads: events resolved to
//! users (identity stitching), opt-outs, the user's language and timezone,
//! carts, wishlists, activity and product views.
//!
//! Every collection here is a differential collection at event time: its
//! contents at time `τ` are the state *known* at `τ` (triggers.md, *Known
//! state*). Identity stitching gets this for free: an anonymous event joined
//! with the `identify` that links it appears at the later of the two times.

use differential_dataflow::Hashable;
use serde::{Deserialize, Serialize};

use crate::campaign::Retention;
use crate::model::{Body, Channel, Event, Seq, Time};
use crate::operators::{with_expiry, Coll};

/// A user id.
pub type User = String;
/// A product id.
pub type Product = String;

/// Attaches to every tracking event its retraction at the end of its
/// retention window (consent and forget are never forgotten).
pub fn retain_events<'s>(events: Coll<'s, Event>, retention: &Retention) -> Coll<'s, Event> {
    let r = retention.clone();
    with_expiry(events, "EventRetention", move |e: &Event| {
        let base = match &e.body {
            Body::Consent { .. } | Body::Forget => return None,
            Body::Identify { .. } => r.identity_ms,
            Body::CartAdd { .. }
            | Body::CartRemove { .. }
            | Body::WishlistAdd { .. }
            | Body::WishlistRemove { .. }
            | Body::OrderPlaced { .. } => r.cart_ms,
            _ => r.activity_ms,
        };
        let ttl = if e.user_id.is_none() { base.min(r.identity_ms) } else { base };
        Some(e.ts.saturating_add(ttl))
    })
}

/// Events resolved to the user they belong to. Events with a `user_id`
/// belong to it; events with only an `anonymous_id` belong to the user the
/// earliest `identify` of that anonymous id names, from the later of their
/// own time and the link's time on; until then they belong to nobody.
pub fn resolve_users<'s>(events: Coll<'s, Event>) -> Coll<'s, (User, Event)> {
    let links = events
        .clone()
        .flat_map(|e| match (&e.body, &e.user_id, &e.anonymous_id) {
            (Body::Identify { .. }, Some(u), Some(a)) => Some((a.clone(), (e.seq(), u.clone()))),
            _ => None,
        })
        .reduce_named("IdentityLinks", |_anon, input, output| {
            // Inputs are sorted: the first is the earliest identify.
            output.push(((input[0].0).1.clone(), 1));
        });
    let known = events.clone().flat_map(|e| e.user_id.clone().map(|u| (u, e)));
    let anonymous = events
        .flat_map(|e| match (&e.user_id, &e.anonymous_id) {
            (None, Some(a)) => Some((a.clone(), e)),
            _ => None,
        })
        .join_map(links, |_anon, e, user| (user.clone(), e.clone()));
    known.concat(anonymous)
}

/// Users who are opted out: the latest `consent` of every channel says
/// `granted: false`, or the user sent `forget` (final).
pub fn opted_out<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, User> {
    resolved
        .flat_map(|(u, e)| match e.body {
            Body::Consent { channel, granted } => Some((u, (e.seq(), Some((channel, granted))))),
            Body::Forget => Some((u, (e.seq(), None))),
            _ => None,
        })
        .reduce_named("OptedOut", |_u, input, output| {
            let mut state = [None::<bool>; 3];
            for ((_seq, change), _) in input {
                match change {
                    None => {
                        output.push(((), 1));
                        return;
                    }
                    Some((channel, granted)) => {
                        let i = match channel {
                            Channel::Push => 0,
                            Channel::Email => 1,
                            Channel::Sms => 2,
                        };
                        state[i] = Some(*granted);
                    }
                }
            }
            if state.iter().all(|s| *s == Some(false)) {
                output.push(((), 1));
            }
        })
        .map(|(u, ())| u)
}

/// The user's latest known language and timezone (from any event's
/// `context`, or an `identify`'s `traits`), for users who have either.
pub fn user_context<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (User, (Option<String>, Option<String>))> {
    resolved
        .flat_map(|(u, e)| {
            if e.language.is_none() && e.timezone.is_none() {
                None
            } else {
                Some((u, (e.seq(), e.language.clone(), e.timezone.clone())))
            }
        })
        .reduce_named("UserContext", |_u, input, output| {
            let mut language = None;
            let mut timezone = None;
            for ((_seq, l, t), _) in input {
                if l.is_some() {
                    language = l.clone();
                }
                if t.is_some() {
                    timezone = t.clone();
                }
            }
            output.push(((language, timezone), 1));
        })
}

/// A change to a user's cart or wishlist, or an order that empties both of
/// its products.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ListOp {
    Add { product: Product, quantity: u64 },
    Remove { product: Product },
    Order { products: Vec<Product> },
}

/// One cart or wishlist operation in application order.
pub type SeqOp = (Seq, ListOp);

/// Applies operations, sorted by `Seq`, to a list: product -> quantity.
pub fn apply_ops<'a>(ops: impl Iterator<Item = &'a SeqOp>) -> std::collections::BTreeMap<Product, u64> {
    let mut list = std::collections::BTreeMap::new();
    for (_, op) in ops {
        match op {
            ListOp::Add { product, quantity } => {
                list.insert(product.clone(), *quantity);
            }
            ListOp::Remove { product } => {
                list.remove(product);
            }
            ListOp::Order { products } => {
                for p in products {
                    list.remove(p);
                }
            }
        }
    }
    list
}

fn order_products(e: &Event) -> Option<Vec<Product>> {
    match &e.body {
        Body::OrderPlaced { items, .. } => {
            let mut ps: Vec<Product> = items.iter().map(|i| i.product_id.clone()).collect();
            ps.sort();
            ps.dedup();
            Some(ps)
        }
        _ => None,
    }
}

/// Cart operations per user: `cart_add`, `cart_remove`, `order_placed`.
pub fn cart_ops<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (User, SeqOp)> {
    resolved.flat_map(|(u, e)| {
        let op = match &e.body {
            Body::CartAdd { product_id, quantity, .. } => ListOp::Add {
                product: product_id.clone(),
                quantity: *quantity,
            },
            Body::CartRemove { product_id } => ListOp::Remove {
                product: product_id.clone(),
            },
            _ => ListOp::Order {
                products: order_products(&e)?,
            },
        };
        Some((u, (e.seq(), op)))
    })
}

/// Wishlist operations per user: `wishlist_add`, `wishlist_remove`, `order_placed`.
pub fn wishlist_ops<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (User, SeqOp)> {
    resolved.flat_map(|(u, e)| {
        let op = match &e.body {
            Body::WishlistAdd { product_id } => ListOp::Add {
                product: product_id.clone(),
                quantity: 1,
            },
            Body::WishlistRemove { product_id } => ListOp::Remove {
                product: product_id.clone(),
            },
            _ => ListOp::Order {
                products: order_products(&e)?,
            },
        };
        Some((u, (e.seq(), op)))
    })
}

/// The current contents of a list (cart or wishlist) per user: `(user, (product, quantity))`.
pub fn list_contents<'s>(ops: Coll<'s, (User, SeqOp)>, name: &str) -> Coll<'s, (User, (Product, u64))> {
    ops.reduce_named(name, |_u, input, output| {
        for (p, q) in apply_ops(input.iter().map(|(op, _)| *op)) {
            output.push(((p, q), 1));
        }
    })
}

/// What an activity event means to the session-based kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActKind {
    View { product: Product },
    CategoryView { category: String },
    Search { query: String },
    CartAdd,
    Order,
    Other,
}

/// Activity per user (every tracking event but `identify`, `consent`, `forget`).
pub fn activity<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (User, (Seq, ActKind))> {
    resolved.flat_map(|(u, e)| {
        if !e.body.is_activity() {
            return None;
        }
        let kind = match &e.body {
            Body::ProductView { product_id, .. } => ActKind::View {
                product: product_id.clone(),
            },
            Body::CategoryView { category_id } => ActKind::CategoryView {
                category: category_id.clone(),
            },
            Body::Search { query, .. } => ActKind::Search { query: query.clone() },
            Body::CartAdd { .. } => ActKind::CartAdd,
            Body::OrderPlaced { .. } => ActKind::Order,
            _ => ActKind::Other,
        };
        Some((u, (e.seq(), kind)))
    })
}

/// `product_view`s keyed by product: `(product, (user, seq))`, each present
/// from its time until `window_ms` after its `ts` (inclusive).
pub fn views_by_product<'s>(resolved: Coll<'s, (User, Event)>, window_ms: Time, name: &str) -> Coll<'s, (Product, (User, Seq))> {
    let views = resolved.flat_map(|(u, e)| match &e.body {
        Body::ProductView { product_id, .. } => Some((product_id.clone(), (u, e.seq()))),
        _ => None,
    });
    with_expiry(views, name, move |(_p, (_u, seq))| Some(seq.ts.saturating_add(window_ms).saturating_add(1)))
}

/// Orders keyed by each product they contain: `(product, (user, seq))`.
pub fn orders_by_product<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (Product, (User, Seq))> {
    resolved.flat_map(|(u, e)| {
        let seq = e.seq();
        order_products(&e)
            .unwrap_or_default()
            .into_iter()
            .map(move |p| (p, (u.clone(), seq.clone())))
    })
}

/// A deterministic trigger id: a hex hash of the campaign and the parts.
pub fn trigger_id(campaign: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(campaign.as_bytes());
    for p in parts {
        h.update([0x1f]);
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// A stable 64-bit hash (the same in every process of a cluster).
pub fn stable_hash<T: std::hash::Hash>(t: &T) -> u64 {
    t.hashed()
}
