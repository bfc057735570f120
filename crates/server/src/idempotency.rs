//! `Idempotency-Key` on the POSTs that create keys (create, rotate, revoke-all), as
//! docs/api.md ("Idempotency") describes.
//!
//! A retry by the same admin key (the same key id, in whichever header form), with the same
//! `Idempotency-Key` and the same request (method, path, body) within 24 hours gets the
//! original response replayed, byte for byte, with `idempotent-replayed: true`, and creates
//! nothing. The same `Idempotency-Key` with a different request answers 409. A request still
//! in flight answers 409 to its twin.
//!
//! # A replay is decided after authentication and authorisation
//!
//! The original response can hold a secret, so it is served again only to a caller who could
//! carry the request out now. The middleware authenticates the key first (a key that no longer
//! authenticates gets exactly the answer it would get without the header: 401 for revoked,
//! disabled or expired keys, 429 when its source is throttled), and a replay runs the handler
//! itself, under the request's idempotency tag: the handler makes its usual scope and
//! workspace checks (403, 404), and the writer re-checks the admin key and then refuses the
//! request as already carried out (`check_idempotency`, 409). Only that refusal, for a request
//! recorded with this very fingerprint, is turned into the stored response. Whatever else the
//! handler answers is the answer, so a replay can never do more than a fresh request could.
//!
//! # Memory only, and bounded
//!
//! Replays are kept **only in memory** (zeroed when dropped) and never written to disk. What
//! *is* durable is the fact that the request was carried out: an `idempotency` event (hashes
//! and the resulting key ids) is appended in the same batch as the request's own events. So
//! after a restart, or when the response was not kept, a retry is still never carried out
//! twice; it answers 409 with the key ids it produced, since the secret cannot be shown again.
//! Only successful (2xx) responses of at most [`MAX_REPLAY_BYTES`] are kept, at most
//! [`CAPACITY`] entries and [`MAX_CACHED_BYTES`] of bodies in all; a response that does not
//! fit is answered but not kept. A failed request can be retried.

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_core::KeyId;
use keyledger_ledger::IdempotencyTag;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const TTL: Duration = Duration::from_secs(24 * 3600);
/// Most entries (in flight or done) kept at once.
pub const CAPACITY: usize = 100_000;
/// Largest response kept for replay, in bytes (a create answer is about 1 KiB, a rotate's
/// twice that; a revoke-all of many keys may be larger, and is then answered but not kept).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;
/// Most bytes of response bodies kept in all.
pub const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;
const MAX_KEY_LEN: usize = 255;

#[derive(Clone)]
struct Stored {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Zeroizing<Vec<u8>>,
}

enum Outcome {
    InFlight,
    Done(Stored),
}

struct Entry {
    fingerprint: [u8; 32],
    stored_at: Instant,
    outcome: Outcome,
    /// Which request registered it (see [`InFlightGuard`]).
    generation: u64,
}

/// The caller's admin key id and its `Idempotency-Key`.
type EntryId = (KeyId, String);

#[derive(Default)]
struct Entries {
    map: HashMap<EntryId, Entry>,
    /// Sum of the stored bodies' lengths.
    bytes: usize,
    /// The generation of the last entry registered.
    generations: u64,
}

