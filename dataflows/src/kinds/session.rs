//! The session kinds (`abandoned_browse`, `abandoned_search`,
//! `abandoned_category`) share one timer: "`L` = the user's latest
//! activity; fires at `T = L + delay` if the last session at `L` ...".
//! One reduce per user evaluates every configured session campaign, so
//! the user's activity is arranged once however many campaigns read it.
//! Each kind's own condition is a [`SessionRule`], in its kind's module.

use crate::catalog::{Lookup, Request};
use crate::model::Time;
use crate::operators::{keyed_timers, Candidate, Clock, Coll};
use crate::state::{timer_firings, ActKind, At, Evaluated, Step, User};

/// What a session campaign looks for in the last session.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionRule {
    /// `abandoned_browse`: views, no cart_add, no order.
    Browse { max_items: usize },
    /// `abandoned_search`: a search with nothing after it.
    Search,
    /// `abandoned_category`: a category view and no product view.
    Category { top_n: usize, sales_window_ms: Time },
}

/// One session campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionCampaign {
    pub name: String,
    pub delay_ms: Time,
    pub session_gap_ms: Time,
    pub rule: SessionRule,
}

impl SessionCampaign {
    fn kind(&self) -> &'static str {
        match self.rule {
            SessionRule::Browse { .. } => "abandoned_browse",
            SessionRule::Search => "abandoned_search",
            SessionRule::Category { .. } => "abandoned_category",
        }
    }

    /// The campaign's condition on the last session (in application
    /// order), for the user's latest activity at `last`.
    fn evaluate(
        &self,
        user: &str,
        last: Time,
        session: &[&(&At, &ActKind)],
    ) -> Option<(Candidate, Lookup)> {
        let id = [user, &last.to_string()];
        let kinds: Vec<&ActKind> = session.iter().map(|(_, k)| *k).collect();
        match &self.rule {
            SessionRule::Browse { max_items } => {
                let items = super::abandoned_browse::items(&kinds, *max_items)?;
                Some((
                    Candidate::new(&self.name, self.kind(), &id, items),
                    Lookup::Enrich,
                ))
            }
            SessionRule::Search => {
                let query = super::abandoned_search::query(&kinds)?;
                let c = Candidate {
                    query: Some(query),
                    ..Candidate::new(&self.name, self.kind(), &id, Vec::new())
                };
                Some((c, Lookup::Enrich))
            }
            SessionRule::Category {
                top_n,
                sales_window_ms,
            } => {
                let category = super::abandoned_category::category(&kinds)?;
                let c = Candidate {
                    category_id: Some(category.clone()),
                    ..Candidate::new(&self.name, self.kind(), &id, Vec::new())
                };
                Some((
                    c,
                    Lookup::BestSellers {
                        category,
                        top_n: *top_n,
                        window_ms: *sales_window_ms,
                    },
                ))
            }
        }
    }
}

/// Fires every session campaign: at the first time `τ >= L + delay` at
/// which, on the state known at `τ`, `L` is still the user's latest
/// activity and the campaign's rule holds on the session containing it.
/// *id*: `(u, L)`.
pub fn session_kinds<'s>(
    campaigns: Vec<SessionCampaign>,
    clock: Clock,
    activity: Coll<'s, (User, (At, ActKind))>,
) -> Coll<'s, Request> {
    let mut delays: Vec<Time> = campaigns.iter().map(|c| c.delay_ms).collect();
    delays.sort_unstable();
    delays.dedup();
    let timer_delays = delays.clone();
    keyed_timers(
        activity,
        None::<Coll<'s, ()>>,
        "Session kinds",
        clock,
        // One timer per activity and delay: `L + delay`.
        move |(at, _): &(At, ActKind), due: &mut Vec<Time>| {
            due.extend(timer_delays.iter().map(|d| at.ts().saturating_add(*d)));
        },
        (),
        |_, _, _| {},
        move |user, input, _, recent, output| {
            session_firings(&campaigns, &delays, clock, user, input, recent, output)
        },
    )
}

/// The session campaigns' firings in bucket `recent`, from the user's
/// activity in application order: every activity's timer due by then is
/// tried (see [`timer_firings`]).
fn session_firings(
    campaigns: &[SessionCampaign],
    delays: &[Time],
    clock: Clock,
    user: &User,
    input: &[((At, ActKind), isize)],
    recent: Time,
    output: &mut Vec<Request>,
) {
    let acts: Vec<(&At, &ActKind)> = input.iter().map(|((at, kind), _)| (at, kind)).collect();
    // Timers present in `recent`, one per (delay, activity time).
    let mut due: Vec<(Time, Time)> = Vec::new();
    for &delay in delays {
        for (at, _) in &acts {
            if clock.at(at.ts().saturating_add(delay)) <= recent {
                due.push((delay, at.ts()));
            }
        }
    }
    due.sort_unstable();
    due.dedup();
    let known: Vec<(Time, Time)> = acts.iter().map(|(at, _)| (at.ts(), at.known)).collect();
    let ev = Evaluated {
        recent,
        late_now: known.iter().any(|&(ts, k)| k >= recent && k > ts),
    };
    {
        let mut found = Vec::new();
        for c in campaigns {
            let mine: Vec<(Time, Time)> = due
                .iter()
                .filter(|(d, _)| *d == c.delay_ms)
                .map(|(d, ts)| (ts.saturating_add(*d), *ts))
                .collect();
            timer_firings(
                ev,
                &known,
                &mine,
                |&last, tau| {
                    let visible: Vec<&(&At, &ActKind)> =
                        acts.iter().filter(|(at, _)| at.visible(tau)).collect();
                    match visible.last().map(|(at, _)| at.ts()) {
                        Some(l) if l > last => return Step::Stop,
                        Some(l) if l == last => {}
                        _ => return Step::Retry,
                    }
                    let mut start = visible.len() - 1;
                    while start > 0
                        && visible[start].0.ts() - visible[start - 1].0.ts() < c.session_gap_ms
                    {
                        start -= 1;
                    }
                    match c.evaluate(user, last, &visible[start..]) {
                        Some(found) => Step::Fire(found),
                        None => Step::Retry,
                    }
                },
                &mut found,
            );
        }
        for (tau, (cand, lookup)) in found {
            output.push((user.clone(), (tau, cand, lookup)));
        }
    }
}
