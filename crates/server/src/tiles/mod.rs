//! The C2SP tlog-tiles read API (docs/api.md, "Tiles"): `/checkpoint`, hash tiles
//! `/tile/<L>/<N>[.p/<W>]` and entry bundles `/tile/entries/<N>[.p/<W>]`, so standard
//! transparency-log clients, monitors and witnesses can mirror the log and compute any proof
//! themselves.
//!
//! Guarantees:
//! - Only tiles of the tree of the latest signed checkpoint are served (the tree a client can
//!   anchor on): every full tile within it, and each partial tile only with the width that
//!   size implies. Anything else is 404, so a served tile never changes: full tiles are
//!   cached as immutable, partial tiles and the checkpoint only for a few seconds.
//! - Hash tiles and the checkpoint need an admin key holding `ledger:audit:read` unless the
//!   server runs with `--public-log`. Entry bundles hold every workspace's events, so they
//!   always need `ledger:audit:read` over all workspaces (`resources` empty).
//! - An entry is the event's stored bytes (`0x01 ‖ postcard`, docs/log-format.md) behind a
//!   big-endian uint16 length. An event longer than 65,535 bytes cannot be written that way:
//!   the bundle holding it answers 404 `not_found` naming the event, never a truncated or
//!   mis-framed bundle (its hash tiles are still served, and the event is still in exports).

pub mod path;

use crate::error::{ApiError, ErrorCode};
use crate::{AppState, auth};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use keyledger_log::checkpoint::StoredCheckpoint;
use path::{PathError, TILE_WIDTH, TileKind, TilePath};

/// Lifetime of a full tile: a year, and `immutable` (its bytes can never change).
const FULL_TILE_CACHE: &str = "max-age=31536000, immutable";
/// Lifetime of the checkpoint and of partial tiles, superseded as the log grows.
const SHORT_CACHE: &str = "max-age=5";
/// The tile levels with any node: tree level `8·L` must be below 64.
const TREE_LEVELS_PER_TILE: u32 = 8;

/// The latest checkpoint for tlog clients (documentation of `/checkpoint`).
#[utoipa::path(
    get,
    path = "/checkpoint",
    operation_id = "getTlogCheckpoint",
    summary = "Get the latest checkpoint (C2SP tlog-tiles)",
    tag = "integrity",
    security((), ("bearer" = []), ("x_api_key" = [])),
    description = "The latest signed checkpoint note, as C2SP tlog-tiles serves it: the same text as `note` of `GET /v1/log/checkpoint`. Needs `ledger:audit:read` unless the server runs with `--public-log`. Cached for 5 seconds (`private` unless public).",
    responses(
        (status = 200, description = "The C2SP signed note", content_type = "text/plain; charset=utf-8", body = String),
        crate::schema::errors::AdminErrors,
        (status = 404, description = "no checkpoint signed yet", body = crate::schema::ErrorBody)
    )
)]
pub fn checkpoint_doc() {}

/// A hash tile or an entry bundle (documentation of `/tile/{path}`).
#[utoipa::path(
    get,
    path = "/tile/{path}",
    operation_id = "getTlogTile",
    summary = "Get a tile or an entry bundle (C2SP tlog-tiles)",
    tag = "integrity",
    security((), ("bearer" = []), ("x_api_key" = [])),
    description = "C2SP tlog-tiles resources of the tree of the latest checkpoint. `<L>/<N>[.p/<W>]` is a hash tile: the 32-byte hashes of tree level 8·L, nodes 256·N to 256·N+W-1 (W = 256 when full); `entries/<N>[.p/<W>]` is an entry bundle: each event's stored bytes behind a big-endian uint16 length. N is written in 3-digit groups, all but the last prefixed by `x` (`x001/x234/067`). Partial tiles exist only at the width the checkpoint's size implies. Hash tiles need `ledger:audit:read` unless the server runs with `--public-log`; entry bundles always need `ledger:audit:read` over all workspaces. Full tiles are cached for a year as immutable, partial ones for 5 seconds.",
    params(("path" = String, Path, description = "`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`")),
    responses(
        (status = 200, description = "The tile's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "not a canonical tile path (invalid_request)", body = crate::schema::ErrorBody),
        crate::schema::errors::TileAdminErrors,
        (status = 404, description = "no such tile in the tree of the latest checkpoint, or an entry bundle holding an event longer than 65,535 bytes (not_found)", body = crate::schema::ErrorBody)
    )
)]
pub fn tile_doc() {}

/// `GET /checkpoint`: the latest signed checkpoint note, as `GET /v1/log/checkpoint`'s `note`.
pub async fn checkpoint(State(state): State<AppState>, request: Request) -> Response {
    let public = state.config.public_log;
    match authorize(&state, request, public, false).await {
        Ok(()) => {}
        Err(refusal) => return refusal,
    }
    // With witnesses, the note carries their cosignature lines (docs/witness.md).
    match state.engine.latest_checkpoint_note() {
        Some(note) => answer(note.into_bytes(), "text/plain; charset=utf-8", public, SHORT_CACHE),
        None => ApiError::not_found("no checkpoint has been signed yet").into_response(),
    }
}

