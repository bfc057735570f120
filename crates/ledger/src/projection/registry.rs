//! The registry projection: the key registry as redb rows (one record per key, its last
//! use apart, one policy and one webhook per workspace, the idempotency records), and
//! loading those rows back into a [`LedgerState`] at start-up and for `log verify`.
//!
//! It folds events with [`LedgerState::apply`], the one state-transition function (keys
//! that were only used get just their last-use row, through the same [`record_use`]), so
//! the rows always equal a replay of the log up to its cursor.

use super::{CURSORS, Prepared, Projection, ProjectionError};
use crate::state::{KeyRecord, LastUsed, LedgerState, record_use};
use keyledger_core::{Event, KeyId, Payload, Policy, WorkspaceId};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;
use std::path::Path;

/// key id (16 bytes) → postcard(KeyRecord).
const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_keys");
/// workspace → postcard(Policy).
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_policies");
/// key id → postcard(LastUsed): kept apart so a `used` event rewrites a few bytes, not the
/// whole key record.
const LAST_USED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_last_used");
/// workspace → postcard(Webhook).
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_webhooks");
/// key id → postcard(KeyCredits), for keys with usage credits (docs/credits.md).
const CREDITS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_credits");
/// workspace → postcard(OnLeak).
const ON_LEAK: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_on_leak");
/// key id → postcard(Vec<[u8; 32]>): the fingerprints of the leak reports recorded.
const LEAK_REPORTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_leak_reports");
/// idempotency id (32 bytes) → postcard(IdempotentResult).
const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_idempotency");
/// key id → postcard(KeySources), for keys with a source allow-list only.
const KEY_SOURCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_key_sources");
/// workspace → postcard(SourcePolicy).
const SOURCE_POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry_source_policies");

/// key id → postcard(Vec<RateLimit>): a key's own rate limits.
const KEY_RATELIMITS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_key_ratelimits");
/// workspace → postcard(Vec<RateLimit>): a workspace's default rate limits.
const WORKSPACE_RATELIMITS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("registry_workspace_ratelimits");

/// key id → postcard(ImportMark): imported keys' marks (docs/import.md).
const IMPORTED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_import_marks");
/// The marks' table before a re-hashed key's mark kept its digest: its rows cannot say
/// which digests were imported, so a file that has them is rebuilt from the log.
const IMPORTED_WITHOUT_DIGESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("registry_imported");

/// The key registry as rows: one record per key, one policy per workspace.
pub struct RegistryProjection;

impl Projection for RegistryProjection {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn prepare(&mut self, txn: &WriteTransaction) -> Result<Prepared, ProjectionError> {
        let prepared = if has_import_marks_without_digests(txn)? {
            tracing::warn!(
                "the registry's import marks have an older layout; rebuilding the registry from the log"
            );
            self.clear(txn)?;
            Prepared::Reset
        } else {
            Prepared::Current
        };
        // Empty or dropped by the rebuild: not needed any more.
        txn.delete_table(IMPORTED_WITHOUT_DIGESTS)?;
        txn.open_table(KEYS)?;
        txn.open_table(POLICIES)?;
        txn.open_table(LAST_USED)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(WEBHOOKS)?;
        txn.open_table(KEY_SOURCES)?;
        txn.open_table(SOURCE_POLICIES)?;
        txn.open_table(CREDITS)?;
        txn.open_table(ON_LEAK)?;
        txn.open_table(LEAK_REPORTS)?;
        txn.open_table(KEY_RATELIMITS)?;
        txn.open_table(WORKSPACE_RATELIMITS)?;
        txn.open_table(IMPORTED)?;
        Ok(prepared)
    }

