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

/// `abandoned_search` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedSearch {
    /// Time after the latest activity at which the search counts as abandoned.
    pub delay_ms: Time,
    /// A gap of at least this much between two activity events starts a new session.
    pub session_gap_ms: Time,
}

/// `abandoned_category` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbandonedCategory {
    /// Time after the latest activity at which the category visit counts as abandoned.
    pub delay_ms: Time,
    /// A gap of at least this much between two activity events starts a new session.
    pub session_gap_ms: Time,
    /// At most this many best sellers in `items`.
    pub top_n: usize,
    /// Best sellers are counted over orders placed in `[T - sales_window_ms, T]`.
    pub sales_window_ms: Time,
}

/// `wishlist_reminder` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WishlistReminder {
    /// Time after each `wishlist_add` at which the reminder is due.
    pub delay_ms: Time,
}

/// `complementary` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Complementary {
    /// Time after `order_delivered` at which the recommendation is due.
    pub delay_ms: Time,
    /// Co-purchases are counted over orders placed in `[T - window_ms, T]`.
    pub window_ms: Time,
    /// At most this many recommended products.
    pub top_n: usize,
}

/// `new_in_category` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewInCategory {
    /// Users who viewed the category in `[t - window_ms, t]` (and ordered nothing then) hear of the new product.
    pub window_ms: Time,
}

/// `reactivation` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reactivation {
    /// One stage per entry: fires this long after the user's latest activity.
    pub after_ms: Vec<Time>,
}

/// `review_request` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewRequest {
    /// Time after `order_delivered` at which the first request is due.
    pub delay_ms: Time,
    /// Time after `order_delivered` at which the reminder is due; `None`: no reminder.
    pub reminder_ms: Option<Time>,
}

/// `cancelled_alternative` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelledAlternative {
    /// At most this many alternatives per cancelled item.
    pub max_items: usize,
}

/// A trigger kind with its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    AbandonedCart(AbandonedCart),
    AbandonedBrowse(AbandonedBrowse),
    PriceDrop(PriceDrop),
    BackInStock(BackInStock),
    AbandonedSearch(AbandonedSearch),
    AbandonedCategory(AbandonedCategory),
    WishlistReminder(WishlistReminder),
    Complementary(Complementary),
    NewInCategory(NewInCategory),
    Reactivation(Reactivation),
    ReviewRequest(ReviewRequest),
    CancelledAlternative(CancelledAlternative),
}

impl Kind {
    /// The kind's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::AbandonedCart(_) => "abandoned_cart",
            Kind::AbandonedBrowse(_) => "abandoned_browse",
            Kind::PriceDrop(_) => "price_drop",
            Kind::BackInStock(_) => "back_in_stock",
            Kind::AbandonedSearch(_) => "abandoned_search",
            Kind::AbandonedCategory(_) => "abandoned_category",
            Kind::WishlistReminder(_) => "wishlist_reminder",
            Kind::Complementary(_) => "complementary",
            Kind::NewInCategory(_) => "new_in_category",
            Kind::Reactivation(_) => "reactivation",
            Kind::ReviewRequest(_) => "review_request",
            Kind::CancelledAlternative(_) => "cancelled_alternative",
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
            Kind::AbandonedSearch(AbandonedSearch {
                delay_ms: HOUR_MS,
                session_gap_ms: 30 * MINUTE_MS,
            }),
            Kind::AbandonedCategory(AbandonedCategory {
                delay_ms: HOUR_MS,
                session_gap_ms: 30 * MINUTE_MS,
                top_n: 3,
                sales_window_ms: 7 * DAY_MS,
            }),
            Kind::WishlistReminder(WishlistReminder {
                delay_ms: 24 * HOUR_MS,
            }),
            Kind::Complementary(Complementary {
                delay_ms: 24 * HOUR_MS,
                window_ms: 90 * DAY_MS,
                top_n: 1,
            }),
            Kind::NewInCategory(NewInCategory {
                window_ms: 24 * HOUR_MS,
            }),
            Kind::Reactivation(Reactivation {
                after_ms: vec![30 * DAY_MS, 60 * DAY_MS, 90 * DAY_MS],
            }),
            Kind::ReviewRequest(ReviewRequest {
                delay_ms: 3 * DAY_MS,
                reminder_ms: Some(7 * DAY_MS),
            }),
            Kind::CancelledAlternative(CancelledAlternative { max_items: 3 }),
        ]
    }

    /// The default parameters of the kind called `name`.
    pub fn default_for(name: &str) -> Option<Kind> {
        Kind::defaults().into_iter().find(|k| k.name() == name)
    }
}

