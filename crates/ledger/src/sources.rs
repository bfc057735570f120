//! The sequencer's rules for source allow-lists (docs/api.md, "Source allow-lists"): which
//! list a new key gets, which changes an update may make, and the events that record them.
//!
//! **Guarantees** (docs/security.md, "Authority never grows"): a key issued without a list
//! of its own gets the workspace default (except the break-glass recovery's admin key); a
//! rotated key inherits its predecessor's list; an update may only narrow a list (adding one
//! to an unrestricted key narrows it; removing or widening one is refused); under
//! `require_on_live`, no `live` key is created or rotated without a list. Each rule is
//! checked before any event of the command is pushed, so a
//! refused command appends nothing.

use crate::error::LedgerError;
use crate::state::{LedgerState, SourcePolicy};
use keyledger_core::sources::is_narrowing;
use keyledger_core::{Actor, Environment, KeyId, SourceNet, SourcesSet, WorkspaceId};

/// The list a new key gets (empty: none) and whether it is the workspace default:
/// `requested` (the create body's list) if not empty; for a rotation, the list of the key
/// it replaces (`rotated_from`), none included, as docs/api.md says rotation copies it;
/// else the workspace default, except for the break-glass recovery, which no policy of
/// `_ledger` may stand in the way of (docs/operations.md).
pub(crate) fn list_for_new_key(
    state: &LedgerState,
    actor: &Actor,
    workspace: &WorkspaceId,
    requested: Option<&[SourceNet]>,
    rotated_from: Option<KeyId>,
) -> (Vec<SourceNet>, bool) {
    match (requested, rotated_from) {
        (Some(list), _) if !list.is_empty() => (list.to_vec(), false),
        (_, Some(old)) => {
            state.sources.key(&old).map_or((Vec::new(), false), |old| (old.sources.clone(), old.from_policy))
        }
        _ if *actor == Actor::Recovery => (Vec::new(), false),
        _ => (state.source_policy(workspace).default_sources, true),
    }
}

/// The `sources_set` event to append right after a new key's `Created` (none when the key
/// is unrestricted), or the refusal of a `live` key without a list under `require_on_live`.
/// `requested` is the create body's list; `rotated_from` the key a rotation replaces.
pub(crate) fn for_new_key(
    state: &LedgerState,
    actor: &Actor,
    workspace: &WorkspaceId,
    key_id: KeyId,
    environment: Environment,
    requested: Option<Vec<SourceNet>>,
    rotated_from: Option<KeyId>,
) -> Result<Option<SourcesSet>, LedgerError> {
    let (sources, from_policy) =
        list_for_new_key(state, actor, workspace, requested.as_deref(), rotated_from);
    let required = state.source_policy(workspace).require_on_live;
    if sources.is_empty() && required && environment == Environment::Live && *actor != Actor::Recovery {
        // A policy rule, answered like `require_expiry`: 409 `conflict` (docs/api.md).
        return Err(LedgerError::Conflict(
            "policy require_allowed_sources: a live key must have a source allow-list (allowed_sources)"
                .into(),
        ));
    }
    Ok((!sources.is_empty()).then(|| SourcesSet {
        workspace: workspace.clone(),
        key_id: Some(key_id),
        sources,
        from_policy,
        require_on_live: false,
    }))
}

/// The `sources_set` event of an update that changes `key_id`'s list to `wanted`, if it
/// only narrows it (none when the list stays the same).
pub(crate) fn for_update(
    state: &LedgerState,
    workspace: &WorkspaceId,
    key_id: KeyId,
    wanted: Option<Vec<SourceNet>>,
) -> Result<Option<SourcesSet>, LedgerError> {
    let Some(wanted) = wanted else { return Ok(None) };
    let current = state.sources.key(&key_id).map(|k| k.sources.as_slice()).unwrap_or_default();
    if wanted == current {
        return Ok(None);
    }
    if !is_narrowing(current, &wanted) {
        return Err(LedgerError::invalid(
            "allowed_sources",
            "can only be narrowed, never widened or removed (rotate or create a key instead)",
        ));
    }
    Ok(Some(SourcesSet {
        workspace: workspace.clone(),
        key_id: Some(key_id),
        sources: wanted,
        from_policy: false,
        require_on_live: false,
    }))
}

/// The `sources_set` event of a policy change (none when it changes nothing).
pub(crate) fn for_policy(
    state: &LedgerState,
    workspace: &WorkspaceId,
    wanted: Option<SourcePolicy>,
) -> Option<SourcesSet> {
    let wanted = wanted?;
    let unchanged = state.sources.policies.get(workspace) == Some(&wanted)
        || (!state.sources.policies.contains_key(workspace) && wanted == SourcePolicy::default());
    (!unchanged).then(|| SourcesSet {
        workspace: workspace.clone(),
        key_id: None,
        sources: wanted.default_sources,
        from_policy: false,
        require_on_live: wanted.require_on_live,
    })
}

/// Live, `live`-environment keys of `workspace` without a list: the exceptions to a
/// `require_on_live` policy (keys issued before it was set), at most `limit` of them, and
/// how many there are in all.
pub fn exceptions(
    state: &LedgerState,
    workspace: &WorkspaceId,
    now: keyledger_core::Timestamp,
    limit: usize,
) -> (Vec<KeyId>, usize) {
    let mut count = 0;
    let mut ids = Vec::new();
    for key in state.workspace_keys(workspace) {
        if key.is_live(now) && key.environment() == Environment::Live && key.allowed_sources().is_none() {
            count += 1;
            if ids.len() < limit {
                ids.push(key.key_id());
            }
        }
    }
    (ids, count)
}