    fn apply(&mut self, txn: &WriteTransaction, batches: &[&[Event]]) -> Result<(), ProjectionError> {
        let events = || batches.iter().flat_map(|b| b.iter());
        let mut keys = txn.open_table(KEYS)?;
        let mut last_used = txn.open_table(LAST_USED)?;
        // Records changed by lifecycle events are loaded into a small state, the events are
        // applied with the one state-transition function, and the rows written back. Keys
        // that were only used get just their last-use row updated.
        let mut partial = LedgerState::default();
        let lifecycle: BTreeSet<KeyId> =
            events().filter(|e| !e.payload.kind().is_usage()).filter_map(|e| e.payload.key_id()).collect();
        for key_id in &lifecycle {
            if let Some(row) = keys.get(key_id.as_bytes().as_slice())? {
                let mut record = decode_record(row.value())?;
                record.last_used = read_last_used(&last_used, key_id)?;
                partial.insert(record);
            }
        }
        let mut used_only: std::collections::BTreeMap<KeyId, LastUsed> = std::collections::BTreeMap::new();
        let mut policies_changed: BTreeSet<WorkspaceId> = BTreeSet::new();
        let mut sources_changed: BTreeSet<KeyId> = BTreeSet::new();
        let mut source_policies_changed: BTreeSet<WorkspaceId> = BTreeSet::new();
        for event in events() {
            match &event.payload {
                Payload::Used(_) | Payload::Metered(_) | Payload::Counted(_)
                    if let Some(usage) = event.payload.usage()
                        && partial.view(&usage.key_id).is_none() =>
                {
                    let entry = match used_only.entry(usage.key_id) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(read_last_used(&last_used, &usage.key_id)?)
                        }
                    };
                    record_use(entry, event.at, &usage.context);
                    partial.applied = event.seq + 1;
                }
                Payload::PolicySet(p) => {
                    policies_changed.insert(p.workspace.clone());
                    partial.apply(event);
                }
                // Each replaces the previous list or policy whole: nothing to load first.
                Payload::SourcesSet(s) => {
                    match s.key_id {
                        Some(key_id) => sources_changed.insert(key_id),
                        None => source_policies_changed.insert(s.workspace.clone()),
                    };
                    partial.apply(event);
                }
                Payload::WebhookSet(w) => {
                    // The previous configuration decides `since_seq`: load it first.
                    if !partial.webhooks.contains_key(&w.workspace)
                        && let Some(row) = txn.open_table(WEBHOOKS)?.get(w.workspace.as_str())?
                    {
                        partial.webhooks.insert(w.workspace.clone(), decode_webhook(row.value())?);
                    }
                    partial.apply(event);
                }
                Payload::LeakReported(r) => {
                    // The key's earlier fingerprints decide the bound: load them first.
                    if !partial.leaks.reported.contains_key(&r.key_id)
                        && let Some(row) =
                            txn.open_table(LEAK_REPORTS)?.get(r.key_id.as_bytes().as_slice())?
                    {
                        partial.leaks.reported.insert(r.key_id, decode_leak_reports(row.value())?);
                    }
                    partial.apply(event);
                }
                Payload::KeyRehashed(r) => {
                    // The mark keeps its import time and external id: load it first.
                    if partial.imported.mark(&r.key_id).is_none()
                        && let Some(row) = txn.open_table(IMPORTED)?.get(r.key_id.as_bytes().as_slice())?
                    {
                        partial.imported.insert(r.key_id, decode_import_mark(row.value())?);
                    }
                    partial.apply(event);
                }
                _ => partial.apply(event),
            }
        }
        if partial.imported.marks().next().is_some() {
            let mut table = txn.open_table(IMPORTED)?;
            for (key_id, mark) in partial.imported.marks() {
                let bytes =
                    postcard::to_allocvec(mark).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                table.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
            }
        }
        if !partial.leaks.reported.is_empty() {
            let mut reports = txn.open_table(LEAK_REPORTS)?;
            for (key_id, seen) in &partial.leaks.reported {
                let bytes =
                    postcard::to_allocvec(seen).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                reports.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
            }
        }
        if !partial.leaks.on_leak.is_empty() {
            let mut on_leak = txn.open_table(ON_LEAK)?;
            for (workspace, choice) in &partial.leaks.on_leak {
                let bytes =
                    postcard::to_allocvec(choice).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                on_leak.insert(workspace.as_str(), bytes.as_slice())?;
            }
        }
        for key in partial.keys() {
            let mut stored = key.record();
            let usage = std::mem::take(&mut stored.last_used);
            let bytes =
                postcard::to_allocvec(&stored).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            keys.insert(stored.key_id.as_bytes().as_slice(), bytes.as_slice())?;
            used_only.insert(stored.key_id, usage);
        }
        for (key_id, usage) in &used_only {
            let bytes = postcard::to_allocvec(usage).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            last_used.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
        }
        if !partial.idempotency.is_empty() {
            let mut idempotency = txn.open_table(IDEMPOTENCY)?;
            for (id, result) in &partial.idempotency {
                let bytes =
                    postcard::to_allocvec(result).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                idempotency.insert(id.as_slice(), bytes.as_slice())?;
            }
        }
        if !partial.webhooks.is_empty() {
            let mut webhooks = txn.open_table(WEBHOOKS)?;
            for (workspace, webhook) in &partial.webhooks {
                let bytes =
                    postcard::to_allocvec(webhook).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                webhooks.insert(workspace.as_str(), bytes.as_slice())?;
            }
        }
        let corrupt = |e: postcard::Error| ProjectionError::Corrupt(e.to_string());
        if !sources_changed.is_empty() {
            let mut table = txn.open_table(KEY_SOURCES)?;
            for key_id in sources_changed {
                match partial.sources.key(&key_id) {
                    Some(list) => {
                        let bytes = postcard::to_allocvec(list).map_err(corrupt)?;
                        table.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
                    }
                    None => {
                        table.remove(key_id.as_bytes().as_slice())?;
                    }
                }
            }
        }
        if !source_policies_changed.is_empty() {
            let mut table = txn.open_table(SOURCE_POLICIES)?;
            for workspace in source_policies_changed {
                let bytes = postcard::to_allocvec(&partial.source_policy(&workspace)).map_err(corrupt)?;
                table.insert(workspace.as_str(), bytes.as_slice())?;
            }
        }
        apply_credits(txn, events())?;
        if !partial.key_ratelimits.is_empty() {
            let mut table = txn.open_table(KEY_RATELIMITS)?;
            for (key_id, limits) in &partial.key_ratelimits {
                let bytes =
                    postcard::to_allocvec(limits).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                table.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
            }
        }
        if !partial.workspace_ratelimits.is_empty() {
            let mut table = txn.open_table(WORKSPACE_RATELIMITS)?;
            for (workspace, limits) in &partial.workspace_ratelimits {
                let bytes =
                    postcard::to_allocvec(limits).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                table.insert(workspace.as_str(), bytes.as_slice())?;
            }
        }
        let mut policies = txn.open_table(POLICIES)?;
        for workspace in policies_changed {
            let bytes = postcard::to_allocvec(&partial.policy(&workspace))
                .map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            policies.insert(workspace.as_str(), bytes.as_slice())?;
        }
        Ok(())
    }

    fn clear(&mut self, txn: &WriteTransaction) -> Result<(), ProjectionError> {
        txn.delete_table(KEYS)?;
        txn.delete_table(POLICIES)?;
        txn.delete_table(LAST_USED)?;
        txn.delete_table(IDEMPOTENCY)?;
        txn.delete_table(WEBHOOKS)?;
        txn.delete_table(KEY_SOURCES)?;
        txn.delete_table(SOURCE_POLICIES)?;
        txn.delete_table(CREDITS)?;
        txn.delete_table(ON_LEAK)?;
        txn.delete_table(LEAK_REPORTS)?;
        txn.delete_table(KEY_RATELIMITS)?;
        txn.delete_table(WORKSPACE_RATELIMITS)?;
        txn.delete_table(IMPORTED)?;
        Ok(())
    }
}

