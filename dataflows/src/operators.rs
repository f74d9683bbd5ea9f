//! Small timely operators the trigger functions are built from.
//!
//! * [`hold_future`]: keeps updates whose time lies beyond the input frontier
//!   out of downstream batchers until the frontier reaches them (the 7x
//!   performance trap of `dataflow-notes.md`; Materialize's
//!   `TemporalBucketing`).
//! * [`shift_to`] and [`with_expiry`]: express timers and retention windows
//!   in the data, as insertions at due times and retractions at expiry.
//! * [`dedup_events`]: applies a repeated `event_id` once.
//! * [`product_changes`]: the latest price and stock of each product,
//!   applied in event-time order, with the value each message replaced.
//! * [`fire_once`]: turns a collection of trigger candidates into trigger
//!   records, once per `trigger_id`, at the time each first appears.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::model::{Event, Input, Money, PriceMsg, StockMsg, Str, Time, Trigger};
use crate::remembered::Remembered;

/// A collection at bucketed event time with integer multiplicities.
pub type Coll<'s, D> = VecCollection<'s, Time, D, isize>;

/// Maps event time (ms) to timely time: the start of its bucket.
///
/// Timely time is coarse (`bucket_ms`, e.g. one second) so that each round
/// of the dataflow carries many events; every condition is still evaluated
/// to the millisecond from the times carried in the data. Results do not
/// depend on the bucket width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub bucket_ms: Time,
}

impl Clock {
    /// A clock with buckets of `bucket_ms` (at least 1).
    pub fn new(bucket_ms: Time) -> Self {
        Clock {
            bucket_ms: bucket_ms.max(1),
        }
    }
    /// The bucket that holds `ms`.
    pub fn at(&self, ms: Time) -> Time {
        ms - ms % self.bucket_ms
    }
    /// The first bucket entirely after `ms`.
    pub fn after(&self, ms: Time) -> Time {
        self.at(ms).saturating_add(self.bucket_ms)
    }
}

/// The least time of a frontier, `None` when the frontier is empty (input closed).
pub(crate) fn frontier_time(
    frontier: &timely::progress::frontier::MutableAntichain<Time>,
) -> Option<Time> {
    frontier.frontier().iter().next().copied()
}

