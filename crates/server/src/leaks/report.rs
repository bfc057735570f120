//! `POST /v1/leaks/report`: anyone may report strings they believe are leaked keys, like
//! GitHub's Credential Revocation API (docs/leaks.md).
//!
//! Unauthenticated by design: whoever found a key in a public place should be able to get it
//! killed without an account. That makes the endpoint a possible oracle ("which of these
//! strings are live keys?"), so it must not answer that question, in its body, its status or
//! its timing (docs/security.md, "The public leak report"):
//!
//! - the answer is `202 {"received": N}` with N the number of strings submitted, whatever
//!   they are; only the request's shape (400), its source's budget (429) and the queue's room
//!   (429) change it, and none of those depends on the strings;
//! - the lookups and the durable append happen after the answer, on a task of their own
//!   ([`MAX_PENDING`] at most), so a report of a live key takes no longer to answer than one
//!   of random strings;
//! - each source (an IPv6 /64 counts as one) may send [`REPORTS_PER_MINUTE`] reports a
//!   minute (the per-source buckets of [`crate::throttle`], bounded).
//!
//! Each string that is a key's secret, of a key still active, gets a `leak_reported` event
//! (reporter `public`) and its workspace's `on_leak` applied; revoked, expired or disabled
//! keys and unknown strings are ignored. Candidates are only hashed; they are zeroed when
//! dropped and never logged, stored or echoed.
//!
//! What "received" promises: the report is queued, not yet recorded. A crash before the task
//! appends it loses it; sending it again is harmless (a key reported twice from the same url
//! is recorded once).

use crate::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyledger_core::LeakReporter;
use keyledger_ledger::leaks::LeakReportIn;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use zeroize::Zeroize;

/// Most candidate strings per report.
pub const MAX_SECRETS: usize = 1000;
/// Longest candidate string looked up (longer ones cannot be a key and are skipped).
pub const MAX_SECRET_LEN: usize = 512;
/// Reports each source may send per minute.
pub const REPORTS_PER_MINUTE: u32 = 10;
/// Reports received but not yet recorded, at most; past it the endpoint answers 429.
pub const MAX_PENDING: usize = 8;
/// Largest body of the route (1,000 strings of a few hundred bytes).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A public report.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicReport {
    /// Strings believed to be keyledger keys (at most 1,000; only hashed, never kept).
    secrets: Vec<String>,
    /// Where they were found, recorded with each report (cut at 2,048 bytes).
    #[serde(default)]
    url: Option<String>,
}

impl Drop for PublicReport {
    fn drop(&mut self) {
        for secret in &mut self.secrets {
            secret.zeroize();
        }
    }
}

/// The answer to every accepted report, whatever it held.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportReceived {
    /// How many strings the report held.
    pub received: usize,
}

/// What the endpoint keeps between requests: the per-source budget and the queue's room.
pub struct PublicReports {
    budget: crate::throttle::FailureThrottle,
    pending: Arc<Semaphore>,
}

impl Default for PublicReports {
    fn default() -> Self {
        Self {
            budget: crate::throttle::FailureThrottle::new(REPORTS_PER_MINUTE)
                .unwrap_or_else(|| unreachable!("REPORTS_PER_MINUTE is not 0")),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/leaks/report",
    operation_id = "reportLeakedKeys",
    summary = "Report leaked keys (public)",
    tag = "leaks",
    security(()),
    description = concat!(
        "Anyone may report strings found in a public place (no authentication). Each string that ",
        "is the secret of an active key gets a `leak_reported` event and its workspace's `on_leak` ",
        "(revoke or notify). The answer is the same whatever was sent, so it reveals nothing about ",
        "which strings are keys; the reports are recorded after the answer. At most 1,000 strings; ",
        "10 reports per source and minute."
    ),
    request_body = PublicReport,
    responses(
        (status = 202, description = "Received (not a statement about the strings)", body = ReportReceived),
        (status = 400, description = "not `{secrets: [...], url?}`, or more than 1,000 strings (invalid_request)", body = crate::schema::ErrorBody),
        (status = 413, description = "body over 1 MiB (payload_too_large)", body = crate::schema::ErrorBody),
        (status = 429, description = "this source's budget is spent, or too many reports are pending (rate_limited, Retry-After)", body = crate::schema::ErrorBody)
    )
)]
pub async fn report(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let reports = &state.public_reports;
    let config = &state.config;
    let source =
        crate::forwarded::client_ip(&headers, peer.ip(), &config.trusted_proxies, config.trust_forwarded_for);
    if let Err(retry_after) = reports.budget.check(source) {
        return crate::throttle::too_many(retry_after, "too many leak reports from this address");
    }
    reports.budget.charge(source);
    let report: PublicReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(_) => {
            return ApiError::invalid("body", "must be {\"secrets\": [strings], \"url\"?: string}")
                .into_response();
        }
    };
    drop(body);
    if report.secrets.len() > MAX_SECRETS {
        return ApiError::invalid("secrets", "must hold at most 1000 strings").into_response();
    }
    let Ok(permit) = reports.pending.clone().try_acquire_owned() else {
        return crate::throttle::too_many(1, "too many leak reports are being recorded");
    };
    let received = report.secrets.len();
    let engine = state.engine.clone();
    tokio::spawn(async move {
        let _permit = permit;
        record(&engine, report).await;
    });
    (StatusCode::ACCEPTED, Json(ReportReceived { received })).into_response()
}

/// Looks the candidates up and records the active keys among them.
async fn record(engine: &keyledger_ledger::Engine, report: PublicReport) {
    // Keys issued on another node are looked up too; without the database, this node's
    // registry is all there is (its keys are still reported).
    if let Err(error) = engine.follow().await {
        tracing::warn!(%error, "a public leak report is looked up without following the database");
    }
    let mut found = Vec::new();
    for candidate in report.secrets.iter().filter(|s| s.len() <= MAX_SECRET_LEN) {
        if let Some(key) = engine.find_by_secret(candidate)
            && !found.iter().any(|r: &LeakReportIn| r.key_id == key.key_id)
        {
            // A reporter may paste the URL the secret was found at, secret and all.
            let url = report.url.as_deref().map(|url| crate::redact::words(url).into_owned());
            found.push(LeakReportIn { key_id: key.key_id, url, source: None });
        }
    }
    drop(report); // zeroes the candidates
    if found.is_empty() {
        return;
    }
    if let Err(error) = engine.report_leaks(LeakReporter::Public, found, true).await {
        // Nothing to answer any more: the reporter may send it again (recorded once).
        tracing::warn!(%error, "a public leak report could not be recorded");
    }
}
