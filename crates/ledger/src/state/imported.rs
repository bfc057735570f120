//! Imported keys' marks and the foreign-digest index (docs/import.md).
//!
//! An imported key lives in the registry like any key, under a placeholder keyed hash no
//! secret can have (a BLAKE3 derivation of its id and digest, never the pepper's hash of
//! anything), so the keyed-hash lookup never finds it before its first use. Until then it
//! is found through [`Imported::find`]: one hash-map lookup of the SHA-256 of the presented
//! secret, consulted only when the keyed lookup missed and the index is non-empty. The
//! first successful use appends `key_rehashed`, which gives the key its real keyed hash and
//! moves its digest from that index to the index of re-hashed keys, which only import
//! consults: importing a digest again answers the key it made, used or not (the digest
//! stays in the log's `imported` event either way). Bound: one mark and one index entry
//! per imported key.

use keyledger_core::{ForeignHash, KeyHash, KeyId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The hint of an imported key: keyledger never saw its secret.
pub const IMPORTED_HINT: &str = "(imported)";

/// What the registry remembers of an imported key beside its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportMark {
    /// The foreign digest the key was imported with; after the re-hash only import's
    /// duplicate check reads it.
    pub foreign: ForeignHash,
    pub external_id: Option<String>,
    pub imported_at: Timestamp,
    /// When the key was first verified and re-hashed.
    pub rehashed_at: Option<Timestamp>,
}

impl ImportMark {
    /// Not yet re-hashed: verification finds the key by its foreign digest.
    pub fn is_waiting(&self) -> bool {
        self.rehashed_at.is_none()
    }
}

/// Marks of imported keys and the indexes of their digests (SHA-256 digest → key id;
/// SipHash with a random key).
#[derive(Clone, Debug, Default)]
pub struct Imported {
    marks: HashMap<KeyId, ImportMark>,
    /// The keys not yet re-hashed: what verification looks a foreign secret up in.
    by_digest: HashMap<[u8; 32], KeyId>,
    /// The re-hashed keys: what import looks a digest up in beside `by_digest`.
    rehashed_by_digest: HashMap<[u8; 32], KeyId>,
}

impl PartialEq for Imported {
    fn eq(&self, other: &Self) -> bool {
        self.marks == other.marks
    }
}

impl Eq for Imported {}

/// The keyed hash an imported key holds until its first use: derived from its id and
/// digest without the pepper, so no secret's keyed hash equals it.
pub fn placeholder_hash(key_id: &KeyId, foreign: &ForeignHash) -> KeyHash {
    let mut hasher = blake3::Hasher::new_derive_key("keyledger imported key placeholder v1");
    hasher.update(key_id.as_bytes());
    hasher.update(&foreign.digest);
    KeyHash(*hasher.finalize().as_bytes())
}

impl Imported {
    /// Records (or replaces) a key's mark, indexing its digest as waiting or re-hashed.
    pub fn insert(&mut self, key_id: KeyId, mark: ImportMark) {
        if let Some(old) = self.marks.get(&key_id) {
            self.unindex(key_id, old.foreign.digest);
        }
        self.index(key_id, &mark);
        self.marks.insert(key_id, mark);
    }

    /// The key was re-hashed at `at`: verification no longer finds it by its digest.
    pub fn rehashed(&mut self, key_id: &KeyId, at: Timestamp) {
        if let Some(mark) = self.marks.get_mut(key_id) {
            let digest = mark.foreign.digest;
            mark.rehashed_at = Some(at);
            let mark = mark.clone();
            self.unindex(*key_id, digest);
            self.index(*key_id, &mark);
        }
    }

    fn index(&mut self, key_id: KeyId, mark: &ImportMark) {
        let index = if mark.is_waiting() { &mut self.by_digest } else { &mut self.rehashed_by_digest };
        index.insert(mark.foreign.digest, key_id);
    }

    /// Removes `key_id`'s digest from the indexes (another key's entry for the same digest,
    /// from a data dir written before re-imports were recognized, stays).
    fn unindex(&mut self, key_id: KeyId, digest: [u8; 32]) {
        for index in [&mut self.by_digest, &mut self.rehashed_by_digest] {
            if index.get(&digest) == Some(&key_id) {
                index.remove(&digest);
            }
        }
    }

    pub fn mark(&self, key_id: &KeyId) -> Option<&ImportMark> {
        self.marks.get(key_id)
    }

    pub fn marks(&self) -> impl Iterator<Item = (&KeyId, &ImportMark)> + '_ {
        self.marks.iter()
    }

    /// No key was ever imported.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// No imported key awaits its first use: the verify path skips the foreign lookup.
    pub fn is_waiting_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Imported keys still known by their foreign digest.
    pub fn waiting(&self) -> usize {
        self.by_digest.len()
    }

    /// The imported key (not yet re-hashed) with this SHA-256 digest.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<KeyId> {
        self.by_digest.get(digest).copied()
    }

    /// The key imported with this SHA-256 digest, re-hashed or not (import's duplicate
    /// check).
    pub fn imported_as(&self, digest: &[u8; 32]) -> Option<KeyId> {
        self.by_digest(digest).or_else(|| self.rehashed_by_digest.get(digest).copied())
    }

    /// The imported key (not yet re-hashed) whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<KeyId> {
        if self.by_digest.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.by_digest(&digest)
    }
}
