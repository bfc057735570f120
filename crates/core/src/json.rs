//! The JSON form of an event, as the API, exports and the offline verifier show it.
//!
//! One function, [`event_json`], defines it. Export lines are defined from it too
//! (`keyledger_verify::export::line_value`); the export's hot path writes the same bytes
//! without building a `Value` (`keyledger_verify::export::write_event_line`, tested
//! against the definition on every kind), and the producer and the verifier share it.
//! The keyed hash of a `created` event is deliberately left out.

use crate::event::*;
use serde_json::{Map, Value, json};

fn opt<T: ToString>(value: &Option<T>) -> Value {
    value.as_ref().map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// The JSON text form of an actor: `system`, `verifier`, `recovery` or the admin key's id.
pub fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::System => "system".into(),
        Actor::Verifier => "verifier".into(),
        Actor::Recovery => "recovery".into(),
        Actor::Admin(key) => key.to_string(),
    }
}

pub fn context_json(context: &UsageContext) -> Value {
    json!({
        "ip": opt(&context.ip),
        "user_agent": context.user_agent,
        "method": context.method,
        "path": context.path,
        "request_id": context.request_id,
        "scopes": context.scopes,
        "resource": context.resource,
    })
}

/// What a `used` event spent of each rate limit: `[{name, cost, duration}]` (the duration
/// as a limit shows it, e.g. `1m`).
pub fn limit_spends_json(spent: &[LimitSpend]) -> Value {
    Value::Array(
        spent
            .iter()
            .map(|s| {
                json!({"name": s.name, "cost": s.cost, "duration": crate::time::format_duration(s.duration)})
            })
            .collect(),
    )
}

pub fn policy_json(policy: &Policy) -> Value {
    json!({
        "max_active_keys": policy.max_active_keys,
        "require_expiry": policy.require_expiry,
        "max_lifetime": policy.max_lifetime.map(crate::time::format_duration),
        "key_prefix": opt(&policy.key_prefix),
    })
}

/// Metadata is stored as canonical JSON text; shown as the object it is.
pub fn metadata_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The JSON form of an event (docs/log-format.md, "JSON form of an event").
pub fn event_json(event: &Event) -> Value {
    let payload = &event.payload;
    let mut object = Map::new();
    object.insert("seq".into(), json!(event.seq));
    object.insert("at".into(), json!(event.at.to_rfc3339()));
    object.insert("kind".into(), json!(payload.kind().as_str()));
    object.insert("workspace".into(), json!(payload.workspace().as_str()));
    object.insert("key_id".into(), opt(&payload.key_id()));
    object.insert("actor".into(), json!(actor_text(&event.actor)));
    object.insert("request_id".into(), json!(event.request_id.to_string()));
    let mut put = |name: &str, value: Value| {
        object.insert(name.to_owned(), value);
    };
    match payload {
        Payload::Created(e) => {
            put("name", json!(e.name));
            put("hint", json!(e.hint));
            put("environment", json!(e.environment.as_str()));
            put("scopes", json!(e.scopes));
            put("resources", json!(e.resources));
            put("owner", json!(e.owner));
            put("metadata", metadata_json(&e.metadata));
            put("expires_at", json!(e.expires_at.map(|t| t.to_rfc3339())));
            put("rotated_from", opt(&e.rotated_from));
        }
        Payload::Used(e) => put("context", context_json(&e.context)),
        Payload::Metered(e) => {
            put("context", context_json(&e.usage.context));
            put("cost", json!(e.cost));
            put("credits_remaining", json!(e.remaining));
        }
        Payload::Counted(e) => {
            put("context", context_json(&e.usage.context));
            if let Some(credits) = e.credits {
                put("cost", json!(credits.cost));
                put("credits_remaining", json!(credits.remaining));
            }
            put("ratelimits_spent", limit_spends_json(&e.spent));
        }
        Payload::CreditsSet(e) => {
            put("remaining", json!(e.remaining));
            put("refill", crate::credits::refill_json(e.refill.as_ref()));
            put("low_threshold", json!(e.low_threshold));
        }
        Payload::CreditsRefilled(e) => put("remaining", json!(e.remaining)),
        Payload::Denied(e) => {
            put("reason", json!(e.reason.code()));
            put("detail", json!(e.reason.message()));
            put("context", context_json(&e.context));
        }
        Payload::Rotated(e) => {
            put("rotated_to", json!(e.rotated_to.to_string()));
            put("valid_until", json!(e.valid_until.map(|t| t.to_rfc3339())));
        }
        Payload::Revoked(e) => put("reason", json!(e.reason)),
        Payload::Disabled(e) => put("reason", json!(e.reason)),
        Payload::Expired(_) | Payload::Enabled(_) => {}
        Payload::PolicySet(e) => put("policy", policy_json(&e.policy)),
        Payload::Lookup(e) => put("found", opt(&e.found)),
        Payload::WebhookSet(e) => {
            put("url", json!(e.url));
            put("events", json!(e.events));
            put("enabled", json!(e.enabled));
        }
        Payload::SourcesSet(e) => {
            put("sources", json!(e.sources.iter().map(ToString::to_string).collect::<Vec<_>>()));
            if e.key_id.is_some() {
                put("from_policy", json!(e.from_policy));
            } else {
                put("require_on_live", json!(e.require_on_live));
            }
        }
        Payload::LeakReported(e) => {
            put("reporter", json!(e.reporter.as_str()));
            put("url", json!(e.url));
            put("source", json!(e.source));
        }
        Payload::LeakPolicySet(e) => put("on_leak", json!(e.on_leak.as_str())),
        Payload::RateLimitsSet(e) => put("ratelimits", crate::ratelimit::limits_json(&e.limits)),
        // Never the foreign digest (docs/import.md): only its algorithm.
        Payload::KeyImported(e) => {
            put("name", json!(e.name));
            put("algorithm", json!(e.foreign.algorithm.as_str()));
            put("environment", json!(e.environment.as_str()));
            put("scopes", json!(e.scopes));
            put("resources", json!(e.resources));
            put("owner", json!(e.owner));
            put("metadata", metadata_json(&e.metadata));
            put("expires_at", json!(e.expires_at.map(|t| t.to_rfc3339())));
            put("external_id", json!(e.external_id));
        }
        Payload::KeyRehashed(_) => {}
        Payload::Idempotency(e) => {
            put("key_ids", json!(e.key_ids.iter().map(ToString::to_string).collect::<Vec<_>>()));
        }
        Payload::Updated(e) => {
            let mut changes = Map::new();
            if let Some(name) = &e.name {
                changes.insert("name".into(), json!(name));
            }
            if let Some(owner) = &e.owner {
                changes.insert("owner".into(), json!(owner));
            }
            if let Some(metadata) = &e.metadata {
                changes.insert("metadata".into(), metadata_json(metadata));
            }
            if let Some(expires_at) = &e.expires_at {
                changes.insert("expires_at".into(), json!(expires_at.map(|t| t.to_rfc3339())));
            }
            if let Some(scopes) = &e.scopes {
                changes.insert("scopes".into(), json!(scopes));
            }
            if let Some(resources) = &e.resources {
                changes.insert("resources".into(), json!(resources));
            }
            put("changes", Value::Object(changes));
        }
    }
    Value::Object(object)
}
