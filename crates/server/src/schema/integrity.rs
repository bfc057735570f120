//! The log's signed checkpoint, public key and Merkle proofs (docs/api.md, "Integrity";
//! proof shapes of RFC 9162).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// Hex of the BLAKE3 tree root.
    pub root_hash: String,
    pub timestamp: String,
    /// The C2SP signed note.
    pub note: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublicKeyView {
    pub algorithm: &'static str,
    /// C2SP note verifier key `<name>+<hex key id>+<base64(0x01‖key)>`.
    pub public_key: String,
    pub public_key_base64: String,
    pub origin: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProofView {
    /// Hex hashes, RFC 9162 proof order.
    pub hashes: Vec<String>,
}

impl ProofView {
    pub fn new(hashes: &[[u8; 32]]) -> Self {
        Self { hashes: hashes.iter().map(hex::encode).collect() }
    }
}

/// One entry of the log.
#[derive(Serialize, ToSchema)]
pub struct EntryView {
    /// The event's seq (its leaf index).
    pub seq: u64,
    /// Standard base64 of the event's stored bytes (docs/log-format.md).
    pub raw: String,
    /// Hex of the leaf hash of those bytes.
    pub leaf_hash: String,
}
