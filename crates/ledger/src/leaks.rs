//! Leak reports (docs/leaks.md): a key found in a public place is recorded by a
//! `leak_reported` event and its workspace's `on_leak` is applied, revoking it in the same
//! batch when the workspace asks for that.
//!
//! Decided on the writer thread like every other command, so "already reported?", "still
//! active?" and the revocation see one state. The report never holds the secret: the
//! caller hashes candidates with the pepper and passes key ids only.

use crate::authority::keep_last_full_admin;
use crate::state::LedgerState;
use crate::state::leaks::report_fingerprint;
use keyledger_core::KeyId;
use keyledger_core::{Actor, LeakReported, LeakReporter, OnLeak, Payload, RequestId, Revoked, Timestamp};
use keyledger_log::Batch;

/// Longest `url` or `source` recorded (longer ones are cut at a character boundary).
pub const MAX_FIELD_LEN: usize = 2048;

/// One key reported as leaked, as the endpoint found it.
#[derive(Clone, Debug)]
pub struct LeakReportIn {
    pub key_id: KeyId,
    pub url: Option<String>,
    pub source: Option<String>,
}

/// What became of one report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeakOutcome {
    /// Recorded; `revoked` when `on_leak: revoke` revoked the key in the same batch.
    Recorded { revoked: bool },
    /// The same (key, url, source) was recorded before: no new report, but `on_leak:
    /// revoke` still applies to a key it finds unrevoked (`revoked` when it did).
    AlreadyReported { revoked: bool },
    /// Not recorded: the key is unknown, or (for `only_active`) no longer active.
    Ignored,
}

fn bounded(text: Option<String>) -> Option<String> {
    text.map(|mut t| {
        if t.len() > MAX_FIELD_LEN {
            let mut end = MAX_FIELD_LEN;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.truncate(end);
        }
        t
    })
}

/// Records the reports (actor `system`; the event names the reporter) and applies each
/// workspace's `on_leak`. With `only_active`, keys that are revoked, expired or disabled
/// are ignored (the public endpoint reports only live keys).
pub(crate) fn report_leaks(
    state: &mut LedgerState,
    batch: &mut Batch,
    request_id: RequestId,
    reporter: LeakReporter,
    reports: Vec<LeakReportIn>,
    only_active: bool,
    now: Timestamp,
) -> Vec<LeakOutcome> {
    let mut outcomes = Vec::with_capacity(reports.len());
    for report in reports {
        let Some(key) = state.view(&report.key_id) else {
            outcomes.push(LeakOutcome::Ignored);
            continue;
        };
        let active = key.status(now) == crate::state::KeyStatus::Active;
        let revoked_already = key.is_revoked();
        let workspace = key.workspace().clone();
        if only_active && !active {
            outcomes.push(LeakOutcome::Ignored);
            continue;
        }
        let (url, source) = (bounded(report.url), bounded(report.source));
        let fingerprint = report_fingerprint(url.as_deref(), source.as_deref());
        // A repeat is not recorded again, but the workspace's `on_leak` applies to it as to a
        // first report: a key first reported under `notify` is revoked by a repeat once the
        // policy says `revoke` (docs/leaks.md).
        let repeat = state.leaks.already_reported(&report.key_id, &fingerprint);
        let reason = format!(
            "leak reported by {}{}",
            reporter.as_str(),
            url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default()
        );
        if !repeat {
            let event =
                LeakReported { key_id: report.key_id, workspace: workspace.clone(), reporter, url, source };
            crate::sequencer::emit_event(
                state,
                batch,
                &Actor::System,
                request_id,
                Payload::LeakReported(event),
            );
        }
        let mut revoked = false;
        if state.leaks.on_leak(&workspace) == OnLeak::Revoke
            && !revoked_already
            // Never lock everyone out: the last full admin key stays (docs/security.md).
            && keep_last_full_admin(state, &report.key_id, now, "revoking").is_ok()
        {
            let payload =
                Payload::Revoked(Revoked { key_id: report.key_id, workspace, reason: Some(reason) });
            crate::sequencer::emit_event(state, batch, &Actor::System, request_id, payload);
            revoked = true;
        }
        outcomes.push(if repeat {
            LeakOutcome::AlreadyReported { revoked }
        } else {
            LeakOutcome::Recorded { revoked }
        });
    }
    batch.require_sync();
    outcomes
}
