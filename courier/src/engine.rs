//! Batch decisions: parses trigger records, applies deduplication and the
//! policy engine, renders content, and produces the batch's receipts, its
//! store writes and its sends. No network I/O here.

use crate::channels::{Destination, OutboxEntry};
use crate::config::{CampaignPolicy, ChannelKind, Config};
use crate::model::{Profile, Receipt, Status, Trigger, Variant};
use crate::policy::{self, Decision, History, HistoryEntry, Mode};
use crate::store::{serialize, LedgerStatus, Reader, Store, StoreError, WriteSet};
use crate::telemetry::{DecisionEvent, MalformedRecord, Metrics};
use crate::template::Templates;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A trigger waiting in the deferred queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredEntry {
    pub trigger: Trigger,
    /// When the trigger was first decided (deferred), ms.
    pub first_seen_ms: i64,
}

/// One input of a batch.
#[derive(Debug, Clone)]
pub enum Input {
    /// A record of `triggers`.
    Record {
        partition: i32,
        offset: i64,
        key: Option<String>,
        payload: Option<Vec<u8>>,
    },
    /// A deferred trigger that is due.
    Release {
        until: i64,
        entry: Box<DeferredEntry>,
    },
}

/// Everything one batch decided.
#[derive(Debug, Default)]
pub struct Batch {
    /// Receipts to publish before the store commit (all but sends).
    pub receipts: Vec<Receipt>,
    pub writes: WriteSet,
    /// Sends to hand to the channels after the store commit.
    pub sends: Vec<OutboxEntry>,
}

/// The decision engine with its compiled configuration.
pub struct Engine {
    policies: HashMap<String, CampaignPolicy>,
    templates: Templates,
    default_tz: TimeZone,
    tz_cache: HashMap<String, Option<TimeZone>>,
    horizon_ms: i64,
    metrics: Metrics,
    topic: String,
    /// Writes of the batch being committed while the next one is decided
    /// (see [`crate::runner::Pipeline`]).
    overlay: Overlay,
}

/// Decisions of a batch whose store commit may still be in flight.
#[derive(Debug, Default)]
struct Overlay {
    ledger: HashSet<String>,
    history: HashMap<String, History>,
}

struct Cand {
    trigger: Trigger,
    release: Option<i64>,
    first_seen: i64,
    priority: i32,
}

