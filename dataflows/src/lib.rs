//! Tripwire's dataflow logic, free of any transport: Kafka, files and
//! runtimes live in the binary. Given a collection of decoded input records
//! at event time, [`build`] maintains each user's state with differential
//! dataflow and returns the trigger records, each emitted once its time is
//! complete.
//!
//! Layout, after differential-dataflow's own `algorithms/`:
//! * [`model`]: the typed records;
//! * [`state`]: the maintained collections (identities, carts, wishlists,
//!   activity, views, opt-outs, language and timezone);
//! * [`kinds`]: one function per trigger kind, collections in, candidates out;
//! * [`operators`]: timers, retention windows, de-duplication, the
//!   latest-value operator for prices and stock, and the once-per-id emitter.

pub mod campaign;
pub mod catalog;
pub mod gate;
pub mod kinds;
pub mod model;
pub mod operators;
mod remembered;
pub mod state;

use std::collections::HashMap;

use timely::dataflow::Stream;

use campaign::{Campaign, Kind, Retention};
use catalog::{ProductInput, Request, Windows};
use kinds::reactivation::Stages;
use kinds::session::{SessionCampaign, SessionRule};
use model::{Input, Time, Trigger};
use operators::{dedup_events, fire_once, product_changes, Clock, Coll, ProductMsg};

