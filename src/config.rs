//! Typed configuration of the job (`--config FILE`, TOML).
//!
//! Every table rejects unknown fields; durations carry their unit in the
//! field name. [`Config::load`] validates and resolves campaigns, naming
//! the offending field in its error.

use std::path::Path;

#[cfg(test)]
use dataflows::campaign;
use dataflows::campaign::{
    Audience, Campaign, Filters, Kind, Meta, Retention, DAY_MS, HOUR_MS, MINUTE_MS,
};
use dataflows::model::Time;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::TopicNames;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Topic names (defaults: the names in wire.md).
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Event-time handling of the live job.
    #[serde(default)]
    pub time: TimeConfig,
    /// How long state remembers facts.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Bounds on one input record; a record beyond them is dead-lettered
    /// (reason `too_large`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// librdkafka properties for every Kafka client of the job
    /// (`security.protocol`, `sasl.*`, `ssl.*`, ...); `env:NAME` and
    /// `file:PATH` values are read at start (see `kafka_props.rs`). Never
    /// written out (it may hold secrets).
    #[serde(default, skip_serializing)]
    pub kafka: crate::kafka_props::KafkaProperties,
    /// The campaigns; when absent, every kind runs as one campaign named
    /// after it, with its default parameters.
    #[serde(default, rename = "campaign")]
    pub campaigns: Option<Vec<CampaignConfig>>,
}

/// Topic names.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Behavioural events.
    pub tracking: String,
    /// Price changes.
    pub prices: String,
    /// Stock changes.
    pub stock: String,
    /// Product descriptions.
    pub catalog: String,
    /// Output: trigger records.
    pub triggers: String,
    /// Output: records that break the contract, with the reason and their origin.
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            tracking: "tracking".into(),
            prices: "prices".into(),
            stock: "stock".into(),
            catalog: "catalog".into(),
            triggers: "triggers".into(),
            dead_letter: "tripwire.dlq".into(),
        }
    }
}

impl TopicsConfig {
    /// The input topic names.
    pub fn inputs(&self) -> TopicNames {
        TopicNames {
            tracking: self.tracking.clone(),
            prices: self.prices.clone(),
            stock: self.stock.clone(),
            catalog: self.catalog.clone(),
        }
    }
}

/// Bounds on one input record (see `codec::Limits`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most items in one `order_placed` (co-purchase counting is quadratic
    /// in them).
    pub max_order_items: u64,
    /// Longest free-text field in bytes (search query, language, timezone,
    /// currency, unknown event type, catalog title, URL and image URL).
    pub max_text_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = crate::codec::Limits::default();
        LimitsConfig {
            max_order_items: d.max_order_items as u64,
            max_text_bytes: d.max_text_bytes as u64,
        }
    }
}

/// Event-time handling (triggers.md, *Time*).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// A partition's watermark is the largest `ts` read from it minus this.
    pub lateness_ms: u64,
    /// Live only: a record whose time lies more than this after the wall
    /// clock is a bad record (`future_ts`): one such record would hold its
    /// partition's watermark, and memory, until the clock reaches it.
    pub max_future_ms: u64,
    /// How often the live job re-reads partition high-water marks to tell whether it is caught up.
    pub watermark_poll_ms: u64,
    /// Width of a timely time bucket. Conditions stay exact to the ms
    /// whatever the width; wider buckets mean fewer, larger rounds (more
    /// throughput) and emission up to one bucket later.
    pub bucket_ms: u64,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            lateness_ms: 5_000,
            max_future_ms: 86_400_000,
            watermark_poll_ms: 1_000,
            bucket_ms: 1_000,
        }
    }
}

/// How long state remembers facts; see `dataflows::campaign::Retention`.
/// Read as signed integers so that a negative value is reported by name.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Activity events (views, searches, app opens, ...) are forgotten this long after their `ts`.
    pub activity_ms: i64,
    /// Cart, wishlist and order events are forgotten this long after their `ts`.
    pub cart_ms: i64,
    /// `identify` links, and anonymous events waiting for one, are forgotten this long after their `ts`.
    pub identity_ms: i64,
    /// A repeated `event_id` is recognised within this long after the first one's `ts`.
    pub dedup_ms: i64,
    /// Fired `trigger_id`s are remembered this long, so that none fires twice.
    pub fired_ms: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = Retention::default();
        let ms = |v: Time| i64::try_from(v).expect("default retention fits in i64");
        RetentionConfig {
            activity_ms: ms(r.activity_ms),
            cart_ms: ms(r.cart_ms),
            identity_ms: ms(r.identity_ms),
            dedup_ms: ms(r.dedup_ms),
            fired_ms: ms(r.fired_ms),
        }
    }
}

/// The channel names the delivery side (`tripwire-courier`, docs/courier.md)
/// understands; a campaign's `channels` must be among them.
pub const CHANNELS: [&str; 4] = ["push", "email", "sms", "webhook"];