/// The least time of two input frontiers (`None`: both closed).
pub(crate) fn frontier_of_two(
    f1: &timely::progress::frontier::MutableAntichain<Time>,
    f2: &timely::progress::frontier::MutableAntichain<Time>,
) -> Option<Time> {
    match (frontier_time(f1), frontier_time(f2)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The least of some pending maps' first keys.
pub(crate) fn least_pending<const N: usize>(firsts: [Option<&Time>; N]) -> Option<Time> {
    firsts.into_iter().flatten().min().copied()
}

/// The least pending time of either map that is complete: below both input
/// frontiers (`f1`, `f2`; an empty frontier is closed).
pub(crate) fn next_complete_of<A, B>(
    a: &BTreeMap<Time, A>,
    b: &BTreeMap<Time, B>,
    f1: &timely::progress::frontier::MutableAntichain<Time>,
    f2: &timely::progress::frontier::MutableAntichain<Time>,
) -> Option<Time> {
    let f = frontier_of_two(f1, f2);
    let least = least_pending([a.keys().next(), b.keys().next()])?;
    f.is_none_or(|f| least < f).then_some(least)
}

/// Keeps `held` at or below `t`, deriving a capability from `cap` if needed:
/// operators hold one capability, at their least pending time.
pub(crate) fn hold(
    held: &mut Option<Capability<Time>>,
    cap: &timely::dataflow::operators::InputCapability<Time>,
    t: Time,
) {
    if held.as_ref().is_none_or(|h| *h.time() > t) {
        *held = Some(cap.delayed(&t, 0));
    }
}

/// Moves `held` up to the least pending time, or drops it when nothing is pending.
pub(crate) fn release<V>(held: &mut Option<Capability<Time>>, pending: &BTreeMap<Time, V>) {
    release_to(held, pending.keys().next().copied())
}

/// Moves `held` up to `least`, or drops it for `None`.
pub(crate) fn release_to(held: &mut Option<Capability<Time>>, least: Option<Time>) {
    match least {
        Some(t) => {
            if let Some(h) = held.as_mut() {
                h.downgrade(&t)
            }
        }
        None => *held = None,
    }
}

/// Data held back until its time is complete, with one capability at the
/// least pending time: the shape every stateful operator here shares.
pub(crate) struct Pending<D> {
    by_time: BTreeMap<Time, Vec<D>>,
    held: Option<Capability<Time>>,
}

impl<D> Pending<D> {
    pub(crate) fn new() -> Self {
        Pending {
            by_time: BTreeMap::new(),
            held: None,
        }
    }

    /// Holds `d` at `t` (at least the message's time).
    pub(crate) fn push(
        &mut self,
        cap: &timely::dataflow::operators::InputCapability<Time>,
        t: Time,
        d: D,
    ) {
        push_tight(self.by_time.entry(t).or_default(), d);
        hold(&mut self.held, cap, t);
    }

    /// The least pending time that is complete (below `frontier`), with its
    /// data and a capability for it.
    pub(crate) fn next_complete(
        &mut self,
        frontier: Option<Time>,
    ) -> Option<(Capability<Time>, Time, Vec<D>)> {
        let entry = self.by_time.first_entry()?;
        let t = *entry.key();
        if frontier.is_some_and(|f| t >= f) {
            return None;
        }
        let batch = entry.remove();
        let cap = self
            .held
            .as_ref()
            .expect("a held capability covers pending data")
            .delayed(&t);
        Some((cap, t, batch))
    }

    /// Moves the held capability up to the least pending time, or drops it.
    pub(crate) fn release(&mut self) {
        release(&mut self.held, &self.by_time);
    }
}

/// The key `fire_once` remembers a trigger id by: the 128 bits its hex
/// spells ([`crate::state::trigger_id`]), or, for any other text, a hash of it.
fn trigger_key(id: &str) -> u128 {
    if id.len() == 32 {
        if let Ok(k) = u128::from_str_radix(id, 16) {
            return k;
        }
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(id.as_bytes());
    u128::from_be_bytes(h[..16].try_into().expect("16 bytes")) ^ 1
}

/// Pushes `x` onto `v`, growing a short vector by exactly one: most of the
/// per-time and per-key lists of the operators here hold one or two
/// entries (a sparse recording has about one event per time), and the
/// standard growth would reserve four.
pub(crate) fn push_tight<T>(v: &mut Vec<T>, x: T) {
    if v.len() == v.capacity() && v.len() < 8 {
        v.reserve_exact(1);
    }
    v.push(x);
}

/// Holds updates whose time is beyond the input frontier, releasing each
/// group once the frontier reaches its time. Output equals input.
pub fn hold_future<'s, D, R>(
    coll: VecCollection<'s, Time, D, R>,
    name: &str,
) -> VecCollection<'s, Time, D, R>
where
    D: Data,
    R: Semigroup + Clone + 'static,
{
    coll.inner
        .unary_frontier(Pipeline, name, |_cap, _info| {
            let mut pending: BTreeMap<Time, Vec<(D, Time, R)>> = BTreeMap::new();
            let mut held: Option<Capability<Time>> = None;
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&least) = cap.least() else { return };
                    let mut min_new = Time::MAX;
                    for (d, t, r) in data.drain(..) {
                        let t = t.max(least);
                        min_new = min_new.min(t);
                        push_tight(pending.entry(t).or_default(), (d, t, r));
                    }
                    if min_new != Time::MAX && held.as_ref().is_none_or(|h| *h.time() > min_new) {
                        held = Some(cap.delayed(&min_new, 0));
                    }
                });
                let f = frontier_time(frontier);
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if f.is_some_and(|f| t > f) {
                        break;
                    }
                    let batch = entry.remove();
                    let cap = held
                        .as_ref()
                        .expect("a held capability covers pending data")
                        .delayed(&t);
                    output.session(&cap).give_iterator(batch.into_iter());
                }
                release(&mut held, &pending);
            }
        })
        .as_collection()
}

/// Moves each update of `coll` to the later of its time and the bucket of
/// `due(data)` (ms): a timer "due at T" is the fact inserted at `T`.
pub fn shift_to<'s, D, F>(coll: Coll<'s, D>, clock: Clock, name: &str, due: F) -> Coll<'s, D>
where
    D: Data,
    F: Fn(&D) -> Time + 'static,
{
    let shifted = coll
        .inner
        .map(move |(d, t, r)| {
            let at = t.max(clock.at(due(&d)));
            (d, at, r)
        })
        .as_collection();
    hold_future(shifted, name)
}

/// Keeps each record until the bucket after `expiry(data)` (ms; never for
/// `None`) and retracts it there: how a windowed collection forgets, so
/// that arrangements compact instead of growing forever. Applied to every
/// update (Materialize's temporal filter), so it composes with upstream
/// retractions.
pub fn with_expiry<'s, D, F>(coll: Coll<'s, D>, clock: Clock, name: &str, expiry: F) -> Coll<'s, D>
where
    D: Data,
    F: Fn(&D) -> Option<Time> + 'static,
{
    flat_map_expiring(coll, clock, name, move |d| {
        let end = expiry(&d);
        std::iter::once((d, end))
    })
}

/// [`with_expiry`] for records derived by `f`: each `(record, end)` it
/// returns is kept until the bucket after `end` (ms; never for `None`), so
/// the expiry may depend on the input the record was derived from.
pub fn flat_map_expiring<'s, S, D, I, F>(
    coll: Coll<'s, S>,
    clock: Clock,
    name: &str,
    f: F,
) -> Coll<'s, D>
where
    S: Data,
    D: Data,
    I: IntoIterator<Item = (D, Option<Time>)>,
    F: Fn(S) -> I + 'static,
{
    let expiring = coll
        .inner
        .flat_map(move |(s, t, r)| {
            let mut out = Vec::new();
            for (d, end) in f(s) {
                if let Some(e) = end {
                    out.push((d.clone(), t.max(clock.after(e)), -r));
                }
                out.push((d, t, r));
            }
            out
        })
        .as_collection();
    hold_future(expiring, name)
}