/// Builds the whole job on `records` (every input topic, each record at the
/// bucket of its time) for `campaigns`. Returns the trigger records, each
/// emitted once the frontier has passed the bucket of its firing time.
pub fn build<'s>(
    records: Coll<'s, Input>,
    campaigns: &[Campaign],
    retention: &Retention,
    clock: Clock,
) -> Stream<'s, Time, Vec<Trigger>> {
    let (tracking, product_side) = operators::split_input(records);
    // De-duplicated first (a repeated id is one event whatever its type),
    // then only the events some campaign reads go on.
    let reads = Reads::of(campaigns);
    let events = dedup_events(tracking.inner, retention.dedup_ms).filter(move |e| reads.wanted(e));
    let resolved = state::Resolved::new(events, clock, retention);

    let product_msgs = product_side.clone().flat_map(|r| match r {
        Input::Price(p) => Some(ProductMsg::Price(p)),
        Input::Stock(s) => Some(ProductMsg::Stock(s)),
        _ => None,
    });
    let cart_ms = retention.cart_ms;
    // A price is part of the state for `cart_ms` after its `ts` (decided to
    // the ms where it is read). The record stays `identity_ms` longer: a
    // cart that becomes known late (a later `identify`) is evaluated at a
    // later τ, for its `T`, at most `identity_ms` after `T`.
    let price_kept_ms = cart_ms.saturating_add(retention.identity_ms);
    let prices = operators::with_expiry(
        product_msgs.clone().flat_map(|m| match m {
            ProductMsg::Price(p) => Some((p.product_id, (p.ts, p.price))),
            ProductMsg::Stock(_) => None,
        }),
        clock,
        "PriceHistory",
        move |(_p, (ts, _))| Some(ts.saturating_add(price_kept_ms)),
    );
    let changes = product_changes(product_msgs);

    // Derived collections are built once, and only when a campaign reads
    // them (each holds its records' retractions).
    let mut cart_ops = None;
    let mut activity = None;
    let mut lists_by_product = None;
    let mut order_facts = None;
    let scope = resolved.events.scope();

    // Kinds that need the product side, and kinds that share one operator.
    let mut firings = Vec::new();
    let mut requests: Vec<Coll<'s, Request>> = Vec::new();
    let mut sessions: Vec<SessionCampaign> = Vec::new();
    let mut stages = Stages::default();
    let mut windows = Windows::default();
    let mut new_products = None;
    for c in campaigns {
        let name = c.name.as_str();
        match &c.kind {
            Kind::AbandonedCart(p) => firings.push(kinds::abandoned_cart(
                name,
                p,
                clock,
                shared(&mut cart_ops, || state::cart_ops(&resolved)),
                prices.clone(),
                cart_ms,
            )),
            Kind::AbandonedBrowse(p) => sessions.push(SessionCampaign {
                name: c.name.clone(),
                delay_ms: p.delay_ms,
                session_gap_ms: p.session_gap_ms,
                rule: SessionRule::Browse {
                    max_items: p.max_items,
                },
            }),
            Kind::AbandonedSearch(p) => sessions.push(SessionCampaign {
                name: c.name.clone(),
                delay_ms: p.delay_ms,
                session_gap_ms: p.session_gap_ms,
                rule: SessionRule::Search,
            }),
            Kind::AbandonedCategory(p) => {
                windows.sales_ms.push(p.sales_window_ms);
                sessions.push(SessionCampaign {
                    name: c.name.clone(),
                    delay_ms: p.delay_ms,
                    session_gap_ms: p.session_gap_ms,
                    rule: SessionRule::Category {
                        top_n: p.top_n,
                        sales_window_ms: p.sales_window_ms,
                    },
                })
            }
            Kind::PriceDrop(p) => {
                // Views are kept only for a campaign that reads them.
                let views = p.audiences.contains(&campaign::Audience::Viewed).then(|| {
                    state::views_by_product(
                        &resolved,
                        p.view_window_ms,
                        &format!("{name}: views in window"),
                    )
                });
                firings.push(kinds::price_drop(
                    name,
                    p,
                    changes.clone(),
                    shared(&mut lists_by_product, || state::lists_by_product(&resolved)),
                    views,
                ))
            }
            Kind::BackInStock(_) => firings.push(kinds::back_in_stock(
                name,
                changes.clone(),
                shared(&mut lists_by_product, || state::lists_by_product(&resolved)),
            )),
            Kind::WishlistReminder(p) => requests.push(kinds::wishlist_reminder(
                name,
                p,
                clock,
                state::wishlist_ops(&resolved),
            )),
            Kind::Complementary(p) => {
                windows.pairs_ms.push(p.window_ms);
                requests.push(kinds::complementary(
                    name,
                    p,
                    clock,
                    shared(&mut order_facts, || state::order_facts(&resolved)),
                ))
            }
            Kind::ReviewRequest(p) => requests.push(kinds::review_request(
                name,
                p,
                clock,
                shared(&mut order_facts, || state::order_facts(&resolved)),
            )),
            Kind::CancelledAlternative(p) => requests.push(kinds::cancelled_alternative(
                name,
                p,
                shared(&mut order_facts, || state::order_facts(&resolved)),
            )),
            Kind::NewInCategory(p) => {
                let listed = shared(&mut new_products, || {
                    catalog::new_products(product_side.clone().flat_map(|r| match r {
                        Input::Catalog(c) => Some(c),
                        _ => None,
                    }))
                });
                requests.push(kinds::new_in_category(
                    name,
                    p,
                    clock,
                    listed,
                    state::category_views(&resolved),
                ))
            }
            Kind::Reactivation(p) => stages.add(name, &p.after_ms),
        }
    }
    if !sessions.is_empty() {
        let activity = shared(&mut activity, || state::activity(&resolved));
        requests.push(kinds::session_kinds(sessions, clock, activity));
    }
    if !stages.stages.is_empty() {
        requests.push(kinds::reactivation(
            stages,
            clock,
            retention.activity_ms,
            state::visits(shared(&mut activity, || state::activity(&resolved))),
        ));
    }
    for f in firings {
        requests.push(f.map(|(u, (tau, c))| (u, (tau, c, catalog::Lookup::Enrich))));
    }

    // The product side: catalog, prices, stock and, when a window needs
    // them, orders.
    let mut product_facts = product_side.flat_map(|r| match r {
        Input::Price(p) => Some(ProductInput::Price(p)),
        Input::Stock(s) => Some(ProductInput::Stock(s)),
        Input::Catalog(c) => Some(ProductInput::Catalog(c)),
        Input::Tracking(_) => None,
    });
    if !(windows.sales_ms.is_empty() && windows.pairs_ms.is_empty()) {
        product_facts = product_facts.concat(state::baskets(&resolved).map(|c| match c {
            state::Counted::Placed(b) => ProductInput::Order(b),
            state::Counted::Erased { basket, at } => ProductInput::Erase { basket, at },
        }));
    }
    let requests = differential_dataflow::collection::concatenate(scope, requests);
    let candidates = catalog::resolve(product_facts, requests, windows);

    // Filters, with new_in_category's own "no order in the window".
    let mut filters = HashMap::new();
    let mut meta = HashMap::new();
    for c in campaigns {
        let mut f = c.filters.clone();
        if let Kind::NewInCategory(p) = &c.kind {
            f.no_order_within_ms = Some(f.no_order_within_ms.unwrap_or(0).max(p.window_ms));
        }
        filters.insert(c.name.clone(), f);
        meta.insert(c.name.clone(), c.meta.clone());
    }
    let orders_ms = filters.values().filter_map(|f| f.no_order_within_ms).max();
    let activity_ms = filters.values().filter_map(|f| f.active_within_ms).max();
    let ready = gate::gate(
        candidates,
        operators::context_changes(state::user_facts(&resolved, orders_ms, activity_ms)),
        filters,
    );
    fire_once(ready, retention.fired_ms, meta)
}

