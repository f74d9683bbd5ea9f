//! The courier's configuration: one TOML file, every table with
//! `deny_unknown_fields`, every duration with its unit in the name. The
//! reference is `docs/courier.md`; `courier/courier.example.toml` is an
//! annotated example. Loading validates everything and names the offending
//! field in its error.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A configuration error, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Parse(String),
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
    /// Environment variables named by `*_env` fields that are not set:
    /// (field, variable), every one of the file at once.
    #[error("{}", missing_env_message(.0))]
    MissingEnv(Vec<(String, String)>),
}

fn missing_env_message(missing: &[(String, String)]) -> String {
    match missing {
        [(field, name)] => {
            format!("config field `{field}`: environment variable `{name}` is not set")
        }
        _ => {
            let list: Vec<String> = missing
                .iter()
                .map(|(field, name)| format!("`{name}` (field `{field}`)"))
                .collect();
            format!(
                "config: {} environment variables are not set: {}",
                missing.len(),
                list.join(", ")
            )
        }
    }
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Push,
    Email,
    Sms,
    Webhook,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Push,
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Webhook,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Push => "push",
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Webhook => "webhook",
        }
    }
    pub fn parse(s: &str) -> Option<ChannelKind> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What to do with a trigger that falls in the user's quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuietAction {
    /// Defer it to the end of the quiet hours (receipt `deferred`).
    #[default]
    Defer,
    /// Suppress it (receipt `suppressed`, reason `quiet_hours`).
    Suppress,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Policy defaults that every campaign inherits.
    #[serde(default)]
    pub defaults: Defaults,
    /// Batching, concurrency and housekeeping of the sidecar itself.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Retries of transient send failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Channel endpoints; a channel that is not configured cannot be used.
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// Campaigns by name (the `campaign` field of trigger records).
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignConfig>,
    /// librdkafka properties for every Kafka client (`security.protocol`,
    /// `sasl.*`, `ssl.*`, ...); `env:NAME` / `file:PATH` values are read at
    /// start. The job's configuration takes the same table.
    #[serde(default)]
    pub kafka: crate::kafka_props::KafkaProperties,
}

/// `[defaults]`: global policy, overridable per campaign.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Start of quiet hours, local "HH:MM" in the user's timezone.
    #[serde(default = "d_quiet_start")]
    pub quiet_hours_start: String,
    /// End of quiet hours (first allowed minute), local "HH:MM". Equal to
    /// the start: no quiet hours.
    #[serde(default = "d_quiet_end")]
    pub quiet_hours_end: String,
    /// `defer` (default) or `suppress` triggers that fall in quiet hours.
    #[serde(default)]
    pub on_quiet_hours: QuietAction,
    /// Timezone (IANA name) of users whose profile and trigger carry none.
    #[serde(default = "d_tz")]
    pub default_timezone: String,
    /// Template language used when the user's language has no template.
    #[serde(default = "d_lang")]
    pub fallback_language: String,
    /// At most this many messages per user per `cap_window_ms`, all
    /// campaigns together.
    #[serde(default = "d_max_msgs")]
    pub max_messages_per_window: u32,
    /// Window of the frequency cap, ms.
    #[serde(default = "d_cap_window")]
    pub cap_window_ms: u64,
    /// Minimum time after any message to the user before the next, ms.
    #[serde(default = "d_min_gap")]
    pub min_gap_ms: u64,
    /// The same campaign at most once per user per this many ms.
    #[serde(default = "d_reeligible")]
    pub reeligible_after_ms: u64,
    /// Share of users (0..=1) in the control group of each campaign.
    #[serde(default = "d_control")]
    pub control_share: f64,
    /// Triggers older than this (decision time minus `ts`) are suppressed
    /// as `stale`, ms.
    #[serde(default = "d_max_age")]
    pub max_age_ms: u64,
    /// Channel order: the first channel with consent and an address wins.
    #[serde(default = "d_channels")]
    pub channels: Vec<ChannelKind>,
    /// Priority of campaigns that set none (higher wins).
    #[serde(default)]
    pub priority: i32,
}

