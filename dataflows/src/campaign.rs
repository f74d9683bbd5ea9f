//! Resolved campaigns: one configured use of a trigger kind, with its
//! parameters. Parsing and validation of the configuration file live in the
//! binary; this crate receives checked values.

use serde::{Deserialize, Serialize};

use crate::model::Time;

/// One minute, in ms.
pub const MINUTE_MS: Time = 60_000;
/// One hour, in ms.
pub const HOUR_MS: Time = 60 * MINUTE_MS;
/// One day, in ms.
pub const DAY_MS: Time = 24 * HOUR_MS;

/// A price-drop audience, in priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Cart,
    Wishlist,
    Viewed,
}

impl Audience {
    /// The wire name of the audience.
    pub fn name(self) -> &'static str {
        match self {
            Audience::Cart => "cart",
            Audience::Wishlist => "wishlist",
            Audience::Viewed => "viewed",
        }
    }
}

/// `abandoned_cart` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedCart {
    /// Time after the latest cart change at which the cart counts as abandoned.
    pub delay_ms: Time,
}

/// `abandoned_browse` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedBrowse {
    /// Time after the latest activity at which the browse counts as abandoned.
    pub delay_ms: Time,
    /// At most this many products in `items`.
    pub max_items: usize,
    /// A gap of at least this much between two activity events starts a new session.
    pub session_gap_ms: Time,
}

/// `price_drop` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriceDrop {
    /// The least relative drop that counts, in percent of the old price.
    pub min_drop_pct: f64,
    /// A product viewed within this window before the drop puts the viewer in the `viewed` audience.
    pub view_window_ms: Time,
    /// The audiences, in priority order.
    pub audiences: Vec<Audience>,
}

/// `back_in_stock` parameters (none today).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackInStock {}

/// A trigger kind with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    AbandonedCart(AbandonedCart),
    AbandonedBrowse(AbandonedBrowse),
    PriceDrop(PriceDrop),
    BackInStock(BackInStock),
}

impl Kind {
    /// The kind's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::AbandonedCart(_) => "abandoned_cart",
            Kind::AbandonedBrowse(_) => "abandoned_browse",
            Kind::PriceDrop(_) => "price_drop",
            Kind::BackInStock(_) => "back_in_stock",
        }
    }

    /// Every kind this version implements, with the spec's default parameters.
    pub fn defaults() -> Vec<Kind> {
        vec![
            Kind::AbandonedCart(AbandonedCart { delay_ms: HOUR_MS }),
            Kind::AbandonedBrowse(AbandonedBrowse {
                delay_ms: HOUR_MS,
                max_items: 10,
                session_gap_ms: 30 * MINUTE_MS,
            }),
            Kind::PriceDrop(PriceDrop {
                min_drop_pct: 5.0,
                view_window_ms: 30 * DAY_MS,
                audiences: vec![Audience::Cart, Audience::Wishlist, Audience::Viewed],
            }),
            Kind::BackInStock(BackInStock {}),
        ]
    }

    /// The default parameters of the kind called `name`.
    pub fn default_for(name: &str) -> Option<Kind> {
        Kind::defaults().into_iter().find(|k| k.name() == name)
    }
}

/// One configured campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Unique name; it goes into every record and every `trigger_id`.
    pub name: String,
    /// What fires it.
    pub kind: Kind,
}

impl Campaign {
    /// Every kind as one campaign named after the kind, with default parameters
    /// (what the job runs without `--config`).
    pub fn all_defaults() -> Vec<Campaign> {
        Kind::defaults()
            .into_iter()
            .map(|kind| Campaign {
                name: kind.name().to_string(),
                kind,
            })
            .collect()
    }
}

/// How long the job's state remembers facts. Every window in the job is
/// bounded by one of these, which keeps memory flat at a steady population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    /// Activity events (views, searches, app opens, ...) are forgotten this long after their `ts`.
    pub activity_ms: Time,
    /// Cart, wishlist and order events are forgotten this long after their `ts`.
    pub cart_ms: Time,
    /// `identify` links and events waiting for one are forgotten this long after their `ts`.
    pub identity_ms: Time,
    /// A repeated `event_id` is recognised within this long after the first one's `ts`.
    pub dedup_ms: Time,
    /// Fired `trigger_id`s are remembered this long, so that none fires twice.
    pub fired_ms: Time,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            activity_ms: 31 * DAY_MS,
            cart_ms: 90 * DAY_MS,
            identity_ms: 90 * DAY_MS,
            dedup_ms: 7 * DAY_MS,
            fired_ms: 90 * DAY_MS,
        }
    }
}