impl Entries {
    fn remove(&mut self, id: &EntryId) {
        if let Some(Entry { outcome: Outcome::Done(stored), .. }) = self.map.remove(id) {
            self.bytes -= stored.body.len();
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, entry| {
            let keep = now.duration_since(entry.stored_at) < TTL;
            if let (false, Outcome::Done(stored)) = (keep, &entry.outcome) {
                freed += stored.body.len();
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Registers request `id` as in flight, under a new generation, which it returns.
    fn register(&mut self, id: &EntryId, fingerprint: [u8; 32], now: Instant) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.map.insert(
            id.clone(),
            Entry { fingerprint, stored_at: now, outcome: Outcome::InFlight, generation },
        );
        generation
    }

    /// Turns the in-flight entry `id` into a replay of `stored`, if it fits; else forgets it.
    fn complete(&mut self, id: &EntryId, stored: Stored, now: Instant) {
        let len = stored.body.len();
        if self.bytes + len > MAX_CACHED_BYTES {
            self.forget_expired(now);
        }
        let fits = self.bytes + len <= MAX_CACHED_BYTES;
        match self.map.get_mut(id) {
            Some(entry) if fits && matches!(entry.outcome, Outcome::InFlight) => {
                self.bytes += len;
                entry.outcome = Outcome::Done(stored);
                entry.stored_at = now;
            }
            _ => self.remove(id),
        }
    }
}

/// Replays of recent idempotent requests, keyed by (admin key id, `Idempotency-Key`).
#[derive(Default)]
pub struct IdempotencyCache {
    entries: Mutex<Entries>,
}

impl IdempotencyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries kept (in flight or done).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of response bodies kept.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn conflict(message: &str) -> Response {
    ApiError::new(ErrorCode::Conflict, message).into_response()
}

/// What the cache says about a request before it runs.
enum Before {
    /// Not seen: carry it out (an in-flight entry of this generation now stands for it).
    Fresh(u64),
    /// Done before with this fingerprint: run the handler's checks, then replay this.
    Replay(Stored),
    /// Answer this at once.
    Answer(Response),
}

/// The import route takes larger bodies than the others (docs/import.md).
fn idempotent_body_limit(state: &AppState, path: &str) -> usize {
    if path.ends_with("/keys/import") {
        crate::import::IMPORT_BODY_LIMIT.max(state.config.body_limit)
    } else {
        state.config.body_limit
    }
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
    let (mut parts, body) = request.into_parts();
    // Who asks, before anything is looked up: a key that does not authenticate (or a
    // throttled source) gets the same answer as without the header.
    let admin = match crate::auth::authenticate(&mut parts, &state).await {
        Ok(admin) => admin,
        Err(refusal) => return refusal,
    };
    let bytes = match axum::body::to_bytes(body, idempotent_body_limit(&state, parts.uri.path())).await {
        Ok(bytes) => bytes,
        Err(error) => return crate::extract::body_error(&error).into_response(),
    };
    let fingerprint = *blake3::Hasher::new()
        .update(parts.method.as_str().as_bytes())
        .update(b"\0")
        .update(parts.uri.path().as_bytes())
        .update(b"\0")
        .update(&bytes)
        .finalize()
        .as_bytes();
    let key_id = admin.key.key_id;
    let tag = IdempotencyTag {
        id: *blake3::Hasher::new()
            .update(b"keyledger idempotency by key id\0")
            .update(key_id.as_bytes())
            .update(key.as_bytes())
            .finalize()
            .as_bytes(),
        fingerprint,
    };
    let id = (key_id, key);
    let before = look_up(&state, &id, fingerprint);
    let (before, _in_flight) = match before {
        Before::Answer(response) => return response,
        Before::Fresh(generation) => {
            (None, Some(InFlightGuard { cache: state.idempotency.clone(), id: id.clone(), generation }))
        }
        Before::Replay(stored) => (Some(stored), None),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(tag);
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::CONFLICT && already_carried_out(&state, &tag) {
        // The handler's checks passed and the writer refused the request as done: the
        // caller may have what it got the first time.
        return match before {
            Some(stored) => replay(&stored),
            None => carried_out_without_replay(&state, &tag),
        };
    }
    if !status.is_success() {
        return response;
    }
    // Carried out now (a new request, or a replay whose record the writer had forgotten).
    keep(&state, &id, fingerprint, before.is_some(), response).await
}

/// Removes a request's in-flight entry when the request ends without completing it, however
/// it ends: a handler's error, or the request's future dropped (the request timeout fired,
/// the client went away) while the writer may still carry the command out. A retry then
/// finds no entry, asks the writer, and gets the 409 naming what was done (or does it),
/// instead of "still being processed" until the entry expires.
/// Only the entry this request registered (its generation) is removed: once the request
/// removed it itself, a twin may have registered its own under the same id.
struct InFlightGuard {
    cache: Arc<IdempotencyCache>,
    id: EntryId,
    generation: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut entries = self.cache.lock();
        let ours =
            |entry: &Entry| matches!(entry.outcome, Outcome::InFlight) && entry.generation == self.generation;
        if entries.map.get(&self.id).is_some_and(ours) {
            entries.remove(&self.id);
        }
    }
}

/// The cache's view of request `id` with `fingerprint`; registers it as in flight if new.
fn look_up(state: &AppState, id: &EntryId, fingerprint: [u8; 32]) -> Before {
    let mut entries = state.idempotency.lock();
    let now = Instant::now();
    if entries.map.len() >= CAPACITY {
        entries.forget_expired(now);
    }
    match entries.map.get(id) {
        Some(entry) if now.duration_since(entry.stored_at) >= TTL => entries.remove(id),
        Some(entry) if entry.fingerprint != fingerprint => {
            return Before::Answer(conflict("this Idempotency-Key was used with a different request"));
        }
        Some(Entry { outcome: Outcome::InFlight, .. }) => {
            return Before::Answer(conflict("a request with this Idempotency-Key is still being processed"));
        }
        Some(Entry { outcome: Outcome::Done(stored), .. }) => return Before::Replay(stored.clone()),
        None => {}
    }
    if entries.map.len() >= CAPACITY {
        return Before::Answer(
            ApiError::new(ErrorCode::Unavailable, "too many idempotent requests in flight").into_response(),
        );
    }
    Before::Fresh(entries.register(id, fingerprint, now))
}

/// Whether the log records the request of `tag` as carried out, with this very request.
fn already_carried_out(state: &AppState, tag: &IdempotencyTag) -> bool {
    state.engine.idempotent_result(&tag.id).is_some_and(|done| done.fingerprint == tag.fingerprint)
}

fn replay(stored: &Stored) -> Response {
    let mut response = Response::new(Body::from(stored.body.to_vec()));
    *response.status_mut() = stored.status;
    if let Some(content_type) = &stored.content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// 409 naming the key ids a request produced, when its response is not (or no longer) kept.
fn carried_out_without_replay(state: &AppState, tag: &IdempotencyTag) -> Response {
    let key_ids: Vec<String> = state
        .engine
        .idempotent_result(&tag.id)
        .map(|done| done.key_ids.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    ApiError::new(
        ErrorCode::Conflict,
        "this request was already carried out under its Idempotency-Key; a secret is shown only once, so the original answer cannot be replayed",
    )
    .with_fields(crate::schema::ErrorExtra { key_ids: Some(key_ids), ..Default::default() })
    .into_response()
}

/// Answers a successful `response` and keeps it for replays if it is small enough. A
/// response of unknown or too large a size is passed on as it is, never buffered.
async fn keep(
    state: &AppState,
    id: &EntryId,
    fingerprint: [u8; 32],
    was_replay: bool,
    response: Response,
) -> Response {
    let fits = response.body().size_hint().upper().is_some_and(|n| n <= MAX_REPLAY_BYTES as u64);
    if !fits {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REPLAY_BYTES).await {
        Ok(body) => Zeroizing::new(body.to_vec()),
        Err(_) => {
            if was_replay {
                // The stored answer is of an earlier carrying out than the one just done.
                state.idempotency.lock().remove(id);
            }
            return ApiError::new(ErrorCode::Internal, "internal error").into_response();
        }
    };
    let stored =
        Stored { status: parts.status, content_type: parts.headers.get(header::CONTENT_TYPE).cloned(), body };
    let answer = Response::from_parts(parts, Body::from(stored.body.to_vec()));
    let now = Instant::now();
    let mut entries = state.idempotency.lock();
    if was_replay {
        // The earlier entry stood for a request the writer no longer remembers.
        entries.remove(id);
        entries.register(id, fingerprint, now);
    }
    entries.complete(id, stored, now);
    answer
}

#[cfg(test)]
mod tests {
    use super::MAX_REPLAY_BYTES;

    /// A request's guard removes only the in-flight entry it registered: not a twin's,
    /// registered under the same id after the request removed its own.
    #[test]
    fn a_guard_leaves_a_twins_in_flight_entry_alone() {
        use super::{Entry, IdempotencyCache, InFlightGuard, Outcome};
        let cache = Arc::new(IdempotencyCache::default());
        let id = (keyledger_core::KeyId::from_bytes([1; 16]), "retry-1".to_owned());
        let in_flight = |generation| Entry {
            fingerprint: [0; 32],
            stored_at: std::time::Instant::now(),
            outcome: Outcome::InFlight,
            generation,
        };
        cache.lock().map.insert(id.clone(), in_flight(2));
        drop(InFlightGuard { cache: cache.clone(), id: id.clone(), generation: 1 });
        assert_eq!(cache.len(), 1, "the twin's entry stays");
        drop(InFlightGuard { cache: cache.clone(), id: id.clone(), generation: 2 });
        assert_eq!(cache.len(), 0, "its own is removed");
    }
    use crate::{AppState, ServerConfig, router};
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use keyledger_core::{Actor, Environment, RequestId, Timestamp};
    use keyledger_ledger::{Caller, Engine, EngineOptions, Expiry, KeySpec};
    use serde_json::Value;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tower::ServiceExt;

    /// A response larger than [`MAX_REPLAY_BYTES`] is answered in full but not kept: the
    /// cache holds nothing for it, and a retry is not carried out again but answers 409
    /// naming the keys the request revoked (docs/api.md, "Idempotency").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_response_over_the_replay_bound_is_answered_but_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let init = {
            let path = path.clone();
            std::thread::spawn(move || Engine::init(&path, EngineOptions::default()).unwrap()).join().unwrap()
        };
        let engine = Arc::new(Engine::open(&path, EngineOptions::default()).unwrap());
        // Each revoked key id costs about 33 bytes of the answer: 2,100 of them exceed 64 KiB.
        let mut creates = tokio::task::JoinSet::new();
        for _ in 0..2_100 {
            let (engine, admin) = (engine.clone(), init.admin_key_id);
            creates.spawn(async move {
                let caller = Caller {
                    actor: Actor::Admin(admin),
                    request_id: RequestId::generate(Timestamp::now().millis()),
                };
                let spec = KeySpec {
                    name: "svc".into(),
                    scopes: vec![],
                    resources: vec![],
                    environment: Environment::Live,
                    owner: None,
                    metadata: "{}".into(),
                    expiry: Expiry::Never,
                    credits: None,
                };
                engine.create(caller, "acme".parse().unwrap(), spec).await.map(drop)
            });
        }
        while let Some(created) = creates.join_next().await {
            created.unwrap().unwrap();
        }
        let state = AppState::new(engine, ServerConfig::default());
        let app = router(state.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
        let auth = format!("Bearer {}", init.admin_key.expose());
        let call = |app: axum::Router| {
            let auth = auth.clone();
            async move {
                let request = Request::builder()
                    .method("POST")
                    .uri("/v1/workspaces/acme/keys/revoke-all")
                    .header("authorization", auth)
                    .header("idempotency-key", "revoke-everything")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"reason": "leak"}"#))
                    .unwrap();
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (status, bytes.len(), serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };

        let (status, len, first) = call(app.clone()).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert!(len > MAX_REPLAY_BYTES, "the answer ({len} bytes) must exceed the bound");
        assert_eq!(first["revoked"], 2_100);
        assert!(state.idempotency.is_empty(), "a response over the bound is not kept");
        assert_eq!(state.idempotency.bytes(), 0);

        let (status, _, retry) = call(app).await;
        assert_eq!(status, StatusCode::CONFLICT, "{retry}");
        assert_eq!(retry["error"], "conflict");
        assert!(retry["message"].as_str().unwrap().contains("already carried out"), "{retry}");
        assert_eq!(retry["key_ids"], first["key_ids"], "the retry names what the request revoked");
        assert!(state.idempotency.is_empty());
    }
}