fn d_quiet_start() -> String {
    "22:00".into()
}
fn d_quiet_end() -> String {
    "09:00".into()
}
fn d_tz() -> String {
    "UTC".into()
}
fn d_lang() -> String {
    "en".into()
}
fn d_max_msgs() -> u32 {
    3
}
fn d_cap_window() -> u64 {
    86_400_000
}
fn d_min_gap() -> u64 {
    9 * 3_600_000
}
fn d_reeligible() -> u64 {
    7 * 86_400_000
}
fn d_control() -> f64 {
    0.1
}
fn d_max_age() -> u64 {
    12 * 3_600_000
}
fn d_channels() -> Vec<ChannelKind> {
    vec![ChannelKind::Push, ChannelKind::Email]
}

impl Default for Defaults {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[campaigns.NAME]`: one campaign. Policy fields left out inherit
/// `[defaults]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Higher priority wins when several triggers of one user compete.
    pub priority: Option<i32>,
    pub quiet_hours_start: Option<String>,
    pub quiet_hours_end: Option<String>,
    pub on_quiet_hours: Option<QuietAction>,
    pub max_messages_per_window: Option<u32>,
    pub cap_window_ms: Option<u64>,
    pub min_gap_ms: Option<u64>,
    pub reeligible_after_ms: Option<u64>,
    pub control_share: Option<f64>,
    pub max_age_ms: Option<u64>,
    pub channels: Option<Vec<ChannelKind>>,
    /// Template of the deep link (minijinja); default: first item's `url`.
    pub deep_link: Option<String>,
    /// Templates by language (`az`, `en`, `ru`, ...).
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
}

/// `[campaigns.NAME.templates.LANG]`: message templates (minijinja).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Push title (and e-mail subject unless `subject` is set).
    pub title: String,
    /// Message body (push body, e-mail text, SMS text, webhook `body`).
    pub body: String,
    /// E-mail subject; default: the rendered `title`.
    pub subject: Option<String>,
}

/// `[engine]`: batching and concurrency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Most trigger records decided in one batch (one store commit).
    #[serde(default = "d_batch")]
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, ms.
    #[serde(default = "d_batch_wait")]
    pub batch_max_wait_ms: u64,
    /// Sends in flight at once, all channels together.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// How often due deferred messages are looked for, ms.
    #[serde(default = "d_deferred_poll")]
    pub deferred_poll_ms: u64,
    /// How long a decided `trigger_id` is remembered for deduplication, ms.
    #[serde(default = "d_ledger_retention")]
    pub ledger_retention_ms: u64,
    /// On SIGINT/SIGTERM, how long in-flight sends may finish, ms.
    #[serde(default = "d_grace")]
    pub shutdown_grace_ms: u64,
    /// At start, how long to wait for the profile store to catch up with
    /// the `profiles` topic, ms.
    #[serde(default = "d_catchup")]
    pub profiles_catchup_timeout_ms: u64,
}

fn d_batch() -> usize {
    2000
}
fn d_batch_wait() -> u64 {
    20
}
fn d_in_flight() -> usize {
    64
}
fn d_deferred_poll() -> u64 {
    1000
}
fn d_ledger_retention() -> u64 {
    30 * 86_400_000
}
fn d_grace() -> u64 {
    10_000
}
fn d_catchup() -> u64 {
    60_000
}

impl Default for EngineConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[retry]`: exponential backoff with jitter for transient failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per message, the first included (>= 1).
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Backoff before the second attempt, ms; doubles each attempt.
    #[serde(default = "d_backoff")]
    pub initial_backoff_ms: u64,
    /// Upper bound of the backoff, ms.
    #[serde(default = "d_max_backoff")]
    pub max_backoff_ms: u64,
}

fn d_attempts() -> u32 {
    5
}
fn d_backoff() -> u64 {
    200
}
fn d_max_backoff() -> u64 {
    30_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// `[channels]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub webhook: Option<WebhookConfig>,
    pub email: Option<EmailConfig>,
    pub push: Option<PushConfig>,
    pub sms: Option<SmsConfig>,
}

