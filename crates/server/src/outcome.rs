//! The outcome of one verification: malformed, unknown, allowed, denied or throttled.
//!
//! It is the one fact both the verification metrics ([`crate::metrics`]) and the failure
//! throttle ([`crate::throttle`]) read, so the two can never count a verification
//! differently. It lives apart from the verify handler so the metrics need not import it.

/// How a verification that got past parsing ended: the one fact the metrics count and
/// the failure throttle charges (docs/operations.md, Metrics; [`crate::throttle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The key is missing, or not of keyledger's form (bad checksum included): no lookup.
    Malformed,
    /// A well-formed key that matches no key of this ledger: nothing appended.
    Unknown,
    /// A known key, allowed (a `used` event).
    Allowed,
    /// A known key, denied (a `denied` event) for the reason of this code.
    Denied(&'static str),
    /// Refused before parsing: the source has no failure left (429).
    Throttled,
}

impl Outcome {
    /// Whether it takes one of the source's failure tokens: every 401 and 403 answer (a
    /// valid key out of credits or over a rate limit, 429 `usage_exceeded` or `rate_limited`,
    /// is no guess at a key).
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self, Self::Malformed | Self::Unknown)
            || matches!(self, Self::Denied(code) if !matches!(*code, "usage_exceeded" | "rate_limited"))
    }
}
