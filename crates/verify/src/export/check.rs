//! The verifier of exports: [`verify_export`] reads an export once, front to back, checks
//! each event line on its own as it goes (`Seen`), then checks the manifest against what
//! the lines established (docs/export-format.md, section 6).

use super::canonical::canonical_json;
use super::line::{LinesHasher, line_value, manifest_message, write_event_line};
use super::pending::{Pending, PendingProofs};
use super::{
    Completeness, ExportError, ExportSummary, FORMAT_VERSION, MAX_LINE_BYTES, TREE_HASH_MEMBER,
    manifest_tree_hash,
};
use crate::cosignature::{Cosigned, Quorum};
use crate::merkle::{Frontier, Hash, TreeHash, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, VerifierKey, open_checkpoint};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signature;
use keyledger_core::{Event, Timestamp, decode_event};
use serde_json::{Map, Value};
use std::io::BufRead;

fn line_err(line: u64, reason: impl Into<String>) -> ExportError {
    ExportError::Line { line, reason: reason.into() }
}

fn parse_hash(text: &str) -> Option<Hash> {
    let bytes = hex::decode(text).ok()?;
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    bytes.try_into().ok()
}

fn parse_hashes(value: &Value) -> Option<Vec<Hash>> {
    let items = value.as_array()?;
    if items.len() > 64 {
        return None;
    }
    items.iter().map(|v| v.as_str().and_then(parse_hash)).collect()
}

/// What one event line contributes, once checked on its own: the event its `raw` bytes
/// decode to (the line is exactly its rendering), its leaf hash and inclusion proof.
struct CheckedLine {
    event: Event,
    leaf: Hash,
    proof: Option<Vec<Hash>>,
}

impl CheckedLine {
    fn seq(&self) -> u64 {
        self.event.seq
    }
    fn at(&self) -> Timestamp {
        self.event.at
    }
    /// The line's `at` member (the line was rebuilt from the event, so this is its text).
    fn at_text(&self) -> String {
        self.event.at.to_rfc3339()
    }
    fn workspace(&self) -> &str {
        self.event.payload.workspace().as_str()
    }
}

/// The first member where two JSON objects differ, for error messages.
fn first_difference(found: &Value, expected: &Value) -> String {
    match (found.as_object(), expected.as_object()) {
        (Some(found), Some(expected)) => {
            let mut keys: Vec<&String> = found.keys().chain(expected.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (found.get(key), expected.get(key)) {
                    (Some(_), None) => return format!("unexpected member `{key}`"),
                    (None, Some(_)) => return format!("member `{key}` is missing"),
                    (Some(a), Some(b)) if a != b => {
                        return if key == "leaf_hash" {
                            "`leaf_hash` is not the hash of `raw`".into()
                        } else {
                            format!("`{key}` is {a} but `raw` says {b}")
                        };
                    }
                    _ => {}
                }
            }
            "the line is not in canonical form (keys sorted, no whitespace)".into()
        }
        _ => "the line is not a JSON object".into(),
    }
}

/// The fast path of [`check_event_line`]: a valid line is exactly the canonical JSON
/// rebuilt from its own `raw`, so take `raw` straight from the text (in canonical form its
/// top-level member is the last `"raw":"`: the members sorted after it hold no objects),
/// rebuild it with [`write_event_line`] (without a proof first when line 1 had none, the
/// unfiltered case), and compare bytes. `None` means "not proven this way": the full check
/// decides (and explains).
fn check_event_line_fast(
    text: &[u8],
    scratch: &mut Scratch,
    expect_proof: bool,
    hash: TreeHash,
) -> Option<CheckedLine> {
    const MARKER: &[u8] = b"\"raw\":\"";
    let start = text.windows(MARKER.len()).rposition(|w| w == MARKER)? + MARKER.len();
    let length = text[start..].iter().position(|&b| b == b'"')?;
    scratch.raw.clear();
    STANDARD.decode_vec(&text[start..start + length], &mut scratch.raw).ok()?;
    let event = decode_event(&scratch.raw).ok()?;
    // Lines without a proof (unfiltered exports) are rebuilt without one first; a line
    // with a proof is parsed for it.
    if !expect_proof {
        scratch.line.clear();
        let leaf = write_event_line(&event, &scratch.raw, None, hash, &mut scratch.line);
        if scratch.line.as_bytes() == text {
            return Some(CheckedLine { event, leaf, proof: None });
        }
    }
    let value: Value = serde_json::from_slice(text).ok()?;
    let proof = parse_hashes(value.get("inclusion_proof")?)?;
    scratch.line.clear();
    let leaf = write_event_line(&event, &scratch.raw, Some(&proof), hash, &mut scratch.line);
    if scratch.line.as_bytes() != text {
        return None;
    }
    Some(CheckedLine { event, leaf, proof: Some(proof) })
}

/// Buffers reused from line to line by the fast path.
#[derive(Default)]
struct Scratch {
    raw: Vec<u8>,
    line: String,
}

