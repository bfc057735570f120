//! Webhook routes: configure, show and disable a workspace's webhook, and list its delivery
//! attempts (`ledger:admin`, workspace-scoped like every admin route). The signing secret
//! is in the PUT response only; see `docs/webhooks.md` for what receivers get.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryPairs, path_param};
use crate::views::WithSecret;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyledger_core::{WorkspaceId, json::actor_text};
use keyledger_ledger::Webhook;
use keyledger_ledger::webhook::Attempt;
use serde::Deserialize;
use serde_json::{Value, json};

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// Where deliveries are POSTed: an absolute `http://` or `https://` URL.
    url: String,
    /// Notification types to send (see `docs/webhooks.md`); absent or empty = all.
    #[serde(default)]
    events: Vec<String>,
}

fn webhook_view(workspace: &WorkspaceId, webhook: &Webhook) -> Value {
    json!({
        "workspace": workspace.as_str(),
        "url": webhook.url,
        "events": webhook.events,
        "enabled": webhook.enabled,
        "updated_at": webhook.set_at.to_rfc3339(),
        "updated_by": actor_text(&webhook.set_by),
    })
}

fn attempt_view(attempt: &Attempt) -> Value {
    json!({
        "delivery_id": attempt.delivery_id,
        "type": attempt.kind,
        "attempt": attempt.attempt,
        "at": attempt.at.to_rfc3339(),
        "status": attempt.status,
        "error": attempt.error,
        "outcome": attempt.outcome.as_str(),
        "duration_ms": attempt.duration_ms,
        "next_retry_at": attempt.next_retry_at.map(|t| t.to_rfc3339()),
    })
}

fn admin_workspace(admin: &Admin, workspace: &str) -> Result<WorkspaceId, ApiError> {
    let workspace: WorkspaceId = path_param("workspace", workspace)?;
    admin.allow(scope::ADMIN, &workspace)?;
    Ok(workspace)
}

fn not_configured(workspace: &WorkspaceId) -> ApiError {
    ApiError::not_found(format!("no webhook for workspace {workspace}"))
}

#[utoipa::path(put, path = "/v1/workspaces/{ws}/webhook", operation_id = "setWebhook", summary = "Configure a workspace's webhook", tag = "webhooks", description = "Configure (or replace) the workspace's webhook (`ledger:admin`). Every PUT issues a new signing secret, shown in this response only; the previous one stops being used at once.", request_body = crate::webhooks::SetWebhook, params(("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`")), responses((status = 200, description = "The webhook and its signing secret", body = crate::openapi::WebhookWithSecret), (status = 401, description = "missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key", body = crate::openapi::ErrorBody), (status = 403, description = "the admin key lacks the scope, or is not a `_ledger` key (forbidden)", body = crate::openapi::ErrorBody), (status = 404, description = "a workspace the admin key may not see (not_found)", body = crate::openapi::ErrorBody), (status = 400, description = "a field is invalid; the message names it (invalid_request)", body = crate::openapi::ErrorBody), (status = 422, description = "the body does not match the schema (invalid_request)", body = crate::openapi::ErrorBody), (status = 413, description = "the body exceeds the limit (payload_too_large)", body = crate::openapi::ErrorBody), (status = 503, description = "the log cannot be written; keyledger fails closed (unavailable)", body = crate::openapi::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    JsonBody(body): JsonBody<SetWebhook>,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let workspace = admin_workspace(&admin, &workspace)?;
    // A well-formed URL whose host is a refused destination is unprocessable (422), unlike a
    // malformed one (400, from the engine); see docs/webhooks.md, "Destinations".
    keyledger_ledger::webhook::check_destination(&body.url, state.engine.webhook_destination_rule())
        .map_err(|error| ApiError::from(error).with_status(StatusCode::UNPROCESSABLE_ENTITY))?;
    let (webhook, secret) =
        state.engine.set_webhook(admin.caller, workspace.clone(), body.url, body.events).await?;
    Ok((StatusCode::OK, Json(WithSecret::new(webhook_view(&workspace, &webhook), &secret))))
}

