//! `abandoned_browse`: a session of product views that led nowhere.

use serde::{Deserialize, Serialize};

use crate::campaign::AbandonedBrowse;
use crate::model::{Item, Seq, Time};
use crate::operators::{shift_to, Candidate, Coll};
use crate::state::{trigger_id, ActKind, User};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum BrowseIn {
    Act(Seq, ActKind),
    /// The timer of the activity at this `ts`.
    Due(Time),
}

/// Let `L` be the time of the user's latest activity. Fires at the first
/// time `τ >= L + delay` at which the session containing `L` has a
/// `product_view` and no `cart_add` and no `order_placed`; `items` = the
/// distinct products viewed in it, most recent first, at most `max_items`.
/// *id*: `(u, L)`.
pub fn abandoned_browse<'s>(campaign: &str, params: &AbandonedBrowse, activity: Coll<'s, (User, (Seq, ActKind))>) -> Coll<'s, (User, Candidate)> {
    let delay = params.delay_ms;
    let gap = params.session_gap_ms;
    let max_items = params.max_items;
    let timers = shift_to(
        activity.clone().map(|(u, (seq, _))| (u, BrowseIn::Due(seq.ts))),
        &format!("{campaign}: browse timers"),
        move |(_, due)| match due {
            BrowseIn::Due(ts) => ts.saturating_add(delay),
            BrowseIn::Act(..) => 0,
        },
    );
    let name = campaign.to_string();
    activity
        .map(|(u, (seq, kind))| (u, BrowseIn::Act(seq, kind)))
        .concat(timers)
        .reduce_named(&format!("{campaign}: abandoned browse"), move |user, input, output| {
            // Inputs are sorted: activity by `Seq` first, then timers.
            let acts: Vec<(&Seq, &ActKind)> = input
                .iter()
                .filter_map(|(x, _)| match x {
                    BrowseIn::Act(seq, kind) => Some((seq, kind)),
                    BrowseIn::Due(_) => None,
                })
                .collect();
            let Some(last) = acts.last().map(|(seq, _)| seq.ts) else { return };
            if !input.iter().any(|(x, _)| matches!(x, BrowseIn::Due(ts) if *ts == last)) {
                return;
            }
            let mut start = acts.len() - 1;
            while start > 0 && acts[start].0.ts - acts[start - 1].0.ts < gap {
                start -= 1;
            }
            let session = &acts[start..];
            if session.iter().any(|(_, k)| matches!(k, ActKind::CartAdd | ActKind::Order)) {
                return;
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
                return;
            }
            output.push((
                Candidate {
                    trigger_id: trigger_id(&name, &[user, &last.to_string()]),
                    campaign: name.clone(),
                    kind: "abandoned_browse".into(),
                    items,
                    query: None,
                    category_id: None,
                    order_id: None,
                    audience: None,
                    reminder: None,
                },
                1,
            ));
        })
}