fn check_event_line(
    number: u64,
    text: &[u8],
    scratch: &mut Scratch,
    expect_proof: bool,
    hash: TreeHash,
) -> Result<CheckedLine, ExportError> {
    if let Some(checked) = check_event_line_fast(text, scratch, expect_proof, hash) {
        return Ok(checked);
    }
    let value: Value =
        serde_json::from_slice(text).map_err(|e| line_err(number, format!("not valid JSON: {e}")))?;
    let object = value.as_object().ok_or_else(|| line_err(number, "not a JSON object"))?;
    if object.contains_key("manifest") {
        return Err(line_err(
            number,
            "a manifest line before the end of the export (lines were appended after it)",
        ));
    }
    let raw_text = object
        .get("raw")
        .and_then(Value::as_str)
        .ok_or_else(|| line_err(number, "member `raw` is missing or not a string"))?;
    let raw =
        STANDARD.decode(raw_text).map_err(|_| line_err(number, "`raw` is not standard padded base64"))?;
    let event = decode_event(&raw)
        .map_err(|e| line_err(number, format!("`raw` is not a canonical event encoding: {e}")))?;
    let proof = match object.get("inclusion_proof") {
        None => None,
        Some(p) => Some(parse_hashes(p).ok_or_else(|| {
            line_err(number, "`inclusion_proof` is not a list of at most 64 lowercase hex 32-byte hashes")
        })?),
    };
    let expected = line_value(&event, &raw, proof.as_deref(), hash);
    if canonical_json(&expected).as_bytes() != text {
        return Err(line_err(number, first_difference(&value, &expected)));
    }
    Ok(CheckedLine { leaf: hash.leaf(&raw), event, proof })
}

/// Reads one line (with its `\n`) into `buf`; `Ok(false)` at end of input.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, number: u64) -> Result<bool, ExportError> {
    buf.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let read = std::io::Read::take(&mut *reader, limit)
        .read_until(b'\n', buf)
        .map_err(|e| ExportError::Input(format!("cannot read line {number}: {e}")))?;
    if read == 0 {
        return Ok(false);
    }
    if buf.len() > MAX_LINE_BYTES {
        return Err(line_err(number, format!("longer than {MAX_LINE_BYTES} bytes")));
    }
    Ok(true)
}

/// What the lines established, for the manifest to confirm.
#[derive(Default)]
struct Seen {
    lines: u64,
    first: Option<CheckedLine>,
    last_seq: Option<u64>,
    last_at: Option<Timestamp>,
    /// Line number and workspace of the first line whose workspace differs from line 1's.
    other_workspace: Option<(u64, String)>,
    /// Whether lines carry inclusion proofs (decided by line 1).
    proofs: Option<bool>,
    /// How the lines' `leaf_hash` is computed (decided by line 1; the manifest must agree).
    tree_hash: Option<TreeHash>,
    /// Unfiltered: the compact range of the lines' leaves.
    range: Option<Frontier>,
    /// Filtered: each line's inclusion proof, to check against the anchor.
    included: PendingProofs,
    hasher: LinesHasher,
    scratch: Scratch,
}

impl Seen {
    fn add(&mut self, number: u64, text_with_newline: &[u8]) -> Result<(), ExportError> {
        let text = &text_with_newline[..text_with_newline.len().saturating_sub(1)];
        let expect_proof = self.proofs == Some(true);
        let line = match self.tree_hash {
            Some(hash) => check_event_line(number, text, &mut self.scratch, expect_proof, hash)?,
            // Line 1 shows how the tree is hashed: SHA-256 in an export of a format-2 log,
            // BLAKE3 in an older one. The signed manifest must then say the same.
            None => {
                match check_event_line(number, text, &mut self.scratch, expect_proof, TreeHash::Rfc6962) {
                    Ok(line) => {
                        self.tree_hash = Some(TreeHash::Rfc6962);
                        line
                    }
                    Err(error) => {
                        let line =
                            check_event_line(number, text, &mut self.scratch, expect_proof, TreeHash::Blake3)
                                .map_err(|_| error)?;
                        self.tree_hash = Some(TreeHash::Blake3);
                        line
                    }
                }
            }
        };
        let hash = self.tree_hash.unwrap_or(TreeHash::Rfc6962);
        let (seq, at) = (line.seq(), line.at());
        let has_proof = line.proof.is_some();
        match self.proofs {
            None => self.proofs = Some(has_proof),
            Some(expected) if expected != has_proof => {
                return Err(line_err(
                    number,
                    if has_proof {
                        "has an `inclusion_proof` but line 1 has none"
                    } else {
                        "has no `inclusion_proof` but line 1 has one"
                    },
                ));
            }
            _ => {}
        }
        if let Some(previous) = self.last_seq {
            if seq <= previous {
                return Err(line_err(
                    number,
                    format!("seq {seq} does not follow seq {previous} (lines duplicated or out of order)"),
                ));
            }
            if !has_proof && seq != previous + 1 {
                return Err(line_err(
                    number,
                    format!(
                        "seq {seq} follows seq {previous}: {} missing from an unfiltered export",
                        if seq == previous + 2 {
                            format!("seq {} is", previous + 1)
                        } else {
                            format!("seqs {}..={} are", previous + 1, seq - 1)
                        }
                    ),
                ));
            }
        }
        if let Some(previous) = self.last_at
            && at < previous
        {
            return Err(line_err(
                number,
                format!(
                    "at {} is earlier than the previous line's {}",
                    line.at_text(),
                    previous.to_rfc3339()
                ),
            ));
        }
        match &self.first {
            Some(first) if first.workspace() != line.workspace() && self.other_workspace.is_none() => {
                self.other_workspace = Some((number, line.workspace().to_owned()));
            }
            _ => {}
        }
        if has_proof {
            if let Some(proof) = &line.proof {
                self.included.push(Pending { number, seq, leaf: line.leaf, proof: proof.clone() })?;
            }
        } else {
            let range = self.range.get_or_insert_with(|| Frontier::starting_at(hash, seq));
            range.push_subtree(0, line.leaf).map_err(|_| line_err(number, "seq is out of range"))?;
        }
        self.hasher.update(text_with_newline);
        self.lines += 1;
        self.last_seq = Some(seq);
        self.last_at = Some(at);
        if self.first.is_none() {
            self.first = Some(line);
        }
        Ok(())
    }
}

