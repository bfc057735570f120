//! Compliance reports (docs/compliance.md): what a person reads about a period of the
//! ledger, checkable by an auditor against the log.
//!
//! The report's figures are one fold over the log's events up to a signed checkpoint
//! ([`ComplianceFold`]). The server computes them from its log and signs the result with
//! the log's key ([`sign_report`]); `keyledger report verify` opens the report
//! ([`parse_report_file`], [`open_report`]) and recomputes every figure with the same fold
//! from events it gets independently ([`Recompute`], [`check_with_export`]), so a report
//! cannot claim a number the log does not support.
//!
//! One concept per file: `params` (what was asked), `fold` (the figures), `signed` (the
//! signed object, its files, opening it), `recompute` (checking the figures). No function
//! here panics on any input.

mod fold;
mod params;
mod recompute;
mod signed;

pub use fold::{ComplianceFold, EXCEPTION_KINDS, MAX_LISTED};
pub use params::{
    DAY_MICROS, DEFAULT_UNUSED_DAYS, MAX_PERIOD_DAYS, MAX_UNUSED_DAYS, MAX_WORKSPACES, Parameters,
};
pub use recompute::{Checked, Coverage, Recompute, bundle_entries, check_with_export};
pub use signed::{
    Anchor, HTML_EMBED_CLOSE, HTML_EMBED_OPEN, OpenedReport, first_difference, html_embed, open_report,
    parse_report_file, report_message, report_object, report_text, sign_report,
};

/// The `format` member of every report.
pub const REPORT_FORMAT: &str = "keyledger-compliance-report";
/// The version of the report format this module reads and writes.
pub const REPORT_VERSION: u64 = 1;
/// What the report signature is computed over, before the canonical report JSON, so that
/// it can never pass for a note or an export manifest signature.
pub const REPORT_SIGNATURE_CONTEXT: &[u8] = b"keyledger-compliance-report-v1\n";

/// Why a report was refused or could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("invalid parameters: {0}")]
    Parameters(String),
    #[error("not a well-formed report: {0}")]
    Malformed(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("events: {0}")]
    Events(String),
    #[error("export: {0}")]
    Export(String),
    #[error(
        "`{path}` does not follow from the log: the report says {reported}, the events give {recomputed}"
    )]
    Mismatch { path: String, reported: String, recomputed: String },
}

#[cfg(test)]
mod tests;