/// `[channels.webhook]`: JSON POST signed with HMAC-SHA256 (header
/// `Tripwire-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key,
/// "<t>.<idempotency key>.<body>")>`, see docs/courier.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL the JSON is POSTed to; `https://`, or `http://` with
    /// `allow_http = true`.
    pub url: String,
    /// HMAC-SHA256 key (prefer `secret_env`). A key (`secret` or
    /// `secret_env`) is required unless `unsigned = true`.
    pub secret: Option<String>,
    /// Name of an environment variable holding the HMAC key.
    pub secret_env: Option<String>,
    /// Send requests without a signature. Must be said explicitly: a
    /// webhook with neither `secret` nor `secret_env` is refused otherwise,
    /// and one with a key and `unsigned = true` is refused as contradictory.
    #[serde(default)]
    pub unsigned: bool,
    /// Accept an `http://` URL (requests, signature and idempotency key in
    /// clear text). Off by default: only `https://` URLs are accepted, for
    /// every host including 127.0.0.1 and localhost.
    #[serde(default)]
    pub allow_http: bool,
    /// Request timeout, ms.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// Sustained sends per second.
    #[serde(default = "d_rate")]
    pub rate_per_sec: f64,
    /// Burst size of the rate limiter (default: one second's worth).
    pub burst: Option<u32>,
}

/// `[channels.email]`: SMTP submission.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    /// SMTP port; default 465 with `tls = "implicit"`, else 587.
    pub smtp_port: Option<u16>,
    /// Transport security: `none`, `opportunistic` (default), `starttls`
    /// (STARTTLS required) or `implicit` (TLS from the first byte, port
    /// 465). With `username` set only `starttls` and `implicit` are
    /// accepted.
    pub tls: Option<SmtpTls>,
    /// Deprecated spelling of `tls`: `off` (= `none`), `opportunistic`,
    /// `required` (= `starttls`). At most one of `tls` and `starttls`.
    pub starttls: Option<StartTls>,
    /// SMTP AUTH user; requires `tls = "starttls"` or `"implicit"`.
    pub username: Option<String>,
    /// Name of an environment variable holding the SMTP password.
    pub password_env: Option<String>,
    /// Sender address, e.g. `Shop <noreply@shop.example>`.
    pub from: String,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_rate")]
    pub rate_per_sec: f64,
    pub burst: Option<u32>,
}

impl EmailConfig {
    /// The transport security in force (`tls`, else the deprecated
    /// `starttls`, else `opportunistic`).
    pub fn tls_mode(&self) -> SmtpTls {
        match (self.tls, self.starttls) {
            (Some(t), _) => t,
            (None, Some(StartTls::Off)) => SmtpTls::None,
            (None, Some(StartTls::Opportunistic)) | (None, None) => SmtpTls::Opportunistic,
            (None, Some(StartTls::Required)) => SmtpTls::Starttls,
        }
    }

    /// The SMTP port in force: `smtp_port`, else 465 for implicit TLS and
    /// 587 (submission) otherwise.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls_mode() {
            SmtpTls::Implicit => 465,
            _ => 587,
        })
    }
}

/// Transport security of the SMTP connection (`[channels.email] tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text only (trusted local relays without credentials).
    None,
    /// STARTTLS when the server offers it, else plain text (a man in the
    /// middle can strip the offer; refused together with credentials).
    #[default]
    Opportunistic,
    /// STARTTLS required: the connection fails rather than continue in
    /// plain text.
    Starttls,
    /// TLS from the first byte (SMTPS, "submissions", port 465).
    Implicit,
}

/// Deprecated `[channels.email] starttls` values (use `tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartTls {
    /// Same as `tls = "none"`.
    Off,
    /// Same as `tls = "opportunistic"`.
    #[default]
    Opportunistic,
    /// Same as `tls = "starttls"`.
    Required,
}

/// `[channels.push]`: FCM HTTP v1 API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Base URL; requests go to `{endpoint}/v1/projects/{project_id}/messages:send`.
    /// `https://`, or `http://` with `allow_http = true`.
    #[serde(default = "d_fcm")]
    pub endpoint: String,
    pub project_id: String,
    /// OAuth2 bearer token (prefer `access_token_env`).
    pub access_token: Option<String>,
    pub access_token_env: Option<String>,
    /// Accept an `http://` endpoint (bearer token and messages in clear
    /// text). Off by default, for every host including 127.0.0.1.
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_rate")]
    pub rate_per_sec: f64,
    pub burst: Option<u32>,
}

/// `[channels.sms]`: a generic HTTP SMS provider (JSON POST).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// Provider endpoint; `https://`, or `http://` with `allow_http = true`.
    pub url: String,
    /// Sender id / number put in the `from` field.
    pub sender: String,
    /// Bearer token (prefer `auth_token_env`).
    pub auth_token: Option<String>,
    pub auth_token_env: Option<String>,
    /// Accept an `http://` URL (bearer token, phone numbers and texts in
    /// clear text). Off by default, for every host including 127.0.0.1.
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_rate")]
    pub rate_per_sec: f64,
    pub burst: Option<u32>,
}

