//! The product side: what every trigger record needs to know about
//! products at its firing time `τ` — the catalog entry (title, url, image,
//! category, seller, group), the latest price and stock, best sellers per
//! category and co-purchase counts over sliding windows.
//!
//! Product state is small next to user state (one entry per product, plus
//! the orders of the longest window), so every worker holds all of it:
//! product messages and orders are broadcast, and the requests (candidate
//! records with what they need looked up) are spread over the workers by
//! `trigger_id`. Within a complete bucket, facts and requests are taken in
//! millisecond order, facts first at one ms: a request at `τ` sees exactly
//! the product state at `τ`, whatever the bucket width.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use differential_dataflow::{AsCollection, Hashable};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;

use crate::model::{CatalogMsg, Item, Money, PriceMsg, StockMsg, Str, Time};
use crate::operators::{frontier_time, hold, next_complete_of, release, Candidate, Coll, Pending};
use crate::state::{Basket, Product, User};

/// What a candidate needs from the product side before it can fire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lookup {
    /// Only catalog details for its items.
    Enrich,
    /// Fires only if the product is not out of stock.
    InStock(Product),
    /// `items` = the category's best sellers over the window.
    BestSellers {
        category: Str,
        top_n: usize,
        window_ms: Time,
    },
    /// `items` = the most co-purchased product for the first of the order's
    /// items (by descending price) that has one; no record if none.
    CoPurchase {
        /// The order's items with their price in the order.
        items: Vec<(Product, Option<Money>)>,
        /// Products the user bought before (never recommended).
        bought: Vec<Product>,
        top_n: usize,
        window_ms: Time,
    },
    /// `items` = for each item (with its seller in the order), the cheapest
    /// in-stock products of its group from other sellers; no record if none.
    Alternatives {
        items: Vec<(Product, Option<Str>)>,
        max_items: usize,
    },
}

/// A candidate firing at `τ` with its lookup.
pub type Request = (User, (Time, Candidate, Lookup));

/// A candidate firing at `τ` (ms), complete.
pub type Firing = (User, (Time, Candidate));

/// A product-side fact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProductInput {
    Price(PriceMsg),
    Stock(StockMsg),
    Catalog(CatalogMsg),
    Order(Basket),
    /// A placed order that stops counting at `at` (ms): its user forgot.
    Erase {
        basket: Basket,
        at: Time,
    },
}

impl ProductInput {
    /// When the fact takes effect (ms), and its rank among facts at one ms.
    fn at(&self) -> (Time, u8) {
        match self {
            ProductInput::Catalog(c) => (c.ts, 0),
            ProductInput::Price(p) => (p.ts, 1),
            ProductInput::Stock(s) => (s.ts, 2),
            ProductInput::Order(b) => (b.known, 3),
            ProductInput::Erase { at, .. } => (*at, 4),
        }
    }
}

/// Which sliding windows over orders the campaigns need.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    /// Best-seller windows (units per product), ms.
    pub sales_ms: Vec<Time>,
    /// Co-purchase windows (pair counts), ms.
    pub pairs_ms: Vec<Time>,
}

#[derive(Default)]
struct ProductState {
    price: Option<(Time, Money)>,
    stock: Option<(Time, u64)>,
    entry: Option<CatalogMsg>,
}

/// Orders placed within `[now - window_ms, now]`, with units per product
/// and, when asked for, pair counts.
struct OrderWindow {
    window_ms: Time,
    pairs_wanted: bool,
    horizon: Time,
    baskets: BTreeMap<(Time, Str), Vec<(Product, u64)>>,
    ids: HashSet<Str>,
    /// Units per product: sums of `u64` quantities, exact in `u128`
    /// (no quantity can wrap them or make one order's removal inexact).
    units: HashMap<Product, u128>,
    pairs: HashMap<Product, HashMap<Product, u64>>,
}

impl OrderWindow {
    fn new(window_ms: Time, pairs_wanted: bool) -> Self {
        OrderWindow {
            window_ms,
            pairs_wanted,
            horizon: 0,
            baskets: BTreeMap::new(),
            ids: HashSet::new(),
            units: HashMap::new(),
            pairs: HashMap::new(),
        }
    }

