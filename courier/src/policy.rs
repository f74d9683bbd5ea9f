//! The pure policy engine: trigger + profile + history + now -> Decision.
//! No I/O, no clock: everything it needs is passed in.

use crate::config::{CampaignPolicy, ChannelKind, QuietAction};
use crate::model::{Profile, Trigger, Variant};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One past message (or held-out decision) of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Decision time, ms.
    pub ts: i64,
    pub campaign: String,
    /// True when the decision was `held_out` (counts for re-eligibility of
    /// its campaign, not for the frequency cap or the minimum gap).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_out: bool,
}

/// A user's recent decisions, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History(pub Vec<HistoryEntry>);

impl History {
    pub fn push(&mut self, e: HistoryEntry) {
        self.0.push(e);
    }
    /// Drops entries older than `now - horizon_ms`.
    pub fn trim(&mut self, now: i64, horizon_ms: i64) {
        self.0.retain(|e| e.ts > now.saturating_sub(horizon_ms));
    }
}

/// Why a trigger is suppressed (the `reason` of the receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    FrequencyCap,
    QuietHours,
    NoConsent,
    NoContact,
    Duplicate,
    Stale,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FrequencyCap => "frequency_cap",
            Reason::QuietHours => "quiet_hours",
            Reason::NoConsent => "no_consent",
            Reason::NoContact => "no_contact",
            Reason::Duplicate => "duplicate",
            Reason::Stale => "stale",
        }
    }
}

/// What to do with one trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send now on this channel.
    Send {
        channel: ChannelKind,
        variant: Variant,
    },
    /// Would be sent now, but the user is in the campaign's control group.
    HoldOut { channel: ChannelKind },
    /// Look at it again at `until` (ms).
    Defer { until: i64, variant: Variant },
    /// Do not send.
    Suppress {
        reason: Reason,
        /// Finer cause (`max_per_window`, `min_gap`, `reeligibility`).
        detail: Option<&'static str>,
        variant: Variant,
    },
}

/// Whether the trigger is seen for the first time or released from the
/// deferred queue (staleness is judged on arrival only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Arrival,
    Release,
}

/// Deterministic experiment arm: a hash of campaign and user compared
/// with the campaign's control share.
pub fn variant(campaign: &str, user_id: &str, control_share: f64) -> Variant {
    if control_share <= 0.0 {
        return Variant::Treatment;
    }
    if control_share >= 1.0 {
        return Variant::Control;
    }
    let mut h = Sha256::new();
    h.update(campaign.as_bytes());
    h.update([0x1f]);
    h.update(user_id.as_bytes());
    let d = h.finalize();
    let x = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    let threshold = (control_share * 18_446_744_073_709_551_616.0) as u128;
    if (x as u128) < threshold {
        Variant::Control
    } else {
        Variant::Treatment
    }
}

/// If `now_ms` falls in quiet hours (`start`..`end` minutes of the local
/// day in `tz`, wrapping midnight when start > end), the first allowed
/// instant after it.
pub fn quiet_until(now_ms: i64, tz: &TimeZone, (start, end): (u16, u16)) -> Option<i64> {
    if start == end {
        return None;
    }
    let ts = jiff::Timestamp::from_millisecond(now_ms).ok()?;
    let z = ts.to_zoned(tz.clone());
    let tod = z.hour() as u16 * 60 + z.minute() as u16;
    let date = z.date();
    let end_date = if start < end {
        if tod >= start && tod < end {
            date
        } else {
            return None;
        }
    } else if tod >= start {
        date.tomorrow().ok()?
    } else if tod < end {
        date
    } else {
        return None;
    };
    let dt = end_date.at((end / 60) as i8, (end % 60) as i8, 0, 0);
    let until = dt.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
    // A DST jump could in theory place the local end before now.
    Some(until.max(now_ms + 1))
}