/// One `[[campaign]]` table: a name, a kind, the kind's parameters, audience
/// filters and pass-through metadata, all in one flat table.
///
/// Durations are integers in ms (the `_ms` suffix), read as signed integers
/// so that a negative one is reported by name. A parameter that does not
/// belong to `kind` is rejected; an omitted one takes the kind's default
/// (triggers.md). Delays and windows must be shorter than the retention of
/// the state they read (`retention.activity_ms` for activity, including
/// `order_delivered`; `retention.cart_ms` for carts, wishlists and orders).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Unique campaign name (1 to 256 bytes); goes into every record and trigger id.
    pub name: String,
    /// Trigger kind: `abandoned_cart`, `abandoned_browse`, `price_drop`,
    /// `back_in_stock`, `abandoned_search`, `abandoned_category`,
    /// `wishlist_reminder`, `complementary`, `new_in_category`,
    /// `reactivation`, `review_request`, `cancelled_alternative`.
    pub kind: String,

    // ---- Kind parameters ----
    /// Time from the event a timer kind waits on to its firing, > 0.
    /// abandoned_cart (default 1 h, after the latest cart change; shorter than
    /// `retention.cart_ms`), abandoned_browse, abandoned_search,
    /// abandoned_category (default 1 h, after the latest activity; shorter
    /// than `retention.activity_ms`), wishlist_reminder (default 24 h, after
    /// each `wishlist_add`; shorter than `retention.cart_ms`), complementary
    /// (default 24 h), review_request (default 3 d) (after `order_delivered`;
    /// shorter than `retention.activity_ms`).
    pub delay_ms: Option<i64>,
    /// At most this many products, >= 1. abandoned_browse: viewed products in
    /// `items` (default 10); cancelled_alternative: alternatives per
    /// cancelled item (default 3).
    pub max_items: Option<i64>,
    /// abandoned_browse, abandoned_search, abandoned_category: a gap of at
    /// least this much between two activity events starts a new session
    /// (default 30 min), > 0.
    pub session_gap_ms: Option<i64>,
    /// price_drop: the least drop that counts, in percent of the old price
    /// (default 5), strictly between 0 and 100.
    pub min_drop_pct: Option<f64>,
    /// price_drop: a view of the product this long before the drop puts the
    /// viewer in the `viewed` audience (default 30 d), > 0 and shorter than
    /// `retention.activity_ms`.
    pub view_window_ms: Option<i64>,
    /// price_drop: the audiences, in priority order, among `cart`,
    /// `wishlist`, `viewed` (default all three in that order); non-empty, no
    /// repeats.
    pub audiences: Option<Vec<String>>,
    /// At most this many recommended products, >= 1. abandoned_category:
    /// best sellers in `items` (default 3); complementary: co-purchased
    /// products (default 1).
    pub top_n: Option<i64>,
    /// abandoned_category: best sellers are counted over orders placed in
    /// `[T - sales_window_ms, T]` (default 7 d), > 0 and at most
    /// `retention.cart_ms`.
    pub sales_window_ms: Option<i64>,
    /// complementary: co-purchases are counted over orders placed in
    /// `[T - window_ms, T]` (default 90 d), longer than `delay_ms` and at most
    /// `retention.cart_ms`. new_in_category: users who viewed the category in
    /// `[t - window_ms, t]` (and ordered nothing then) hear of the new product
    /// (default 24 h), shorter than `retention.activity_ms`.
    pub window_ms: Option<i64>,
    /// reactivation: the stages; each fires this long after the user's latest
    /// activity (default `[30 d, 60 d, 90 d]`); non-empty, each > 0, no
    /// repeats. Stages can also be split into separate campaigns.
    pub after_ms: Option<Vec<i64>>,
    /// review_request: time after `order_delivered` at which the reminder is
    /// due (default 7 d); longer than `delay_ms` and shorter than
    /// `retention.activity_ms`. `0` turns the reminder off (only the first
    /// request is sent).
    pub reminder_ms: Option<i64>,

    // ---- Filters (unset: everyone passes) ----
    /// Every kind: only users with activity in `[τ - active_within_ms, τ]` at
    /// the firing time `τ` (default: no filter); > 0, at most
    /// `retention.activity_ms`.
    pub active_within_ms: Option<i64>,
    /// Every kind: only users without an `order_placed` in
    /// `[τ - no_order_within_ms, τ]` (default: no filter); > 0, at most
    /// `retention.cart_ms`.
    pub no_order_within_ms: Option<i64>,
    /// abandoned_cart only: the cart's total (quantity x price, unknown prices
    /// count 0) is at least this (default: no filter); finite and > 0.
    pub min_cart_value: Option<f64>,
    /// Every kind: only users whose language at `τ` is one of these; users
    /// without a known language are left out (default: no filter);
    /// non-empty, no empty strings, no repeats.
    pub languages: Option<Vec<String>>,

    // ---- Pass-through metadata, copied into every record ----
    /// Every kind: delivery priority, any integer (higher wins when the
    /// courier must choose; default: unset, the courier's own default).
    pub priority: Option<i64>,
    /// Every kind: channels the delivery side may use, in preference order,
    /// among `push`, `email`, `sms`, `webhook` (default: unset, the courier's
    /// own order); non-empty, no repeats.
    pub channels: Option<Vec<String>>,
    /// Every kind: template name for the delivery side (default: unset);
    /// non-empty.
    pub template: Option<String>,
}

impl CampaignConfig {
    /// Which of the kind parameters are set, by field name.
    fn parameters_given(&self) -> [(&'static str, bool); 11] {
        [
            ("delay_ms", self.delay_ms.is_some()),
            ("max_items", self.max_items.is_some()),
            ("session_gap_ms", self.session_gap_ms.is_some()),
            ("min_drop_pct", self.min_drop_pct.is_some()),
            ("view_window_ms", self.view_window_ms.is_some()),
            ("audiences", self.audiences.is_some()),
            ("top_n", self.top_n.is_some()),
            ("sales_window_ms", self.sales_window_ms.is_some()),
            ("window_ms", self.window_ms.is_some()),
            ("after_ms", self.after_ms.is_some()),
            ("reminder_ms", self.reminder_ms.is_some()),
        ]
    }
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub topics: TopicsConfig,
    pub time: TimeConfig,
    pub retention: Retention,
    pub limits: crate::codec::Limits,
    /// The `[kafka]` client properties, values read.
    pub kafka: crate::kafka_props::ResolvedProperties,
    pub campaigns: Vec<Campaign>,
}

impl Default for Config {
    fn default() -> Self {
        ConfigFile::default()
            .resolve()
            .expect("the default configuration is valid")
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        file.resolve()
    }
}

impl ConfigFile {
    /// Validates and resolves the file's contents.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        if self.time.bucket_ms == 0 {
            return Err(invalid("time.bucket_ms", "must be > 0"));
        }
        let r = &self.retention;
        let mut ms = [0; 5];
        for (slot, (field, v)) in ms.iter_mut().zip([
            ("retention.activity_ms", r.activity_ms),
            ("retention.cart_ms", r.cart_ms),
            ("retention.identity_ms", r.identity_ms),
            ("retention.dedup_ms", r.dedup_ms),
            ("retention.fired_ms", r.fired_ms),
        ]) {
            *slot = positive_ms(field, v)?;
        }
        let [activity_ms, cart_ms, identity_ms, dedup_ms, fired_ms] = ms;
        let retention = Retention {
            activity_ms,
            cart_ms,
            identity_ms,
            dedup_ms,
            fired_ms,
        };
        let campaigns = match self.campaigns {
            None => {
                // Every kind with its defaults; the defaults must still fit
                // the configured retention.
                let all = Campaign::all_defaults();
                for c in &all {
                    check_retention(
                        &format!("campaign(default {})", c.name),
                        c,
                        &|_| true,
                        &retention,
                    )
                    .map_err(|e| match e {
                        ConfigError::Invalid { field, message } => invalid(
                            field,
                            format!(
                                "{message}; without [[campaign]] tables every kind runs \
                                     with its default parameters: list the campaigns to run, \
                                     or lengthen the retention"
                            ),
                        ),
                        e => e,
                    })?;
                }
                all
            }
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid("campaign", "at least one campaign is needed"));
                }
                let mut out: Vec<Campaign> = Vec::new();
                for (i, c) in list.into_iter().enumerate() {
                    let c = resolve_campaign(&format!("campaign[{i}]"), c, &retention)?;
                    if let Some(j) = out.iter().position(|o| o.name == c.name) {
                        return Err(invalid(
                            format!("campaign[{i}].name"),
                            format!("duplicate campaign name `{}` (also campaign[{j}])", c.name),
                        ));
                    }
                    out.push(c);
                }
                out
            }
        };
        for (field, name) in [
            ("topics.tracking", &self.topics.tracking),
            ("topics.prices", &self.topics.prices),
            ("topics.stock", &self.topics.stock),
            ("topics.catalog", &self.topics.catalog),
            ("topics.triggers", &self.topics.triggers),
            ("topics.dead_letter", &self.topics.dead_letter),
        ] {
            if name.is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        let mut limits = [0usize; 2];
        for (slot, (field, v)) in limits.iter_mut().zip([
            ("limits.max_order_items", self.limits.max_order_items),
            ("limits.max_text_bytes", self.limits.max_text_bytes),
        ]) {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
            *slot = usize::try_from(v).unwrap_or(usize::MAX);
        }
        let [max_order_items, max_text_bytes] = limits;
        Ok(Config {
            topics: self.topics,
            time: self.time,
            retention,
            limits: crate::codec::Limits {
                max_order_items,
                max_text_bytes,
            },
            kafka: self
                .kafka
                .resolve()
                .map_err(|e| invalid("kafka", e.to_string()))?,
            campaigns,
        })
    }
}

