//! `complementary` and `review_request`: timers after `order_delivered`.

use serde::{Deserialize, Serialize};

use crate::campaign::{Complementary, ReviewRequest};
use crate::catalog::{Lookup, Request};
use crate::model::{Money, Str, Time};
use crate::operators::{shift_to, Candidate, Clock, Coll};
use crate::state::{timer_firings, At, Evaluated, OrderFact, Product, Step, User};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum OrderIn {
    Fact(At, OrderFact),
    /// Stage `stage`'s timer of the delivery of `order_id` at `ts`.
    Due {
        stage: u8,
        ts: Time,
        order_id: Str,
    },
}

/// The user's order facts and due timers, as a timer reduce sees them.
struct Orders<'a> {
    facts: Vec<(&'a At, &'a OrderFact)>,
    known: Vec<(Time, Time)>,
}

impl<'a> Orders<'a> {
    fn delivered(&self, order: &str, ts: Time, tau: Time) -> bool {
        self.facts.iter().any(|(at, f)| {
            at.visible(tau)
                && at.ts() == ts
                && matches!(f, OrderFact::Delivered { order_id } if order_id == order)
        })
    }
}

/// Delivery timers: one per `order_delivered` and stage, due at `ts +
/// delays[stage]`, as a per-user reduce input with the user's order facts.
fn with_timers<'s>(
    campaign: &str,
    clock: Clock,
    facts: Coll<'s, (User, (At, OrderFact))>,
    delays: Vec<Time>,
) -> Coll<'s, (User, OrderIn)> {
    let stages = delays.clone();
    let due = facts.clone().flat_map(move |(u, (at, f))| match f {
        OrderFact::Delivered { order_id } => stages
            .iter()
            .enumerate()
            .map(|(i, _)| {
                (
                    u.clone(),
                    OrderIn::Due {
                        stage: i as u8,
                        ts: at.ts(),
                        order_id: order_id.clone(),
                    },
                )
            })
            .collect(),
        _ => Vec::new(),
    });
    let timers = shift_to(
        due,
        clock,
        &format!("{campaign}: delivery timers"),
        move |(_, d)| match d {
            OrderIn::Due { stage, ts, .. } => ts.saturating_add(delays[*stage as usize]),
            OrderIn::Fact(..) => 0,
        },
    );
    facts
        .map(|(u, (at, f))| (u, OrderIn::Fact(at, f)))
        .concat(timers)
}

/// A due timer: `(T, (stage, delivery ts, order_id))`.
type DueTimer<'a> = (Time, (u8, Time, &'a str));

/// Splits a reduce input into facts and due timers.
fn split<'a>(
    input: &'a [(&'a OrderIn, isize)],
    delays: &[Time],
) -> (Orders<'a>, Vec<DueTimer<'a>>) {
    let mut facts = Vec::new();
    let mut due = Vec::new();
    for (x, _) in input {
        match x {
            OrderIn::Fact(at, f) => facts.push((at, f)),
            OrderIn::Due {
                stage,
                ts,
                order_id,
            } => due.push((
                ts.saturating_add(delays[*stage as usize]),
                (*stage, *ts, order_id.as_str()),
            )),
        }
    }
    let known = facts.iter().map(|(at, _)| (at.ts(), at.known)).collect();
    (Orders { facts, known }, due)
}

/// A per-user reduce over the user's order facts and delivery timers: each
/// timer that may fire in the evaluated bucket is tried at `τ = T` and then
/// at later known times; once its delivery is known, `eval(user, orders,
/// (stage, t, o), T, τ)` decides.
fn delivery_kind<'s, E>(
    campaign: &str,
    what: &str,
    clock: Clock,
    facts: Coll<'s, (User, (At, OrderFact))>,
    delays: Vec<Time>,
    eval: E,
) -> Coll<'s, Request>
where
    E: Fn(&str, &Orders, (u8, Time, &str), Time, Time) -> Step<(Candidate, Lookup)> + 'static,
{
    with_timers(campaign, clock, facts, delays.clone()).reduce_named(
        &format!("{campaign}: {what}"),
        move |user, input, output| {
            let (orders, due) = split(input, &delays);
            let ev = Evaluated::new(clock, &orders.known, due.iter().map(|d| d.0));
            let mut found = Vec::new();
            timer_firings(
                ev,
                &orders.known,
                &due,
                |&(stage, t, o), tau| {
                    if !orders.delivered(o, t, tau) {
                        return Step::Retry;
                    }
                    let end = t.saturating_add(delays[stage as usize]);
                    eval(user, &orders, (stage, t, o), end, tau)
                },
                &mut found,
            );
            for (tau, (c, l)) in found {
                output.push(((tau, c, l), 1));
            }
        },
    )
}

