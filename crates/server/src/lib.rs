//! keyledger's HTTP API over the engine, as a library so tests can drive it in-process.
//!
//! [`router`] builds the axum router of docs/api.md; [`serve`] runs it until a shutdown
//! signal, then stops the engine cleanly (pending appends flushed, final checkpoint).
//! Every response carries `request-id`; every error has the shape of docs/api.md
//! ([`error`], [`request_id`]).
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod bulk_lookup;
pub mod console;
pub mod credits;
pub mod entries;
pub mod error;
pub mod export;
pub mod extract;
mod fast_path;
pub mod forwarded;
pub mod grpc;
pub mod idempotency;
pub mod import;
pub mod integrity;
pub mod introspect;
mod json_error;
pub mod key_ratelimits;
pub mod key_view;
pub mod keys;
pub mod leaks;
pub mod metrics;
pub mod openapi;
mod outcome;
pub mod ratelimit_headers;
pub mod redact;
pub mod reports;
pub mod request_id;
pub mod schema;
pub mod secret_body;
pub mod sources;
pub mod throttle;
pub mod tiles;
mod transport;
pub mod verify;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::routing::{any, delete, get, post};
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
    /// Longest time a request may take before it answers 408.
    pub request_timeout: std::time::Duration,
    /// Failed (401/403) verifications allowed per source address and minute before verify
    /// answers 429 `rate_limited`; 0 = off, the default (see [`throttle`]).
    pub throttle_failed_verifications: u32,
    /// Failed admin authentications allowed per source address and minute before its
    /// further failed authentications answer 429 `rate_limited` (a valid key is always
    /// served); 0 = off.
    /// Default [`throttle::DEFAULT_ADMIN_AUTH_FAILURES`] (see [`throttle`]).
    pub throttle_failed_admin_auth: u32,
    /// `/healthz` shows the log size to anyone, not only to admin keys holding
    /// `ledger:audit:read`.
    pub healthz_details: bool,
    /// Largest URI plus headers of a request, in bytes; larger answers 431 (see [`throttle`]).
    pub max_header_bytes: usize,
    /// Longest wait for a request's head (request line and headers) on a connection, from
    /// its opening or its previous response; then the connection is closed. Bounds slow-loris
    /// clients and idle keep-alive connections (see `transport`).
    pub header_read_timeout: std::time::Duration,
    /// `/checkpoint` and the hash tiles are served without a key (`serve --public-log`);
    /// entry bundles always need one (see [`tiles`]).
    pub public_log: bool,
}

/// [`ServerConfig::header_read_timeout`] unless configured.
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            body_limit: 64 * 1024,
            request_timeout: std::time::Duration::from_secs(30),
            throttle_failed_verifications: 0,
            throttle_failed_admin_auth: throttle::DEFAULT_ADMIN_AUTH_FAILURES,
            healthz_details: false,
            max_header_bytes: throttle::DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            public_log: false,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ServerConfig>,
    pub idempotency: Arc<idempotency::IdempotencyCache>,
    /// Per-source throttling of failed verifications, when configured.
    pub throttle: Option<Arc<throttle::FailureThrottle>>,
    /// Per-source throttling of failed admin authentications, unless turned off.
    pub admin_throttle: Option<Arc<throttle::FailureThrottle>>,
    /// GitHub secret scanning's keys (`serve --github-scanning-keys`); `None` = the
    /// endpoint answers 404 (see [`leaks`]).
    pub github_keys: Option<Arc<leaks::github_keys::GithubKeys>>,
    /// The public leak report's per-source budget and queue (see [`leaks::report`]).
    pub public_reports: Arc<leaks::report::PublicReports>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Self {
        let throttle = throttle::FailureThrottle::new(config.throttle_failed_verifications).map(Arc::new);
        let admin_throttle = throttle::FailureThrottle::new(config.throttle_failed_admin_auth).map(Arc::new);
        Self {
            engine,
            config: Arc::new(config),
            idempotency: Arc::default(),
            throttle,
            admin_throttle,
            github_keys: None,
            public_reports: Arc::default(),
        }
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

/// `/healthz`: to a stranger only whether the service is up. The log size counts every
/// tenant's traffic, so it goes only to an admin key holding `ledger:audit:read`, or to
/// anyone with [`ServerConfig::healthz_details`]. A presented key is authenticated (and
/// throttled) as on every admin route.
pub(crate) async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, _) = request.into_parts();
    let mut details = state.config.healthz_details;
    if auth::presented_key(&parts.headers).is_some() {
        let admin = match auth::authenticate(&mut parts, &state).await {
            Ok(admin) => admin,
            Err(refusal) => return refusal,
        };
        if let Err(refusal) = admin.require(auth::scope::AUDIT_READ) {
            return refusal.into_response();
        }
        details = true;
    }
    if state.engine.is_healthy() {
        let log_size = details.then(|| state.engine.log().len());
        axum::Json(schema::Health { status: "ok", log_size }).into_response()
    } else {
        error::ApiError::new(
            error::ErrorCode::Unavailable,
            "the log cannot be written; keyledger fails closed",
        )
        .into_response()
    }
}

