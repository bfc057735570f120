//! A key's named rate limits (and a workspace's default ones) on the admin API: the
//! `ratelimits` field of key create, key update (PATCH), the workspace policy and the key
//! view (docs/api.md, "Rate limits").
//!
//! Exists so every surface reads and shows limits one way. **Guarantees:** a list is
//! checked whole (at most 16 limits, distinct names `[a-z0-9_-]{1,32}`, a limit of at least
//! 1 per window of 1 s to 30 d) before anything is changed; a bad one is refused with 400
//! `invalid_request` naming the field. Whether a key may have limits at all (an admin key
//! never) is decided by the engine, with the rest of the request's command, which records
//! a change as a `ratelimits_set` event; nothing here counts.

use crate::AppState;
use crate::error::ApiError;
use crate::schema::{RateLimitBody, RateLimitView};
use keyledger_core::{KeyId, RateLimit, WorkspaceId, parse_duration};

/// Parses and checks a whole list; `field` names it in a refusal.
pub fn parse_list(field: &str, list: Vec<RateLimitBody>) -> Result<Vec<RateLimit>, ApiError> {
    if list.len() > keyledger_core::ratelimit::MAX_LIMITS {
        return Err(ApiError::invalid(field, keyledger_core::ratelimit::RateLimitError::TooMany));
    }
    let limits = list
        .into_iter()
        .map(|body| {
            let duration = parse_duration(&body.duration).ok_or_else(|| {
                ApiError::invalid(field, "has a duration that is not like `1m` (s, m, h, d)")
            })?;
            Ok(RateLimit {
                name: body.name,
                limit: body.limit,
                duration,
                auto_apply: body.auto_apply.unwrap_or(true),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    keyledger_core::ratelimit::validate_list(&limits).map_err(|e| ApiError::invalid(field, e))?;
    Ok(limits)
}

/// The limits a key is under now, and where they come from: `key` (its own, given to it or
/// a predecessor) or `policy` (its workspace's default); `None` without limits.
pub fn of_key(state: &AppState, key_id: &KeyId, workspace: &str) -> (Vec<RateLimitView>, Option<String>) {
    let Ok(workspace) = workspace.parse::<WorkspaceId>() else { return (Vec::new(), None) };
    let (limits, own) = state.engine.ratelimits(key_id, &workspace);
    if limits.is_empty() {
        return (Vec::new(), None);
    }
    (RateLimitView::list(&limits), Some(if own { "key" } else { "policy" }.to_owned()))
}

/// The policy view with the workspace's default limits.
pub fn with_policy(
    state: &AppState,
    view: crate::schema::PolicyView,
    workspace: &WorkspaceId,
) -> crate::schema::PolicyView {
    crate::schema::PolicyView {
        ratelimits: RateLimitView::list(&state.engine.workspace_ratelimits(workspace)),
        ..view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, limit: u64, duration: &str) -> RateLimitBody {
        RateLimitBody { name: name.into(), limit, duration: duration.into(), auto_apply: None }
    }

    #[test]
    fn lists_are_checked_whole() {
        let ok = parse_list("ratelimits", vec![body("api", 100, "1m")]).unwrap();
        assert_eq!(
            ok,
            vec![RateLimit { name: "api".into(), limit: 100, duration: 60_000_000, auto_apply: true }]
        );
        assert_eq!(RateLimitView::list(&ok)[0].duration, "1m");
        for bad in [
            vec![body("api", 0, "1m")],
            vec![body("API", 1, "1m")],
            vec![body("api", 1, "0s")],
            vec![body("api", 1, "31d")],
            vec![body("api", 1, "1é")],
            vec![body("api", 1, "1m"), body("api", 2, "1m")],
            (0..17).map(|i| body(&format!("l{i}"), 1, "1m")).collect(),
        ] {
            assert!(parse_list("ratelimits", bad).is_err());
        }
    }
}