/// A duration in ms that must be positive.
fn positive_ms(field: impl Into<String>, v: i64) -> Result<Time, ConfigError> {
    if v <= 0 {
        Err(invalid(
            field,
            format!("must be a positive number of milliseconds, got {v}"),
        ))
    } else {
        Ok(v as Time)
    }
}

/// A count that must be at least 1.
fn positive_count(field: impl Into<String>, v: i64) -> Result<usize, ConfigError> {
    let field = field.into();
    if v < 1 {
        return Err(invalid(field, format!("must be at least 1, got {v}")));
    }
    usize::try_from(v).map_err(|_| invalid(field, format!("{v} is too large")))
}

/// A duration as a person would write it: `90 d`, `1 h`, `30 min`, `1500 ms`.
pub fn human_ms(ms: Time) -> String {
    for (unit, name) in [
        (DAY_MS, "d"),
        (HOUR_MS, "h"),
        (MINUTE_MS, "min"),
        (1_000, "s"),
    ] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

/// `N ms (human)`, or `N ms` when that is all there is to say.
fn ms_and_human(ms: Time) -> String {
    let human = human_ms(ms);
    if human.ends_with(" ms") {
        human
    } else {
        format!("{ms} ms ({human})")
    }
}

/// The parameters of `kind`, by field name, in declaration order, with their
/// values (JSON, for display).
pub fn parameters(kind: &Kind) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    match kind {
        Kind::AbandonedCart(p) => vec![("delay_ms", json!(p.delay_ms))],
        Kind::AbandonedBrowse(p) => vec![
            ("delay_ms", json!(p.delay_ms)),
            ("max_items", json!(p.max_items)),
            ("session_gap_ms", json!(p.session_gap_ms)),
        ],
        Kind::PriceDrop(p) => vec![
            ("min_drop_pct", json!(p.min_drop_pct)),
            ("view_window_ms", json!(p.view_window_ms)),
            ("audiences", json!(p.audiences)),
        ],
        Kind::BackInStock(_) => vec![],
        Kind::AbandonedSearch(p) => vec![
            ("delay_ms", json!(p.delay_ms)),
            ("session_gap_ms", json!(p.session_gap_ms)),
        ],
        Kind::AbandonedCategory(p) => vec![
            ("delay_ms", json!(p.delay_ms)),
            ("session_gap_ms", json!(p.session_gap_ms)),
            ("top_n", json!(p.top_n)),
            ("sales_window_ms", json!(p.sales_window_ms)),
        ],
        Kind::WishlistReminder(p) => vec![("delay_ms", json!(p.delay_ms))],
        Kind::Complementary(p) => vec![
            ("delay_ms", json!(p.delay_ms)),
            ("window_ms", json!(p.window_ms)),
            ("top_n", json!(p.top_n)),
        ],
        Kind::NewInCategory(p) => vec![("window_ms", json!(p.window_ms))],
        Kind::Reactivation(p) => vec![("after_ms", json!(p.after_ms))],
        Kind::ReviewRequest(p) => vec![
            ("delay_ms", json!(p.delay_ms)),
            ("reminder_ms", json!(p.reminder_ms)),
        ],
        Kind::CancelledAlternative(p) => vec![("max_items", json!(p.max_items))],
    }
}

/// The filters that are set, by field name.
fn filter_values(f: &Filters) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let mut out = Vec::new();
    if let Some(v) = f.active_within_ms {
        out.push(("active_within_ms", json!(v)));
    }
    if let Some(v) = f.no_order_within_ms {
        out.push(("no_order_within_ms", json!(v)));
    }
    if let Some(v) = f.min_cart_value {
        out.push(("min_cart_value", json!(v)));
    }
    if let Some(v) = &f.languages {
        out.push(("languages", json!(v)));
    }
    out
}

/// The metadata that is set, by field name.
fn meta_values(m: &Meta) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let mut out = Vec::new();
    if let Some(v) = m.priority {
        out.push(("priority", json!(v)));
    }
    if let Some(v) = &m.channels {
        out.push(("channels", json!(v)));
    }
    if let Some(v) = &m.template {
        out.push(("template", json!(v)));
    }
    out
}

/// Ordered `(name, value)` pairs serialised as a JSON object.
struct Ordered(Vec<(&'static str, serde_json::Value)>);

impl Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A resolved campaign as one JSON object: `name`, `kind`, every resolved
/// parameter (`params`), and the `filters` and `meta` fields that are set.
pub fn campaign_json(c: &Campaign) -> String {
    #[derive(Serialize)]
    struct View<'a> {
        name: &'a str,
        kind: &'a str,
        params: Ordered,
        filters: Ordered,
        meta: Ordered,
    }
    serde_json::to_string(&View {
        name: &c.name,
        kind: c.kind.name(),
        params: Ordered(parameters(&c.kind)),
        filters: Ordered(filter_values(&c.filters)),
        meta: Ordered(meta_values(&c.meta)),
    })
    .expect("a campaign serialises")
}

/// One field for people: durations with their unit spelled out, lists
/// bracketed, absent values as `none`.
fn describe_field(name: &str, v: &serde_json::Value) -> String {
    use serde_json::Value;
    let is_ms = name.ends_with("_ms");
    let one = |v: &Value| match v {
        Value::Number(n) if is_ms => n.as_u64().map_or(n.to_string(), ms_and_human),
        Value::String(s) => s.clone(),
        Value::Null => "none".to_string(),
        v => v.to_string(),
    };
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(one).collect();
            format!("{name}=[{}]", items.join(", "))
        }
        Value::Null if name == "reminder_ms" => format!("{name}=none (no reminder)"),
        v => format!("{name}={}", one(v)),
    }
}

