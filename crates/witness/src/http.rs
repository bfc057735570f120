//! The HTTP face of the witness: `POST /add-checkpoint` of C2SP tlog-witness, and its
//! monitoring path `GET /<origin hash>/checkpoint` (the latest cosigned checkpoint of the log
//! whose origin has this lowercase hex SHA-256, with the log's signatures and the
//! witness's cosignature; 404 before the first).
//!
//! Answers exactly as the spec says: 200 with the cosignature line(s) (`text/plain`), 409
//! with the latest cosigned size and a newline as `text/x.tlog.size`, and 400/403/404/422
//! for the refusals of [`crate::AddError`]. The spec leaves the other error bodies open;
//! they are keyledger's error body `{"error", "message", "request_id"}` (docs/api.md,
//! "Errors"), with the same id in the `request-id` header. Bodies larger than
//! [`MAX_REQUEST_BYTES`] are refused with 413, and a body must arrive within
//! [`BODY_TIMEOUT`]; unknown paths answer 404 and other methods 405, in the same form.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyledger_core::ids::RequestId;

use crate::request::MAX_REQUEST_BYTES;
use crate::witness::{AddError, Witness};

/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The content type of a 409 answer's body (the tlog-witness spec).
pub const TLOG_SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint).fallback(method_not_allowed))
        .route("/{origin_hash}/checkpoint", get(latest_checkpoint))
        .fallback(not_found)
        .with_state(witness)
}

/// Serves the witness on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
///
/// # Errors
///
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    witness: Arc<Witness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(witness)).with_graceful_shutdown(shutdown).await
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let id = RequestId::generate(u64::try_from(now_ms).unwrap_or(u64::MAX)).to_string();
    let body = serde_json::json!({ "error": code, "message": message, "request_id": id });
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: this witness serves POST /add-checkpoint",
    )
}

async fn method_not_allowed() -> Response {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "add-checkpoint takes POST only",
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn latest_checkpoint(State(witness): State<Arc<Witness>>, Path(origin_hash): Path<String>) -> Response {
    match witness.latest_note(&origin_hash).await {
        Some(note) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "this witness has cosigned no checkpoint of a log with this origin hash",
        ),
    }
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, request: Request) -> Response {
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(request.into_body())).await {
        Ok(Ok(body)) => body,
        Ok(Err(response)) => return response,
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive in time",
            );
        }
    };
    match witness.add_checkpoint(&body).await {
        Ok(lines) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], lines).into_response(),
        Err(AddError::Conflict { current, .. }) => {
            (StatusCode::CONFLICT, [(header::CONTENT_TYPE, TLOG_SIZE_CONTENT_TYPE)], format!("{current}\n"))
                .into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(error = %e, "add-checkpoint failed");
            }
            error_response(status, e.code(), &e.to_string())
        }
    }
}

async fn read_body(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, MAX_REQUEST_BYTES).await.map_err(|_| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than 64 KiB or was cut off",
        )
    })
}
