//! Named rate limits at the verify surface (docs/api.md, "Rate limits"): the limits a
//! request names, and how an answer shows the limits it applied — the `ratelimits` field,
//! the `RateLimit-Policy` and `RateLimit` headers of draft-ietf-httpapi-ratelimit-headers,
//! and on refusal 429 `rate_limited` with `Retry-After`.
//!
//! Exists so JSON verify, forward-auth verify and gRPC ext_authz read and show limits the
//! same way. **Guarantees:** a request names at most [`MAX_REQUESTED`] limits, each once,
//! with a valid name; anything else is refused (400 `invalid_request`) before any lookup.
//! The engine decides; nothing here counts.

use crate::error::{ApiError, ErrorCode};
use crate::schema::AppliedLimit;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keyledger_core::Timestamp;
use keyledger_core::ratelimit::{MAX_LIMITS, valid_name};
use keyledger_ledger::ratelimit::LimitStatus;
use serde::Deserialize;
use serde_json::json;

/// Most limits one verification may name (as many as a key may hold).
pub const MAX_REQUESTED: usize = MAX_LIMITS;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A limit a JSON-mode verification names: `cost` (default 1; 0 checks without spending).
#[derive(Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimit {
    name: String,
    cost: Option<u64>,
}

fn push(out: &mut Vec<(String, u64)>, field: &str, name: &str, cost: u64) -> Result<(), ApiError> {
    if out.len() >= MAX_REQUESTED {
        return Err(ApiError::invalid(field, format!("names at most {MAX_REQUESTED} limits")));
    }
    if !valid_name(name) {
        return Err(ApiError::invalid(field, "has a limit name that does not match [a-z0-9_-]{1,32}"));
    }
    if out.iter().any(|(n, _)| n == name) {
        return Err(ApiError::invalid(field, format!("names the limit `{name}` twice")));
    }
    out.push((name.to_owned(), cost));
    Ok(())
}

/// The limits of a JSON body's `ratelimits` field, as the engine takes them.
pub fn from_body(list: Vec<RequestedLimit>) -> Result<Vec<(String, u64)>, ApiError> {
    let mut out = Vec::with_capacity(list.len().min(MAX_REQUESTED));
    for item in list {
        push(&mut out, "ratelimits", &item.name, item.cost.unwrap_or(1))?;
    }
    Ok(out)
}

/// The limits of forward-auth's `ratelimit` query parameters, `X-Keyledger-Ratelimit`
/// headers or gRPC's `ratelimit` extension: items `name` or `name:cost`, each value
/// possibly a comma-separated list. `field` names the source in a refusal.
pub fn from_notation<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, u64)>, ApiError> {
    let mut out = Vec::new();
    for item in values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|i| !i.is_empty()) {
        let (name, cost) = match item.split_once(':') {
            None => (item, 1),
            Some((name, cost)) => {
                let cost = cost.trim().parse::<u64>().map_err(|_| {
                    ApiError::invalid(field, "has a cost that is not a whole number (name:cost)")
                })?;
                (name.trim(), cost)
            }
        };
        push(&mut out, field, name, cost)?;
    }
    Ok(out)
}

/// Whole seconds from `now` until `reset`, rounded up (0 once passed).
pub fn seconds_until(reset: Timestamp, now: Timestamp) -> u64 {
    let micros = reset.micros().saturating_sub(now.micros()).max(0);
    u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000)
}

/// The `ratelimits` field of an answer: each applied limit after this verification.
pub fn applied(statuses: &[LimitStatus]) -> Vec<AppliedLimit> {
    statuses
        .iter()
        .map(|s| AppliedLimit {
            name: s.name.clone(),
            limit: s.limit,
            remaining: s.remaining,
            reset: s.reset.to_rfc3339(),
        })
        .collect()
}