/// A resolved campaign on one line, for people: name, kind, every resolved
/// parameter with its unit, the filters and the metadata.
pub fn describe(c: &Campaign) -> String {
    let part = |fields: Vec<(&'static str, serde_json::Value)>| {
        if fields.is_empty() {
            "none".to_string()
        } else {
            fields
                .iter()
                .map(|(n, v)| describe_field(n, v))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "{} ({}): {} | filters: {} | meta: {}",
        c.name,
        c.kind.name(),
        part(parameters(&c.kind)),
        part(filter_values(&c.filters)),
        part(meta_values(&c.meta)),
    )
}

/// Resolves one `[[campaign]]` table; `at` (`campaign[3]`) prefixes the
/// field names in errors.
fn resolve_campaign(
    at: &str,
    c: CampaignConfig,
    retention: &Retention,
) -> Result<Campaign, ConfigError> {
    let f = |name: &str| format!("{at}.{name}");
    if c.name.is_empty() || c.name.len() > 256 {
        return Err(invalid(
            f("name"),
            "must be a non-empty string of at most 256 bytes",
        ));
    }
    let mut kind = Kind::default_for(&c.kind).ok_or_else(|| {
        let known: Vec<&str> = Kind::defaults().iter().map(|k| k.name()).collect();
        invalid(
            f("kind"),
            format!(
                "unknown kind `{}`; known kinds: {}",
                c.kind,
                known.join(", ")
            ),
        )
    })?;
    // Parameters that do not belong to the kind are rejected, by name.
    let allowed: Vec<&str> = parameters(&kind).into_iter().map(|(n, _)| n).collect();
    let given = c.parameters_given();
    for (name, present) in given {
        if present && !allowed.contains(&name) {
            let its = if allowed.is_empty() {
                "it has no parameters".to_string()
            } else {
                format!("its parameters: {}", allowed.join(", "))
            };
            return Err(invalid(
                f(name),
                format!("not a parameter of kind `{}` ({its})", c.kind),
            ));
        }
    }
    let is_default = |name: &str| given.iter().any(|(n, present)| *n == name && !*present);
    let dur = |name: &str, v: i64| positive_ms(f(name), v);
    let count = |name: &str, v: i64| positive_count(f(name), v);
    match &mut kind {
        Kind::AbandonedCart(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
        }
        Kind::AbandonedBrowse(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
            if let Some(m) = c.max_items {
                p.max_items = count("max_items", m)?;
            }
            if let Some(g) = c.session_gap_ms {
                p.session_gap_ms = dur("session_gap_ms", g)?;
            }
        }
        Kind::PriceDrop(p) => {
            if let Some(m) = c.min_drop_pct {
                if !(m > 0.0 && m < 100.0) {
                    return Err(invalid(
                        f("min_drop_pct"),
                        format!("must be > 0 and < 100 (percent), got {m}"),
                    ));
                }
                p.min_drop_pct = m;
            }
            if let Some(w) = c.view_window_ms {
                p.view_window_ms = dur("view_window_ms", w)?;
            }
            if let Some(a) = &c.audiences {
                p.audiences = audiences(&f("audiences"), a)?;
            }
        }
        Kind::BackInStock(_) => {}
        Kind::AbandonedSearch(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
            if let Some(g) = c.session_gap_ms {
                p.session_gap_ms = dur("session_gap_ms", g)?;
            }
        }
        Kind::AbandonedCategory(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
            if let Some(g) = c.session_gap_ms {
                p.session_gap_ms = dur("session_gap_ms", g)?;
            }
            if let Some(n) = c.top_n {
                p.top_n = count("top_n", n)?;
            }
            if let Some(w) = c.sales_window_ms {
                p.sales_window_ms = dur("sales_window_ms", w)?;
            }
        }
        Kind::WishlistReminder(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
        }
        Kind::Complementary(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
            if let Some(w) = c.window_ms {
                p.window_ms = dur("window_ms", w)?;
            }
            if let Some(n) = c.top_n {
                p.top_n = count("top_n", n)?;
            }
            if p.window_ms <= p.delay_ms {
                return Err(invalid(
                    f("window_ms"),
                    format!(
                        "{} must be longer than delay_ms = {}: a window shorter \
                         than a delay it depends on",
                        value_ms(p.window_ms, is_default("window_ms")),
                        value_ms(p.delay_ms, is_default("delay_ms")),
                    ),
                ));
            }
        }
        Kind::NewInCategory(p) => {
            if let Some(w) = c.window_ms {
                p.window_ms = dur("window_ms", w)?;
            }
        }
        Kind::Reactivation(p) => {
            if let Some(stages) = &c.after_ms {
                if stages.is_empty() {
                    return Err(invalid(f("after_ms"), "must name at least one stage"));
                }
                let mut out: Vec<Time> = Vec::with_capacity(stages.len());
                for (j, &a) in stages.iter().enumerate() {
                    let a = dur(&format!("after_ms[{j}]"), a)?;
                    if out.contains(&a) {
                        return Err(invalid(
                            f(&format!("after_ms[{j}]")),
                            format!("the stage {} is listed twice", ms_and_human(a)),
                        ));
                    }
                    out.push(a);
                }
                p.after_ms = out;
            }
        }
        Kind::ReviewRequest(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = dur("delay_ms", d)?;
            }
            match c.reminder_ms {
                None => {}
                Some(0) => p.reminder_ms = None,
                Some(r) => p.reminder_ms = Some(dur("reminder_ms", r)?),
            }
            if let Some(r) = p.reminder_ms {
                if r <= p.delay_ms {
                    return Err(invalid(
                        f("reminder_ms"),
                        format!(
                            "{} must be longer than delay_ms = {}: a window shorter \
                             than a delay it depends on (0 turns the reminder off)",
                            value_ms(r, is_default("reminder_ms")),
                            value_ms(p.delay_ms, is_default("delay_ms")),
                        ),
                    ));
                }
            }
        }
        Kind::CancelledAlternative(p) => {
            if let Some(m) = c.max_items {
                p.max_items = count("max_items", m)?;
            }
        }
    }

    // Filters.
    let mut filters = Filters::default();
    if let Some(v) = c.active_within_ms {
        filters.active_within_ms = Some(dur("active_within_ms", v)?);
    }
    if let Some(v) = c.no_order_within_ms {
        filters.no_order_within_ms = Some(dur("no_order_within_ms", v)?);
    }
    if let Some(v) = c.min_cart_value {
        if !matches!(kind, Kind::AbandonedCart(_)) {
            return Err(invalid(
                f("min_cart_value"),
                format!(
                    "not a filter of kind `{}` (abandoned_cart campaigns only)",
                    c.kind
                ),
            ));
        }
        if !(v.is_finite() && v > 0.0) {
            return Err(invalid(
                f("min_cart_value"),
                format!("must be a finite number > 0, got {v}"),
            ));
        }
        filters.min_cart_value = Some(v);
    }
    if let Some(langs) = c.languages {
        filters.languages = Some(strings(&f("languages"), langs, "language", |_| None)?);
    }

    // Metadata.
    let mut meta = Meta {
        priority: c.priority,
        ..Meta::default()
    };
    if let Some(ch) = c.channels {
        meta.channels = Some(strings(&f("channels"), ch, "channel", |s| {
            (!CHANNELS.contains(&s)).then(|| {
                format!(
                    "unknown channel `{s}`; the courier knows {}",
                    CHANNELS.join(", ")
                )
            })
        })?);
    }
    if let Some(t) = c.template {
        if t.is_empty() {
            return Err(invalid(f("template"), "must not be empty"));
        }
        meta.template = Some(t);
    }

    let campaign = Campaign {
        name: c.name,
        kind,
        filters,
        meta,
    };
    check_retention(at, &campaign, &is_default, retention)?;
    Ok(campaign)
}

/// `N ms (human)`, or `N ms (human, the default)` when the value was not
/// configured.
fn value_ms(ms: Time, is_default: bool) -> String {
    if is_default {
        let human = human_ms(ms);
        if human.ends_with(" ms") {
            format!("{human} (the default)")
        } else {
            format!("{ms} ms ({human}, the default)")
        }
    } else {
        ms_and_human(ms)
    }
}

