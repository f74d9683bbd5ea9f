//! The maintained collections every trigger kind reads: events resolved to
//! users (identity stitching), each user's cart and wishlist operations and
//! activity, and the same facts keyed by product for the event-caused kinds.
//!
//! Every fact carries its [`At`]: its place in the user's application order
//! (`Seq`: `ts`, tie rank, `event_id`) and its *known* time (triggers.md,
//! *Known state*). Timely time only says in which bucket a fact became
//! known; conditions are evaluated to the millisecond from these fields.

use serde::{Deserialize, Serialize};

use crate::campaign::Retention;
use crate::model::{Body, Event, Seq, Str, Time};
use crate::operators::{flat_map_expiring, with_expiry, Clock, Coll};

/// A user id.
pub type User = Str;
/// A product id.
pub type Product = Str;

/// Where a fact stands: its application order, when it became known and
/// when its retention ends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct At {
    pub seq: Seq,
    pub known: Time,
    /// The millisecond its retention ends (`Time::MAX`: kept for good). The
    /// record itself is retracted at a bucket boundary after it; readers
    /// ask [`At::visible`], so that a fact leaves at its exact millisecond
    /// whatever the bucket width (triggers.md, *Retention*).
    pub until: Time,
}

impl At {
    /// The event's position, known time, and the end of the link that
    /// assigned it to its user (derived records narrow it to their event's
    /// retention, [`Resolved::derive`]).
    fn of(e: &Event) -> At {
        At {
            seq: e.seq(),
            known: e.known,
            until: e.link_until,
        }
    }
    /// The fact's event time.
    pub fn ts(&self) -> Time {
        self.seq.ts
    }
    /// Whether the fact is part of the state at `t`: known by then and
    /// still within its retention.
    pub fn visible(&self, t: Time) -> bool {
        self.known <= t && t < self.until
    }
}

/// A derived record that carries its fact's [`At`], so that
/// [`Resolved::derive`] can stamp the fact's retention end on it.
pub trait WithAt {
    fn at_mut(&mut self) -> Option<&mut At>;
}

impl<X> WithAt for (Str, (At, X)) {
    fn at_mut(&mut self) -> Option<&mut At> {
        Some(&mut (self.1).0)
    }
}

impl<X> WithAt for (Str, (Str, At, X)) {
    fn at_mut(&mut self) -> Option<&mut At> {
        Some(&mut (self.1).1)
    }
}

impl WithAt for (Str, (Str, At)) {
    fn at_mut(&mut self) -> Option<&mut At> {
        Some(&mut (self.1).1)
    }
}

impl WithAt for (Str, Basket) {
    fn at_mut(&mut self) -> Option<&mut At> {
        None
    }
}

/// When the retention of `e` ends (ms): `None` for never (consent and
/// forget are never forgotten). Events with only an anonymous id are kept
/// no longer than identities; once assigned to a user, no longer than the
/// link that assigned them ([`Event::link_until`]).
pub fn retention_end(r: &Retention, e: &Event) -> Option<Time> {
    let own = own_retention_end(r, e);
    if e.link_until == Time::MAX {
        return own;
    }
    Some(own.map_or(e.link_until, |t| t.min(e.link_until)))
}

fn own_retention_end(r: &Retention, e: &Event) -> Option<Time> {
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
    let ttl = if e.user_id.is_none() {
        base.min(r.identity_ms)
    } else {
        base
    };
    Some(e.ts.saturating_add(ttl))
}

/// Events resolved to their users, and what the collections derived from
/// them need to forget them.
///
/// Retention is applied where state is kept, not to whole events: each
/// derived collection ([`Resolved::derive`]) carries the retraction of each
/// of its records at the end of the retention of the event it came from.
/// Only those slim records wait for their retraction, instead of a copy of
/// every event. (Anonymous events and identity links are retained before
/// they are joined; their retractions reach the derived records through the
/// join at the same time, and cancel against the derived ones.)
#[derive(Clone)]
pub struct Resolved<'s> {
    /// `(user, event)`, insertions only for events with a `user_id`.
    pub events: Coll<'s, (User, Event)>,
    pub clock: Clock,
    pub retention: Retention,
}

