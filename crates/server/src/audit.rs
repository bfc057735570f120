//! Audit routes (docs/api.md, "Audit"): a key's events, the leak report, request ids,
//! sources, the active set at an instant, hygiene, and leaked-secret lookup.
//!
//! Every route needs `ledger:audit:read`; anything outside the admin key's workspaces
//! answers 404 as if it did not exist. Reads first wait for the projections, so they see
//! the caller's last write, and answer from the audit indexes (never a scan of the log).

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::{QueryPairs, path_param};
use crate::schema::*;
use crate::secret_body::SecretJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyledger_core::json::actor_text;
use keyledger_core::time::parse_duration;
use keyledger_core::{KeyId, Timestamp, WorkspaceId};
use keyledger_ledger::audit::{self, KindFilter};
use keyledger_ledger::projection::ProjectionError;
use keyledger_ledger::{Engine, KeyRecord, KeyStatus};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

const PROJECTION_WAIT: Duration = Duration::from_secs(5);

fn ok<T>(value: T) -> Answer<T> {
    Ok((StatusCode::OK, Json(value)))
}

fn index_error(error: ProjectionError) -> ApiError {
    tracing::error!(%error, "audit index read failed");
    match error {
        ProjectionError::Reopening => ApiError::new(
            crate::error::ErrorCode::Unavailable,
            "the audit index is being reopened after a storage error; retry shortly",
        ),
        _ => ApiError::new(crate::error::ErrorCode::Internal, "internal error"),
    }
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t).ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 time"))
    })
    .transpose()
}

fn parse_workspace(query: &QueryPairs) -> Result<WorkspaceId, ApiError> {
    let text = query.get("workspace").ok_or_else(|| ApiError::invalid("workspace", "is required"))?;
    path_param("workspace", text)
}

/// Requires the audit scope and waits for the projections (a read barrier).
async fn begin(state: &AppState, admin: &Admin) -> Result<(), ApiError> {
    admin.require(scope::AUDIT_READ)?;
    if !state.engine.wait_for_projections(PROJECTION_WAIT).await {
        tracing::warn!("audit read: projections still catching up; answering from the latest snapshot");
    }
    Ok(())
}

/// A key the caller may see, or 404 exactly as for a key that does not exist.
fn visible_key(engine: &Engine, admin: &Admin, text: &str) -> Result<KeyRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("no key {}", crate::redact::echo(text)));
    let key_id: KeyId = text.parse().map_err(|_| not_found())?;
    engine.key(&key_id).filter(|k| admin.can_see(&k.workspace)).ok_or_else(not_found)
}

/// The leak report of `key` over `[since, until)`.
fn report(
    state: &AppState,
    key: &KeyRecord,
    since: Option<Timestamp>,
    until: Timestamp,
) -> Result<CompromiseReport, ApiError> {
    let data = state.engine.audit().compromise(key, since, Some(until)).map_err(index_error)?;
    Ok(CompromiseReport::new(crate::key_view::of(state, key, Timestamp::now()), &data, since, until))
}

