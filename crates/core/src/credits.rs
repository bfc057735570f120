//! Usage credits of a key: the refill schedule and the one rule that says when a refill is
//! due (docs/credits.md).
//!
//! A key with credits spends `cost` of its balance on each allowed verification; the
//! balance lives only in the log (`credits_set`, `credits_refilled` and the `cost` of `used`
//! events), so everything here is a pure function of recorded values and time: a replay,
//! the live registry and the offline verifier compute the same balances.
//!
//! **Guarantee:** [`last_boundary`] is monotonic in `now`, never after `now`, and total
//! (no panic for any timestamp or day): refills are decided identically everywhere.

use crate::time::Timestamp;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// How often a key's balance is reset to its refill amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefillInterval {
    /// At every UTC midnight.
    Daily,
    /// At UTC midnight of day `day` (1–31, clamped to the month's last day) of every month.
    Monthly,
}

impl RefillInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            RefillInterval::Daily => "daily",
            RefillInterval::Monthly => "monthly",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => Some(RefillInterval::Daily),
            "monthly" => Some(RefillInterval::Monthly),
            _ => None,
        }
    }
}

/// A key's refill: at each interval boundary its balance is **set** to `amount` (unused
/// credits do not accumulate).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Refill {
    pub amount: u64,
    pub interval: RefillInterval,
    /// Day of the month of a monthly refill (1–31; `None` means 1). Unused when daily.
    pub day: Option<u8>,
}

/// The JSON form of a refill: `{"amount", "interval", "day"}` or `null`.
pub fn refill_json(refill: Option<&Refill>) -> serde_json::Value {
    match refill {
        None => serde_json::Value::Null,
        Some(r) => serde_json::json!({"amount": r.amount, "interval": r.interval.as_str(), "day": r.day}),
    }
}

/// Largest balance, refill amount or cost accepted from a request: far below `u64::MAX`, so
/// that `remaining + add` is checked against it rather than wrapping.
pub const MAX_CREDITS: u64 = 1 << 53;

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// Midnight UTC of `year-month-day`, the day clamped to the month's length.
fn month_day(year: i32, month: u32, day: u32) -> Option<Timestamp> {
    let mut day = day.clamp(1, 31);
    loop {
        if let Some(date) = NaiveDate::from_ymd_opt(year, month, day) {
            let at = date.and_hms_opt(0, 0, 0)?.and_utc();
            return Some(Timestamp(at.timestamp_micros()));
        }
        day = day.checked_sub(1).filter(|d| *d >= 28)?;
    }
}

/// The latest refill boundary at or before `now`, or `None` if `now` is outside the
/// calendar's range.
pub fn last_boundary(refill: &Refill, now: Timestamp) -> Option<Timestamp> {
    match refill.interval {
        RefillInterval::Daily => now.micros().div_euclid(DAY_MICROS).checked_mul(DAY_MICROS).map(Timestamp),
        RefillInterval::Monthly => {
            let day = u32::from(refill.day.unwrap_or(1));
            let date = DateTime::<Utc>::from_timestamp_micros(now.micros())?;
            let this_month = month_day(date.year(), date.month(), day)?;
            if this_month <= now {
                return Some(this_month);
            }
            let (year, month) = if date.month() == 1 {
                (date.year().checked_sub(1)?, 12)
            } else {
                (date.year(), date.month() - 1)
            };
            month_day(year, month, day)
        }
    }
}

/// Whether a key whose balance was last set or refilled at `since` is due a refill at `now`:
/// a boundary has passed in between.
pub fn refill_due(refill: &Refill, since: Timestamp, now: Timestamp) -> bool {
    last_boundary(refill, now).is_some_and(|boundary| boundary > since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn monthly(day: Option<u8>) -> Refill {
        Refill { amount: 10, interval: RefillInterval::Monthly, day }
    }

    #[test]
    fn daily_boundaries_are_utc_midnights() {
        let daily = Refill { amount: 10, interval: RefillInterval::Daily, day: None };
        assert_eq!(last_boundary(&daily, at("2026-12-03T06:00:00Z")), Some(at("2026-12-03T00:00:00Z")));
        assert_eq!(last_boundary(&daily, at("2026-12-03T00:00:00Z")), Some(at("2026-12-03T00:00:00Z")));
        assert!(!refill_due(&daily, at("2026-12-03T00:00:00Z"), at("2026-12-03T23:59:59Z")));
        assert!(refill_due(&daily, at("2026-12-03T23:59:59Z"), at("2026-12-04T00:00:00Z")));
        assert_eq!(last_boundary(&daily, Timestamp(-1)), Some(Timestamp(-DAY_MICROS)));
    }

    #[test]
    fn monthly_boundaries_fall_on_the_day_clamped_to_the_month() {
        assert_eq!(
            last_boundary(&monthly(None), at("2026-12-03T06:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            last_boundary(&monthly(Some(15)), at("2026-12-03T06:00:00Z")),
            Some(at("2026-11-15T00:00:00Z"))
        );
        assert_eq!(
            last_boundary(&monthly(Some(31)), at("2026-03-01T00:00:00Z")),
            Some(at("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            last_boundary(&monthly(Some(31)), at("2024-03-01T00:00:00Z")),
            Some(at("2024-02-29T00:00:00Z"))
        );
        assert_eq!(
            last_boundary(&monthly(Some(20)), at("2026-01-10T00:00:00Z")),
            Some(at("2025-12-20T00:00:00Z"))
        );
        assert!(refill_due(&monthly(None), at("2026-11-30T23:00:00Z"), at("2026-12-01T00:00:01Z")));
        assert!(!refill_due(&monthly(None), at("2026-12-01T00:00:01Z"), at("2026-12-31T23:00:00Z")));
    }

    proptest! {
        #[test]
        fn boundaries_are_never_after_now_and_never_panic(now in any::<i64>(), day in any::<u8>(), daily in any::<bool>()) {
            let interval = if daily { RefillInterval::Daily } else { RefillInterval::Monthly };
            let refill = Refill { amount: 1, interval, day: Some(day) };
            if let Some(boundary) = last_boundary(&refill, Timestamp(now)) {
                prop_assert!(boundary <= Timestamp(now));
            }
        }
    }
}
