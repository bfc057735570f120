//! An example axum service protected by keyledger-tower (see `main.rs` for the binary).
//!
//! Routes: `GET /reports` needs the scope `reports:read`, `POST /reports` needs
//! `reports:write`, and `/healthz` is open. The protected handlers read the
//! [`VerifiedKey`] the middleware put into the request and answer with its key id and
//! workspace. [`app`] builds the router, so tests can drive it in-process too.
#![forbid(unsafe_code)]

use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use keyledger_tower::{KeyledgerClient, KeyledgerLayer, VerifiedKey};
use serde_json::{Value, json};

/// What the service needs: a client of the keyledger that verifies its callers' keys.
#[derive(Clone, Debug)]
pub struct Config {
    pub keyledger: KeyledgerClient,
}

/// The service's routes, each with the scopes it requires.
pub fn app(config: Config) -> Router {
    let auth = KeyledgerLayer::new(config.keyledger);
    Router::new()
        .route(
            "/reports",
            get(list_reports.layer(auth.clone().require_scopes(["reports:read"])))
                .post(create_report.layer(auth.require_scopes(["reports:write"]))),
        )
        .route("/healthz", get(healthz))
}

fn identity(key: &VerifiedKey) -> Value {
    json!({
        "key_id": key.key_id,
        "workspace": key.workspace,
        "environment": key.environment,
        // keyledger's id of the verification: GET /v1/audit/requests/{id} finds its event.
        "request_id": key.request_id,
    })
}

async fn list_reports(Extension(key): Extension<VerifiedKey>) -> Json<Value> {
    Json(json!({"reports": [], "caller": identity(&key)}))
}

async fn create_report(Extension(key): Extension<VerifiedKey>) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({"created": true, "caller": identity(&key)})))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
