//! Time as keyledger records it: UTC microseconds since the Unix epoch.
//!
//! Events carry a [`Timestamp`]; APIs show it as RFC 3339 with microseconds and `Z`.
//! Durations in requests (`"90d"`, `"12h"`, `"30m"`, `"2s"`) are parsed by [`parse_duration`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

pub const MICROS_PER_SECOND: i64 = 1_000_000;

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch (for time-ordered ids). Clamped at zero.
    pub fn millis(self) -> u64 {
        u64::try_from(self.0 / 1000).unwrap_or(0)
    }

    /// The latest instant RFC 3339 can write (9999-12-31T23:59:59.999999Z): a key's expiry
    /// is never later, so every view and export can show it as a time.
    pub const LATEST: Timestamp = Timestamp(253_402_300_799_999_999);

    /// `self + micros`, saturating instead of overflowing.
    pub fn plus_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// Parses RFC 3339 (any offset; stored as UTC).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|t| Self(t.with_timezone(&Utc).timestamp_micros()))
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

/// Parses `<n><unit>` with unit `s`, `m`, `h`, `d` or `w` into microseconds.
/// Returns `None` for anything else, a negative or an overflowing value.
pub fn parse_duration(text: &str) -> Option<i64> {
    let unit_at = text.len().checked_sub(1)?;
    // Not `split_at`: a multi-byte last character is no unit, and must not panic.
    let (digits, unit) = text.split_at_checked(unit_at)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 {
        return None;
    }
    let amount: i64 = digits.parse().ok()?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    amount.checked_mul(seconds_per_unit)?.checked_mul(MICROS_PER_SECOND)
}

/// Writes microseconds back in the largest exact unit (`90d`, `12h`, `0s`).
pub fn format_duration(micros: i64) -> String {
    let seconds = micros / MICROS_PER_SECOND;
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_instant_is_the_last_rfc_3339_can_write() {
        assert_eq!(Timestamp::LATEST.to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::parse_rfc3339("9999-12-31T23:59:59.999999Z"), Some(Timestamp::LATEST));
        assert!(!Timestamp::LATEST.plus_micros(1).to_rfc3339().starts_with("9999"));
    }

    /// Regression (found by schemathesis: `GET /v1/audit/hygiene?older_than=%C2%80` dropped
    /// the connection): a multi-byte last character panicked in `split_at`.
    #[test]
    fn durations_ending_in_a_multi_byte_character_are_rejected_not_panics() {
        for text in ["\u{80}", "1\u{80}", "90\u{e9}", "1\u{1f600}", "\u{1f600}"] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Some(90 * 86_400 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("12h"), Some(12 * 3_600 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("30m"), Some(30 * 60 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("2s"), Some(2 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("0s"), Some(0));
        for bad in ["", "d", "-1d", "1.5h", "1y", "1 d", "999999999999999w", "1dd"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(parse_duration("90d").unwrap()), "90d");
        assert_eq!(format_duration(parse_duration("2w").unwrap()), "2w");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00.123456+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T09:00:00.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }
}