#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhook", operation_id = "getWebhook", summary = "Get a workspace's webhook", tag = "webhooks", description = "The workspace's webhook, never its secret (`ledger:admin`).", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, description = "The webhook", body = crate::openapi::WebhookView), (status = 401, description = "missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key", body = crate::openapi::ErrorBody), (status = 403, description = "the admin key lacks the scope, or is not a `_ledger` key (forbidden)", body = crate::openapi::ErrorBody), (status = 404, description = "no webhook was ever configured, or a workspace the admin key may not see (not_found)", body = crate::openapi::ErrorBody), (status = 400, description = "a parameter is invalid; the message names it (invalid_request)", body = crate::openapi::ErrorBody)))]
pub async fn show(State(state): State<AppState>, admin: Admin, Path(workspace): Path<String>) -> Answer {
    let workspace = admin_workspace(&admin, &workspace)?;
    let webhook = state.engine.webhook(&workspace).ok_or_else(|| not_configured(&workspace))?;
    Ok((StatusCode::OK, Json(webhook_view(&workspace, &webhook))))
}

#[utoipa::path(delete, path = "/v1/workspaces/{ws}/webhook", operation_id = "disableWebhook", summary = "Disable a workspace's webhook", tag = "webhooks", description = "Disable the workspace's webhook (`ledger:admin`): nothing more is sent and undelivered deliveries are cancelled. Repeating it changes nothing.", params(("ws" = String, Path, description = "Workspace id")), responses((status = 200, description = "The disabled webhook", body = crate::openapi::WebhookView), (status = 401, description = "missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key", body = crate::openapi::ErrorBody), (status = 403, description = "the admin key lacks the scope, or is not a `_ledger` key (forbidden)", body = crate::openapi::ErrorBody), (status = 404, description = "no webhook was ever configured, or a workspace the admin key may not see (not_found)", body = crate::openapi::ErrorBody), (status = 400, description = "a parameter is invalid; the message names it (invalid_request)", body = crate::openapi::ErrorBody), (status = 503, description = "the log cannot be written; keyledger fails closed (unavailable)", body = crate::openapi::ErrorBody)))]
pub async fn disable(State(state): State<AppState>, admin: Admin, Path(workspace): Path<String>) -> Answer {
    let workspace = admin_workspace(&admin, &workspace)?;
    let webhook = state.engine.disable_webhook(admin.caller, workspace.clone()).await?;
    Ok((StatusCode::OK, Json(webhook_view(&workspace, &webhook))))
}

#[utoipa::path(get, path = "/v1/workspaces/{ws}/webhook/deliveries", operation_id = "listWebhookDeliveries", summary = "List a webhook's delivery attempts", tag = "webhooks", description = "The workspace's most recent delivery attempts, newest first, and how many deliveries wait (`ledger:admin`).", params(("ws" = String, Path, description = "Workspace id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Attempts to list, default 100, at most 1000")), responses((status = 200, description = "Delivery attempts", body = crate::openapi::WebhookDeliveries), (status = 401, description = "missing, malformed, unknown (unauthorized), revoked or disabled (invalid_api_key) or expired (expired_api_key) admin key", body = crate::openapi::ErrorBody), (status = 403, description = "the admin key lacks the scope, or is not a `_ledger` key (forbidden)", body = crate::openapi::ErrorBody), (status = 404, description = "no webhook was ever configured, or a workspace the admin key may not see (not_found)", body = crate::openapi::ErrorBody), (status = 400, description = "a parameter is invalid; the message names it (invalid_request)", body = crate::openapi::ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    query: QueryPairs,
) -> Answer {
    let workspace = admin_workspace(&admin, &workspace)?;
    query.only(&["limit"])?;
    let limit = match query.get("limit") {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit", "must be an integer from 1 to 1000")),
        },
    };
    if state.engine.webhook(&workspace).is_none() {
        return Err(not_configured(&workspace));
    }
    let list = state.engine.webhook_deliveries(&workspace, limit)?;
    let attempts: Vec<Value> = list.attempts.iter().map(attempt_view).collect();
    Ok((
        StatusCode::OK,
        Json(json!({ "workspace": workspace.as_str(), "pending": list.pending, "attempts": attempts })),
    ))
}
