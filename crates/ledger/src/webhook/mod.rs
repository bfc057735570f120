//! Webhook notifications: signed JSON POSTs to a URL configured per workspace, for key
//! lifecycle events and security signals (see `docs/webhooks.md`, ADR 0006).
//!
//! Configuration is a `webhook_set` event in the log, applied to the registry like a policy.
//! Delivery is a side effect, kept out of the log and out of the hot paths:
//! - the **dispatcher** thread reads durable, projected events from its own cursor, turns the
//!   ones a webhook subscribes to into deliveries, and writes them with the new cursor in
//!   one redb transaction of `webhooks.redb` ([`outbox`]), so after a crash it resumes
//!   without losing or inventing notifications (at-least-once, with stable delivery ids);
//! - the **sender** thread POSTs due deliveries (blocking client, timeout), retries with
//!   capped exponential backoff, and records every attempt.
//!
//! Guarantees: the verify path and the log writer never wait for a webhook; the outbox is on
//! disk and capped per workspace; the signing secret exists only in memory, derived from
//! the pepper ([`keyledger_core::Pepper::webhook_secret`]), and never reaches a payload, a
//! record, a log line or an error. Payloads never carry a secret or a hash.

mod credits_low;
pub mod destination;
pub mod outbox;
pub(crate) mod service;

pub use credits_low::credits_low;
pub use destination::{DestinationRule, Refusal};
pub use outbox::{Attempt, AttemptOutcome, DeliveryList};
pub(crate) use service::WebhookService;

use crate::error::LedgerError;
use hmac::{Hmac, Mac};
use keyledger_core::json::event_json;
use keyledger_core::{DenyReason, Event, KeyId, Payload, Timestamp, WorkspaceId};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Every notification type, in the order the docs list them.
pub const TYPES: [&str; 15] = [
    "key.created",
    "key.rotated",
    "key.revoked",
    "key.expired",
    "key.disabled",
    "key.enabled",
    "key.updated",
    "policy.updated",
    "key.new_source",
    "key.revoked_used",
    "key.expiring",
    "webhook.updated",
    "log.fork_alarm",
    "key.credits_low",
    "key.leaked",
];

/// How long before its expiry an active key is announced by `key.expiring`.
pub const EXPIRING_WITHIN_MICROS: i64 = 7 * 86_400_000_000;

/// Longest accepted webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// How webhooks are delivered. The defaults suit production; tests shorten the delays.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Run the dispatcher and the sender at all.
    pub enabled: bool,
    /// How often the dispatcher looks for new durable events (and the sender for due ones).
    pub poll_interval: Duration,
    /// Delay before the first retry; each further retry doubles it, up to `max_delay`.
    pub first_retry: Duration,
    pub max_delay: Duration,
    /// Attempts per delivery (the first included) before it is given up.
    pub max_attempts: u32,
    /// A delivery older than this is given up whatever its attempts, once attempted at
    /// least once.
    pub max_age: Duration,
    /// Timeout of one POST, connection included.
    pub timeout: Duration,
    /// Sender threads: deliveries to this many workspaces are attempted at once, one
    /// delivery per workspace at a time, so a slow receiver holds up only its own.
    pub senders: usize,
    /// How often active keys are scanned for `key.expiring`.
    pub expiring_scan_interval: Duration,
    /// Undelivered deliveries kept per workspace; beyond it new ones are dropped (counted).
    pub max_pending_per_workspace: u64,
    /// How long attempt records are kept for the deliveries listing.
    pub attempt_retention: Duration,
    /// Deliver to loopback, private and link-local addresses too (`--webhook-allow-private`;
    /// see [`destination`]). Off by default: a workspace admin must not reach the internal
    /// network through keyledger.
    pub allow_private: bool,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_millis(100),
            first_retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            max_attempts: 16,
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            senders: 4,
            expiring_scan_interval: Duration::from_secs(60),
            max_pending_per_workspace: 10_000,
            attempt_retention: Duration::from_secs(7 * 24 * 3600),
            allow_private: false,
        }
    }
}

impl WebhookOptions {
    /// The delay before attempt `attempt + 1`, after `attempt` failed ones (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_retry.saturating_mul(factor).min(self.max_delay)
    }

    /// Where deliveries may go.
    pub fn destination_rule(&self) -> DestinationRule {
        DestinationRule { allow_private: self.allow_private }
    }
}

/// Delivery counters, exported as metrics by the server.
#[derive(Default, Debug)]
pub struct WebhookCounters {
    /// Deliveries answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (non-2xx answer or transport error), retried or not.
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after their last attempt or their maximum age.
    pub given_up: AtomicU64,
    /// Deliveries not queued because the workspace's outbox was full.
    pub dropped: AtomicU64,
}