/// Typed access to the manifest's members, each failure naming the member.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    path: &'static str,
    line: u64,
}

impl<'a> Fields<'a> {
    fn err(&self, member: &str, what: &str) -> ExportError {
        ExportError::Manifest { line: self.line, reason: format!("`{}{member}` {what}", self.path) }
    }
    fn get(&self, member: &str) -> Result<&'a Value, ExportError> {
        self.object.get(member).ok_or_else(|| self.err(member, "is missing"))
    }
    fn u64(&self, member: &str) -> Result<u64, ExportError> {
        self.get(member)?.as_u64().ok_or_else(|| self.err(member, "is not a non-negative integer"))
    }
    fn opt_u64(&self, member: &str) -> Result<Option<u64>, ExportError> {
        match self.get(member)? {
            Value::Null => Ok(None),
            v => {
                v.as_u64().map(Some).ok_or_else(|| self.err(member, "is not a non-negative integer or null"))
            }
        }
    }
    fn str(&self, member: &str) -> Result<&'a str, ExportError> {
        self.get(member)?.as_str().ok_or_else(|| self.err(member, "is not a string"))
    }
    fn opt_str(&self, member: &str) -> Result<Option<&'a str>, ExportError> {
        match self.get(member)? {
            Value::Null => Ok(None),
            v => v.as_str().map(Some).ok_or_else(|| self.err(member, "is not a string or null")),
        }
    }
    fn bool(&self, member: &str) -> Result<bool, ExportError> {
        self.get(member)?.as_bool().ok_or_else(|| self.err(member, "is not a boolean"))
    }
    fn hash(&self, member: &str) -> Result<Hash, ExportError> {
        parse_hash(self.str(member)?).ok_or_else(|| self.err(member, "is not 64 lowercase hex digits"))
    }
    fn hashes(&self, member: &str) -> Result<Vec<Hash>, ExportError> {
        parse_hashes(self.get(member)?)
            .ok_or_else(|| self.err(member, "is not a list of lowercase hex hashes"))
    }
    fn object(&self, member: &str, path: &'static str) -> Result<Option<Fields<'a>>, ExportError> {
        match self.object.get(member) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(Fields { object, path, line: self.line })),
            Some(_) => Err(self.err(member, "is not an object")),
        }
    }
    fn required(&self, member: &str, path: &'static str) -> Result<Fields<'a>, ExportError> {
        self.object(member, path)?.ok_or_else(|| self.err(member, "is missing"))
    }
}

/// A seq bound (number) or a time bound (RFC 3339 string) of the manifest's filters.
enum Bound {
    Seq(u64),
    Time(Timestamp, String),
}

fn filter_bound(fields: &Fields<'_>, member: &str) -> Result<Option<Bound>, ExportError> {
    match fields.get(member)? {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(|s| Some(Bound::Seq(s)))
            .ok_or_else(|| fields.err(member, "is not a seq or a time")),
        Value::String(s) => Timestamp::parse_rfc3339(s)
            .map(|t| Some(Bound::Time(t, s.clone())))
            .ok_or_else(|| fields.err(member, "is not an RFC 3339 time")),
        _ => Err(fields.err(member, "is not a seq, a time or null")),
    }
}

/// Verifies an export read from `reader` against the log's public key, and, with `trusted`
/// (a signed checkpoint note saved earlier), that the export's anchor extends it.
///
/// # Errors
///
/// The first problem found, naming the 1-based line it is on where there is one.
pub fn verify_export(
    reader: impl BufRead,
    key: &VerifierKey,
    trusted: Option<&str>,
) -> Result<ExportSummary, ExportError> {
    verify_export_witnessed(reader, key, trusted, None)
}

/// [`verify_export`], and with `witnesses` also that at least their quorum validly
/// cosigned the anchor checkpoint ([`Quorum::check`] on the manifest's checkpoint note;
/// docs/export-format.md, "Witness cosignatures"). The trusted witnesses that did are in
/// [`ExportSummary::cosigned`].
///
/// # Errors
///
/// Those of [`verify_export`]; a quorum that is not met is a manifest error.
pub fn verify_export_witnessed(
    mut reader: impl BufRead,
    key: &VerifierKey,
    trusted: Option<&str>,
    witnesses: Option<&Quorum>,
) -> Result<ExportSummary, ExportError> {
    let trusted = match trusted {
        Some(note) => Some(
            open_checkpoint(note, key)
                .map_err(|e| ExportError::Trusted(format!("cannot be opened with this public key: {e}")))?,
        ),
        None => None,
    };
    let mut seen = Seen::default();
    let mut pending = Vec::new();
    let mut next = Vec::new();
    let mut number = 1u64;
    if !read_line(&mut reader, &mut pending, number)? {
        return Err(ExportError::Input("the export is empty: no manifest".into()));
    }
    loop {
        if !read_line(&mut reader, &mut next, number + 1)? {
            break;
        }
        if pending.last() != Some(&b'\n') {
            return Err(line_err(number, "does not end with a newline"));
        }
        seen.add(number, &pending)?;
        std::mem::swap(&mut pending, &mut next);
        number += 1;
    }
    // `pending` is the last line: it must be the manifest.
    if pending.last() != Some(&b'\n') {
        return Err(ExportError::Input(format!(
            "line {number} does not end with a newline: the export is truncated (no complete manifest)"
        )));
    }
    let text = &pending[..pending.len() - 1];
    let is_manifest = serde_json::from_slice::<Value>(text)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("manifest")))
        .unwrap_or(false);
    if !is_manifest {
        // Report an event line as such, then say what is missing.
        seen.add(number, &pending)?;
        return Err(ExportError::Input(format!(
            "the last line ({number}) is not a manifest: the export is truncated"
        )));
    }
    check_manifest(number, text, seen, key, trusted.as_ref(), witnesses)
}