fn d_timeout() -> u64 {
    5_000
}
fn d_rate() -> f64 {
    100.0
}
fn d_fcm() -> String {
    "https://fcm.googleapis.com".into()
}

/// A campaign's policy with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignPolicy {
    pub name: String,
    pub priority: i32,
    /// Quiet hours as (start, end) minutes of the local day; None: none.
    pub quiet_hours: Option<(u16, u16)>,
    pub on_quiet_hours: QuietAction,
    pub max_messages_per_window: u32,
    pub cap_window_ms: i64,
    pub min_gap_ms: i64,
    pub reeligible_after_ms: i64,
    pub control_share: f64,
    pub max_age_ms: i64,
    pub channels: Vec<ChannelKind>,
}

/// Parses "HH:MM" into minutes of the day.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn ms(field: &str, v: u64) -> Result<i64, ConfigError> {
    i64::try_from(v).map_err(|_| field_err(field, "too large"))
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `[kafka]` table with its `env:` / `file:` values read.
    pub fn kafka_properties(&self) -> Result<crate::kafka_props::ResolvedProperties, ConfigError> {
        self.kafka
            .resolve()
            .map_err(|e| field_err("kafka", e.to_string()))
    }

    /// Checks every rule that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.defaults;
        for (f, v) in [
            ("defaults.quiet_hours_start", &d.quiet_hours_start),
            ("defaults.quiet_hours_end", &d.quiet_hours_end),
        ] {
            parse_hhmm(v).ok_or_else(|| field_err(f, format!("{v:?} is not HH:MM")))?;
        }
        if jiff::tz::TimeZone::get(&d.default_timezone).is_err() {
            return Err(field_err(
                "defaults.default_timezone",
                format!("unknown timezone {:?}", d.default_timezone),
            ));
        }
        if d.fallback_language.is_empty() {
            return Err(field_err("defaults.fallback_language", "must not be empty"));
        }
        check_share("defaults.control_share", d.control_share)?;
        if d.channels.is_empty() {
            return Err(field_err(
                "defaults.channels",
                "must list at least one channel",
            ));
        }
        if d.cap_window_ms == 0 {
            return Err(field_err("defaults.cap_window_ms", "must be > 0"));
        }
        let e = &self.engine;
        if e.batch_max_records == 0 {
            return Err(field_err("engine.batch_max_records", "must be > 0"));
        }
        if e.max_in_flight == 0 {
            return Err(field_err("engine.max_in_flight", "must be > 0"));
        }
        if e.deferred_poll_ms == 0 {
            return Err(field_err("engine.deferred_poll_ms", "must be > 0"));
        }
        if self.retry.max_attempts == 0 {
            return Err(field_err("retry.max_attempts", "must be >= 1"));
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            return Err(field_err(
                "retry.max_backoff_ms",
                "must be >= retry.initial_backoff_ms",
            ));
        }
        let ch = &self.channels;
        check_env_vars(ch)?;
        if let Some(w) = &ch.webhook {
            check_url("channels.webhook.url", &w.url, w.allow_http)?;
            check_rate("channels.webhook", w.rate_per_sec, w.timeout_ms)?;
            check_webhook_key(w)?;
        }
        if let Some(p) = &ch.push {
            check_url("channels.push.endpoint", &p.endpoint, p.allow_http)?;
            check_rate("channels.push", p.rate_per_sec, p.timeout_ms)?;
            if p.project_id.is_empty() {
                return Err(field_err("channels.push.project_id", "must not be empty"));
            }
        }
        if let Some(s) = &ch.sms {
            check_url("channels.sms.url", &s.url, s.allow_http)?;
            check_rate("channels.sms", s.rate_per_sec, s.timeout_ms)?;
        }
        if let Some(m) = &ch.email {
            check_rate("channels.email", m.rate_per_sec, m.timeout_ms)?;
            if m.smtp_host.is_empty() {
                return Err(field_err("channels.email.smtp_host", "must not be empty"));
            }
            if m.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(field_err(
                    "channels.email.from",
                    format!("{:?} is not a mailbox", m.from),
                ));
            }
            check_smtp_tls(m)?;
        }
        for (name, c) in &self.campaigns {
            let p = |f: &str| format!("campaigns.{name}.{f}");
            if name.is_empty() || name.len() > crate::model::MAX_ID_BYTES {
                return Err(field_err(p(""), "campaign name must be 1..=256 bytes"));
            }
            for (f, v) in [
                ("quiet_hours_start", &c.quiet_hours_start),
                ("quiet_hours_end", &c.quiet_hours_end),
            ] {
                if let Some(v) = v {
                    parse_hhmm(v).ok_or_else(|| field_err(p(f), format!("{v:?} is not HH:MM")))?;
                }
            }
            if let Some(s) = c.control_share {
                check_share(&p("control_share"), s)?;
            }
            if c.cap_window_ms == Some(0) {
                return Err(field_err(p("cap_window_ms"), "must be > 0"));
            }
            let chans = c.channels.as_ref().unwrap_or(&d.channels);
            let chans_field = if c.channels.is_some() {
                p("channels")
            } else {
                "defaults.channels".to_string()
            };
            if chans.is_empty() {
                return Err(field_err(chans_field, "must list at least one channel"));
            }
            for k in chans {
                let configured = match k {
                    ChannelKind::Push => ch.push.is_some(),
                    ChannelKind::Email => ch.email.is_some(),
                    ChannelKind::Sms => ch.sms.is_some(),
                    ChannelKind::Webhook => ch.webhook.is_some(),
                };
                if !configured {
                    return Err(field_err(
                        chans_field.clone(),
                        format!(
                            "channel `{}` is used by campaign `{name}` but [channels.{}] is not configured",
                            k.as_str(),
                            k.as_str()
                        ),
                    ));
                }
            }
            if c.templates.is_empty() {
                return Err(field_err(
                    p("templates"),
                    "at least one language is required",
                ));
            }
            if !c.templates.contains_key(&d.fallback_language) {
                return Err(field_err(
                    p("templates"),
                    format!(
                        "no template for the fallback language `{}`",
                        d.fallback_language
                    ),
                ));
            }
        }
        // Templates compile?
        crate::template::Templates::new(self)?;
        for name in self.campaigns.keys() {
            self.policy(name).expect("validated");
        }
        Ok(())
    }

    /// The resolved policy of a configured campaign.
    pub fn policy(&self, campaign: &str) -> Option<CampaignPolicy> {
        let c = self.campaigns.get(campaign)?;
        let d = &self.defaults;
        let qs = parse_hhmm(
            c.quiet_hours_start
                .as_deref()
                .unwrap_or(&d.quiet_hours_start),
        )?;
        let qe = parse_hhmm(c.quiet_hours_end.as_deref().unwrap_or(&d.quiet_hours_end))?;
        Some(CampaignPolicy {
            name: campaign.to_string(),
            priority: c.priority.unwrap_or(d.priority),
            quiet_hours: (qs != qe).then_some((qs, qe)),
            on_quiet_hours: c.on_quiet_hours.unwrap_or(d.on_quiet_hours),
            max_messages_per_window: c
                .max_messages_per_window
                .unwrap_or(d.max_messages_per_window),
            cap_window_ms: ms("cap_window_ms", c.cap_window_ms.unwrap_or(d.cap_window_ms)).ok()?,
            min_gap_ms: ms("min_gap_ms", c.min_gap_ms.unwrap_or(d.min_gap_ms)).ok()?,
            reeligible_after_ms: ms(
                "reeligible_after_ms",
                c.reeligible_after_ms.unwrap_or(d.reeligible_after_ms),
            )
            .ok()?,
            control_share: c.control_share.unwrap_or(d.control_share),
            max_age_ms: ms("max_age_ms", c.max_age_ms.unwrap_or(d.max_age_ms)).ok()?,
            channels: c.channels.clone().unwrap_or_else(|| d.channels.clone()),
        })
    }

    /// The longest look-back any policy needs (history older is dropped).
    pub fn history_horizon_ms(&self) -> i64 {
        self.campaigns
            .keys()
            .filter_map(|n| self.policy(n))
            .map(|p| p.cap_window_ms.max(p.min_gap_ms).max(p.reeligible_after_ms))
            .max()
            .unwrap_or(0)
    }
}