impl<'s> Resolved<'s> {
    /// Resolves `events` (see [`resolve_users`]).
    pub fn new(events: Coll<'s, Event>, clock: Clock, retention: &Retention) -> Self {
        Resolved {
            events: resolve_users(events, clock, retention),
            clock,
            retention: retention.clone(),
        }
    }

    /// Records derived from each resolved event by `f`, each retracted at
    /// the end of its event's retention.
    pub fn derive<D, I, F>(&self, name: &str, f: F) -> Coll<'s, D>
    where
        D: differential_dataflow::Data + WithAt,
        I: IntoIterator<Item = D>,
        F: Fn(User, Event) -> I + 'static,
    {
        self.derive_until(name, f, |_| None)
    }

    /// As [`Resolved::derive`], each record retracted at the earlier of its
    /// event's retention end and `until(record)` (ms). The record's
    /// [`At::until`] is its event's retention end alone: a window's own end
    /// is the reader's to check.
    pub fn derive_until<D, I, F, U>(&self, name: &str, f: F, until: U) -> Coll<'s, D>
    where
        D: differential_dataflow::Data + WithAt,
        I: IntoIterator<Item = D>,
        F: Fn(User, Event) -> I + 'static,
        U: Fn(&D) -> Option<Time> + 'static,
    {
        let r = self.retention.clone();
        flat_map_expiring(self.events.clone(), self.clock, name, move |(u, e)| {
            let kept = retention_end(&r, &e);
            f(u, e)
                .into_iter()
                .map(|mut d| {
                    if let Some(at) = d.at_mut() {
                        at.until = kept.unwrap_or(Time::MAX);
                    }
                    let end = match (kept, until(&d)) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    (d, end)
                })
                .collect::<Vec<_>>()
        })
    }
}

/// Events resolved to the user they belong to. Events with a `user_id`
/// belong to it; events with only an `anonymous_id` belong to the user the
/// earliest `identify` of that anonymous id names, known from the later of
/// their own known time and the link's; until then they belong to nobody.
/// Anonymous events and identity links are retained here (see [`Resolved`]).
pub fn resolve_users<'s>(
    events: Coll<'s, Event>,
    clock: Clock,
    retention: &Retention,
) -> Coll<'s, (User, Event)> {
    let links = events
        .clone()
        .flat_map(|e| match (&e.body, &e.user_id, &e.anonymous_id) {
            (Body::Identify { .. }, Some(u), Some(a)) => {
                Some((a.clone(), (e.seq(), u.clone(), e.known)))
            }
            _ => None,
        });
    // An identify names its user: it is kept `identity_ms`.
    let identity_ms = retention.identity_ms;
    let links = with_expiry(
        links,
        clock,
        "IdentityLinkRetention",
        move |(_, (seq, _, _))| Some(seq.ts.saturating_add(identity_ms)),
    )
    .reduce_named("IdentityLinks", move |_anon, input, output| {
        // Inputs are sorted: the first is the earliest identify.
        let (seq, user, known) = input[0].0;
        let until = seq.ts.saturating_add(identity_ms);
        output.push(((user.clone(), *known, until), 1));
    });
    let known = events
        .clone()
        .flat_map(|e| e.user_id.clone().map(|u| (u, e)));
    let r = retention.clone();
    let anonymous = events.flat_map(|e| match (&e.user_id, &e.anonymous_id) {
        (None, Some(a)) => Some((a.clone(), e)),
        _ => None,
    });
    let anonymous = with_expiry(
        anonymous,
        clock,
        "AnonymousEventRetention",
        move |(_, e)| retention_end(&r, e),
    )
    .arrange_by_key_named("Anonymous events by anonymous id")
    .join_core(
        links.arrange_by_key_named("Identity links by anonymous id"),
        |_anon, e: &Event, (user, link_known, link_until): &(User, Time, Time)| {
            let mut e = e.clone();
            e.known = e.known.max(*link_known);
            e.link_until = *link_until;
            Some((user.clone(), e))
        },
    );
    known.concat(anonymous)
}

/// A change to a user's cart or wishlist, or an order that empties both of
/// its products.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ListOp {
    Add { product: Product, quantity: u64 },
    Remove { product: Product },
    Order { products: Vec<Product> },
}