fn check_manifest(
    line: u64,
    text: &[u8],
    mut seen: Seen,
    key: &VerifierKey,
    trusted: Option<&Checkpoint>,
    witnesses: Option<&Quorum>,
) -> Result<ExportSummary, ExportError> {
    let bad = |reason: String| ExportError::Manifest { line, reason };
    let value: Value = serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if canonical_json(&value).as_bytes() != text {
        return Err(bad("not in canonical form (keys sorted, no whitespace)".into()));
    }
    if value.as_object().map(Map::len) != Some(1) {
        return Err(bad("the manifest line must hold only `manifest`".into()));
    }
    let manifest = value
        .get("manifest")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`manifest` is not an object".into()))?;
    let m = Fields { object: manifest, path: "", line };
    let mut included = std::mem::take(&mut seen.included);
    let seen = &seen;

    // 1. The signature, before anything else is believed.
    let tree_hash = check_signature(&m, key, seen)?;
    // 2. The anchor checkpoint.
    let (anchor, cosigned) = check_anchor(&m, key, witnesses)?;
    // 3. The range: its ends must be the first and last lines.
    let range = check_range(&m, seen, &anchor)?;
    // 4. Filters: every line must satisfy them; what the export proves follows from them.
    let (workspace, completeness) = check_filters(&m, seen, &anchor, &range, tree_hash)?;
    let filtered = workspace.is_some();
    // 5. The lines are leaves of the anchor's tree.
    check_leaves(&m, seen, &mut included, &anchor, &range, tree_hash, filtered)?;
    // 6. Count and hash of the exact bytes of the lines.
    let lines = m.u64("lines")?;
    if lines != seen.lines {
        return Err(bad(format!("`lines` says {lines} event lines, the export has {}", seen.lines)));
    }
    if m.hash("lines_hash")? != seen.hasher.finalize() {
        return Err(bad("`lines_hash` does not match the lines (a line was altered)".into()));
    }

    // 7. The anchor extends the trusted checkpoint.
    let trusted_size = check_trusted(&m, trusted, &anchor, tree_hash)?;
    let Range { first_seq, last_seq, first_at, last_at } = range;
    Ok(ExportSummary {
        origin: anchor.origin,
        lines,
        first_seq,
        last_seq,
        first_at: first_at.map(str::to_owned),
        last_at: last_at.map(str::to_owned),
        workspace: workspace.map(str::to_owned),
        filtered,
        checkpoint_size: anchor.size,
        checkpoint_root: anchor.root,
        tree_hash,
        trusted_size,
        completeness,
        cosigned,
    })
}

/// The manifest's signature by the log's key, its format version and tree hash (which
/// must be the one the lines' leaf hashes use).
fn check_signature(m: &Fields<'_>, key: &VerifierKey, seen: &Seen) -> Result<TreeHash, ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: m.line, reason };
    let manifest = m.object;
    let signature = STANDARD
        .decode(m.str("signature")?)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| bad("`signature` is not the base64 of 64 bytes".into()))?;
    key.public_key()
        .verify_strict(&manifest_message(manifest), &Signature::from_bytes(&signature))
        .map_err(|_| bad("the signature does not verify with this public key".into()))?;
    let version = m.u64("version")?;
    if version != FORMAT_VERSION {
        return Err(bad(format!("unsupported export format version {version}")));
    }
    let tree_hash = match manifest.get(TREE_HASH_MEMBER) {
        None => None,
        Some(value) => {
            Some(value.as_str().ok_or_else(|| bad(format!("`{TREE_HASH_MEMBER}` is not a string")))?)
        }
    };
    let tree_hash = manifest_tree_hash(tree_hash)
        .ok_or_else(|| bad(format!("`{TREE_HASH_MEMBER}` names no known tree hash (sha256 or blake3)")))?;
    if let Some(lines) = seen.tree_hash
        && lines != tree_hash
    {
        return Err(line_err(
            1,
            format!(
                "`leaf_hash` is the {} leaf hash of `raw`, but the manifest says the tree hashes with {}",
                lines.name(),
                tree_hash.name()
            ),
        ));
    }

    Ok(tree_hash)
}