/// For each `order_delivered(u, o)` at `t`: at `T = t + delay`, the first
/// of the order's items (by descending price) that has a co-purchased
/// product not in the order and not bought by `u` before gets the `top_n`
/// most co-purchased such products (counted over orders placed in
/// `[T - window, T]`, on the product side). No record if none, or while the
/// order's `order_placed` is unknown. *id*: `(u, o)`.
pub fn complementary<'s>(
    campaign: &str,
    params: &Complementary,
    clock: Clock,
    facts: Coll<'s, (User, (At, OrderFact))>,
) -> Coll<'s, Request> {
    let (top_n, window_ms) = (params.top_n, params.window_ms);
    let name = campaign.to_string();
    delivery_kind(
        campaign,
        "complementary",
        clock,
        facts,
        vec![params.delay_ms],
        move |user, orders, (_, _, o), end, tau| {
            let placed = || {
                orders.facts.iter().filter_map(|(at, f)| match f {
                    OrderFact::Placed { order_id, items } if at.visible(tau) => {
                        Some((at, order_id, items))
                    }
                    _ => None,
                })
            };
            let Some((_, _, items)) = placed().find(|(_, id, _)| id.as_str() == o) else {
                return Step::Retry;
            };
            let mut lines: Vec<(Product, Option<Money>)> = Vec::new();
            for i in items {
                if !lines.iter().any(|(p, _)| *p == i.product_id) {
                    lines.push((i.product_id.clone(), i.price));
                }
            }
            let mut bought: Vec<Product> = placed()
                .filter(|(at, _, _)| at.ts() <= end)
                .flat_map(|(_, _, items)| items.iter().map(|i| i.product_id.clone()))
                .collect();
            bought.sort();
            bought.dedup();
            let c = Candidate {
                order_id: Some(o.into()),
                ..Candidate::new(&name, "complementary", &[user, o], Vec::new())
            };
            Step::Fire((
                c,
                Lookup::CoPurchase {
                    items: lines,
                    bought,
                    top_n,
                    window_ms,
                },
            ))
        },
    )
}

/// For `order_delivered(u, o)` at `t`: fires at `t + delay` if `u` has no
/// `review_submitted` for `o` with `ts <= T`; a second record (`reminder:
/// true`) at `t + reminder` if still none. *id*: `(u, o, stage)`.
pub fn review_request<'s>(
    campaign: &str,
    params: &ReviewRequest,
    clock: Clock,
    facts: Coll<'s, (User, (At, OrderFact))>,
) -> Coll<'s, Request> {
    let mut delays = vec![params.delay_ms];
    delays.extend(params.reminder_ms);
    let name = campaign.to_string();
    delivery_kind(
        campaign,
        "review request",
        clock,
        facts,
        delays,
        move |user, orders, (stage, _, o), end, tau| {
            let reviewed = orders.facts.iter().any(|(at, f)| {
                at.visible(tau)
                    && at.ts() <= end
                    && matches!(f, OrderFact::Review { order_id } if order_id == o)
            });
            if reviewed {
                return Step::Stop;
            }
            let stage_name = (stage + 1).to_string();
            let c = Candidate {
                order_id: Some(o.into()),
                reminder: (stage > 0).then_some(true),
                ..Candidate::new(&name, "review_request", &[user, o, &stage_name], Vec::new())
            };
            Step::Fire((c, Lookup::Enrich))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `OrderIn` crosses the reduce's exchange: between processes it goes
    /// through bincode (see `tests/bincode_roundtrip.rs`).
    #[test]
    fn order_in_round_trips_through_bincode() {
        let at = At {
            seq: crate::model::Seq {
                ts: 1_700_000_000_000,
                rank: 7,
                event_id: "e1".into(),
            },
            known: 1_700_000_000_001,
            until: 1_800_000_000_000,
        };
        let values = vec![
            (
                User::from("u1"),
                OrderIn::Fact(
                    at.clone(),
                    OrderFact::Placed {
                        order_id: "o1".into(),
                        items: vec![crate::model::OrderItem {
                            product_id: "p1".into(),
                            quantity: 2,
                            price: Some(Money(4.5)),
                            seller_id: None,
                        }],
                    },
                ),
            ),
            (
                "u1".into(),
                OrderIn::Fact(
                    at,
                    OrderFact::Cancelled {
                        order_id: "o1".into(),
                        reason: None,
                    },
                ),
            ),
            (
                "u2".into(),
                OrderIn::Due {
                    stage: 1,
                    ts: 1_700_000_000_000,
                    order_id: "o2".into(),
                },
            ),
        ];
        let bytes = bincode::serialize(&values).unwrap();
        let back: Vec<(User, OrderIn)> = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, values);
    }
}