/// One cart or wishlist operation.
pub type AtOp = (At, ListOp);

/// Applies operations, in `Seq` order, to a list: product -> quantity.
pub fn apply_ops<'a>(
    ops: impl Iterator<Item = &'a AtOp>,
) -> std::collections::BTreeMap<Product, u64> {
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
pub fn cart_ops<'s>(resolved: &Resolved<'s>) -> Coll<'s, (User, AtOp)> {
    resolved.derive("CartOps", |u, e| {
        let op = match &e.body {
            Body::CartAdd {
                product_id,
                quantity,
                ..
            } => ListOp::Add {
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
        Some((u, (At::of(&e), op)))
    })
}

/// What a product-keyed fact says about one user and product.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProductFact {
    CartAdd,
    CartRemove,
    WishlistAdd,
    WishlistRemove,
    /// An order containing the product (removes it from cart and wishlist).
    Ordered,
    Viewed,
}

/// Facts keyed by product: `(product, (user, at, fact))`.
pub type ByProduct = (Product, (User, At, ProductFact));

/// Cart and wishlist changes and orders, keyed by each product they touch.
pub fn lists_by_product<'s>(resolved: &Resolved<'s>) -> Coll<'s, ByProduct> {
    resolved.derive("ListsByProduct", |u, e| {
        let at = At::of(&e);
        let single = |p: &Str, f: ProductFact| vec![(p.clone(), (u.clone(), at.clone(), f))];
        match &e.body {
            Body::CartAdd { product_id, .. } => single(product_id, ProductFact::CartAdd),
            Body::CartRemove { product_id } => single(product_id, ProductFact::CartRemove),
            Body::WishlistAdd { product_id } => single(product_id, ProductFact::WishlistAdd),
            Body::WishlistRemove { product_id } => single(product_id, ProductFact::WishlistRemove),
            Body::OrderPlaced { .. } => order_products(&e)
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p, (u.clone(), at.clone(), ProductFact::Ordered)))
                .collect(),
            _ => Vec::new(),
        }
    })
}

/// `product_view`s keyed by product, each kept until `window_ms` after its `ts`.
pub fn views_by_product<'s>(
    resolved: &Resolved<'s>,
    window_ms: Time,
    name: &str,
) -> Coll<'s, ByProduct> {
    resolved.derive_until(
        name,
        |u, e| match &e.body {
            Body::ProductView { product_id, .. } => {
                Some((product_id.clone(), (u, At::of(&e), ProductFact::Viewed)))
            }
            _ => None,
        },
        move |(_p, (_u, at, _))| Some(at.ts().saturating_add(window_ms)),
    )
}

/// Whether `p` is in the cart (`cart = true`) or wishlist of a user at `t`,
/// from that user's facts about `p`, counting only those known at `t`.
pub fn listed_at<'a>(
    facts: impl Iterator<Item = (&'a At, &'a ProductFact)>,
    t: Time,
    cart: bool,
) -> bool {
    let mut latest: Option<(&At, bool)> = None;
    for (at, f) in facts {
        if !at.visible(t) {
            continue;
        }
        let member = match (f, cart) {
            (ProductFact::CartAdd, true) | (ProductFact::WishlistAdd, false) => true,
            (ProductFact::CartRemove, true)
            | (ProductFact::WishlistRemove, false)
            | (ProductFact::Ordered, _) => false,
            _ => continue,
        };
        if latest.is_none_or(|(l, _)| at.seq > l.seq) {
            latest = Some((at, member));
        }
    }
    latest.is_some_and(|(_, m)| m)
}

/// What an activity event means to the session-based kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActKind {
    View { product: Product },
    CategoryView { category: Str },
    Search { query: Str },
    CartAdd,
    Order,
    Other,
}

/// Activity per user (every tracking event but `identify`, `consent`, `forget`).
pub fn activity<'s>(resolved: &Resolved<'s>) -> Coll<'s, (User, (At, ActKind))> {
    resolved.derive("Activity", |u, e| {
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
            Body::Search { query, .. } => ActKind::Search {
                query: query.clone(),
            },
            Body::CartAdd { .. } => ActKind::CartAdd,
            Body::OrderPlaced { .. } => ActKind::Order,
            _ => ActKind::Other,
        };
        Some((u, (At::of(&e), kind)))
    })
}