/// Folds the batch's balance changes into the credits rows: the rows of the keys they
/// touch are loaded, folded with [`crate::credits::fold`] (the registry's own fold), and
/// written back.
fn apply_credits<'a>(
    txn: &WriteTransaction,
    events: impl Iterator<Item = &'a Event> + Clone,
) -> Result<(), ProjectionError> {
    let touched = |e: &Event| match &e.payload {
        Payload::CreditsSet(_) | Payload::CreditsRefilled(_) => e.payload.key_id(),
        payload if payload.credit_spend().is_some() => payload.key_id(),
        _ => None,
    };
    if events.clone().all(|e| touched(e).is_none()) {
        return Ok(());
    }
    let mut table = txn.open_table(CREDITS)?;
    let mut credits = std::collections::HashMap::new();
    for key_id in events.clone().filter_map(touched) {
        if !credits.contains_key(&key_id)
            && let Some(row) = table.get(key_id.as_bytes().as_slice())?
        {
            credits.insert(key_id, decode_credits(row.value())?);
        }
    }
    for event in events {
        crate::credits::fold(&mut credits, event);
    }
    for (key_id, row) in &credits {
        let bytes = postcard::to_allocvec(row).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
        table.insert(key_id.as_bytes().as_slice(), bytes.as_slice())?;
    }
    Ok(())
}

