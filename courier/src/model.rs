//! Wire types: trigger records read from `triggers`, contact profiles read
//! from `profiles`, and receipts written to `deliveries` (see
//! `/work/shared/spec/wire.md`). Unknown fields are ignored everywhere.

use serde::{Deserialize, Serialize};

/// Largest identifier accepted (wire contract: at most 256 bytes).
pub const MAX_ID_BYTES: usize = 256;

/// One product of a trigger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Item {
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_price: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// One record of the `triggers` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub trigger_id: String,
    pub campaign: String,
    pub kind: String,
    pub user_id: String,
    /// Due time of the trigger, ms since the epoch.
    pub ts: i64,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<bool>,
}

/// Why a record of `triggers` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record (tombstone)")]
    Empty,
    /// Where the JSON broke and how, without serde's message: that quotes
    /// the offending value, which may be personal data (an e-mail, a phone
    /// number), and this text goes to logs and receipts.
    #[error("not a valid record: {kind} at line {line} column {column}")]
    Json {
        kind: &'static str,
        line: usize,
        column: usize,
    },
    #[error("field `{0}` is empty or longer than 256 bytes")]
    BadId(&'static str),
    #[error("field `ts` must be >= 0")]
    BadTs,
}

impl From<serde_json::Error> for RecordError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        RecordError::Json {
            kind: match e.classify() {
                Category::Data => "a field of the wrong type or value",
                Category::Syntax => "invalid JSON",
                Category::Eof => "truncated JSON",
                Category::Io => "unreadable input",
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

/// What a malformed record still tells us (for its receipt).
#[derive(Debug, Clone, Default)]
pub struct Salvage {
    pub trigger_id: Option<String>,
    pub campaign: Option<String>,
    pub user_id: Option<String>,
}

fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES
}

impl Trigger {
    /// Parses and validates one record payload.
    pub fn parse(payload: &[u8]) -> Result<Trigger, RecordError> {
        if payload.is_empty() {
            return Err(RecordError::Empty);
        }
        let t: Trigger = serde_json::from_slice(payload)?;
        t.validate()?;
        Ok(t)
    }

    /// Checks the identifier and time rules of the wire contract.
    pub fn validate(&self) -> Result<(), RecordError> {
        if !id_ok(&self.trigger_id) {
            return Err(RecordError::BadId("trigger_id"));
        }
        if !id_ok(&self.campaign) {
            return Err(RecordError::BadId("campaign"));
        }
        if !id_ok(&self.user_id) {
            return Err(RecordError::BadId("user_id"));
        }
        if self.ts < 0 {
            return Err(RecordError::BadTs);
        }
        Ok(())
    }

    /// Best-effort extraction of ids from a record that failed to parse.
    pub fn salvage(payload: &[u8]) -> Salvage {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return Salvage::default();
        };
        let get = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| id_ok(s))
                .map(str::to_owned)
        };
        Salvage {
            trigger_id: get("trigger_id"),
            campaign: get("campaign"),
            user_id: get("user_id"),
        }
    }
}

/// A push token of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PushToken {
    #[serde(default)]
    pub platform: Option<String>,
    pub token: String,
}

/// Consent flags of a profile; a channel without `true` is never used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Consent {
    #[serde(default)]
    pub push: Option<bool>,
    #[serde(default)]
    pub email: Option<bool>,
    #[serde(default)]
    pub sms: Option<bool>,
}

/// One record of the `profiles` topic: a user's whole contact profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Profile {
    pub user_id: String,
    #[serde(default)]
    pub ts: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub push_tokens: Vec<PushToken>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub consent: Consent,
}

impl Profile {
    pub fn parse(payload: &[u8]) -> Result<Profile, RecordError> {
        if payload.is_empty() {
            return Err(RecordError::Empty);
        }
        let p: Profile = serde_json::from_slice(payload)?;
        if !id_ok(&p.user_id) {
            return Err(RecordError::BadId("user_id"));
        }
        Ok(p)
    }
}

/// Status of a decision (field `status` of a receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Sent,
    Deferred,
    Suppressed,
    HeldOut,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Suppressed => "suppressed",
            Status::HeldOut => "held_out",
            Status::Failed => "failed",
        }
    }
}

/// Experiment arm of a (user, campaign) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Treatment,
    Control,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Treatment => "treatment",
            Variant::Control => "control",
        }
    }
}

/// One record of the `deliveries` topic (key `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub trigger_id: String,
    pub campaign: String,
    pub user_id: String,
    /// Wall-clock ms of the decision.
    pub ts: i64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `deferred`: the time the message is deferred to (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    pub variant: Variant,
    /// Finer cause of a `frequency_cap` suppression or of a failure
    /// (extra field; consumers ignore unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Number of send attempts (sent / failed sends only; extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_quote_the_offending_value() {
        let personal = ["alice@example.com", "+4915112345678", "Alice Smith"];
        for p in [
            r#"{"user_id":"u","email":42,"phone":"+4915112345678"}"#,
            r#"{"user_id":"u","phone":["+4915112345678"]}"#,
            r#"{"user_id":"u","email":"alice@example.com","consent":"Alice Smith"}"#,
            r#"{"user_id":"u","ts":"alice@example.com"}"#,
        ] {
            let e = Profile::parse(p.as_bytes()).expect_err(p).to_string();
            assert!(personal.iter().all(|v| !e.contains(v)), "{p}: {e}");
            assert!(e.contains("line 1 column"), "{e}");
        }
        let e = Trigger::parse(br#"{"trigger_id":"alice@example.com","ts":"Alice Smith"}"#)
            .expect_err("a string ts")
            .to_string();
        assert!(personal.iter().all(|v| !e.contains(v)), "{e}");
    }
}