/// `GET /v1/keys/{key_id}/events?kind=&from=&to=&limit=&cursor=`
#[utoipa::path(
    get,
    path = "/v1/keys/{key_id}/events",
    operation_id = "getKeyEvents",
    summary = "List a key's events",
    tag = "audit",
    description = "A key's events, oldest first, from the audit index (`ledger:audit:read`).",
    params(
        ("key_id" = String, Path, description = "Key id"),
        ("kind" = Option<String>, Query, description = "lifecycle, usage or all (default)"),
        ("from" = Option<String>, Query, description = "RFC 3339: events at or after"),
        ("to" = Option<String>, Query, description = "RFC 3339: events before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, default 100, at most 1000"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")
    ),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "no such key, request, or workspace visible to the admin key (not_found)", body = ErrorBody)
    )
)]
pub async fn key_events(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    query: QueryPairs,
) -> Answer<EventList> {
    query.only(&["kind", "from", "to", "limit", "cursor"])?;
    begin(&state, &admin).await?;
    let key = visible_key(&state.engine, &admin, &key_id)?;
    let filter = match query.get("kind").unwrap_or("all") {
        "all" => KindFilter::All,
        "lifecycle" => KindFilter::Lifecycle,
        "usage" => KindFilter::Usage,
        _ => return Err(ApiError::invalid("kind", "must be one of lifecycle, usage, all")),
    };
    let from = parse_time("from", query.get("from"))?;
    let to = parse_time("to", query.get("to"))?;
    let limit = match query.get("limit") {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", "must be an integer from 1 to 1000")),
        },
    };
    let cursor = query
        .get("cursor")
        .map(|c| {
            c.parse::<u64>().map_err(|_| ApiError::invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let (events, next) =
        state.engine.audit().key_events(&key.key_id, filter, from, to, cursor, limit).map_err(index_error)?;
    ok(EventList {
        events: events.iter().map(EventView::new).collect(),
        next_cursor: next.map(|n| n.to_string()),
    })
}

/// `GET /v1/audit/keys/{key_id}/compromise?since=&until=`
#[utoipa::path(
    get,
    path = "/v1/audit/keys/{key_id}/compromise",
    operation_id = "getCompromiseReport",
    summary = "Get a key's compromise report",
    tag = "audit",
    description = concat!(
        "The leak report: what the key did in [since, until), from which addresses and agents ",
        "(new ones flagged), and attempts after revocation or expiry (`ledger:audit:read`)."
    ),
    params(
        ("key_id" = String, Path, description = "Key id"),
        ("since" = Option<String>, Query, description = "RFC 3339: start of the window (when the leak may have begun)"),
        ("until" = Option<String>, Query, description = "RFC 3339: end of the window, default now")
    ),
    responses(
        (status = 200, description = "The report", body = CompromiseReport),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "no such key, request, or workspace visible to the admin key (not_found)", body = ErrorBody)
    )
)]
pub async fn compromise(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    query: QueryPairs,
) -> Answer<CompromiseReport> {
    query.only(&["since", "until"])?;
    begin(&state, &admin).await?;
    let key = visible_key(&state.engine, &admin, &key_id)?;
    let since = parse_time("since", query.get("since"))?;
    let until = parse_time("until", query.get("until"))?.unwrap_or_else(Timestamp::now);
    if since.is_some_and(|s| s > until) {
        return Err(ApiError::invalid("until", "must not be before `since`"));
    }
    ok(report(&state, &key, since, until)?)
}

/// `GET /v1/audit/requests/{request_id}`
#[utoipa::path(
    get,
    path = "/v1/audit/requests/{request_id}",
    operation_id = "getRequestTrace",
    summary = "Trace a request id",
    tag = "audit",
    description = concat!(
        "The event(s) and key behind a request id: keyledger's `req_…` or the gateway's ",
        "`context.request_id` (`ledger:audit:read`)."
    ),
    params(
        ("request_id" = String, Path, description = "Request id")
    ),
    responses(
        (status = 200, description = "The events and keys", body = RequestTrace),
        AdminErrors,
        (status = 404, description = "no such key, request, or workspace visible to the admin key (not_found)", body = ErrorBody)
    )
)]
pub async fn request(
    State(state): State<AppState>,
    admin: Admin,
    Path(request_id): Path<String>,
) -> Answer<RequestTrace> {
    begin(&state, &admin).await?;
    let engine = &state.engine;
    let events: Vec<_> = engine
        .audit()
        .request_events(&request_id)
        .map_err(index_error)?
        .into_iter()
        .filter(|e| admin.can_see(e.payload.workspace()))
        .collect();
    if events.is_empty() {
        return Err(ApiError::not_found(format!(
            "no events for request {}",
            crate::redact::echo(&request_id)
        )));
    }
    let now = Timestamp::now();
    let key_ids: Vec<KeyId> = {
        let mut ids: Vec<KeyId> = events.iter().filter_map(|e| e.payload.key_id()).collect();
        ids.dedup();
        ids
    };
    let keys: Vec<KeyView> = key_ids
        .iter()
        .filter_map(|id| engine.key(id))
        .map(|k| crate::key_view::of(&state, &k, now))
        .collect();
    ok(RequestTrace {
        request_id,
        events: events.iter().map(EventView::new).collect(),
        key: keys.first().cloned(),
        keys,
    })
}

