//! The producer of compliance reports (docs/compliance.md).
//!
//! [`produce`] signs (if needed) a checkpoint covering everything appended so far, folds
//! the log's events below it with [`keyledger_verify::report::ComplianceFold`] — the very
//! fold `keyledger report verify` runs on an export or the entry bundles — and signs the
//! report with the log's key. It streams the events once, from seq 0 to the first event at
//! or after the period's end: memory is bounded by the number of keys and days, not events.
//! [`html::render`] turns the signed report into the one self-contained HTML page people
//! read, embedding the signed JSON so that the page itself can be verified.

pub mod html;

use crate::engine::Engine;
use crate::error::LedgerError;
use keyledger_core::{Timestamp, WorkspaceId};
use keyledger_log::checkpoint::StoredCheckpoint;
use keyledger_log::{LogReader, OpenError};
use keyledger_verify::note::NoteSigner;
use keyledger_verify::report::{
    Anchor, ComplianceFold, Parameters, ReportError as FoldError, report_object, sign_report,
};
use serde_json::{Map, Value};

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The parameters (period, threshold, workspaces) are not acceptable.
    #[error("{0}")]
    Parameters(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading the log: {0}")]
    Log(#[from] OpenError),
    #[error("folding the log: {0}")]
    Fold(String),
    #[error("the report's producer stopped")]
    Stopped,
}

impl From<FoldError> for ReportError {
    fn from(error: FoldError) -> Self {
        match error {
            FoldError::Parameters(message) => ReportError::Parameters(message),
            other => ReportError::Fold(other.to_string()),
        }
    }
}

/// What to report on.
#[derive(Clone, Debug)]
pub struct ReportRequest {
    /// `None`: the whole ledger.
    pub workspaces: Option<Vec<WorkspaceId>>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub unused_days: u32,
}

/// Produces the signed report (as a JSON object) for `request`, anchored to a checkpoint
/// covering every event appended so far; with witnesses, one they cosigned, waited for
/// within a bound ([`Engine::witnessed_checkpoint_now`]), so the report's checkpoint note
/// carries their cosignatures.
///
/// # Errors
///
/// [`ReportError::Parameters`] for a period or threshold out of bounds; the engine's and the
/// log's errors otherwise.
pub async fn produce(engine: &Engine, request: ReportRequest) -> Result<Map<String, Value>, ReportError> {
    let params =
        Parameters::new(request.workspaces, request.from, request.to, Timestamp::now(), request.unused_days)?;
    let anchor = engine.witnessed_checkpoint_now().await?;
    let log = engine.log().clone();
    let signer = engine.signer().clone();
    tokio::task::spawn_blocking(move || compute(&log, &signer, &anchor, params))
        .await
        .map_err(|_| ReportError::Stopped)?
}

/// The signed report of `params` over the events of `log` below `anchor`.
///
/// # Errors
///
/// The log's read errors.
pub fn compute(
    log: &LogReader,
    signer: &NoteSigner,
    anchor: &StoredCheckpoint,
    params: Parameters,
) -> Result<Map<String, Value>, ReportError> {
    // The log is in time order: nothing at or after this seq can be in the period.
    let end = log.seq_at_or_after(params.to)?.min(anchor.size);
    let mut fold = ComplianceFold::new(params.clone());
    for event in log.events_from(0) {
        let event = event?;
        if event.seq >= end {
            break;
        }
        fold.push(&event)?;
    }
    let origin = log.verifier().name().unwrap_or_default().to_owned();
    let anchor = Anchor {
        size: anchor.size,
        root: anchor.root,
        tree_hash: log.tree_hash(),
        note: anchor.note.clone(),
    };
    let mut report = report_object(&origin, &params, &anchor, fold.finish());
    sign_report(&mut report, signer);
    Ok(report)
}