/// The two header values for `statuses`: `RateLimit-Policy` (`"api";q=100;w=60`) and
/// `RateLimit` (`"api";r=0;t=12`), one list item per applied limit; `None` when none.
pub fn header_values(statuses: &[LimitStatus], now: Timestamp) -> Option<(String, String)> {
    use std::fmt::Write as _;
    if statuses.is_empty() {
        return None;
    }
    // Written straight into two buffers: this runs on every rate-limited verification.
    let mut policy = String::with_capacity(40 * statuses.len());
    let mut state = String::with_capacity(40 * statuses.len());
    for (i, s) in statuses.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        // Writing to a String cannot fail.
        let _ = write!(policy, "{separator}\"{}\";q={};w={}", s.name, s.limit, s.duration / 1_000_000);
        let _ =
            write!(state, "{separator}\"{}\";r={};t={}", s.name, s.remaining, seconds_until(s.reset, now));
    }
    Some((policy, state))
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers for `statuses` (none if empty).
pub fn set_headers(headers: &mut HeaderMap, statuses: &[LimitStatus], now: Timestamp) {
    let Some((policy, state)) = header_values(statuses, now) else { return };
    // Names are [a-z0-9_-] and numbers digits: the values are always valid header text.
    if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, state);
    }
}

/// Seconds until the refusing limit `name` allows again (at least 1).
pub fn retry_after(name: &str, statuses: &[LimitStatus], now: Timestamp) -> u64 {
    statuses.iter().find(|s| s.name == name).map_or(1, |s| seconds_until(s.reset, now).max(1))
}

/// The error refusing a verification over the limit `name`: 429 `rate_limited`.
pub fn refusal_error(name: &str) -> ApiError {
    ApiError::new(ErrorCode::RateLimited, format!("the key exceeded its rate limit `{name}`"))
        .with_extra(json!({"valid": false, "reason": "rate_limited"}))
}

/// The complete 429 answer: the error body, `Retry-After` and the rate-limit headers.
pub fn refused(name: &str, statuses: &[LimitStatus], now: Timestamp) -> Response {
    let mut response = refusal_error(name).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after(name, statuses, now)));
    set_headers(headers, statuses, now);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, remaining: u64, reset_s: i64) -> LimitStatus {
        LimitStatus {
            name: name.into(),
            limit: 100,
            duration: 60_000_000,
            remaining,
            reset: Timestamp::from_micros(reset_s * 1_000_000),
        }
    }

    #[test]
    fn notation_reads_names_costs_and_lists() {
        let got = from_notation("ratelimit", ["api", "heavy:5, search:0"]).unwrap();
        assert_eq!(got, vec![("api".into(), 1), ("heavy".into(), 5), ("search".into(), 0)]);
        assert_eq!(from_notation("ratelimit", [" , "]).unwrap(), vec![]);
    }

    #[test]
    fn bad_requests_are_refused_without_panicking() {
        for bad in ["API", "api:x", "api:-1", "api:1:2", "api,api", ":3", "é", &"a".repeat(33)] {
            assert!(from_notation("ratelimit", [bad]).is_err(), "{bad:?} was accepted");
        }
        let many: Vec<String> = (0..17).map(|i| format!("l{i}")).collect();
        assert!(from_notation("ratelimit", many.iter().map(String::as_str)).is_err());
        assert!(from_notation("ratelimit", many[..16].iter().map(String::as_str)).is_ok());
        let twice = vec![
            RequestedLimit { name: "a".into(), cost: None },
            RequestedLimit { name: "a".into(), cost: Some(2) },
        ];
        assert!(from_body(twice).is_err());
    }

    #[test]
    fn headers_follow_the_draft() {
        let now = Timestamp::from_micros(48_500_000);
        let statuses = [status("api", 0, 60), status("b", 7, 120)];
        let (policy, state) = header_values(&statuses, now).unwrap();
        assert_eq!(policy, "\"api\";q=100;w=60, \"b\";q=100;w=60");
        assert_eq!(state, "\"api\";r=0;t=12, \"b\";r=7;t=72");
        assert_eq!(retry_after("api", &statuses, now), 12);
        assert_eq!(retry_after("api", &statuses, Timestamp::from_micros(61_000_000)), 1);
        assert!(header_values(&[], now).is_none());
    }
}