/// First channel (in campaign order) with consent and an address. The
/// webhook is the operator's own endpoint and needs neither.
pub fn choose_channel(
    channels: &[ChannelKind],
    profile: Option<&Profile>,
) -> Result<ChannelKind, Reason> {
    let mut consent_seen = false;
    for &c in channels {
        if c == ChannelKind::Webhook {
            return Ok(c);
        }
        let Some(p) = profile else { continue };
        let (consent, has_address) = match c {
            ChannelKind::Push => (
                p.consent.push,
                p.push_tokens.iter().any(|t| !t.token.is_empty()),
            ),
            ChannelKind::Email => (
                p.consent.email,
                p.email.as_deref().is_some_and(|e| !e.is_empty()),
            ),
            ChannelKind::Sms => (
                p.consent.sms,
                p.phone.as_deref().is_some_and(|e| !e.is_empty()),
            ),
            ChannelKind::Webhook => unreachable!(),
        };
        if consent == Some(true) {
            consent_seen = true;
            if has_address {
                return Ok(c);
            }
        }
    }
    Err(if consent_seen {
        Reason::NoContact
    } else {
        Reason::NoConsent
    })
}

/// Frequency cap, minimum gap and re-eligibility.
pub fn check_caps(
    policy: &CampaignPolicy,
    history: &History,
    now: i64,
) -> Result<(), &'static str> {
    if history
        .0
        .iter()
        .any(|e| e.campaign == policy.name && now - e.ts < policy.reeligible_after_ms)
    {
        return Err("reeligibility");
    }
    let sent = || history.0.iter().filter(|e| !e.held_out);
    let in_window = sent().filter(|e| now - e.ts < policy.cap_window_ms).count();
    if in_window >= policy.max_messages_per_window as usize {
        return Err("max_per_window");
    }
    if let Some(last) = sent().map(|e| e.ts).max() {
        if now - last < policy.min_gap_ms {
            return Err("min_gap");
        }
    }
    Ok(())
}

