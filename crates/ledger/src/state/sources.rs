//! Source allow-lists in the registry: each key's list and each workspace's policy for
//! them, as the `sources_set` events left them (docs/api.md, "Source allow-lists").
//!
//! They live beside the key slots rather than in them because few keys carry one: the
//! verify path pays one hash lookup, and only for keys that pass the revoked, expired and
//! disabled checks. **Guarantees:** the check ([`decide_with_source`]) comes after those
//! three, so a revoked key is reported as revoked whatever its source; an unknown source is
//! refused by any list; the state is folded from events only, so a replay rebuilds it.

use super::{KeyView, LedgerState, VerifyRequirements, decide};
use keyledger_core::sources::source_allowed;
use keyledger_core::{DenyReason, KeyId, SourceNet, SourcesSet, Timestamp, WorkspaceId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A key's allow-list (never empty: an unrestricted key has no entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySources {
    pub sources: Vec<SourceNet>,
    /// Copied from the workspace default when the key was issued.
    pub from_policy: bool,
}

/// A workspace's policy for allow-lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePolicy {
    /// Copied into keys issued without a list of their own; empty = none.
    pub default_sources: Vec<SourceNet>,
    /// A `live` key may not be issued (created or rotated) without a list.
    pub require_on_live: bool,
}

/// Every key's list and every workspace's policy. Bounded by the keys and workspaces of
/// the registry (one entry each at most, each list at most `MAX_SOURCES` networks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRegistry {
    pub keys: HashMap<KeyId, KeySources>,
    pub policies: BTreeMap<WorkspaceId, SourcePolicy>,
}

impl SourceRegistry {
    pub fn key(&self, key_id: &KeyId) -> Option<&KeySources> {
        self.keys.get(key_id)
    }

    pub fn policy(&self, workspace: &WorkspaceId) -> SourcePolicy {
        self.policies.get(workspace).cloned().unwrap_or_default()
    }

    /// Folds one `sources_set` event (a key's list, or a workspace's policy).
    pub(super) fn apply(&mut self, set: &SourcesSet) {
        match set.key_id {
            Some(key_id) if set.sources.is_empty() => {
                self.keys.remove(&key_id);
            }
            Some(key_id) => {
                let entry = KeySources { sources: set.sources.clone(), from_policy: set.from_policy };
                self.keys.insert(key_id, entry);
            }
            None => {
                let policy = SourcePolicy {
                    default_sources: set.sources.clone(),
                    require_on_live: set.require_on_live,
                };
                self.policies.insert(set.workspace.clone(), policy);
            }
        }
    }
}

impl<'a> KeyView<'a> {
    /// The key's source allow-list, if it has one.
    pub fn allowed_sources(&self) -> Option<&'a KeySources> {
        self.state.sources.key(&self.slot.key_id)
    }
}

/// [`decide`] with the key's source allow-list checked right after revoked, expired and
/// disabled (and before scopes, resource, environment and workspace): `source` is the
/// address the verification came from, as the server determined it.
pub fn decide_with_source(
    key: &KeyView<'_>,
    wants: &VerifyRequirements,
    source: Option<IpAddr>,
    now: Timestamp,
) -> Result<(), DenyReason> {
    if key.is_revoked() || key.is_expired(now) || key.is_disabled() {
        return decide(key, wants, now);
    }
    if let Some(allowed) = key.allowed_sources()
        && !source_allowed(&allowed.sources, source)
    {
        return Err(DenyReason::SourceNotAllowed(source));
    }
    decide(key, wants, now)
}

impl LedgerState {
    /// The source policy of `workspace` (the default when none was set).
    pub fn source_policy(&self, workspace: &WorkspaceId) -> SourcePolicy {
        self.sources.policy(workspace)
    }
}
