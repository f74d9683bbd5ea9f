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
pub mod gate;
pub mod kinds;
pub mod model;
pub mod operators;
pub mod state;

use timely::dataflow::Stream;

use campaign::{Campaign, Kind, Retention};
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
    let tracking = records.clone().flat_map(|r| match r {
        Input::Tracking(e) => Some(e),
        _ => None,
    });
    let events = dedup_events(tracking.inner, retention.dedup_ms);
    let events = state::retain_events(events, clock, retention);
    let resolved = state::resolve_users(events);

    let product_msgs = records.flat_map(|r| match r {
        Input::Price(p) => Some(ProductMsg::Price(p)),
        Input::Stock(s) => Some(ProductMsg::Stock(s)),
        _ => None,
    });
    let cart_ms = retention.cart_ms;
    let prices = operators::with_expiry(
        product_msgs.clone().flat_map(|m| match m {
            ProductMsg::Price(p) => Some((p.product_id, (p.ts, p.price))),
            ProductMsg::Stock(_) => None,
        }),
        clock,
        "PriceHistory",
        move |(_p, (ts, _))| Some(ts.saturating_add(cart_ms)),
    );
    let changes = product_changes(product_msgs);

    let cart_ops = state::cart_ops(resolved.clone());
    let activity = state::activity(resolved.clone());
    let lists_by_product = state::lists_by_product(resolved.clone());

    let mut candidates = Vec::new();
    for c in campaigns {
        let name = c.name.as_str();
        let found = match &c.kind {
            Kind::AbandonedCart(p) => {
                kinds::abandoned_cart(name, p, clock, cart_ops.clone(), prices.clone())
            }
            Kind::AbandonedBrowse(p) => kinds::abandoned_browse(name, p, clock, activity.clone()),
            Kind::PriceDrop(p) => {
                let views = state::views_by_product(
                    resolved.clone(),
                    clock,
                    p.view_window_ms,
                    &format!("{name}: views in window"),
                );
                kinds::price_drop(
                    name,
                    p,
                    clock,
                    changes.clone(),
                    lists_by_product.clone(),
                    views,
                )
            }
            Kind::BackInStock(_) => {
                kinds::back_in_stock(name, clock, changes.clone(), lists_by_product.clone())
            }
        };
        candidates.push(found);
    }
    let candidates = differential_dataflow::collection::concatenate(resolved.scope(), candidates);
    let ready = gate::gate(
        candidates,
        operators::context_changes(state::user_facts(resolved)),
        clock,
    );
    fire_once(ready, retention.fired_ms)
}
