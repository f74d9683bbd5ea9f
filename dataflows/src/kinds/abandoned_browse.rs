//! `abandoned_browse`: a session of product views that led nowhere.

use serde::{Deserialize, Serialize};

use crate::campaign::AbandonedBrowse;
use crate::model::{Item, Time};
use crate::operators::{shift_to, Candidate, Clock, Coll};
use crate::state::{evaluated_bucket, firing_times, ActKind, At, User};

use super::abandoned_cart::Firing;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum BrowseIn {
    Act(At, ActKind),
    /// The timer of the activity at this `ts`.
    Due(Time),
}

/// Let `L` be the time of the user's latest activity. Fires at the first
/// time `τ >= L + delay` at which, on the state known at `τ`, `L` is still
/// the latest activity and the session containing it has a `product_view`
/// and no `cart_add` and no `order_placed`; `items` = the distinct products
/// viewed in it, most recent first, at most `max_items`. *id*: `(u, L)`.
pub fn abandoned_browse<'s>(
    campaign: &str,
    params: &AbandonedBrowse,
    clock: Clock,
    activity: Coll<'s, (User, (At, ActKind))>,
) -> Coll<'s, Firing> {
    let delay = params.delay_ms;
    let gap = params.session_gap_ms;
    let max_items = params.max_items;
    let timers = shift_to(
        activity
            .clone()
            .map(|(u, (at, _))| (u, BrowseIn::Due(at.ts()))),
        clock,
        &format!("{campaign}: browse timers"),
        move |(_, due)| match due {
            BrowseIn::Due(ts) => ts.saturating_add(delay),
            BrowseIn::Act(..) => 0,
        },
    );
    let name = campaign.to_string();
    activity
        .map(|(u, (at, kind))| (u, BrowseIn::Act(at, kind)))
        .concat(timers)
        .reduce_named(
            &format!("{campaign}: abandoned browse"),
            move |user, input, output| {
                // Sorted: activity in application order, then timers by time.
                let acts: Vec<(&At, &ActKind)> = input
                    .iter()
                    .filter_map(|(x, _)| match x {
                        BrowseIn::Act(at, kind) => Some((at, kind)),
                        BrowseIn::Due(_) => None,
                    })
                    .collect();
                let mut due: Vec<Time> = input
                    .iter()
                    .filter_map(|(x, _)| match x {
                        BrowseIn::Due(ts) => Some(*ts),
                        BrowseIn::Act(..) => None,
                    })
                    .collect();
                due.dedup();
                let (recent, late_now) =
                    evaluated_bucket(clock, acts.iter().map(|(at, _)| *at), &due, delay);
                // min_known[i]: the least known time among acts[i..].
                let mut min_known = vec![Time::MAX; acts.len() + 1];
                for i in (0..acts.len()).rev() {
                    min_known[i] = min_known[i + 1].min(acts[i].0.known);
                }
                for &last in &due {
                    let end = last.saturating_add(delay);
                    if end < recent && !late_now {
                        continue;
                    }
                    // Superseded before it was due: later activity known by `end`.
                    let first_after = acts.partition_point(|(at, _)| at.ts() <= last);
                    if min_known[first_after] <= end {
                        continue;
                    }
                    for tau in firing_times(end, acts.iter().map(|(at, _)| at.known)) {
                        let visible: Vec<&(&At, &ActKind)> =
                            acts.iter().filter(|(at, _)| at.known <= tau).collect();
                        match visible.last().map(|(at, _)| at.ts()) {
                            Some(l) if l > last => break,
                            Some(l) if l == last => {}
                            _ => continue,
                        }
                        let mut start = visible.len() - 1;
                        while start > 0 && visible[start].0.ts() - visible[start - 1].0.ts() < gap {
                            start -= 1;
                        }
                        let session = &visible[start..];
                        if session
                            .iter()
                            .any(|(_, k)| matches!(k, ActKind::CartAdd | ActKind::Order))
                        {
                            continue;
                        }
                        let mut items: Vec<Item> = Vec::new();
                        for (_, kind) in session.iter().rev() {
                            if let ActKind::View { product } = kind {
                                if !items.iter().any(|i| &i.product_id == product) {
                                    items.push(Item::product(product.clone()));
                                    if items.len() == max_items {
                                        break;
                                    }
                                }
                            }
                        }
                        if items.is_empty() {
                            continue;
                        }
                        let candidate = Candidate::new(
                            &name,
                            "abandoned_browse",
                            &[user, &last.to_string()],
                            items,
                        );
                        if tau >= recent {
                            output.push(((tau, candidate), 1));
                        }
                        break;
                    }
                }
            },
        )
}