/// Checks a webhook URL: `http` or `https`, a host, no credentials, no fragment, bounded.
pub fn validate_url(url: &str) -> Result<(), LedgerError> {
    let bad = |why: &str| Err(LedgerError::invalid("url", why.to_owned()));
    if url.len() > MAX_URL_LEN {
        return bad("must be at most 2048 characters");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains('#') {
        return bad("must be an absolute http:// or https:// URL without spaces or fragment");
    }
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return bad("must be an absolute http:// or https:// URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad("must use http:// or https://");
    }
    let Some(authority) = uri.authority() else { return bad("must name a host") };
    if authority.as_str().contains('@') {
        return bad("must not carry credentials; receivers authenticate deliveries by their signature");
    }
    if authority.host().is_empty() {
        return bad("must name a host");
    }
    Ok(())
}

/// Checks where a well-formed webhook URL leads (see [`destination`]): `Err` names the
/// refused host's class, `Ok` for an allowed host and for a URL [`validate_url`] refuses
/// (whose error comes from there). Literal addresses and metadata names only: names are
/// resolved and checked by the sender when it connects.
pub fn check_destination(url: &str, rule: DestinationRule) -> Result<(), LedgerError> {
    if validate_url(url).is_err() {
        return Ok(());
    }
    let Some(host) = url.parse::<ureq::http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)) else {
        return Ok(());
    };
    rule.check_host(&host).map_err(|refusal| LedgerError::invalid("url", format!("`{host}` {refusal}")))
}

/// Checks and normalises (sorted, deduplicated) subscribed types; empty means all.
pub fn validate_events(events: Vec<String>) -> Result<Vec<String>, LedgerError> {
    if let Some(unknown) = events.iter().find(|e| !TYPES.contains(&e.as_str())) {
        return Err(LedgerError::invalid(
            "events",
            format!(
                "{} is not a notification type (one of {})",
                keyledger_core::validate::shown_name(unknown),
                TYPES.join(", ")
            ),
        ));
    }
    Ok(keyledger_core::validate::normalize(events))
}

/// `v1=` and the hex HMAC-SHA256, keyed with the secret's text, of `id.timestamp.body`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The stable id of a notification: the same event always gives the same id, so a
/// receiver can drop repeats even across keyledger restarts.
fn delivery_id(workspace: &WorkspaceId, kind: &str, subject: &[u8]) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"keyledger webhook delivery\0");
    hasher.update(workspace.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(kind.as_bytes());
    hasher.update(&[0]);
    hasher.update(subject);
    format!("whd_{}", hex::encode(&hasher.finalize().as_bytes()[..16]))
}

/// One notification, ready to queue: its id, type, and the exact JSON body to POST.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub id: String,
    pub kind: &'static str,
    pub workspace: WorkspaceId,
    pub body: String,
}

fn notification(
    workspace: &WorkspaceId,
    kind: &'static str,
    subject: &[u8],
    created_at: Timestamp,
    seq: Option<u64>,
    data: Value,
) -> Notification {
    let id = delivery_id(workspace, kind, subject);
    let body = json!({
        "id": id,
        "type": kind,
        "created_at": created_at.to_rfc3339(),
        "workspace": workspace.as_str(),
        "seq": seq,
        "data": data,
    })
    .to_string();
    Notification { id, kind, workspace: workspace.clone(), body }
}

/// The lifecycle notification type of a log event, if it has one.
fn lifecycle_type(payload: &Payload) -> Option<&'static str> {
    Some(match payload {
        Payload::Created(_) => "key.created",
        Payload::Rotated(_) => "key.rotated",
        Payload::Revoked(_) => "key.revoked",
        Payload::Expired(_) => "key.expired",
        Payload::Disabled(_) => "key.disabled",
        Payload::Enabled(_) => "key.enabled",
        Payload::Updated(_) => "key.updated",
        Payload::PolicySet(_) => "policy.updated",
        Payload::WebhookSet(_) => "webhook.updated",
        Payload::SourcesSet(e) if e.key_id.is_some() => "key.updated",
        Payload::SourcesSet(_) => "policy.updated",
        Payload::LeakReported(_) => "key.leaked",
        Payload::LeakPolicySet(_) => "policy.updated",
        Payload::Used(_) | Payload::Denied(_) | Payload::Lookup(_) | Payload::Idempotency(_) => return None,
        Payload::Counted(_) => return None,
        // Balance changes: `key.credits_low` is decided from the spends (credits_low.rs).
        Payload::Metered(_) | Payload::CreditsSet(_) | Payload::CreditsRefilled(_) => return None,
        // Rate limits are configuration without a notification type of their own.
        Payload::RateLimitsSet(_) => return None,
        // Imports and re-hashes have no notification type of their own (docs/import.md).
        Payload::KeyImported(_) | Payload::KeyRehashed(_) => return None,
    })
}

