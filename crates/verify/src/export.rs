//! Offline verification of keyledger exports (contract §6; format in
//! `docs/export-format.md`).
//!
//! An export is JSON Lines: one line per event, then one `{"manifest": {…}}` line. Every
//! line is the canonical JSON ([`canonical_json`]) of its value followed by `\n`. An event
//! line is the event's JSON form ([`keyledger_core::json::event_json`]) plus `raw` (standard
//! base64 of the stored event bytes), `leaf_hash` (hex of `BLAKE3(0x00 ‖ raw)`) and, in a
//! filtered export, `inclusion_proof` (hex hashes, RFC 9162, against the anchor checkpoint).
//!
//! [`verify_export`] reads an export once, front to back, and checks everything the format
//! promises: the manifest's Ed25519 signature, the signed checkpoint it is anchored to, that
//! every line is exactly what its `raw` bytes render to, the order of the lines, their count
//! and hash, and that the lines are leaves of the checkpoint's tree — for an unfiltered
//! export, that they are *all* the leaves of their range (a compact range of the lines
//! folded into the manifest's `left_peaks`, then a consistency proof to the checkpoint).
//! With a trusted checkpoint saved earlier, it also checks that the anchor extends it.
//!
//! Memory: O(log n) for an unfiltered export; a filtered export keeps each line's seq, leaf
//! hash and inclusion proof until the manifest (at the end) names the tree they prove into.
//! No function here panics on any input.

use crate::merkle::{Hash, leaf_hash, node_hash, verify_consistency, verify_inclusion};
use crate::note::{Checkpoint, VerifierKey, open_checkpoint};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use keyledger_core::json::{actor_text, event_json, metadata_json, policy_json};
use keyledger_core::{Actor, Event, Payload, Timestamp, UsageContext, decode_event};
use serde_json::{Map, Value};
use std::fmt;
use std::io::BufRead;

/// The version of the export format this module reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// What the manifest signature is computed over, before the canonical manifest JSON.
pub const MANIFEST_SIGNATURE_CONTEXT: &[u8] = b"keyledger-export-manifest-v1\n";

/// The longest line accepted (a 1 MiB event in base64 beside its JSON fits easily).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Why an export was rejected. `line` is 1-based; the manifest is the last line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// An event line is wrong.
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    /// The manifest (or something only the manifest can check) is wrong.
    #[error("manifest (line {line}): {reason}")]
    Manifest { line: u64, reason: String },
    /// The input is not a complete export (empty, unreadable, no manifest).
    #[error("{0}")]
    Input(String),
    /// The trusted checkpoint cannot be opened, or the anchor does not extend it.
    #[error("trusted checkpoint: {0}")]
    Trusted(String),
}

