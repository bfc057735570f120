//! The compliance report (docs/compliance.md; docs/api.md, "Compliance reports").
//!
//! The server answers the signed report's exact canonical JSON text
//! ([`keyledger_verify::report::report_text`]), not a re-serialisation of this type: the
//! signature covers those bytes' value, and `keyledger report verify` requires the file to be
//! exactly that text. This type only describes the shape for the OpenAPI document; the
//! figures' members are listed in docs/compliance.md.

use serde::Serialize;
use utoipa::ToSchema;

/// A signed compliance report.
#[derive(Serialize, ToSchema)]
pub struct ComplianceReport {
    /// Always `keyledger-compliance-report`.
    pub format: String,
    /// The report format's version (1).
    pub version: u64,
    /// The log's origin (the name in its checkpoints).
    pub origin: String,
    pub parameters: ReportParameters,
    pub checkpoint: ReportCheckpoint,
    /// The figures: `events_folded`, `inventory`, `lifecycle`, `admin_activity`,
    /// `break_glass`, `exceptions`, `exception_counts`, `usage` (docs/compliance.md).
    #[schema(value_type = Object)]
    pub figures: serde_json::Value,
    /// Standard base64 of the Ed25519 signature by the log's key over
    /// `keyledger-compliance-report-v1\n` ‖ the canonical JSON of the report without it.
    pub signature: String,
}

/// What the report was asked for.
#[derive(Serialize, ToSchema)]
pub struct ReportParameters {
    /// The workspaces reported on, or null for the whole ledger.
    pub workspaces: Option<Vec<String>>,
    /// Start of the period (inclusive), RFC 3339.
    pub from: String,
    /// End of the period (exclusive), RFC 3339.
    pub to: String,
    /// When ages and "unused" are measured: `to`, or when the report was produced if earlier.
    pub as_of: String,
    /// The unused threshold in days.
    pub unused_days: u32,
}

/// The signed checkpoint the figures were computed from.
#[derive(Serialize, ToSchema)]
pub struct ReportCheckpoint {
    pub size: u64,
    /// Hex of the tree root.
    pub root_hash: String,
    /// `sha256` (or `blake3` for a format-1 log).
    pub tree_hash: String,
    /// The C2SP signed note, verbatim: the log's signature line and, when witnesses are
    /// configured, the cosignature lines of the witnesses that cosigned it
    /// (docs/compliance.md, "Verifying a report").
    pub note: String,
}
