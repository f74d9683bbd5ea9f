//! The last step before emission: drops candidates of users who are opted
//! out at the firing time and attaches the user's language and timezone as
//! known at that time.

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Time};
use crate::operators::{Candidate, Coll, Ready};
use crate::state::{At, User, UserFact};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum GateIn {
    Fact(At, UserFact),
    Candidate(Time, Candidate),
}

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
            UserFact::Context { .. } => {}
        }
    }
    state.iter().all(|s| *s == Some(false))
}

/// Candidates that may fire, with the user's language and timezone at `τ`.
pub fn gate<'s>(
    candidates: Coll<'s, (User, (Time, Candidate))>,
    facts: Coll<'s, (User, (At, UserFact))>,
) -> Coll<'s, Ready> {
    facts
        .map(|(u, (at, f))| (u, GateIn::Fact(at, f)))
        .concat(candidates.map(|(u, (tau, c))| (u, GateIn::Candidate(tau, c))))
        .reduce_named(
            "Gate: opt-out, language, timezone",
            |_user, input, output| {
                let facts: Vec<(&At, &UserFact)> = input
                    .iter()
                    .filter_map(|(x, _)| match x {
                        GateIn::Fact(at, f) => Some((at, f)),
                        GateIn::Candidate(..) => None,
                    })
                    .collect();
                for (x, _) in input {
                    let GateIn::Candidate(tau, cand) = x else {
                        continue;
                    };
                    let visible = || facts.iter().copied().filter(|(at, _)| at.known <= *tau);
                    if opted_out(visible()) {
                        continue;
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
                    output.push(((*tau, cand.clone(), language, timezone), 1));
                }
            },
        )
}
