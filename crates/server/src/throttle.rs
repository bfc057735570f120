//! Abuse limits of the HTTP layer (docs/security.md, "Slow clients and oversized requests"): per-source throttling
//! of failed verifications and of failed admin authentications, and a cap on the size of a
//! request's headers.
//!
//! # Throttling failed verifications
//!
//! Off by default (`--throttle-failed-verifications PER_MINUTE`, 0 = off). When on, every
//! source address has a token bucket of `PER_MINUTE` failures that refills continuously at
//! `PER_MINUTE` per minute. A verification that answers 401 (missing, malformed, unknown,
//! revoked, disabled or expired key) or 403 (scope, resource, environment or workspace not
//! allowed) takes a token. A source with no token left gets **429 `rate_limited`** with
//! `Retry-After` (whole seconds until its next token) for *every* verification, valid key
//! or not, until the bucket refills: the answer is decided before the body is read or any
//! lookup is done, so a throttled request appends nothing to the log.
//!
//! The source is the address verify records as the client: the TCP peer, or the forwarded
//! address when `--trust-forwarded-for` is set and the peer is a trusted proxy (see
//! [`crate::forwarded`]); never a JSON body's `context.ip`, which the caller chooses. IPv6
//! sources are grouped by /64 (one host usually holds a whole /64), IPv4-mapped IPv6 counts
//! as IPv4.
//!
//! It is off by default because keyledger usually sits behind trusted gateways that funnel
//! many clients through one address: throttling that address would lock every client out
//! because of one client's mistakes. Turn it on when clients reach keyledger directly, or
//! when the gateway's forwarded address is trusted.
//!
//! # Throttling failed admin authentications
//!
//! The same token buckets, in a table of their own, guard keyledger's own API
//! (`--throttle-failed-admin-auth PER_MINUTE`, default [`DEFAULT_ADMIN_AUTH_FAILURES`], 0 =
//! off). A request that presents a key which does not authenticate as an admin key (unknown,
//! malformed, revoked, disabled, expired, or not a `_ledger` key) takes a token; a request
//! that presents no key at all is no guess and takes none. A source with no token left gets
//! 429 `rate_limited` with `Retry-After` in place of each further failed authentication; a
//! key that authenticates is always accepted, whatever its source's budget (see
//! [`crate::auth`]). So a stranger behind the same proxy or NAT address can never lock the
//! admins of that address out, and forging `X-Forwarded-For` (with `--trust-forwarded-for`
//! and no `--trusted-proxy`) only buys fresh budgets for guesses that cannot succeed
//! against 256-bit secrets anyway. It is on by default: it costs a correct key nothing,
//! and it slows enumeration and keeps failed-authentication noise out of the logs.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] buckets are kept (per table). A full table first forgets
//! the buckets that have refilled (they are equivalent to no bucket), then arbitrary ones
//! (which lets an attacker with very many addresses reset some buckets, never grow memory).
//!
//! # Header size
//!
//! hyper refuses requests whose head exceeds its read buffer (~400 KB) or that have more
//! than 100 headers, with a bare 431. Below that, [`header_size_refusal`] (checked by the
//! request-id layer, [`crate::request_id::middleware`]) refuses a request whose
//! URI and headers together exceed [`crate::ServerConfig::max_header_bytes`] (default
//! [`DEFAULT_MAX_HEADER_BYTES`]) with 431 in the error shape of docs/api.md, before any handler.

use crate::error::{ApiError, ErrorCode};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

/// Most source buckets kept at once (~64 bytes each).
pub const MAX_SOURCES: usize = 65_536;

/// Failed admin authentications allowed per source and minute unless configured.
pub const DEFAULT_ADMIN_AUTH_FAILURES: u32 = 10;

/// Default cap on a request's URI plus headers, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-source token buckets of failed verifications.
#[derive(Debug)]
pub struct FailureThrottle {
    per_minute: u32,
    capacity: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureThrottle {
    /// A throttle allowing `per_minute` failures per source and minute; `None` for 0 (off).
    pub fn new(per_minute: u32) -> Option<Self> {
        Self::with_capacity(per_minute, MAX_SOURCES)
    }

    /// As [`FailureThrottle::new`], keeping at most `capacity` sources.
    pub fn with_capacity(per_minute: u32, capacity: usize) -> Option<Self> {
        (per_minute > 0).then(|| Self { per_minute, capacity: capacity.max(1), buckets: Mutex::default() })
    }

    /// Failures allowed per source and minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Sources currently remembered.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    /// `Err(seconds)` if `source` has no failure left: retry after that many seconds.
    pub fn check(&self, source: IpAddr) -> Result<(), u64> {
        self.check_at(source, Instant::now())
    }

    /// Counts one failed verification from `source`.
    pub fn charge(&self, source: IpAddr) {
        self.charge_at(source, Instant::now());
    }

    /// [`FailureThrottle::check`] at a given instant (for tests).
    pub fn check_at(&self, source: IpAddr, now: Instant) -> Result<(), u64> {
        let mut buckets = self.lock();
        let Some(bucket) = buckets.get_mut(&group(source)) else { return Ok(()) };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let seconds = (1.0 - bucket.tokens) / self.rate();
        Err((seconds.ceil() as u64).max(1))
    }

    /// [`FailureThrottle::charge`] at a given instant (for tests).
    pub fn charge_at(&self, source: IpAddr, now: Instant) {
        let full = f64::from(self.per_minute);
        let mut buckets = self.lock();
        let key = group(source);
        if !buckets.contains_key(&key) && buckets.len() >= self.capacity {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: full, at: now });
        self.refill(bucket, now);
        // Concurrent failures may all have passed `check`: never go below empty, so the
        // wait stays at most one token's refill time.
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Tokens per second.
    fn rate(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate()).min(f64::from(self.per_minute));
        bucket.at = bucket.at.max(now);
    }