/// What the gate needs to know about a user besides the candidates: opt-outs
/// and the language and timezone their events carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UserFact {
    Consent {
        channel: crate::model::Channel,
        granted: bool,
    },
    Forget,
    Context {
        language: Option<Str>,
        timezone: Option<Str>,
    },
    /// An activity event (kept only when a campaign filters on activity).
    Active,
    /// An `order_placed` (kept only when a campaign filters on orders).
    Ordered,
}

/// Consents, forgets and context per user; with `orders_ms` /
/// `activity_ms`, also each `order_placed` / activity event, kept that long
/// after its `ts` (for the campaign filters).
///
/// Consents and forgets are never forgotten; context facts are read for
/// their changes only ([`crate::operators::context_changes`] drops their
/// retractions), so neither waits for a retraction.
pub fn user_facts<'s>(
    resolved: &Resolved<'s>,
    orders_ms: Option<Time>,
    activity_ms: Option<Time>,
) -> Coll<'s, (User, (At, UserFact))> {
    let mut facts = base_user_facts(resolved.events.clone());
    if orders_ms.is_some() || activity_ms.is_some() {
        let marks = resolved.derive_until(
            "Filter facts",
            move |u, e| {
                let mut out = Vec::new();
                if orders_ms.is_some() && matches!(e.body, Body::OrderPlaced { .. }) {
                    out.push((u.clone(), (At::of(&e), UserFact::Ordered)));
                }
                if activity_ms.is_some() && e.body.is_activity() {
                    out.push((u, (At::of(&e), UserFact::Active)));
                }
                out
            },
            move |(_, (at, f))| {
                let keep = match f {
                    UserFact::Ordered => orders_ms,
                    _ => activity_ms,
                };
                Some(at.ts().saturating_add(keep.unwrap_or(0)))
            },
        );
        facts = facts.concat(marks);
    }
    facts
}

fn base_user_facts<'s>(resolved: Coll<'s, (User, Event)>) -> Coll<'s, (User, (At, UserFact))> {
    resolved.flat_map(|(u, e)| {
        let fact = match &e.body {
            Body::Consent { channel, granted } => UserFact::Consent {
                channel: *channel,
                granted: *granted,
            },
            Body::Forget => UserFact::Forget,
            _ if e.language.is_some() || e.timezone.is_some() => UserFact::Context {
                language: e.language.clone(),
                timezone: e.timezone.clone(),
            },
            _ => return None,
        };
        Some((u, (At::of(&e), fact)))
    })
}

/// Wishlist operations per user: `wishlist_add`, `wishlist_remove`, `order_placed`.
pub fn wishlist_ops<'s>(resolved: &Resolved<'s>) -> Coll<'s, (User, AtOp)> {
    resolved.derive("WishlistOps", |u, e| {
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
        Some((u, (At::of(&e), op)))
    })
}

/// What the order-based kinds read about a user's orders.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderFact {
    Placed {
        order_id: Str,
        items: Vec<crate::model::OrderItem>,
    },
    Delivered {
        order_id: Str,
    },
    Cancelled {
        order_id: Str,
        reason: Option<Str>,
    },
    Review {
        order_id: Str,
    },
}

impl OrderFact {
    /// The order the fact is about.
    pub fn order_id(&self) -> &str {
        match self {
            OrderFact::Placed { order_id, .. }
            | OrderFact::Delivered { order_id }
            | OrderFact::Cancelled { order_id, .. }
            | OrderFact::Review { order_id } => order_id,
        }
    }
}

/// Orders, deliveries, cancellations and reviews (with an `order_id`) per user.
pub fn order_facts<'s>(resolved: &Resolved<'s>) -> Coll<'s, (User, (At, OrderFact))> {
    resolved.derive("OrderFacts", |u, e| {
        let fact = match &e.body {
            Body::OrderPlaced {
                order_id, items, ..
            } => OrderFact::Placed {
                order_id: order_id.clone(),
                items: items.clone(),
            },
            Body::OrderDelivered { order_id } => OrderFact::Delivered {
                order_id: order_id.clone(),
            },
            Body::OrderCancelled { order_id, reason } => OrderFact::Cancelled {
                order_id: order_id.clone(),
                reason: reason.clone(),
            },
            Body::ReviewSubmitted {
                order_id: Some(order_id),
                ..
            } => OrderFact::Review {
                order_id: order_id.clone(),
            },
            _ => return None,
        };
        Some((u, (At::of(&e), fact)))
    })
}