/// Splits the input records once, moving each: the tracking events, and
/// the product side (prices, stock, catalog). Neither side copies the
/// other's records (a collection read by several operators is copied for
/// each, and tracking events are most of the input).
pub fn split_input<'s>(records: Coll<'s, Input>) -> (Coll<'s, Event>, Coll<'s, Input>) {
    use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
    use timely::progress::operate::FrontierInterest;
    let mut builder = OperatorBuilder::new("SplitInput".to_owned(), records.inner.scope());
    let mut input = builder.new_input(records.inner, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Never);
    let (mut events_out, events) = builder.new_output::<Vec<(Event, Time, isize)>>();
    let (mut products_out, products) = builder.new_output::<Vec<(Input, Time, isize)>>();
    builder.build(move |_caps| {
        let (mut tracking, mut product) = (Vec::new(), Vec::new());
        move |_frontiers| {
            let mut events_out = events_out.activate();
            let mut products_out = products_out.activate();
            input.for_each(|cap, data| {
                for (r, t, d) in data.drain(..) {
                    match r {
                        Input::Tracking(e) => tracking.push((e, t, d)),
                        other => product.push((other, t, d)),
                    }
                }
                events_out.give(&cap, &mut tracking);
                products_out.give(&cap, &mut product);
                tracking.clear();
                product.clear();
            });
        }
    });
    (events.as_collection(), products.as_collection())
}

/// Applies each `event_id` once: of several events with one id, the one at
/// the least time (then the least event) is kept. Ids are remembered for
/// `window_ms` after their event's `ts`.
pub fn dedup_events<'s>(
    events: Stream<'s, Time, Vec<(Event, Time, isize)>>,
    window_ms: Time,
) -> Coll<'s, Event> {
    events
        .unary_frontier(
            Exchange::new(|u: &(Event, Time, isize)| u.0.event_id.hashed()),
            "DedupEventId",
            move |_cap, _info| {
                // Events waiting for their time to complete, each round
                // already de-duplicated as it arrives: an event is moved
                // once, into its round, and the round leaves as it is.
                let mut rounds: BTreeMap<Time, Round> = BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                // Ids as 128 bits of two independently seeded hashes: one
                // small entry per id (the time it is kept until), no copy
                // of its text. Each waiting round knows where its events'
                // ids are, to find the event kept for an id while it waits.
                let mut seen = Remembered::new();
                let seeds = (
                    foldhash::quality::RandomState::default(),
                    foldhash::quality::RandomState::default(),
                );
                let key = move |id: &str| {
                    use std::hash::BuildHasher;
                    ((seeds.0.hash_one(id) as u128) << 64) | seeds.1.hash_one(id) as u128
                };
                // Of two events with one id in one round, the one applied:
                // the least in `Event`'s order (by time first).
                let before = |a: &Event, b: &Event| {
                    (a.ts, a.known)
                        .cmp(&(b.ts, b.known))
                        .then_with(|| a.cmp(b))
                        .is_lt()
                };
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (e, t, r) in data.drain(..) {
                            if r <= 0 {
                                continue;
                            }
                            let t = t.max(least);
                            hold(&mut held, &cap, t);
                            let id = key(&e.event_id);
                            let until = e.ts.saturating_add(window_ms).max(t);
                            if !seen.remember(id, until) {
                                rounds.entry(t).or_insert_with(Round::new).push(id, e, t);
                                continue;
                            }
                            // A repeat: the kept event was applied in an
                            // earlier round (then this one is dropped), or
                            // waits in a round at or after this one.
                            let Some((kept_t, slot)) = rounds
                                .range_mut(t..)
                                .find_map(|(&rt, round)| round.find(id, &key).map(|s| (rt, s)))
                            else {
                                continue;
                            };
                            if kept_t == t {
                                let k = &mut rounds.get_mut(&t).expect("waiting").updates
                                    [slot as usize]
                                    .0;
                                if before(&e, k) {
                                    seen.set_until(id, until);
                                    *k = e;
                                }
                            } else {
                                seen.set_until(id, until);
                                let later = rounds.get_mut(&kept_t).expect("a waiting round");
                                later.updates[slot as usize].2 = 0;
                                later.forget(id);
                                later.replaced += 1;
                                rounds.entry(t).or_insert_with(Round::new).push(id, e, t);
                            }
                        }
                    });
                    let f = frontier_time(frontier);
                    while let Some(entry) = rounds.first_entry() {
                        if f.is_some_and(|f| *entry.key() >= f) {
                            break;
                        }
                        let (t, mut round) = entry.remove_entry();
                        if round.replaced > 0 {
                            round.updates.retain(|u| u.2 != 0);
                        }
                        let cap = held.as_ref().expect("a held capability").delayed(&t);
                        output.session(&cap).give_container(&mut round.updates);
                    }
                    release(&mut held, &rounds);
                    seen.forget_before(f);
                }
            },
        )
        .as_collection()
}

