//! Typed records that flow through the dataflow.
//!
//! These are the decoded forms of the payloads in `wire.md`. They are owned,
//! totally ordered and serde-serialisable, as timely's exchange and
//! differential's arrangements require. Decoding from bytes lives in the
//! binary's codec; this crate never sees JSON text on the input side.
//!
//! Their serde form is the one timely's exchanges use, and between
//! processes (`tripwire run --processes N`) that is bincode, which writes
//! every field in order and cannot skip one: so no type here (nor any other
//! type that crosses an exchange) carries a format-specific serde attribute
//! (`skip_serializing_if`, `untagged`, `flatten`, ...) or a hand-written
//! `Serialize`. The JSON form of trigger records (absent fields left out)
//! is the binary's codec's (`codec::TriggerJson`);
//! `tests/bincode_roundtrip.rs` checks every exchanged type round-trips.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Event time and timely time: integer milliseconds since the Unix epoch.
pub type Time = u64;

/// An id or short text of the input (ids, languages, timezones, queries):
/// kept inline up to 23 bytes and shared, not copied, beyond that, so that
/// the records the dataflow moves, sorts and clones carry no heap
/// allocation for the ids real traffic has.
pub type Str = smol_str::SmolStr;

/// A price, kept as the `f64` the producer sent, totally ordered by
/// `f64::total_cmp` so that it can live inside arrangements.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub f64);

impl PartialEq for Money {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for Money {}
impl PartialOrd for Money {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Money {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Money {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// A consent channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Push,
    Email,
    Sms,
}

/// One item of an `order_placed`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: Str,
    pub quantity: u64,
    pub price: Option<Money>,
    pub seller_id: Option<Str>,
}

/// The type-specific part of a tracking event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Body {
    Identify {
        language: Option<Str>,
        timezone: Option<Str>,
    },
    CartAdd {
        product_id: Str,
        quantity: u64,
        price: Option<Money>,
    },
    WishlistAdd {
        product_id: Str,
    },
    ProductView {
        product_id: Str,
        category_id: Option<Str>,
        price: Option<Money>,
    },
    CategoryView {
        category_id: Str,
    },
    Search {
        query: Str,
        result_count: Option<u64>,
    },
    CartRemove {
        product_id: Str,
    },
    WishlistRemove {
        product_id: Str,
    },
    OrderPlaced {
        order_id: Str,
        items: Vec<OrderItem>,
        payment: Option<Str>,
    },
    OrderDelivered {
        order_id: Str,
    },
    OrderCancelled {
        order_id: Str,
        reason: Option<Str>,
    },
    ReviewSubmitted {
        order_id: Option<Str>,
        product_id: Option<Str>,
        seller_id: Option<Str>,
    },
    AppOpen,
    Consent {
        channel: Channel,
        granted: bool,
    },
    Forget,
    /// A type this version does not know: activity, otherwise ignored.
    Other {
        type_name: Str,
    },
}

impl Body {
    /// Rank of the event among events of one user at the same `ts`
    /// (triggers.md, *Time*, "Ties"): lower is applied first.
    pub fn tie_rank(&self) -> u8 {
        match self {
            Body::Identify { .. } => 0,
            Body::CartAdd { .. } => 1,
            Body::WishlistAdd { .. } => 2,
            Body::ProductView { .. } | Body::CategoryView { .. } | Body::Search { .. } => 3,
            Body::CartRemove { .. } => 4,
            Body::WishlistRemove { .. } => 5,
            Body::OrderPlaced { .. } => 6,
            _ => 7,
        }
    }

    /// Activity is any tracking event except `identify`, `consent`, `forget`.
    pub fn is_activity(&self) -> bool {
        !matches!(
            self,
            Body::Identify { .. } | Body::Consent { .. } | Body::Forget
        )
    }

    /// The wire name of the event type.
    pub fn type_name(&self) -> &str {
        match self {
            Body::Identify { .. } => "identify",
            Body::CartAdd { .. } => "cart_add",
            Body::WishlistAdd { .. } => "wishlist_add",
            Body::ProductView { .. } => "product_view",
            Body::CategoryView { .. } => "category_view",
            Body::Search { .. } => "search",
            Body::CartRemove { .. } => "cart_remove",
            Body::WishlistRemove { .. } => "wishlist_remove",
            Body::OrderPlaced { .. } => "order_placed",
            Body::OrderDelivered { .. } => "order_delivered",
            Body::OrderCancelled { .. } => "order_cancelled",
            Body::ReviewSubmitted { .. } => "review_submitted",
            Body::AppOpen => "app_open",
            Body::Consent { .. } => "consent",
            Body::Forget => "forget",
            Body::Other { type_name } => type_name,
        }
    }
}

/// One decoded `tracking` message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub ts: Time,
    /// When the job learned the event (triggers.md, *Known state*): its
    /// `ts`, raised to the linking `identify`'s time for anonymous events,
    /// or to the frontier for events that arrived late.
    pub known: Time,
    /// For an anonymous event assigned to a user: when the `identify` link
    /// that assigned it is forgotten (`Time::MAX` otherwise). Its facts end
    /// there, to the ms, if their own retention ends later.
    pub link_until: Time,
    pub event_id: Str,
    pub user_id: Option<Str>,
    pub anonymous_id: Option<Str>,
    /// `context.language`, or `traits.language` of an `identify`.
    pub language: Option<Str>,
    /// `context.timezone`, or `traits.timezone` of an `identify`.
    pub timezone: Option<Str>,
    pub body: Body,
}