    fn count(&mut self, lines: &[(Product, u64)], sign: i64) {
        for (p, q) in lines {
            let u = self.units.entry(p.clone()).or_default();
            if sign > 0 {
                *u += *q as u128;
            } else {
                *u -= *q as u128;
            }
            if *u == 0 {
                self.units.remove(p);
            }
        }
        if !self.pairs_wanted {
            return;
        }
        for (a, _) in lines {
            for (b, _) in lines {
                if a == b {
                    continue;
                }
                let row = self.pairs.entry(a.clone()).or_default();
                let n = row.entry(b.clone()).or_default();
                *n = (*n as i64 + sign) as u64;
                if *n == 0 {
                    row.remove(b);
                    if row.is_empty() {
                        self.pairs.remove(a);
                    }
                }
            }
        }
    }

    /// Moves the window's start to `now - window_ms`.
    fn advance(&mut self, now: Time) {
        let horizon = now.saturating_sub(self.window_ms);
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        while let Some(entry) = self.baskets.first_entry() {
            if entry.key().0 >= horizon {
                break;
            }
            let ((_, id), lines) = entry.remove_entry();
            self.ids.remove(&id);
            self.count(&lines, -1);
        }
    }

    /// Stops counting `b` from `at` (ms) on.
    fn erase(&mut self, b: &Basket, at: Time) {
        self.advance(at);
        let key = (b.ts, b.order_id.clone());
        if let Some(lines) = self.baskets.remove(&key) {
            self.ids.remove(&b.order_id);
            self.count(&lines, -1);
        }
    }

    fn add(&mut self, b: &Basket) {
        self.advance(b.known);
        if b.ts < self.horizon || self.ids.contains(&b.order_id) {
            return;
        }
        self.ids.insert(b.order_id.clone());
        self.count(&b.lines, 1);
        self.baskets
            .insert((b.ts, b.order_id.clone()), b.lines.clone());
    }
}

/// Everything one worker knows about products.
struct Products {
    by_id: HashMap<Product, ProductState>,
    by_category: HashMap<Str, BTreeSet<Product>>,
    by_group: HashMap<Str, BTreeSet<Product>>,
    windows: Vec<OrderWindow>,
}

impl Products {
    fn new(w: &Windows) -> Self {
        let mut lengths: Vec<Time> = w.sales_ms.iter().chain(&w.pairs_ms).copied().collect();
        lengths.sort_unstable();
        lengths.dedup();
        Products {
            by_id: HashMap::new(),
            by_category: HashMap::new(),
            by_group: HashMap::new(),
            windows: lengths
                .into_iter()
                .map(|l| OrderWindow::new(l, w.pairs_ms.contains(&l)))
                .collect(),
        }
    }

    fn apply(&mut self, fact: ProductInput) {
        match fact {
            ProductInput::Price(p) => {
                let s = self.by_id.entry(p.product_id).or_default();
                if s.price.is_none_or(|(ts, _)| ts <= p.ts) {
                    s.price = Some((p.ts, p.price));
                }
            }
            ProductInput::Stock(m) => {
                let s = self.by_id.entry(m.product_id).or_default();
                if s.stock.is_none_or(|(ts, _)| ts <= m.ts) {
                    s.stock = Some((m.ts, m.quantity));
                }
            }
            ProductInput::Catalog(c) => {
                let s = self.by_id.entry(c.product_id.clone()).or_default();
                if s.entry.as_ref().is_some_and(|e| e.ts > c.ts) {
                    return;
                }
                if let Some(old) = s.entry.take() {
                    if let Some(set) = self.by_category.get_mut(&old.category_id) {
                        set.remove(&old.product_id);
                    }
                    if let Some(set) = old.group_id.as_ref().and_then(|g| self.by_group.get_mut(g))
                    {
                        set.remove(&old.product_id);
                    }
                }
                self.by_category
                    .entry(c.category_id.clone())
                    .or_default()
                    .insert(c.product_id.clone());
                if let Some(g) = &c.group_id {
                    self.by_group
                        .entry(g.clone())
                        .or_default()
                        .insert(c.product_id.clone());
                }
                s.entry = Some(c);
            }
            ProductInput::Order(b) => {
                for w in &mut self.windows {
                    w.add(&b);
                }
            }
            ProductInput::Erase { basket, at } => {
                for w in &mut self.windows {
                    w.erase(&basket, at);
                }
            }
        }
    }

    fn price(&self, p: &str) -> Option<Money> {
        self.by_id.get(p).and_then(|s| s.price).map(|(_, m)| m)
    }

    fn entry(&self, p: &str) -> Option<&CatalogMsg> {
        self.by_id.get(p).and_then(|s| s.entry.as_ref())
    }

    /// Not known to be out of stock (unknown stock counts as in stock).
    fn in_stock(&self, p: &str) -> bool {
        self.by_id
            .get(p)
            .and_then(|s| s.stock)
            .is_none_or(|(_, q)| q != 0)
    }