/// One round of [`dedup_events`]: its events, with multiplicity 0 for those
/// an earlier repeat replaced, and, once a repeat has looked for an id in
/// it, the place of each id's event (built then, so that input without
/// repeats never pays for it).
struct Round {
    updates: Vec<(Event, Time, isize)>,
    slots: Option<HashMap<u128, u32, IdHash>>,
    replaced: usize,
}

impl Round {
    fn new() -> Self {
        Round {
            updates: Vec::new(),
            slots: None,
            replaced: 0,
        }
    }

    fn push(&mut self, id: u128, e: Event, t: Time) {
        if let Some(slots) = &mut self.slots {
            slots.insert(id, self.updates.len() as u32);
        }
        self.updates.push((e, t, 1));
    }

    /// The place of the event kept for `id` in this round, if any; `key`
    /// gives an event's id.
    fn find(&mut self, id: u128, key: impl Fn(&str) -> u128) -> Option<u32> {
        let updates = &self.updates;
        let slots = self.slots.get_or_insert_with(|| {
            let mut slots = HashMap::with_capacity_and_hasher(updates.len(), IdHash::default());
            for (i, (e, _, r)) in updates.iter().enumerate() {
                if *r != 0 {
                    slots.insert(key(&e.event_id), i as u32);
                }
            }
            slots
        });
        slots.get(&id).copied()
    }

    fn forget(&mut self, id: u128) {
        if let Some(slots) = &mut self.slots {
            slots.remove(&id);
        }
    }
}

/// Hashes a 128-bit id (itself a hash) by taking its low 64 bits.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// A change of a product's price or stock, with the value it replaced.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ProductChange {
    /// A `prices` message: `old` is `None` for the first price of a product.
    Price {
        ts: Time,
        old: Option<Money>,
        new: Money,
    },
    /// A `stock` message: `old` is `None` for the first stock of a product;
    /// `price` is the product's price at that time, when known.
    Stock {
        ts: Time,
        old: Option<u64>,
        new: u64,
        price: Option<Money>,
    },
}

/// Price or stock message, in one stream keyed by product.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ProductMsg {
    Price(PriceMsg),
    Stock(StockMsg),
}

impl ProductMsg {
    fn product_id(&self) -> &str {
        match self {
            ProductMsg::Price(p) => &p.product_id,
            ProductMsg::Stock(s) => &s.product_id,
        }
    }
    fn ts(&self) -> Time {
        match self {
            ProductMsg::Price(p) => p.ts,
            ProductMsg::Stock(s) => s.ts,
        }
    }
}

/// The latest price and stock of every product, applied in event-time
/// order. Returns the changes as insertions `(product, change)` at their
/// time (a stream of happenings, never retracted): the event-caused kinds
/// evaluate each once, on the facts known at its `ts`. A message older than
/// the product's latest one (late, live only) updates nothing.
pub fn product_changes<'s>(msgs: Coll<'s, ProductMsg>) -> Coll<'s, (Str, ProductChange)> {
    msgs.inner
        .unary_frontier(
            Exchange::new(|u: &(ProductMsg, Time, isize)| u.0.product_id().hashed()),
            "ProductLatest",
            |_cap, _info| {
                let mut pending = Pending::new();
                // product -> (ts of latest price, price), (ts of latest stock, quantity)
                let mut prices: HashMap<Str, (Time, Money)> = HashMap::new();
                let mut stock: HashMap<Str, (Time, u64)> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (m, t, r) in data.drain(..) {
                            if r > 0 {
                                pending.push(&cap, t.max(least), m);
                            }
                        }
                    });
                    let f = frontier_time(frontier);
                    while let Some((cap, t, mut batch)) = pending.next_complete(f) {
                        // Prices before stock at one time, so that a restock sees the
                        // price set at the same moment; then by product and value.
                        batch.sort_by(|a: &ProductMsg, b| (a.ts(), a).cmp(&(b.ts(), b)));
                        let mut session = output.session(&cap);
                        for m in batch {
                            let (product, change) = match m {
                                ProductMsg::Price(p) => {
                                    let old = prices.get(&p.product_id).copied();
                                    if old.is_some_and(|(ots, _)| ots > p.ts) {
                                        continue;
                                    }
                                    prices.insert(p.product_id.clone(), (p.ts, p.price));
                                    let change = ProductChange::Price {
                                        ts: p.ts,
                                        old: old.map(|o| o.1),
                                        new: p.price,
                                    };
                                    (p.product_id, change)
                                }
                                ProductMsg::Stock(s) => {
                                    let old = stock.get(&s.product_id).copied();
                                    if old.is_some_and(|(ots, _)| ots > s.ts) {
                                        continue;
                                    }
                                    stock.insert(s.product_id.clone(), (s.ts, s.quantity));
                                    let change = ProductChange::Stock {
                                        ts: s.ts,
                                        old: old.map(|o| o.1),
                                        new: s.quantity,
                                        price: prices.get(&s.product_id).map(|p| p.1),
                                    };
                                    (s.product_id, change)
                                }
                            };
                            session.give(((product, change), t, 1isize));
                        }
                    }
                    pending.release();
                }
            },
        )
        .as_collection()
}

