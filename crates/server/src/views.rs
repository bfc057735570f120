//! JSON views of the engine's records, as `docs/api.md` shapes them.
//!
//! A view that carries an issued secret ([`WithSecret`]) never copies the secret into a
//! `serde_json::Value`, whose strings are freed without being zeroed: it holds it as a
//! [`Secret`] (zeroed on drop) and writes it straight into the response body.

use keyledger_core::json::{metadata_json, policy_json};
use keyledger_core::{Policy, Secret, Timestamp, json::actor_text};
use keyledger_ledger::KeyRecord;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

fn time(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// The KeyView of docs/api.md, "Keys". Never the secret, never its hash.
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

/// A JSON object plus `"secret"`, its last field, serialised from a [`Secret`]: the secret
/// is never in a `serde_json::Value` and is zeroed when this is dropped.
pub struct WithSecret {
    view: Value,
    secret: Secret,
}

impl WithSecret {
    /// `view` (an object, never holding a secret) with `secret` added.
    pub fn new(view: Value, secret: &Secret) -> Self {
        Self { view, secret: secret.clone() }
    }
}

impl Serialize for WithSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.view.as_object();
        let mut map = serializer.serialize_map(Some(fields.map_or(0, |f| f.len()) + 1))?;
        for (name, value) in fields.into_iter().flatten() {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("secret", self.secret.expose())?;
        map.end()
    }
}

/// A KeyView plus the secret: only in the one create/rotate response that issues it.
pub fn key_view_with_secret(key: &KeyRecord, secret: &Secret, now: Timestamp) -> WithSecret {
    WithSecret::new(key_view(key, now), secret)
}

/// The answer of a rotation: the new key with its secret, and the previous key.
#[derive(serde::Serialize)]
pub struct RotationView {
    key: WithSecret,
    previous: Value,
}

pub fn rotation_view(new: &KeyRecord, secret: &Secret, previous: &KeyRecord, now: Timestamp) -> RotationView {
    RotationView { key: key_view_with_secret(new, secret, now), previous: key_view(previous, now) }
}

pub fn policy_view(workspace: &str, policy: &Policy) -> Value {
    let mut view = policy_json(policy);
    if let Some(object) = view.as_object_mut() {
        object.insert("workspace".into(), Value::String(workspace.to_owned()));
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyledger_core::{Environment, KeyPrefix};

    fn holds_zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn an_issued_secret_is_serialised_from_a_zeroizing_type_never_from_a_value() {
        let secret = Secret::generate(&KeyPrefix::default_prefix(), Environment::Live).unwrap();
        let view = json!({"key_id": "key_x", "name": "ci"});
        let issued = WithSecret::new(view.clone(), &secret);
        // The secret is held as a `Secret` (zeroed on drop), not copied into the view.
        holds_zeroed_on_drop(&issued.secret);
        assert!(!issued.view.to_string().contains(secret.expose()));
        // On the wire: the same object as before, with `secret` last.
        let text = serde_json::to_string(&issued).unwrap();
        assert_eq!(text, format!(r#"{{"key_id":"key_x","name":"ci","secret":"{}"}}"#, secret.expose()));
    }
}