/// Parses `ip` or `ip/prefix` into an inclusive 16-byte key range.
fn parse_source(text: &str) -> Result<([u8; 16], [u8; 16]), ApiError> {
    let bad = || {
        let text = crate::redact::echo(text);
        ApiError::invalid("source", format!("`{text}` is not an IP address or CIDR network"))
    };
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            (ip, prefix.parse::<u8>().map_err(|_| bad())?)
        }
        None => {
            let ip: IpAddr = text.parse().map_err(|_| bad())?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    audit::cidr_range(ip, prefix).ok_or_else(bad)
}

async fn sources_for(
    state: &AppState,
    admin: &Admin,
    source: &str,
    query: &QueryPairs,
) -> Answer<SourceKeys> {
    begin(state, admin).await?;
    let (low, high) = parse_source(source)?;
    let from = parse_time("from", query.get("from"))?;
    let to = parse_time("to", query.get("to"))?;
    let stats = state.engine.audit().sources(low, high, from, to).map_err(index_error)?;
    let keys = {
        let registry = state.engine.registry();
        stats
            .iter()
            .filter_map(|s| {
                let key = registry.view(&s.key_id)?;
                admin.can_see(key.workspace()).then(|| SourceKey {
                    key_id: s.key_id.to_string(),
                    workspace: key.workspace().as_str().to_owned(),
                    first_seen: s.first_seen.to_rfc3339(),
                    last_seen: s.last_seen.to_rfc3339(),
                    count: s.count,
                    allowed: s.allowed,
                    denied: s.denied,
                })
            })
            .collect()
    };
    ok(SourceKeys { source: source.to_owned(), keys })
}

/// `GET /v1/audit/sources/{ip_or_cidr}?from=&to=` (a CIDR's `/` sent as `%2F`).
#[utoipa::path(
    get,
    path = "/v1/audit/sources/{source}",
    operation_id = "listKeysBySource",
    summary = "List the keys used from an address or network",
    tag = "audit",
    description = concat!(
        "Keys used from an address or CIDR network (send a CIDR's `/` as `%2F`) ",
        "(`ledger:audit:read`)."
    ),
    params(
        ("source" = String, Path, description = "IP address or CIDR, e.g. 203.0.113.0%2F24"),
        ("from" = Option<String>, Query, description = "RFC 3339"),
        ("to" = Option<String>, Query, description = "RFC 3339")
    ),
    responses(
        (status = 200, description = "The keys seen from it", body = SourceKeys),
        AdminErrors,
        InvalidParameter
    )
)]
pub async fn sources(
    State(state): State<AppState>,
    admin: Admin,
    Path(source): Path<String>,
    query: QueryPairs,
) -> Answer<SourceKeys> {
    query.only(&["from", "to"])?;
    sources_for(&state, &admin, &source, &query).await
}