/// One placed order as the catalog side counts it: units per product.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Basket {
    pub order_id: Str,
    /// The order's `ts`.
    pub ts: Time,
    /// When it became known.
    pub known: Time,
    /// Distinct products with their total units, sorted by product.
    pub lines: Vec<(Product, u64)>,
}

/// What the product side counts of orders: a placed order, or its erasure.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Counted {
    Placed(Basket),
    /// The user who placed it forgot: it stops counting at `at` (ms, the
    /// `forget`'s known time).
    Erased {
        basket: Basket,
        at: Time,
    },
}

/// Every placed order of a known user, as a basket, and its erasure when
/// the user forgets (triggers.md: `forget` erases every fact held about the
/// user at its known time; their orders stop counting in best sellers and
/// co-purchase counts). Orders known after the `forget` count as usual.
pub fn baskets<'s>(resolved: &Resolved<'s>) -> Coll<'s, Counted> {
    let placed = user_baskets(resolved);
    let forgets = resolved.events.clone().flat_map(|(u, e)| match e.body {
        Body::Forget => Some((u, e.known)),
        _ => None,
    });
    let erased = crate::operators::erase_on_forget(
        placed.clone(),
        forgets,
        "Orders erased by forget",
        |b: &Basket| b.known,
    )
    .map(|(basket, at)| Counted::Erased { basket, at });
    placed.map(|(_u, b)| Counted::Placed(b)).concat(erased)
}

fn user_baskets<'s>(resolved: &Resolved<'s>) -> Coll<'s, (User, Basket)> {
    resolved.derive("Baskets", |u, e| match &e.body {
        Body::OrderPlaced {
            order_id, items, ..
        } => {
            let mut lines: std::collections::BTreeMap<Product, u64> = Default::default();
            for i in items {
                *lines.entry(i.product_id.clone()).or_default() += i.quantity;
            }
            Some((
                u,
                Basket {
                    order_id: order_id.clone(),
                    ts: e.ts,
                    known: e.known,
                    lines: lines.into_iter().collect(),
                },
            ))
        }
        _ => None,
    })
}

/// Category views keyed by category: a `category_view`, or a
/// `product_view` carrying a `category_id`.
pub fn category_views<'s>(resolved: &Resolved<'s>) -> Coll<'s, (Str, (User, At))> {
    resolved.derive("CategoryViews", |u, e| {
        let c = match &e.body {
            Body::CategoryView { category_id } => category_id.clone(),
            Body::ProductView {
                category_id: Some(c),
                ..
            } => c.clone(),
            _ => return None,
        };
        Some((c, (u, At::of(&e))))
    })
}

/// A user's activity as reactivation reads it: the product, for views.
/// Read from [`activity`], so the two share its retention.
pub fn visits<'s>(
    activity: Coll<'s, (User, (At, ActKind))>,
) -> Coll<'s, (User, (At, Option<Product>))> {
    activity.map(|(u, (at, kind))| {
        let product = match kind {
            ActKind::View { product } => Some(product),
            _ => None,
        };
        (u, (at, product))
    })
}

/// What a timer evaluation decided at one candidate time.
pub enum Step<O> {
    /// Fire with this output.
    Fire(O),
    /// The conditions do not hold now; try the next time the state changes.
    Retry,
    /// The conditions can no longer hold: give up on this timer.
    Stop,
}

/// The bucket a timer kind's per-user reduce evaluates: that of the latest
/// arrival among the user's facts and due timers, and whether a fact became
/// known late in it (after its `ts`). Only firings in that bucket are
/// output: earlier ones were output when their bucket was evaluated, and the
/// emitter remembers them.
#[derive(Clone, Copy, Debug)]
pub struct Evaluated {
    pub recent: Time,
    pub late_now: bool,
}