/// Price-drop audiences: known names, at least one, none twice.
fn audiences(field: &str, names: &[String]) -> Result<Vec<Audience>, ConfigError> {
    const ALL: [Audience; 3] = [Audience::Cart, Audience::Wishlist, Audience::Viewed];
    if names.is_empty() {
        return Err(invalid(field, "must name at least one audience"));
    }
    let mut out = Vec::with_capacity(names.len());
    for (j, n) in names.iter().enumerate() {
        let a = ALL.into_iter().find(|a| a.name() == n).ok_or_else(|| {
            invalid(
                format!("{field}[{j}]"),
                format!("unknown audience `{n}`; known audiences: cart, wishlist, viewed"),
            )
        })?;
        if out.contains(&a) {
            return Err(invalid(
                format!("{field}[{j}]"),
                format!("names the audience `{n}` twice"),
            ));
        }
        out.push(a);
    }
    Ok(out)
}

/// A non-empty list of non-empty strings, none twice, each passing `check`
/// (which returns an error message).
fn strings(
    field: &str,
    list: Vec<String>,
    what: &str,
    check: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(invalid(field, format!("must name at least one {what}")));
    }
    for (j, s) in list.iter().enumerate() {
        let at = format!("{field}[{j}]");
        if s.is_empty() {
            return Err(invalid(at, format!("an empty {what} name")));
        }
        if let Some(message) = check(s) {
            return Err(invalid(at, message));
        }
        if list[..j].contains(s) {
            return Err(invalid(at, format!("names the {what} `{s}` twice")));
        }
    }
    Ok(list)
}

