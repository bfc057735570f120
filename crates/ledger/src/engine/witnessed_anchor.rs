//! The checkpoint an export or a compliance report is anchored to: one that covers every
//! event appended before it was asked for and, when the service has witnesses, one they
//! cosigned, so a verifier who trusts the witnesses rather than the operator can require
//! their quorum (docs/export-format.md, "Witness cosignatures"; docs/compliance.md).

use super::Engine;
use crate::error::LedgerError;
use keyledger_log::checkpoint::StoredCheckpoint;

impl Engine {
    /// A signed checkpoint covering every event appended so far ([`Engine::checkpoint_now`]),
    /// with the witnesses' cosignature lines in its note. Waits, up to the engine's
    /// `export_witness_wait`, until the quorum has cosigned it or a later checkpoint of the
    /// log (a busy log signs new checkpoints, and the witnesses move on to them); a later
    /// one is then returned, still covering everything appended before the call. On
    /// timeout it returns the cosignatures it holds for that checkpoint, perhaps none: a
    /// verifier with a witness quorum then refuses what is anchored to it. Without
    /// witnesses it returns at once.
    ///
    /// # Errors
    ///
    /// The log's, when no checkpoint can be signed.
    pub async fn witnessed_checkpoint_now(&self) -> Result<StoredCheckpoint, LedgerError> {
        let anchor = self.checkpoint_now().await?;
        let Some(mut changes) = self.witnesses.changes() else { return Ok(anchor) };
        let deadline = tokio::time::Instant::now() + self.export_witness_wait;
        // The cosigned checkpoint the service holds, as a stored checkpoint, if it is the
        // anchor or the log's latest checkpoint covering more than the anchor.
        let cosigned = |anchor: &StoredCheckpoint| {
            let cosigned = self.witness_view().cosigned?;
            let base = if cosigned.size == anchor.size {
                anchor.clone()
            } else {
                self.log().latest_checkpoint().filter(|latest| latest.size > anchor.size)?
            };
            (base.size == cosigned.size && base.root == cosigned.root)
                .then_some((StoredCheckpoint { note: cosigned.note, ..base }, cosigned.quorum_met))
        };
        loop {
            changes.borrow_and_update();
            if let Some((witnessed, true)) = cosigned(&anchor) {
                return Ok(witnessed);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed, or the witness service stopped.
                _ => break,
            }
        }
        Ok(match cosigned(&anchor) {
            Some((witnessed, _)) => witnessed,
            None => {
                tracing::warn!(
                    size = anchor.size,
                    "no witness cosigned the anchor checkpoint in time; it carries no cosignatures"
                );
                anchor
            }
        })
    }
}
