//! `reactivation`: the user has been away for `after` (several stages).
//!
//! A keyed stateful operator rather than a reduce: the stages reach 90
//! days, longer than activity is retained, and all that matters per user is
//! the latest activity and the latest view. Facts are taken as they become
//! known (insertions, net of the retractions at the same time; retention
//! retractions are ignored, and a fact whose retention ended before it
//! became known is no fact), so the state per user is two facts and one
//! pending timer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use differential_dataflow::{AsCollection, Hashable};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::catalog::{Lookup, Request};
use crate::model::{Item, Seq, Time};
use crate::operators::{frontier_time, hold, release_to, Candidate, Clock, Coll};
use crate::state::{At, Product, User};

/// The reactivation campaigns, as stages: each distinct `after` (ms,
/// ascending) with the campaigns that fire at it.
#[derive(Clone, Debug, Default)]
pub struct Stages {
    pub stages: Vec<(Time, Vec<String>)>,
}

impl Stages {
    /// Adds `campaign`'s stages.
    pub fn add(&mut self, campaign: &str, after_ms: &[Time]) {
        for &a in after_ms {
            match self.stages.iter_mut().find(|(t, _)| *t == a) {
                Some((_, names)) => names.push(campaign.to_string()),
                None => self.stages.push((a, vec![campaign.to_string()])),
            }
        }
        self.stages.sort_by_key(|(t, _)| *t);
    }
}

struct Visitor {
    latest: At,
    view: Option<(Seq, Product)>,
    /// The pending check: due time (ms), the `L` it is for, and the stage
    /// (`stages.len()` = forget the user).
    next: (Time, Time, usize),
}

