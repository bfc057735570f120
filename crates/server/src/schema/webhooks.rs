//! A workspace's webhook and its delivery attempts (docs/api.md, "Webhooks";
//! docs/webhooks.md). The signing secret is shown once, by the PUT that issues it, and
//! written from the zeroizing [`Secret`] itself (as for [`super::IssuedKey`]).

use super::keys::expose;
use super::rfc3339;
use keyledger_core::json::actor_text;
use keyledger_core::{Secret, WorkspaceId};
use keyledger_ledger::Webhook;
use keyledger_ledger::webhook::Attempt;
use serde::Serialize;
use utoipa::ToSchema;

/// A workspace's webhook (never its secret).
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub workspace: String,
    pub url: String,
    /// Subscribed notification types; empty means all.
    pub events: Vec<String>,
    /// False once disabled (DELETE).
    pub enabled: bool,
    pub updated_at: String,
    /// `system` or the admin key id that configured it.
    pub updated_by: String,
}

impl WebhookView {
    pub fn new(workspace: &WorkspaceId, webhook: &Webhook) -> Self {
        Self {
            workspace: workspace.as_str().to_owned(),
            url: webhook.url.clone(),
            events: webhook.events.clone(),
            enabled: webhook.enabled,
            updated_at: webhook.set_at.to_rfc3339(),
            updated_by: actor_text(&webhook.set_by),
        }
    }
}

/// A webhook plus its signing secret: returned once, by the PUT that issues it.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// HMAC-SHA256 key of the `keyledger-signature` header (the whole text is the key).
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, example = "whsec_3kTq…")]
    pub secret: Secret,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct WebhookAttempt {
    /// The `keyledger-webhook-id` of the delivery (the same on every retry).
    pub delivery_id: String,
    /// The notification type, e.g. `key.revoked`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer, or why it was cancelled.
    pub error: Option<String>,
    /// delivered, retrying, failed (given up) or cancelled.
    pub outcome: String,
    pub duration_ms: u64,
    pub next_retry_at: Option<String>,
}

impl From<&Attempt> for WebhookAttempt {
    fn from(attempt: &Attempt) -> Self {
        Self {
            delivery_id: attempt.delivery_id.clone(),
            kind: attempt.kind.clone(),
            attempt: attempt.attempt,
            at: attempt.at.to_rfc3339(),
            status: attempt.status,
            error: attempt.error.clone(),
            outcome: attempt.outcome.as_str().to_owned(),
            duration_ms: attempt.duration_ms,
            next_retry_at: rfc3339(attempt.next_retry_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveries {
    pub workspace: String,
    /// Deliveries waiting for a first attempt or a retry.
    pub pending: u64,
    /// Newest first.
    pub attempts: Vec<WebhookAttempt>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{Environment, KeyPrefix};

    fn holds_zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn an_issued_secret_is_serialised_from_a_zeroizing_type_never_from_a_value() {
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let webhook = WebhookView {
            workspace: "acme".into(),
            url: "https://example.com/hook".into(),
            events: vec![],
            enabled: true,
            updated_at: "2026-01-01T00:00:00Z".into(),
            updated_by: "system".into(),
        };
        let issued = WebhookWithSecret { webhook, secret: secret.clone() };
        // The secret is held as a `Secret` (zeroed on drop), never copied into a view.
        holds_zeroed_on_drop(&issued.secret);
        // On the wire: the view's fields, then `secret` last.
        let text = serde_json::to_string(&issued).unwrap();
        let expected = format!(
            r#"{{"workspace":"acme","url":"https://example.com/hook","events":[],"enabled":true,"updated_at":"2026-01-01T00:00:00Z","updated_by":"system","secret":"{}"}}"#,
            secret.expose()
        );
        assert_eq!(text, expected);
    }
}