/// `GET /tile/{*path}`: a hash tile or an entry bundle.
pub async fn tile(State(state): State<AppState>, request: Request) -> Response {
    // The raw path: a percent-encoded spelling is not the canonical one.
    let raw = request.uri().path().strip_prefix("/tile/").unwrap_or_default().to_owned();
    let tile = TilePath::parse(&raw);
    let entries = matches!(tile, Ok(TilePath { kind: TileKind::Entries, .. }));
    let public = state.config.public_log && !entries;
    if let Err(refusal) = authorize(&state, request, public, entries).await {
        return refusal;
    }
    let result = match tile {
        Ok(tile) => serve(&state, tile),
        Err(error) => Err(bad_path(&raw, error)),
    };
    match result {
        Ok((bytes, full)) => {
            let lifetime = if full { FULL_TILE_CACHE } else { SHORT_CACHE };
            answer(bytes, "application/octet-stream", public, lifetime)
        }
        Err(error) => error.into_response(),
    }
}

/// Lets the request through if `public`; otherwise requires an admin key holding
/// `ledger:audit:read`, over every workspace if `all_workspaces`.
async fn authorize(
    state: &AppState,
    request: Request,
    public: bool,
    all_workspaces: bool,
) -> Result<(), Response> {
    if public {
        return Ok(());
    }
    let (mut parts, _) = request.into_parts();
    let admin = auth::authenticate(&mut parts, state).await?;
    admin.require(auth::scope::AUDIT_READ).map_err(IntoResponse::into_response)?;
    if all_workspaces && !admin.key.resources.is_empty() {
        return Err(ApiError::forbidden(
            "entry bundles hold every workspace's events: this admin key is limited to some workspaces",
        )
        .into_response());
    }
    Ok(())
}

fn latest(state: &AppState) -> Result<StoredCheckpoint, ApiError> {
    state
        .engine
        .log()
        .latest_checkpoint()
        .ok_or_else(|| ApiError::not_found("no checkpoint has been signed yet"))
}

fn bad_path(raw: &str, error: PathError) -> ApiError {
    // The path is echoed only when short and plain; it carries no secret either way.
    let shown = if raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_graphic()) { raw } else { "…" };
    ApiError::new(ErrorCode::InvalidRequest, format!("`path` tile/{shown} is not a tile path: {error}"))
}

/// The tile's bytes and whether it is full, if the tree of the latest checkpoint holds it.
fn serve(state: &AppState, tile: TilePath) -> Result<(Vec<u8>, bool), ApiError> {
    let checkpoint = latest(state)?;
    let level = match tile.kind {
        TileKind::Hashes { level } => u32::from(level) * TREE_LEVELS_PER_TILE,
        TileKind::Entries => 0,
    };
    // Nodes of that tree level in the checkpointed tree: full tiles, then the partial width.
    let nodes = checkpoint.size.checked_shr(level).unwrap_or(0);
    let (full_tiles, partial) = (nodes / u64::from(TILE_WIDTH), (nodes % u64::from(TILE_WIDTH)) as u16);
    let exists = if tile.is_full() {
        tile.index < full_tiles
    } else {
        tile.index == full_tiles && tile.width == partial
    };
    if !exists {
        return Err(ApiError::not_found(format!(
            "tile/{tile} is not a tile of the tree of the latest checkpoint ({} events)",
            checkpoint.size
        )));
    }
    let start = tile.index * u64::from(TILE_WIDTH);
    let bytes = match tile.kind {
        TileKind::Hashes { .. } => hash_tile(state, level, start, tile.width)?,
        TileKind::Entries => entry_bundle(state, start, tile.width)?,
    };
    Ok((bytes, tile.is_full()))
}

fn hash_tile(state: &AppState, level: u32, start: u64, width: u16) -> Result<Vec<u8>, ApiError> {
    let mut hashes = vec![[0u8; 32]; usize::from(width)];
    state.engine.log().tree().nodes(level, start, &mut hashes).map_err(|e| {
        tracing::error!(error = %e, "reading a tile's hashes failed");
        ApiError::new(ErrorCode::Internal, "the tile could not be read")
    })?;
    Ok(hashes.concat())
}

fn entry_bundle(state: &AppState, start: u64, width: u16) -> Result<Vec<u8>, ApiError> {
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "reading an entry bundle failed");
        ApiError::new(ErrorCode::Internal, "the entry bundle could not be read")
    };
    let log = state.engine.log();
    let mut bundle = Vec::new();
    let mut records = log.records_from(start);
    for seq in start..start + u64::from(width) {
        let (_, bytes) = match records.next() {
            Some(record) => record.map_err(|e| failed(&e))?,
            None => return Err(failed(&format!("event {seq} is missing"))),
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Err(ApiError::not_found(format!(
                "event {seq} is {} bytes, more than the 65,535 an entry bundle can frame; \
                 read it from GET /v1/export",
                bytes.len()
            )));
        };
        bundle.extend_from_slice(&len.to_be_bytes());
        bundle.extend_from_slice(&bytes);
    }
    Ok(bundle)
}

fn answer(bytes: Vec<u8>, content_type: &'static str, public: bool, lifetime: &str) -> Response {
    let visibility = if public { "public" } else { "private" };
    let cache = HeaderValue::from_str(&format!("{visibility}, {lifetime}"))
        .unwrap_or(HeaderValue::from_static("no-store"));
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (header::CACHE_CONTROL, cache)], bytes)
        .into_response()
}