/// `GET /v1/audit/sources?cidr=&from=&to=` (the same, the network in the query).
#[utoipa::path(
    get,
    path = "/v1/audit/sources",
    operation_id = "listKeysBySourceQuery",
    summary = "List the keys used from an address or network (query form)",
    tag = "audit",
    description = concat!(
        "The same as `/v1/audit/sources/{source}`, with the address or network in `cidr` ",
        "(`ledger:audit:read`)."
    ),
    params(
        ("cidr" = String, Query, description = "IP address or CIDR network"),
        ("from" = Option<String>, Query, description = "RFC 3339"),
        ("to" = Option<String>, Query, description = "RFC 3339")
    ),
    responses(
        (status = 200, description = "The keys seen from it", body = SourceKeys),
        AdminErrors,
        InvalidParameter
    )
)]
pub async fn sources_query(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Answer<SourceKeys> {
    query.only(&["cidr", "ip", "from", "to"])?;
    let source = query
        .get("cidr")
        .or_else(|| query.get("ip"))
        .ok_or_else(|| ApiError::invalid("cidr", "is required"))?
        .to_owned();
    sources_for(&state, &admin, &source, &query).await
}

/// `GET /v1/audit/keys?workspace=W&active_at=T`: the keys valid at T, as they stood then.
#[utoipa::path(
    get,
    path = "/v1/audit/keys",
    operation_id = "listKeysActiveAt",
    summary = "List the keys valid at an instant",
    tag = "audit",
    description = "The keys that were valid at instant T, reconstructed from the log (`ledger:audit:read`).",
    params(
        ("workspace" = String, Query, description = "Workspace"),
        ("active_at" = Option<String>, Query, description = "RFC 3339 instant, default now")
    ),
    responses(
        (status = 200, description = "The keys as they stood", body = ActiveKeys),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "no such key, request, or workspace visible to the admin key (not_found)", body = ErrorBody)
    )
)]
pub async fn active_keys(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Answer<ActiveKeys> {
    query.only(&["workspace", "active_at"])?;
    let workspace = parse_workspace(&query)?;
    admin.workspace(&workspace)?;
    begin(&state, &admin).await?;
    let at = parse_time("active_at", query.get("active_at"))?.unwrap_or_else(Timestamp::now);
    let keys = state
        .engine
        .audit()
        .active_at(&workspace, at)
        .map_err(index_error)?
        .into_iter()
        .map(|(t, s)| KeyAtInstant {
            key_id: t.key_id.to_string(),
            workspace: t.workspace.as_str().to_owned(),
            status: s.status(at).as_str().to_owned(),
            name: s.name,
            hint: t.hint,
            scopes: s.scopes,
            resources: s.resources,
            environment: t.environment.as_str().to_owned(),
            owner: s.owner,
            created_at: t.created_at.to_rfc3339(),
            created_by: actor_text(&t.created_by),
            expires_at: s.expires_at.map(|t| t.to_rfc3339()),
            revoked_at: s.revoked_at.map(|t| t.to_rfc3339()),
            rotated_from: t.rotated_from.map(|k| k.to_string()),
            rotated_to: s.rotated_to.map(|k| k.to_string()),
        })
        .collect();
    ok(ActiveKeys { workspace: workspace.as_str().to_owned(), active_at: at.to_rfc3339(), keys })
}

fn parse_age(query: &QueryPairs, field: &str) -> Result<i64, ApiError> {
    match query.get(field) {
        None => Ok(parse_duration("90d").unwrap_or_default()),
        Some(text) => parse_duration(text)
            .ok_or_else(|| ApiError::invalid(field, "must be a duration such as `90d`, `12h` or `30m`")),
    }
}

/// `GET /v1/audit/hygiene?workspace=W&unused_for=90d&older_than=90d`, over live keys.
#[utoipa::path(
    get,
    path = "/v1/audit/hygiene",
    operation_id = "getKeyHygiene",
    summary = "Get a workspace's key hygiene report",
    tag = "audit",
    description = concat!(
        "Keys never used, unused for a while, without expiry, old, or expiring within 7 days ",
        "(`ledger:audit:read`)."
    ),
    params(
        ("workspace" = String, Query, description = "Workspace"),
        ("unused_for" = Option<String>, Query, description = "Duration, default 90d"),
        ("older_than" = Option<String>, Query, description = "Duration, default 90d")
    ),
    responses(
        (status = 200, description = "The hygiene report", body = Hygiene),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "no such key, request, or workspace visible to the admin key (not_found)", body = ErrorBody)
    )
)]
pub async fn hygiene(State(state): State<AppState>, admin: Admin, query: QueryPairs) -> Answer<Hygiene> {
    query.only(&["workspace", "unused_for", "older_than"])?;
    let workspace = parse_workspace(&query)?;
    admin.workspace(&workspace)?;
    admin.require(scope::AUDIT_READ)?;
    let unused_for = parse_age(&query, "unused_for")?;
    let older_than = parse_age(&query, "older_than")?;
    let now = Timestamp::now();
    let soon = now.plus_micros(parse_duration("7d").unwrap_or_default());
    let (mut never_used, mut unused, mut no_expiry, mut old, mut expiring) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut no_allowed_sources = Vec::new();
    // The registry's read guard is let go before the views read it again.
    let live: Vec<KeyRecord> = state
        .engine
        .registry()
        .workspace_keys(&workspace)
        .filter(|key| matches!(key.status(now), KeyStatus::Active | KeyStatus::Disabled))
        .map(|key| key.record())
        .collect();
    for key in live {
        let view = crate::key_view::of(&state, &key, now);
        if key.allowed_sources.is_none() {
            no_allowed_sources.push(view.clone());
        }
        match key.last_used.at {
            None => never_used.push(view.clone()),
            Some(at) if at.micros() < now.micros().saturating_sub(unused_for) => unused.push(view.clone()),
            Some(_) => {}
        }
        match key.expires_at {
            None => no_expiry.push(view.clone()),
            Some(at) if at <= soon => expiring.push(view.clone()),
            Some(_) => {}
        }
        if key.created_at.micros() < now.micros().saturating_sub(older_than) {
            old.push(view);
        }
    }
    ok(Hygiene {
        workspace: workspace.as_str().to_owned(),
        never_used,
        unused,
        no_expiry,
        older_than: old,
        expiring_within_7d: expiring,
        no_allowed_sources,
    })
}

