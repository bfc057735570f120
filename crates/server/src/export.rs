//! `GET /v1/export` (docs/api.md, "Export"; format in docs/export-format.md): a streamed,
//! signed JSONL export (or a flat CSV) of a range of the log.
//!
//! The export is produced by [`keyledger_ledger::export`] in a blocking task that writes
//! 64 KiB chunks into a bounded channel; the response body streams from that channel, so
//! memory stays constant whatever the range and a slow client slows the producer down. A
//! failure after the first byte aborts the body: the client gets a file without a
//! manifest, which no verifier accepts.

use crate::AppState;
use crate::auth::{Admin, scope};
use crate::error::{ApiError, ErrorCode};
use crate::extract::QueryPairs;
use crate::schema::{AdminErrors, ErrorBody, InvalidParameter};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keyledger_core::WorkspaceId;
use keyledger_ledger::export::{Bound, ExportError, ExportFormat, ExportPlan, ExportRequest};
use std::io;
use tokio::sync::mpsc;

/// Bytes per streamed chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the producer and the client.
const CHANNEL_DEPTH: usize = 8;

type Chunk = Result<Bytes, io::Error>;

/// A `Write` that sends full chunks into the response channel (blocking when it is full).
struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn parse<T: std::str::FromStr>(query: &QueryPairs, name: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    match query.get(name).map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| ApiError::invalid(name, e)),
    }
}

fn export_error(error: ExportError) -> ApiError {
    match error {
        ExportError::ConsistencyFromTooLarge { .. } => ApiError::invalid("consistency_from", error),
        ExportError::Ledger(error) => error.into(),
        other => {
            tracing::error!(error = %other, "export failed");
            ApiError::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// `GET /v1/export?from=&to=&workspace=&format=jsonl|csv&consistency_from=`
#[utoipa::path(
    get,
    path = "/v1/export",
    operation_id = "exportLog",
    summary = "Export the log",
    tag = "export",
    description = concat!(
        "A signed, streamed export (`ledger:export`): JSONL lines (event JSON + raw + leaf_hash) ",
        "ending with a signed manifest anchored to a checkpoint (docs/export-format.md), or flat ",
        "unsigned CSV. An admin key limited to some workspaces must pass `workspace`."
    ),
    params(
        ("from" = Option<String>, Query, description = "First event: a seq or an RFC 3339 time (inclusive)"),
        ("to" = Option<String>, Query, description = "End: a seq or an RFC 3339 time (exclusive)"),
        ("workspace" = Option<String>, Query, description = "Only this workspace (a filtered export: each line carries an inclusion proof)"),
        ("format" = Option<String>, Query, description = "jsonl (default) or csv"),
        ("consistency_from" = Option<u64>, Query, description = "Also prove the anchor extends the tree of this older size")
    ),
    responses(
        (status = 200, description = "The export, streamed: JSONL (the default) or, with `format=csv`, CSV", content((String = "application/x-ndjson"), (String = "text/csv"))),
        AdminErrors,
        InvalidParameter,
        (status = 404, description = "workspace not visible to the admin key (not_found)", body = ErrorBody),
        (status = 503, description = "no checkpoint can be signed (unavailable)", body = ErrorBody)
    )
)]
pub async fn export(
    State(state): State<AppState>,
    admin: Admin,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    admin.require(scope::EXPORT)?;
    query.only(&["from", "to", "workspace", "format", "consistency_from"])?;
    let workspace: Option<WorkspaceId> = parse(&query, "workspace")?;
    match &workspace {
        Some(ws) => admin.workspace(ws)?,
        None if !admin.key.resources.is_empty() => {
            return Err(ApiError::forbidden(
                "this admin key may only export the workspaces it holds: pass `workspace`",
            ));
        }
        None => {}
    }
    let request = ExportRequest {
        from: parse::<Bound>(&query, "from")?,
        to: parse::<Bound>(&query, "to")?,
        workspace,
        format: parse::<ExportFormat>(&query, "format")?.unwrap_or_default(),
        consistency_from: parse::<u64>(&query, "consistency_from")?,
    };
    let format = request.format;
    let plan = ExportPlan::prepare(&state.engine, request).await.map_err(export_error)?;
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) };
        if let Err(error) = plan.write(engine.log(), &mut writer) {
            tracing::warn!(%error, "export aborted");
            let _ = writer.tx.blocking_send(Err(io::Error::other(error.to_string())));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let extension = match format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Csv => "csv",
    };
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"keyledger-export.{extension}\"")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
