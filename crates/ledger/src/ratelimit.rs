//! Rate-limit counters: fixed windows per (key, limit name), held by the sequencer.
//!
//! Exists because a rate limit is decided where revocation is, on the serial writer thread
//! (docs/api.md, "Rate limits"): checking and spending are one step, so counting is exact.
//! The counters are memory kept in step with the log: what a verification spent rides on
//! its `used` event, and the spends this writer did not decide (another node's, or the
//! log's before a restart) are counted with [`RateCounters::count`]. Windows are fixed and
//! aligned to the epoch (`start = now - now % duration`), so a window's reset time is the
//! same for every node and every restart.
//!
//! **Guarantees.** A verification applying several limits spends on all of them or on none:
//! a refused verification spends nothing. At most [`MAX_COUNTERS`] counters are held; when
//! full, counters of ended windows go first (losing nothing), then the least recently used
//! eighth of the rest, each of which may then allow at most one extra window's allowance in
//! its current window (its counter starts empty again).

use keyledger_core::{KeyId, RateLimit, Timestamp};
use std::collections::HashMap;

/// Most counters held at once (about 100 bytes each: about 26 MB when full).
pub const MAX_COUNTERS: usize = 262_144;

/// One limit as applied to one verification, and what is left of it afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitStatus {
    pub name: String,
    pub limit: u64,
    /// Window length in microseconds.
    pub duration: i64,
    /// Allowance left in the current window after this verification.
    pub remaining: u64,
    /// When the current window ends.
    pub reset: Timestamp,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    /// The limit's window length when this window opened: a limit whose length changed
    /// counts afresh.
    duration: i64,
    used: u64,
    touched: u64,
}

/// The counters, bounded by `cap` (see the module docs).
#[derive(Debug)]
pub struct RateCounters {
    windows: HashMap<(KeyId, String), Window>,
    cap: usize,
    /// A logical clock for "least recently used".
    tick: u64,
}

impl Default for RateCounters {
    fn default() -> Self {
        Self::with_cap(MAX_COUNTERS)
    }
}

/// The start of the window of `duration` holding `now` (aligned to the epoch).
pub(crate) fn window_start(now: i64, duration: i64) -> i64 {
    let duration = duration.max(1);
    now - now.rem_euclid(duration)
}

