//! The events of keys imported from another system by a foreign hash of their secret
//! (docs/import.md).
//!
//! An imported key is known only by the digest the other system stored (SHA-256 of the
//! secret). [`KeyImported`] carries everything `Created` carries but the keyed hash; on the
//! key's first successful verification the sequencer appends [`KeyRehashed`] with
//! keyledger's own keyed BLAKE3 hash, after which the foreign digest is no longer used. The
//! digest is treated like the keyed hash: never in a key view, webhook, export or log line,
//! and redacted from `Debug`.

use crate::ids::{KeyId, WorkspaceId};
use crate::secret::{Environment, KeyHash};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The hash algorithms a foreign digest may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForeignAlgorithm {
    Sha256,
}

impl ForeignAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            ForeignAlgorithm::Sha256 => "sha256",
        }
    }
}

/// A foreign system's hash of a secret: the only trace of an imported key's secret until
/// its first use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForeignHash {
    pub algorithm: ForeignAlgorithm,
    pub digest: [u8; 32],
}

impl fmt::Debug for ForeignHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForeignHash({}, <redacted>)", self.algorithm.as_str())
    }
}

/// A key imported by its foreign hash (no secret was ever given to keyledger).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyImported {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub name: String,
    pub foreign: ForeignHash,
    pub environment: Environment,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub owner: Option<String>,
    /// A JSON object, serialized canonically (keys sorted, no spaces).
    pub metadata: String,
    pub expires_at: Option<Timestamp>,
    /// The key's id in the system it came from, as given.
    pub external_id: Option<String>,
}

/// An imported key was verified for the first time: from now on it is found by its keyed
/// hash, like any key, and its foreign digest is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRehashed {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    /// Keyed BLAKE3 of the secret (as in `Created`).
    pub hash: KeyHash,
}