/// What a trigger function produces: everything of a trigger record except
/// its time and the user's language and timezone, which are attached at
/// emission.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Candidate {
    pub trigger_id: Str,
    pub campaign: Str,
    pub kind: Str,
    pub items: Vec<crate::model::Item>,
    pub query: Option<Str>,
    pub category_id: Option<Str>,
    pub order_id: Option<Str>,
    pub audience: Option<Str>,
    pub reminder: Option<bool>,
}

impl Candidate {
    /// A candidate of `campaign`'s `kind` whose id hashes the campaign and
    /// `id_parts`; the kind-specific fields start empty.
    pub fn new(
        campaign: &str,
        kind: &str,
        id_parts: &[&str],
        items: Vec<crate::model::Item>,
    ) -> Self {
        Candidate {
            trigger_id: crate::state::trigger_id(campaign, id_parts).into(),
            campaign: campaign.into(),
            kind: kind.into(),
            items,
            query: None,
            category_id: None,
            order_id: None,
            audience: None,
            reminder: None,
        }
    }
}

/// A candidate that fires at `τ` (ms, the first element), with the user's
/// language and timezone at `τ`, ready to leave the job.
pub type Ready = (Str, (Time, Candidate, Option<Str>, Option<Str>));

/// Emits a trigger record the first time each `trigger_id` appears in
/// `ready`, with `ts = τ`, once the frontier has passed its bucket.
/// Candidates whose `τ` lies before the bucket they arrive in are dropped. Ids are
/// remembered for `remember_ms` after firing, which bounds memory.
/// Each record carries its campaign's pass-through metadata from `meta`.
pub fn fire_once<'s>(
    ready: Coll<'s, Ready>,
    remember_ms: Time,
    meta: HashMap<String, crate::campaign::Meta>,
) -> Stream<'s, Time, Vec<Trigger>> {
    ready.inner.unary_frontier(
        // By user: every kind's id names its user (triggers.md), so all
        // repeats of an id meet on one worker, the worker the gate already
        // put them on.
        Exchange::new(|u: &(Ready, Time, isize)| (u.0).0.hashed()),
        "FireOnce",
        move |_cap, _info| {
            let mut pending = Pending::new();
            let mut fired: Remembered = Remembered::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&least) = cap.least() else { return };
                    for (d, t, r) in data.drain(..) {
                        let t = t.max(least);
                        pending.push(&cap, t, (d, t, r));
                    }
                });
                let f = frontier_time(frontier);
                while let Some((cap, t, mut batch)) = pending.next_complete(f) {
                    consolidate_updates(&mut batch);
                    let mut session = output.session(&cap);
                    for ((user, (tau, cand, language, timezone)), _t, r) in batch {
                        // A firing's τ is never before the bucket it is found in
                        // (late facts are applied at the frontier): an older one
                        // is a re-evaluation after state left a retention
                        // window, never a new firing.
                        if r <= 0 || tau < t {
                            continue;
                        }
                        let until = t.max(tau).saturating_add(remember_ms);
                        if fired.remember(trigger_key(&cand.trigger_id), until) {
                            continue;
                        }
                        let m = meta.get(cand.campaign.as_str());
                        session.give(Trigger {
                            priority: m.and_then(|m| m.priority),
                            channels: m.and_then(|m| m.channels.clone()),
                            template: m.and_then(|m| m.template.clone()),
                            trigger_id: cand.trigger_id,
                            campaign: cand.campaign,
                            kind: cand.kind,
                            user_id: user,
                            ts: tau,
                            items: cand.items,
                            query: cand.query,
                            category_id: cand.category_id,
                            order_id: cand.order_id,
                            language,
                            timezone,
                            audience: cand.audience,
                            reminder: cand.reminder,
                        });
                    }
                }
                pending.release();
                fired.forget_before(f);
            }
        },
    )
}