    fn deleted(&self, p: &str) -> bool {
        deleted(&self.by_id, p)
    }

    /// A recommended product: its id and current price.
    fn offer(&self, p: &str) -> Item {
        Item {
            price: self.price(p),
            ..Item::product(p)
        }
    }

    /// Title, url, image and category from the catalog entry, where missing.
    fn enrich(&self, items: &mut [Item]) {
        for item in items {
            let Some(e) = self.entry(&item.product_id) else {
                continue;
            };
            if item.category_id.is_none() {
                item.category_id = Some(e.category_id.clone());
            }
            if item.title.is_none() {
                item.title = e.title.clone();
            }
            if item.url.is_none() {
                item.url = e.url.clone();
            }
            if item.image_url.is_none() {
                item.image_url = e.image_url.clone();
            }
        }
    }
}

/// Whether the product's latest catalog entry marks it deleted.
fn deleted(by_id: &HashMap<Product, ProductState>, p: &str) -> bool {
    by_id
        .get(p)
        .and_then(|s| s.entry.as_ref())
        .is_some_and(|e| e.deleted)
}

/// The window of `window_ms`, moved to `now`.
fn window(windows: &mut [OrderWindow], window_ms: Time, now: Time) -> Option<&mut OrderWindow> {
    let w = windows.iter_mut().find(|w| w.window_ms == window_ms)?;
    w.advance(now);
    Some(w)
}

impl Products {
    /// Resolves a request at `τ`: the completed candidate, or `None` when
    /// it must not fire.
    fn resolve(&mut self, tau: Time, mut cand: Candidate, lookup: Lookup) -> Option<Candidate> {
        match lookup {
            Lookup::Enrich => {}
            Lookup::InStock(p) => {
                if !self.in_stock(&p) {
                    return None;
                }
            }
            Lookup::BestSellers {
                category,
                top_n,
                window_ms,
            } => {
                let units: Vec<(u128, Product)> = {
                    let w = window(&mut self.windows, window_ms, tau)?;
                    let units = &w.units;
                    match self.by_category.get(&category) {
                        None => Vec::new(),
                        Some(set) => set
                            .iter()
                            .filter_map(|p| units.get(p).map(|&n| (n, p.clone())))
                            .collect(),
                    }
                };
                let mut best: Vec<(u128, Product)> = units
                    .into_iter()
                    .filter(|(n, p)| *n > 0 && self.in_stock(p) && !self.deleted(p))
                    .collect();
                best.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                cand.items = best
                    .into_iter()
                    .take(top_n)
                    .map(|(_, p)| self.offer(&p))
                    .collect();
            }
            Lookup::CoPurchase {
                items,
                bought,
                top_n,
                window_ms,
            } => {
                let mut ranked: Vec<(Option<Money>, Product)> = items
                    .iter()
                    .map(|(p, price)| (price.or_else(|| self.price(p)), p.clone()))
                    .collect();
                // Descending price, unknown prices last, then product id.
                ranked.sort_by(|a, b| match (a.0, b.0) {
                    (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.1.cmp(&b.1)),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => a.1.cmp(&b.1),
                });
                let excluded: HashSet<&Product> =
                    items.iter().map(|(p, _)| p).chain(bought.iter()).collect();
                let picks: Vec<Product> = {
                    let w = window(&mut self.windows, window_ms, tau)?;
                    let mut picks = Vec::new();
                    for (_, a) in &ranked {
                        let Some(row) = w.pairs.get(a) else { continue };
                        let mut found: Vec<(u64, &Product)> = row
                            .iter()
                            .filter(|(b, n)| **n > 0 && !excluded.contains(b))
                            .map(|(b, n)| (*n, b))
                            .collect();
                        found.retain(|(_, b)| !deleted(&self.by_id, b));
                        if found.is_empty() {
                            continue;
                        }
                        found.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(y.1)));
                        picks = found
                            .into_iter()
                            .take(top_n)
                            .map(|(_, b)| b.clone())
                            .collect();
                        break;
                    }
                    picks
                };
                if picks.is_empty() {
                    return None;
                }
                cand.items = picks.iter().map(|p| self.offer(p)).collect();
            }
            Lookup::Alternatives { items, max_items } => {
                let mut out: Vec<Product> = Vec::new();
                for (p, seller) in &items {
                    let Some(entry) = self.entry(p) else { continue };
                    let seller = seller.clone().or_else(|| entry.seller_id.clone());
                    let Some(group) = entry.group_id.as_ref() else {
                        continue;
                    };
                    let Some(members) = self.by_group.get(group) else {
                        continue;
                    };
                    let mut alts: Vec<(Option<Money>, &Product)> = members
                        .iter()
                        .filter(|q| *q != p)
                        .filter(|q| {
                            self.entry(q)
                                .is_some_and(|e| e.seller_id != seller && !e.deleted)
                                && self.in_stock(q)
                        })
                        .map(|q| (self.price(q), q))
                        .collect();
                    alts.sort_by(|a, b| match (a.0, b.0) {
                        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(b.1)),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => a.1.cmp(b.1),
                    });
                    for (_, q) in alts.into_iter().take(max_items) {
                        if !out.contains(q) {
                            out.push(q.clone());
                        }
                    }
                }
                if out.is_empty() {
                    return None;
                }
                cand.items = out.iter().map(|p| self.offer(p)).collect();
            }
        }
        self.enrich(&mut cand.items);
        Some(cand)
    }
}

