//! Key lifecycle routes: create, list, show, update, rotate, revoke, revoke-all,
//! disable/enable, and workspace policies (docs/api.md, "Keys").

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJson, QueryPairs, double_option, path_param};
use crate::schema::*;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use keyledger_core::time::parse_duration;
use keyledger_core::{Environment, KeyId, KeyPrefix, Policy, Timestamp, WorkspaceId, validate};
use keyledger_ledger::{
    Expiry, IdempotencyTag, KeyChanges, KeyControls, KeyRecord, KeySpec, KeyStatus, LEDGER_SCOPES,
    PolicyControls,
};
use serde::Deserialize;
use serde_json::{Value, json};

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

fn ok<T>(value: T) -> Answer<T> {
    Ok((StatusCode::OK, Json(value)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    expires_at: Option<String>,
    expires_in: Option<String>,
    environment: Option<String>,
    owner: Option<String>,
    metadata: Option<Value>,
    /// IP addresses and CIDR networks the key may be verified from (at most 64); absent or
    /// empty: the workspace default, if any.
    pub(crate) allowed_sources: Option<Vec<String>>,
    /// Usage credits (docs/credits.md).
    credits: Option<crate::credits::CreditsBody>,
    /// Named rate limits (at most 16; docs/api.md, "Rate limits"); absent: the workspace
    /// default, if any.
    ratelimits: Option<Vec<crate::schema::RateLimitBody>>,
}

fn parse_workspace(text: &str) -> Result<WorkspaceId, ApiError> {
    path_param("workspace", text)
}

fn parse_key_id(text: &str) -> Result<KeyId, ApiError> {
    // A malformed id can name no key: answer as for any unknown key (never repeating a
    // secret pasted in its place, see docs/security.md).
    text.parse().map_err(|_| ApiError::not_found(format!("no key {}", crate::redact::echo(text))))
}

fn parse_time(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| ApiError::invalid(field, "must be an RFC 3339 time"))
}

fn parse_expiry(expires_at: Option<&str>, expires_in: Option<&str>) -> Result<Expiry, ApiError> {
    match (expires_at, expires_in) {
        (Some(_), Some(_)) => Err(ApiError::invalid("expires_in", "cannot be combined with `expires_at`")),
        (Some(at), None) => Ok(Expiry::At(parse_time("expires_at", at)?)),
        (None, Some(duration)) => match parse_duration(duration) {
            Some(micros) if micros > 0 => Ok(Expiry::In(micros)),
            _ => Err(ApiError::invalid(
                "expires_in",
                "must be a positive duration such as `90d`, `12h`, `30m` or `2s`",
            )),
        },
        (None, None) => Ok(Expiry::Never),
    }
}

/// Validates the fields of a new key (docs/api.md, "Keys: the secret and its fields"), naming the
/// first bad one.
pub(crate) fn key_spec(workspace: &WorkspaceId, body: CreateKey) -> Result<KeySpec, ApiError> {
    validate::name(&body.name)?;
    validate::scopes(&body.scopes)?;
    validate::resources(&body.resources)?;
    if let Some(owner) = &body.owner {
        validate::owner(owner)?;
    }
    let metadata = validate::metadata(body.metadata.as_ref().unwrap_or(&json!({})))?;
    let environment = match body.environment.as_deref() {
        None => Environment::Live,
        Some(text) => {
            text.parse().map_err(|_| ApiError::invalid("environment", "must be `live` or `test`"))?
        }
    };
    if workspace.is_ledger() {
        if let Some(scope) = body.scopes.iter().find(|s| !LEDGER_SCOPES.contains(&s.as_str())) {
            let what = keyledger_core::validate::shown_name(scope);
            return Err(ApiError::invalid("scopes", format!("{what} is not a scope of keyledger's API")));
        }
        if body.resources.iter().any(|r| r.parse::<WorkspaceId>().is_err()) {
            return Err(ApiError::invalid("resources", "holds a value that is not a workspace id"));
        }
    }
    Ok(KeySpec {
        name: body.name,
        scopes: validate::normalize(body.scopes),
        resources: validate::normalize(body.resources),
        environment,
        owner: body.owner,
        metadata,
        expiry: parse_expiry(body.expires_at.as_deref(), body.expires_in.as_deref())?,
        credits: match body.credits {
            Some(_) if workspace.is_ledger() => {
                return Err(ApiError::invalid("credits", "admin keys are never metered"));
            }
            credits => credits.map(crate::credits::CreditsBody::spec).transpose()?,
        },
    })
}

/// Writes to `_ledger` (admin keys) also need `ledger:admin`.
fn allow_write(admin: &Admin, workspace: &WorkspaceId) -> Result<(), ApiError> {
    admin.allow(scope::KEYS_WRITE, workspace)?;
    if workspace.is_ledger() {
        admin.require(scope::ADMIN)?;
    }
    Ok(())
}

/// Finds a key the caller may see, or answers 404 as if it did not exist.
pub(crate) fn visible_key(state: &AppState, admin: &Admin, key_id: &str) -> Result<KeyRecord, ApiError> {
    let key_id = parse_key_id(key_id)?;
    state
        .engine
        .key(&key_id)
        .filter(|key| admin.can_see(&key.workspace))
        .ok_or_else(|| ApiError::not_found(format!("no key {key_id}")))
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/keys",
    operation_id = "createKey",
    summary = "Issue a key",
    tag = "keys",
    description = concat!(
        "Issue a key (`ledger:keys:write`; `_ledger` keys also need `ledger:admin`). The secret ",
        "is in this response only."
    ),
    request_body = crate::keys::CreateKey,
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body within 24 h replays the original response")
    ),
    responses(
        (status = 201, description = "The key and its secret", body = IssuedKey),
        AdminErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = "a policy or state rule refuses it (conflict)", body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    admin: Admin,
    tag: Option<Extension<IdempotencyTag>>,
    Path(workspace): Path<String>,
    JsonBody(mut body): JsonBody<CreateKey>,
) -> Answer<IssuedKey> {
    let workspace = parse_workspace(&workspace)?;
    allow_write(&admin, &workspace)?;
    let sources = body.allowed_sources.take();
    let limits =
        body.ratelimits.take().map(|l| crate::key_ratelimits::parse_list("ratelimits", l)).transpose()?;
    let spec = key_spec(&workspace, body)?;
    let sources = sources.map(|list| crate::sources::parse_list("allowed_sources", &list)).transpose()?;
    let tag = tag.map(|Extension(t)| t);
    let controls = KeyControls { sources, ratelimits: limits };
    let (key, secret) =
        state.engine.create_with_controls(admin.caller, workspace, spec, tag, controls).await?;
    let mut issued = IssuedKey::new(&key, &secret, Timestamp::now());
    issued.key = crate::key_view::complete(&state, issued.key, &key.key_id);
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/keys",
    operation_id = "listKeys",
    summary = "List a workspace's keys",
    tag = "keys",
    description = "List a workspace's keys (`ledger:keys:read`).",
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`"),
        ("status" = Option<String>, Query, description = "active, revoked, expired, disabled or all (default)")
    ),
    responses(
        (status = 200, description = "The keys, oldest first", body = KeyList),
        AdminErrors,
        KeyNotFound,
        InvalidParameter
    )
)]
pub async fn list(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    query: QueryPairs,
) -> Answer<KeyList> {
    query.only(&["status"])?;
    let workspace = parse_workspace(&workspace)?;
    admin.allow(scope::KEYS_READ, &workspace)?;
    let wanted = match query.get("status").unwrap_or("all") {
        "all" => None,
        "active" => Some(KeyStatus::Active),
        "revoked" => Some(KeyStatus::Revoked),
        "expired" => Some(KeyStatus::Expired),
        "disabled" => Some(KeyStatus::Disabled),
        _ => {
            return Err(ApiError::invalid(
                "status",
                "must be one of active, revoked, expired, disabled, all",
            ));
        }
    };
    let now = Timestamp::now();
    let keys = state
        .engine
        .keys(&workspace, |status| wanted.is_none_or(|w| w == status))
        .iter()
        .map(|k| crate::key_view::of(&state, k, now))
        .collect();
    ok(KeyList { keys })
}

#[utoipa::path(
    get,
    path = "/v1/keys/{key_id}",
    operation_id = "getKey",
    summary = "Get a key",
    tag = "keys",
    description = "Show a key (`ledger:keys:read`).",
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters")
    ),
    responses(
        (status = 200, description = "The key", body = KeyView),
        AdminErrors,
        KeyNotFound
    )
)]
pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
) -> Answer<KeyView> {
    let key = visible_key(&state, &admin, &key_id)?;
    admin.require(scope::KEYS_READ)?;
    ok(crate::key_view::of(&state, &key, Timestamp::now()))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    owner: Option<Option<String>>,
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "double_option")]
    expires_at: Option<Option<String>>,
    expires_in: Option<String>,
    scopes: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    /// A narrower source allow-list (it can only be narrowed, never widened or removed).
    allowed_sources: Option<Vec<String>>,
    /// The key's named rate limits, replacing its own (`[]` removes them; the workspace
    /// default then applies). Recorded as a `ratelimits_set` event.
    ratelimits: Option<Vec<crate::schema::RateLimitBody>>,
}

#[utoipa::path(
    patch,
    path = "/v1/keys/{key_id}",
    operation_id = "updateKey",
    summary = "Update a key",
    tag = "keys",
    description = concat!(
        "Change name, owner, metadata or expiry; narrow scopes and resources ",
        "(`ledger:keys:write`). Appends an `updated` event (and `sources_set` or `ratelimits_set` ",
        "for new lists) in one batch; a refused part changes nothing."
    ),
    request_body = crate::keys::UpdateKey,
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters")
    ),
    responses(
        (status = 200, description = "The key", body = KeyView),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = concat!(
            "the key is revoked, a policy refuses the change, or it would revoke, disable, narrow or ",
            "give an expiry to the last active full admin key without expiry (conflict)"
        ), body = ErrorBody)
    )
)]
pub async fn update(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    JsonBody(body): JsonBody<UpdateKey>,
) -> Answer<KeyView> {
    let key = visible_key(&state, &admin, &key_id)?;
    allow_write(&admin, &key.workspace)?;
    if let Some(name) = &body.name {
        validate::name(name)?;
    }
    if let Some(Some(owner)) = &body.owner {
        validate::owner(owner)?;
    }
    let metadata = body.metadata.as_ref().map(validate::metadata).transpose()?;
    if let Some(scopes) = &body.scopes {
        validate::scopes(scopes)?;
    }
    if let Some(resources) = &body.resources {
        validate::resources(resources)?;
    }
    let expires_at = match (&body.expires_at, &body.expires_in) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("expires_in", "cannot be combined with `expires_at`"));
        }
        (Some(None), None) => Some(None),
        (Some(Some(at)), None) => Some(Some(parse_time("expires_at", at)?)),
        (None, Some(_)) => match parse_expiry(None, body.expires_in.as_deref())? {
            Expiry::In(micros) => Some(Some(Timestamp::now().plus_micros(micros))),
            _ => None,
        },
        (None, None) => None,
    };
    let ratelimits =
        body.ratelimits.map(|l| crate::key_ratelimits::parse_list("ratelimits", l)).transpose()?;
    let changes = KeyChanges {
        name: body.name,
        owner: body.owner,
        metadata,
        expires_at,
        scopes: body.scopes.map(validate::normalize),
        resources: body.resources.map(validate::normalize),
        allowed_sources: body
            .allowed_sources
            .map(|list| crate::sources::parse_list("allowed_sources", &list))
            .transpose()?,
        ratelimits,
    };
    let key = state.engine.update(admin.caller, key.key_id, changes).await?;
    ok(crate::key_view::of(&state, &key, Timestamp::now()))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    overlap: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/rotate",
    operation_id = "rotateKey",
    summary = "Rotate a key",
    tag = "keys",
    description = concat!(
        "Replace a key by a new one inheriting its fields (`ledger:keys:write`). Overlap 0 ",
        "revokes the old key in the same step."
    ),
    request_body = crate::keys::RotateKey,
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body within 24 h replays the original response")
    ),
    responses(
        (status = 201, description = "The new key (with its secret) and the previous one", body = Rotation),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = concat!(
            "the key is revoked, a policy refuses it, or the Idempotency-Key was used with a ",
            "different body or its request already carried out without a kept answer (conflict)"
        ), body = ErrorBody)
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    admin: Admin,
    tag: Option<Extension<IdempotencyTag>>,
    Path(key_id): Path<String>,
    OptionalJson(body): OptionalJson<RotateKey>,
) -> Answer<Rotation> {
    let key = visible_key(&state, &admin, &key_id)?;
    allow_write(&admin, &key.workspace)?;
    let overlap = match body.overlap.as_deref() {
        None => 0,
        Some(text) => parse_duration(text)
            .ok_or_else(|| ApiError::invalid("overlap", "must be a duration such as `0s` or `24h`"))?,
    };
    let tag = tag.map(|Extension(t)| t);
    let (new, previous, secret) =
        state.engine.rotate_idempotent(admin.caller, key.key_id, overlap, tag).await?;
    let now = Timestamp::now();
    let rotation =
        Rotation { key: IssuedKey::new(&new, &secret, now), previous: KeyView::new(&previous, now) };
    let rotation = Rotation {
        key: IssuedKey {
            key: crate::key_view::complete(&state, rotation.key.key, &new.key_id),
            ..rotation.key
        },
        previous: crate::key_view::complete(&state, rotation.previous, &previous.key_id),
    };
    Ok((StatusCode::CREATED, Json(rotation)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/revoke",
    operation_id = "revokeKey",
    summary = "Revoke a key",
    tag = "keys",
    description = concat!(
        "Revoke a key: immediate and irreversible; repeating it returns the same revocation ",
        "(`ledger:keys:write`)."
    ),
    request_body = crate::keys::Reason,
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters")
    ),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = concat!(
            "it would revoke, disable, narrow or give an expiry to the last active full admin key ",
            "without expiry (conflict)"
        ), body = ErrorBody)
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Answer<KeyView> {
    let key = visible_key(&state, &admin, &key_id)?;
    allow_write(&admin, &key.workspace)?;
    let key = state.engine.revoke(admin.caller, key.key_id, body.reason).await?;
    ok(crate::key_view::of(&state, &key, Timestamp::now()))
}

#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/disable",
    operation_id = "disableKey",
    summary = "Suspend a key",
    tag = "keys",
    description = concat!(
        "Suspend a key reversibly (`ledger:keys:write`); it verifies as invalid_api_key until ",
        "enabled."
    ),
    request_body = crate::keys::Reason,
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters")
    ),
    responses(
        (status = 200, description = "The key", body = KeyView),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = concat!(
            "the key is revoked, or it would revoke, disable, narrow or give an expiry to the last ",
            "active full admin key without expiry (conflict)"
        ), body = ErrorBody)
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Answer<KeyView> {
    set_disabled(state, admin, key_id, true, body.reason).await
}

#[utoipa::path(
    post,
    path = "/v1/keys/{key_id}/enable",
    operation_id = "enableKey",
    summary = "Lift a key's suspension",
    tag = "keys",
    description = "Lift a suspension (`ledger:keys:write`).",
    request_body = crate::keys::Reason,
    params(
        ("key_id" = String, Path, description = "Key id, `key_` + 26 characters")
    ),
    responses(
        (status = 200, description = "The key", body = KeyView),
        AuthorityErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = "the key is revoked (conflict)", body = ErrorBody)
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(key_id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Answer<KeyView> {
    set_disabled(state, admin, key_id, false, body.reason).await
}

async fn set_disabled(
    state: AppState,
    admin: Admin,
    key_id: String,
    disabled: bool,
    reason: Option<String>,
) -> Answer<KeyView> {
    let key = visible_key(&state, &admin, &key_id)?;
    allow_write(&admin, &key.workspace)?;
    let key = state.engine.set_disabled(admin.caller, key.key_id, disabled, reason).await?;
    ok(crate::key_view::of(&state, &key, Timestamp::now()))
}

#[utoipa::path(
    post,
    path = "/v1/workspaces/{ws}/keys/revoke-all",
    operation_id = "revokeAllKeys",
    summary = "Revoke every key of a workspace",
    tag = "keys",
    description = concat!(
        "Emergency: revoke every key of a workspace in one step (`ledger:keys:write`). In ",
        "`_ledger`, the calling admin key is spared."
    ),
    request_body = crate::keys::Reason,
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body within 24 h replays the original response")
    ),
    responses(
        (status = 200, description = "How many keys were revoked, and which", body = RevokedAll),
        AdminErrors,
        KeyNotFound,
        Unavailable,
        (status = 409, description = concat!(
            "the Idempotency-Key was used with a different body, or its first request is still ",
            "running (conflict)"
        ), body = ErrorBody)
    )
)]
pub async fn revoke_all(
    State(state): State<AppState>,
    admin: Admin,
    tag: Option<Extension<IdempotencyTag>>,
    Path(workspace): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Answer<RevokedAll> {
    let workspace = parse_workspace(&workspace)?;
    allow_write(&admin, &workspace)?;
    let tag = tag.map(|Extension(t)| t);
    let done = state.engine.revoke_all_idempotent(admin.caller, workspace, body.reason, tag).await?;
    let ids: Vec<String> = done.key_ids.iter().map(ToString::to_string).collect();
    // `skipped`: keys left alone, which the calling key does not dominate (docs/security.md).
    ok(RevokedAll { revoked: ids.len() as u64, key_ids: ids, skipped: done.skipped as u64 })
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    /// At most this many active keys in the workspace; absent or null = no limit.
    #[serde(default, deserialize_with = "max_active_keys")]
    #[schema(minimum = 1, maximum = 2147483647)] // validate::{MIN,MAX}_ACTIVE_KEYS_LIMIT
    max_active_keys: Option<u32>,
    #[serde(default)]
    require_expiry: bool,
    max_lifetime: Option<String>,
    key_prefix: Option<String>,
    /// Source allow-list given to keys issued without one (IP addresses and CIDR networks).
    #[serde(default)]
    allowed_sources: Vec<String>,
    /// A `live` key may only be created or rotated with a source allow-list (409 `conflict` otherwise).
    #[serde(default)]
    require_allowed_sources: bool,
    /// What a leak report of one of its keys does: `notify` (the default) or `revoke`.
    #[schema(value_type = Option<String>, example = "revoke")]
    on_leak: Option<String>,
    /// Rate limits of keys without their own (docs/api.md, "Rate limits"); absent = none.
    #[serde(default)]
    ratelimits: Vec<crate::schema::RateLimitBody>,
}

/// `max_active_keys` out of bounds is a body that does not match the documented schema:
/// 422 `invalid_request` naming the field, before anything else is looked at.
fn max_active_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Option::<u64>::deserialize(deserializer)?
        .map(|n| validate::max_active_keys(n).map_err(|e| serde::de::Error::custom(e.message)))
        .transpose()
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/policy",
    operation_id = "getPolicy",
    summary = "Get a workspace's policy",
    tag = "policies",
    description = "A workspace's policy (`ledger:keys:read`).",
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`")
    ),
    responses(
        (status = 200, description = "The policy", body = PolicyView),
        AdminErrors,
        KeyNotFound,
        InvalidParameter
    )
)]
pub async fn get_policy(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
) -> Answer<PolicyView> {
    let workspace = parse_workspace(&workspace)?;
    admin.allow(scope::KEYS_READ, &workspace)?;
    let mut view = PolicyView::new(workspace.as_str(), &state.engine.policy(&workspace));
    view.on_leak = state.engine.on_leak(&workspace).as_str();
    let view = crate::key_ratelimits::with_policy(&state, view, &workspace);
    ok(crate::sources::with_policy(view, &state.engine.registry(), &workspace))
}

