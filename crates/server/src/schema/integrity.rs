//! The log's signed checkpoint, public key and Merkle proofs (docs/api.md, "Integrity";
//! proof shapes of RFC 9162).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// Hex of the tree root (docs/log-format.md).
    pub root_hash: String,
    pub timestamp: String,
    /// The C2SP signed note, followed by the witnesses' cosignature lines when they
    /// cosigned this very checkpoint.
    pub note: String,
    /// How many configured witnesses cosigned this checkpoint.
    pub cosignatures: u64,
    /// The names of the witnesses that cosigned it.
    pub witnesses: Vec<String>,
    /// Cosignatures the witness policy asks for (0: none required or no witnesses).
    pub quorum: u64,
    /// Whether the cosignatures meet the policy's quorum.
    pub quorum_met: bool,
    /// Evidence that a witness has seen another view of this log, or null.
    pub fork_alarm: Option<ForkAlarmView>,
    /// Each configured witness's last submission.
    pub witness_status: Vec<WitnessStatusView>,
}

/// Evidence that a witness has seen another view of this log (docs/operations.md,
/// "Witnesses").
#[derive(Serialize, ToSchema)]
pub struct ForkAlarmView {
    /// The configured witness's name.
    pub witness: String,
    /// `witness_ahead` or `foreign_cosignature`.
    pub kind: String,
    pub log_size: u64,
    /// Hex of the root keyledger signed at `log_size`.
    pub log_root_hash: String,
    /// The size the witness claims to have cosigned (`witness_ahead`), else null.
    pub witness_size: Option<u64>,
    pub detected_at: String,
}

/// One configured witness's last submission.
#[derive(Serialize, ToSchema)]
pub struct WitnessStatusView {
    pub name: String,
    /// The size the witness last cosigned (or reported), null if unknown.
    pub acknowledged_size: Option<u64>,
    /// The class of the last failed submission (docs/operations.md, "Witnesses"), null
    /// after a success.
    pub last_error: Option<String>,
    /// When the witness last cosigned, null if not since start.
    pub last_success: Option<String>,
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