/// Whether the file holds import marks of the layout before re-hashed keys kept their
/// digest (see [`IMPORTED_WITHOUT_DIGESTS`]).
fn has_import_marks_without_digests(txn: &WriteTransaction) -> Result<bool, ProjectionError> {
    use redb::TableHandle;
    let name = IMPORTED_WITHOUT_DIGESTS.name();
    if !txn.list_tables()?.any(|table| table.name() == name) {
        return Ok(false);
    }
    Ok(!txn.open_table(IMPORTED_WITHOUT_DIGESTS)?.is_empty()?)
}

fn decode_import_mark(bytes: &[u8]) -> Result<crate::state::imported::ImportMark, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("import mark: {e}")))
}

fn decode_credits(bytes: &[u8]) -> Result<crate::credits::KeyCredits, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("credits: {e}")))
}

fn decode_leak_reports(bytes: &[u8]) -> Result<Vec<[u8; 32]>, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("leak reports: {e}")))
}

fn decode_webhook(bytes: &[u8]) -> Result<crate::state::Webhook, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("webhook: {e}")))
}

fn read_last_used(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key_id: &KeyId,
) -> Result<LastUsed, ProjectionError> {
    match table.get(key_id.as_bytes().as_slice())? {
        Some(row) => decode_last_used(row.value()),
        None => Ok(LastUsed::default()),
    }
}

fn decode_last_used(bytes: &[u8]) -> Result<LastUsed, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("last used: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<KeyRecord, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("key record: {e}")))
}

/// Loads the registry of a projections file for `log verify`. The file is opened read-only
/// when it was closed cleanly; after a crash redb must first repair its allocator state,
/// which only a writable open does (the same repair the server's next start would make;
/// the rows and cursors are not changed by it, and the log is never touched).
pub fn load_state_read_only(path: &Path) -> Result<LedgerState, ProjectionError> {
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => load_state_from(&db),
        Err(redb::DatabaseError::RepairAborted) => load_state_from(&Database::open(path)?),
        Err(other) => Err(other.into()),
    }
}