impl ExportError {
    /// The 1-based number of the line the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            ExportError::Line { line, .. } | ExportError::Manifest { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// What a valid export holds and what was proven about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub origin: String,
    /// Event lines (the manifest excluded).
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    pub workspace: Option<String>,
    pub filtered: bool,
    pub checkpoint_size: u64,
    pub checkpoint_root: Hash,
    /// The size of the trusted checkpoint the anchor was proven to extend.
    pub trusted_size: Option<u64>,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "export valid: {} events", self.lines)?;
        if let (Some(first), Some(last)) = (self.first_seq, self.last_seq) {
            write!(f, ", seq {first}..={last}")?;
        }
        if let (Some(from), Some(to)) = (&self.first_at, &self.last_at) {
            write!(f, " ({from} .. {to})")?;
        }
        match (&self.workspace, self.filtered) {
            (Some(ws), _) => write!(f, ", workspace {ws} (each line proven in the tree)")?,
            (None, _) if self.lines > 0 => write!(f, ", complete range (no event missing)")?,
            _ => {}
        }
        write!(
            f,
            "; anchored to the checkpoint of {} events, root {}, signed by {}",
            self.checkpoint_size,
            hex::encode(self.checkpoint_root),
            self.origin
        )?;
        if let Some(size) = self.trusted_size {
            write!(f, "; consistent with the trusted checkpoint of {size} events")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Canonical JSON, lines and the manifest signature (shared with the producer).
// ---------------------------------------------------------------------------------------

/// The canonical JSON text of a value: no whitespace, object keys sorted by their UTF-8
/// bytes, strings escaped as `serde_json` does (only `"`, `\` and U+0000–U+001F; `\b \f \n
/// \r \t` short forms, `\u00xx` lowercase otherwise), numbers as `serde_json` writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical JSON text of `value` to `out` (see [`canonical_json`]).
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // A `BTreeMap` already iterates in byte order; an insertion-ordered map may not.
            if !entries.is_sorted_by(|a, b| a.0.as_bytes() <= b.0.as_bytes()) {
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else {
        // Serializing a number to a string cannot fail.
        out.push_str(&serde_json::to_string(n).unwrap_or_default());
    }
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it.
pub fn write_json_str(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    // Most strings need no escape: one branch-free pass to tell.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so a char boundary.
        out.push_str(&text[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The value of an export line for `event` stored as `raw`, with an inclusion proof in a
/// filtered export. This is the definition; [`write_event_line`] writes the same text
/// faster.
pub fn line_value(event: &Event, raw: &[u8], inclusion_proof: Option<&[Hash]>) -> Value {
    let mut value = event_json(event);
    if let Value::Object(object) = &mut value {
        object.insert("raw".into(), Value::String(STANDARD.encode(raw)));
        object.insert("leaf_hash".into(), Value::String(hex::encode(leaf_hash(raw))));
        if let Some(proof) = inclusion_proof {
            object.insert("inclusion_proof".into(), hashes_json(proof));
        }
    }
    value
}

/// A member value for [`write_object`], borrowed where it can be.
enum Member<'a> {
    Null,
    Bool(bool),
    U64(u64),
    Str(&'a str),
    String(String),
    /// Shown with `Display` (ids, addresses, timestamps), then escaped if it needs it.
    Display(&'a dyn std::fmt::Display),
    OptStr(Option<&'a str>),
    Strs(&'a [String]),
    /// Already canonical JSON text.
    Json(String),
    Hashes(&'a [Hash]),
    Base64(&'a [u8]),
    Hex(&'a [u8; 32]),
}

/// Appends the canonical JSON object of `members` (keys unique) to `out`: keys sorted by
/// their bytes, each value written as `serde_json` would write its `Value`.
fn write_object(members: &mut [(&str, Member<'_>)], out: &mut String) {
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(key, out);
        out.push(':');
        match member {
            Member::Null | Member::OptStr(None) => out.push_str("null"),
            Member::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Member::U64(n) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{n}");
            }
            Member::Str(s) | Member::OptStr(Some(s)) => write_json_str(s, out),
            Member::String(s) => write_json_str(s, out),
            Member::Display(value) => {
                use std::fmt::Write as _;
                let start = out.len();
                let _ = write!(out, "\"{value}\"");
                if out.as_bytes()[start + 1..out.len() - 1].iter().any(|&b| needs_escape(b)) {
                    let text = out[start + 1..out.len() - 1].to_owned();
                    out.truncate(start);
                    write_json_str(&text, out);
                }
            }
            Member::Strs(items) => {
                out.push('[');
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_json_str(item, out);
                }
                out.push(']');
            }
            Member::Json(text) => out.push_str(text),
            Member::Hashes(hashes) => {
                out.push('[');
                for (j, hash) in hashes.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_hex(hash, out);
                }
                out.push(']');
            }
            Member::Base64(bytes) => {
                // Base64 needs no escaping.
                out.push('"');
                STANDARD.encode_string(bytes, out);
                out.push('"');
            }
            Member::Hex(hash) => push_hex(hash, out),
        }
    }
    out.push('}');
}

fn push_hex(hash: &[u8; 32], out: &mut String) {
    let mut digits = [0u8; 64];
    // 64 is exactly twice 32: this cannot fail.
    let _ = hex::encode_to_slice(hash, &mut digits);
    out.push('"');
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    out.push('"');
}

fn opt_display<T: std::fmt::Display>(value: &Option<T>) -> Member<'_> {
    value.as_ref().map_or(Member::Null, |v| Member::Display(v))
}

fn opt_time(value: Option<Timestamp>) -> Member<'static> {
    value.map_or(Member::Null, |t| Member::String(t.to_rfc3339()))
}

fn context_text(context: &UsageContext) -> String {
    let mut out = String::with_capacity(160);
    write_object(
        &mut [
            ("ip", opt_display(&context.ip)),
            ("user_agent", Member::OptStr(context.user_agent.as_deref())),
            ("method", Member::OptStr(context.method.as_deref())),
            ("path", Member::OptStr(context.path.as_deref())),
            ("request_id", Member::OptStr(context.request_id.as_deref())),
            ("scopes", Member::Strs(&context.scopes)),
            ("resource", Member::OptStr(context.resource.as_deref())),
        ],
        &mut out,
    );
    out
}

fn value_text(value: &Value) -> String {
    canonical_json(value)
}

/// Appends the export line of `event` stored as `raw` (without its `\n`) to `out`: exactly
/// `canonical_json(&line_value(event, raw, inclusion_proof))`, without building the
/// `Value` (the export's hot path, in the producer and the verifier). The member mapping
/// mirrors [`keyledger_core::json::event_json`]; a test compares the two on every kind.
///
/// Returns the leaf hash of `raw` (the line's `leaf_hash`).
pub fn write_event_line(
    event: &Event,
    raw: &[u8],
    inclusion_proof: Option<&[Hash]>,
    out: &mut String,
) -> Hash {
    let payload = &event.payload;
    let leaf = leaf_hash(raw);
    let key_id = payload.key_id();
    let mut members: Vec<(&str, Member<'_>)> = Vec::with_capacity(20);
    members.extend([
        ("seq", Member::U64(event.seq)),
        ("at", Member::String(event.at.to_rfc3339())),
        ("kind", Member::Str(payload.kind().as_str())),
        ("workspace", Member::Str(payload.workspace().as_str())),
        ("key_id", opt_display(&key_id)),
        ("actor", actor_member(&event.actor)),
        ("request_id", Member::Display(&event.request_id)),
        ("raw", Member::Base64(raw)),
        ("leaf_hash", Member::Hex(&leaf)),
    ]);
    if let Some(proof) = inclusion_proof {
        members.push(("inclusion_proof", Member::Hashes(proof)));
    }
    match payload {
        Payload::Created(e) => members.extend([
            ("name", Member::Str(&e.name)),
            ("hint", Member::Str(&e.hint)),
            ("environment", Member::Str(e.environment.as_str())),
            ("scopes", Member::Strs(&e.scopes)),
            ("resources", Member::Strs(&e.resources)),
            ("owner", Member::OptStr(e.owner.as_deref())),
            ("metadata", Member::Json(value_text(&metadata_json(&e.metadata)))),
            ("expires_at", opt_time(e.expires_at)),
            ("rotated_from", opt_display(&e.rotated_from)),
        ]),
        Payload::Used(e) => members.push(("context", Member::Json(context_text(&e.context)))),
        Payload::Denied(e) => members.extend([
            ("reason", Member::Str(e.reason.code())),
            ("detail", Member::String(e.reason.message())),
            ("context", Member::Json(context_text(&e.context))),
        ]),
        Payload::Rotated(e) => members.extend([
            ("rotated_to", Member::Display(&e.rotated_to)),
            ("valid_until", opt_time(e.valid_until)),
        ]),
        Payload::Revoked(e) => members.push(("reason", Member::OptStr(e.reason.as_deref()))),
        Payload::Disabled(e) => members.push(("reason", Member::OptStr(e.reason.as_deref()))),
        Payload::Expired(_) | Payload::Enabled(_) => {}
        Payload::PolicySet(e) => {
            members.push(("policy", Member::Json(value_text(&policy_json(&e.policy)))));
        }
        Payload::Lookup(e) => members.push(("found", opt_display(&e.found))),
        Payload::WebhookSet(e) => members.extend([
            ("url", Member::Str(&e.url)),
            ("events", Member::Strs(&e.events)),
            ("enabled", Member::Bool(e.enabled)),
        ]),
        // Rare kinds with nested or optional members: through the `Value` of record.
        Payload::Idempotency(_) | Payload::Updated(_) => {
            let value = event_json(event);
            let nested = match payload {
                Payload::Idempotency(_) => "key_ids",
                _ => "changes",
            };
            let text = value.get(nested).map(value_text).unwrap_or_default();
            members.push((nested, Member::Json(text)));
        }
    }
    write_object(&mut members, out);
    leaf
}

/// [`actor_text`] as a member.
fn actor_member(actor: &Actor) -> Member<'_> {
    match actor {
        Actor::System | Actor::Verifier | Actor::Recovery => Member::String(actor_text(actor)),
        Actor::Admin(key) => Member::Display(key),
    }
}

/// A list of hashes as a JSON array of lowercase hex strings.
pub fn hashes_json(hashes: &[Hash]) -> Value {
    Value::Array(hashes.iter().map(|h| Value::String(hex::encode(h))).collect())
}

/// The bytes the manifest signature covers: [`MANIFEST_SIGNATURE_CONTEXT`] ‖ the canonical
/// JSON of the manifest object without its `signature` member.
pub fn manifest_message(manifest: &Map<String, Value>) -> Vec<u8> {
    let mut unsigned = manifest.clone();
    unsigned.remove("signature");
    let mut message = MANIFEST_SIGNATURE_CONTEXT.to_vec();
    message.extend_from_slice(canonical_json(&Value::Object(unsigned)).as_bytes());
    message
}

/// Signs a manifest in place (sets `signature`) with the log's Ed25519 key.
pub fn sign_manifest(manifest: &mut Map<String, Value>, key: &SigningKey) {
    let signature = key.sign(&manifest_message(manifest));
    manifest.insert("signature".into(), Value::String(STANDARD.encode(signature.to_bytes())));
}

/// The manifest line (without its newline) of a signed manifest object.
pub fn manifest_line(manifest: Map<String, Value>) -> String {
    let mut wrapper = Map::new();
    wrapper.insert("manifest".into(), Value::Object(manifest));
    canonical_json(&Value::Object(wrapper))
}

/// BLAKE3 of the export's event lines (`lines_hash`), fed in large blocks: the same hash
/// as updating line by line, but BLAKE3 hashes a long input several chunks at a time
/// (SIMD) where short updates go one 64-byte block after another.
#[derive(Default)]
pub struct LinesHasher {
    hasher: blake3::Hasher,
    pending: Vec<u8>,
}

impl LinesHasher {
    const BLOCK: usize = 64 << 10;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > Self::BLOCK && !self.pending.is_empty() {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() >= Self::BLOCK {
            self.hasher.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    pub fn finalize(&self) -> Hash {
        let mut hasher = self.hasher.clone();
        hasher.update(&self.pending);
        *hasher.finalize().as_bytes()
    }
}

// ---------------------------------------------------------------------------------------
// Compact ranges.
// ---------------------------------------------------------------------------------------

/// A compact range `[begin, end)` of a Merkle tree: the roots of the maximal aligned perfect
/// subtrees covering it, left to right, as `(level, hash)`. Starting at 0 it is a frontier.
#[derive(Clone, Debug, Default)]
struct CompactRange {
    end: u64,
    nodes: Vec<(u32, Hash)>,
}

impl CompactRange {
    fn starting_at(begin: u64) -> Self {
        Self { end: begin, nodes: Vec::new() }
    }

    /// The frontier of a tree of `size` leaves given its peaks (largest first).
    fn from_peaks(size: u64, peaks: &[Hash]) -> Option<Self> {
        if peaks.len() != size.count_ones() as usize {
            return None;
        }
        let levels = (0..64u32).rev().filter(|l| size & (1u64 << l) != 0);
        Some(Self { end: size, nodes: levels.zip(peaks.iter().copied()).collect() })
    }

    /// Appends the aligned subtree of `2^level` leaves starting at `end`. `None` if it is
    /// not aligned there or the tree would overflow.
    fn push(&mut self, level: u32, hash: Hash) -> Option<()> {
        let width = 1u64.checked_shl(level)?;
        if level >= 64 || !self.end.is_multiple_of(width) {
            return None;
        }
        let new_end = self.end.checked_add(width)?;
        let (mut level, mut hash) = (level, hash);
        // Merge with the left sibling while it is the last node (same level, odd index).
        while let Some(&(top_level, top)) = self.nodes.last() {
            if top_level != level || (self.end >> level) & 1 == 0 {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&top, &hash);
            level += 1;
        }
        self.nodes.push((level, hash));
        self.end = new_end;
        Some(())
    }

    /// The root of the tree whose frontier this is (nodes folded right to left).
    fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, last)) = nodes.next() else {
            return crate::merkle::empty_root();
        };
        nodes.fold(last, |right, (_, left)| node_hash(left, &right))
    }
}

// ---------------------------------------------------------------------------------------
// Verification.
// ---------------------------------------------------------------------------------------

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
fn check_event_line_fast(text: &[u8], scratch: &mut Scratch, expect_proof: bool) -> Option<CheckedLine> {
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
        let leaf = write_event_line(&event, &scratch.raw, None, &mut scratch.line);
        if scratch.line.as_bytes() == text {
            return Some(CheckedLine { event, leaf, proof: None });
        }
    }
    let value: Value = serde_json::from_slice(text).ok()?;
    let proof = parse_hashes(value.get("inclusion_proof")?)?;
    scratch.line.clear();
    let leaf = write_event_line(&event, &scratch.raw, Some(&proof), &mut scratch.line);
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
) -> Result<CheckedLine, ExportError> {
    if let Some(checked) = check_event_line_fast(text, scratch, expect_proof) {
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
    let expected = line_value(&event, &raw, proof.as_deref());
    if canonical_json(&expected).as_bytes() != text {
        return Err(line_err(number, first_difference(&value, &expected)));
    }
    Ok(CheckedLine { leaf: leaf_hash(&raw), event, proof })
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
    /// Unfiltered: the compact range of the lines' leaves.
    range: Option<CompactRange>,
    /// Filtered: (line, seq, leaf, proof) to check against the anchor.
    included: Vec<(u64, u64, Hash, Vec<Hash>)>,
    hasher: LinesHasher,
    scratch: Scratch,
}

impl Seen {
    fn add(&mut self, number: u64, text_with_newline: &[u8]) -> Result<(), ExportError> {
        let text = &text_with_newline[..text_with_newline.len().saturating_sub(1)];
        let line = check_event_line(number, text, &mut self.scratch, self.proofs == Some(true))?;
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
                self.included.push((number, seq, line.leaf, proof.clone()));
            }
        } else {
            let range = self.range.get_or_insert_with(|| CompactRange::starting_at(seq));
            range.push(0, line.leaf).ok_or_else(|| line_err(number, "seq is out of range"))?;
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
    mut reader: impl BufRead,
    key: &VerifierKey,
    trusted: Option<&str>,
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
    check_manifest(number, text, &seen, key, trusted.as_ref())
}

fn check_manifest(
    line: u64,
    text: &[u8],
    seen: &Seen,
    key: &VerifierKey,
    trusted: Option<&Checkpoint>,
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

    // 1. The signature, before anything else is believed.
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

    // 2. The anchor checkpoint.
    let cp = m.required("checkpoint", "checkpoint.")?;
    let anchor = open_checkpoint(cp.str("note")?, key)
        .map_err(|e| bad(format!("the checkpoint note does not open with this public key: {e}")))?;
    if cp.u64("size")? != anchor.size || cp.hash("root_hash")? != anchor.root {
        return Err(bad("`checkpoint.size`/`root_hash` differ from the signed note".into()));
    }
    let origin = m.str("origin")?;
    if origin != anchor.origin {
        return Err(bad(format!("`origin` {origin:?} differs from the checkpoint's {:?}", anchor.origin)));
    }

    // 3. The range: its ends must be the first and last lines.
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

    // 4. Filters: every line must satisfy them.
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

    // 5. The lines are leaves of the anchor's tree.
    if filtered {
        for (n, seq, leaf, proof) in &seen.included {
            verify_inclusion(*seq, anchor.size, leaf, proof, &anchor.root).map_err(|e| {
                line_err(
                    *n,
                    format!("the inclusion proof of seq {seq} does not verify against the checkpoint: {e}"),
                )
            })?;
        }
    } else {
        match (m.object("range_proof", "range_proof.")?, &seen.range, first_seq, last_seq) {
            (None, None, None, None) => {}
            (Some(proof), Some(range), Some(first), Some(last)) => {
                let peaks = proof.hashes("left_peaks")?;
                let consistency = proof.hashes("consistency")?;
                let mut tree = CompactRange::from_peaks(first, &peaks).ok_or_else(|| {
                    bad(format!(
                        "`range_proof.left_peaks` needs {} peaks for size {first}",
                        first.count_ones()
                    ))
                })?;
                for &(level, hash) in &range.nodes {
                    tree.push(level, hash).ok_or_else(|| bad("the range does not fit the tree".into()))?;
                }
                verify_consistency(last + 1, anchor.size, &tree.root(), &anchor.root, &consistency).map_err(
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

    // 6. Count and hash of the exact bytes of the lines.
    let lines = m.u64("lines")?;
    if lines != seen.lines {
        return Err(bad(format!("`lines` says {lines} event lines, the export has {}", seen.lines)));
    }
    if m.hash("lines_hash")? != seen.hasher.finalize() {
        return Err(bad("`lines_hash` does not match the lines (a line was altered)".into()));
    }

    // 7. The anchor extends the trusted checkpoint.
    let trusted_size = match trusted {
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
                verify_consistency(old.size, anchor.size, &old.root, &anchor.root, &proof).map_err(|e| {
                    ExportError::Trusted(format!(
                        "the export's anchor ({} events) does not extend it ({} events): {e}",
                        anchor.size, old.size
                    ))
                })?;
            }
            Some(old.size)
        }
    };

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
        trusted_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Frontier, root_from_leaves};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn compact_range_folds_into_left_peaks_like_a_frontier() {
        let all = leaves(40);
        for first in 0..20u64 {
            for last in first..30u64 {
                let mut left = Frontier::new();
                for leaf in &all[..first as usize] {
                    left.push(*leaf);
                }
                let mut range = CompactRange::starting_at(first);
                for leaf in &all[first as usize..=last as usize] {
                    range.push(0, *leaf).unwrap();
                }
                let mut tree = CompactRange::from_peaks(first, left.peaks()).unwrap();
                for &(level, hash) in &range.nodes {
                    tree.push(level, hash).unwrap();
                }
                assert_eq!(tree.root(), root_from_leaves(&all[..=last as usize]), "{first}..={last}");
            }
        }
        assert!(CompactRange::from_peaks(3, &[[0; 32]]).is_none());
        let mut unaligned = CompactRange::starting_at(1);
        assert!(unaligned.push(1, [0; 32]).is_none());
        assert!(unaligned.push(64, [0; 32]).is_none());
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes_like_serde_json() {
        let value = serde_json::json!({"b": [1, null, true], "a": {"z": "x\n\u{1}\"é—/", "A": 18446744073709551615u64}});
        assert_eq!(
            canonical_json(&value),
            "{\"a\":{\"A\":18446744073709551615,\"z\":\"x\\n\\u0001\\\"é—/\"},\"b\":[1,null,true]}"
        );
    }

    /// One event of every kind, free-text members set to `text`.
    fn every_kind(text: &str) -> Vec<Event> {
        use keyledger_core::*;
        let key = |n: u8| KeyId::from_bytes([n; 16]);
        let ws: WorkspaceId = "acme".parse().unwrap();
        let context = UsageContext {
            ip: Some("2001:db8::7".parse().unwrap()),
            user_agent: Some(text.into()),
            method: Some("GET".into()),
            path: Some(format!("/v1/{text}")),
            request_id: Some(text.into()),
            scopes: vec![text.into(), "read".into()],
            resource: Some(text.into()),
        };
        let metadata = serde_json::json!({"z": text, "a": [1, null, {"k": text}]}).to_string();
        let payloads = vec![
            Payload::Created(Created {
                key_id: key(1),
                workspace: ws.clone(),
                name: text.into(),
                hash: KeyHash([0xab; 32]),
                hint: "kl_live_…abcd".into(),
                prefix: "kl".parse().unwrap(),
                environment: Environment::Test,
                scopes: vec![text.into()],
                resources: vec![],
                owner: Some(text.into()),
                metadata: metadata.clone(),
                expires_at: Some(Timestamp(1)),
                rotated_from: Some(key(3)),
            }),
            Payload::Used(Usage { key_id: key(1), workspace: ws.clone(), context: context.clone() }),
            Payload::Used(Usage { key_id: key(1), workspace: ws.clone(), context: UsageContext::default() }),
            Payload::Denied(Denial {
                key_id: key(1),
                workspace: ws.clone(),
                reason: DenyReason::MissingScope(text.into()),
                context,
            }),
            Payload::Rotated(Rotated {
                key_id: key(1),
                workspace: ws.clone(),
                rotated_to: key(2),
                valid_until: Some(Timestamp(-5)),
            }),
            Payload::Revoked(Revoked { key_id: key(1), workspace: ws.clone(), reason: Some(text.into()) }),
            Payload::Revoked(Revoked { key_id: key(1), workspace: ws.clone(), reason: None }),
            Payload::Expired(KeyRef { key_id: key(1), workspace: ws.clone() }),
            Payload::PolicySet(PolicySet {
                workspace: ws.clone(),
                policy: Policy {
                    max_active_keys: Some(1),
                    require_expiry: true,
                    max_lifetime: Some(60_000_000),
                    key_prefix: Some("ac".parse().unwrap()),
                },
            }),
            Payload::Updated(Updated {
                key_id: key(1),
                workspace: ws.clone(),
                name: Some(text.into()),
                owner: Some(None),
                metadata: Some(metadata),
                expires_at: Some(Some(Timestamp(7))),
                scopes: Some(vec![text.into()]),
                resources: None,
            }),
            Payload::Disabled(Disabled { key_id: key(1), workspace: ws.clone(), reason: Some(text.into()) }),
            Payload::Enabled(KeyRef { key_id: key(1), workspace: ws.clone() }),
            Payload::Lookup(Lookup { workspace: ws.clone(), found: Some(key(1)) }),
            Payload::Lookup(Lookup { workspace: ws.clone(), found: None }),
            Payload::Idempotency(IdempotencyRecord {
                id: [0x11; 32],
                fingerprint: [0x22; 32],
                workspace: ws.clone(),
                key_ids: vec![key(1), key(2)],
            }),
            Payload::WebhookSet(WebhookSet {
                workspace: ws,
                url: format!("https://h/{text}"),
                events: vec![text.into()],
                enabled: false,
            }),
        ];
        let actors = [Actor::System, Actor::Verifier, Actor::Admin(key(9)), Actor::Recovery];
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Event {
                seq: 300 + i as u64,
                at: Timestamp(1_700_000_000_123_456 + i as i64),
                actor: actors[i % actors.len()].clone(),
                request_id: RequestId::from_bytes([7; 16]),
                payload,
            })
            .collect()
    }

    fn assert_fast_line_is_the_definition(text: &str) {
        let proof = leaves(3);
        for event in every_kind(text) {
            let raw = keyledger_core::encode_event(&event);
            for inclusion_proof in [None, Some(&proof[..])] {
                let mut line = String::from("kept ");
                let leaf = write_event_line(&event, &raw, inclusion_proof, &mut line);
                let expected = canonical_json(&line_value(&event, &raw, inclusion_proof));
                assert_eq!(line.strip_prefix("kept "), Some(expected.as_str()), "{:?}", event.payload.kind());
                assert_eq!(leaf, leaf_hash(&raw));
            }
        }
    }

    #[test]
    fn write_event_line_is_the_canonical_json_of_line_value() {
        assert_fast_line_is_the_definition("plain");
        assert_fast_line_is_the_definition("");
        assert_fast_line_is_the_definition("q\"b\\s/\u{8}\t\n\u{c}\r\u{0}\u{1f}\u{7f}é—😀 \u{2028}");
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json() {
        let all: String = (0u32..0x90).filter_map(char::from_u32).chain(['é', '\u{2028}', '😀']).collect();
        for text in [all.as_str(), "", "x", "\"", "\\\\", "a\u{1}b"] {
            let mut out = String::new();
            write_json_str(text, &mut out);
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn lines_hash_does_not_depend_on_how_lines_are_fed() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = LinesHasher::new();
        for piece in data.chunks(613).chain([&data[..0]]) {
            hasher.update(piece);
        }
        hasher.update(&data[..100_000]);
        let mut whole = data.clone();
        whole.extend_from_slice(&data[..100_000]);
        assert_eq!(hasher.finalize(), *blake3::hash(&whole).as_bytes());
        assert_eq!(LinesHasher::new().finalize(), *blake3::hash(b"").as_bytes());
    }

    proptest::proptest! {
        #[test]
        fn write_event_line_matches_the_definition_on_any_text(text in "\\PC*|[\\x00-\\x7f]{0,40}") {
            assert_fast_line_is_the_definition(&text);
        }
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