/// Zeroed on drop, like the request bytes it was parsed from ([`SecretJson`]).
#[derive(Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    secret: String,
}

/// `POST /v1/audit/lookup` `{"secret"}`: which key a leaked secret is (or was), with its
/// whole-life report. The candidate is only hashed: never stored, logged or echoed. Exactly
/// one `lookup` event records who asked and what was found.
#[utoipa::path(
    post,
    path = "/v1/audit/lookup",
    operation_id = "lookupSecret",
    summary = "Look up a leaked secret",
    tag = "audit",
    description = concat!(
        "Is a leaked candidate secret one of ours? Hashed with the pepper, never stored or ",
        "logged; a `lookup` event records that a lookup happened (`ledger:audit:read`)."
    ),
    request_body = crate::audit::LookupBody,
    responses(
        (status = 200, description = "The key and its compromise report", body = LookupAnswer),
        AdminErrors,
        (status = 404, description = "not a key, never was, or not visible to the admin key (not_found)", body = ErrorBody),
        (status = 503, description = "the lookup record cannot be appended (unavailable)", body = ErrorBody)
    )
)]
pub async fn lookup(
    State(state): State<AppState>,
    admin: Admin,
    SecretJson(body): SecretJson<LookupBody>,
) -> Answer<LookupAnswer> {
    admin.require(scope::AUDIT_READ)?;
    let engine = &state.engine;
    let found = engine.find_by_secret(&body.secret);
    drop(body); // zeroes the candidate
    engine.record_lookup(admin.caller.clone(), found.as_ref()).await?;
    let Some(key) = found.filter(|k| admin.can_see(&k.workspace)) else {
        return Err(ApiError::not_found("no key has this secret"));
    };
    begin(&state, &admin).await?;
    let key = engine.key(&key.key_id).unwrap_or(key);
    let now = Timestamp::now();
    ok(LookupAnswer {
        key_id: key.key_id.to_string(),
        workspace: key.workspace.as_str().to_owned(),
        status: key.status(now).as_str().to_owned(),
        report: report(&state, &key, None, now)?,
    })
}