/// The anchor checkpoint: signed by the log's key, cosigned as the quorum asks, of the
/// manifest's origin.
fn check_anchor(
    m: &Fields<'_>,
    key: &VerifierKey,
    witnesses: Option<&Quorum>,
) -> Result<(Checkpoint, Vec<Cosigned>), ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: m.line, reason };
    let cp = m.required("checkpoint", "checkpoint.")?;
    let anchor = open_checkpoint(cp.str("note")?, key)
        .map_err(|e| bad(format!("the checkpoint note does not open with this public key: {e}")))?;
    if cp.u64("size")? != anchor.size || cp.hash("root_hash")? != anchor.root {
        return Err(bad("`checkpoint.size`/`root_hash` differ from the signed note".into()));
    }
    // Cosignature lines are signature lines by other keys: opening the note ignored them.
    let cosigned = match witnesses {
        Some(quorum) => quorum
            .check(cp.str("note")?)
            .map_err(|e| bad(format!("witness cosignatures of the checkpoint: {e}")))?,
        None => Vec::new(),
    };
    let origin = m.str("origin")?;
    if origin != anchor.origin {
        return Err(bad(format!("`origin` {origin:?} differs from the checkpoint's {:?}", anchor.origin)));
    }

    Ok((anchor, cosigned))
}

/// The manifest's range: what the first and last lines hold, within the anchor.
struct Range<'a> {
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    first_at: Option<&'a str>,
    last_at: Option<&'a str>,
}

/// The range's ends must be the first and last lines, and the anchor must cover them.
fn check_range<'a>(m: &Fields<'a>, seen: &Seen, anchor: &Checkpoint) -> Result<Range<'a>, ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: m.line, reason };
    let range = m.required("range", "range.")?;
    let first_seq = range.opt_u64("first_seq")?;
    let last_seq = range.opt_u64("last_seq")?;
    let first_at = range.opt_str("from")?;
    let last_at = range.opt_str("to")?;
    let seen_first_seq = seen.first.as_ref().map(CheckedLine::seq);
    let show = |seq: Option<u64>| seq.map_or("none".to_owned(), |s| s.to_string());
    if first_seq != seen_first_seq {
        let reason = format!(
            "the manifest's range starts at seq {}, the first line holds seq {} (lines missing or added at the start)",
            show(first_seq),
            show(seen_first_seq)
        );
        return Err(if seen.lines > 0 { line_err(1, reason) } else { bad(reason) });
    }
    if last_seq != seen.last_seq {
        let reason = format!(
            "the manifest's range ends at seq {}, the last line holds seq {} (lines missing or added at the end)",
            show(last_seq),
            show(seen.last_seq)
        );
        return Err(if seen.lines > 0 { line_err(seen.lines, reason) } else { bad(reason) });
    }
    let seen_first_at = seen.first.as_ref().map(CheckedLine::at_text);
    let seen_last_at = seen.last_at.map(Timestamp::to_rfc3339);
    if first_at != seen_first_at.as_deref() || last_at != seen_last_at.as_deref() {
        return Err(bad("`range.from`/`range.to` are not the times of the first and last lines".into()));
    }
    if let Some(last) = last_seq
        && last >= anchor.size
    {
        return Err(bad(format!("the checkpoint of {} events does not cover seq {last}", anchor.size)));
    }

    Ok(Range { first_seq, last_seq, first_at, last_at })
}

/// The filters: every line satisfies them, an unfiltered export holds the whole requested
/// range, and time bounds are proved by the edges. Returns the workspace filter and what
/// the export proves.
fn check_filters<'a>(
    m: &Fields<'a>,
    seen: &Seen,
    anchor: &Checkpoint,
    range: &Range<'_>,
    tree_hash: TreeHash,
) -> Result<(Option<&'a str>, Completeness), ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: m.line, reason };
    let (first_seq, last_seq) = (range.first_seq, range.last_seq);
    let filters = m.required("filters", "filters.")?;
    let workspace = filters.opt_str("workspace")?;
    let filtered = m.bool("filtered")?;
    if filtered != workspace.is_some() {
        return Err(bad("`filtered` must be true exactly when `filters.workspace` is set".into()));
    }
    if seen.lines > 0 && seen.proofs != Some(filtered) {
        return Err(ExportError::Line {
            line: 1,
            reason: if filtered {
                "a filtered export's lines need an `inclusion_proof`".into()
            } else {
                "an unfiltered export's lines carry no `inclusion_proof`".into()
            },
        });
    }
    if let (Some(ws), Some(first)) = (workspace, &seen.first) {
        if first.workspace() != ws {
            return Err(line_err(1, format!("workspace {} is not the filter's {ws}", first.workspace())));
        }
        if let Some((n, other)) = &seen.other_workspace {
            return Err(line_err(*n, format!("workspace {other} is not the filter's {ws}")));
        }
    }
    if let (Some(first), Some(last), Some(last_time)) = (&seen.first, seen.last_seq, seen.last_at) {
        match filter_bound(&filters, "from")? {
            Some(Bound::Seq(s)) if first.seq() < s => {
                return Err(line_err(1, format!("seq {} is before the filter's from={s}", first.seq())));
            }
            Some(Bound::Time(t, text)) if first.at() < t => {
                return Err(line_err(
                    1,
                    format!("at {} is before the filter's from={text}", first.at_text()),
                ));
            }
            _ => {}
        }
        match filter_bound(&filters, "to")? {
            Some(Bound::Seq(s)) if last >= s => {
                return Err(line_err(seen.lines, format!("seq {last} is not before the filter's to={s}")));
            }
            Some(Bound::Time(t, text)) if last_time >= t => {
                return Err(line_err(
                    seen.lines,
                    format!("at {} is not before the filter's to={text}", last_time.to_rfc3339()),
                ));
            }
            _ => {}
        }
    }

    // An unfiltered export with seq bounds (or none) must hold the whole requested range.
    if !filtered {
        let lo = match filter_bound(&filters, "from")? {
            None => Some(0),
            Some(Bound::Seq(s)) => Some(s.min(anchor.size)),
            Some(Bound::Time(..)) => None,
        };
        let hi = match filter_bound(&filters, "to")? {
            None => Some(anchor.size),
            Some(Bound::Seq(s)) => Some(s.min(anchor.size)),
            Some(Bound::Time(..)) => None,
        };
        match (first_seq, last_seq) {
            (Some(first), Some(last)) => {
                if let Some(lo) = lo.filter(|&lo| lo != first) {
                    return Err(line_err(
                        1,
                        format!("seq {first}, but the requested range starts at seq {lo}"),
                    ));
                }
                if let Some(hi) = hi.filter(|&hi| hi != last + 1) {
                    return Err(line_err(
                        seen.lines,
                        format!("seq {last} ends the export, but the requested range ends before seq {hi}"),
                    ));
                }
            }
            _ => {
                if let (Some(lo), Some(hi)) = (lo, hi)
                    && lo < hi
                {
                    return Err(bad(format!(
                        "no lines, but the checkpoint holds seqs {lo}..{hi} of the requested range"
                    )));
                }
            }
        }
    }

    // Time bounds were resolved by the server: the signed events just outside the range
    // prove that it resolved them rightly.
    let edges = m.object("edges", "edges.")?;
    let completeness = if filtered {
        if edges.is_some() {
            return Err(bad("`edges` is only for unfiltered exports".into()));
        }
        Completeness::LinesIncluded
    } else {
        let from = filter_bound(&filters, "from")?;
        let to = filter_bound(&filters, "to")?;
        match edges {
            Some(edges) => {
                check_edges(&edges, from, to, first_seq.zip(last_seq), anchor, tree_hash)?;
                Completeness::Complete
            }
            None => {
                let start_proved = !matches!(from, Some(Bound::Time(..)));
                let end_proved = !matches!(to, Some(Bound::Time(..)));
                if start_proved && end_proved {
                    Completeness::Complete
                } else {
                    Completeness::InteriorOnly { start_proved, end_proved }
                }
            }
        }
    };

    Ok((workspace, completeness))
}

