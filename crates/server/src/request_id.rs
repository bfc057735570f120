//! Gives every request keyledger's own `req_…` id, returns it in the `request-id` header,
//! and writes every error body (see [`crate::error`]).
//!
//! A caller's `X-Request-Id` is never used as keyledger's id; verification keeps it as
//! context (the gateway's request id).
//!
//! It also writes the access log: one line per request at `info`, except a successful
//! verification (2xx on `/v1/verify…`), whose line is at `debug`. Each of those is already
//! recorded as a `used` event (with keyledger's request id) in the event log and counted in
//! `/metrics`, and at gateway rates formatting and writing the line cost more than the
//! verification itself. `--log-level info,keyledger_server::request_id=debug` brings it
//! back.
//!
//! Neither the log line nor an error body written here repeats a path segment that holds a
//! secret ([`crate::redact`]): people paste secrets where key ids belong.

use crate::error::{ApiError, from_status};
use crate::redact;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_core::{RequestId, Timestamp};
use std::time::Instant;

/// The answer's `request-id` header.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("request-id");

/// keyledger's id of the current request, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct CurrentRequest(pub RequestId);

/// The outermost layer. It also applies the header size cap
/// ([`crate::throttle::header_size_refusal`]) before anything else runs: one layer instead
/// of two on every request.
pub async fn middleware(State(max_header_bytes): State<usize>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = begin(&mut request);
    let method = request.method().clone();
    let uri = request.uri().clone();
    let mut response = match crate::throttle::header_size_refusal(&request, max_header_bytes) {
        None => next.run(request).await,
        Some(refused) => refused,
    };
    let route = response.extensions_mut().remove::<crate::metrics::RouteTemplate>();
    let route = route.as_ref().map_or("unmatched", |r| r.0.as_str());
    finish(response, id, &method, uri.path(), route, started, crate::metrics::record_request)
}

/// Gives `request` a fresh keyledger request id (in its extensions) and returns it.
pub(crate) fn begin<B>(request: &mut axum::http::Request<B>) -> RequestId {
    let id = RequestId::generate(Timestamp::now().millis());
    request.extensions_mut().insert(CurrentRequest(id));
    id
}

/// What the layer does once the handler answered, shared with the lean path of the
/// gateways' routes (`crate::fast_path`): the error body of docs/api.md for any error answer,
/// the `request-id` header, the request metrics (through `record`) and the access line.
pub(crate) fn finish(
    mut response: Response,
    id: RequestId,
    method: &axum::http::Method,
    path: &str,
    route: &str,
    started: Instant,
    record: impl FnOnce(&str, &axum::http::Method, u16, f64),
) -> Response {
    let id_text = id.text();
    let error = response.extensions_mut().remove::<ApiError>().or_else(|| {
        let status = response.status();
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        (status.is_client_error() || status.is_server_error()).then(|| {
            if is_json {
                None
            } else {
                Some(from_status(status, redact::echo(method.as_str()), &redact::path(path)))
            }
        })?
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
    // The text's own buffer becomes the header value (`from_str` would copy it).
    if let Ok(value) = HeaderValue::from_maybe_shared(axum::body::Bytes::from(id_text)) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    record(route, method, status.as_u16(), elapsed.as_secs_f64());
    macro_rules! access_line {
        ($level:ident) => {
            tracing::$level!(
                request_id = %id,
                route = %route,
                method = %redact::echo(method.as_str()),
                path = %redact::path(path),
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request"
            )
        };
    }
    if status.is_success() && quiet_when_successful(route) {
        access_line!(debug);
    } else {
        access_line!(info);
    }
    response
}

/// Routes whose successful requests log their access line at `debug`: the gateways'
/// verifications (each already a `used` event) and `/healthz` (liveness probes, every few
/// seconds from every balancer). See docs/operations.md, Logs.
fn quiet_when_successful(route: &str) -> bool {
    route.starts_with("/v1/verify") || route == "/healthz"
}
