//! keyledger's HTTP API over the engine, as a library so tests can drive it in-process.
//!
//! [`router`] builds the axum router of contract §4; [`serve`] runs it until a shutdown
//! signal, then stops the engine cleanly (pending appends flushed, final checkpoint).
//! Every response carries `request-id`; every error has the contract's shape
//! ([`error`], [`request_id`]).
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod extract;
pub mod forwarded;
pub mod idempotency;
pub mod integrity;
pub mod keys;
pub mod metrics;
pub mod request_id;
pub mod verify;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::routing::{any, get, post};
use keyledger_core::{RequestId, Timestamp};
use keyledger_ledger::Engine;
use std::net::SocketAddr;
use std::sync::Arc;

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Take the client address from `X-Forwarded-For`/`X-Real-IP` (see [`forwarded`]).
    pub trust_forwarded_for: bool,
    /// Proxies whose forwarded headers are believed; empty = any peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { trust_forwarded_for: false, trusted_proxies: Vec::new(), body_limit: 64 * 1024 }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ServerConfig>,
    pub idempotency: Arc<idempotency::IdempotencyCache>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Self {
        Self { engine, config: Arc::new(config), idempotency: Arc::default() }
    }
}

/// keyledger's id of the request being handled (set by the request-id middleware).
pub fn current_request(parts: &Parts) -> RequestId {
    parts
        .extensions
        .get::<request_id::CurrentRequest>()
        .map(|r| r.0)
        .unwrap_or_else(|| RequestId::generate(Timestamp::now().millis()))
}

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if state.engine.is_healthy() {
        axum::Json(serde_json::json!({"status": "ok", "log_size": state.engine.log().len()})).into_response()
    } else {
        error::ApiError::new(
            error::ErrorCode::Unavailable,
            "the log cannot be written; keyledger fails closed",
        )
        .into_response()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    metrics::handle();
    let body_limit = state.config.body_limit;
    let idempotent = axum::middleware::from_fn_with_state(state.clone(), idempotency::middleware);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/v1/verify", any(verify::verify))
        .route("/v1/verify/{*path}", any(verify::verify))
        .route("/v1/workspaces/{ws}/keys", post(keys::create.layer(idempotent.clone())).get(keys::list))
        .route("/v1/workspaces/{ws}/keys/revoke-all", post(keys::revoke_all.layer(idempotent.clone())))
        .route("/v1/workspaces/{ws}/policy", get(keys::get_policy).put(keys::put_policy))
        .route("/v1/keys/{key_id}", get(keys::show).patch(keys::update))
        .route("/v1/keys/{key_id}/rotate", post(keys::rotate.layer(idempotent)))
        .route("/v1/keys/{key_id}/revoke", post(keys::revoke))
        .route("/v1/keys/{key_id}/disable", post(keys::disable))
        .route("/v1/keys/{key_id}/enable", post(keys::enable))
        .route("/v1/log/checkpoint", get(integrity::checkpoint))
        .route("/v1/log/public-key", get(integrity::public_key))
        .route("/v1/log/proofs/inclusion", get(integrity::inclusion))
        .route("/v1/log/proofs/consistency", get(integrity::consistency))
        .route_layer(axum::middleware::from_fn(metrics::remember_route))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops the engine cleanly.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    engine.shutdown().await;
    Ok(())
}
