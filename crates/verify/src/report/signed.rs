//! The signed form of a compliance report (docs/compliance.md, "The signed report"): a JSON
//! object naming its parameters, the signed checkpoint it was computed from and its
//! figures, with an Ed25519 signature by the log's key over
//! [`REPORT_SIGNATURE_CONTEXT`] ‖ its canonical JSON without `signature`.
//!
//! A report file is either that JSON (exactly its canonical text, optionally followed by
//! one newline) or an HTML page embedding exactly [`html_embed`] of it in a
//! `<script type="application/json" id="keyledger-report">` block. [`open_report`] accepts
//! both, byte-exactly: any change to the JSON's bytes fails, before any figure is believed.

use super::params::Parameters;
use super::{REPORT_FORMAT, REPORT_SIGNATURE_CONTEXT, REPORT_VERSION, ReportError};
use crate::cosignature::{Cosigned, Quorum};
use crate::export::canonical_json;
use crate::merkle::{Hash, TreeHash};
use crate::note::{NoteSigner, VerifierKey, open_checkpoint};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;
use serde_json::{Map, Value, json};

/// The opening tag of the embedded report in an HTML report.
pub const HTML_EMBED_OPEN: &str = "<script type=\"application/json\" id=\"keyledger-report\">";
/// Its closing tag.
pub const HTML_EMBED_CLOSE: &str = "</script>";

/// The signed checkpoint a report was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub size: u64,
    pub root: Hash,
    pub tree_hash: TreeHash,
    /// The signed note, verbatim.
    pub note: String,
}

/// A report whose signature and checkpoint verified.
#[derive(Clone, Debug)]
pub struct OpenedReport {
    pub origin: String,
    pub params: Parameters,
    pub anchor: Anchor,
    pub figures: Value,
    /// The whole report object, signature included.
    pub report: Map<String, Value>,
}

impl OpenedReport {
    /// The trusted witnesses that cosigned the report's checkpoint, once at least the
    /// quorum did (the cosignature lines travel in the signed `checkpoint.note`; see
    /// docs/compliance.md, "Verifying a report").
    ///
    /// # Errors
    ///
    /// [`ReportError::Checkpoint`] when fewer than the quorum validly cosigned it, or a line
    /// naming a trusted witness does not verify.
    pub fn cosigned_by(&self, witnesses: &Quorum) -> Result<Vec<Cosigned>, ReportError> {
        witnesses
            .check(&self.anchor.note)
            .map_err(|e| ReportError::Checkpoint(format!("witness cosignatures of the checkpoint: {e}")))
    }
}

