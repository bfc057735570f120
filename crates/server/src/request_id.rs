//! Gives every request keyledger's own `req_…` id, returns it in the `request-id` header,
//! and writes every error body (see [`crate::error`]).
//!
//! A caller's `X-Request-Id` is never used as keyledger's id; verification keeps it as
//! context (the gateway's request id).

use crate::error::{ApiError, from_status};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_core::{RequestId, Timestamp};
use std::time::Instant;

/// keyledger's id of the current request, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct CurrentRequest(pub RequestId);

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = RequestId::generate(Timestamp::now().millis());
    request.extensions_mut().insert(CurrentRequest(id));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let id_text = id.to_string();
    let route = response
        .extensions()
        .get::<crate::metrics::RouteTemplate>()
        .map_or("unmatched", |r| r.0.as_str())
        .to_owned();
    let error = response.extensions_mut().remove::<ApiError>().or_else(|| {
        let status = response.status();
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (status.is_client_error() || status.is_server_error())
            .then(|| if is_json { None } else { Some(from_status(status, method.as_str(), &path)) })?
    });
    if let Some(error) = error {
        let headers = std::mem::take(response.headers_mut());
        response = (error.status, axum::Json(error.body(&id_text))).into_response();
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id_text) {
        response.headers_mut().insert("request-id", value);
    }
    crate::metrics::record_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::info!(
        request_id = %id_text,
        route = %route,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
