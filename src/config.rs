//! Typed configuration of the job (`--config FILE`, TOML).
//!
//! Every table rejects unknown fields; durations carry their unit in the
//! field name. [`Config::load`] validates and resolves campaigns, naming
//! the offending field in its error.

use std::path::Path;

#[cfg(test)]
use dataflows::campaign;
use dataflows::campaign::{Audience, Campaign, Kind, Retention};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::TopicNames;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
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
    /// The campaigns; when absent, every kind runs as one campaign named after it.
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

/// Event-time handling (triggers.md, *Time*).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// A partition's watermark is the largest `ts` read from it minus this.
    pub lateness_ms: u64,
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
            watermark_poll_ms: 1_000,
            bucket_ms: 1_000,
        }
    }
}

/// How long state remembers facts; see `dataflows::campaign::Retention`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Activity events (views, searches, app opens, ...) are forgotten this long after their `ts`.
    pub activity_ms: u64,
    /// Cart, wishlist and order events are forgotten this long after their `ts`.
    pub cart_ms: u64,
    /// `identify` links, and anonymous events waiting for one, are forgotten this long after their `ts`.
    pub identity_ms: u64,
    /// A repeated `event_id` is recognised within this long after the first one's `ts`.
    pub dedup_ms: u64,
    /// Fired `trigger_id`s are remembered this long, so that none fires twice.
    pub fired_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let r = Retention::default();
        RetentionConfig {
            activity_ms: r.activity_ms,
            cart_ms: r.cart_ms,
            identity_ms: r.identity_ms,
            dedup_ms: r.dedup_ms,
            fired_ms: r.fired_ms,
        }
    }
}