/// Passes a user's facts through, except `Context` facts that repeat the
/// language and timezone of the previous one of that user: the gate then
/// holds changes, not every event. Facts are taken in time order, then
/// application order. The changes that pass are kept for good (their
/// retractions at the end of the events' retention are dropped): a user's
/// latest known language does not expire with their activity, and one
/// fact per change per user is small.
pub fn context_changes<'s>(
    facts: Coll<'s, (Str, (crate::state::At, crate::state::UserFact))>,
) -> Coll<'s, (Str, (crate::state::At, crate::state::UserFact))> {
    use crate::state::{At, UserFact};
    type Fact = (Str, (At, UserFact));
    facts
        .inner
        .unary_frontier(
            Exchange::new(|u: &(Fact, Time, isize)| (u.0).0.hashed()),
            "ContextChanges",
            |_cap, _info| {
                let mut pending: Pending<(Fact, isize)> = Pending::new();
                let mut last: HashMap<Str, (Option<Str>, Option<Str>)> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (f, t, r) in data.drain(..) {
                            pending.push(&cap, t.max(least), (f, r));
                        }
                    });
                    let f = frontier_time(frontier);
                    while let Some((cap, t, mut batch)) = pending.next_complete(f) {
                        batch.sort();
                        let mut session = output.session(&cap);
                        for ((user, (at, fact)), r) in batch {
                            if let UserFact::Context { language, timezone } = &fact {
                                if r < 0 {
                                    continue;
                                }
                                let value = (language.clone(), timezone.clone());
                                if last.get(&user) == Some(&value) {
                                    continue;
                                }
                                last.insert(user.clone(), value);
                            }
                            session.give(((user, (at, fact)), t, r));
                        }
                    }
                    pending.release();
                }
            },
        )
        .as_collection()
}

/// A user's facts about one product: `(user, at, fact) -> multiplicity`,
/// sorted by user, then application order.
pub type ProductFacts = BTreeMap<(Str, crate::state::At, crate::state::ProductFact), isize>;

/// A keyed fact with its multiplicity change.
type KeyedUpdate<K, F> = ((K, F), isize);

/// Evaluates events against the facts held under their key, as of the
/// event's time: a keyed stateful operator standing in for join + reduce
/// where the events need no maintenance (they happen once). `facts` is a
/// maintained collection, kept per key as `fact -> multiplicity`; `events`
/// is read for its insertions. At each complete time the facts of that time
/// are applied first, then `logic(key, event, facts, out)` pushes outputs.
/// Outputs are insertions only (a stream of happenings): every consumer
/// reads candidates for their insertions.
pub fn evaluate_with_facts<'s, K, E, F, O, L>(
    events: Coll<'s, (K, E)>,
    facts: Coll<'s, (K, F)>,
    name: &str,
    mut logic: L,
) -> Coll<'s, O>
where
    K: ExchangeData + Hashable<Output = u64> + std::hash::Hash,
    E: ExchangeData,
    F: ExchangeData,
    O: Data,
    L: FnMut(&K, E, &BTreeMap<F, isize>, &mut Vec<O>) + 'static,
{
    use timely::dataflow::operators::generic::operator::Operator as _;
    let out = events.inner.binary_frontier(
        facts.inner,
        Exchange::new(|u: &((K, E), Time, isize)| (u.0).0.hashed()),
        Exchange::new(|u: &((K, F), Time, isize)| (u.0).0.hashed()),
        name,
        move |_cap, _info| {
            let mut pending_events: BTreeMap<Time, Vec<(K, E)>> = BTreeMap::new();
            let mut pending_facts: BTreeMap<Time, Vec<KeyedUpdate<K, F>>> = BTreeMap::new();
            let mut held: Option<Capability<Time>> = None;
            let mut state: HashMap<K, BTreeMap<F, isize>> = HashMap::new();
            let mut found: Vec<O> = Vec::new();
            move |(in1, f1), (in2, f2), output| {
                in1.for_each(|cap, data| {
                    let Some(&least) = cap.least() else { return };
                    for (e, t, r) in data.drain(..) {
                        if r > 0 {
                            let t = t.max(least);
                            push_tight(pending_events.entry(t).or_default(), e);
                            hold(&mut held, &cap, t);
                        }
                    }
                });
                in2.for_each(|cap, data| {
                    let Some(&least) = cap.least() else { return };
                    for (f, t, r) in data.drain(..) {
                        let t = t.max(least);
                        push_tight(pending_facts.entry(t).or_default(), (f, r));
                    }
                });
                while let Some(t) = next_complete_of(&pending_facts, &pending_events, f1, f2) {
                    if let Some(batch) = pending_facts.remove(&t) {
                        for ((k, fact), r) in batch {
                            let facts = state.entry(k.clone()).or_default();
                            let n = facts.entry(fact.clone()).or_insert(0);
                            *n += r;
                            if *n == 0 {
                                facts.remove(&fact);
                                if facts.is_empty() {
                                    state.remove(&k);
                                }
                            }
                        }
                    }
                    if let Some(mut batch) = pending_events.remove(&t) {
                        batch.sort();
                        let empty = BTreeMap::new();
                        for (k, e) in batch {
                            logic(&k, e, state.get(&k).unwrap_or(&empty), &mut found);
                        }
                        if !found.is_empty() {
                            let cap = held.as_ref().expect("held capability").delayed(&t);
                            let mut session = output.session(&cap);
                            for x in found.drain(..) {
                                session.give((x, t, 1isize));
                            }
                        }
                    }
                }
                release(&mut held, &pending_events);
            }
        },
    );
    out.as_collection()
}

