//! Named rate limits: their bounds, the CLI's `name=limit/duration` notation and their JSON
//! form (docs/api.md, "Rate limits").
//!
//! Exists so that the server, the CLI and the engine check one set of rules: a list holds at
//! most [`MAX_LIMITS`] limits with distinct names `[a-z0-9_-]{1,32}`, each allowing at least
//! 1 per window of 1 s to 30 days. Anything else is refused with a [`RateLimitError`]
//! naming what is wrong, never a panic.

use crate::event::RateLimit;
use crate::time::{MICROS_PER_SECOND, format_duration, parse_duration};
use serde_json::{Value, json};

/// Most limits a key (or a workspace default) may hold.
pub const MAX_LIMITS: usize = 16;
/// Longest name of a limit.
pub const MAX_NAME_LEN: usize = 32;
/// Shortest window: one second.
pub const MIN_DURATION: i64 = MICROS_PER_SECOND;
/// Longest window: thirty days.
pub const MAX_DURATION: i64 = 30 * 86_400 * MICROS_PER_SECOND;

/// Why a rate limit (list) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error("at most {MAX_LIMITS} rate limits")]
    TooMany,
    #[error("name must match [a-z0-9_-]{{1,{MAX_NAME_LEN}}}")]
    BadName,
    #[error("the name `{0}` appears twice")]
    Duplicate(String),
    #[error("limit must be at least 1")]
    BadLimit,
    #[error("duration must be between 1s and 30d")]
    BadDuration,
    #[error("expected name=limit/duration, e.g. api=100/1m")]
    BadNotation,
}

/// Whether `name` is a valid limit name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks one limit against the bounds.
pub fn validate(limit: &RateLimit) -> Result<(), RateLimitError> {
    if !valid_name(&limit.name) {
        return Err(RateLimitError::BadName);
    }
    if limit.limit == 0 {
        return Err(RateLimitError::BadLimit);
    }
    if !(MIN_DURATION..=MAX_DURATION).contains(&limit.duration) {
        return Err(RateLimitError::BadDuration);
    }
    Ok(())
}

/// Checks a whole list: its length, each limit, and that names are distinct.
pub fn validate_list(limits: &[RateLimit]) -> Result<(), RateLimitError> {
    if limits.len() > MAX_LIMITS {
        return Err(RateLimitError::TooMany);
    }
    for (i, limit) in limits.iter().enumerate() {
        validate(limit)?;
        if limits[..i].iter().any(|l| l.name == limit.name) {
            return Err(RateLimitError::Duplicate(limit.name.clone()));
        }
    }
    Ok(())
}

/// Parses the CLI notation `name=limit/duration` (durations `s`, `m`, `h`, `d`), e.g.
/// `api=100/1m`: an auto-applied limit.
pub fn parse_notation(text: &str) -> Result<RateLimit, RateLimitError> {
    let (name, rest) = text.split_once('=').ok_or(RateLimitError::BadNotation)?;
    let (limit, duration) = rest.split_once('/').ok_or(RateLimitError::BadNotation)?;
    let limit: u64 = limit.parse().map_err(|_| RateLimitError::BadLimit)?;
    if duration.ends_with('w') {
        return Err(RateLimitError::BadDuration);
    }
    let duration = parse_duration(duration).ok_or(RateLimitError::BadDuration)?;
    let limit = RateLimit { name: name.to_owned(), limit, duration, auto_apply: true };
    validate(&limit)?;
    Ok(limit)
}

/// The JSON form of a list of limits, as the key view and events show it.
pub fn limits_json(limits: &[RateLimit]) -> Value {
    Value::Array(
        limits
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "limit": l.limit,
                    "duration": format_duration(l.duration),
                    "auto_apply": l.auto_apply,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u64, duration: i64) -> RateLimit {
        RateLimit { name: name.into(), limit, duration, auto_apply: true }
    }

    #[test]
    fn notation_parses_every_unit() {
        assert_eq!(parse_notation("api=100/1m"), Ok(limit("api", 100, 60 * MICROS_PER_SECOND)));
        assert_eq!(parse_notation("a_b-1=1/1s"), Ok(limit("a_b-1", 1, MICROS_PER_SECOND)));
        assert_eq!(parse_notation("x=5/2h").map(|l| l.duration), Ok(7_200 * MICROS_PER_SECOND));
        assert_eq!(parse_notation("x=5/30d").map(|l| l.duration), Ok(MAX_DURATION));
    }

    #[test]
    fn notation_refuses_bad_input_without_panicking() {
        for bad in [
            "",
            "api",
            "api=100",
            "=1/1m",
            "API=1/1m",
            "api=0/1m",
            "api=-1/1m",
            "api=1/0s",
            "api=1/31d",
            "api=1/1w",
            "api=1/1é",
            "api=1/é",
            "api=99999999999999999999999/1m",
            &"a".repeat(33),
        ] {
            assert!(parse_notation(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn list_bounds() {
        let many: Vec<_> = (0..17).map(|i| limit(&format!("l{i}"), 1, MIN_DURATION)).collect();
        assert_eq!(validate_list(&many), Err(RateLimitError::TooMany));
        assert_eq!(validate_list(&many[..16]), Ok(()));
        let twice = [limit("a", 1, MIN_DURATION), limit("a", 2, MIN_DURATION)];
        assert_eq!(validate_list(&twice), Err(RateLimitError::Duplicate("a".into())));
        assert_eq!(validate_list(&[limit("a", 1, MIN_DURATION - 1)]), Err(RateLimitError::BadDuration));
        assert_eq!(validate_list(&[limit(&"a".repeat(32), 1, MIN_DURATION)]), Ok(()));
    }
}