fn check_share(field: &str, v: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(field_err(field, format!("{v} is not within 0..=1")));
    }
    Ok(())
}

fn check_url(field: &str, v: &str, allow_http: bool) -> Result<(), ConfigError> {
    match reqwest::Url::parse(v) {
        Ok(u) if u.scheme() == "https" => Ok(()),
        Ok(u) if u.scheme() == "http" => {
            if allow_http {
                Ok(())
            } else {
                // The URL itself is not quoted: it may carry credentials.
                Err(field_err(
                    field,
                    "is a plain http:// URL: use https://, or set `allow_http = true` \
                     in the same table to send in clear text",
                ))
            }
        }
        _ => Err(field_err(field, format!("{v:?} is not an http(s) URL"))),
    }
}

/// A webhook is signed unless `unsigned = true` says otherwise, never both.
fn check_webhook_key(w: &WebhookConfig) -> Result<(), ConfigError> {
    let configured = w.secret.is_some() || w.secret_env.is_some();
    if w.unsigned {
        if configured {
            return Err(field_err(
                "channels.webhook.unsigned",
                "`unsigned = true` contradicts the configured `secret`/`secret_env`: \
                 remove one of them",
            ));
        }
        return Ok(());
    }
    if !configured {
        return Err(field_err(
            "channels.webhook.secret",
            "a webhook needs an HMAC key: set `secret_env` (or `secret`), or \
             `unsigned = true` to send unsigned requests",
        ));
    }
    let field = if w.secret_env.is_some() {
        "channels.webhook.secret_env"
    } else {
        "channels.webhook.secret"
    };
    if secret(&w.secret, &w.secret_env).is_none_or(|k| k.is_empty()) {
        return Err(field_err(field, "the HMAC key is empty"));
    }
    Ok(())
}

