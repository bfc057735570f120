//! `Idempotency-Key` on the POSTs that create keys (create, rotate, revoke-all).
//!
//! A retry with the same admin key, the same `Idempotency-Key` and the same request (method,
//! path, body) within 24 hours gets the original response replayed, byte for byte, with
//! `idempotent-replayed: true`, and creates nothing. The same `Idempotency-Key` with a
//! different request answers 409. A request still in flight answers 409 to its twin.
//!
//! The original response can contain a key's secret, so replays are kept **only in memory**
//! (zeroed when evicted) and never written to disk. What *is* durable is the fact that the
//! request was carried out: an `idempotency` event (hashes and the resulting key ids) is
//! appended in the same batch as the request's own events. So after a restart a retry is
//! still never carried out twice; it answers 409 with the key ids it produced, since the
//! secret cannot be shown again. Only successful (2xx) responses are kept; a failed request
//! can be retried.

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const TTL: Duration = Duration::from_secs(24 * 3600);
const CAPACITY: usize = 100_000;
const MAX_KEY_LEN: usize = 255;

enum Outcome {
    InFlight,
    Done { status: StatusCode, content_type: Option<HeaderValue>, body: Zeroizing<Vec<u8>> },
}

struct Entry {
    fingerprint: [u8; 32],
    stored_at: Instant,
    outcome: Outcome,
}

/// Replays of recent idempotent requests, keyed by (hash of the caller's credential, key).
#[derive(Default)]
pub struct IdempotencyCache {
    entries: Mutex<HashMap<([u8; 32], String), Entry>>,
}

impl IdempotencyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<([u8; 32], String), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn conflict(message: &str) -> Response {
    ApiError::new(ErrorCode::Conflict, message).into_response()
}

/// The middleware, layered on the idempotent routes only.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = request.headers().get("idempotency-key").cloned() else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
            .into_response();
        }
    };
    // Scope by the credential without keeping it: a hash of whatever authenticates the call.
    let mut credential = blake3::Hasher::new();
    for name in [header::AUTHORIZATION.as_str(), "x-api-key"] {
        if let Some(value) = request.headers().get(name) {
            credential.update(name.as_bytes()).update(b"\0").update(value.as_bytes()).update(b"\0");
        }
    }
    let scope = *credential.finalize().as_bytes();
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(ErrorCode::PayloadTooLarge, "the request body exceeds the limit")
                .into_response();
        }
    };
    let fingerprint = *blake3::Hasher::new()
        .update(parts.method.as_str().as_bytes())
        .update(b"\0")
        .update(parts.uri.path().as_bytes())
        .update(b"\0")
        .update(&bytes)
        .finalize()
        .as_bytes();
    let tag = keyledger_ledger::IdempotencyTag {
        id: *blake3::Hasher::new().update(&scope).update(key.as_bytes()).finalize().as_bytes(),
        fingerprint,
    };
    // A request carried out before (possibly by an earlier run of keyledger): never again.
    if let Some(done) = state.engine.idempotent_result(&tag.id)
        && !state.idempotency.lock().contains_key(&(scope, key.clone()))
    {
        if done.fingerprint != fingerprint {
            return conflict("this Idempotency-Key was used with a different request");
        }
        let key_ids: Vec<String> = done.key_ids.iter().map(ToString::to_string).collect();
        return ApiError::new(
            ErrorCode::Conflict,
            "this request was already carried out under its Idempotency-Key; a secret is shown only once, so the original answer cannot be replayed",
        )
        .with_extra(serde_json::json!({ "key_ids": key_ids }))
        .into_response();
    }
    let id = (scope, key);
    {
        let mut entries = state.idempotency.lock();
        let now = Instant::now();
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now.duration_since(e.stored_at) < TTL);
        }
        match entries.get(&id) {
            Some(entry) if now.duration_since(entry.stored_at) >= TTL => {
                entries.remove(&id);
            }
            Some(entry) if entry.fingerprint != fingerprint => {
                return conflict("this Idempotency-Key was used with a different request");
            }
            Some(Entry { outcome: Outcome::InFlight, .. }) => {
                return conflict("a request with this Idempotency-Key is still being processed");
            }
            Some(Entry { outcome: Outcome::Done { status, content_type, body }, .. }) => {
                let mut response = Response::new(Body::from(body.to_vec()));
                *response.status_mut() = *status;
                if let Some(content_type) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
                }
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            None => {}
        }
        if entries.len() >= CAPACITY {
            return ApiError::new(ErrorCode::Unavailable, "too many idempotent requests in flight")
                .into_response();
        }
        entries.insert(id.clone(), Entry { fingerprint, stored_at: now, outcome: Outcome::InFlight });
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(tag);
    let response = next.run(request).await;
    if !response.status().is_success() {
        state.idempotency.lock().remove(&id);
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => Zeroizing::new(body.to_vec()),
        Err(_) => {
            state.idempotency.lock().remove(&id);
            return ApiError::new(ErrorCode::Internal, "internal error").into_response();
        }
    };
    let stored = Outcome::Done {
        status: parts.status,
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        body: body.clone(),
    };
    if let Some(entry) = state.idempotency.lock().get_mut(&id) {
        entry.outcome = stored;
        entry.stored_at = Instant::now();
    }
    Response::from_parts(parts, Body::from(body.to_vec()))
}