#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/policy",
    operation_id = "setPolicy",
    summary = "Set a workspace's policy",
    tag = "policies",
    description = concat!(
        "Replace a workspace's policy (`ledger:admin`), its events in one batch; a refused part ",
        "changes nothing."
    ),
    request_body = crate::keys::SetPolicy,
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`")
    ),
    responses(
        (status = 200, description = "The policy", body = PolicyView),
        AdminErrors,
        KeyNotFound,
        Unavailable
    )
)]
pub async fn put_policy(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    JsonBody(body): JsonBody<SetPolicy>,
) -> Answer<PolicyView> {
    let workspace = parse_workspace(&workspace)?;
    admin.allow(scope::ADMIN, &workspace)?;
    let max_lifetime = match body.max_lifetime.as_deref() {
        None => None,
        Some(text) => match parse_duration(text) {
            Some(micros) if micros > 0 => Some(micros),
            _ => return Err(ApiError::invalid("max_lifetime", "must be a positive duration such as `90d`")),
        },
    };
    let key_prefix = body
        .key_prefix
        .as_deref()
        .map(|p| {
            p.parse::<KeyPrefix>()
                .map_err(|_| ApiError::invalid("key_prefix", "must match [a-z][a-z0-9]{0,15}"))
        })
        .transpose()?;
    let policy = Policy {
        max_active_keys: body.max_active_keys,
        require_expiry: body.require_expiry,
        max_lifetime,
        key_prefix,
    };
    let sources = crate::sources::policy(&body.allowed_sources, body.require_allowed_sources)?;
    // The policy is replaced whole: an absent `on_leak` is the default, `notify`.
    let on_leak = match body.on_leak.as_deref() {
        None => keyledger_core::OnLeak::default(),
        Some(text) => keyledger_core::OnLeak::parse(text)
            .ok_or_else(|| ApiError::invalid("on_leak", "must be `notify` or `revoke`"))?,
    };
    let ratelimits = crate::key_ratelimits::parse_list("ratelimits", body.ratelimits)?;
    let controls =
        PolicyControls { sources: Some(sources), on_leak: Some(on_leak), ratelimits: Some(ratelimits) };
    let policy = state.engine.set_policy_with(admin.caller, workspace.clone(), policy, controls).await?;
    let mut view = PolicyView::new(workspace.as_str(), &policy);
    view.on_leak = on_leak.as_str();
    let view = crate::key_ratelimits::with_policy(&state, view, &workspace);
    ok(crate::sources::with_policy(view, &state.engine.registry(), &workspace))
}