/// SMTP credentials only over a connection that cannot fall back to
/// plain text.
fn check_smtp_tls(m: &EmailConfig) -> Result<(), ConfigError> {
    if m.tls.is_some() && m.starttls.is_some() {
        return Err(field_err(
            "channels.email.starttls",
            "set only `tls` (`starttls` is its deprecated spelling)",
        ));
    }
    if m.username.is_some() && !matches!(m.tls_mode(), SmtpTls::Starttls | SmtpTls::Implicit) {
        let field = if m.tls.is_none() && m.starttls.is_some() {
            "channels.email.starttls"
        } else {
            "channels.email.tls"
        };
        return Err(field_err(
            field,
            "SMTP credentials (`username`) need `tls = \"starttls\"` or \
             `tls = \"implicit\"`: with `none` or `opportunistic` the password \
             can travel in clear text",
        ));
    }
    Ok(())
}

fn check_rate(prefix: &str, rate: f64, timeout_ms: u64) -> Result<(), ConfigError> {
    if rate.is_nan() || rate <= 0.0 {
        return Err(field_err(format!("{prefix}.rate_per_sec"), "must be > 0"));
    }
    if timeout_ms == 0 {
        return Err(field_err(format!("{prefix}.timeout_ms"), "must be > 0"));
    }
    Ok(())
}

/// Every `*_env` field of a configured channel names a variable that is
/// set; the unset ones are reported together, not one per start.
fn check_env_vars(ch: &ChannelsConfig) -> Result<(), ConfigError> {
    let fields = [
        (
            "channels.webhook.secret_env",
            ch.webhook.as_ref().and_then(|w| w.secret_env.as_ref()),
        ),
        (
            "channels.email.password_env",
            ch.email.as_ref().and_then(|m| m.password_env.as_ref()),
        ),
        (
            "channels.push.access_token_env",
            ch.push.as_ref().and_then(|p| p.access_token_env.as_ref()),
        ),
        (
            "channels.sms.auth_token_env",
            ch.sms.as_ref().and_then(|s| s.auth_token_env.as_ref()),
        ),
    ];
    let missing: Vec<(String, String)> = fields
        .into_iter()
        .filter_map(|(field, name)| {
            let name = name?;
            std::env::var_os(name)
                .is_none()
                .then(|| (field.to_string(), name.clone()))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::MissingEnv(missing))
    }
}

/// Resolves an inline secret or the environment variable naming it.
pub fn secret(inline: &Option<String>, env: &Option<String>) -> Option<String> {
    if let Some(n) = env {
        if let Ok(v) = std::env::var(n) {
            return Some(v);
        }
    }
    inline.clone()
}
