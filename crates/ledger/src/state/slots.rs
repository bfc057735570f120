//! The compact slot store: how one key is held in memory.
//!
//! The registry holds every key ever issued, in memory, for the life of the server, so its
//! cost per key decides how many keys one server can hold (docs/benchmarks.md: one million
//! active keys in less than 600 MB of peak RSS). Keys are therefore not kept as
//! [`KeyRecord`](super::KeyRecord)s (≈ 1 KB each with their hash-map buckets and a dozen
//! small heap strings) but in a compact slot of fixed-size fields (≈ 190 bytes): the values
//! many keys share (workspace, prefix, scope and resource lists, owner, creator) are
//! interned once and referred to by a `u32`; the key's own texts (hint, name, metadata) are
//! packed into one allocation; the fields few keys ever set (revocation and disable
//! reasons, rotation links) live in a box of their own. Both lookup indexes of the registry
//! (by key id, by keyed hash) are open-addressing tables of `u32` slot numbers, 5 bytes per
//! bucket.
//!
//! **Guarantees.** A slot loses nothing: every field of a record inserted into the registry
//! comes back exactly (the registry's property test checks it on arbitrary records). An
//! interned value is never removed, so every number a slot holds stays valid for the life
//! of the registry.

use super::LastUsed;
use keyledger_core::{Environment, KeyHash, KeyId, Timestamp};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

/// A number standing for an interned value, or for a key's slot.
pub(super) type Sym = u32;
/// `owner` of a key without one.
pub(super) const NO_OWNER: Sym = Sym::MAX;

/// A count as a [`Sym`]. A registry with 2^32 keys or interned values would need terabytes
/// of memory, so the saturation is never reached in practice.
pub(super) fn sym(n: usize) -> Sym {
    Sym::try_from(n).unwrap_or(Sym::MAX)
}

/// Each distinct value stored once (shared by the list and the index), referred to by a
/// [`Sym`]. Values are never removed: they come from events, which are never removed either.
#[derive(Clone, Debug)]
pub(super) struct Interner<T> {
    pub(super) values: Vec<Arc<T>>,
    index: HashMap<Arc<T>, Sym>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { values: Vec::new(), index: HashMap::new() }
    }
}

impl<T: Eq + Hash + Clone> Interner<T> {
    pub(super) fn intern(&mut self, value: &T) -> Sym {
        if let Some(&id) = self.index.get(value) {
            return id;
        }
        let id = sym(self.values.len());
        let shared = Arc::new(value.clone());
        self.values.push(shared.clone());
        self.index.insert(shared, id);
        id
    }

    /// The value of `id`. Every `Sym` a slot holds came from [`Self::intern`] on the same
    /// state, and values are never removed, so the index is always in bounds.
    pub(super) fn get(&self, id: Sym) -> &T {
        &self.values[id as usize]
    }

    /// The value of `id`, shared rather than copied (see [`Self::get`] for the bounds).
    pub(super) fn shared(&self, id: Sym) -> Arc<T> {
        Arc::clone(&self.values[id as usize])
    }
}

// Bits of `Slot::flags`: which optional fields are set, and the key's boolean state.
pub(super) const HAS_EXPIRY: u8 = 1;
pub(super) const HAS_LIFETIME: u8 = 1 << 1;
pub(super) const REVOKED: u8 = 1 << 2;
pub(super) const DISABLED: u8 = 1 << 3;
pub(super) const EXPIRY_RECORDED: u8 = 1 << 4;
pub(super) const USED: u8 = 1 << 5;

/// One key in memory (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub(super) key_id: KeyId,
    pub(super) hash: KeyHash,
    pub(super) created_at: i64,
    /// Valid when the flag `HAS_EXPIRY` is set; likewise `lifetime` (`HAS_LIFETIME`),
    /// `revoked_at` (`REVOKED`) and `last_used_at` (`USED`).
    pub(super) expires_at: i64,
    pub(super) lifetime: i64,
    pub(super) revoked_at: i64,
    pub(super) last_used_at: i64,
    pub(super) use_count: u64,
    pub(super) last_ip: Option<IpAddr>,
    pub(super) workspace: Sym,
    pub(super) prefix: Sym,
    pub(super) scopes: Sym,
    pub(super) resources: Sym,
    pub(super) owner: Sym,
    pub(super) created_by: Sym,
    /// `hint ‖ name ‖ metadata`.
    pub(super) text: Box<str>,
    pub(super) hint_len: u32,
    pub(super) name_len: u32,
    pub(super) flags: u8,
    pub(super) environment: Environment,
    pub(super) rare: Option<Box<Rare>>,
}

/// The fields few keys ever set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Rare {
    pub(super) revoked_reason: Option<String>,
    pub(super) disabled_reason: Option<String>,
    pub(super) rotated_from: Option<KeyId>,
    pub(super) rotated_to: Option<KeyId>,
}

impl Slot {
    pub(super) fn flag(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    pub(super) fn set_flag(&mut self, bit: u8, on: bool) {
        if on {
            self.flags |= bit;
        } else {
            self.flags &= !bit;
        }
    }

    /// The optional time stored in `value` under `bit`.
    pub(super) fn time(&self, bit: u8, value: i64) -> Option<Timestamp> {
        self.flag(bit).then_some(Timestamp(value))
    }

    pub(super) fn set_expires_at(&mut self, at: Option<Timestamp>) {
        self.set_flag(HAS_EXPIRY, at.is_some());
        self.expires_at = at.map_or(0, Timestamp::micros);
    }

    pub(super) fn set_lifetime(&mut self, lifetime: Option<i64>) {
        self.set_flag(HAS_LIFETIME, lifetime.is_some());
        self.lifetime = lifetime.unwrap_or(0);
    }

    pub(super) fn text_part(&self, from: usize, to: usize) -> &str {
        self.text.get(from..to).unwrap_or_default()
    }

    pub(super) fn hint(&self) -> &str {
        self.text_part(0, self.hint_len as usize)
    }

    pub(super) fn name(&self) -> &str {
        self.text_part(self.hint_len as usize, (self.hint_len + self.name_len) as usize)
    }

    pub(super) fn metadata(&self) -> &str {
        self.text_part((self.hint_len + self.name_len) as usize, self.text.len())
    }

    pub(super) fn set_text(&mut self, hint: &str, name: &str, metadata: &str) {
        self.text = [hint, name, metadata].concat().into_boxed_str();
        self.hint_len = sym(hint.len());
        self.name_len = sym(name.len());
    }

    pub(super) fn last_used(&self) -> LastUsed {
        LastUsed { at: self.time(USED, self.last_used_at), ip: self.last_ip, count: self.use_count }
    }

    pub(super) fn set_last_used(&mut self, last: LastUsed) {
        self.set_flag(USED, last.at.is_some());
        self.last_used_at = last.at.map_or(0, Timestamp::micros);
        self.last_ip = last.ip;
        self.use_count = last.count;
    }

    pub(super) fn rare(&self) -> &Rare {
        static NONE: Rare =
            Rare { revoked_reason: None, disabled_reason: None, rotated_from: None, rotated_to: None };
        self.rare.as_deref().unwrap_or(&NONE)
    }

    pub(super) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        // The registry's cost per key (docs/benchmarks.md: 1M keys < 600 MB): a slot plus
        // ~10 bytes of index buckets, ~25 bytes of workspace index and its packed texts.
        assert!(std::mem::size_of::<Slot>() <= 192, "Slot is {} bytes", std::mem::size_of::<Slot>());
    }
}
