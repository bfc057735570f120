//! Webhook routes: configure, show and disable a workspace's webhook, and list its delivery
//! attempts (`ledger:admin`, workspace-scoped like every admin route). The signing secret
//! is in the PUT response only; see `docs/webhooks.md` for what receivers get.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryPairs, path_param};
use crate::schema::*;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyledger_core::WorkspaceId;
use serde::Deserialize;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWebhook {
    /// Where deliveries are POSTed: an absolute `http://` or `https://` URL.
    url: String,
    /// Notification types to send (see `docs/webhooks.md`); absent or empty = all.
    #[serde(default)]
    events: Vec<String>,
}

fn admin_workspace(admin: &Admin, workspace: &str) -> Result<WorkspaceId, ApiError> {
    let workspace: WorkspaceId = path_param("workspace", workspace)?;
    admin.allow(scope::ADMIN, &workspace)?;
    Ok(workspace)
}

fn not_configured(workspace: &WorkspaceId) -> ApiError {
    ApiError::not_found(format!("no webhook for workspace {workspace}"))
}

#[utoipa::path(
    put,
    path = "/v1/workspaces/{ws}/webhook",
    operation_id = "setWebhook",
    summary = "Configure a workspace's webhook",
    tag = "webhooks",
    description = concat!(
        "Configure (or replace) the workspace's webhook (`ledger:admin`). Every PUT issues a new ",
        "signing secret, shown in this response only; the previous one stops being used at once."
    ),
    request_body = crate::webhooks::SetWebhook,
    params(
        ("ws" = String, Path, description = "Workspace id, `[a-z0-9][a-z0-9_-]{0,62}` or `_ledger`")
    ),
    responses(
        (status = 200, description = "The webhook and its signing secret", body = WebhookWithSecret),
        AdminErrors,
        Unavailable,
        (status = 404, description = "a workspace the admin key may not see (not_found)", body = ErrorBody)
    )
)]
pub async fn set(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    JsonBody(body): JsonBody<SetWebhook>,
) -> Answer<WebhookWithSecret> {
    let workspace = admin_workspace(&admin, &workspace)?;
    // A well-formed URL whose host is a refused destination is unprocessable (422), unlike a
    // malformed one (400, from the engine); see docs/webhooks.md, "Destinations".
    keyledger_ledger::webhook::check_destination(&body.url, state.engine.webhook_destination_rule())
        .map_err(|error| ApiError::from(error).with_status(StatusCode::UNPROCESSABLE_ENTITY))?;
    let (webhook, secret) =
        state.engine.set_webhook(admin.caller, workspace.clone(), body.url, body.events).await?;
    let webhook = WebhookView::new(&workspace, &webhook);
    Ok((StatusCode::OK, Json(WebhookWithSecret { webhook, secret })))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/webhook",
    operation_id = "getWebhook",
    summary = "Get a workspace's webhook",
    tag = "webhooks",
    description = "The workspace's webhook, never its secret (`ledger:admin`).",
    params(
        ("ws" = String, Path, description = "Workspace id")
    ),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        AdminErrors,
        WebhookNotFound,
        InvalidParameter
    )
)]
pub async fn show(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
) -> Answer<WebhookView> {
    let workspace = admin_workspace(&admin, &workspace)?;
    let webhook = state.engine.webhook(&workspace).ok_or_else(|| not_configured(&workspace))?;
    Ok((StatusCode::OK, Json(WebhookView::new(&workspace, &webhook))))
}

#[utoipa::path(
    delete,
    path = "/v1/workspaces/{ws}/webhook",
    operation_id = "disableWebhook",
    summary = "Disable a workspace's webhook",
    tag = "webhooks",
    description = concat!(
        "Disable the workspace's webhook (`ledger:admin`): nothing more is sent and undelivered ",
        "deliveries are cancelled. Repeating it changes nothing."
    ),
    params(
        ("ws" = String, Path, description = "Workspace id")
    ),
    responses(
        (status = 200, description = "The disabled webhook", body = WebhookView),
        AdminErrors,
        WebhookNotFound,
        InvalidParameter,
        Unavailable
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
) -> Answer<WebhookView> {
    let workspace = admin_workspace(&admin, &workspace)?;
    let webhook = state.engine.disable_webhook(admin.caller, workspace.clone()).await?;
    Ok((StatusCode::OK, Json(WebhookView::new(&workspace, &webhook))))
}

#[utoipa::path(
    get,
    path = "/v1/workspaces/{ws}/webhook/deliveries",
    operation_id = "listWebhookDeliveries",
    summary = "List a webhook's delivery attempts",
    tag = "webhooks",
    description = concat!(
        "The workspace's most recent delivery attempts, newest first, and how many deliveries ",
        "wait (`ledger:admin`)."
    ),
    params(
        ("ws" = String, Path, description = "Workspace id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Attempts to list, default 100, at most 1000")
    ),
    responses(
        (status = 200, description = "Delivery attempts", body = WebhookDeliveries),
        AdminErrors,
        WebhookNotFound,
        InvalidParameter
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    admin: Admin,
    Path(workspace): Path<String>,
    query: QueryPairs,
) -> Answer<WebhookDeliveries> {
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
    let attempts = list.attempts.iter().map(WebhookAttempt::from).collect();
    let workspace = workspace.as_str().to_owned();
    Ok((StatusCode::OK, Json(WebhookDeliveries { workspace, pending: list.pending, attempts })))
}