/// Audience filters of a campaign, evaluated in the dataflow at the
/// trigger's firing time `τ`, on the state known at `τ`. Unset filters pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Only users with activity (any tracking event but identify, consent,
    /// forget) in `[τ - active_within_ms, τ]`.
    pub active_within_ms: Option<Time>,
    /// Only users without an `order_placed` in `[τ - no_order_within_ms, τ]`.
    pub no_order_within_ms: Option<Time>,
    /// `abandoned_cart` only: the items' total (quantity x price, items
    /// without a known price count 0) is at least this.
    pub min_cart_value: Option<f64>,
    /// Only users whose language at `τ` is one of these (users without a
    /// known language are left out).
    pub languages: Option<Vec<String>>,
}

impl Filters {
    /// Whether any filter needs the user's activity times.
    pub fn needs_activity(&self) -> bool {
        self.active_within_ms.is_some()
    }
}

/// Pass-through metadata for the delivery side, copied into every record
/// of the campaign when set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Delivery priority (higher wins when the courier must choose).
    pub priority: Option<i64>,
    /// Channels the delivery side may use, in preference order.
    pub channels: Option<Vec<String>>,
    /// Template name for the delivery side.
    pub template: Option<String>,
}

/// One configured campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Unique name; it goes into every record and every `trigger_id`.
    pub name: String,
    /// What fires it.
    pub kind: Kind,
    /// Who may receive it.
    #[serde(default)]
    pub filters: Filters,
    /// What the delivery side gets along with each record.
    #[serde(default)]
    pub meta: Meta,
}

impl Campaign {
    /// A campaign of `kind` called `name`, without filters or metadata.
    pub fn new(name: impl Into<String>, kind: Kind) -> Self {
        Campaign {
            name: name.into(),
            kind,
            filters: Filters::default(),
            meta: Meta::default(),
        }
    }

    /// Every kind as one campaign named after the kind, with default parameters
    /// (what the job runs without `--config`).
    pub fn all_defaults() -> Vec<Campaign> {
        Kind::defaults()
            .into_iter()
            .map(|kind| Campaign::new(kind.name(), kind))
            .collect()
    }
}

impl Kind {
    /// The kind's durations (delays, windows, stages), in ms.
    fn durations_ms(&self) -> Vec<Time> {
        match self {
            Kind::AbandonedCart(k) => vec![k.delay_ms],
            Kind::AbandonedBrowse(k) => vec![k.delay_ms, k.session_gap_ms],
            Kind::PriceDrop(k) => vec![k.view_window_ms],
            Kind::BackInStock(_) | Kind::CancelledAlternative(_) => vec![],
            Kind::AbandonedSearch(k) => vec![k.delay_ms, k.session_gap_ms],
            Kind::AbandonedCategory(k) => vec![k.delay_ms, k.session_gap_ms, k.sales_window_ms],
            Kind::WishlistReminder(k) => vec![k.delay_ms],
            Kind::Complementary(k) => vec![k.delay_ms, k.window_ms],
            Kind::NewInCategory(k) => vec![k.window_ms],
            Kind::Reactivation(k) => k.after_ms.clone(),
            Kind::ReviewRequest(k) => vec![k.delay_ms, k.reminder_ms.unwrap_or(0)],
        }
    }
}

/// How far back in event time the input can still matter at a time `τ`:
/// no trigger at or after `τ` depends on an input record whose `ts` is
/// before `τ - lookback`, except the facts kept for good (consent, forget,
/// and each product's latest price, stock and catalog record, which the
/// live job's checkpoints keep by themselves).
///
/// A bound, not an exact figure: the longest retention plus the longest
/// duration of any campaign (delay, window, stage or filter), which covers
/// state that outlives its retention by a duration (reactivation keeps the
/// latest activity for its stages, then `activity_ms`).
pub fn lookback_ms(campaigns: &[Campaign], retention: &Retention) -> Time {
    let kept = [
        retention.activity_ms,
        retention.cart_ms,
        retention.identity_ms,
        retention.dedup_ms,
        retention.fired_ms,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let longest = campaigns
        .iter()
        .flat_map(|c| {
            let mut d = c.kind.durations_ms();
            d.extend(c.filters.active_within_ms);
            d.extend(c.filters.no_order_within_ms);
            d
        })
        .max()
        .unwrap_or(0);
    kept.saturating_add(longest)
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
