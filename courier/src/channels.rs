//! Delivery channels: webhook (signed JSON POST), e-mail (SMTP), push (FCM
//! HTTP v1 shape) and SMS (generic HTTP provider), with per-channel rate
//! limits. Errors are classified transient (retried) or permanent.
//!
//! Webhook signature (docs/courier.md, "Webhook signature"): header
//! `Tripwire-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, signed)>`
//! with `signed = "<t>.<idempotency key>.<body>"`; the idempotency key (the
//! trigger id) also travels in `Idempotency-Key`.

use crate::config::{secret, ChannelKind, Config, EmailConfig, PushConfig, SmsConfig, SmtpTls};
use crate::model::{Trigger, Variant};
use crate::template::Rendered;
use hmac::{Hmac, Mac};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Destination {
    Push { tokens: Vec<String> },
    Email { address: String },
    Sms { phone: String },
    Webhook,
}

/// A send decided and persisted, waiting to be (re)tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub trigger: Trigger,
    pub channel: String,
    pub variant: Variant,
    pub destination: Destination,
    pub message: Rendered,
    pub decided_at: i64,
}

/// A failed send attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (timeouts, connection errors, 408/429/5xx, SMTP 4xx).
    #[error("transient: {0}")]
    Transient(String),
    /// Not worth retrying (other 4xx, SMTP 5xx, bad address, no channel).
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
    pub fn message(&self) -> &str {
        match self {
            SendError::Transient(m) | SendError::Permanent(m) => m,
        }
    }
}

/// What the attempts on one message achieved so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// Push tokens that took the message or refused it for good.
    pub settled: BTreeSet<usize>,
    /// Push tokens that took the message.
    pub delivered: usize,
}

/// A token bucket.
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: Option<u32>) -> Self {
        let burst = burst.map(f64::from).unwrap_or(rate_per_sec).max(1.0);
        RateLimiter {
            rate_per_sec,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.rate_per_sec;
                s.0 = (s.0 + refill).min(self.burst);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                (1.0 - s.0) / self.rate_per_sec
            };
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

struct Webhook {
    url: String,
    secret: Option<Vec<u8>>,
    timeout: Duration,
}

struct Push {
    url: String,
    token: Option<String>,
    timeout: Duration,
}

struct Sms {
    url: String,
    sender: String,
    token: Option<String>,
    timeout: Duration,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Every configured channel.
pub struct Channels {
    http: reqwest::Client,
    webhook: Option<Webhook>,
    push: Option<Push>,
    sms: Option<Sms>,
    email: Option<Email>,
    limiters: HashMap<ChannelKind, RateLimiter>,
}

/// A channel could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel}: {message}")]
pub struct ChannelSetupError {
    pub channel: &'static str,
    pub message: String,
}

/// Name of the webhook signature header.
pub const SIGNATURE_HEADER: &str = "tripwire-signature";
/// Name of the header carrying the idempotency key (the trigger id) of
/// webhook and SMS requests.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Lower-case hex HMAC-SHA256 of `message` under `key`.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The text a webhook signature covers: `"<t>.<idempotency key>.<body>"`,
/// `t` in decimal Unix seconds.
pub fn signed_payload(t_secs: i64, idempotency_key: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("{t_secs}.{idempotency_key}.").into_bytes();
    v.extend_from_slice(body);
    v
}

/// The `Tripwire-Signature` header value of a webhook request sent at
/// `t_secs` (Unix seconds): `t=<t_secs>,v1=<hex HMAC-SHA256>`.
pub fn signature_header(key: &[u8], t_secs: i64, idempotency_key: &str, body: &[u8]) -> String {
    let sig = sign(key, &signed_payload(t_secs, idempotency_key, body));
    format!("t={t_secs},v1={sig}")
}

fn classify_status(status: reqwest::StatusCode) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::Transient(format!(
            "http status {}",
            status.as_u16()
        )))
    } else {
        Err(SendError::Permanent(format!(
            "http status {}",
            status.as_u16()
        )))
    }
}

fn classify_reqwest(e: reqwest::Error) -> SendError {
    // Display of reqwest errors carries the configured URL, never user data.
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "request error"
    };
    SendError::Transient(kind.to_string())
}