/// The notifications an event gives rise to. `first_from_source(key, ip)` says whether the
/// event is the key's first verification from that address (answered from the audit index).
pub fn notifications_for(
    event: &Event,
    first_from_source: impl FnOnce(KeyId, IpAddr) -> bool,
) -> Vec<Notification> {
    let workspace = event.payload.workspace();
    let seq = event.seq.to_be_bytes();
    let mut out = Vec::new();
    if let Some(kind) = lifecycle_type(&event.payload) {
        out.push(notification(workspace, kind, &seq, event.at, Some(event.seq), event_json(event)));
        return out;
    }
    let (key_id, context, allowed, revoked) = match &event.payload {
        Payload::Used(_) | Payload::Metered(_) | Payload::Counted(_) => match event.payload.usage() {
            Some(u) => (u.key_id, &u.context, true, false),
            None => return out,
        },
        Payload::Denied(d) => (d.key_id, &d.context, false, d.reason == DenyReason::Revoked),
        _ => return out,
    };
    let signal = |kind| {
        let data = json!({
            "key_id": key_id.to_string(),
            "source": context.ip.map(|ip| ip.to_string()),
            "user_agent": context.user_agent,
            "allowed": allowed,
            "event": event_json(event),
        });
        notification(workspace, kind, &seq, event.at, Some(event.seq), data)
    };
    if revoked {
        out.push(signal("key.revoked_used"));
    }
    if let Some(ip) = context.ip
        && first_from_source(key_id, ip)
    {
        out.push(signal("key.new_source"));
    }
    out
}

/// The `key.expiring` notification of a key expiring at `expires_at`: once per key and
/// expiry (a new expiry set by an update is announced again).
pub fn expiring_notification(key: &crate::state::KeyRecord, expires_at: Timestamp) -> Notification {
    let mut subject = key.key_id.as_bytes().to_vec();
    subject.extend_from_slice(&expires_at.micros().to_be_bytes());
    let data = json!({
        "key_id": key.key_id.to_string(),
        "name": key.name,
        "owner": key.owner,
        "environment": key.environment.as_str(),
        "expires_at": expires_at.to_rfc3339(),
    });
    notification(&key.workspace, "key.expiring", &subject, Timestamp::now(), None, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_naming_the_field() {
        for good in ["https://example.com/hook", "http://127.0.0.1:8080/x?y=1", "https://[::1]/"] {
            assert!(validate_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https:///path",
            "https://exa mple.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            match validate_url(bad) {
                Err(LedgerError::Invalid(e)) => assert_eq!(e.field, "url", "{bad}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn destinations_are_checked_on_literal_hosts_naming_the_field() {
        let strict = DestinationRule { allow_private: false };
        for refused in [
            "http://127.0.0.1:8080/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://metadata.google.internal/",
        ] {
            match check_destination(refused, strict) {
                Err(LedgerError::Invalid(e)) => assert_eq!(e.field, "url", "{refused}"),
                other => panic!("{refused:?} gave {other:?}"),
            }
        }
        for allowed in ["https://example.com/hook", "http://93.184.215.14/", "ftp://127.0.0.1/"] {
            assert!(check_destination(allowed, strict).is_ok(), "{allowed}");
        }
        let open = DestinationRule { allow_private: true };
        assert!(check_destination("http://127.0.0.1:8080/x", open).is_ok());
        assert!(check_destination("http://169.254.169.254/", open).is_err());
    }

    #[test]
    fn event_types_are_checked_and_normalised() {
        let events = validate_events(vec!["key.revoked".into(), "key.created".into(), "key.revoked".into()]);
        assert_eq!(events.unwrap(), vec!["key.created".to_owned(), "key.revoked".to_owned()]);
        assert!(validate_events(vec!["key.exploded".into()]).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = WebhookOptions {
            first_retry: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            ..WebhookOptions::default()
        };
        let delays: Vec<u64> = (1..=5).map(|a| options.backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(options.backoff(200), Duration::from_secs(5));
    }

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let base = sign("whsec_x", "whd_1", 1_700_000_000, b"{}");
        assert!(base.starts_with("v1=") && base.len() == 3 + 64);
        assert_ne!(base, sign("whsec_y", "whd_1", 1_700_000_000, b"{}"));
        assert_ne!(base, sign("whsec_x", "whd_2", 1_700_000_000, b"{}"));
        assert_ne!(base, sign("whsec_x", "whd_1", 1_700_000_001, b"{}"));
        assert_ne!(base, sign("whsec_x", "whd_1", 1_700_000_000, b"{ }"));
        // Python's `hmac.new(b"whsec_x", b"whd_1.1700000000.{}", hashlib.sha256).hexdigest()`.
        assert_eq!(base, "v1=ab91ad9f7c5103a3e4b3812dac608bf27d4b885dea1eb4f7df327a52329197f6");
    }
}
