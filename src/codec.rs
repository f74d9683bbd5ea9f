//! Format: bytes of the wire contract (wire.md) to typed records and back.
//!
//! Transport (Kafka, recording files) hands this module payload bytes and
//! a topic; it returns a typed [`Input`] or a [`BadRecord`] saying why the
//! payload breaks the contract. Unknown fields are ignored everywhere.
//!
//! Trigger records leave as JSON through [`TriggerJson`], a view that
//! leaves out the fields that are `None`: the dataflow's [`Trigger`] and
//! [`Item`] keep plain serde derives, because between processes timely
//! serialises them with bincode, which cannot skip a field.

mod fast;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use dataflows::model::{
    Body, CatalogMsg, Channel, Event, Input, Item, Money, OrderItem, PriceMsg, StockMsg, Str, Time,
    Trigger,
};

/// The input topics of the job, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Tracking,
    Prices,
    Stock,
    Catalog,
}

impl Topic {
    /// Every input topic.
    pub const ALL: [Topic; 4] = [Topic::Tracking, Topic::Prices, Topic::Stock, Topic::Catalog];

    /// The topic's default name.
    pub fn default_name(self) -> &'static str {
        match self {
            Topic::Tracking => "tracking",
            Topic::Prices => "prices",
            Topic::Stock => "stock",
            Topic::Catalog => "catalog",
        }
    }
}

/// Why a record was rejected; the label is the `reason` of the bad-records metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadReason {
    /// Not UTF-8 or not JSON at all.
    InvalidJson,
    /// JSON, but not an object of the expected shape (a field of the wrong type).
    InvalidPayload,
    /// A required field is missing.
    MissingField,
    /// A field has a value the contract forbids (empty id, price <= 0, unknown enum value).
    InvalidValue,
    /// A recording line names a topic the job does not read.
    UnknownTopic,
    /// A field exceeds a configured limit ([`Limits`]): too many order
    /// items, or a free-text field too long.
    TooLarge,
    /// Live: the record's time lies beyond the wall clock by more than
    /// `time.max_future_ms`.
    FutureTs,
}

impl BadReason {
    /// Stable label for metrics and the dead-letter topic.
    pub fn label(self) -> &'static str {
        match self {
            BadReason::InvalidJson => "invalid_json",
            BadReason::InvalidPayload => "invalid_payload",
            BadReason::MissingField => "missing_field",
            BadReason::InvalidValue => "invalid_value",
            BadReason::UnknownTopic => "unknown_topic",
            BadReason::TooLarge => "too_large",
            BadReason::FutureTs => "future_ts",
        }
    }
}

/// A payload that breaks the contract.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{}: {detail}", reason.label())]
pub struct BadRecord {
    pub reason: BadReason,
    pub detail: String,
}

fn bad(reason: BadReason, detail: impl Into<String>) -> BadRecord {
    BadRecord {
        reason,
        detail: detail.into(),
    }
}

fn missing(field: &str) -> BadRecord {
    bad(BadReason::MissingField, format!("missing field `{field}`"))
}

fn from_json_error(e: serde_json::Error) -> BadRecord {
    use serde_json::error::Category;
    let reason = match e.classify() {
        Category::Data => BadReason::InvalidPayload,
        _ => BadReason::InvalidJson,
    };
    bad(reason, without_values(&e))
}

/// serde_json's message for `e` without the offending value it quotes
/// (`invalid type: string "alice@example.com", expected u64`): a value may
/// be personal data, and this text is logged and dead-lettered. What is
/// kept: the kind of error, what was expected (from the schema) and where.
fn without_values(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let msg = match full.rfind(" at line ") {
        Some(i) if e.line() > 0 => &full[..i],
        _ => full.as_str(),
    };
    // Messages that name only schema fields or describe syntax are kept.
    let quotes_input = [
        "invalid type",
        "invalid value",
        "unknown variant",
        "unknown field",
    ]
    .iter()
    .any(|p| msg.starts_with(p));
    let text = if quotes_input {
        let head = msg.split([':', '`', '"']).next().unwrap_or(msg).trim_end();
        match msg.rsplit_once(", expected ") {
            Some((_, expected)) => format!("{head}, expected {expected}"),
            None => head.to_string(),
        }
    } else {
        msg.to_string()
    };
    if e.line() > 0 {
        format!("{text} at line {} column {}", e.line(), e.column())
    } else {
        text
    }
}

/// Parses a payload: as text when it is UTF-8 (serde_json reads `&str`
/// faster than bytes), else as bytes, so that errors are the same either way.
fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, BadRecord> {
    match std::str::from_utf8(payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(payload),
    }
    .map_err(from_json_error)
}

/// Bounds on what one record may carry, so that no producer can make one
/// record cost unbounded state or work (co-purchase counting is quadratic in
/// an order's items). A record beyond them is a bad record (`too_large`),
/// dead-lettered like any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most items in one `order_placed`.
    pub max_order_items: usize,
    /// Longest free-text field, in bytes: `search.query`, a language or
    /// timezone, a currency, an unknown event `type`, a catalog title, URL
    /// or image URL. (Identifiers are at most 256 bytes, per wire.md.)
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_order_items: 1_000,
            max_text_bytes: 4_096,
        }
    }
}