impl Channels {
    pub fn new(cfg: &Config) -> Result<Channels, ChannelSetupError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ChannelSetupError {
                channel: "http",
                message: e.to_string(),
            })?;
        let c = &cfg.channels;
        let mut limiters = HashMap::new();
        let webhook = match &c.webhook {
            None => None,
            Some(w) => {
                limiters.insert(
                    ChannelKind::Webhook,
                    RateLimiter::new(w.rate_per_sec, w.burst),
                );
                let secret = secret(&w.secret, &w.secret_env)
                    .filter(|k| !k.is_empty())
                    .map(String::into_bytes);
                // Validation refuses this too; never fall back to unsigned
                // requests without `unsigned = true`.
                if secret.is_none() && !w.unsigned {
                    return Err(ChannelSetupError {
                        channel: "webhook",
                        message: "no HMAC key (`secret`/`secret_env`) and not `unsigned = true`"
                            .into(),
                    });
                }
                Some(Webhook {
                    url: w.url.clone(),
                    secret,
                    timeout: Duration::from_millis(w.timeout_ms),
                })
            }
        };
        let push = c.push.as_ref().map(|p: &PushConfig| {
            limiters.insert(ChannelKind::Push, RateLimiter::new(p.rate_per_sec, p.burst));
            Push {
                url: format!(
                    "{}/v1/projects/{}/messages:send",
                    p.endpoint.trim_end_matches('/'),
                    p.project_id
                ),
                token: secret(&p.access_token, &p.access_token_env),
                timeout: Duration::from_millis(p.timeout_ms),
            }
        });
        let sms = c.sms.as_ref().map(|s: &SmsConfig| {
            limiters.insert(ChannelKind::Sms, RateLimiter::new(s.rate_per_sec, s.burst));
            Sms {
                url: s.url.clone(),
                sender: s.sender.clone(),
                token: secret(&s.auth_token, &s.auth_token_env),
                timeout: Duration::from_millis(s.timeout_ms),
            }
        });
        let email = match &c.email {
            None => None,
            Some(m) => {
                limiters.insert(
                    ChannelKind::Email,
                    RateLimiter::new(m.rate_per_sec, m.burst),
                );
                Some(build_email(m)?)
            }
        };
        Ok(Channels {
            http,
            webhook,
            push,
            sms,
            email,
            limiters,
        })
    }

    /// Waits for the channel's rate limiter.
    pub async fn throttle(&self, channel: ChannelKind) {
        if let Some(l) = self.limiters.get(&channel) {
            l.acquire().await;
        }
    }

    /// One attempt to deliver. `progress` remembers push tokens already
    /// served across attempts, so that a retry does not notify a device
    /// twice. `now_ms` is the wall-clock time of the attempt (the courier's
    /// clock): the webhook signature's timestamp.
    pub async fn send(
        &self,
        e: &OutboxEntry,
        progress: &mut Progress,
        now_ms: i64,
    ) -> Result<(), SendError> {
        match &e.destination {
            Destination::Webhook => self.send_webhook(e, now_ms).await,
            Destination::Push { tokens } => self.send_push(e, tokens, progress).await,
            Destination::Sms { phone } => self.send_sms(e, phone).await,
            Destination::Email { address } => self.send_email(e, address).await,
        }
    }

    async fn send_webhook(&self, e: &OutboxEntry, now_ms: i64) -> Result<(), SendError> {
        let w = self
            .webhook
            .as_ref()
            .ok_or_else(|| SendError::Permanent("webhook channel not configured".into()))?;
        let t = &e.trigger;
        let body = serde_json::to_vec(&serde_json::json!({
            "trigger_id": t.trigger_id,
            "campaign": t.campaign,
            "kind": t.kind,
            "user_id": t.user_id,
            "variant": e.variant,
            "language": e.message.language,
            "title": e.message.title,
            "subject": e.message.subject,
            "body": e.message.body,
            "deep_link": e.message.deep_link,
            "trigger": t,
        }))
        .map_err(|err| SendError::Permanent(err.to_string()))?;
        let mut req = self
            .http
            .post(&w.url)
            .timeout(w.timeout)
            .header("content-type", "application/json")
            .header(IDEMPOTENCY_HEADER, &t.trigger_id);
        if let Some(key) = &w.secret {
            let t_secs = now_ms.div_euclid(1000);
            req = req.header(
                SIGNATURE_HEADER,
                signature_header(key, t_secs, &t.trigger_id, &body),
            );
        }
        let resp = req.body(body).send().await.map_err(classify_reqwest)?;
        classify_status(resp.status())
    }

    async fn send_push(
        &self,
        e: &OutboxEntry,
        tokens: &[String],
        progress: &mut Progress,
    ) -> Result<(), SendError> {
        let p = self
            .push
            .as_ref()
            .ok_or_else(|| SendError::Permanent("push channel not configured".into()))?;
        let mut transient = None;
        let mut permanent = None;
        for (i, token) in tokens.iter().enumerate() {
            if progress.settled.contains(&i) {
                continue;
            }
            let body = serde_json::json!({
                "message": {
                    "token": token,
                    "notification": {"title": e.message.title, "body": e.message.body},
                    "data": {
                        "trigger_id": e.trigger.trigger_id,
                        "campaign": e.trigger.campaign,
                        "deep_link": e.message.deep_link,
                    }
                }
            });
            let mut req = self.http.post(&p.url).timeout(p.timeout).json_body(&body);
            if let Some(tok) = &p.token {
                req = req.bearer_auth(tok);
            }
            let r = match req.send().await {
                Ok(resp) => classify_status(resp.status()),
                Err(err) => Err(classify_reqwest(err)),
            };
            match r {
                Ok(()) => {
                    progress.settled.insert(i);
                    progress.delivered += 1;
                }
                Err(SendError::Permanent(m)) => {
                    // An unregistered token: do not try it again.
                    progress.settled.insert(i);
                    permanent = Some(m);
                }
                Err(SendError::Transient(m)) => transient = Some(m),
            }
        }
        if let Some(m) = transient {
            return Err(SendError::Transient(m));
        }
        if progress.delivered > 0 {
            Ok(())
        } else {
            Err(SendError::Permanent(
                permanent.unwrap_or_else(|| "no push token".into()),
            ))
        }
    }

    async fn send_sms(&self, e: &OutboxEntry, phone: &str) -> Result<(), SendError> {
        let s = self
            .sms
            .as_ref()
            .ok_or_else(|| SendError::Permanent("sms channel not configured".into()))?;
        let body = serde_json::json!({
            "to": phone,
            "from": s.sender,
            "text": e.message.body,
            "reference": e.trigger.trigger_id,
        });
        let mut req = self
            .http
            .post(&s.url)
            .timeout(s.timeout)
            .header(IDEMPOTENCY_HEADER, &e.trigger.trigger_id)
            .json_body(&body);
        if let Some(tok) = &s.token {
            req = req.bearer_auth(tok);
        }
        let resp = req.send().await.map_err(classify_reqwest)?;
        classify_status(resp.status())
    }

    async fn send_email(&self, e: &OutboxEntry, address: &str) -> Result<(), SendError> {
        let m = self
            .email
            .as_ref()
            .ok_or_else(|| SendError::Permanent("email channel not configured".into()))?;
        let to: Mailbox = address
            .parse()
            .map_err(|_| SendError::Permanent("invalid e-mail address".into()))?;
        let mut text = e.message.body.clone();
        if !e.message.deep_link.is_empty() && !text.contains(&e.message.deep_link) {
            text.push_str("\n\n");
            text.push_str(&e.message.deep_link);
        }
        let msg = Message::builder()
            .from(m.from.clone())
            .to(to)
            .subject(e.message.subject.clone())
            .message_id(Some(format!("<{}@tripwire-courier>", e.trigger.trigger_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|err| SendError::Permanent(format!("cannot build e-mail: {err}")))?;
        match m.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(err) => {
                // Only the SMTP status code is kept: server texts may quote
                // the recipient.
                let code = err
                    .status()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "no status".into());
                if err.is_permanent() {
                    Err(SendError::Permanent(format!("smtp {code}")))
                } else {
                    Err(SendError::Transient(format!(
                        "smtp {code}{}",
                        if err.is_timeout() { " timeout" } else { "" }
                    )))
                }
            }
        }
    }
}