impl Evaluated {
    /// From the `(ts, known)` of the user's facts and the due times of their timers.
    pub fn new(
        clock: crate::operators::Clock,
        known: &[(Time, Time)],
        due: impl Iterator<Item = Time>,
    ) -> Self {
        let horizon = known.iter().map(|k| k.1).chain(due).max().unwrap_or(0);
        let recent = clock.at(horizon);
        let late_now = known.iter().any(|&(ts, k)| k >= recent && k > ts);
        Evaluated { recent, late_now }
    }
}

/// The common loop of a timer kind's per-user reduce. `known` holds the
/// `(ts, known)` of the user's facts; `due` the timers, each with its due
/// time `T` (ms). For each timer that may fire in the evaluated bucket,
/// `eval(timer, τ)` is tried at `τ = T` and then at every later known time,
/// until it fires or stops; firings at `τ` in that bucket are pushed as
/// `(τ, output)`.
pub fn timer_firings<X, O>(
    ev: Evaluated,
    known: &[(Time, Time)],
    due: &[(Time, X)],
    mut eval: impl FnMut(&X, Time) -> Step<O>,
    out: &mut Vec<(Time, O)>,
) {
    for (end, x) in due {
        if *end < ev.recent && !ev.late_now {
            continue;
        }
        for tau in firing_times(*end, known.iter().map(|k| k.1)) {
            match eval(x, tau) {
                Step::Fire(o) => {
                    if tau >= ev.recent {
                        out.push((tau, o));
                    }
                    break;
                }
                Step::Retry => continue,
                Step::Stop => break,
            }
        }
    }
}

/// The times at which a timer due at `due` may fire: `due` itself and every
/// later known time among `facts` (the state changes only then), ascending.
pub fn firing_times(due: Time, known: impl Iterator<Item = Time>) -> Vec<Time> {
    let mut times: Vec<Time> = known.filter(|&k| k > due).collect();
    times.push(due);
    times.sort_unstable();
    times.dedup();
    times
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: Time, rank: u8, id: &str, known: Time) -> At {
        At {
            seq: Seq {
                ts,
                rank,
                event_id: id.into(),
            },
            known,
            until: Time::MAX,
        }
    }

    #[test]
    fn ops_apply_in_order_with_latest_quantity() {
        let ops = [
            (
                at(1, 1, "a", 1),
                ListOp::Add {
                    product: "p".into(),
                    quantity: 2,
                },
            ),
            (
                at(2, 1, "b", 2),
                ListOp::Add {
                    product: "q".into(),
                    quantity: 1,
                },
            ),
            (
                at(3, 1, "c", 3),
                ListOp::Add {
                    product: "p".into(),
                    quantity: 5,
                },
            ),
            (
                at(4, 6, "d", 4),
                ListOp::Order {
                    products: vec!["q".into()],
                },
            ),
        ];
        let cart = apply_ops(ops.iter());
        assert_eq!(
            cart.into_iter().collect::<Vec<_>>(),
            vec![(Product::from("p"), 5)]
        );
    }

    #[test]
    fn listed_at_counts_only_facts_known_then() {
        let add = at(10, 1, "a", 10);
        let late_remove = at(20, 4, "b", 50);
        let facts = [
            (&add, &ProductFact::CartAdd),
            (&late_remove, &ProductFact::CartRemove),
        ];
        assert!(!listed_at(facts.iter().copied(), 5, true));
        assert!(listed_at(facts.iter().copied(), 30, true));
        assert!(!listed_at(facts.iter().copied(), 50, true));
        assert!(!listed_at(facts.iter().copied(), 30, false));
    }

    #[test]
    fn firing_times_start_at_due_and_follow_later_knowledge() {
        assert_eq!(
            firing_times(10, [3, 10, 12, 12, 40].into_iter()),
            vec![10, 12, 40]
        );
    }

    #[test]
    fn trigger_ids_are_stable_hex() {
        let id = trigger_id("c", &["u", "1"]);
        assert_eq!(id.len(), 32);
        assert_eq!(id, trigger_id("c", &["u", "1"]));
        assert_ne!(id, trigger_id("c", &["u1", ""]));
    }
}