/// Liveness and log health (documentation of `/healthz`).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    summary = "Health check",
    description = concat!(
        "Liveness and log health: 200 while the log can be written, 503 while it cannot ",
        "(keyledger then fails closed). No key needed. With an admin key holding ",
        "`ledger:audit:read` (or when the server runs with `--healthz-details`) the answer also ",
        "has `log_size`; a presented key is checked as on every admin route."
    ),
    tag = "operations",
    security((), ("bearer" = []), ("x_api_key" = [])),
    responses(
        (status = 200, description = "Serving; the log is writable", body = schema::Health),
        (status = 401, description = concat!(
            "a presented key is malformed, unknown (unauthorized), revoked or disabled ",
            "(invalid_api_key) or expired (expired_api_key)"
        ), body = schema::ErrorBody),
        (status = 403,
            description = "the presented key lacks `ledger:audit:read`, is not a `_ledger` key, or is used from outside its source allow-list (forbidden)",
            body = schema::ErrorBody),
        (status = 429, description = "too many failed admin authentications from this source (rate_limited)",
            body = schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until this source may try a key again"))),
        schema::Unavailable
    )
)]
pub fn health_doc() {}

/// Prometheus metrics (documentation of `/metrics`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    summary = "Prometheus metrics",
    description = "Prometheus metrics in the text format. No authentication, and never a secret.",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = concat!(
            "Prometheus text format: verifications by outcome, append latency, batch sizes, log ",
            "size, checkpoint age, HTTP requests by route. Never a secret."
        ), content_type = "text/plain", body = String)
    )
)]
pub fn metrics_doc() {}

/// This document (documentation of `/openapi.json`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApiDocument",
    summary = "OpenAPI document",
    description = "This OpenAPI 3.1 document. No authentication.",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json", body = Object)
    )
)]
pub fn openapi_doc() {}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document())
}