pub(crate) fn load_state_from(db: &impl ReadableDatabase) -> Result<LedgerState, ProjectionError> {
    let txn = db.begin_read()?;
    let keys = txn.open_table(KEYS)?;
    let mut state = LedgerState::with_capacity(usize::try_from(keys.len()?).unwrap_or(0));
    // Both tables are keyed by key id: walk them side by side (one pass over each B-tree)
    // rather than looking up every key's last use.
    let last_used = txn.open_table(LAST_USED)?;
    let mut uses = last_used.iter()?.peekable();
    for row in keys.iter()? {
        let (id, value) = row?;
        let mut record = decode_record(value.value())?;
        let id = id.value();
        while let Some(skipped) = uses.next_if(|u| u.as_ref().map_or(true, |(k, _)| k.value() < id)) {
            skipped?;
        }
        if let Some((_, usage)) =
            uses.next_if(|u| u.as_ref().is_ok_and(|(k, _)| k.value() == id)).transpose()?
        {
            record.last_used = decode_last_used(usage.value())?;
        }
        state.insert(record);
    }
    for row in txn.open_table(POLICIES)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId =
            workspace.value().parse().map_err(|_| ProjectionError::Corrupt("policy workspace".into()))?;
        let policy: Policy = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("policy: {e}")))?;
        state.policies.insert(workspace, policy);
    }
    for row in txn.open_table(KEY_RATELIMITS)?.iter()? {
        let (key_id, value) = row?;
        let bytes: [u8; 16] =
            key_id.value().try_into().map_err(|_| ProjectionError::Corrupt("rate limits key id".into()))?;
        let limits = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("rate limits: {e}")))?;
        state.key_ratelimits.insert(KeyId::from_bytes(bytes), limits);
    }
    for row in txn.open_table(WORKSPACE_RATELIMITS)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId = workspace
            .value()
            .parse()
            .map_err(|_| ProjectionError::Corrupt("rate limits workspace".into()))?;
        let limits = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("rate limits: {e}")))?;
        state.workspace_ratelimits.insert(workspace, limits);
    }
    for row in txn.open_table(WEBHOOKS)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId =
            workspace.value().parse().map_err(|_| ProjectionError::Corrupt("webhook workspace".into()))?;
        state.webhooks.insert(workspace, decode_webhook(value.value())?);
    }
    for row in txn.open_table(KEY_SOURCES)?.iter()? {
        let (id, value) = row?;
        let id: [u8; 16] =
            id.value().try_into().map_err(|_| ProjectionError::Corrupt("source list key id".into()))?;
        let list = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("source list: {e}")))?;
        state.sources.keys.insert(KeyId::from_bytes(id), list);
    }
    for row in txn.open_table(SOURCE_POLICIES)?.iter()? {
        let (workspace, value) = row?;
        let workspace: WorkspaceId = workspace
            .value()
            .parse()
            .map_err(|_| ProjectionError::Corrupt("source policy workspace".into()))?;
        let policy = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("source policy: {e}")))?;
        state.sources.policies.insert(workspace, policy);
    }
    // Absent in a projections file written before leak reports existed: nothing to load.
    if let Ok(table) = txn.open_table(ON_LEAK) {
        for row in table.iter()? {
            let (workspace, value) = row?;
            let workspace: WorkspaceId = workspace
                .value()
                .parse()
                .map_err(|_| ProjectionError::Corrupt("on_leak workspace".into()))?;
            let choice = postcard::from_bytes(value.value())
                .map_err(|e| ProjectionError::Corrupt(format!("on_leak: {e}")))?;
            state.leaks.on_leak.insert(workspace, choice);
        }
    }
    if let Ok(table) = txn.open_table(LEAK_REPORTS) {
        for row in table.iter()? {
            let (id, value) = row?;
            let id: [u8; 16] =
                id.value().try_into().map_err(|_| ProjectionError::Corrupt("leak report key id".into()))?;
            state.leaks.reported.insert(KeyId::from_bytes(id), decode_leak_reports(value.value())?);
        }
    }
    for row in txn.open_table(IDEMPOTENCY)?.iter()? {
        let (id, value) = row?;
        let id: [u8; 32] =
            id.value().try_into().map_err(|_| ProjectionError::Corrupt("idempotency id".into()))?;
        let result = postcard::from_bytes(value.value())
            .map_err(|e| ProjectionError::Corrupt(format!("idempotency: {e}")))?;
        state.idempotency.insert(id, result);
    }
    // A file last written before credits existed has no such table: no key has credits.
    let credits = match txn.open_table(CREDITS) {
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        other => Some(other?),
    };
    for row in credits.iter().map(|t| t.iter()).collect::<Result<Vec<_>, _>>()?.into_iter().flatten() {
        let (id, value) = row?;
        let id: [u8; 16] =
            id.value().try_into().map_err(|_| ProjectionError::Corrupt("credits key id".into()))?;
        state.credits.insert(KeyId::from_bytes(id), decode_credits(value.value())?);
    }
    // Absent in a projections file written before imports existed: no imported key.
    if let Ok(table) = txn.open_table(IMPORTED) {
        for row in table.iter()? {
            let (id, value) = row?;
            let id: [u8; 16] =
                id.value().try_into().map_err(|_| ProjectionError::Corrupt("import mark key id".into()))?;
            state.imported.insert(KeyId::from_bytes(id), decode_import_mark(value.value())?);
        }
    }
    state.applied = txn.open_table(CURSORS)?.get("registry")?.map(|v| v.value()).unwrap_or(0);
    Ok(state)
}