    /// Forgets refilled buckets; if that is not enough, arbitrary ones down to 7/8 full.
    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let full = f64::from(self.per_minute);
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < full
        });
        let target = self.capacity - self.capacity / 8 - 1;
        if buckets.len() > target {
            let excess = buckets.len() - target;
            let victims: Vec<IpAddr> = buckets.keys().take(excess).copied().collect();
            for victim in victims {
                buckets.remove(&victim);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The bucket a source falls in: IPv4 as is (also when IPv4-mapped), IPv6 by /64.
fn group(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The answer to a throttled verification: 429 `rate_limited`, `valid: false`, `Retry-After`.
pub fn throttled(retry_after: u64) -> Response {
    let mut response = ApiError::new(
        ErrorCode::RateLimited,
        format!("too many failed verifications from this address; retry after {retry_after} s"),
    )
    .with_extra(json!({"valid": false}))
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The answer to an admin request from a source with too many failed authentications:
/// 429 `rate_limited` with `Retry-After`.
pub fn admin_throttled(retry_after: u64) -> Response {
    too_many(retry_after, "too many failed admin authentications from this address")
}

/// 429 `rate_limited` saying `why`, with `Retry-After: retry_after`.
pub fn too_many(retry_after: u64, why: &str) -> Response {
    let mut response =
        ApiError::new(ErrorCode::RateLimited, format!("{why}; retry after {retry_after} s")).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The 431 answer when the request's URI (as displayed) and headers (name, value and 4 bytes
/// of separators each) exceed `limit` bytes; `None` when they fit.
pub fn header_size_refusal(request: &Request, limit: usize) -> Option<Response> {
    let size = displayed_len(request.uri())
        + request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    if size > limit {
        return Some(
            ApiError::new(ErrorCode::InvalidRequest, format!("the request headers exceed {limit} bytes"))
                .with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                .into_response(),
        );
    }
    None
}

/// `value.to_string().len()` without building the string.
fn displayed_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut count, format_args!("{value}"));
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn measures_a_uri_as_displayed() {
        for text in ["/v1/verify?scope=read", "/", "http://example.com:8080/a/b?c=d", "/x%20y"] {
            let uri: axum::http::Uri = text.parse().unwrap();
            assert_eq!(displayed_len(&uri), uri.to_string().len(), "{text}");
        }
    }

    #[test]
    fn off_at_zero() {
        assert!(FailureThrottle::new(0).is_none());
        assert_eq!(FailureThrottle::new(5).unwrap().per_minute(), 5);
    }

    #[test]
    fn allows_n_failures_then_refills_one_per_period() {
        let throttle = FailureThrottle::new(6).unwrap(); // one token per 10 s
        let t0 = Instant::now();
        let a = ip("198.51.100.1");
        for _ in 0..6 {
            assert_eq!(throttle.check_at(a, t0), Ok(()));
            throttle.charge_at(a, t0);
        }
        assert_eq!(throttle.check_at(a, t0), Err(10));
        assert_eq!(throttle.check_at(a, t0 + Duration::from_secs(4)), Err(6));
        assert_eq!(throttle.check_at(ip("198.51.100.2"), t0), Ok(()), "another source is unaffected");
        assert_eq!(throttle.check_at(a, t0 + Duration::from_secs(10)), Ok(()));
        throttle.charge_at(a, t0 + Duration::from_secs(10));
        assert_eq!(throttle.check_at(a, t0 + Duration::from_secs(10)), Err(10));
        // Over-charging (concurrent failures) never pushes the wait past one token.
        for _ in 0..100 {
            throttle.charge_at(a, t0 + Duration::from_secs(10));
        }
        assert_eq!(throttle.check_at(a, t0 + Duration::from_secs(10)), Err(10));
        assert_eq!(throttle.check_at(a, t0 + Duration::from_secs(80)), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let throttle = FailureThrottle::new(1).unwrap();
        let t0 = Instant::now();
        throttle.charge_at(ip("2001:db8:1:2::1"), t0);
        assert!(throttle.check_at(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(throttle.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
        throttle.charge_at(ip("::ffff:192.0.2.1"), t0);
        assert!(throttle.check_at(ip("192.0.2.1"), t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = FailureThrottle::with_capacity(1, 64).unwrap();
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            throttle.charge_at(IpAddr::V4(i.into()), t0);
            assert!(throttle.tracked() <= 64);
        }
        // Refilled buckets are forgotten first.
        let later = t0 + Duration::from_secs(120);
        throttle.charge_at(ip("203.0.113.9"), later);
        throttle.charge_at(ip("203.0.113.10"), later);
        assert!(throttle.tracked() <= 3, "{}", throttle.tracked());
    }
}