impl Limits {
    fn text(&self, field: &str, v: Option<&str>) -> Result<(), BadRecord> {
        match v {
            Some(s) if s.len() > self.max_text_bytes => Err(bad(
                BadReason::TooLarge,
                format!(
                    "`{field}` is {} bytes, above the limit of {} (limits.max_text_bytes)",
                    s.len(),
                    self.max_text_bytes
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Checks an identifier: a non-empty string of at most 256 bytes.
fn ident(field: &str, v: Option<Str>) -> Result<Str, BadRecord> {
    let v = v.ok_or_else(|| missing(field))?;
    check_ident(field, &v)?;
    Ok(v)
}

fn check_ident(field: &str, v: &str) -> Result<(), BadRecord> {
    if v.is_empty() || v.len() > 256 {
        return Err(bad(
            BadReason::InvalidValue,
            format!("`{field}` must be a non-empty string of at most 256 bytes"),
        ));
    }
    Ok(())
}

fn opt_ident(field: &str, v: Option<Str>) -> Result<Option<Str>, BadRecord> {
    if let Some(s) = &v {
        check_ident(field, s)?;
    }
    Ok(v)
}

fn price(field: &str, v: Option<f64>) -> Result<Option<Money>, BadRecord> {
    match v {
        Some(p) if !(p > 0.0 && p.is_finite()) => Err(bad(
            BadReason::InvalidValue,
            format!("`{field}` must be a number > 0"),
        )),
        other => Ok(other.map(Money)),
    }
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawContext {
    language: Option<Str>,
    timezone: Option<Str>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct RawItem {
    product_id: Option<Str>,
    quantity: Option<u64>,
    price: Option<f64>,
    seller_id: Option<Str>,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawTraits {
    language: Option<Str>,
    timezone: Option<Str>,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawEvent {
    event_id: Option<Str>,
    #[serde(rename = "type")]
    kind: Option<Str>,
    ts: Option<u64>,
    user_id: Option<Str>,
    anonymous_id: Option<Str>,
    context: Option<RawContext>,
    product_id: Option<Str>,
    category_id: Option<Str>,
    price: Option<f64>,
    query: Option<Str>,
    result_count: Option<u64>,
    quantity: Option<u64>,
    order_id: Option<Str>,
    items: Option<Vec<RawItem>>,
    payment: Option<Str>,
    reason: Option<Str>,
    seller_id: Option<Str>,
    traits: Option<RawTraits>,
    channel: Option<Str>,
    granted: Option<bool>,
}

fn one_of(field: &str, v: Option<Str>, allowed: &[&str]) -> Result<Option<Str>, BadRecord> {
    match v {
        Some(s) if !allowed.contains(&s.as_str()) => Err(bad(
            BadReason::InvalidValue,
            format!("`{field}` must be one of {allowed:?}"),
        )),
        other => Ok(other),
    }
}

fn decode_event(payload: &[u8], limits: &Limits) -> Result<Event, BadRecord> {
    let fast = std::str::from_utf8(payload).ok().and_then(fast::raw_event);
    let r: RawEvent = match fast {
        Some(r) => r,
        None => parse(payload)?,
    };
    event_from_raw(r, limits)
}

/// The checks of the contract on a parsed `tracking` payload.
fn event_from_raw(r: RawEvent, limits: &Limits) -> Result<Event, BadRecord> {
    limits.text("query", r.query.as_deref())?;
    if let Some(c) = &r.context {
        limits.text("context.language", c.language.as_deref())?;
        limits.text("context.timezone", c.timezone.as_deref())?;
    }
    if let Some(t) = &r.traits {
        limits.text("traits.language", t.language.as_deref())?;
        limits.text("traits.timezone", t.timezone.as_deref())?;
    }
    let event_id = ident("event_id", r.event_id)?;
    let kind = r.kind.ok_or_else(|| missing("type"))?;
    let ts = r.ts.ok_or_else(|| missing("ts"))?;
    let user_id = opt_ident("user_id", r.user_id)?;
    let anonymous_id = opt_ident("anonymous_id", r.anonymous_id)?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(missing("user_id` or `anonymous_id"));
    }
    let context = r.context.unwrap_or_default();
    let mut language = context.language;
    let mut timezone = context.timezone;
    let product = |p: Option<Str>| ident("product_id", p);
    let body = match kind.as_str() {
        "product_view" => Body::ProductView {
            product_id: product(r.product_id)?,
            category_id: opt_ident("category_id", r.category_id)?,
            price: price("price", r.price)?,
        },
        "category_view" => Body::CategoryView {
            category_id: ident("category_id", r.category_id)?,
        },
        "search" => Body::Search {
            query: r.query.ok_or_else(|| missing("query"))?,
            result_count: r.result_count,
        },
        "cart_add" => Body::CartAdd {
            product_id: product(r.product_id)?,
            quantity: r.quantity.unwrap_or(1),
            price: price("price", r.price)?,
        },
        "cart_remove" => Body::CartRemove {
            product_id: product(r.product_id)?,
        },
        "wishlist_add" => Body::WishlistAdd {
            product_id: product(r.product_id)?,
        },
        "wishlist_remove" => Body::WishlistRemove {
            product_id: product(r.product_id)?,
        },
        "order_placed" => {
            let raw = r.items.ok_or_else(|| missing("items"))?;
            if raw.is_empty() {
                return Err(bad(BadReason::InvalidValue, "`items` must not be empty"));
            }
            if raw.len() > limits.max_order_items {
                return Err(bad(
                    BadReason::TooLarge,
                    format!(
                        "`items` has {} entries, above the limit of {} (limits.max_order_items)",
                        raw.len(),
                        limits.max_order_items
                    ),
                ));
            }
            let mut items = Vec::with_capacity(raw.len());
            for i in raw {
                items.push(OrderItem {
                    product_id: ident("items[].product_id", i.product_id)?,
                    quantity: i.quantity.unwrap_or(1),
                    price: price("items[].price", i.price)?,
                    seller_id: opt_ident("items[].seller_id", i.seller_id)?,
                });
            }
            Body::OrderPlaced {
                order_id: ident("order_id", r.order_id)?,
                items,
                payment: one_of(
                    "payment",
                    r.payment,
                    &["secure", "cash_on_delivery", "other"],
                )?,
            }
        }
        "order_delivered" => Body::OrderDelivered {
            order_id: ident("order_id", r.order_id)?,
        },
        "order_cancelled" => Body::OrderCancelled {
            order_id: ident("order_id", r.order_id)?,
            reason: one_of("reason", r.reason, &["out_of_stock", "customer", "other"])?,
        },
        "review_submitted" => Body::ReviewSubmitted {
            order_id: opt_ident("order_id", r.order_id)?,
            product_id: opt_ident("product_id", r.product_id)?,
            seller_id: opt_ident("seller_id", r.seller_id)?,
        },
        "app_open" => Body::AppOpen,
        "identify" => {
            if user_id.is_none() {
                return Err(missing("user_id"));
            }
            if anonymous_id.is_none() {
                return Err(missing("anonymous_id"));
            }
            let traits = r.traits.unwrap_or_default();
            if traits.language.is_some() {
                language = traits.language.clone();
            }
            if traits.timezone.is_some() {
                timezone = traits.timezone.clone();
            }
            Body::Identify {
                language: traits.language,
                timezone: traits.timezone,
            }
        }
        "consent" => {
            let channel = match r.channel.as_deref() {
                None => return Err(missing("channel")),
                Some("push") => Channel::Push,
                Some("email") => Channel::Email,
                Some("sms") => Channel::Sms,
                Some(_) => {
                    return Err(bad(
                        BadReason::InvalidValue,
                        "`channel` must be one of push, email, sms",
                    ))
                }
            };
            Body::Consent {
                channel,
                granted: r.granted.ok_or_else(|| missing("granted"))?,
            }
        }
        "forget" => Body::Forget,
        other => {
            if other.is_empty() {
                return Err(bad(BadReason::InvalidValue, "`type` must not be empty"));
            }
            limits.text("type", Some(other))?;
            Body::Other {
                type_name: other.into(),
            }
        }
    };
    Ok(Event {
        ts,
        known: ts,
        link_until: u64::MAX,
        event_id,
        user_id,
        anonymous_id,
        language,
        timezone,
        body,
    })
}

#[derive(Deserialize)]
struct RawPrice {
    product_id: Option<Str>,
    price: Option<f64>,
    currency: Option<Str>,
    ts: Option<u64>,
}

#[derive(Deserialize)]
struct RawStock {
    product_id: Option<Str>,
    quantity: Option<u64>,
    ts: Option<u64>,
}

#[derive(Deserialize)]
struct RawCatalog {
    product_id: Option<Str>,
    category_id: Option<Str>,
    seller_id: Option<Str>,
    group_id: Option<Str>,
    title: Option<Str>,
    url: Option<Str>,
    image_url: Option<Str>,
    ts: Option<u64>,
    deleted: Option<bool>,
}

/// Decodes one payload of `topic`, within the default [`Limits`].
pub fn decode(topic: Topic, payload: &[u8]) -> Result<Input, BadRecord> {
    decode_within(topic, payload, &Limits::default())
}

/// Decodes one payload of `topic`; a record beyond `limits` is `too_large`.
pub fn decode_within(topic: Topic, payload: &[u8], limits: &Limits) -> Result<Input, BadRecord> {
    match topic {
        Topic::Tracking => decode_event(payload, limits).map(Input::Tracking),
        Topic::Prices => {
            let r: RawPrice = parse(payload)?;
            limits.text("currency", r.currency.as_deref())?;
            Ok(Input::Price(PriceMsg {
                product_id: ident("product_id", r.product_id)?,
                ts: r.ts.ok_or_else(|| missing("ts"))?,
                price: price("price", r.price)?.ok_or_else(|| missing("price"))?,
                currency: r.currency,
            }))
        }
        Topic::Stock => {
            let r: RawStock = parse(payload)?;
            Ok(Input::Stock(StockMsg {
                product_id: ident("product_id", r.product_id)?,
                ts: r.ts.ok_or_else(|| missing("ts"))?,
                quantity: r.quantity.ok_or_else(|| missing("quantity"))?,
            }))
        }
        Topic::Catalog => {
            let r: RawCatalog = parse(payload)?;
            limits.text("title", r.title.as_deref())?;
            limits.text("url", r.url.as_deref())?;
            limits.text("image_url", r.image_url.as_deref())?;
            Ok(Input::Catalog(CatalogMsg {
                product_id: ident("product_id", r.product_id)?,
                category_id: ident("category_id", r.category_id)?,
                ts: r.ts.ok_or_else(|| missing("ts"))?,
                seller_id: opt_ident("seller_id", r.seller_id)?,
                group_id: opt_ident("group_id", r.group_id)?,
                title: r.title,
                url: r.url,
                image_url: r.image_url,
                deleted: r.deleted.unwrap_or(false),
            }))
        }
    }
}

/// Maps topic names to roles (the defaults, or the configured names).
#[derive(Clone, Debug)]
pub struct TopicNames {
    pub tracking: String,
    pub prices: String,
    pub stock: String,
    pub catalog: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            tracking: "tracking".into(),
            prices: "prices".into(),
            stock: "stock".into(),
            catalog: "catalog".into(),
        }
    }
}

impl TopicNames {
    /// The role of the topic called `name`.
    pub fn role(&self, name: &str) -> Option<Topic> {
        if name == self.tracking {
            Some(Topic::Tracking)
        } else if name == self.prices {
            Some(Topic::Prices)
        } else if name == self.stock {
            Some(Topic::Stock)
        } else if name == self.catalog {
            Some(Topic::Catalog)
        } else {
            None
        }
    }

    /// The configured name of `topic`.
    pub fn name(&self, topic: Topic) -> &str {
        match topic {
            Topic::Tracking => &self.tracking,
            Topic::Prices => &self.prices,
            Topic::Stock => &self.stock,
            Topic::Catalog => &self.catalog,
        }
    }
}

/// One line of a recording file, with its payload still as raw JSON.
/// Fields are borrowed from the line where they can be (no copy per line).
#[derive(Deserialize)]
pub struct RecordedLine<'a> {
    #[serde(borrow)]
    pub topic: std::borrow::Cow<'a, str>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
    #[serde(borrow)]
    pub key: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub value: &'a RawValue,
}

/// Decodes one line of a recording: the topic it came from and its record.
pub fn decode_line(line: &str, topics: &TopicNames) -> Result<(Topic, Input), BadRecord> {
    decode_line_within(line, topics, &Limits::default())
}

/// [`decode_line`] within `limits`.
pub fn decode_line_within(
    line: &str,
    topics: &TopicNames,
    limits: &Limits,
) -> Result<(Topic, Input), BadRecord> {
    if let Some((_, raw)) = fast::tracking_line(line, |t| t == topics.tracking) {
        return Ok((
            Topic::Tracking,
            Input::Tracking(event_from_raw(raw, limits)?),
        ));
    }
    let rec: RecordedLine = serde_json::from_str(line).map_err(from_json_error)?;
    let topic = topics.role(&rec.topic).ok_or_else(|| {
        bad(
            BadReason::UnknownTopic,
            format!("unknown topic `{}`", rec.topic),
        )
    })?;
    let input = decode_within(topic, rec.value.get().as_bytes(), limits)?;
    Ok((topic, input))
}

/// A trigger record's JSON form (wire.md, "Output topic"): its fields in
/// this order, those that are `None` left out. Every writer of trigger
/// records as JSON goes through it ([`encode_trigger`]); the dataflow's
/// [`Trigger`] has no JSON-only serde attribute (see `dataflows::model`).
/// Reading a record back needs no view: `Trigger`'s derive reads a missing
/// optional field as `None`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TriggerJson<'a> {
    trigger_id: &'a str,
    campaign: &'a str,
    kind: &'a str,
    user_id: &'a str,
    ts: Time,
    items: ItemsJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reminder: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a str>,
}

impl<'a> From<&'a Trigger> for TriggerJson<'a> {
    fn from(t: &'a Trigger) -> Self {
        // Every field by name: a field added to `Trigger` must be added here.
        let Trigger {
            trigger_id,
            campaign,
            kind,
            user_id,
            ts,
            items,
            query,
            category_id,
            order_id,
            language,
            timezone,
            audience,
            reminder,
            priority,
            channels,
            template,
        } = t;
        TriggerJson {
            trigger_id,
            campaign,
            kind,
            user_id,
            ts: *ts,
            items: ItemsJson(items),
            query: query.as_deref(),
            category_id: category_id.as_deref(),
            order_id: order_id.as_deref(),
            language: language.as_deref(),
            timezone: timezone.as_deref(),
            audience: audience.as_deref(),
            reminder: *reminder,
            priority: *priority,
            channels: channels.as_deref(),
            template: template.as_deref(),
        }
    }
}

/// The JSON form of a trigger record's `items`: each an [`ItemJson`].
#[derive(Clone, Copy, Debug)]
pub struct ItemsJson<'a>(pub &'a [Item]);

impl Serialize for ItemsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ItemJson::from))
    }
}