/// The lines are leaves of the anchor's tree: each by its inclusion proof (filtered), or
/// all together by the range proof (unfiltered).
fn check_leaves(
    m: &Fields<'_>,
    seen: &Seen,
    included: &mut PendingProofs,
    anchor: &Checkpoint,
    range: &Range<'_>,
    tree_hash: TreeHash,
    filtered: bool,
) -> Result<(), ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: m.line, reason };
    let (first_seq, last_seq) = (range.first_seq, range.last_seq);
    if filtered {
        included.check_each(|Pending { number, seq, leaf, proof }| {
            verify_inclusion(tree_hash, *seq, anchor.size, leaf, proof, &anchor.root).map_err(|e| {
                line_err(
                    *number,
                    format!("the inclusion proof of seq {seq} does not verify against the checkpoint: {e}"),
                )
            })
        })?;
    } else {
        match (m.object("range_proof", "range_proof.")?, &seen.range, first_seq, last_seq) {
            (None, None, None, None) => {}
            (Some(proof), Some(range), Some(first), Some(last)) => {
                let peaks = proof.hashes("left_peaks")?;
                let consistency = proof.hashes("consistency")?;
                let mut tree = Frontier::from_parts(tree_hash, first, peaks).map_err(|_| {
                    bad(format!(
                        "`range_proof.left_peaks` needs {} peaks for size {first}",
                        first.count_ones()
                    ))
                })?;
                tree.append(range).map_err(|_| bad("the range does not fit the tree".into()))?;
                verify_consistency(tree_hash, last + 1, anchor.size, &tree.root(), &anchor.root, &consistency).map_err(
                    |e| {
                        bad(format!(
                            "the lines are not leaves {first}..={last} of the checkpoint's tree (an event is missing, added, reordered or altered): {e}"
                        ))
                    },
                )?;
            }
            (None, Some(_), _, _) => return Err(bad("`range_proof` is missing".into())),
            _ => return Err(bad("`range_proof` is set but the export has no lines".into())),
        }
    }

    Ok(())
}

/// The anchor extends the checkpoint the auditor trusts (its size, if one was given).
fn check_trusted(
    m: &Fields<'_>,
    trusted: Option<&Checkpoint>,
    anchor: &Checkpoint,
    tree_hash: TreeHash,
) -> Result<Option<u64>, ExportError> {
    Ok(match trusted {
        None => None,
        Some(old) => {
            if old.origin != anchor.origin {
                return Err(ExportError::Trusted(format!(
                    "its origin {:?} is not the export's {:?}",
                    old.origin, anchor.origin
                )));
            }
            if old.size > anchor.size {
                return Err(ExportError::Trusted(format!(
                    "it covers {} events, more than the export's anchor ({}): export again to get a newer anchor",
                    old.size, anchor.size
                )));
            }
            if old.size == anchor.size {
                if old.root != anchor.root {
                    return Err(ExportError::Trusted(format!(
                        "it has the same size ({}) as the export's anchor but a different root: the log forked",
                        old.size
                    )));
                }
            } else {
                let from = m.object("consistency_from", "consistency_from.")?;
                let proof = match &from {
                    Some(f) if f.u64("size")? == old.size => f.hashes("proof")?,
                    _ => {
                        return Err(ExportError::Trusted(format!(
                            "the export carries no consistency proof from size {}: re-export with consistency_from={}",
                            old.size, old.size
                        )));
                    }
                };
                verify_consistency(tree_hash, old.size, anchor.size, &old.root, &anchor.root, &proof)
                    .map_err(|e| {
                        ExportError::Trusted(format!(
                            "the export's anchor ({} events) does not extend it ({} events): {e}",
                            anchor.size, old.size
                        ))
                    })?;
            }
            Some(old.size)
        }
    })
}