impl RateCounters {
    pub fn with_cap(cap: usize) -> Self {
        Self { windows: HashMap::new(), cap: cap.max(1), tick: 0 }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// What `key` has used of `limit` in the window holding `now`.
    fn used(&self, key: KeyId, limit: &RateLimit, now: i64) -> u64 {
        let start = window_start(now, limit.duration);
        match self.windows.get(&(key, limit.name.clone())) {
            Some(w) if w.start == start && w.duration == limit.duration => w.used,
            _ => 0,
        }
    }

    /// Checks every `(limit, cost)` and, only if all allow it, spends each cost. A cost of 0
    /// spends nothing and is refused only when the window is used up. On refusal, the name
    /// of the first limit that refused, and every limit's status (nothing spent).
    pub fn check_and_spend(
        &mut self,
        key: KeyId,
        applied: &[(&RateLimit, u64)],
        now: Timestamp,
    ) -> Result<Vec<LimitStatus>, (String, Vec<LimitStatus>)> {
        let now = now.micros();
        let mut refused = None;
        self.tick += 1;
        for (limit, cost) in applied {
            if let Some(w) = self.windows.get_mut(&(key, limit.name.clone())) {
                w.touched = self.tick;
            }
            let used = self.used(key, limit, now);
            let over =
                if *cost == 0 { used >= limit.limit } else { used.saturating_add(*cost) > limit.limit };
            if over && refused.is_none() {
                refused = Some(limit.name.clone());
            }
        }
        if refused.is_none() {
            for (limit, cost) in applied.iter().filter(|(_, cost)| *cost > 0) {
                self.spend(key, &limit.name, limit.duration, *cost, now);
            }
        }
        let statuses = applied
            .iter()
            .map(|(limit, _)| {
                let start = window_start(now, limit.duration);
                LimitStatus {
                    name: limit.name.clone(),
                    limit: limit.limit,
                    duration: limit.duration,
                    remaining: limit.limit.saturating_sub(self.used(key, limit, now)),
                    reset: Timestamp::from_micros(start.saturating_add(limit.duration)),
                }
            })
            .collect();
        match refused {
            None => Ok(statuses),
            Some(name) => Err((name, statuses)),
        }
    }

    /// Counts what a verification this writer did not decide spent at `at` (another
    /// node's, or one read back from the log): each spend in the window of its recorded
    /// length holding `at`, or not at all when that window has already ended here.
    pub fn count(&mut self, key: KeyId, spent: &[keyledger_core::LimitSpend], at: Timestamp) {
        for spend in spent {
            self.spend(key, &spend.name, spend.duration, spend.cost, at.micros());
        }
    }

    fn spend(&mut self, key: KeyId, name: &str, duration: i64, cost: u64, now: i64) {
        let start = window_start(now, duration);
        self.tick += 1;
        let tick = self.tick;
        let id = (key, name.to_owned());
        if !self.windows.contains_key(&id) && self.windows.len() >= self.cap {
            self.make_room(now);
        }
        let fresh = Window { start, duration, used: 0, touched: tick };
        let window = self.windows.entry(id).or_insert(fresh);
        if window.duration != duration || window.start < start {
            *window = fresh;
        } else if window.start > start {
            // A spend in a window that has ended here (another node's, read late).
            return;
        }
        window.used = window.used.saturating_add(cost);
        window.touched = tick;
    }

    /// Drops counters whose window has ended (they count nothing any more), then, if that
    /// freed less than an eighth, the least recently used eighth.
    fn make_room(&mut self, now: i64) {
        let before = self.windows.len();
        // A window ended when `now` is past its start by a duration or more: its stored
        // start is older than any current window's start for any limit of at most 30 days.
        self.windows.retain(|_, w| now.saturating_sub(w.start) < keyledger_core::ratelimit::MAX_DURATION);
        let target = self.cap - self.cap / 8;
        if self.windows.len() < before && self.windows.len() <= target {
            return;
        }
        let mut ticks: Vec<u64> = self.windows.values().map(|w| w.touched).collect();
        if ticks.is_empty() {
            return;
        }
        let excess = self.windows.len().saturating_sub(target).clamp(1, ticks.len());
        let threshold = *ticks.select_nth_unstable(excess - 1).1;
        self.windows.retain(|_, w| w.touched > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn limit(name: &str, max: u64, seconds: i64) -> RateLimit {
        RateLimit { name: name.into(), limit: max, duration: seconds * SECOND, auto_apply: true }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds * SECOND)
    }

    #[test]
    fn exactly_the_limit_then_refused_then_reset() {
        let mut c = RateCounters::default();
        let key = KeyId::from_bytes([1; 16]);
        let api = limit("api", 3, 60);
        for left in [2, 1, 0] {
            let ok = c.check_and_spend(key, &[(&api, 1)], at(120)).unwrap();
            assert_eq!(ok[0].remaining, left);
            assert_eq!(ok[0].reset, at(180));
        }
        let (name, statuses) = c.check_and_spend(key, &[(&api, 1)], at(179)).unwrap_err();
        assert_eq!((name.as_str(), statuses[0].remaining), ("api", 0));
        assert_eq!(c.check_and_spend(key, &[(&api, 1)], at(180)).unwrap()[0].remaining, 2);
    }

    #[test]
    fn cost_zero_checks_and_a_refusal_spends_nothing() {
        let mut c = RateCounters::default();
        let key = KeyId::from_bytes([2; 16]);
        let (small, big) = (limit("small", 2, 60), limit("big", 10, 60));
        assert_eq!(c.check_and_spend(key, &[(&big, 0)], at(0)).unwrap()[0].remaining, 10);
        // cost 5 on big passes, cost 3 on small refuses: neither is spent.
        assert!(c.check_and_spend(key, &[(&big, 5), (&small, 3)], at(1)).is_err());
        let ok = c.check_and_spend(key, &[(&big, 10), (&small, 2)], at(2)).unwrap();
        assert_eq!((ok[0].remaining, ok[1].remaining), (0, 0));
        assert!(c.check_and_spend(key, &[(&small, 0)], at(3)).is_err());
    }

    #[test]
    fn another_nodes_spends_count_in_their_own_window_only() {
        let mut c = RateCounters::default();
        let key = KeyId::from_bytes([3; 16]);
        let api = limit("api", 5, 60);
        let spend = |cost, seconds: i64| {
            vec![keyledger_core::LimitSpend { name: "api".into(), cost, duration: seconds * SECOND }]
        };
        c.count(key, &spend(3, 60), at(61));
        assert_eq!(c.check_and_spend(key, &[(&api, 1)], at(62)).unwrap()[0].remaining, 1);
        // A spend read late, of a window that ended here, changes nothing.
        c.count(key, &spend(1, 60), at(59));
        assert_eq!(c.check_and_spend(key, &[(&api, 0)], at(63)).unwrap()[0].remaining, 1);
        c.count(key, &spend(1, 60), at(64));
        assert!(c.check_and_spend(key, &[(&api, 1)], at(65)).is_err());
        // The next window starts afresh with the spend that opened it.
        c.count(key, &spend(2, 60), at(120));
        assert_eq!(c.check_and_spend(key, &[(&api, 1)], at(121)).unwrap()[0].remaining, 2);
        // A spend made under another length of the limit starts its own window: the
        // minute's count is not checked against a limit of that other length.
        c.count(key, &spend(1, 3600), at(122));
        assert_eq!(c.check_and_spend(key, &[(&api, 0)], at(123)).unwrap()[0].remaining, 5);
    }

    #[test]
    fn a_limit_whose_window_length_changed_counts_afresh() {
        let mut c = RateCounters::default();
        let key = KeyId::from_bytes([5; 16]);
        // A minute's window opened at 12:05, then the same name becomes a day's limit,
        // whose window began at midnight, before it: it counts from zero and keeps counting.
        let minute = limit("api", 100, 60);
        let day = limit("api", 2, 86_400);
        let noon = 12 * 3600 + 5 * 60;
        c.check_and_spend(key, &[(&minute, 1)], at(noon)).unwrap();
        assert_eq!(c.check_and_spend(key, &[(&day, 1)], at(noon + 1)).unwrap()[0].remaining, 1);
        assert_eq!(c.check_and_spend(key, &[(&day, 1)], at(noon + 2)).unwrap()[0].remaining, 0);
        assert!(c.check_and_spend(key, &[(&day, 1)], at(noon + 3)).is_err());
    }

    #[test]
    fn bounded_and_eviction_never_touches_recent_counters() {
        let mut c = RateCounters::with_cap(16);
        let api = limit("api", 1, 3600);
        let hot = KeyId::from_bytes([0xff; 16]);
        for i in 0..100u8 {
            c.check_and_spend(KeyId::from_bytes([i; 16]), &[(&api, 1)], at(1)).unwrap();
            // The hot key stays the most recently used: it is never evicted, so never
            // gets a second allowance.
            let _ = c.check_and_spend(hot, &[(&api, 1)], at(1));
            assert!(c.len() <= 16);
        }
        assert!(c.check_and_spend(hot, &[(&api, 1)], at(2)).is_err());
    }
}