/// One item's JSON form: its fields in this order, those that are `None`
/// left out.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ItemJson<'a> {
    product_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_price: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    category_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_url: Option<&'a str>,
}

impl<'a> From<&'a Item> for ItemJson<'a> {
    fn from(i: &'a Item) -> Self {
        // Every field by name: a field added to `Item` must be added here.
        let Item {
            product_id,
            quantity,
            price,
            old_price,
            category_id,
            title,
            url,
            image_url,
        } = i;
        ItemJson {
            product_id,
            quantity: *quantity,
            price: *price,
            old_price: *old_price,
            category_id: category_id.as_deref(),
            title: title.as_deref(),
            url: url.as_deref(),
            image_url: image_url.as_deref(),
        }
    }
}

/// A trigger record as a JSON value (its payload's form), for tests and tools.
pub fn trigger_value(t: &Trigger) -> serde_json::Value {
    serde_json::to_value(TriggerJson::from(t)).expect("trigger records always serialise")
}

/// Items as a JSON value (their form in a trigger record's payload).
pub fn items_value(items: &[Item]) -> serde_json::Value {
    serde_json::to_value(ItemsJson(items)).expect("trigger records always serialise")
}

/// Encodes a trigger record as its JSON payload.
pub fn encode_trigger(t: &Trigger) -> Vec<u8> {
    encode_trigger_cut(t).0
}