/// Checks the manifest's `edges` of an unfiltered export: `before` and `after` are the
/// events just outside the range (or `null` at the start or end of the anchor's tree),
/// each exactly the line form of its `raw` with an inclusion proof in the anchor; they
/// touch the lines (or each other, for an empty export); and each lies outside the
/// requested bound on its side. With the log's times never decreasing, no event of the
/// requested range is then missing.
fn check_edges(
    edges: &Fields<'_>,
    from: Option<Bound>,
    to: Option<Bound>,
    lines: Option<(u64, u64)>,
    anchor: &Checkpoint,
    hash: TreeHash,
) -> Result<(), ExportError> {
    let bad = |reason: String| ExportError::Manifest { line: edges.line, reason };
    let before = check_edge(edges, "before", anchor, hash)?;
    let after = check_edge(edges, "after", anchor, hash)?;
    // An included seq is below the anchor's size, so `seq + 1` cannot overflow.
    let start = before.as_ref().map_or(0, |(seq, _)| seq + 1);
    let end = after.as_ref().map_or(anchor.size, |(seq, _)| *seq);
    match lines {
        Some((first, last)) => {
            if start != first {
                return Err(bad(format!(
                    "`edges.before` ends the log before seq {start}, but the first line is seq {first}: the edges must touch the lines (lines missing or added at the start)"
                )));
            }
            if end != last + 1 {
                return Err(bad(format!(
                    "`edges.after` resumes the log at seq {end}, but the last line is seq {last}: the edges must touch the lines (lines missing or added at the end)"
                )));
            }
        }
        None if start != end => {
            return Err(bad(format!("the export has no lines, but its edges leave seqs {start}..{end} out")));
        }
        None => {}
    }
    let size = anchor.size;
    match from {
        Some(Bound::Time(t, text)) => {
            if let Some((seq, at)) = before
                && at >= t
            {
                return Err(bad(format!(
                    "`edges.before` (seq {seq}) is at {}, inside the window from={text}: an event at the start of the window is missing",
                    at.to_rfc3339()
                )));
            }
        }
        Some(Bound::Seq(s)) if start != s.min(size) => {
            return Err(bad(format!("the edges start the range at seq {start}, not at from={s}")));
        }
        None if start != 0 => {
            return Err(bad(format!("the edges start the range at seq {start}, not at the log's start")));
        }
        _ => {}
    }
    match to {
        Some(Bound::Time(t, text)) => {
            if let Some((seq, at)) = after
                && at < t
            {
                return Err(bad(format!(
                    "`edges.after` (seq {seq}) is at {}, inside the window to={text}: an event at the end of the window is missing",
                    at.to_rfc3339()
                )));
            }
        }
        Some(Bound::Seq(s)) if end != start.max(s.min(size)) => {
            return Err(bad(format!("the edges end the range before seq {end}, not at to={s}")));
        }
        None if end != size => {
            return Err(bad(format!(
                "the edges end the range before seq {end}, not at the checkpoint's size {size}"
            )));
        }
        _ => {}
    }
    Ok(())
}