impl Engine {
    pub fn new(
        cfg: &Config,
        metrics: Metrics,
        topic: &str,
    ) -> Result<Engine, crate::config::ConfigError> {
        let policies = cfg
            .campaigns
            .keys()
            .filter_map(|n| cfg.policy(n).map(|p| (n.clone(), p)))
            .collect();
        let default_tz = TimeZone::get(&cfg.defaults.default_timezone).map_err(|e| {
            crate::config::ConfigError::Field {
                field: "defaults.default_timezone".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Engine {
            policies,
            templates: Templates::new(cfg)?,
            default_tz,
            tz_cache: HashMap::new(),
            horizon_ms: cfg.history_horizon_ms(),
            metrics,
            topic: topic.to_string(),
            overlay: Overlay::default(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Makes `batch`'s decisions visible to the next `decide_batch` before
    /// they are committed (replaces the previous overlay, which must be
    /// committed by then).
    pub fn set_overlay(&mut self, batch: &Batch) {
        self.overlay = Overlay {
            ledger: batch
                .writes
                .ledger
                .iter()
                .map(|(id, ..)| id.clone())
                .collect(),
            history: batch.writes.history.clone(),
        };
    }

    /// Forgets the overlay (its batch is committed).
    pub fn clear_overlay(&mut self) {
        self.overlay = Overlay::default();
    }

    fn tz(&mut self, name: Option<&str>) -> Option<TimeZone> {
        let name = name?;
        if let Some(t) = self.tz_cache.get(name) {
            return t.clone();
        }
        let t = TimeZone::get(name).ok();
        if self.tz_cache.len() < 4096 {
            self.tz_cache.insert(name.to_string(), t.clone());
        }
        t
    }

    fn campaign_label<'a>(&self, c: &'a str) -> &'a str {
        if self.policies.contains_key(c) {
            c
        } else {
            "unknown"
        }
    }

    /// Decides one batch at time `now` against the store's current state.
    pub fn decide_batch(
        &mut self,
        store: &Store,
        inputs: Vec<Input>,
        now: i64,
    ) -> Result<Batch, StoreError> {
        let reader = store.reader()?;
        let mut batch = Batch::default();
        let mut cands = Vec::with_capacity(inputs.len());
        let mut seen: HashSet<String> = HashSet::new();
        for input in inputs {
            match input {
                Input::Record {
                    partition,
                    offset,
                    key,
                    payload,
                } => {
                    let payload = payload.unwrap_or_default();
                    match Trigger::parse(&payload) {
                        Ok(t) => {
                            if self.overlay.ledger.contains(&t.trigger_id)
                                || reader.ledger(&t.trigger_id, t.ts)?.is_some()
                                || !seen.insert(t.trigger_id.clone())
                            {
                                let v = self.variant_of(&t);
                                self.record(
                                    &mut batch,
                                    &t,
                                    now,
                                    Status::Suppressed,
                                    v,
                                    None,
                                    Some("duplicate"),
                                    None,
                                    None,
                                );
                                continue;
                            }
                            let priority = self
                                .policies
                                .get(&t.campaign)
                                .map_or(i32::MIN, |p| p.priority);
                            cands.push(Cand {
                                trigger: t,
                                release: None,
                                first_seen: now,
                                priority,
                            });
                        }
                        Err(e) => {
                            let err = e.to_string();
                            MalformedRecord {
                                topic: &self.topic,
                                partition,
                                offset,
                                error: &err,
                            }
                            .emit(&self.metrics);
                            let s = Trigger::salvage(&payload);
                            let trigger_id = s.trigger_id.unwrap_or_else(|| {
                                format!("malformed:{}:{partition}:{offset}", self.topic)
                            });
                            let campaign = s.campaign.unwrap_or_default();
                            let r = Receipt {
                                trigger_id,
                                user_id: s.user_id.or(key).unwrap_or_default(),
                                ts: now,
                                status: Status::Failed,
                                channel: None,
                                reason: Some("malformed".into()),
                                until: None,
                                variant: Variant::Treatment,
                                detail: Some(truncate(&err, 200)),
                                attempts: None,
                                campaign,
                            };
                            DecisionEvent {
                                trigger_id: &r.trigger_id,
                                campaign: self.campaign_label(&r.campaign),
                                status: "failed",
                                reason: Some("malformed"),
                                channel: None,
                            }
                            .emit(&self.metrics);
                            batch.receipts.push(r);
                        }
                    }
                }
                Input::Release { until, entry } => {
                    let priority = self
                        .policies
                        .get(&entry.trigger.campaign)
                        .map_or(i32::MIN, |p| p.priority);
                    seen.insert(entry.trigger.trigger_id.clone());
                    let entry = *entry;
                    cands.push(Cand {
                        trigger: entry.trigger,
                        release: Some(until),
                        first_seen: entry.first_seen_ms,
                        priority,
                    });
                }
            }
        }
        // Competing triggers of one user: higher priority first.
        cands.sort_by(|a, b| {
            (
                a.trigger.user_id.as_str(),
                std::cmp::Reverse(a.priority),
                a.trigger.ts,
                a.trigger.trigger_id.as_str(),
            )
                .cmp(&(
                    b.trigger.user_id.as_str(),
                    std::cmp::Reverse(b.priority),
                    b.trigger.ts,
                    b.trigger.trigger_id.as_str(),
                ))
        });
        let mut histories: HashMap<String, (History, bool)> = HashMap::new();
        let mut profiles: HashMap<String, Option<Profile>> = HashMap::new();
        for c in cands {
            self.decide_one(&reader, &mut batch, &mut histories, &mut profiles, c, now)?;
        }
        // Only histories that changed are written.
        for (user, (mut h, dirty)) in histories {
            if dirty {
                h.trim(now, self.horizon_ms);
                batch.writes.history.insert(user, h);
            }
        }
        Ok(batch)
    }

    fn variant_of(&self, t: &Trigger) -> Variant {
        match self.policies.get(&t.campaign) {
            Some(p) => policy::variant(&p.name, &t.user_id, p.control_share),
            None => Variant::Treatment,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        batch: &mut Batch,
        t: &Trigger,
        now: i64,
        status: Status,
        variant: Variant,
        channel: Option<&str>,
        reason: Option<&str>,
        until: Option<i64>,
        detail: Option<&str>,
    ) {
        DecisionEvent {
            trigger_id: &t.trigger_id,
            campaign: self.campaign_label(&t.campaign),
            status: status.as_str(),
            reason,
            channel,
        }
        .emit(&self.metrics);
        batch.receipts.push(Receipt {
            trigger_id: t.trigger_id.clone(),
            campaign: t.campaign.clone(),
            user_id: t.user_id.clone(),
            ts: now,
            status,
            channel: channel.map(str::to_owned),
            reason: reason.map(str::to_owned),
            until,
            variant,
            detail: detail.map(str::to_owned),
            attempts: None,
        });
    }

    fn decide_one(
        &mut self,
        reader: &Reader,
        batch: &mut Batch,
        histories: &mut HashMap<String, (History, bool)>,
        profiles: &mut HashMap<String, Option<Profile>>,
        c: Cand,
        now: i64,
    ) -> Result<(), StoreError> {
        let t = &c.trigger;
        let id = t.trigger_id.clone();
        if let Some(until) = c.release {
            batch.writes.deferred_del.push((until, id.clone()));
        }
        let Some(pol) = self.policies.get(&t.campaign).cloned() else {
            self.record(
                batch,
                t,
                now,
                Status::Failed,
                Variant::Treatment,
                None,
                Some("unknown_campaign"),
                None,
                None,
            );
            batch
                .writes
                .ledger
                .push((id, t.ts, LedgerStatus::Failed, now));
            return Ok(());
        };
        if !profiles.contains_key(&t.user_id) {
            profiles.insert(t.user_id.clone(), reader.profile(&t.user_id)?);
        }
        if !histories.contains_key(&t.user_id) {
            let h = match self.overlay.history.get(&t.user_id) {
                Some(h) => h.clone(),
                None => reader.history(&t.user_id)?,
            };
            histories.insert(t.user_id.clone(), (h, false));
        }
        let profile = profiles.get(&t.user_id).and_then(|p| p.as_ref());
        let tz_name = profile.and_then(|p| p.timezone.clone());
        let tz = self
            .tz(tz_name.as_deref())
            .or_else(|| self.tz(t.timezone.as_deref()))
            .unwrap_or_else(|| self.default_tz.clone());
        let profile = profiles.get(&t.user_id).and_then(|p| p.as_ref());
        let (history, dirty) = histories.get_mut(&t.user_id).expect("loaded");
        let mode = if c.release.is_some() {
            Mode::Release
        } else {
            Mode::Arrival
        };
        let decision = policy::decide(t, profile, history, now, &pol, &tz, mode);
        match decision {
            Decision::Suppress {
                reason,
                detail,
                variant,
            } => {
                self.record(
                    batch,
                    t,
                    now,
                    Status::Suppressed,
                    variant,
                    None,
                    Some(reason.as_str()),
                    None,
                    detail,
                );
                batch
                    .writes
                    .ledger
                    .push((id, t.ts, LedgerStatus::Suppressed, now));
            }
            Decision::Defer { until, variant } => {
                self.record(
                    batch,
                    t,
                    now,
                    Status::Deferred,
                    variant,
                    None,
                    Some("quiet_hours"),
                    Some(until),
                    None,
                );
                let entry = DeferredEntry {
                    trigger: c.trigger.clone(),
                    first_seen_ms: c.first_seen,
                };
                batch
                    .writes
                    .deferred_put
                    .push((until, id.clone(), serialize(&entry)?));
                batch
                    .writes
                    .ledger
                    .push((id, t.ts, LedgerStatus::Deferred, now));
            }
            Decision::HoldOut { channel } => {
                *dirty = true;
                history.push(HistoryEntry {
                    ts: now,
                    campaign: pol.name.clone(),
                    held_out: true,
                });
                self.record(
                    batch,
                    t,
                    now,
                    Status::HeldOut,
                    Variant::Control,
                    Some(channel.as_str()),
                    None,
                    None,
                    None,
                );
                batch
                    .writes
                    .ledger
                    .push((id, t.ts, LedgerStatus::HeldOut, now));
            }
            Decision::Send { channel, variant } => {
                let profile = profile.cloned();
                let lang = profile
                    .as_ref()
                    .and_then(|p| p.language.clone())
                    .or_else(|| t.language.clone());
                match self.templates.render(t, lang.as_deref()) {
                    Err(e) => {
                        let msg = truncate(&e.to_string(), 200);
                        self.record(
                            batch,
                            t,
                            now,
                            Status::Failed,
                            variant,
                            Some(channel.as_str()),
                            Some("template"),
                            None,
                            Some(&msg),
                        );
                        batch
                            .writes
                            .ledger
                            .push((id, t.ts, LedgerStatus::Failed, now));
                    }
                    Ok(message) => {
                        *dirty = true;
                        history.push(HistoryEntry {
                            ts: now,
                            campaign: pol.name.clone(),
                            held_out: false,
                        });
                        let destination = destination(channel, profile.as_ref());
                        let entry = OutboxEntry {
                            trigger: c.trigger.clone(),
                            channel: channel.as_str().to_string(),
                            variant,
                            destination,
                            message,
                            decided_at: now,
                        };
                        batch
                            .writes
                            .outbox_put
                            .push((now, id.clone(), serialize(&entry)?));
                        batch
                            .writes
                            .ledger
                            .push((id, t.ts, LedgerStatus::Sending, now));
                        batch.sends.push(entry);
                    }
                }
            }
        }
        Ok(())
    }
}

fn destination(channel: ChannelKind, p: Option<&Profile>) -> Destination {
    match channel {
        ChannelKind::Webhook => Destination::Webhook,
        ChannelKind::Push => Destination::Push {
            tokens: p
                .map(|p| {
                    p.push_tokens
                        .iter()
                        .filter(|t| !t.token.is_empty())
                        .map(|t| t.token.clone())
                        .collect()
                })
                .unwrap_or_default(),
        },
        ChannelKind::Email => Destination::Email {
            address: p.and_then(|p| p.email.clone()).unwrap_or_default(),
        },
        ChannelKind::Sms => Destination::Sms {
            phone: p.and_then(|p| p.phone.clone()).unwrap_or_default(),
        },
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
