//! `GET /v1/reports/compliance` (docs/api.md, "Compliance reports"; docs/compliance.md): a
//! signed compliance report of a period, as JSON or as one self-contained HTML page.
//!
//! The handler parses and authorises; [`keyledger_ledger::report::produce`] anchors the
//! report to a fresh signed checkpoint and folds the log on the blocking pool. An admin key
//! limited to some workspaces gets a report over those workspaces unless it names one; a
//! workspace it may not see answers 404 as if it did not exist.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::{ApiError, ErrorCode};
use crate::extract::QueryPairs;
use crate::schema::{AdminErrors, ComplianceReport, ErrorBody, InvalidParameter};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyledger_core::{Timestamp, WorkspaceId};
use keyledger_ledger::report::{ReportError, ReportRequest, html, produce};
use keyledger_verify::report::{DEFAULT_UNUSED_DAYS, report_text};

/// An instant of the query: RFC 3339, or a date (`2026-01-01`, midnight UTC).
fn instant(query: &QueryPairs, name: &str) -> Result<Timestamp, ApiError> {
    let text = query.get(name).map(str::trim).filter(|t| !t.is_empty());
    let text = text.ok_or_else(|| ApiError::invalid(name, "is required (RFC 3339 or YYYY-MM-DD)"))?;
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    Timestamp::parse_rfc3339(&full)
        .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 time or YYYY-MM-DD"))
}

/// The two forms of a report.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Html,
}

/// `GET /v1/reports/compliance?workspace=&from=&to=&format=json|html&unused_days=`
#[utoipa::path(
    get,
    path = "/v1/reports/compliance",
    operation_id = "getComplianceReport",
    summary = "Get a signed compliance report",
    tag = "reports",
    description = concat!(
        "A compliance report of the period `[from, to)` (`ledger:audit:read`): the key inventory at ",
        "the end, lifecycle events with actors and request ids, admin-key activity and break-glass ",
        "recoveries, exceptions, and usage per key and per day (docs/compliance.md). It is computed ",
        "from the log up to a checkpoint signed for it, names that checkpoint, and is signed with the ",
        "log's key: `keyledger report verify` recomputes every figure from an export or the entry ",
        "bundles. `format=html` is one self-contained page embedding the signed JSON. Without ",
        "`workspace` the report covers the whole ledger, or the workspaces the admin key is limited to."
    ),
    params(
        ("workspace" = Option<String>, Query, description = "Only this workspace"),
        ("from" = String, Query, description = "Start of the period (inclusive): RFC 3339 or YYYY-MM-DD (UTC)"),
        ("to" = String, Query, description = "End of the period (exclusive): RFC 3339 or YYYY-MM-DD (UTC); at most 367 days after `from`"),
        ("format" = Option<String>, Query, description = "json (default) or html"),
        ("unused_days" = Option<u32>, Query, description = "A live key unused for more than this many days is an exception (1 to 3650, default 90)", minimum = 1, maximum = 3650)
    ),
    responses(
        (status = 200, description = "The signed report: JSON, or with `format=html` an HTML page", content((ComplianceReport = "application/json"), (String = "text/html"))),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "workspace not visible to the admin key (not_found)", body = ErrorBody),
        (status = 503, description = "no checkpoint can be signed (unavailable)", body = ErrorBody)
    )
)]
pub async fn compliance(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    query.only(&["workspace", "from", "to", "format", "unused_days"])?;
    let workspace: Option<WorkspaceId> = match query.get("workspace").map(str::trim).filter(|t| !t.is_empty())
    {
        None => None,
        Some(text) => Some(text.parse().map_err(|e| ApiError::invalid("workspace", e))?),
    };
    if let Some(ws) = &workspace {
        admin.workspace(ws)?;
    }
    admin.require(scope::AUDIT_READ)?;
    let from = instant(&query, "from")?;
    let to = instant(&query, "to")?;
    let format = match query.get("format").map(str::trim) {
        None | Some("" | "json") => Format::Json,
        Some("html") => Format::Html,
        Some(_) => return Err(ApiError::invalid("format", "must be `json` or `html`")),
    };
    let unused_days = match query.get("unused_days").map(str::trim).filter(|t| !t.is_empty()) {
        None => DEFAULT_UNUSED_DAYS,
        Some(text) => {
            text.parse().map_err(|_| ApiError::invalid("unused_days", "must be a whole number of days"))?
        }
    };
    let workspaces = match workspace {
        Some(ws) => Some(vec![ws]),
        None if admin.key.resources.is_empty() => None,
        None => Some(admin.key.resources.iter().filter_map(|r| r.parse().ok()).collect()),
    };
    let request = ReportRequest { workspaces, from, to, unused_days };
    let report = produce(&state.engine, request).await.map_err(|error| match error {
        ReportError::Parameters(message) => {
            let field = ["unused_days", "from"].into_iter().find(|f| message.contains(f)).unwrap_or("to");
            ApiError::invalid(field, message)
        }
        ReportError::Ledger(error) => error.into(),
        other => {
            tracing::error!(error = %other, "compliance report failed");
            ApiError::new(ErrorCode::Internal, "internal error")
        }
    })?;
    let (body, content_type, extension) = match format {
        Format::Json => (report_text(&report), "application/json", "json"),
        Format::Html => (html::render(&report), "text/html; charset=utf-8", "html"),
    };
    let stamp = |t: Timestamp| t.to_rfc3339().get(..10).unwrap_or_default().to_owned();
    let filename = format!("keyledger-compliance-{}-{}.{extension}", stamp(from), stamp(to));
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}