/// Fires at `T = L + after` (`L` = the user's latest activity) for each
/// stage, at the first `τ >= T` at which `L` is still the latest activity
/// known; `items` = the most recently viewed product, if any.
/// *id*: `(u, L, after)`. A user is forgotten `forget_ms` after the last
/// stage of their latest activity.
pub fn reactivation<'s>(
    stages: Stages,
    clock: Clock,
    forget_ms: Time,
    visits: Coll<'s, (User, (At, Option<Product>))>,
) -> Coll<'s, Request> {
    type Visit = (User, (At, Option<Product>));
    let stages = stages.stages;
    visits
        .inner
        .unary_frontier(
            Exchange::new(|u: &(Visit, Time, isize)| (u.0).0.hashed()),
            "Reactivation",
            move |_cap, _info| {
                // Updates by time, retractions included: the stream is not
                // consolidated (a join emits the product of two retractions
                // as an insertion), so a time's updates are summed before
                // any is read as a new fact.
                let mut pending: BTreeMap<Time, Vec<(Visit, isize)>> = BTreeMap::new();
                // bucket -> (due ms, user)
                let mut timers: BTreeMap<Time, Vec<(Time, User)>> = BTreeMap::new();
                let mut held: Option<Capability<Time>> = None;
                let mut users: HashMap<User, Visitor> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&least) = cap.least() else { return };
                        for (v, t, r) in data.drain(..) {
                            let t = t.max(least);
                            pending.entry(t).or_default().push((v, r));
                            hold(&mut held, &cap, t);
                        }
                    });
                    // The least time with facts or checks pending.
                    let least =
                        |pending: &BTreeMap<Time, Vec<(Visit, isize)>>,
                         timers: &BTreeMap<Time, Vec<(Time, User)>>| {
                            pending
                                .keys()
                                .next()
                                .copied()
                                .into_iter()
                                .chain(timers.keys().next().copied())
                                .min()
                        };
                    let f = frontier_time(frontier);
                    loop {
                        let next = least(&pending, &timers);
                        let Some(t) = next.filter(|&t| f.is_none_or(|f| t < f)) else {
                            break;
                        };
                        let mut updates = pending.remove(&t).unwrap_or_default();
                        differential_dataflow::consolidation::consolidate(&mut updates);
                        let mut facts: Vec<Visit> = updates
                            .into_iter()
                            .filter_map(|(v, r)| (r > 0).then_some(v))
                            .collect();
                        facts.sort_by(|a, b| (a.1 .0.known, a).cmp(&(b.1 .0.known, b)));
                        // Facts and checks of this bucket in ms order (facts first
                        // at one ms); checks scheduled into this bucket join the queue.
                        let mut due: BinaryHeap<Reverse<(Time, User)>> = timers
                            .remove(&t)
                            .unwrap_or_default()
                            .into_iter()
                            .map(Reverse)
                            .collect();
                        let mut facts = facts.into_iter().peekable();
                        let mut found: Vec<Request> = Vec::new();
                        let mut later: Vec<(Time, User)> = Vec::new();
                        let apply =
                            |(u, (at, product)): Visit,
                             users: &mut HashMap<User, Visitor>,
                             later: &mut Vec<(Time, User)>| {
                                // Never part of the state: its retention ended
                                // before it became known (an anonymous event
                                // linked after it expired). Coarse rounds can
                                // still carry it; the data decides.
                                if !at.visible(at.known) {
                                    return;
                                }
                                let first_due = at.ts().saturating_add(stages[0].0).max(at.known);
                                match users.get_mut(&u) {
                                    None => {
                                        let view = product.map(|p| (at.seq.clone(), p));
                                        later.push((first_due, u.clone()));
                                        users.insert(
                                            u,
                                            Visitor {
                                                next: (first_due, at.ts(), 0),
                                                latest: at,
                                                view,
                                            },
                                        );
                                    }
                                    Some(v) => {
                                        if let Some(p) = product {
                                            if v.view.as_ref().is_none_or(|(s, _)| at.seq > *s) {
                                                v.view = Some((at.seq.clone(), p));
                                            }
                                        }
                                        if at.seq > v.latest.seq {
                                            if first_due < v.next.0 {
                                                v.next = (first_due, at.ts(), 0);
                                                later.push((first_due, u));
                                            }
                                            v.latest = at;
                                        }
                                    }
                                }
                            };
                        let check = |when: Time,
                                     u: User,
                                     users: &mut HashMap<User, Visitor>,
                                     later: &mut Vec<(Time, User)>,
                                     found: &mut Vec<Request>| {
                            let Some(v) = users.get_mut(&u) else { return };
                            if v.next.0 != when {
                                return; // superseded by an earlier check
                            }
                            let (_, l, stage) = v.next;
                            let latest = v.latest.ts();
                            if latest != l {
                                let d = latest.saturating_add(stages[0].0).max(when);
                                v.next = (d, latest, 0);
                                later.push((d, u));
                                return;
                            }
                            if stage == stages.len() {
                                users.remove(&u);
                                return;
                            }
                            let (after, names) = &stages[stage];
                            let items: Vec<Item> = v
                                .view
                                .iter()
                                .map(|(_, p)| Item::product(p.clone()))
                                .collect();
                            for name in names {
                                let c = Candidate::new(
                                    name,
                                    "reactivation",
                                    &[&u, &l.to_string(), &after.to_string()],
                                    items.clone(),
                                );
                                found.push((u.clone(), (when, c, Lookup::Enrich)));
                            }
                            let d = match stages.get(stage + 1) {
                                Some((a, _)) => l.saturating_add(*a),
                                None => l.saturating_add(after.saturating_add(forget_ms)),
                            };
                            v.next = (d.max(when), l, stage + 1);
                            later.push((d.max(when), u));
                        };
                        loop {
                            let next_check = due.peek().map(|Reverse((w, _))| *w);
                            let next_fact = facts.peek().map(|x| x.1 .0.known);
                            match (next_fact, next_check) {
                                (None, None) => break,
                                (Some(f), c) if c.is_none_or(|c| f <= c) => {
                                    let fact = facts.next().expect("peeked");
                                    apply(fact, &mut users, &mut later);
                                }
                                _ => {
                                    let Reverse((when, u)) = due.pop().expect("peeked");
                                    check(when, u, &mut users, &mut later, &mut found);
                                }
                            }
                            for (d, u) in later.drain(..) {
                                if clock.at(d) <= t {
                                    due.push(Reverse((d.max(t), u)));
                                } else {
                                    timers.entry(clock.at(d)).or_default().push((d, u));
                                }
                            }
                        }
                        let cap = held
                            .as_ref()
                            .expect("held capability covers work")
                            .delayed(&t);
                        if !found.is_empty() {
                            let mut session = output.session(&cap);
                            for x in found {
                                session.give((x, t, 1isize));
                            }
                        }
                    }
                    release_to(&mut held, least(&pending, &timers));
                }
            },
        )
        .as_collection()
}