/// The position of an event in the per-user application order:
/// `ts`, then the tie rank, then `event_id` (a deterministic last resort).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq {
    pub ts: Time,
    pub rank: u8,
    pub event_id: Str,
}

impl Event {
    /// This event's place in the application order.
    pub fn seq(&self) -> Seq {
        Seq {
            ts: self.ts,
            rank: self.body.tie_rank(),
            event_id: self.event_id.clone(),
        }
    }
}

/// One decoded `prices` message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PriceMsg {
    pub product_id: Str,
    pub ts: Time,
    pub price: Money,
    pub currency: Option<Str>,
}

/// One decoded `stock` message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StockMsg {
    pub product_id: Str,
    pub ts: Time,
    pub quantity: u64,
}

/// One decoded `catalog` message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogMsg {
    pub product_id: Str,
    pub category_id: Str,
    pub ts: Time,
    pub seller_id: Option<Str>,
    pub group_id: Option<Str>,
    pub title: Option<Str>,
    pub url: Option<Str>,
    pub image_url: Option<Str>,
    pub deleted: bool,
}

/// Any decoded input record, tagged by topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Input {
    Tracking(Event),
    Price(PriceMsg),
    Stock(StockMsg),
    Catalog(CatalogMsg),
}

impl Input {
    /// The time the record takes effect: an event's known time, a
    /// product message's `ts`.
    pub fn time(&self) -> Time {
        match self {
            Input::Tracking(e) => e.known,
            Input::Price(p) => p.ts,
            Input::Stock(s) => s.ts,
            Input::Catalog(c) => c.ts,
        }
    }

    /// Applies the record no earlier than `at` (a late record in live mode
    /// is applied at the frontier); returns whether it was late.
    pub fn not_before(&mut self, at: Time) -> bool {
        let t = match self {
            Input::Tracking(e) => &mut e.known,
            Input::Price(p) => &mut p.ts,
            Input::Stock(s) => &mut s.ts,
            Input::Catalog(c) => &mut c.ts,
        };
        if *t < at {
            *t = at;
            true
        } else {
            false
        }
    }

    /// The record's event time.
    pub fn ts(&self) -> Time {
        match self {
            Input::Tracking(e) => e.ts,
            Input::Price(p) => p.ts,
            Input::Stock(s) => s.ts,
            Input::Catalog(c) => c.ts,
        }
    }
}

/// One product in a trigger record (its JSON form, which leaves out the
/// fields that are `None`, is the codec's).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Item {
    pub product_id: Str,
    pub quantity: Option<u64>,
    pub price: Option<Money>,
    pub old_price: Option<Money>,
    pub category_id: Option<Str>,
    pub title: Option<Str>,
    pub url: Option<Str>,
    pub image_url: Option<Str>,
}

impl Item {
    /// An item that names only its product.
    pub fn product(product_id: impl Into<Str>) -> Self {
        Item {
            product_id: product_id.into(),
            ..Item::default()
        }
    }
}

/// One record of the `triggers` topic (wire.md, "Output topic"). Written
/// as JSON only through the codec's view (`codec::TriggerJson`), which
/// leaves out the fields that are `None`; serialised as is, every field is
/// written (as bincode between processes must).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Trigger {
    pub trigger_id: Str,
    pub campaign: Str,
    pub kind: Str,
    pub user_id: Str,
    pub ts: Time,
    pub items: Vec<Item>,
    pub query: Option<Str>,
    pub category_id: Option<Str>,
    pub order_id: Option<Str>,
    pub language: Option<Str>,
    pub timezone: Option<Str>,
    pub audience: Option<Str>,
    pub reminder: Option<bool>,
    /// The campaign's pass-through `priority`, when configured.
    pub priority: Option<i64>,
    /// The campaign's pass-through `channels`, when configured.
    pub channels: Option<Vec<String>>,
    /// The campaign's pass-through `template`, when configured.
    pub template: Option<String>,
}