trait JsonBody {
    fn json_body(self, v: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap_or_default())
    }
}

fn build_email(m: &EmailConfig) -> Result<Email, ChannelSetupError> {
    let err = |message: String| ChannelSetupError {
        channel: "email",
        message,
    };
    let params = || TlsParameters::new(m.smtp_host.clone()).map_err(|e| err(e.to_string()));
    let tls = match m.tls_mode() {
        SmtpTls::None => Tls::None,
        SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
        SmtpTls::Starttls => Tls::Required(params()?),
        SmtpTls::Implicit => Tls::Wrapper(params()?),
    };
    if m.username.is_some() && !matches!(tls, Tls::Required(_) | Tls::Wrapper(_)) {
        // Validation refuses this too: credentials never go out in clear.
        return Err(err(
            "SMTP credentials need tls = \"starttls\" or \"implicit\"".into(),
        ));
    }
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&m.smtp_host)
        .port(m.port())
        .tls(tls)
        .timeout(Some(Duration::from_millis(m.timeout_ms)));
    if let Some(user) = &m.username {
        let pass = secret(&None, &m.password_env).unwrap_or_default();
        b = b.credentials(Credentials::new(user.clone(), pass));
    }
    let from: Mailbox = m
        .from
        .parse()
        .map_err(|_| err("`from` is not a mailbox".into()))?;
    Ok(Email {
        transport: b.build(),
        from,
    })
}
