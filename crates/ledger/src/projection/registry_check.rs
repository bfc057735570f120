//! The registry half of `keyledger log verify`: the persisted registry projection must equal
//! a replay of the log up to its cursor.
//!
//! It reads the data dir only (the projections file read-only when it was closed cleanly,
//! the log through the log crate's read-only recovery) and changes nothing. The replay is
//! [`LedgerState::replay`], the same loop that rebuilds the registry when the writer
//! recovers, so "what the log says" is computed one way everywhere.

use crate::datadir;
use crate::projection::load_state_read_only;
use crate::state::LedgerState;
use keyledger_log::segment::{SegmentLog, SegmentOptions};
use keyledger_log::storage::Storage;
use std::path::Path;
use std::sync::Arc;

/// Why the registry projection does not match the log.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCheckError {
    #[error("the projections claim {applied} events but the log holds {len}")]
    AheadOfLog { applied: u64, len: u64 },
    #[error("projection row for {what} differs from a replay of the log (events up to seq {up_to})")]
    Differs { what: String, up_to: u64 },
    #[error("projections cannot be read: {0}")]
    Unreadable(String),
}

/// Replays the log in `log_dir` (read-only) up to the registry projection's cursor and
/// compares the results row by row. Changes nothing. Returns the number of events compared.
pub fn check_registry(
    data_dir: &Path,
    log_dir: &Path,
    storage: Arc<dyn Storage>,
) -> Result<u64, RegistryCheckError> {
    let unreadable = |e: &dyn std::fmt::Display| RegistryCheckError::Unreadable(e.to_string());
    let stored =
        load_state_read_only(&data_dir.join(datadir::PROJECTIONS_FILE)).map_err(|e| unreadable(&e))?;
    let (events, _) =
        SegmentLog::inspect(storage, &keyledger_log::events_dir(log_dir), SegmentOptions::default())
            .map_err(|e| unreadable(&e))?;
    if stored.applied > events.len() {
        return Err(RegistryCheckError::AheadOfLog { applied: stored.applied, len: events.len() });
    }
    let mut replay = LedgerState::default();
    replay.replay(&events, stored.applied).map_err(|e| unreadable(&e))?;
    let up_to = stored.applied.saturating_sub(1);
    let mut ids: Vec<_> = replay.keys().chain(stored.keys()).map(|k| k.key_id()).collect();
    ids.sort();
    ids.dedup();
    if let Some(id) = ids.into_iter().find(|id| replay.key(id) != stored.key(id)) {
        return Err(RegistryCheckError::Differs { what: format!("key {id}"), up_to });
    }
    if replay.policies != stored.policies {
        return Err(RegistryCheckError::Differs { what: "workspace policies".into(), up_to });
    }
    if replay.sources != stored.sources {
        return Err(RegistryCheckError::Differs { what: "source allow-lists".into(), up_to });
    }
    if replay.leaks != stored.leaks {
        return Err(RegistryCheckError::Differs { what: "leak reports and on_leak".into(), up_to });
    }
    if replay.key_ratelimits != stored.key_ratelimits
        || replay.workspace_ratelimits != stored.workspace_ratelimits
    {
        return Err(RegistryCheckError::Differs { what: "rate limits".into(), up_to });
    }
    if replay.imported != stored.imported {
        return Err(RegistryCheckError::Differs { what: "imported keys".into(), up_to });
    }
    if replay.webhooks != stored.webhooks {
        return Err(RegistryCheckError::Differs { what: "webhook configurations".into(), up_to });
    }
    if replay.credits != stored.credits {
        return Err(RegistryCheckError::Differs { what: "credit balances".into(), up_to });
    }
    if replay.idempotency != stored.idempotency {
        return Err(RegistryCheckError::Differs { what: "idempotency records".into(), up_to });
    }
    Ok(stored.applied)
}
