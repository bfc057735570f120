//! [`KeyView`]: a key of the registry read in place, without copying its slot.
//!
//! The verify path's decision ([`super::decide`]), policies and listings read keys through
//! it, so they allocate nothing; only [`KeyView::record`] materialises a full
//! [`KeyRecord`] (for an answer), and [`KeyView::verified`] shares the few fields a verify
//! answer shows. **Guarantee:** a view reads the same values the
//! materialised record holds (the registry's property test compares them on arbitrary
//! records).

use super::slots::{DISABLED, EXPIRY_RECORDED, HAS_EXPIRY, HAS_LIFETIME, NO_OWNER, REVOKED, Slot};
use super::{KeyRecord, KeyStatus, LastUsed, LedgerState};
use crate::verdict::VerifiedKey;
use keyledger_core::{Environment, KeyHash, KeyId, Timestamp, WorkspaceId};

/// A key of the registry, read in place (cheap to copy; allocates nothing until
/// [`KeyView::record`]).
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    pub(super) state: &'a LedgerState,
    pub(super) slot: &'a Slot,
}

impl std::fmt::Debug for KeyView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyView").field("key_id", &self.slot.key_id).finish_non_exhaustive()
    }
}

impl<'a> KeyView<'a> {
    pub fn key_id(&self) -> KeyId {
        self.slot.key_id
    }

    pub fn hash(&self) -> &'a KeyHash {
        &self.slot.hash
    }

    pub fn workspace(&self) -> &'a WorkspaceId {
        self.state.workspaces.get(self.slot.workspace)
    }

    pub fn environment(&self) -> Environment {
        self.slot.environment
    }

    pub fn scopes(&self) -> &'a [String] {
        self.state.lists.get(self.slot.scopes)
    }

    pub fn resources(&self) -> &'a [String] {
        self.state.lists.get(self.slot.resources)
    }

    pub fn owner(&self) -> Option<&'a str> {
        (self.slot.owner != NO_OWNER).then(|| self.state.owners.get(self.slot.owner).as_str())
    }

    pub fn name(&self) -> &'a str {
        self.slot.name()
    }

    pub fn created_at(&self) -> Timestamp {
        Timestamp(self.slot.created_at)
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.slot.time(HAS_EXPIRY, self.slot.expires_at)
    }

    pub fn lifetime(&self) -> Option<i64> {
        self.slot.flag(HAS_LIFETIME).then_some(self.slot.lifetime)
    }

    pub fn revoked_at(&self) -> Option<Timestamp> {
        self.slot.time(REVOKED, self.slot.revoked_at)
    }

    pub fn is_revoked(&self) -> bool {
        self.slot.flag(REVOKED)
    }

    pub fn is_disabled(&self) -> bool {
        self.slot.flag(DISABLED)
    }

    /// An `expired` event has been recorded for this key.
    pub fn expiry_recorded(&self) -> bool {
        self.slot.flag(EXPIRY_RECORDED)
    }

    pub fn rotated_to(&self) -> Option<KeyId> {
        self.slot.rare().rotated_to
    }

    pub fn last_used(&self) -> LastUsed {
        self.slot.last_used()
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }

    /// Counts against `max_active_keys`: neither revoked nor expired.
    pub fn is_live(&self, now: Timestamp) -> bool {
        !self.is_revoked() && !self.is_expired(now)
    }

    pub fn status(&self, now: Timestamp) -> KeyStatus {
        KeyStatus::of(self.is_revoked(), self.expires_at(), self.is_disabled(), now)
    }

    /// What a verify answer shows of the key, sharing the registry's interned values (see
    /// [`crate::verdict`]): no string is copied.
    pub fn verified(&self) -> VerifiedKey {
        let (slot, state) = (self.slot, self.state);
        VerifiedKey {
            key_id: slot.key_id,
            workspace: state.workspaces.shared(slot.workspace),
            environment: slot.environment,
            scopes: state.lists.shared(slot.scopes),
            owner: (slot.owner != NO_OWNER).then(|| state.owners.shared(slot.owner)),
            expires_at: self.expires_at(),
        }
    }

    /// The full record, materialised.
    pub fn record(&self) -> KeyRecord {
        let (slot, state) = (self.slot, self.state);
        let rare = slot.rare();
        KeyRecord {
            key_id: slot.key_id,
            workspace: self.workspace().clone(),
            name: slot.name().to_owned(),
            hash: slot.hash,
            hint: slot.hint().to_owned(),
            prefix: state.prefixes.get(slot.prefix).clone(),
            environment: slot.environment,
            scopes: self.scopes().to_vec(),
            resources: self.resources().to_vec(),
            owner: self.owner().map(str::to_owned),
            metadata: slot.metadata().to_owned(),
            created_at: self.created_at(),
            created_by: state.actors.get(slot.created_by).clone(),
            expires_at: self.expires_at(),
            lifetime: self.lifetime(),
            revoked_at: self.revoked_at(),
            revoked_reason: rare.revoked_reason.clone(),
            rotated_from: rare.rotated_from,
            rotated_to: rare.rotated_to,
            disabled: self.is_disabled().then(|| rare.disabled_reason.clone()),
            expiry_recorded: self.expiry_recorded(),
            last_used: self.last_used(),
            allowed_sources: self.allowed_sources().cloned(),
        }
    }
}