/// Resolves `requests` against the product state at each request's `τ`
/// (see the module docs). Outputs are insertions only, at the request's time.
pub fn resolve<'s>(
    facts: Coll<'s, ProductInput>,
    requests: Coll<'s, Request>,
    windows: Windows,
) -> Coll<'s, Firing> {
    let facts = facts.inner.broadcast();
    facts
        .binary_frontier(
            requests.inner,
            Pipeline,
            Exchange::new(|u: &(Request, Time, isize)| (u.0).1 .1.trigger_id.hashed()),
            "ProductLookups",
            move |_cap, _info| {
                let mut products = Products::new(&windows);
                let mut pending_facts: BTreeMap<Time, Vec<ProductInput>> = BTreeMap::new();
                let mut pending_requests: BTreeMap<Time, Vec<(User, Time, Candidate, Lookup)>> =
                    BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                move |(in1, f1), (in2, f2), output| {
                    in1.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (f, t, r) in data.drain(..) {
                            if r > 0 {
                                pending_facts.entry(t.max(least)).or_default().push(f);
                            }
                        }
                    });
                    in2.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for ((u, (tau, c, l)), t, r) in data.drain(..) {
                            if r > 0 {
                                let t = t.max(least);
                                pending_requests.entry(t).or_default().push((u, tau, c, l));
                                hold(&mut held, &cap, t);
                            }
                        }
                    });
                    while let Some(t) = next_complete_of(&pending_facts, &pending_requests, f1, f2)
                    {
                        let mut facts = pending_facts.remove(&t).unwrap_or_default();
                        facts.sort_by(|a, b| (a.at(), a).cmp(&(b.at(), b)));
                        let mut reqs = pending_requests.remove(&t).unwrap_or_default();
                        // By τ only: requests do not change the state, so their
                        // order at one τ does not matter (the emitter sorts).
                        reqs.sort_by_key(|r| r.1);
                        let mut facts = facts.into_iter().peekable();
                        let mut found = Vec::new();
                        for (u, tau, c, l) in reqs {
                            while let Some(fact) = facts.next_if(|x| x.at().0 <= tau) {
                                products.apply(fact);
                            }
                            if let Some(c) = products.resolve(tau, c, l) {
                                found.push((u, (tau, c)));
                            }
                        }
                        for fact in facts {
                            products.apply(fact);
                        }
                        if !found.is_empty() {
                            let cap = held.as_ref().expect("held capability").delayed(&t);
                            let mut session = output.session(&cap);
                            for x in found {
                                session.give((x, t, 1isize));
                            }
                        }
                    }
                    release(&mut held, &pending_requests);
                }
            },
        )
        .as_collection()
}

/// The first `catalog` message of each product (smallest `ts`), as
/// `(category, (product, ts))` at its time: a product's listing.
pub fn new_products<'s>(catalog: Coll<'s, CatalogMsg>) -> Coll<'s, (Str, (Product, Time))> {
    catalog
        .inner
        .unary_frontier(
            Exchange::new(|u: &(CatalogMsg, Time, isize)| u.0.product_id.hashed()),
            "NewProducts",
            |_cap, _info| {
                let mut pending = Pending::new();
                let mut seen: HashSet<Product> = HashSet::new();
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
                        batch.sort_by(|a: &CatalogMsg, b| (a.ts, a).cmp(&(b.ts, b)));
                        let mut session = output.session(&cap);
                        for m in batch {
                            if seen.insert(m.product_id.clone()) {
                                session.give(((m.category_id, (m.product_id, m.ts)), t, 1isize));
                            }
                        }
                    }
                    pending.release();
                }
            },
        )
        .as_collection()
}