/// Product events (price drops, restocks) evaluated against the facts users
/// hold about the product (see [`evaluate_with_facts`]); outputs are
/// candidates `(user, (τ, candidate))`, insertions only.
pub fn product_audience<'s, L>(
    changes: Coll<'s, (Str, ProductChange)>,
    facts: Coll<'s, crate::state::ByProduct>,
    name: &str,
    mut logic: L,
) -> Coll<'s, (Str, (Time, Candidate))>
where
    L: FnMut(&str, &ProductChange, &ProductFacts, &mut Vec<(Str, (Time, Candidate))>) + 'static,
{
    let facts = facts.map(|(p, (u, at, f))| (p, (u, at, f)));
    evaluate_with_facts(changes, facts, name, move |p: &Str, change, facts, out| {
        logic(p, &change, facts, out)
    })
}

/// A key's facts with their multiplicities, sorted by fact.
pub type KeyFacts<F> = Vec<(F, isize)>;

/// Keyed state with timers, for the per-user timer kinds: each key keeps
/// its facts (a maintained collection, exchanged by key) as a sorted list,
/// every worker keeps `S`, a state built from `shared` (broadcast: small
/// product-side facts such as prices), and `logic(key, facts, shared, b,
/// out)` runs for a key in bucket `b` when one of its facts arrives in `b`
/// or when a timer of one of its facts falls in `b` (`due(fact, timers)`
/// pushes the fact's timers, in ms). Without `shared`, `S` stays as given. At
/// each complete time, shared facts are applied first, then keyed facts,
/// then the keys are evaluated in key order. Outputs are insertions at `b`.
///
/// This stands in for a `reduce` whose input holds timers as facts shifted
/// to their due time: the same keys are evaluated at the same buckets on
/// the same facts, without re-reading an arrangement's history.
#[allow(clippy::too_many_arguments)]
pub fn keyed_timers<'s, K, F, P, S, O, D, A, L>(
    facts: Coll<'s, (K, F)>,
    shared: Option<Coll<'s, P>>,
    name: &str,
    clock: Clock,
    due: D,
    mut shared_state: S,
    mut apply: A,
    mut logic: L,
) -> Coll<'s, O>
where
    K: ExchangeData + Hashable<Output = u64> + std::hash::Hash,
    F: ExchangeData,
    P: ExchangeData,
    S: 'static,
    O: Data,
    D: Fn(&F, &mut Vec<Time>) + 'static,
    A: FnMut(&mut S, P, isize) + 'static,
    L: FnMut(&K, &[(F, isize)], &S, Time, &mut Vec<O>) + 'static,
{
    use timely::dataflow::operators::generic::operator::Operator as _;
    use timely::dataflow::operators::vec::Broadcast;
    let shared = match shared {
        Some(s) => s.inner.broadcast(),
        None => timely::dataflow::operators::generic::operator::empty(facts.inner.scope()),
    };
    facts
        .inner
        .binary_frontier(
            shared,
            Exchange::new(|u: &((K, F), Time, isize)| (u.0).0.hashed()),
            Pipeline,
            name,
            move |_cap, _info| {
                let mut pending_facts: BTreeMap<Time, Vec<KeyedUpdate<K, F>>> = BTreeMap::new();
                let mut pending_shared: BTreeMap<Time, Vec<(P, isize)>> = BTreeMap::new();
                let mut timers: BTreeMap<Time, Vec<K>> = BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                let mut state: HashMap<K, KeyFacts<F>, foldhash::fast::RandomState> =
                    HashMap::default();
                let mut found: Vec<O> = Vec::new();
                let mut due_ms: Vec<Time> = Vec::new();
                move |(in1, f1), (in2, f2), output| {
                    in1.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (f, t, r) in data.drain(..) {
                            let t = t.max(least);
                            push_tight(pending_facts.entry(t).or_default(), (f, r));
                            hold(&mut held, &cap, t);
                        }
                    });
                    in2.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (p, t, r) in data.drain(..) {
                            let t = t.max(least);
                            push_tight(pending_shared.entry(t).or_default(), (p, r));
                            hold(&mut held, &cap, t);
                        }
                    });
                    let frontier = frontier_of_two(f1, f2);
                    let least = |facts: &BTreeMap<Time, _>,
                                 shared: &BTreeMap<Time, _>,
                                 timers: &BTreeMap<Time, _>| {
                        least_pending([
                            facts.keys().next(),
                            shared.keys().next(),
                            timers.keys().next(),
                        ])
                    };
                    loop {
                        let least = least(&pending_facts, &pending_shared, &timers);
                        let Some(t) = least.filter(|t| frontier.is_none_or(|f| *t < f)) else {
                            break;
                        };
                        for (p, r) in pending_shared.remove(&t).unwrap_or_default() {
                            apply(&mut shared_state, p, r);
                        }
                        let mut touched: Vec<K> = timers.remove(&t).unwrap_or_default();
                        for ((k, f), r) in pending_facts.remove(&t).unwrap_or_default() {
                            if r > 0 {
                                due(&f, &mut due_ms);
                                for d in due_ms.drain(..) {
                                    let at = clock.at(d);
                                    if at > t {
                                        push_tight(timers.entry(at).or_default(), k.clone());
                                    }
                                }
                                touched.push(k.clone());
                            }
                            let facts = state.entry(k.clone()).or_default();
                            match facts.binary_search_by(|(x, _)| x.cmp(&f)) {
                                Ok(i) => {
                                    facts[i].1 += r;
                                    if facts[i].1 == 0 {
                                        facts.remove(i);
                                    }
                                }
                                Err(i) => {
                                    if facts.len() == facts.capacity() && facts.len() < 8 {
                                        facts.reserve_exact(1);
                                    }
                                    facts.insert(i, (f, r))
                                }
                            }
                            if facts.is_empty() {
                                state.remove(&k);
                            }
                        }
                        touched.sort_unstable();
                        touched.dedup();
                        for k in &touched {
                            if let Some(facts) = state.get(k) {
                                logic(k, facts, &shared_state, t, &mut found);
                            }
                        }
                        if !found.is_empty() {
                            let cap = held.as_ref().expect("held capability").delayed(&t);
                            let mut session = output.session(&cap);
                            for x in found.drain(..) {
                                session.give((x, t, 1isize));
                            }
                        }
                    }
                    release_to(&mut held, least(&pending_facts, &pending_shared, &timers));
                }
            },
        )
        .as_collection()
}

