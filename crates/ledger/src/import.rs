//! Importing keys known only by a foreign hash of their secret, and re-hashing them on
//! first use (docs/import.md).
//!
//! Both steps are decided on the writer thread. An import is all-or-nothing: every entry is
//! checked (authority exactly as create checks it, the workspace's policy and its source
//! allow-list rules, duplicates)
//! before any event is emitted, so a bad entry leaves the log and the registry unchanged,
//! and the error names the entry by its index. It is idempotent: a digest already imported
//! into the workspace answers the existing key, re-hashed since or not, and appends
//! nothing for it.
//!
//! A verification that found its key through the foreign digest carries the secret's
//! keyed hash; if it is allowed, [`rehash_on_use`] appends `key_rehashed` in the same
//! batch as its `used` event (made durable before the answer), and from then on the key is
//! found by its keyed hash like any other.

use crate::authority::{Authority, Target};
use crate::commands::{Caller, IdempotencyTag, IssuedSecret, KeySpec};
use crate::error::LedgerError;
use crate::sequencer::{
    check_actor, check_expiry, check_idempotency, check_policy, emit, expiry_at, find, record_idempotency,
};
use crate::state::{KeyRecord, LedgerState};
use crate::verdict::Verdict;
use keyledger_core::validate::FieldError;
use keyledger_core::{
    Actor, ForeignHash, KeyHash, KeyId, KeyImported, KeyPrefix, KeyRehashed, Payload, RequestId, SourceNet,
    SourcesSet, Timestamp, WorkspaceId,
};
use keyledger_log::Batch;
use std::collections::HashMap;

/// Most keys one import request may carry.
pub const MAX_IMPORT_KEYS: usize = 1_000;

/// Longest foreign secret the verify path hashes for the foreign lookup (bytes).
pub const MAX_FOREIGN_SECRET_BYTES: usize = 512;

/// One key to import: its fields as create takes them, and its foreign hash.
#[derive(Clone, Debug)]
pub struct ImportSpec {
    pub key: KeySpec,
    pub foreign: ForeignHash,
    pub external_id: Option<String>,
    /// The key's source allow-list; none (or empty) takes the workspace default, as a
    /// create does (docs/api.md, "Source allow-lists").
    pub allowed_sources: Option<Vec<SourceNet>>,
}

/// One entry's outcome, in request order.
#[derive(Clone, Debug)]
pub struct ImportedKey {
    pub record: KeyRecord,
    /// The digest was already imported into the workspace: nothing was appended for it.
    pub existed: bool,
}

/// The error `error`, attributed to entry `index` of the request.
fn at_entry(index: usize, error: LedgerError) -> LedgerError {
    match error {
        LedgerError::Invalid(f) => {
            LedgerError::Invalid(FieldError::new(format!("keys[{index}].{}", f.field), f.message))
        }
        LedgerError::Conflict(m) => LedgerError::Conflict(format!("keys[{index}]: {m}")),
        LedgerError::Forbidden(m) => LedgerError::Forbidden(format!("keys[{index}]: {m}")),
        other => other,
    }
}

enum Plan {
    Existing(KeyId),
    New {
        key_id: KeyId,
        expires_at: Option<Timestamp>,
        sources: Option<SourcesSet>,
    },
    /// The same digest as an earlier entry of this request.
    SameAs(usize),
}

