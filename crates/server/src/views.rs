//! JSON views of the engine's records, as contract §4 shapes them.

use keyledger_core::json::{metadata_json, policy_json};
use keyledger_core::{Policy, Secret, Timestamp, json::actor_text};
use keyledger_ledger::KeyRecord;
use serde_json::{Value, json};

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// The contract's KeyView. Never the secret, never its hash.
pub fn key_view(key: &KeyRecord, now: Timestamp) -> Value {
    json!({
        "key_id": key.key_id.to_string(),
        "workspace": key.workspace.as_str(),
        "name": key.name,
        "hint": key.hint,
        "scopes": key.scopes,
        "resources": key.resources,
        "environment": key.environment.as_str(),
        "owner": key.owner,
        "metadata": metadata_json(&key.metadata),
        "status": key.status(now).as_str(),
        "created_at": key.created_at.to_rfc3339(),
        "created_by": actor_text(&key.created_by),
        "expires_at": time(key.expires_at),
        "revoked_at": time(key.revoked_at),
        "revoked_reason": key.revoked_reason,
        "disabled_reason": key.disabled.clone().flatten(),
        "rotated_from": key.rotated_from.map(|k| k.to_string()),
        "rotated_to": key.rotated_to.map(|k| k.to_string()),
        "last_used_at": time(key.last_used.at),
        "last_used_ip": key.last_used.ip.map(|ip| ip.to_string()),
        "use_count": key.last_used.count,
    })
}

/// A KeyView plus the secret: only in the one create/rotate response that issues it.
pub fn key_view_with_secret(key: &KeyRecord, secret: &Secret, now: Timestamp) -> Value {
    let mut view = key_view(key, now);
    if let Some(object) = view.as_object_mut() {
        object.insert("secret".into(), Value::String(secret.expose().to_owned()));
    }
    view
}

pub fn policy_view(workspace: &str, policy: &Policy) -> Value {
    let mut view = policy_json(policy);
    if let Some(object) = view.as_object_mut() {
        object.insert("workspace".into(), Value::String(workspace.to_owned()));
    }
    view
}