/// The policy decision for one trigger of a configured campaign.
pub fn decide(
    trigger: &Trigger,
    profile: Option<&Profile>,
    history: &History,
    now: i64,
    policy: &CampaignPolicy,
    tz: &TimeZone,
    mode: Mode,
) -> Decision {
    let variant = variant(&policy.name, &trigger.user_id, policy.control_share);
    let suppress = |reason, detail| Decision::Suppress {
        reason,
        detail,
        variant,
    };
    if mode == Mode::Arrival && now - trigger.ts > policy.max_age_ms {
        return suppress(Reason::Stale, None);
    }
    let channel = match choose_channel(&policy.channels, profile) {
        Ok(c) => c,
        Err(r) => return suppress(r, None),
    };
    if let Err(detail) = check_caps(policy, history, now) {
        return suppress(Reason::FrequencyCap, Some(detail));
    }
    if let Some(q) = policy.quiet_hours {
        if let Some(until) = quiet_until(now, tz, q) {
            return match policy.on_quiet_hours {
                QuietAction::Defer => Decision::Defer { until, variant },
                QuietAction::Suppress => suppress(Reason::QuietHours, None),
            };
        }
    }
    match variant {
        Variant::Control => Decision::HoldOut { channel },
        Variant::Treatment => Decision::Send { channel, variant },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Consent, PushToken};

    const H: i64 = 3_600_000;
    // 2024-01-15T12:00:00Z, a Monday.
    const NOON_UTC: i64 = 1_705_320_000_000;

    fn policy() -> CampaignPolicy {
        CampaignPolicy {
            name: "cart".into(),
            priority: 0,
            quiet_hours: Some((22 * 60, 9 * 60)),
            on_quiet_hours: QuietAction::Defer,
            max_messages_per_window: 3,
            cap_window_ms: 24 * H,
            min_gap_ms: 9 * H,
            reeligible_after_ms: 7 * 24 * H,
            control_share: 0.0,
            max_age_ms: 12 * H,
            channels: vec![ChannelKind::Push, ChannelKind::Email],
        }
    }

    fn trigger(ts: i64) -> Trigger {
        Trigger {
            trigger_id: "t1".into(),
            campaign: "cart".into(),
            kind: "abandoned_cart".into(),
            user_id: "u1".into(),
            ts,
            items: vec![],
            query: None,
            category_id: None,
            order_id: None,
            language: None,
            timezone: None,
            audience: None,
            reminder: None,
        }
    }

    fn profile() -> Profile {
        Profile {
            user_id: "u1".into(),
            email: Some("a@b.c".into()),
            push_tokens: vec![PushToken {
                platform: None,
                token: "tok".into(),
            }],
            consent: Consent {
                push: Some(true),
                email: Some(true),
                sms: None,
            },
            ..Default::default()
        }
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn d(
        t: &Trigger,
        p: Option<&Profile>,
        h: &History,
        now: i64,
        pol: &CampaignPolicy,
    ) -> Decision {
        decide(t, p, h, now, pol, &utc(), Mode::Arrival)
    }

    #[test]
    fn sends_on_first_channel_with_consent_and_address() {
        let p = profile();
        let got = d(
            &trigger(NOON_UTC),
            Some(&p),
            &History::default(),
            NOON_UTC,
            &policy(),
        );
        assert_eq!(
            got,
            Decision::Send {
                channel: ChannelKind::Push,
                variant: Variant::Treatment
            }
        );
        let mut p2 = p.clone();
        p2.consent.push = Some(false);
        let got = d(
            &trigger(NOON_UTC),
            Some(&p2),
            &History::default(),
            NOON_UTC,
            &policy(),
        );
        assert!(matches!(
            got,
            Decision::Send {
                channel: ChannelKind::Email,
                ..
            }
        ));
    }

    #[test]
    fn consent_and_contact() {
        let mut p = profile();
        p.consent = Consent::default();
        let got = d(
            &trigger(NOON_UTC),
            Some(&p),
            &History::default(),
            NOON_UTC,
            &policy(),
        );
        assert!(matches!(
            got,
            Decision::Suppress {
                reason: Reason::NoConsent,
                ..
            }
        ));
        let got = d(
            &trigger(NOON_UTC),
            None,
            &History::default(),
            NOON_UTC,
            &policy(),
        );
        assert!(matches!(
            got,
            Decision::Suppress {
                reason: Reason::NoConsent,
                ..
            }
        ));
        let mut p = profile();
        p.push_tokens.clear();
        p.email = None;
        let got = d(
            &trigger(NOON_UTC),
            Some(&p),
            &History::default(),
            NOON_UTC,
            &policy(),
        );
        assert!(matches!(
            got,
            Decision::Suppress {
                reason: Reason::NoContact,
                ..
            }
        ));
        // sms has an address but no consent: still not used.
        let mut p = profile();
        p.consent = Consent::default();
        p.phone = Some("+994".into());
        let mut pol = policy();
        pol.channels = vec![ChannelKind::Sms];
        let got = d(
            &trigger(NOON_UTC),
            Some(&p),
            &History::default(),
            NOON_UTC,
            &pol,
        );
        assert!(matches!(
            got,
            Decision::Suppress {
                reason: Reason::NoConsent,
                ..
            }
        ));
        // webhook needs neither.
        pol.channels = vec![ChannelKind::Sms, ChannelKind::Webhook];
        let got = d(
            &trigger(NOON_UTC),
            None,
            &History::default(),
            NOON_UTC,
            &pol,
        );
        assert!(matches!(
            got,
            Decision::Send {
                channel: ChannelKind::Webhook,
                ..
            }
        ));
    }

    #[test]
    fn quiet_hours_defer_to_the_local_morning() {
        let p = profile();
        // 23:00 UTC -> next day 09:00 UTC.
        let now = NOON_UTC + 11 * H;
        let got = d(&trigger(now), Some(&p), &History::default(), now, &policy());
        assert_eq!(
            got,
            Decision::Defer {
                until: NOON_UTC + 21 * H,
                variant: Variant::Treatment
            }
        );
        // 03:00 UTC -> same day 09:00.
        let now = NOON_UTC - 9 * H;
        let got = d(&trigger(now), Some(&p), &History::default(), now, &policy());
        assert!(matches!(got, Decision::Defer { until, .. } if until == NOON_UTC - 3 * H));
        // In Asia/Baku (UTC+4), 19:00 UTC is 23:00 local -> 05:00 UTC.
        let baku = TimeZone::get("Asia/Baku").unwrap();
        let now = NOON_UTC + 7 * H;
        let got = decide(
            &trigger(now),
            Some(&p),
            &History::default(),
            now,
            &policy(),
            &baku,
            Mode::Arrival,
        );
        assert!(matches!(got, Decision::Defer { until, .. } if until == NOON_UTC + 17 * H));
        // At 09:00 sharp it is allowed.
        let now = NOON_UTC - 3 * H;
        assert!(matches!(
            d(&trigger(now), Some(&p), &History::default(), now, &policy()),
            Decision::Send { .. }
        ));
        // suppress mode
        let mut pol = policy();
        pol.on_quiet_hours = QuietAction::Suppress;
        let now = NOON_UTC + 11 * H;
        assert!(matches!(
            d(&trigger(now), Some(&p), &History::default(), now, &pol),
            Decision::Suppress {
                reason: Reason::QuietHours,
                ..
            }
        ));
        // non-wrapping window 13:00-14:00
        assert_eq!(
            quiet_until(NOON_UTC + H, &utc(), (13 * 60, 14 * 60)),
            Some(NOON_UTC + 2 * H)
        );
        assert_eq!(quiet_until(NOON_UTC, &utc(), (13 * 60, 14 * 60)), None);
        assert_eq!(quiet_until(NOON_UTC, &utc(), (600, 600)), None);
    }

    #[test]
    fn staleness_on_arrival_only() {
        let p = profile();
        let now = NOON_UTC;
        let t = trigger(now - 13 * H);
        assert!(matches!(
            d(&t, Some(&p), &History::default(), now, &policy()),
            Decision::Suppress {
                reason: Reason::Stale,
                ..
            }
        ));
        let got = decide(
            &t,
            Some(&p),
            &History::default(),
            now,
            &policy(),
            &utc(),
            Mode::Release,
        );
        assert!(matches!(got, Decision::Send { .. }));
    }

    fn hist(entries: &[(i64, &str, bool)]) -> History {
        History(
            entries
                .iter()
                .map(|(ts, c, h)| HistoryEntry {
                    ts: *ts,
                    campaign: c.to_string(),
                    held_out: *h,
                })
                .collect(),
        )
    }

    #[test]
    fn frequency_cap_min_gap_and_reeligibility() {
        let p = profile();
        let now = NOON_UTC;
        let cap = |h: &History, pol: &CampaignPolicy| match d(&trigger(now), Some(&p), h, now, pol)
        {
            Decision::Suppress {
                reason: Reason::FrequencyCap,
                detail,
                ..
            } => detail,
            _ => None,
        };
        // min gap: 8 h ago another campaign.
        assert_eq!(
            cap(&hist(&[(now - 8 * H, "other", false)]), &policy()),
            Some("min_gap")
        );
        assert_eq!(
            cap(&hist(&[(now - 10 * H, "other", false)]), &policy()),
            None
        );
        // held-out decisions do not count for the gap
        assert_eq!(cap(&hist(&[(now - H, "other", true)]), &policy()), None);
        // window cap with gap 0
        let mut pol = policy();
        pol.min_gap_ms = 0;
        let three = hist(&[
            (now - 3 * H, "a", false),
            (now - 2 * H, "b", false),
            (now - H, "c", false),
        ]);
        assert_eq!(cap(&three, &pol), Some("max_per_window"));
        let old = hist(&[
            (now - 25 * H, "a", false),
            (now - 2 * H, "b", false),
            (now - H, "c", false),
        ]);
        assert_eq!(cap(&old, &pol), None);
        // re-eligibility: same campaign 6 days ago, held out or not
        assert_eq!(
            cap(&hist(&[(now - 6 * 24 * H, "cart", true)]), &pol),
            Some("reeligibility")
        );
        assert_eq!(cap(&hist(&[(now - 8 * 24 * H, "cart", false)]), &pol), None);
    }

    #[test]
    fn control_group_is_deterministic_and_sized() {
        let n = 20_000;
        let control = (0..n)
            .filter(|i| variant("cart", &format!("user-{i}"), 0.1) == Variant::Control)
            .count();
        assert!((1_700..2_300).contains(&control), "{control}");
        let half = (0..n)
            .filter(|i| variant("cart", &format!("user-{i}"), 0.5) == Variant::Control)
            .count();
        assert!((9_500..10_500).contains(&half), "{half}");
        assert_eq!(variant("cart", "u1", 0.5), variant("cart", "u1", 0.5));
        assert_eq!(variant("cart", "u1", 0.0), Variant::Treatment);
        assert_eq!(variant("cart", "u1", 1.0), Variant::Control);
        // held out rather than sent
        let mut pol = policy();
        pol.control_share = 1.0;
        let p = profile();
        assert_eq!(
            d(
                &trigger(NOON_UTC),
                Some(&p),
                &History::default(),
                NOON_UTC,
                &pol
            ),
            Decision::HoldOut {
                channel: ChannelKind::Push
            }
        );
    }
}