/// The unsigned report object.
pub fn report_object(
    origin: &str,
    params: &Parameters,
    anchor: &Anchor,
    figures: Value,
) -> Map<String, Value> {
    let value = json!({
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "origin": origin,
        "parameters": params.to_json(),
        "checkpoint": {
            "size": anchor.size,
            "root_hash": hex::encode(anchor.root),
            "tree_hash": anchor.tree_hash.name(),
            "note": anchor.note,
        },
        "figures": figures,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What the signature covers: the context ‖ the canonical JSON without `signature`.
pub fn report_message(report: &Map<String, Value>) -> Vec<u8> {
    let mut unsigned = report.clone();
    unsigned.remove("signature");
    let mut message = REPORT_SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(canonical_json(&Value::Object(unsigned)).as_bytes());
    message
}

/// Signs the report in place (sets `signature`) with the log's key.
pub fn sign_report(report: &mut Map<String, Value>, signer: &NoteSigner) {
    let signature = signer.sign_raw(&report_message(report));
    report.insert("signature".into(), Value::String(STANDARD.encode(signature.to_bytes())));
}

/// The report's JSON file contents: its canonical JSON and a newline.
pub fn report_text(report: &Map<String, Value>) -> String {
    let mut text = canonical_json(&Value::Object(report.clone()));
    text.push('\n');
    text
}

/// The canonical JSON made safe inside an HTML `<script>` element: `<`, `>` and `&`
/// written as JSON `\u` escapes (the same JSON value; no `</script>` can end it early).
pub fn html_embed(report: &Map<String, Value>) -> String {
    let text = canonical_json(&Value::Object(report.clone()));
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

/// Finds the report in a file: the JSON itself, or the one embedded in an HTML page.
/// Checks that the bytes are exactly the canonical spelling of what they parse to.
///
/// # Errors
///
/// [`ReportError::Malformed`] if no report is found or its bytes are not canonical.
pub fn parse_report_file(text: &str) -> Result<Map<String, Value>, ReportError> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let (json_text, html) = if trimmed.starts_with('{') {
        (trimmed, false)
    } else {
        let start = text
            .find(HTML_EMBED_OPEN)
            .ok_or_else(|| ReportError::Malformed("neither a JSON report nor an HTML report".into()))?
            + HTML_EMBED_OPEN.len();
        if text[start..].contains(HTML_EMBED_OPEN) {
            return Err(ReportError::Malformed("the HTML embeds more than one report".into()));
        }
        let len = text[start..]
            .find(HTML_EMBED_CLOSE)
            .ok_or_else(|| ReportError::Malformed("the embedded report is not closed".into()))?;
        (&text[start..start + len], true)
    };
    let value: Value = serde_json::from_str(json_text)
        .map_err(|e| ReportError::Malformed(format!("the report is not JSON: {e}")))?;
    let Value::Object(report) = value else {
        return Err(ReportError::Malformed("the report is not a JSON object".into()));
    };
    let canonical = if html { html_embed(&report) } else { canonical_json(&Value::Object(report.clone())) };
    if canonical != json_text {
        return Err(ReportError::Malformed(
            "the report's JSON is not in its canonical form (it was edited)".into(),
        ));
    }
    Ok(report)
}

/// Checks a report's signature with the log's public key, opens the checkpoint note it
/// names with the same key, and checks that the note says the size and root the report
/// names. Nothing but these is believed yet: the figures are checked by recomputing them.
///
/// # Errors
///
/// [`ReportError::Malformed`], [`ReportError::Signature`] or [`ReportError::Checkpoint`].
pub fn open_report(report: Map<String, Value>, key: &VerifierKey) -> Result<OpenedReport, ReportError> {
    let malformed = |what: &str| ReportError::Malformed(what.to_owned());
    let signature = report
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| malformed("`signature` is not the base64 of 64 bytes"))?;
    key.public_key()
        .verify_strict(&report_message(&report), &Signature::from_bytes(&signature))
        .map_err(|_| ReportError::Signature("the signature does not verify with this public key".into()))?;
    if report.get("format").and_then(Value::as_str) != Some(REPORT_FORMAT)
        || report.get("version").and_then(Value::as_u64) != Some(REPORT_VERSION)
    {
        return Err(malformed("not a compliance report of a version this verifier reads"));
    }
    let origin =
        report.get("origin").and_then(Value::as_str).ok_or_else(|| malformed("`origin`"))?.to_owned();
    let params = Parameters::from_json(report.get("parameters").unwrap_or(&Value::Null))?;
    let checkpoint =
        report.get("checkpoint").and_then(Value::as_object).ok_or_else(|| malformed("`checkpoint`"))?;
    let note =
        checkpoint.get("note").and_then(Value::as_str).ok_or_else(|| malformed("`checkpoint.note`"))?;
    let size =
        checkpoint.get("size").and_then(Value::as_u64).ok_or_else(|| malformed("`checkpoint.size`"))?;
    let root: Hash = checkpoint
        .get("root_hash")
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("`checkpoint.root_hash`"))?;
    let tree_hash = checkpoint
        .get("tree_hash")
        .and_then(Value::as_str)
        .and_then(TreeHash::from_name)
        .ok_or_else(|| malformed("`checkpoint.tree_hash`"))?;
    let opened = open_checkpoint(note, key)
        .map_err(|e| ReportError::Checkpoint(format!("the note does not open with this public key: {e}")))?;
    if opened.size != size || opened.root != root || opened.origin != origin {
        return Err(ReportError::Checkpoint(
            "the note does not say the size, root and origin the report names".into(),
        ));
    }
    let figures = report.get("figures").cloned().ok_or_else(|| malformed("`figures`"))?;
    let anchor = Anchor { size, root, tree_hash, note: note.to_owned() };
    Ok(OpenedReport { origin, params, anchor, figures, report })
}

/// The first place where two JSON values differ, as a path (`figures.usage.used`), with
/// both values; `None` if they are equal.
pub fn first_difference(
    path: &str,
    reported: &Value,
    recomputed: &Value,
) -> Option<(String, String, String)> {
    match (reported, recomputed) {
        (Value::Object(a), Value::Object(b)) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            names.into_iter().find_map(|name| {
                first_difference(
                    &format!("{path}.{name}"),
                    a.get(name).unwrap_or(&Value::Null),
                    b.get(name).unwrap_or(&Value::Null),
                )
                .or_else(|| {
                    (a.contains_key(name) != b.contains_key(name))
                        .then(|| (format!("{path}.{name}"), "absent".into(), "present".into()))
                })
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            let found = a
                .iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y));
            found.or_else(|| {
                (a.len() != b.len())
                    .then(|| (format!("{path}.length"), a.len().to_string(), b.len().to_string()))
            })
        }
        (a, b) if a == b => None,
        (a, b) => Some((path.to_owned(), canonical_json(a), canonical_json(b))),
    }
}