/// One `[[campaign]]` table. Which parameters apply depends on `kind`;
/// a parameter of another kind is rejected.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Unique campaign name; goes into every record and trigger id.
    pub name: String,
    /// Trigger kind: `abandoned_cart`, `abandoned_browse`, `price_drop`, `back_in_stock`.
    pub kind: String,
    /// abandoned_cart, abandoned_browse: time after the latest change or activity (default 1 h).
    pub delay_ms: Option<u64>,
    /// abandoned_browse: at most this many products in `items` (default 10).
    pub max_items: Option<usize>,
    /// abandoned_browse: a gap this long starts a new session (default 30 min).
    pub session_gap_ms: Option<u64>,
    /// price_drop: least drop that counts, percent of the old price (default 5).
    pub min_drop_pct: Option<f64>,
    /// price_drop: how far back a view puts the viewer in the `viewed` audience (default 30 d).
    pub view_window_ms: Option<u64>,
    /// price_drop: audiences in priority order (default ["cart", "wishlist", "viewed"]).
    pub audiences: Option<Vec<Audience>>,
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub topics: TopicsConfig,
    pub time: TimeConfig,
    pub retention: Retention,
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
        for (field, v) in [
            ("retention.activity_ms", r.activity_ms),
            ("retention.cart_ms", r.cart_ms),
            ("retention.identity_ms", r.identity_ms),
            ("retention.dedup_ms", r.dedup_ms),
            ("retention.fired_ms", r.fired_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        let retention = Retention {
            activity_ms: r.activity_ms,
            cart_ms: r.cart_ms,
            identity_ms: r.identity_ms,
            dedup_ms: r.dedup_ms,
            fired_ms: r.fired_ms,
        };
        let campaigns = match self.campaigns {
            None => Campaign::all_defaults(),
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid("campaign", "at least one campaign is needed"));
                }
                let mut out: Vec<Campaign> = Vec::new();
                for (i, c) in list.into_iter().enumerate() {
                    let c = resolve_campaign(i, c, &retention)?;
                    if out.iter().any(|o| o.name == c.name) {
                        return Err(invalid(
                            format!("campaign[{i}].name"),
                            format!("duplicate campaign name `{}`", c.name),
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
        Ok(Config {
            topics: self.topics,
            time: self.time,
            retention,
            campaigns,
        })
    }
}

fn resolve_campaign(
    i: usize,
    c: CampaignConfig,
    retention: &Retention,
) -> Result<Campaign, ConfigError> {
    let f = |name: &str| format!("campaign[{i}].{name}");
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
    let given: [(&str, bool); 6] = [
        ("delay_ms", c.delay_ms.is_some()),
        ("max_items", c.max_items.is_some()),
        ("session_gap_ms", c.session_gap_ms.is_some()),
        ("min_drop_pct", c.min_drop_pct.is_some()),
        ("view_window_ms", c.view_window_ms.is_some()),
        ("audiences", c.audiences.is_some()),
    ];
    let allowed: &[&str] = match kind {
        Kind::AbandonedCart(_) => &["delay_ms"],
        Kind::AbandonedBrowse(_) => &["delay_ms", "max_items", "session_gap_ms"],
        Kind::PriceDrop(_) => &["min_drop_pct", "view_window_ms", "audiences"],
        Kind::BackInStock(_) => &[],
    };
    for (name, present) in given {
        if present && !allowed.contains(&name) {
            return Err(invalid(
                f(name),
                format!("not a parameter of kind `{}`", c.kind),
            ));
        }
    }
    let positive = |name: &str, v: u64| {
        if v == 0 {
            Err(invalid(f(name), "must be > 0"))
        } else {
            Ok(v)
        }
    };
    match &mut kind {
        Kind::AbandonedCart(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = positive("delay_ms", d)?;
            }
        }
        Kind::AbandonedBrowse(p) => {
            if let Some(d) = c.delay_ms {
                p.delay_ms = positive("delay_ms", d)?;
            }
            if let Some(m) = c.max_items {
                if m == 0 {
                    return Err(invalid(f("max_items"), "must be >= 1"));
                }
                p.max_items = m;
            }
            if let Some(g) = c.session_gap_ms {
                p.session_gap_ms = positive("session_gap_ms", g)?;
            }
            if p.delay_ms >= retention.activity_ms {
                return Err(invalid(
                    f("delay_ms"),
                    "must be shorter than retention.activity_ms",
                ));
            }
        }
        Kind::PriceDrop(p) => {
            if let Some(m) = c.min_drop_pct {
                if !(m > 0.0 && m < 100.0) {
                    return Err(invalid(f("min_drop_pct"), "must be > 0 and < 100"));
                }
                p.min_drop_pct = m;
            }
            if let Some(w) = c.view_window_ms {
                p.view_window_ms = positive("view_window_ms", w)?;
            }
            if p.view_window_ms >= retention.activity_ms {
                return Err(invalid(
                    f("view_window_ms"),
                    format!(
                        "must be shorter than retention.activity_ms ({} ms)",
                        retention.activity_ms
                    ),
                ));
            }
            if let Some(a) = c.audiences {
                if a.is_empty() {
                    return Err(invalid(f("audiences"), "must name at least one audience"));
                }
                let mut seen = a.clone();
                seen.sort();
                seen.dedup();
                if seen.len() != a.len() {
                    return Err(invalid(f("audiences"), "names an audience twice"));
                }
                p.audiences = a;
            }
        }
        Kind::BackInStock(_) => {}
    }
    if let Kind::AbandonedCart(p) = &kind {
        if p.delay_ms >= retention.cart_ms {
            return Err(invalid(
                f("delay_ms"),
                "must be shorter than retention.cart_ms",
            ));
        }
    }
    Ok(Campaign { name: c.name, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "back_in_stock"
            ]
        );
    }

    #[test]
    fn two_campaigns_of_one_kind() {
        let c = Config::parse(
            r#"
            [[campaign]]
            name = "cart_1h"
            kind = "abandoned_cart"
            [[campaign]]
            name = "cart_24h"
            kind = "abandoned_cart"
            delay_ms = 86400000
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(c.campaigns.len(), 2);
        assert_eq!(
            c.campaigns[1].kind,
            Kind::AbandonedCart(campaign::AbandonedCart {
                delay_ms: 86_400_000
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[[campaign]]\nname='x'\nkind='nope'", "campaign[0].kind"),
            ("[[campaign]]\nname='x'\nkind='abandoned_cart'\nmin_drop_pct=3.0", "campaign[0].min_drop_pct"),
            ("[[campaign]]\nname='x'\nkind='abandoned_cart'\ndelay_ms=0", "campaign[0].delay_ms"),
            ("[[campaign]]\nname='x'\nkind='price_drop'\nmin_drop_pct=150.0", "campaign[0].min_drop_pct"),
            ("[[campaign]]\nname='x'\nkind='back_in_stock'\n[[campaign]]\nname='x'\nkind='back_in_stock'", "campaign[1].name"),
            ("[retention]\nactivity_ms=0", "retention.activity_ms"),
        ];
        for (text, field) in cases {
            let err = Config::parse(text, "test").unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let err = Config::parse("[topics]\ntracking='t'\nbogus=1", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = Config::parse(
            "[[campaign]]\nname='x'\nkind='abandoned_cart'\ndelay_ms=-5",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("delay_ms"), "{err}");
    }
}