/// Delays and windows must fit the retention of the state they read, or the
/// trigger could never see it. `is_default(field)` tells whether a value is
/// the kind's default (for the message).
fn check_retention(
    at: &str,
    c: &Campaign,
    is_default: &dyn Fn(&str) -> bool,
    retention: &Retention,
) -> Result<(), ConfigError> {
    let activity = ("retention.activity_ms", retention.activity_ms);
    let cart = ("retention.cart_ms", retention.cart_ms);
    // (field, value, (limit field, limit), strictly shorter?)
    let mut checks: Vec<(&str, Time, (&str, Time), bool)> = Vec::new();
    match &c.kind {
        Kind::AbandonedCart(p) => checks.push(("delay_ms", p.delay_ms, cart, true)),
        Kind::WishlistReminder(p) => checks.push(("delay_ms", p.delay_ms, cart, true)),
        Kind::AbandonedBrowse(p) => checks.push(("delay_ms", p.delay_ms, activity, true)),
        Kind::AbandonedSearch(p) => checks.push(("delay_ms", p.delay_ms, activity, true)),
        Kind::AbandonedCategory(p) => {
            checks.push(("delay_ms", p.delay_ms, activity, true));
            checks.push(("sales_window_ms", p.sales_window_ms, cart, false));
        }
        Kind::PriceDrop(p) => checks.push(("view_window_ms", p.view_window_ms, activity, true)),
        Kind::Complementary(p) => {
            checks.push(("delay_ms", p.delay_ms, activity, true));
            checks.push(("window_ms", p.window_ms, cart, false));
        }
        Kind::NewInCategory(p) => checks.push(("window_ms", p.window_ms, activity, true)),
        Kind::ReviewRequest(p) => {
            checks.push(("delay_ms", p.delay_ms, activity, true));
            if let Some(r) = p.reminder_ms {
                checks.push(("reminder_ms", r, activity, true));
            }
        }
        Kind::BackInStock(_) | Kind::Reactivation(_) | Kind::CancelledAlternative(_) => {}
    }
    if let Some(v) = c.filters.active_within_ms {
        checks.push(("active_within_ms", v, activity, false));
    }
    if let Some(v) = c.filters.no_order_within_ms {
        checks.push(("no_order_within_ms", v, cart, false));
    }
    for (name, v, (limit_name, limit), strict) in checks {
        let bad = if strict { v >= limit } else { v > limit };
        if bad {
            let relation = if strict {
                "must be shorter than"
            } else {
                "must not exceed"
            };
            return Err(invalid(
                format!("{at}.{name}"),
                format!(
                    "{} {relation} {limit_name} = {}, the retention of the state it reads",
                    value_ms(v, is_default(name)),
                    ms_and_human(limit),
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_checked() {
        let c = Config::parse("[limits]\nmax_order_items = 50\n", "test").expect("valid");
        assert_eq!(c.limits.max_order_items, 50);
        assert_eq!(
            c.limits.max_text_bytes,
            crate::codec::Limits::default().max_text_bytes
        );
        let e = Config::parse("[limits]\nmax_text_bytes = 0\n", "test").expect_err("zero");
        assert!(e.to_string().contains("limits.max_text_bytes"), "{e}");
        let e = Config::parse("[limits]\nmax_items = 5\n", "test").expect_err("unknown");
        assert!(e.to_string().contains("max_items"), "{e}");
    }

    /// One campaign table called `x` of `kind` with extra lines.
    fn one(kind: &str, extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("[[campaign]]\nname = 'x'\nkind = '{kind}'\n{extra}\n"),
            "test",
        )
    }

    fn kind_of(kind: &str, extra: &str) -> Kind {
        one(kind, extra)
            .unwrap_or_else(|e| panic!("{kind} {extra}: {e}"))
            .campaigns
            .remove(0)
            .kind
    }

    /// The error of a configuration that must be rejected.
    fn error(text: &str) -> String {
        match Config::parse(text, "test") {
            Ok(c) => panic!("accepted:\n{text}\n{:?}", c.campaigns),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn default_runs_every_kind_once() {
        let c = Config::default();
        let names: Vec<&str> = c.campaigns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "abandoned_cart",
                "abandoned_browse",
                "price_drop",
                "back_in_stock",
                "abandoned_search",
                "abandoned_category",
                "wishlist_reminder",
                "complementary",
                "new_in_category",
                "reactivation",
                "review_request",
                "cancelled_alternative",
            ]
        );
        assert_eq!(c.campaigns, Campaign::all_defaults());
        // A file without campaigns runs the same.
        assert_eq!(
            Config::parse("[time]\nbucket_ms = 10", "test")
                .unwrap()
                .campaigns,
            Campaign::all_defaults()
        );
    }

    #[test]
    fn every_kind_resolves_with_defaults() {
        for default in Kind::defaults() {
            let c = one(default.name(), "").unwrap();
            assert_eq!(c.campaigns.len(), 1);
            assert_eq!(c.campaigns[0].name, "x");
            assert_eq!(c.campaigns[0].kind, default, "{}", default.name());
            assert_eq!(c.campaigns[0].filters, Filters::default());
            assert_eq!(c.campaigns[0].meta, Meta::default());
        }
    }

    #[test]
    fn parameters_are_applied() {
        use campaign::*;
        assert_eq!(
            kind_of("abandoned_cart", "delay_ms = 7200000"),
            Kind::AbandonedCart(AbandonedCart {
                delay_ms: 2 * HOUR_MS
            })
        );
        assert_eq!(
            kind_of(
                "abandoned_browse",
                "delay_ms = 600000\nmax_items = 4\nsession_gap_ms = 900000"
            ),
            Kind::AbandonedBrowse(AbandonedBrowse {
                delay_ms: 10 * MINUTE_MS,
                max_items: 4,
                session_gap_ms: 15 * MINUTE_MS,
            })
        );
        assert_eq!(
            kind_of(
                "price_drop",
                "min_drop_pct = 10\nview_window_ms = 604800000\naudiences = ['viewed', 'cart']"
            ),
            Kind::PriceDrop(PriceDrop {
                min_drop_pct: 10.0,
                view_window_ms: 7 * DAY_MS,
                audiences: vec![Audience::Viewed, Audience::Cart],
            })
        );
        assert_eq!(
            kind_of(
                "abandoned_search",
                "delay_ms = 1800000\nsession_gap_ms = 600000"
            ),
            Kind::AbandonedSearch(AbandonedSearch {
                delay_ms: 30 * MINUTE_MS,
                session_gap_ms: 10 * MINUTE_MS,
            })
        );
        assert_eq!(
            kind_of(
                "abandoned_category",
                "delay_ms = 7200000\nsession_gap_ms = 600000\ntop_n = 5\nsales_window_ms = 86400000"
            ),
            Kind::AbandonedCategory(AbandonedCategory {
                delay_ms: 2 * HOUR_MS,
                session_gap_ms: 10 * MINUTE_MS,
                top_n: 5,
                sales_window_ms: DAY_MS,
            })
        );
        assert_eq!(
            kind_of("wishlist_reminder", "delay_ms = 259200000"),
            Kind::WishlistReminder(WishlistReminder {
                delay_ms: 3 * DAY_MS
            })
        );
        assert_eq!(
            kind_of(
                "complementary",
                "delay_ms = 172800000\nwindow_ms = 2592000000\ntop_n = 2"
            ),
            Kind::Complementary(Complementary {
                delay_ms: 2 * DAY_MS,
                window_ms: 30 * DAY_MS,
                top_n: 2,
            })
        );
        assert_eq!(
            kind_of("new_in_category", "window_ms = 604800000"),
            Kind::NewInCategory(NewInCategory {
                window_ms: 7 * DAY_MS
            })
        );
        assert_eq!(
            kind_of("reactivation", "after_ms = [1209600000]"),
            Kind::Reactivation(Reactivation {
                after_ms: vec![14 * DAY_MS]
            })
        );
        assert_eq!(
            kind_of(
                "review_request",
                "delay_ms = 86400000\nreminder_ms = 432000000"
            ),
            Kind::ReviewRequest(ReviewRequest {
                delay_ms: DAY_MS,
                reminder_ms: Some(5 * DAY_MS),
            })
        );
        // `reminder_ms = 0` turns the reminder off.
        assert_eq!(
            kind_of("review_request", "reminder_ms = 0"),
            Kind::ReviewRequest(ReviewRequest {
                delay_ms: 3 * DAY_MS,
                reminder_ms: None,
            })
        );
        // Without a reminder, the delay is not bounded by the default reminder.
        assert_eq!(
            kind_of("review_request", "delay_ms = 864000000\nreminder_ms = 0"),
            Kind::ReviewRequest(ReviewRequest {
                delay_ms: 10 * DAY_MS,
                reminder_ms: None,
            })
        );
        assert_eq!(
            kind_of("cancelled_alternative", "max_items = 5"),
            Kind::CancelledAlternative(CancelledAlternative { max_items: 5 })
        );
    }

    #[test]
    fn filters_and_metadata_are_applied() {
        let c = one(
            "abandoned_cart",
            "active_within_ms = 604800000\nno_order_within_ms = 86400000\n\
             min_cart_value = 25.5\nlanguages = ['de', 'fr']\n\
             priority = -3\nchannels = ['email', 'push', 'sms', 'webhook']\ntemplate = 'cart_de'",
        )
        .unwrap();
        let c = &c.campaigns[0];
        assert_eq!(
            c.filters,
            Filters {
                active_within_ms: Some(7 * DAY_MS),
                no_order_within_ms: Some(DAY_MS),
                min_cart_value: Some(25.5),
                languages: Some(vec!["de".into(), "fr".into()]),
            }
        );
        assert_eq!(
            c.meta,
            Meta {
                priority: Some(-3),
                channels: Some(vec![
                    "email".into(),
                    "push".into(),
                    "sms".into(),
                    "webhook".into()
                ]),
                template: Some("cart_de".into()),
            }
        );
        // Filters other than min_cart_value and the metadata apply to every kind.
        for default in Kind::defaults() {
            let c = one(
                default.name(),
                "active_within_ms = 86400000\nno_order_within_ms = 86400000\n\
                 languages = ['en']\npriority = 1\nchannels = ['push']\ntemplate = 't'",
            )
            .unwrap_or_else(|e| panic!("{}: {e}", default.name()));
            assert_eq!(c.campaigns[0].meta.priority, Some(1));
        }
    }

    #[test]
    fn two_campaigns_of_one_kind_side_by_side() {
        let c = Config::parse(
            r#"
            [[campaign]]
            name = "cart_1h"
            kind = "abandoned_cart"
            [[campaign]]
            name = "cart_24h"
            kind = "abandoned_cart"
            delay_ms = 86400000
            min_cart_value = 50.0
            [[campaign]]
            name = "winback_30d"
            kind = "reactivation"
            after_ms = [2592000000]
            [[campaign]]
            name = "winback_60d_90d"
            kind = "reactivation"
            after_ms = [5184000000, 7776000000]
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(c.campaigns.len(), 4);
        assert_eq!(
            c.campaigns[0].kind,
            Kind::AbandonedCart(campaign::AbandonedCart { delay_ms: HOUR_MS })
        );
        assert_eq!(
            c.campaigns[1].kind,
            Kind::AbandonedCart(campaign::AbandonedCart {
                delay_ms: 86_400_000
            })
        );
        assert_eq!(c.campaigns[1].filters.min_cart_value, Some(50.0));
        assert_eq!(c.campaigns[0].filters.min_cart_value, None);
        assert_eq!(
            c.campaigns[3].kind,
            Kind::Reactivation(campaign::Reactivation {
                after_ms: vec![60 * DAY_MS, 90 * DAY_MS]
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let c = |kind: &str, extra: &str| format!("[[campaign]]\nname='x'\nkind='{kind}'\n{extra}");
        let cases: Vec<(String, &str, &str)> = vec![
            // Unknown kinds list the known ones.
            (c("nope", ""), "campaign[0].kind", "cancelled_alternative"),
            // Parameters of another kind.
            (
                c("abandoned_cart", "min_drop_pct=3.0"),
                "campaign[0].min_drop_pct",
                "not a parameter of kind `abandoned_cart`",
            ),
            (
                c("back_in_stock", "delay_ms=1000"),
                "campaign[0].delay_ms",
                "no parameters",
            ),
            (
                c("abandoned_browse", "top_n=3"),
                "campaign[0].top_n",
                "not a parameter",
            ),
            (
                c("price_drop", "after_ms=[1000]"),
                "campaign[0].after_ms",
                "not a parameter",
            ),
            (
                c("wishlist_reminder", "reminder_ms=1000"),
                "campaign[0].reminder_ms",
                "not a parameter",
            ),
            (
                c("new_in_category", "delay_ms=1000"),
                "campaign[0].delay_ms",
                "not a parameter",
            ),
            (
                c("reactivation", "window_ms=1000"),
                "campaign[0].window_ms",
                "not a parameter",
            ),
            (
                c("review_request", "max_items=3"),
                "campaign[0].max_items",
                "not a parameter",
            ),
            (
                c("cancelled_alternative", "top_n=3"),
                "campaign[0].top_n",
                "not a parameter",
            ),
            (
                c("abandoned_search", "sales_window_ms=1000"),
                "campaign[0].sales_window_ms",
                "not a parameter",
            ),
            (
                c("complementary", "session_gap_ms=1000"),
                "campaign[0].session_gap_ms",
                "not a parameter",
            ),
            (
                c("abandoned_category", "view_window_ms=1000"),
                "campaign[0].view_window_ms",
                "not a parameter",
            ),
            (
                c("price_drop", "min_cart_value=10.0"),
                "campaign[0].min_cart_value",
                "abandoned_cart",
            ),
            // Zero and negative durations.
            (
                c("abandoned_cart", "delay_ms=0"),
                "campaign[0].delay_ms",
                "positive",
            ),
            (
                c("abandoned_cart", "delay_ms=-5"),
                "campaign[0].delay_ms",
                "got -5",
            ),
            (
                c("abandoned_browse", "session_gap_ms=-1"),
                "campaign[0].session_gap_ms",
                "positive",
            ),
            (
                c("price_drop", "view_window_ms=0"),
                "campaign[0].view_window_ms",
                "positive",
            ),
            (
                c("abandoned_category", "sales_window_ms=-86400000"),
                "campaign[0].sales_window_ms",
                "positive",
            ),
            (
                c("new_in_category", "window_ms=0"),
                "campaign[0].window_ms",
                "positive",
            ),
            (
                c("review_request", "reminder_ms=-1"),
                "campaign[0].reminder_ms",
                "positive",
            ),
            (
                c("abandoned_cart", "active_within_ms=0"),
                "campaign[0].active_within_ms",
                "positive",
            ),
            (
                c("abandoned_cart", "no_order_within_ms=-7"),
                "campaign[0].no_order_within_ms",
                "positive",
            ),
            // Counts.
            (
                c("abandoned_browse", "max_items=0"),
                "campaign[0].max_items",
                "at least 1",
            ),
            (
                c("cancelled_alternative", "max_items=-2"),
                "campaign[0].max_items",
                "at least 1",
            ),
            (
                c("abandoned_category", "top_n=0"),
                "campaign[0].top_n",
                "at least 1",
            ),
            (
                c("complementary", "top_n=0"),
                "campaign[0].top_n",
                "at least 1",
            ),
            // Percentages.
            (
                c("price_drop", "min_drop_pct=150.0"),
                "campaign[0].min_drop_pct",
                "< 100",
            ),
            (
                c("price_drop", "min_drop_pct=0"),
                "campaign[0].min_drop_pct",
                "> 0",
            ),
            (
                c("price_drop", "min_drop_pct=100"),
                "campaign[0].min_drop_pct",
                "< 100",
            ),
            (
                c("price_drop", "min_drop_pct=nan"),
                "campaign[0].min_drop_pct",
                "> 0",
            ),
            (
                c("price_drop", "min_drop_pct=-5.0"),
                "campaign[0].min_drop_pct",
                "> 0",
            ),
            // Audiences.
            (
                c("price_drop", "audiences=[]"),
                "campaign[0].audiences",
                "at least one",
            ),
            (
                c("price_drop", "audiences=['cart','fans']"),
                "campaign[0].audiences[1]",
                "unknown audience",
            ),
            (
                c("price_drop", "audiences=['cart','cart']"),
                "campaign[0].audiences[1]",
                "twice",
            ),
            // Windows shorter than the delays they depend on.
            (
                c(
                    "review_request",
                    "delay_ms=604800000\nreminder_ms=604800000",
                ),
                "campaign[0].reminder_ms",
                "a window shorter than a delay it depends on",
            ),
            (
                c("review_request", "delay_ms=864000000"),
                "campaign[0].reminder_ms",
                "(7 d, the default)",
            ),
            (
                c("complementary", "delay_ms=86400000\nwindow_ms=3600000"),
                "campaign[0].window_ms",
                "a window shorter than a delay it depends on",
            ),
            // Reactivation stages.
            (
                c("reactivation", "after_ms=[]"),
                "campaign[0].after_ms",
                "at least one stage",
            ),
            (
                c("reactivation", "after_ms=[2592000000, 0]"),
                "campaign[0].after_ms[1]",
                "positive",
            ),
            (
                c("reactivation", "after_ms=[-1]"),
                "campaign[0].after_ms[0]",
                "positive",
            ),
            (
                c(
                    "reactivation",
                    "after_ms=[2592000000, 5184000000, 2592000000]",
                ),
                "campaign[0].after_ms[2]",
                "twice",
            ),
            // Delays beyond the retention of the state they read.
            (
                c("abandoned_browse", "delay_ms=2678400000"),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("abandoned_search", "delay_ms=2678400000"),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("abandoned_category", "delay_ms=2678400001"),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("review_request", "delay_ms=2678400000\nreminder_ms=0"),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("review_request", "reminder_ms=2678400000"),
                "campaign[0].reminder_ms",
                "retention.activity_ms",
            ),
            (
                c("complementary", "delay_ms=2678400000"),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("abandoned_cart", "delay_ms=7776000000"),
                "campaign[0].delay_ms",
                "retention.cart_ms",
            ),
            (
                c("wishlist_reminder", "delay_ms=7776000000"),
                "campaign[0].delay_ms",
                "retention.cart_ms",
            ),
            (
                format!(
                    "[retention]\ncart_ms=86400000\n{}",
                    c("wishlist_reminder", "")
                ),
                "campaign[0].delay_ms",
                "(1 d, the default) must be shorter than retention.cart_ms",
            ),
            (
                format!(
                    "[retention]\nactivity_ms=3600000\n{}",
                    c("abandoned_browse", "")
                ),
                "campaign[0].delay_ms",
                "retention.activity_ms",
            ),
            (
                c("price_drop", "view_window_ms=2678400000"),
                "campaign[0].view_window_ms",
                "retention.activity_ms",
            ),
            (
                c("new_in_category", "window_ms=2678400000"),
                "campaign[0].window_ms",
                "retention.activity_ms",
            ),
            (
                c("complementary", "window_ms=7776000001"),
                "campaign[0].window_ms",
                "retention.cart_ms",
            ),
            (
                c("abandoned_category", "sales_window_ms=7776000001"),
                "campaign[0].sales_window_ms",
                "retention.cart_ms",
            ),
            (
                c("abandoned_cart", "active_within_ms=2678400001"),
                "campaign[0].active_within_ms",
                "retention.activity_ms",
            ),
            (
                c("abandoned_cart", "no_order_within_ms=7776000001"),
                "campaign[0].no_order_within_ms",
                "retention.cart_ms",
            ),
            // Without campaigns, the defaults must fit the retention too.
            (
                "[retention]\ncart_ms=86400000".to_string(),
                "campaign(default abandoned_category).sales_window_ms",
                "list the campaigns",
            ),
            // Filters.
            (
                c("abandoned_cart", "min_cart_value=0.0"),
                "campaign[0].min_cart_value",
                "> 0",
            ),
            (
                c("abandoned_cart", "min_cart_value=-1.0"),
                "campaign[0].min_cart_value",
                "> 0",
            ),
            (
                c("abandoned_cart", "min_cart_value=inf"),
                "campaign[0].min_cart_value",
                "finite",
            ),
            (
                c("abandoned_cart", "min_cart_value=nan"),
                "campaign[0].min_cart_value",
                "finite",
            ),
            (
                c("abandoned_cart", "languages=[]"),
                "campaign[0].languages",
                "at least one language",
            ),
            (
                c("abandoned_cart", "languages=['de','']"),
                "campaign[0].languages[1]",
                "empty",
            ),
            // Metadata.
            (
                c("abandoned_cart", "channels=[]"),
                "campaign[0].channels",
                "at least one channel",
            ),
            (
                c("abandoned_cart", "channels=['push','fax']"),
                "campaign[0].channels[1]",
                "push, email, sms, webhook",
            ),
            (
                c("abandoned_cart", "channels=['push','push']"),
                "campaign[0].channels[1]",
                "twice",
            ),
            (
                c("abandoned_cart", "template=''"),
                "campaign[0].template",
                "empty",
            ),
            // Names.
            (c("abandoned_cart", "bogus=1"), "bogus", "unknown field"),
            (
                format!("{}\n{}", c("back_in_stock", ""), c("back_in_stock", "")),
                "campaign[1].name",
                "duplicate campaign name `x`",
            ),
            (
                "[[campaign]]\nname=''\nkind='back_in_stock'".to_string(),
                "campaign[0].name",
                "non-empty",
            ),
            ("campaign = []".to_string(), "campaign", "at least one"),
            // Other tables.
            (
                "[retention]\nactivity_ms=0".to_string(),
                "retention.activity_ms",
                "positive",
            ),
            (
                "[retention]\nfired_ms=-1".to_string(),
                "retention.fired_ms",
                "got -1",
            ),
            ("[time]\nbucket_ms=0".to_string(), "time.bucket_ms", "> 0"),
            (
                "[topics]\ntracking=''".to_string(),
                "topics.tracking",
                "empty",
            ),
            (
                "[topics]\ntracking='t'\nbogus=1".to_string(),
                "bogus",
                "unknown field",
            ),
        ];
        for (text, field, what) in cases {
            let err = error(&text);
            assert!(
                err.contains(field),
                "{text}\n-> {err}\n(expected field {field})"
            );
            assert!(err.contains(what), "{text}\n-> {err}\n(expected {what:?})");
        }
        // The campaign's index is the one in the file.
        let err = error(&format!(
            "{}\n{}\n{}\n{}",
            c("abandoned_cart", "").replace("'x'", "'a'"),
            c("abandoned_cart", "").replace("'x'", "'b'"),
            c("abandoned_cart", "").replace("'x'", "'c'"),
            c("abandoned_browse", "top_n = 3"),
        ));
        assert!(
            err.contains("campaign[3].top_n")
                && err.contains("not a parameter of kind `abandoned_browse`"),
            "{err}"
        );
    }

    #[test]
    fn boundaries_that_are_allowed() {
        // Windows may reach the retention exactly; delays must be shorter.
        one("complementary", "window_ms = 7776000000").unwrap();
        one("abandoned_category", "sales_window_ms = 7776000000").unwrap();
        one("abandoned_cart", "delay_ms = 7775999999").unwrap();
        one("abandoned_browse", "delay_ms = 2678399999").unwrap();
        one("price_drop", "min_drop_pct = 99.5").unwrap();
        one("price_drop", "audiences = ['viewed']").unwrap();
        one("review_request", "delay_ms = 1\nreminder_ms = 2").unwrap();
        one("complementary", "delay_ms = 1\nwindow_ms = 2").unwrap();
        one("reactivation", "after_ms = [7776000000, 2592000000]").unwrap();
        one("abandoned_cart", "min_cart_value = 0.01").unwrap();
        // Reactivation stages may exceed the activity retention (they read
        // the latest activity time only).
        one("reactivation", "after_ms = [31536000000]").unwrap();
    }

    #[test]
    fn check_config_output() {
        let c = Config::parse(
            "[[campaign]]\nname='cart_24h'\nkind='abandoned_cart'\ndelay_ms=86400000\n\
             min_cart_value=20.0\nlanguages=['de']\npriority=5\nchannels=['push','email']\n\
             template='cart_second'\n\
             [[campaign]]\nname='reviews'\nkind='review_request'\nreminder_ms=0\n\
             [[campaign]]\nname='bis'\nkind='back_in_stock'\n\
             [[campaign]]\nname='winback'\nkind='reactivation'\n",
            "test",
        )
        .unwrap();
        let lines: Vec<String> = c.campaigns.iter().map(describe).collect();
        assert_eq!(
            lines[0],
            "cart_24h (abandoned_cart): delay_ms=86400000 ms (1 d) | filters: \
             min_cart_value=20.0, languages=[de] | meta: priority=5, channels=[push, email], \
             template=cart_second"
        );
        assert_eq!(
            lines[1],
            "reviews (review_request): delay_ms=259200000 ms (3 d), reminder_ms=none (no reminder) \
             | filters: none | meta: none"
        );
        assert_eq!(
            lines[2],
            "bis (back_in_stock): none | filters: none | meta: none"
        );
        assert_eq!(
            lines[3],
            "winback (reactivation): after_ms=[2592000000 ms (30 d), 5184000000 ms (60 d), \
             7776000000 ms (90 d)] | filters: none | meta: none"
        );
        assert_eq!(
            campaign_json(&c.campaigns[0]),
            r#"{"name":"cart_24h","kind":"abandoned_cart","params":{"delay_ms":86400000},"filters":{"min_cart_value":20.0,"languages":["de"]},"meta":{"priority":5,"channels":["push","email"],"template":"cart_second"}}"#
        );
        assert_eq!(
            campaign_json(&c.campaigns[1]),
            r#"{"name":"reviews","kind":"review_request","params":{"delay_ms":259200000,"reminder_ms":null},"filters":{},"meta":{}}"#
        );
        assert_eq!(human_ms(1_500), "1500 ms");
        assert_eq!(human_ms(90_000), "90 s");
        assert_eq!(human_ms(30 * MINUTE_MS), "30 min");
    }

    #[test]
    fn the_deploy_example_passes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tripwire.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Every kind appears in the example.
        for default in Kind::defaults() {
            assert!(
                c.campaigns.iter().any(|c| c.kind.name() == default.name()),
                "deploy/tripwire.toml has no {} campaign",
                default.name()
            );
        }
        let carts = c
            .campaigns
            .iter()
            .filter(|c| matches!(c.kind, Kind::AbandonedCart(_)))
            .count();
        assert!(carts >= 2, "two abandoned_cart campaigns side by side");
        // The other example files load too.
        for f in [
            "deploy/bench-steady.toml",
            "deploy/bench-without-price-drop.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