/// One range edge (`edges.before` or `edges.after`): `None` for `null`, else the seq and
/// time of the event it holds, once its line form and inclusion proof are checked.
fn check_edge(
    edges: &Fields<'_>,
    member: &str,
    anchor: &Checkpoint,
    hash: TreeHash,
) -> Result<Option<(u64, Timestamp)>, ExportError> {
    let value = edges.get(member)?;
    if value.is_null() {
        return Ok(None);
    }
    let object = value.as_object().ok_or_else(|| edges.err(member, "is not an object or null"))?;
    let raw = object
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|text| STANDARD.decode(text).ok())
        .ok_or_else(|| edges.err(member, "has no `raw` in standard padded base64"))?;
    let event = decode_event(&raw)
        .map_err(|e| edges.err(member, &format!("holds no canonical event encoding: {e}")))?;
    let proof = object
        .get("inclusion_proof")
        .and_then(parse_hashes)
        .ok_or_else(|| edges.err(member, "has no `inclusion_proof` of at most 64 lowercase hex hashes"))?;
    let expected = line_value(&event, &raw, Some(&proof), hash);
    if *value != expected {
        return Err(
            edges.err(member, &format!("is not what its `raw` says: {}", first_difference(value, &expected)))
        );
    }
    verify_inclusion(hash, event.seq, anchor.size, &hash.leaf(&raw), &proof, &anchor.root).map_err(|e| {
        edges.err(member, &format!("(seq {}) is not included in the checkpoint: {e}", event.seq))
    })?;
    Ok(Some((event.seq, event.at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    use crate::export::{LinesHasher, manifest_line, sign_manifest, write_event_line};
    use crate::note::{Checkpoint, NoteSigner, sign_checkpoint};
    use keyledger_core::{Actor, KeyId, KeyRef, Payload, RequestId, encode_event};

    fn log_signer() -> NoteSigner {
        NoteSigner::new("example.org/log", SigningKey::from_bytes(&[1; 32])).unwrap()
    }

    /// An unfiltered export of a whole 3-event log whose tree hashes with `lines_hash`,
    /// its manifest's `tree_hash` member set to `member` (absent for `None`).
    fn export(lines_hash: TreeHash, member: Option<&str>) -> String {
        let signer = log_signer();
        let mut text = String::new();
        let mut hasher = LinesHasher::new();
        let mut tree = Frontier::new(lines_hash);
        let mut times = Vec::new();
        for seq in 0..3u64 {
            let event = Event {
                seq,
                at: Timestamp(1_700_000_000_000_000 + seq as i64),
                actor: Actor::System,
                request_id: RequestId::from_bytes([seq as u8 + 1; 16]),
                payload: Payload::Expired(KeyRef {
                    key_id: KeyId::from_bytes([7; 16]),
                    workspace: "acme".parse().unwrap(),
                }),
            };
            let mut line = String::new();
            tree.push(write_event_line(&event, &encode_event(&event), None, lines_hash, &mut line));
            line.push('\n');
            hasher.update(line.as_bytes());
            text.push_str(&line);
            times.push(event.at.to_rfc3339());
        }
        let note = sign_checkpoint(&Checkpoint::new("example.org/log", 3, tree.root()), &signer).unwrap();
        let mut manifest = serde_json::json!({
            "version": 1,
            "origin": "example.org/log",
            "range": {"first_seq": 0, "last_seq": 2, "from": times[0], "to": times[2]},
            "filters": {"workspace": null, "from": null, "to": null},
            "filtered": false,
            "lines": 3,
            "lines_hash": hex::encode(hasher.finalize()),
            "checkpoint": {"note": note, "size": 3, "root_hash": hex::encode(tree.root())},
            "range_proof": {"left_peaks": [], "consistency": []},
            "consistency_from": null,
        });
        if let Some(name) = member {
            manifest[TREE_HASH_MEMBER] = name.into();
        }
        let Value::Object(mut manifest) = manifest else { unreachable!("an object") };
        sign_manifest(&mut manifest, &signer);
        text.push_str(&manifest_line(manifest));
        text.push('\n');
        text
    }

    #[test]
    fn sha256_exports_and_format_1_exports_without_tree_hash_both_verify() {
        let key = log_signer().verifier();
        let summary =
            verify_export(export(TreeHash::Rfc6962, Some("sha256")).as_bytes(), &key, None).unwrap();
        assert_eq!((summary.lines, summary.tree_hash), (3, TreeHash::Rfc6962));
        assert!(summary.to_string().contains("sha256 root"), "{summary}");
        // An auditor's archive from before format 2: no `tree_hash`, BLAKE3 leaves.
        let summary = verify_export(export(TreeHash::Blake3, None).as_bytes(), &key, None).unwrap();
        assert_eq!((summary.lines, summary.tree_hash), (3, TreeHash::Blake3));
        let summary = verify_export(export(TreeHash::Blake3, Some("blake3")).as_bytes(), &key, None).unwrap();
        assert_eq!(summary.tree_hash, TreeHash::Blake3);
    }

    #[test]
    fn a_manifest_must_name_the_hash_its_lines_use() {
        let key = log_signer().verifier();
        for (lines, member) in [
            (TreeHash::Rfc6962, None),
            (TreeHash::Rfc6962, Some("blake3")),
            (TreeHash::Blake3, Some("sha256")),
        ] {
            let error = verify_export(export(lines, member).as_bytes(), &key, None).unwrap_err();
            assert_eq!(error.line(), Some(1), "{error}");
            assert!(error.to_string().contains("the manifest says the tree hashes with"), "{error}");
        }
        let error =
            verify_export(export(TreeHash::Rfc6962, Some("SHA-256")).as_bytes(), &key, None).unwrap_err();
        assert!(error.to_string().contains("names no known tree hash"), "{error}");
    }

    #[test]
    fn a_line_hashed_otherwise_than_line_1_is_rejected() {
        let key = log_signer().verifier();
        let sha = export(TreeHash::Rfc6962, Some("sha256"));
        let blake = export(TreeHash::Blake3, Some("sha256"));
        // Line 2 of the BLAKE3 export in the SHA-256 one.
        let mut lines: Vec<&str> = sha.lines().collect();
        let other: Vec<&str> = blake.lines().collect();
        lines[1] = other[1];
        let mixed: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let error = verify_export(mixed.as_bytes(), &key, None).unwrap_err();
        assert_eq!(error.line(), Some(2), "{error}");
        assert!(error.to_string().contains("`leaf_hash` is not the hash of `raw`"), "{error}");
    }

    #[test]
    fn garbage_never_panics() {
        let key = crate::note::NoteSigner::new("log", SigningKey::from_bytes(&[3; 32])).unwrap().verifier();
        for input in [
            &b""[..],
            b"\n",
            b"{}\n",
            b"{\"manifest\":1}\n",
            b"{\"manifest\":{}}\n",
            b"{\"raw\":\"AQ==\"}\n{\"manifest\":{}}\n",
            b"[1]\n{\"manifest\":{}}",
            b"\xff\xfe\n",
        ] {
            assert!(verify_export(input, &key, None).is_err());
            assert!(verify_export(input, &key, Some("x")).is_err());
        }
    }
}