/// Erasure by key: `facts` are held per key (insertions add, retractions
/// remove) until a `forgets` record `(key, ms)` arrives; then every held
/// fact known by `ms` (`known(fact) <= ms`) is output as `(fact, ms)`, at
/// the forget's time, and let go. Facts known later are held as usual. At
/// one time, facts are applied before forgets.
pub fn erase_on_forget<'s, K, D, N>(
    facts: Coll<'s, (K, D)>,
    forgets: Coll<'s, (K, Time)>,
    name: &str,
    known: N,
) -> Coll<'s, (D, Time)>
where
    K: ExchangeData + Hashable<Output = u64> + std::hash::Hash,
    D: ExchangeData,
    N: Fn(&D) -> Time + 'static,
{
    use timely::dataflow::operators::generic::operator::Operator as _;
    facts
        .inner
        .binary_frontier(
            forgets.inner,
            Exchange::new(|u: &((K, D), Time, isize)| (u.0).0.hashed()),
            Exchange::new(|u: &((K, Time), Time, isize)| (u.0).0.hashed()),
            name,
            move |_cap, _info| {
                let mut pending_facts: BTreeMap<Time, Vec<KeyedUpdate<K, D>>> = BTreeMap::new();
                let mut pending_forgets: BTreeMap<Time, Vec<(K, Time)>> = BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                let mut state: HashMap<K, Vec<D>> = HashMap::new();
                move |(in1, f1), (in2, f2), output| {
                    in1.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (f, t, r) in data.drain(..) {
                            push_tight(pending_facts.entry(t.max(least)).or_default(), (f, r));
                        }
                    });
                    in2.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (f, t, r) in data.drain(..) {
                            if r > 0 {
                                let t = t.max(least);
                                pending_forgets.entry(t).or_default().push(f);
                                hold(&mut held, &cap, t);
                            }
                        }
                    });
                    while let Some(t) = next_complete_of(&pending_facts, &pending_forgets, f1, f2) {
                        for ((k, d), r) in pending_facts.remove(&t).unwrap_or_default() {
                            let list = state.entry(k.clone()).or_default();
                            if r > 0 {
                                list.extend(std::iter::repeat_n(d, r as usize));
                            } else {
                                for _ in 0..-r {
                                    if let Some(i) = list.iter().position(|x| *x == d) {
                                        list.swap_remove(i);
                                    }
                                }
                                if list.is_empty() {
                                    state.remove(&k);
                                }
                            }
                        }
                        let Some(mut forgets) = pending_forgets.remove(&t) else {
                            continue;
                        };
                        forgets.sort();
                        let cap = held.as_ref().expect("held capability").delayed(&t);
                        let mut session = output.session(&cap);
                        for (k, ms) in forgets {
                            let Some(list) = state.remove(&k) else {
                                continue;
                            };
                            let (gone, kept): (Vec<D>, Vec<D>) =
                                list.into_iter().partition(|d| known(d) <= ms);
                            for d in gone {
                                session.give(((d, ms), t, 1isize));
                            }
                            if !kept.is_empty() {
                                state.insert(k, kept);
                            }
                        }
                    }
                    release(&mut held, &pending_forgets);
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn clock_buckets() {
        let c = Clock::new(1000);
        assert_eq!(c.at(1999), 1000);
        assert_eq!(c.at(2000), 2000);
        assert_eq!(c.after(1999), 2000);
        assert_eq!(Clock::new(0).bucket_ms, 1);
    }
}