/// The answer to a request that outlived [`ServerConfig::request_timeout`] (408).
pub(crate) fn timed_out() -> error::ApiError {
    error::ApiError::new(error::ErrorCode::InvalidRequest, "the request took too long and was abandoned")
        .with_status(axum::http::StatusCode::REQUEST_TIMEOUT)
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    metrics::handle();
    let body_limit = state.config.body_limit;
    let github_body_limit = DefaultBodyLimit::max(leaks::GITHUB_BODY_LIMIT.max(body_limit));
    let report_body_limit = DefaultBodyLimit::max(leaks::report::BODY_LIMIT.max(body_limit));
    let request_timeout = state.config.request_timeout;
    let max_header_bytes = state.config.max_header_bytes;
    let idempotent = axum::middleware::from_fn_with_state(state.clone(), idempotency::middleware);
    let import_limit = DefaultBodyLimit::max(import::IMPORT_BODY_LIMIT.max(body_limit));
    let import_keys = import::import.layer(idempotent.clone()).layer(import_limit);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/workspaces/{ws}/keys", post(keys::create.layer(idempotent.clone())).get(keys::list))
        .route("/v1/workspaces/{ws}/keys/revoke-all", post(keys::revoke_all.layer(idempotent.clone())))
        .route("/v1/workspaces/{ws}/keys/import", post(import_keys))
        .route("/v1/workspaces/{ws}/policy", get(keys::get_policy).put(keys::put_policy))
        .route("/v1/workspaces/{ws}/webhook", get(webhooks::show).put(webhooks::set))
        .route("/v1/workspaces/{ws}/webhook", delete(webhooks::disable))
        .route("/v1/workspaces/{ws}/webhook/deliveries", get(webhooks::deliveries))
        .route("/v1/keys/{key_id}", get(keys::show).patch(keys::update))
        .route("/v1/keys/{key_id}/rotate", post(keys::rotate.layer(idempotent)))
        .route("/v1/keys/{key_id}/revoke", post(keys::revoke))
        .route("/v1/keys/{key_id}/disable", post(keys::disable))
        .route("/v1/keys/{key_id}/enable", post(keys::enable))
        .route("/v1/keys/{key_id}/credits", post(credits::top_up))
        // audit routes
        .route("/v1/keys/{key_id}/events", get(audit::key_events))
        .route("/v1/audit/keys/{key_id}/compromise", get(audit::compromise))
        .route("/v1/audit/requests/{request_id}", get(audit::request))
        .route("/v1/audit/sources", get(audit::sources_query))
        .route("/v1/audit/sources/{source}", get(audit::sources))
        .route("/v1/audit/keys", get(audit::active_keys))
        .route("/v1/audit/hygiene", get(audit::hygiene))
        .route("/v1/audit/lookup", post(audit::lookup))
        .route("/v1/audit/lookup/bulk", post(bulk_lookup::lookup_bulk))
        // end audit routes
        .route("/v1/leaks/github", post(leaks::github).layer(github_body_limit))
        .route("/v1/leaks/report", post(leaks::report::report).layer(report_body_limit))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route("/v1/log/checkpoint", get(integrity::checkpoint))
        .route("/v1/log/public-key", get(integrity::public_key))
        .route("/v1/log/proofs/inclusion", get(integrity::inclusion))
        .route("/v1/log/proofs/consistency", get(integrity::consistency))
        .route("/v1/log/entries/{seq}", get(entries::entry))
        .route("/checkpoint", get(tiles::checkpoint))
        .route("/tile/{*path}", get(tiles::tile))
        // export routes
        .route("/v1/export", get(export::export))
        // end export routes
        .route("/v1/reports/compliance", get(reports::compliance))
        // console routes
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{*file}", get(console::file))
        // end console routes
        .route_layer(axum::middleware::from_fn(metrics::remember_route))
        // After `route_layer`: the gateways' hot path skips that layer and sets its route
        // template on the answer itself (see `verify::verify`).
        .route("/v1/verify", any(verify::verify))
        .route("/v1/verify/{*path}", any(verify::verify))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer((
            axum::error_handling::HandleErrorLayer::new(|_: tower::BoxError| async { timed_out() }),
            tower::timeout::TimeoutLayer::new(request_timeout),
        ))
        .layer(axum::middleware::from_fn_with_state(max_header_bytes, request_id::middleware))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, lets open requests finish,
/// then stops the engine cleanly. Connections that do not deliver a request head within
/// [`ServerConfig::header_read_timeout`] are closed (see `transport`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let header_read_timeout = state.config.header_read_timeout;
    transport::serve_http(listener, router(state.clone()), state, header_read_timeout, shutdown).await;
    engine.shutdown().await;
    Ok(())
}

/// Serves the API over TLS (rustls) on `address` with a PEM certificate chain and key,
/// for deployments without a proxy in front. Stops like [`serve`].
pub async fn serve_tls(
    address: SocketAddr,
    certificate: std::path::PathBuf,
    private_key: std::path::PathBuf,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    listening: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    // Several rustls providers may be compiled in; keyledger uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(certificate, private_key).await?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    if let Some(listening) = listening {
        let watcher = handle.clone();
        tokio::spawn(async move {
            if let Some(address) = watcher.listening().await {
                let _ = listening.send(address);
            }
        });
    }
    let engine = state.engine.clone();
    let header_read_timeout = state.config.header_read_timeout;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut server =
        axum_server::bind_rustls(address, config).handle(handle).first_request_timeout(header_read_timeout);
    // axum-server's builder has a timer; its HTTP/1 header timeout is off unless set.
    server.http_builder().http1().header_read_timeout(header_read_timeout);
    server.serve(app).await?;
    engine.shutdown().await;
    Ok(())
}
