//! The last step before emission: drops candidates of users who are opted
//! out at the firing time and attaches the user's language and timezone as
//! known at that time.

use std::collections::{BTreeMap, HashMap};

use crate::campaign::Filters;

use crate::model::{Channel, Str, Time};
use crate::operators::{evaluate_with_facts, Candidate, Coll, Ready};
use crate::state::{At, User, UserFact};

/// Opted out at `τ`: on the facts known at `τ`, in application order, the
/// latest `consent` of every channel says `granted: false`, or a `forget`
/// came (final). Opt-out suppresses a candidate that fires while it holds;
/// it does not postpone it.
fn opted_out<'a>(facts: impl Iterator<Item = (&'a At, &'a UserFact)>) -> bool {
    let mut state = [None::<bool>; 3];
    for (_, f) in facts {
        match f {
            UserFact::Forget => return true,
            UserFact::Consent { channel, granted } => {
                let i = match channel {
                    Channel::Push => 0,
                    Channel::Email => 1,
                    Channel::Sms => 2,
                };
                state[i] = Some(*granted);
            }
            UserFact::Context { .. } | UserFact::Active | UserFact::Ordered => {}
        }
    }
    state.iter().all(|s| *s == Some(false))
}

/// Whether `cand` passes its campaign's `filters` at `τ`, on the user's
/// facts known then and their `language` at `τ`.
fn passes<'a>(
    filters: &Filters,
    tau: Time,
    cand: &Candidate,
    language: Option<&Str>,
    mut facts: impl Iterator<Item = (&'a At, &'a UserFact)> + Clone,
) -> bool {
    let within = |n: Time, at: &At| at.ts() <= tau && at.ts().saturating_add(n) >= tau;
    if let Some(langs) = &filters.languages {
        if !language.is_some_and(|l| langs.iter().any(|x| x == l)) {
            return false;
        }
    }
    if let Some(n) = filters.active_within_ms {
        if !facts
            .clone()
            .any(|(at, f)| *f == UserFact::Active && within(n, at))
        {
            return false;
        }
    }
    if let Some(n) = filters.no_order_within_ms {
        if facts.any(|(at, f)| *f == UserFact::Ordered && within(n, at)) {
            return false;
        }
    }
    if let Some(min) = filters.min_cart_value {
        let value: f64 = cand
            .items
            .iter()
            .map(|i| i.quantity.unwrap_or(1) as f64 * i.price.map_or(0.0, |p| p.0))
            .sum();
        if value < min {
            return false;
        }
    }
    true
}

/// Candidates that may fire, with the user's language and timezone at `τ`:
/// each candidate insertion is evaluated once against the user's facts known
/// at its `τ` (the emitter ignores repeats of an id): opt-out, then the
/// campaign's filters (by campaign name).
pub fn gate<'s>(
    candidates: Coll<'s, (User, (Time, Candidate))>,
    facts: Coll<'s, (User, (At, UserFact))>,
    filters: HashMap<String, Filters>,
) -> Coll<'s, Ready> {
    evaluate_with_facts(
        candidates,
        facts,
        "Gate: opt-out, filters, language, timezone",
        move |user: &User,
              (tau, cand): (Time, Candidate),
              facts: &BTreeMap<(At, UserFact), isize>,
              out: &mut Vec<Ready>| {
            let visible = || {
                facts
                    .keys()
                    .filter(move |(at, _)| at.visible(tau))
                    .map(|(at, f)| (at, f))
            };
            if opted_out(visible()) {
                return;
            }
            let mut language = None;
            let mut timezone = None;
            for (_, f) in visible() {
                if let UserFact::Context {
                    language: l,
                    timezone: t,
                } = f
                {
                    if l.is_some() {
                        language = l.clone();
                    }
                    if t.is_some() {
                        timezone = t.clone();
                    }
                }
            }
            if let Some(f) = filters.get(cand.campaign.as_str()) {
                if !passes(f, tau, &cand, language.as_ref(), visible()) {
                    return;
                }
            }
            out.push((user.clone(), (tau, cand, language, timezone)));
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Seq;

    fn at(ts: Time, id: &str) -> At {
        At {
            seq: Seq {
                ts,
                rank: 7,
                event_id: id.into(),
            },
            known: ts,
            until: Time::MAX,
        }
    }

    #[test]
    fn opted_out_needs_every_channel_or_forget() {
        let (a, b, c, d) = (at(1, "a"), at(2, "b"), at(3, "c"), at(4, "d"));
        let off = |channel| UserFact::Consent {
            channel,
            granted: false,
        };
        let push_off = off(Channel::Push);
        let email_off = off(Channel::Email);
        let sms_off = off(Channel::Sms);
        let push_on = UserFact::Consent {
            channel: Channel::Push,
            granted: true,
        };
        assert!(!opted_out([(&a, &push_off), (&b, &email_off)].into_iter()));
        assert!(opted_out(
            [(&a, &push_off), (&b, &email_off), (&c, &sms_off)].into_iter()
        ));
        assert!(!opted_out(
            [
                (&a, &push_off),
                (&b, &email_off),
                (&c, &sms_off),
                (&d, &push_on)
            ]
            .into_iter()
        ));
        assert!(opted_out(
            [(&a, &UserFact::Forget), (&d, &push_on)].into_iter()
        ));
    }
}
