//! The projection half of `keyledger log verify`: the persisted projections must equal a
//! replay of the log.

use crate::datadir;
use crate::projection::load_state_read_only;
use crate::state::LedgerState;
use keyledger_core::decode_event;
use keyledger_log::segment::{SegmentLog, SegmentOptions};
use keyledger_log::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// Why the projections do not match the log.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionCheckError {
    #[error("the projections claim {applied} events but the log holds {len}")]
    AheadOfLog { applied: u64, len: u64 },
    #[error("projection row for {what} differs from a replay of the log (events up to seq {up_to})")]
    Differs { what: String, up_to: u64 },
    #[error("projections cannot be read: {0}")]
    Unreadable(String),
}

/// Replays the log in `log_dir` (read-only) up to the projections' cursor and compares the
/// results row by row. Changes nothing. Returns the number of events compared.
pub fn check_projections(
    data_dir: &Path,
    log_dir: &Path,
    storage: Arc<dyn Storage>,
) -> Result<u64, ProjectionCheckError> {
    let unreadable = |e: &dyn std::fmt::Display| ProjectionCheckError::Unreadable(e.to_string());
    let stored =
        load_state_read_only(&data_dir.join(datadir::PROJECTIONS_FILE)).map_err(|e| unreadable(&e))?;
    let (events, _) = SegmentLog::inspect(storage, &log_dir.join("events"), SegmentOptions::default())
        .map_err(|e| unreadable(&e))?;
    if stored.applied > events.len() {
        return Err(ProjectionCheckError::AheadOfLog { applied: stored.applied, len: events.len() });
    }
    let mut replay = LedgerState::default();
    for record in events.iter(0).take(stored.applied as usize) {
        let (_, bytes) = record.map_err(|e| unreadable(&e))?;
        replay.apply(&decode_event(&bytes).map_err(|e| unreadable(&e))?);
    }
    let up_to = stored.applied.saturating_sub(1);
    let mut ids: Vec<_> = replay.keys().chain(stored.keys()).map(|k| k.key_id()).collect();
    ids.sort();
    ids.dedup();
    if let Some(id) = ids.into_iter().find(|id| replay.key(id) != stored.key(id)) {
        return Err(ProjectionCheckError::Differs { what: format!("key {id}"), up_to });
    }
    if replay.policies != stored.policies {
        return Err(ProjectionCheckError::Differs { what: "workspace policies".into(), up_to });
    }
    if replay.webhooks != stored.webhooks {
        return Err(ProjectionCheckError::Differs { what: "webhook configurations".into(), up_to });
    }
    if replay.idempotency != stored.idempotency {
        return Err(ProjectionCheckError::Differs { what: "idempotency records".into(), up_to });
    }
    Ok(stored.applied)
}
