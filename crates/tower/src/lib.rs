//! A tower middleware that verifies every request's API key against keyledger.
//!
//! A Rust service (axum, tonic, anything built on `tower::Service` over `http` types) adds
//! [`KeyledgerLayer`] in front of its routes. For each request the layer:
//!
//! 1. takes the key from `Authorization: Bearer K`, `Authorization: Api-Key K` or
//!    `x-api-key: K` exactly as keyledger reads it (docs/api.md, "Authentication"), and
//!    **removes that header** so nothing behind the layer can log or forward the secret. No
//!    key → 401 `unauthorized` without a call to keyledger;
//! 2. calls keyledger's `POST /v1/verify` (JSON mode) with the route's required scopes (and
//!    resource, environment, workspace if set) and the request's context: method, path
//!    (without the query), client address, `User-Agent` and `x-request-id`. keyledger records
//!    these in the key's `used`/`denied` event;
//! 3. on a valid key inserts a [`VerifiedKey`] (key id, workspace, environment, scopes,
//!    owner, expiry, keyledger's request id; no secret) into the request's extensions and
//!    calls the inner service;
//! 4. on 401/403 (and 429 if keyledger throttles) answers keyledger's status and JSON error
//!    body itself (`{"error", "message", "request_id", "valid": false, …}`, with its
//!    `request-id` and `Retry-After` headers); the inner service is not called;
//! 5. when there is no verdict — keyledger unreachable, slower than the timeout, answering
//!    5xx or anything unexpected — answers **503 `unavailable`** and does not call the inner
//!    service: it fails closed, never open. The reason is logged (at `warn`, or `error` if
//!    keyledger refused the request itself, i.e. a configuration error) with the request id
//!    of the 503 answer.
//!
//! **No caching.** Every request is verified by keyledger, so once a revoke call has
//! returned, the very next request with that key is refused, and every use is in the audit
//! log. The cost is one round trip to keyledger per request (keep it close: same host or
//! network); the HTTP connections are pooled and kept alive.
//!
//! **The key is never logged**: it lives only in a redacted, zeroed-on-drop wrapper and the
//! body of the verify request; errors and log lines carry no request data, and
//! [`VerifiedKey`], [`KeyledgerLayer`] and [`KeyledgerClient`] hold no secret.
//!
//! # Example (axum)
//!
//! Required scopes are per route: give each handler its own layer with
//! [`Handler::layer`](https://docs.rs/axum/0.8/axum/handler/trait.Handler.html#method.layer)
//! (two methods of one path can require different scopes), or put one layer on a whole
//! router with `Router::route_layer` (only matched routes are verified, so unknown paths
//! still answer 404). Read the identity with `Extension<VerifiedKey>`. Serve with
//! `into_make_service_with_connect_info::<SocketAddr>()` so that the client address is
//! recorded.
//!
//! ```no_run
//! use axum::{Extension, Json, Router, handler::Handler, routing::get};
//! use keyledger_tower::{KeyledgerClient, KeyledgerLayer, VerifiedKey};
//! use std::{net::SocketAddr, time::Duration};
//!
//! async fn list(Extension(key): Extension<VerifiedKey>) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({"key_id": key.key_id, "workspace": key.workspace}))
//! }
//!
//! async fn create(Extension(key): Extension<VerifiedKey>) -> String {
//!     format!("created for {}", key.workspace)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = KeyledgerClient::builder("http://127.0.0.1:7878")
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//! let auth = KeyledgerLayer::new(client);
//! let app = Router::new()
//!     .route(
//!         "/reports",
//!         get(list.layer(auth.clone().require_scopes(["reports:read"])))
//!             .post(create.layer(auth.clone().require_scopes(["reports:write"]))),
//!     )
//!     .route("/healthz", get(|| async { "ok" })); // open: no layer
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # tonic and other tower stacks
//!
//! The service is generic over the inner service and the request and response bodies; its
//! response body is [`ResponseBody<B>`] (the inner body, or the middleware's JSON answer),
//! and it never returns an error of its own. For tonic, add it with `Server::layer` (one set
//! of scopes for the server) or around one generated service; gRPC clients map the HTTP
//! status of a refusal per the gRPC spec: 401 → `UNAUTHENTICATED`, 403 →
//! `PERMISSION_DENIED`, 503 → `UNAVAILABLE`. Disable the default `axum` feature to drop
//! axum and pass tonic's `TcpConnectInfo` through [`KeyledgerLayer::client_ip_from`].
//! (Only axum is exercised by this crate's tests.)
#![forbid(unsafe_code)]

mod client;
mod key;
mod layer;

pub use client::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Error, KeyledgerClient, KeyledgerClientBuilder};
pub use key::VerifiedKey;
pub use keyledger_core::{Environment, KeyId, RequestId, Timestamp, WorkspaceId};
pub use layer::{KeyledgerLayer, KeyledgerService, ResponseBody};