/// Decides an import request: checks every entry, then emits one `key_imported` per new key
/// (and the idempotency record), all in the command's one batch.
pub(crate) fn import_keys(
    state: &mut LedgerState,
    batch: &mut Batch,
    caller: &Caller,
    workspace: WorkspaceId,
    keys: Vec<ImportSpec>,
    idempotency: Option<IdempotencyTag>,
    now: Timestamp,
) -> Result<Vec<ImportedKey>, LedgerError> {
    check_actor(state, caller, now)?;
    let authority = Authority::of(state, caller)?;
    authority.write_keys_of(&workspace)?;
    if workspace.is_ledger() {
        // Admin keys are issued here, never imported: an admin key's secret is keyledger's.
        return Err(LedgerError::invalid("workspace", "keys cannot be imported into `_ledger`"));
    }
    if keys.is_empty() || keys.len() > MAX_IMPORT_KEYS {
        return Err(LedgerError::invalid("keys", format!("must hold 1 to {MAX_IMPORT_KEYS} keys")));
    }
    check_idempotency(state, idempotency.as_ref(), now)?;
    let policy = state.policy(&workspace);
    // The policy's prefix rule concerns secrets keyledger generates; a foreign secret has
    // its own shape (docs/import.md).
    let prefix = policy.key_prefix.clone().unwrap_or_else(KeyPrefix::default_prefix);
    let mut live_after = state.live_count(&workspace, now);
    let mut first_of: HashMap<[u8; 32], usize> = HashMap::with_capacity(keys.len());
    let mut plans = Vec::with_capacity(keys.len());
    for (index, entry) in keys.iter().enumerate() {
        let digest = entry.foreign.digest;
        if let Some(existing) = state.imported.imported_as(&digest) {
            let same_workspace = state.view(&existing).is_some_and(|k| *k.workspace() == workspace);
            if !same_workspace {
                return Err(at_entry(
                    index,
                    LedgerError::Conflict("this hash is already imported into another workspace".into()),
                ));
            }
            plans.push(Plan::Existing(existing));
            continue;
        }
        if let Some(&first) = first_of.get(&digest) {
            plans.push(Plan::SameAs(first));
            continue;
        }
        first_of.insert(digest, index);
        let expires_at = expiry_at(entry.key.expiry, now);
        if let Some(at) = expires_at {
            check_expiry(at, now).map_err(|e| at_entry(index, e))?;
        }
        let target = Target {
            key_id: None,
            workspace: &workspace,
            scopes: &entry.key.scopes,
            resources: &entry.key.resources,
            // Never a `_ledger` key (refused above): its sources are the application's.
            sources: &[],
        };
        authority.issue(target, expires_at).map_err(|e| at_entry(index, e))?;
        let key_id = KeyId::generate(now.millis());
        if state.view(&key_id).is_some() {
            return Err(LedgerError::Internal("generated key id collides with an existing one".into()));
        }
        live_after += 1;
        let shape =
            IssuedSecret { key_id, hash: KeyHash([0; 32]), hint: String::new(), prefix: prefix.clone() };
        check_policy(&policy, &shape, expires_at, || live_after, now).map_err(|e| at_entry(index, e))?;
        let requested = entry.allowed_sources.clone();
        let environment = entry.key.environment;
        let sources = crate::sources::for_new_key(
            state,
            &caller.actor,
            &workspace,
            key_id,
            environment,
            requested,
            None,
        )
        .map_err(|e| at_entry(index, e))?;
        plans.push(Plan::New { key_id, expires_at, sources });
    }
    // Every entry passed: emit.
    let mut ids: Vec<KeyId> = Vec::with_capacity(plans.len());
    let mut answers = Vec::with_capacity(plans.len());
    for (entry, plan) in keys.into_iter().zip(plans) {
        let (key_id, existed) = match plan {
            Plan::Existing(key_id) => (key_id, true),
            Plan::SameAs(first) => {
                let key_id =
                    ids.get(first).copied().ok_or_else(|| LedgerError::Internal("import plan".into()))?;
                (key_id, true)
            }
            Plan::New { key_id, expires_at, sources } => {
                let payload = Payload::KeyImported(KeyImported {
                    key_id,
                    workspace: workspace.clone(),
                    name: entry.key.name,
                    foreign: entry.foreign,
                    environment: entry.key.environment,
                    scopes: entry.key.scopes,
                    resources: entry.key.resources,
                    owner: entry.key.owner,
                    metadata: entry.key.metadata,
                    expires_at,
                    external_id: entry.external_id,
                });
                emit(state, batch, &caller.actor, caller.request_id, payload);
                if let Some(set) = sources {
                    emit(state, batch, &caller.actor, caller.request_id, Payload::SourcesSet(set));
                }
                (key_id, false)
            }
        };
        ids.push(key_id);
        answers.push(ImportedKey { record: find(state, &key_id)?, existed });
    }
    record_idempotency(state, batch, caller, idempotency, workspace, ids);
    Ok(answers)
}

/// After an allowed verification of a key found by its foreign digest: appends
/// `key_rehashed` with the secret's keyed hash, in the verification's batch, unless another
/// verification did it first.
pub(crate) fn rehash_on_use(
    state: &mut LedgerState,
    batch: &mut Batch,
    request_id: RequestId,
    key_id: KeyId,
    verdict: &Verdict,
    hash: KeyHash,
) {
    let waiting = state.imported.mark(&key_id).is_some_and(|m| m.is_waiting());
    if verdict.outcome.is_err() || !waiting || state.view_by_hash(&hash).is_some() {
        return;
    }
    let Some(workspace) = state.view(&key_id).map(|k| k.workspace().clone()) else { return };
    let payload = Payload::KeyRehashed(KeyRehashed { key_id, workspace, hash });
    emit(state, batch, &Actor::Verifier, request_id, payload);
    // A lifecycle event: durable before the answer.
    batch.require_sync();
}

/// The imported key (not yet re-hashed) whose secret is `presented`: consulted by the verify
/// path only after the keyed-hash lookup missed; nothing is hashed while no imported key
/// awaits its first use, and an over-long candidate is never hashed.
pub(crate) fn find_foreign(state: &LedgerState, presented: &str) -> Option<KeyId> {
    if state.imported.is_waiting_empty() || presented.len() > MAX_FOREIGN_SECRET_BYTES {
        return None;
    }
    state.imported.find(presented)
}

/// Whether a secret not of keyledger's shape may be an imported key's (re-hashed or not):
/// only while the registry holds imported keys, and only if [`may_be_foreign`].
pub(crate) fn may_be_imported(state: &LedgerState, presented: &str) -> bool {
    !state.imported.is_empty() && may_be_foreign(presented)
}

/// Whether a secret not of keyledger's shape could be a foreign secret at all (non-empty,
/// not over-long), whatever this registry holds: on a shared store another node may have
/// imported its key moments ago.
pub(crate) fn may_be_foreign(presented: &str) -> bool {
    !presented.is_empty() && presented.len() <= MAX_FOREIGN_SECRET_BYTES
}