/// The largest trigger record written, in bytes: below Kafka's default
/// `message.max.bytes` (1,000,000 for producers, 1 MiB for brokers), with
/// room for the key and the batch overhead.
pub const MAX_TRIGGER_BYTES: usize = 900_000;

/// A trigger record as JSON, cut to fit [`MAX_TRIGGER_BYTES`]: a record
/// beyond it keeps the longest prefix of its `items` that fits (every other
/// field is bounded by `limits.max_text_bytes`). Returns the bytes and how
/// many items were dropped. Replay and the live job cut alike, so the bytes
/// stay the same on both paths.
pub fn encode_trigger_cut(t: &Trigger) -> (Vec<u8>, usize) {
    let mut view = TriggerJson::from(t);
    let bytes = serde_json::to_vec(&view).expect("trigger records always serialise");
    if bytes.len() <= MAX_TRIGGER_BYTES || t.items.is_empty() {
        return (bytes, 0);
    }
    let all = t.items.as_slice();
    let mut size = |n: usize| {
        view.items = ItemsJson(&all[..n]);
        serde_json::to_vec(&view).expect("trigger records always serialise")
    };
    // The longest prefix that fits: `lo` fits (none at worst), `hi + 1` not.
    let (mut lo, mut hi) = (0, all.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if size(mid).len() <= MAX_TRIGGER_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (size(lo), all.len() - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_trigger_keeps_the_items_that_fit() {
        let item = |i: usize| dataflows::model::Item {
            title: Some("t".repeat(4000).into()),
            ..dataflows::model::Item::product(format!("p{i}"))
        };
        let mut t: Trigger = serde_json::from_str(
            r#"{"trigger_id":"x","campaign":"c","kind":"abandoned_cart","user_id":"u","ts":1,"items":[]}"#,
        )
        .unwrap();
        t.items = (0..10).map(item).collect();
        let (small, dropped) = encode_trigger_cut(&t);
        assert_eq!(dropped, 0);
        assert_eq!(small, serde_json::to_vec(&TriggerJson::from(&t)).unwrap());
        t.items = (0..1000).map(item).collect();
        let (bytes, dropped) = encode_trigger_cut(&t);
        assert!(bytes.len() <= MAX_TRIGGER_BYTES, "{}", bytes.len());
        let back: Trigger = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.items.len() + dropped, 1000);
        assert_eq!(back.items[..], t.items[..back.items.len()]);
        // One more item would not have fitted.
        let mut more = back.clone();
        more.items.push(t.items[back.items.len()].clone());
        assert!(serde_json::to_vec(&TriggerJson::from(&more)).unwrap().len() > MAX_TRIGGER_BYTES);
    }

    /// A trigger record with fields set and unset, as the payload has always
    /// been: `None` fields left out, keys in this order.
    fn sample_trigger() -> Trigger {
        Trigger {
            trigger_id: "3f2a".into(),
            campaign: "drop".into(),
            kind: "price_drop".into(),
            user_id: "u1".into(),
            ts: 1_700_000_000_123,
            items: vec![
                Item {
                    product_id: "p1".into(),
                    price: Some(Money(19.5)),
                    old_price: Some(Money(25.0)),
                    title: Some("Lamp \"Nova\"".into()),
                    ..Item::default()
                },
                Item {
                    quantity: Some(2),
                    category_id: Some("c9".into()),
                    url: Some("https://shop.example/p2".into()),
                    image_url: Some("https://img.example/p2.jpg".into()),
                    ..Item::product("p2")
                },
                Item::product("p3"),
            ],
            query: None,
            category_id: None,
            order_id: None,
            language: Some("az".into()),
            timezone: None,
            audience: Some("cart".into()),
            reminder: None,
            priority: None,
            channels: None,
            template: None,
        }
    }

    #[test]
    fn trigger_json_leaves_out_absent_fields() {
        let t = sample_trigger();
        let expected = concat!(
            r#"{"trigger_id":"3f2a","campaign":"drop","kind":"price_drop","user_id":"u1","#,
            r#""ts":1700000000123,"items":[{"product_id":"p1","price":19.5,"old_price":25.0,"#,
            r#""title":"Lamp \"Nova\""},{"product_id":"p2","quantity":2,"category_id":"c9","#,
            r#""url":"https://shop.example/p2","image_url":"https://img.example/p2.jpg"},"#,
            r#"{"product_id":"p3"}],"language":"az","audience":"cart"}"#
        );
        assert_eq!(String::from_utf8(encode_trigger(&t)).unwrap(), expected);
        assert_eq!(
            trigger_value(&t),
            serde_json::from_str::<serde_json::Value>(expected).unwrap()
        );
        // Read back with the dataflow type's own derive: absent fields are `None`.
        let back: Trigger = serde_json::from_str(expected).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn trigger_json_with_every_field() {
        let t = Trigger {
            query: Some("shoes".into()),
            category_id: Some("c1".into()),
            order_id: Some("o1".into()),
            timezone: Some("Asia/Baku".into()),
            reminder: Some(true),
            priority: Some(-3),
            channels: Some(vec!["push".into(), "email".into()]),
            template: Some("t-1".into()),
            items: vec![Item::product("p1")],
            ..sample_trigger()
        };
        let expected = concat!(
            r#"{"trigger_id":"3f2a","campaign":"drop","kind":"price_drop","user_id":"u1","#,
            r#""ts":1700000000123,"items":[{"product_id":"p1"}],"query":"shoes","#,
            r#""category_id":"c1","order_id":"o1","language":"az","timezone":"Asia/Baku","#,
            r#""audience":"cart","reminder":true,"priority":-3,"channels":["push","email"],"#,
            r#""template":"t-1"}"#
        );
        assert_eq!(String::from_utf8(encode_trigger(&t)).unwrap(), expected);
        let back: Trigger = serde_json::from_str(expected).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn decodes_every_event_type() {
        let cases = [
            r#"{"event_id":"1","type":"product_view","ts":5,"user_id":"u","product_id":"p","category_id":"c","price":2.5}"#,
            r#"{"event_id":"1","type":"category_view","ts":5,"user_id":"u","category_id":"c"}"#,
            r#"{"event_id":"1","type":"search","ts":5,"user_id":"u","query":"shoes"}"#,
            r#"{"event_id":"1","type":"cart_add","ts":5,"anonymous_id":"a","product_id":"p"}"#,
            r#"{"event_id":"1","type":"cart_remove","ts":5,"user_id":"u","product_id":"p"}"#,
            r#"{"event_id":"1","type":"wishlist_add","ts":5,"user_id":"u","product_id":"p"}"#,
            r#"{"event_id":"1","type":"wishlist_remove","ts":5,"user_id":"u","product_id":"p"}"#,
            r#"{"event_id":"1","type":"order_placed","ts":5,"user_id":"u","order_id":"o","items":[{"product_id":"p"}],"payment":"secure"}"#,
            r#"{"event_id":"1","type":"order_delivered","ts":5,"user_id":"u","order_id":"o"}"#,
            r#"{"event_id":"1","type":"order_cancelled","ts":5,"user_id":"u","order_id":"o","reason":"out_of_stock"}"#,
            r#"{"event_id":"1","type":"review_submitted","ts":5,"user_id":"u"}"#,
            r#"{"event_id":"1","type":"app_open","ts":5,"user_id":"u","context":{"language":"az"}}"#,
            r#"{"event_id":"1","type":"identify","ts":5,"user_id":"u","anonymous_id":"a","traits":{"language":"ru"}}"#,
            r#"{"event_id":"1","type":"consent","ts":5,"user_id":"u","channel":"sms","granted":false}"#,
            r#"{"event_id":"1","type":"forget","ts":5,"user_id":"u"}"#,
            r#"{"event_id":"1","type":"brand_new_type","ts":5,"user_id":"u","whatever":[1,2]}"#,
        ];
        let s = |v: &str| Str::from(v);
        let expected = [
            Body::ProductView {
                product_id: s("p"),
                category_id: Some(s("c")),
                price: Some(Money(2.5)),
            },
            Body::CategoryView {
                category_id: s("c"),
            },
            Body::Search {
                query: s("shoes"),
                result_count: None,
            },
            Body::CartAdd {
                product_id: s("p"),
                quantity: 1,
                price: None,
            },
            Body::CartRemove { product_id: s("p") },
            Body::WishlistAdd { product_id: s("p") },
            Body::WishlistRemove { product_id: s("p") },
            Body::OrderPlaced {
                order_id: s("o"),
                items: vec![OrderItem {
                    product_id: s("p"),
                    quantity: 1,
                    price: None,
                    seller_id: None,
                }],
                payment: Some(s("secure")),
            },
            Body::OrderDelivered { order_id: s("o") },
            Body::OrderCancelled {
                order_id: s("o"),
                reason: Some(s("out_of_stock")),
            },
            Body::ReviewSubmitted {
                order_id: None,
                product_id: None,
                seller_id: None,
            },
            Body::AppOpen,
            Body::Identify {
                language: Some(s("ru")),
                timezone: None,
            },
            Body::Consent {
                channel: Channel::Sms,
                granted: false,
            },
            Body::Forget,
            Body::Other {
                type_name: s("brand_new_type"),
            },
        ];
        assert_eq!(cases.len(), expected.len());
        for (c, body) in cases.iter().zip(expected) {
            let e = match decode(Topic::Tracking, c.as_bytes())
                .unwrap_or_else(|e| panic!("{c}: {e}"))
            {
                Input::Tracking(e) => e,
                other => panic!("{c}: {other:?}"),
            };
            assert_eq!(e.body, body, "{c}");
            assert_eq!((e.ts, e.known, e.event_id.as_str()), (5, 5, "1"), "{c}");
            let v: serde_json::Value = serde_json::from_str(c).unwrap();
            assert_eq!(e.user_id.as_deref(), v["user_id"].as_str(), "{c}");
            assert_eq!(e.anonymous_id.as_deref(), v["anonymous_id"].as_str(), "{c}");
            // The language of `context` or of an identify's `traits`.
            let language = v["context"]["language"]
                .as_str()
                .or(v["traits"]["language"].as_str());
            assert_eq!(e.language.as_deref(), language, "{c}");
            assert_eq!(e.timezone, None, "{c}");
        }
    }

    #[test]
    fn cart_add_defaults_quantity_to_one() {
        let e = decode(
            Topic::Tracking,
            br#"{"event_id":"1","type":"cart_add","ts":5,"user_id":"u","product_id":"p"}"#,
        )
        .unwrap();
        match e {
            Input::Tracking(Event {
                body: Body::CartAdd { quantity, .. },
                ..
            }) => assert_eq!(quantity, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_contract_breaches() {
        let cases: [(Topic, &str, BadReason); 10] = [
            (Topic::Tracking, "this is not json", BadReason::InvalidJson),
            (
                Topic::Tracking,
                r#"{"type":"cart_add","ts":1}"#,
                BadReason::MissingField,
            ),
            (
                Topic::Tracking,
                r#"{"event_id":"1","type":"cart_add","ts":1,"user_id":"u"}"#,
                BadReason::MissingField,
            ),
            (
                Topic::Tracking,
                r#"{"event_id":"","type":"app_open","ts":1,"user_id":"u"}"#,
                BadReason::InvalidValue,
            ),
            (
                Topic::Tracking,
                r#"{"event_id":"1","type":"app_open","ts":"1","user_id":"u"}"#,
                BadReason::InvalidPayload,
            ),
            (
                Topic::Tracking,
                r#"{"event_id":"1","type":"order_placed","ts":1,"user_id":"u","order_id":"o","items":[]}"#,
                BadReason::InvalidValue,
            ),
            (
                Topic::Tracking,
                r#"{"event_id":"1","type":"identify","ts":1,"user_id":"u"}"#,
                BadReason::MissingField,
            ),
            (
                Topic::Prices,
                r#"{"product_id":"p12","price":-3,"ts":1}"#,
                BadReason::InvalidValue,
            ),
            (
                Topic::Stock,
                r#"{"product_id":"p","quantity":-1,"ts":1}"#,
                BadReason::InvalidPayload,
            ),
            (
                Topic::Catalog,
                r#"{"product_id":"p","ts":1}"#,
                BadReason::MissingField,
            ),
        ];
        for (topic, payload, reason) in cases {
            let err = decode(topic, payload.as_bytes()).expect_err(payload);
            assert_eq!(err.reason, reason, "{payload}: {err}");
        }
    }

    #[test]
    fn decodes_recording_lines() {
        let names = TopicNames::default();
        let (t, _) = decode_line(
            r#"{"topic":"stock","key":"p","value":{"product_id":"p","quantity":0,"ts":3}}"#,
            &names,
        )
        .unwrap();
        assert_eq!(t, Topic::Stock);
        let err = decode_line(r#"{"topic":"nope","value":{}}"#, &names).unwrap_err();
        assert_eq!(err.reason, BadReason::UnknownTopic);
    }

    fn order(items: usize) -> String {
        let items: Vec<String> = (0..items)
            .map(|i| format!(r#"{{"product_id":"p{i}","quantity":1}}"#))
            .collect();
        format!(
            r#"{{"event_id":"1","type":"order_placed","ts":5,"user_id":"u","order_id":"o","items":[{}]}}"#,
            items.join(",")
        )
    }

    #[test]
    fn orders_and_texts_beyond_the_limits_are_too_large() {
        let limits = Limits {
            max_order_items: 3,
            max_text_bytes: 8,
        };
        let at = |p: &str| decode_within(Topic::Tracking, p.as_bytes(), &limits);
        match at(&order(3)).expect("3 items are within the limit") {
            Input::Tracking(Event {
                body: Body::OrderPlaced { items, .. },
                ..
            }) => assert_eq!(items.len(), 3),
            other => panic!("not an order: {other:?}"),
        }
        let e = at(&order(4)).expect_err("4 items are beyond it");
        assert_eq!(e.reason, BadReason::TooLarge);
        assert_eq!(e.reason.label(), "too_large");
        assert!(e.detail.contains("limits.max_order_items"), "{}", e.detail);

        let search = |q: &str| {
            format!(r#"{{"event_id":"1","type":"search","ts":5,"user_id":"u","query":"{q}"}}"#)
        };
        assert!(at(&search("12345678")).is_ok());
        let e = at(&search("123456789")).expect_err("9 bytes");
        assert_eq!(e.reason, BadReason::TooLarge);
        // The value itself is not quoted (it may be personal data).
        assert!(!e.detail.contains("123456789"), "{}", e.detail);
        for p in [
            r#"{"event_id":"1","type":"app_open","ts":5,"user_id":"u","context":{"language":"123456789"}}"#,
            r#"{"event_id":"1","type":"identify","ts":5,"user_id":"u","anonymous_id":"a","traits":{"timezone":"123456789"}}"#,
            r#"{"event_id":"1","type":"123456789","ts":5,"user_id":"u"}"#,
        ] {
            assert_eq!(at(p).expect_err(p).reason, BadReason::TooLarge, "{p}");
        }
        let price = r#"{"product_id":"p","price":2.0,"currency":"123456789","ts":5}"#;
        let e = decode_within(Topic::Prices, price.as_bytes(), &limits).expect_err("currency");
        assert_eq!(e.reason, BadReason::TooLarge);
        let cat = r#"{"product_id":"p","category_id":"c","ts":5,"title":"123456789"}"#;
        let e = decode_within(Topic::Catalog, cat.as_bytes(), &limits).expect_err("title");
        assert_eq!(e.reason, BadReason::TooLarge);
        // The defaults admit an order of 1000 items, not 1001.
        assert!(decode(Topic::Tracking, order(1000).as_bytes()).is_ok());
        assert_eq!(
            decode(Topic::Tracking, order(1001).as_bytes())
                .expect_err("1001 items")
                .reason,
            BadReason::TooLarge
        );
    }

    #[test]
    fn errors_never_quote_the_offending_value() {
        let personal = [
            "alice@example.com",
            "+4915112345678",
            "4915112345678",
            "Alice Smith",
        ];
        let payloads = [
            r#"{"event_id":"1","type":"search","ts":"alice@example.com","user_id":"u","query":"q"}"#,
            r#"{"event_id":"1","type":"search","ts":5,"user_id":4915112345678,"query":"q"}"#,
            r#"{"event_id":"1","type":"cart_add","ts":5,"user_id":"u","product_id":"p","quantity":"+4915112345678"}"#,
            r#"{"event_id":"1","type":"identify","ts":5,"user_id":"u","anonymous_id":"a","traits":"Alice Smith"}"#,
            r#"{"event_id":"1","type":"consent","ts":5,"user_id":"u","channel":"email","granted":"alice@example.com"}"#,
            r#"{"event_id":"1","type":"order_placed","ts":5,"user_id":"u","order_id":"o","items":[{"product_id":"p","price":"Alice Smith"}]}"#,
        ];
        for p in payloads {
            let e = decode(Topic::Tracking, p.as_bytes()).expect_err(p);
            assert_eq!(e.reason, BadReason::InvalidPayload, "{p}: {}", e.detail);
            for v in personal {
                assert!(!e.detail.contains(v), "{p}: {}", e.detail);
            }
            assert!(e.detail.contains("at line 1 column"), "{}", e.detail);
            assert!(e.detail.contains("expected"), "{}", e.detail);
        }
        let e = decode(
            Topic::Prices,
            br#"{"product_id":"p","price":"alice@example.com","ts":5}"#,
        )
        .expect_err("a string price");
        assert!(!e.detail.contains("alice"), "{}", e.detail);
        let line = r#"{"topic":"tracking","key":"alice@example.com","value":{"event_id":"1","type":"search","ts":5,"user_id":"u","query":"q"},"timestamp":"alice@example.com"}"#;
        let e = decode_line(line, &TopicNames::default()).expect_err("a string timestamp");
        assert!(!e.detail.contains("alice"), "{}", e.detail);
        // Syntax errors keep their (value-free) text.
        let e = decode(Topic::Tracking, b"{\"event_id\": tru").expect_err("syntax");
        assert_eq!(e.reason, BadReason::InvalidJson);
        assert!(e.detail.contains("line 1"), "{}", e.detail);
    }

    /// Seeds for the fast-path comparison: every field of `RawEvent`.
    const FAST_SEEDS: &[&str] = &[
        r#"{"event_id":"e1","type":"cart_add","ts":1700000000000,"user_id":"u1","product_id":"p1","quantity":2,"price":9.5,"context":{"language":"de","timezone":"Europe/Berlin"}}"#,
        r#"{"event_id":"e2","type":"order_placed","ts":1,"anonymous_id":"a","order_id":"o1","items":[{"product_id":"p1","quantity":1,"price":9.5,"seller_id":"s"},{"product_id":"p2"}],"payment":"secure"}"#,
        r#"{"event_id":"e3","type":"identify","ts":1,"user_id":"u1","anonymous_id":"a1","traits":{"language":"en","timezone":null}}"#,
        r#"{"event_id":"e4","type":"consent","ts":1,"user_id":"u1","channel":"email","granted":false}"#,
        r#" { "event_id" : "e5" , "type" : "search" , "ts" : 0 , "anonymous_id" : "a1" , "query" : "red shoes" , "result_count" : 0 } "#,
        r#"{"event_id":"e6","type":"product_view","ts":1,"user_id":"u","product_id":"p","category_id":"c","price":1e2,"extra":{"a":[1,2,{"b":null}],"c":true}}"#,
        r#"{"event_id":"e7","type":"order_cancelled","ts":1,"user_id":"u","order_id":"o","reason":"customer","seller_id":"s"}"#,
    ];

    /// Values a mutation puts in place of a field's value.
    const TOKENS: &[&str] = &[
        "null",
        "0",
        "-0",
        "01",
        "1.5",
        "-1",
        "1e2",
        "1E-2",
        "2.50",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "true",
        "false",
        "\"x\"",
        "\"a\\\"b\"",
        "\"\\u00e9\"",
        "\"caf\u{e9}\"",
        "[]",
        "{}",
        "[1,2]",
        "{\"language\":\"x\"}",
        "{\"language\":1}",
        "[{\"product_id\":\"p\"}]",
        "[{\"product_id\":\"p\",\"product_id\":\"q\"}]",
        "{\"language\":\"x\",\"language\":\"y\"}",
        "[\"de\",\"x\"]",
        "nul",
        "tru",
        "1.",
        ".5",
        "+1",
        "0.1e",
        "\"\t\"",
        "123456789012345678901234567890",
    ];

    /// Every (start, end) byte range of a top-level value in `s` (after each
    /// `":` of the outer object, up to the next `,"` or the last `}`).
    fn value_spans(s: &str) -> Vec<(usize, usize)> {
        let v: serde_json::Value = serde_json::from_str(s).expect("a valid seed");
        let mut spans = Vec::new();
        for k in v.as_object().expect("an object").keys() {
            let pat = format!("\"{k}\"");
            let Some(at) = s.find(&pat) else { continue };
            let colon = at + pat.len() + s[at + pat.len()..].find(':').expect("a colon");
            let start = colon + 1;
            let text = serde_json::to_string(&v[k]).unwrap();
            let rest = &s[start..];
            let lead = rest.len() - rest.trim_start().len();
            spans.push((start + lead, start + lead + text.len()));
        }
        spans
    }

    fn same_as_serde(text: &str) {
        if let Some(fast) = fast::raw_event(text) {
            match serde_json::from_str::<RawEvent>(text) {
                Ok(slow) => assert_eq!(fast, slow, "{text}"),
                Err(e) => panic!("the fast path read what serde rejects ({e}): {text}"),
            }
        }
        let line = format!(r#"{{"topic":"tracking","key":"u","value":{text},"timestamp":5}}"#);
        if let Some((topic, fast)) = fast::tracking_line(&line, |t| t == "tracking") {
            let rec: RecordedLine = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("the fast path read a line serde rejects ({e}): {line}")
            });
            assert_eq!(topic, rec.topic);
            let slow: RawEvent =
                serde_json::from_str(rec.value.get()).expect("serde reads the value");
            assert_eq!(fast, slow, "{line}");
        }
    }

    #[test]
    fn the_fast_path_reads_plain_records_as_serde_does() {
        for seed in FAST_SEEDS {
            assert!(
                fast::raw_event(seed).is_some(),
                "plain JSON falls back: {seed}"
            );
            same_as_serde(seed);
            let spans = value_spans(seed);
            for &(a, b) in &spans {
                for t in TOKENS {
                    same_as_serde(&format!("{}{t}{}", &seed[..a], &seed[b..]));
                }
                // The field twice, and an unknown field after it.
                let field_start = seed[..a].rfind([',', '{']).unwrap() + 1;
                let field = &seed[field_start..b];
                same_as_serde(&format!("{},{field}{}", &seed[..b], &seed[b..]));
                same_as_serde(&format!(
                    "{},\"zz\":{{\"q\":[[[]]]}}{}",
                    &seed[..b],
                    &seed[b..]
                ));
            }
            for tail in ["", " ", "\n", "x", "}", ",", " {}"] {
                same_as_serde(&format!("{seed}{tail}"));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 3_000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7219_e5ee),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn the_fast_path_agrees_with_serde_on_mutated_records(
            i in 0..FAST_SEEDS.len(),
            edits in proptest::collection::vec((0usize..300, 0usize..TOKENS.len(), proptest::prelude::any::<u8>()), 1..4),
        ) {
            let mut text = FAST_SEEDS[i].to_string();
            for (at, t, b) in edits {
                let at = (at % text.len()).min(text.len());
                if !text.is_char_boundary(at) {
                    continue;
                }
                if b % 2 == 0 {
                    text.insert_str(at, TOKENS[t]);
                } else {
                    let end = (at + 1 + (b as usize % 5)).min(text.len());
                    if text.is_char_boundary(end) {
                        text.replace_range(at..end, &(b as char).to_string());
                    }
                }
            }
            same_as_serde(&text);
        }
    }
}