/// Which tracking events the configured campaigns read: every other event
/// is dropped right after de-duplication, so that it is neither moved nor
/// held by operators that would ignore it.
#[derive(Clone, Copy, Debug, Default)]
struct Reads {
    /// Every activity event (session kinds, reactivation, activity filter).
    activity: bool,
    /// `cart_add`, `cart_remove`.
    cart: bool,
    /// `wishlist_add`, `wishlist_remove`.
    wishlist: bool,
    /// `order_placed`.
    orders: bool,
    /// `order_delivered`, `order_cancelled`, `review_submitted`.
    order_life: bool,
    /// `product_view`.
    views: bool,
    /// `category_view`.
    category_views: bool,
}

impl Reads {
    fn of(campaigns: &[Campaign]) -> Self {
        let mut r = Reads::default();
        for c in campaigns {
            match &c.kind {
                Kind::AbandonedCart(_) => {
                    r.cart = true;
                    r.orders = true;
                }
                Kind::AbandonedBrowse(_)
                | Kind::AbandonedSearch(_)
                | Kind::AbandonedCategory(_)
                | Kind::Reactivation(_) => r.activity = true,
                Kind::PriceDrop(p) => {
                    // Each audience reads only its own list (an order
                    // leaves both).
                    r.cart |= p.audiences.contains(&campaign::Audience::Cart);
                    r.wishlist |= p.audiences.contains(&campaign::Audience::Wishlist);
                    r.orders = true;
                    r.views |= p.audiences.contains(&campaign::Audience::Viewed);
                }
                Kind::BackInStock(_) => {
                    r.cart = true;
                    r.wishlist = true;
                    r.orders = true;
                }
                Kind::WishlistReminder(_) => {
                    r.wishlist = true;
                    r.orders = true;
                }
                Kind::Complementary(_) | Kind::ReviewRequest(_) | Kind::CancelledAlternative(_) => {
                    r.orders = true;
                    r.order_life = true;
                }
                Kind::NewInCategory(_) => {
                    r.views = true;
                    r.category_views = true;
                    r.orders = true;
                }
            }
            r.activity |= c.filters.needs_activity();
            r.orders |= c.filters.no_order_within_ms.is_some();
        }
        r
    }

    /// Whether a campaign reads `e`. Identities, consents, forgets and
    /// events carrying a language or timezone are always read (by identity
    /// stitching and the gate).
    fn wanted(&self, e: &model::Event) -> bool {
        use model::Body;
        if e.language.is_some() || e.timezone.is_some() {
            return true;
        }
        match &e.body {
            Body::Identify { .. } | Body::Consent { .. } | Body::Forget => true,
            _ if self.activity => true,
            Body::CartAdd { .. } | Body::CartRemove { .. } => self.cart,
            Body::WishlistAdd { .. } | Body::WishlistRemove { .. } => self.wishlist,
            Body::OrderPlaced { .. } => self.orders,
            Body::OrderDelivered { .. }
            | Body::OrderCancelled { .. }
            | Body::ReviewSubmitted { .. } => self.order_life,
            Body::ProductView { .. } => self.views,
            Body::CategoryView { .. } => self.category_views,
            Body::Search { .. } | Body::AppOpen | Body::Other { .. } => false,
        }
    }
}

/// The collection in `slot`, built by `make` on first use: derived
/// collections are built once, and only when a campaign reads them.
fn shared<D: Clone>(slot: &mut Option<D>, make: impl FnOnce() -> D) -> D {
    slot.get_or_insert_with(make).clone()
}
