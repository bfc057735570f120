//! C2SP signed notes and transparency-log checkpoints, Ed25519 only.
//!
//! keyledger publishes its Merkle tree heads (docs/log-format.md, "Checkpoints"): a
//! [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint) body (origin, tree
//! size, base64 root hash) signed as a [C2SP signed note](https://c2sp.org/signed-note)
//! with the log's Ed25519 key. Using the ecosystem's format means the log's
//! checkpoints can be read by existing tooling (Go's `golang.org/x/mod/sumdb/note`,
//! witnesses, monitors), and this module can read theirs: it is tested against
//! the Go package's documented example and a real `sum.golang.org` checkpoint.
//!
//! # Wire format
//!
//! ```text
//! <note text, ending in a newline>
//! <blank line>
//! — <key name> <base64(4-byte key id ‖ 64-byte Ed25519 signature)>
//! ```
//!
//! The signature covers the note text exactly, including its final newline but
//! not the blank line. The key id is the first four bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)`; a verifier key is
//! written `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`.
//!
//! # Guarantees
//!
//! - [`open`] returns the note text only if the note is well formed, at least
//!   one signature line names the given key (name and key id), and *every*
//!   such line carries a valid Ed25519 signature (checked with
//!   `verify_strict`). A failing signature by the key rejects the whole note,
//!   as the spec recommends. Signature lines from other keys are ignored, so
//!   witness cosignatures and key rotation do not break verification.
//! - Inputs are bounded ([`MAX_NOTE_BYTES`], [`MAX_SIGNATURES`]) and no input
//!   makes any function here panic.
//! - Parsing is strict: standard padded base64 only, canonical decimal sizes,
//!   32-byte root hashes, no control characters other than newline.
//! - What [`NoteSigner::sign`] and [`sign_checkpoint`] produce, [`open`] and
//!   [`open_checkpoint`] accept, and [`Checkpoint::body`] /
//!   [`Checkpoint::parse_body`] round-trip.
//!
//! Only signature type 0x01 (Ed25519) is supported; verifier keys of other
//! types are rejected when parsed.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// A 32-byte Merkle tree hash, as carried on a checkpoint's root line.
pub type Hash = [u8; 32];

/// Signature type identifier byte for Ed25519 (C2SP signed-note).
pub const ALG_ED25519: u8 = 0x01;

/// Largest note [`open`] accepts and [`NoteSigner::sign`] produces (1 MiB).
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Most signature lines [`open`] accepts in one note (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// Prefix of every signature line: em dash (U+2014) and a space.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

/// Longest key name echoed back inside an error message.
pub(crate) const MAX_ECHOED_NAME: usize = 64;

/// Why a note, key or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key name is empty or contains '+', whitespace or a control character.
    #[error("invalid key name {name:?}: {reason}")]
    InvalidKeyName { name: String, reason: &'static str },
    /// A verifier key string is not `<name>+<key id>+<key>` nor a bare base64 key.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key's stated key id is not the one computed from its name and key.
    #[error("verifier key id {stated} does not match {computed}, the id computed from its name and key")]
    KeyIdMismatch { stated: String, computed: String },
    /// A verifier key has a signature type other than Ed25519 (0x01).
    #[error("unsupported signature type 0x{0:02x}: only Ed25519 (0x01) is supported")]
    UnsupportedKeyType(u8),
    /// The public key bytes are not a usable Ed25519 key.
    #[error("invalid Ed25519 public key: {0}")]
    InvalidPublicKey(&'static str),
    /// A note (or body) exceeds [`MAX_NOTE_BYTES`].
    #[error("note is {size} bytes, more than the limit of {max}")]
    NoteTooLarge { size: usize, max: usize },
    /// The note's overall structure is wrong.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// One signature line (1-based, counting signature lines only) is malformed.
    #[error("malformed signature line {line}: {reason}")]
    MalformedSignatureLine { line: usize, reason: &'static str },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {max} signature lines")]
    TooManySignatures { max: usize },
    /// A body given to [`NoteSigner::sign`] cannot be a note text.
    #[error("invalid note text: {0}")]
    InvalidBody(&'static str),
    /// No signature line in the note names the expected key.
    #[error("note has no signature by key {key}")]
    NoSignatureByKey { key: String },
    /// A signature line names the expected key but its signature does not verify.
    #[error("invalid signature by key {name}+{key_id}")]
    BadSignature { name: String, key_id: String },
    /// The note text is not a valid tlog checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// Checks the C2SP key-name rules: non-empty, no '+', no Unicode whitespace,
/// and (so it can appear in a note at all) no ASCII control character.
pub(crate) fn check_key_name(name: &str) -> Result<(), NoteError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('+') {
        "contains '+'"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else if name.chars().any(|c| c < ' ') {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(NoteError::InvalidKeyName { name: name.chars().take(MAX_ECHOED_NAME).collect(), reason })
}

/// `SHA-256(name ‖ 0x0A ‖ typed_key)[..4]`, the spec's recommended key id.
pub(crate) fn key_hash(name: &str, typed_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n']);
    h.update(typed_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn ed25519_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut typed = [0u8; 33];
    typed[0] = ALG_ED25519;
    typed[1..].copy_from_slice(key.as_bytes());
    key_hash(name, &typed)
}

fn check_not_weak(key: &VerifyingKey) -> Result<(), NoteError> {
    if key.is_weak() {
        return Err(NoteError::InvalidPublicKey("weak (small-order) key"));
    }
    Ok(())
}

pub(crate) fn decode_public_key(bytes: &[u8]) -> Result<VerifyingKey, NoteError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| NoteError::InvalidPublicKey("not 32 bytes"))?;
    let key =
        VerifyingKey::from_bytes(&arr).map_err(|_| NoteError::InvalidPublicKey("not a valid curve point"))?;
    check_not_weak(&key)?;
    Ok(key)
}

/// The name and key id a named verifier key is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    name: String,
    key_id: [u8; 4],
}

/// A trusted Ed25519 public key to check note signatures against.
///
/// Two forms exist:
///
/// - **Named** (`<name>+<8 hex key id>+<base64(0x01 ‖ key)>`, or [`VerifierKey::new`]):
///   a signature line counts as this key's only if its key name equals `name`
///   and its 4-byte key id equals this key's id.
/// - **Bare** (a standard-base64 32-byte Ed25519 key, or [`VerifierKey::bare`]):
///   there is no name to match, so a signature line counts as this key's if its
///   4-byte key id equals the id computed from *that line's* name and this key.
///   Its signature must then verify under this key, so a bare key authenticates
///   the text just as well; it only does not pin the name the log signs under.
///
/// Weak (small-order) public keys are rejected in both forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    identity: Option<Identity>,
    key: VerifyingKey,
}

impl VerifierKey {
    /// A named verifier key. Fails if `name` breaks the key-name rules or `key` is weak.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        check_not_weak(&key)?;
        Ok(Self::named_unchecked(name, key))
    }

    /// A bare verifier key (no name); see the type docs for how it matches lines.
    pub fn bare(key: VerifyingKey) -> Result<Self, NoteError> {
        check_not_weak(&key)?;
        Ok(Self { identity: None, key })
    }

    fn named_unchecked(name: &str, key: VerifyingKey) -> Self {
        Self { identity: Some(Identity { name: name.to_owned(), key_id: ed25519_key_id(name, &key) }), key }
    }

    /// The C2SP key id of an Ed25519 key under `name`:
    /// `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[..4]`.
    pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
        ed25519_key_id(name, key)
    }

    /// The key name, or `None` for a bare key.
    pub fn name(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.name.as_str())
    }

    /// This key's id, or `None` for a bare key (its id depends on the line's name).
    pub fn id(&self) -> Option<[u8; 4]> {
        self.identity.as_ref().map(|i| i.key_id)
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether this key was given without a name.
    pub fn is_bare(&self) -> bool {
        self.identity.is_none()
    }

    /// Whether a signature line with this name and key id is to be checked against this key.
    pub(crate) fn matches(&self, name: &str, key_id: [u8; 4]) -> bool {
        match &self.identity {
            Some(id) => id.name == name && id.key_id == key_id,
            None => ed25519_key_id(name, &self.key) == key_id,
        }
    }
}

impl fmt::Display for VerifierKey {
    /// Named: `<name>+<8 lowercase hex key id>+<base64(0x01 ‖ key)>`.
    /// Bare: the standard base64 of the 32-byte key (what [`FromStr`] accepts back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(id) => {
                let mut typed = [0u8; 33];
                typed[0] = ALG_ED25519;
                typed[1..].copy_from_slice(self.key.as_bytes());
                write!(f, "{}+{}+{}", id.name, hex::encode(id.key_id), STANDARD.encode(typed))
            }
            None => f.write_str(&STANDARD.encode(self.key.as_bytes())),
        }
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    /// Parses `<name>+<8 hex key id>+<base64(0x01 ‖ 32-byte key)>`, checking the
    /// name, that the key id is the one computed from name and key, and the type
    /// byte; or a bare standard-base64 (padded) 32-byte Ed25519 key. Leading and
    /// trailing whitespace is ignored (key names cannot contain any).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 4096 {
            return Err(NoteError::MalformedVerifierKey("longer than 4096 bytes"));
        }
        // A bare key is exactly 44 base64 characters; a named key is at least
        // 1 + 1 + 8 + 1 + 44 = 55 characters, so the two forms cannot be confused.
        if s.len() == 44
            && let Ok(raw) = STANDARD.decode(s)
            && raw.len() == 32
        {
            return Self::bare(decode_public_key(&raw)?);
        }
        let (name, typed) = parse_vkey(s)?;
        let Some((&alg, raw)) = typed.split_first() else {
            return Err(NoteError::MalformedVerifierKey("key is empty"));
        };
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedKeyType(alg));
        }
        let key = decode_public_key(raw)?;
        Ok(Self::named_unchecked(name, key))
    }
}

/// Splits a named verifier key `<name>+<8 hex key id>+<base64(type ‖ key)>` into its name
/// and typed key bytes, checking the name and that the stated key id is the one computed
/// from them. The one vkey parser, shared with the cosignature keys (`crate::cosignature`),
/// which differ only in their type byte.
pub(crate) fn parse_vkey(s: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let (name, rest) = s.split_once('+').ok_or(NoteError::MalformedVerifierKey(
        "expected <name>+<key id>+<base64 key> or a bare base64 32-byte Ed25519 key",
    ))?;
    let (hash16, key64) =
        rest.split_once('+').ok_or(NoteError::MalformedVerifierKey("missing '+' between key id and key"))?;
    check_key_name(name)?;
    if hash16.len() != 8 || !hash16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedVerifierKey("key id is not 8 hexadecimal digits"));
    }
    let mut stated = [0u8; 4];
    hex::decode_to_slice(hash16, &mut stated)
        .map_err(|_| NoteError::MalformedVerifierKey("key id is not 8 hexadecimal digits"))?;
    let typed = STANDARD
        .decode(key64)
        .map_err(|_| NoteError::MalformedVerifierKey("key is not standard padded base64"))?;
    if typed.is_empty() {
        return Err(NoteError::MalformedVerifierKey("key is empty"));
    }
    let computed = key_hash(name, &typed);
    if computed != stated {
        return Err(NoteError::KeyIdMismatch {
            stated: hex::encode(stated),
            computed: hex::encode(computed),
        });
    }
    Ok((name, typed))
}

/// Checks a note text: non-empty, ends in a newline, no control character other
/// than newline. Empty lines are allowed (the spec permits them; notes split at
/// the *last* blank line).
pub(crate) fn check_text(body: &str) -> Result<(), NoteError> {
    if body.len() > MAX_NOTE_BYTES {
        return Err(NoteError::NoteTooLarge { size: body.len(), max: MAX_NOTE_BYTES });
    }
    if !body.ends_with('\n') {
        return Err(NoteError::InvalidBody("does not end with a newline"));
    }
    if body.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::InvalidBody("contains a control character other than newline"));
    }
    Ok(())
}

/// An Ed25519 key that signs notes under a key name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: [u8; 4],
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NoteSigner {
    /// A signer for `name`. Fails if `name` breaks the key-name rules.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self { name: name.to_owned(), key_id: ed25519_key_id(name, &key.verifying_key()), key })
    }

    /// The key name signature lines carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id signature lines carry.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The named verifier key matching this signer.
    pub fn verifier(&self) -> VerifierKey {
        // The name was checked in `new`, and a public key derived from a secret
        // scalar is never of small order, so `VerifierKey::new` cannot fail here.
        VerifierKey::named_unchecked(&self.name, self.key.verifying_key())
    }

    /// Signs `body` and returns the signed note: `body`, a blank line, and
    /// `— <name> <base64(key id ‖ signature)>\n`. The Ed25519 signature is over
    /// the bytes of `body` exactly, final newline included.
    ///
    /// `body` must end with a newline, contain no control character other than
    /// newline, and the resulting note must fit in [`MAX_NOTE_BYTES`].
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        check_text(body)?;
        let signature = self.key.sign(body.as_bytes());
        let mut blob = [0u8; 68];
        blob[..4].copy_from_slice(&self.key_id);
        blob[4..].copy_from_slice(&signature.to_bytes());
        let note = format!("{body}\n{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob));
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::NoteTooLarge { size: note.len(), max: MAX_NOTE_BYTES });
        }
        Ok(note)
    }

    /// The raw Ed25519 signature of `message`. Crate-private: a caller must put a context
    /// string in front of what it signs so that it can never pass for a note signature
    /// (the export manifest does).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.key.sign(message)
    }
}

/// One parsed signature line: key name, key id, signature bytes (≥ 1 byte).
pub(crate) struct SigLine<'a> {
    pub(crate) name: &'a str,
    pub(crate) key_id: [u8; 4],
    pub(crate) sig: Vec<u8>,
}

fn parse_sig_line(line: &str, number: usize) -> Result<SigLine<'_>, NoteError> {
    let bad = |reason| NoteError::MalformedSignatureLine { line: number, reason };
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| bad("does not start with an em dash (U+2014) and a space"))?;
    let (name, b64) = rest.split_once(' ').ok_or_else(|| bad("no space between key name and signature"))?;
    if check_key_name(name).is_err() {
        return Err(bad("invalid key name"));
    }
    let raw = STANDARD.decode(b64).map_err(|_| bad("signature is not standard padded base64"))?;
    if raw.len() < 5 {
        return Err(bad("signature is shorter than 5 bytes"));
    }
    Ok(SigLine { name, key_id: [raw[0], raw[1], raw[2], raw[3]], sig: raw[4..].to_vec() })
}

/// Verifies `note` against `key` and returns its text (the signed body,
/// final newline included).
///
/// The note must be at most [`MAX_NOTE_BYTES`], contain no control character
/// other than newline, and end with a blank line followed by 1 to
/// [`MAX_SIGNATURES`] well-formed signature lines. Lines from other keys are
/// ignored. At least one line must match `key` (see [`VerifierKey`] for what
/// matching means for named and bare keys) and every matching line must verify.
pub fn open(note: &str, key: &VerifierKey) -> Result<String, NoteError> {
    let (text, lines) = parse_note(note)?;
    let mut verified = false;
    for parsed in lines {
        if !key.matches(parsed.name, parsed.key_id) {
            continue;
        }
        let ok = <[u8; 64]>::try_from(parsed.sig.as_slice()).is_ok_and(|bytes| {
            key.key.verify_strict(text.as_bytes(), &Signature::from_bytes(&bytes)).is_ok()
        });
        if !ok {
            return Err(NoteError::BadSignature {
                name: parsed.name.chars().take(MAX_ECHOED_NAME).collect(),
                key_id: hex::encode(parsed.key_id),
            });
        }
        verified = true;
    }
    if !verified {
        return Err(NoteError::NoSignatureByKey { key: key.to_string() });
    }
    Ok(text.to_owned())
}

/// Splits a note into its text (final newline included) and its parsed signature lines,
/// checking only the structure: size, control characters, the blank line, 1 to
/// [`MAX_SIGNATURES`] well-formed lines. The one parser of the note format, shared by
/// [`open`] and the cosignature verifier (`crate::cosignature`).
pub(crate) fn parse_note(note: &str) -> Result<(&str, Vec<SigLine<'_>>), NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::NoteTooLarge { size: note.len(), max: MAX_NOTE_BYTES });
    }
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::MalformedNote("contains a control character other than newline"));
    }
    let split =
        note.rfind("\n\n").ok_or(NoteError::MalformedNote("no blank line between text and signatures"))?;
    // `split` is the index of an ASCII newline, so both slices are on char boundaries.
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::MalformedNote(if sigs.is_empty() {
            "no signature lines"
        } else {
            "last signature line does not end with a newline"
        }));
    };
    let mut lines = Vec::new();
    for (index, line) in sigs.split('\n').enumerate() {
        if index >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures { max: MAX_SIGNATURES });
        }
        lines.push(parse_sig_line(line, index + 1)?);
    }
    Ok((text, lines))
}

/// A transparency-log checkpoint (C2SP tlog-checkpoint note text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/log42`. Non-empty, one line.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// Merkle tree root hash at `size`.
    pub root: Hash,
    /// Optional opaque extension lines after the root line, each non-empty.
    /// Kept so that [`Checkpoint::body`] reproduces the signed text exactly.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self { origin: origin.into(), size, root, extensions: Vec::new() }
    }

    /// The note text: `<origin>\n<decimal size>\n<base64 root>\n`, then each
    /// extension line followed by a newline. Does not validate; see
    /// [`sign_checkpoint`], which does.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint note text strictly: it ends in a newline and has no
    /// control character other than newline; the origin is non-empty; the size
    /// is ASCII decimal with no sign and no leading zero (except `0` itself) and
    /// fits in a `u64`; the root is standard padded base64 of exactly 32 bytes;
    /// any further lines are non-empty extension lines.
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        if body.len() > MAX_NOTE_BYTES {
            return Err(NoteError::NoteTooLarge { size: body.len(), max: MAX_NOTE_BYTES });
        }
        let bad = NoteError::MalformedCheckpoint;
        let content = body.strip_suffix('\n').ok_or(bad("text does not end with a newline"))?;
        if content.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("contains a control character other than newline"));
        }
        let mut lines = content.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("origin line is empty"));
        }
        let size = parse_size(lines.next().ok_or(bad("missing tree size line"))?)?;
        let root_line = lines.next().ok_or(bad("missing root hash line"))?;
        let root: Hash = STANDARD
            .decode(root_line)
            .map_err(|_| bad("root hash is not standard padded base64"))?
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        let mut extensions = Vec::new();
        for ext in lines {
            if ext.is_empty() {
                return Err(bad("empty extension line"));
            }
            extensions.push(ext.to_owned());
        }
        Ok(Checkpoint { origin: origin.to_owned(), size, root, extensions })
    }
}

pub(crate) fn parse_size(line: &str) -> Result<u64, NoteError> {
    let bad = NoteError::MalformedCheckpoint;
    if line.is_empty() {
        return Err(bad("tree size line is empty"));
    }
    if !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("tree size is not a decimal number"));
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(bad("tree size has a leading zero"));
    }
    line.parse().map_err(|_| bad("tree size does not fit in 64 bits"))
}

/// Verifies a signed checkpoint note against `key` ([`open`]) and parses its
/// text ([`Checkpoint::parse_body`]). The origin is not required to equal the
/// key name; callers that know the expected origin should compare it.
pub fn open_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse_body(&open(note, key)?)
}

/// Signs `cp` as a note. Fails if `cp` would not parse back to itself (e.g. an
/// empty origin, or an origin or extension line containing a newline or
/// control character, or an empty extension line).
pub fn sign_checkpoint(cp: &Checkpoint, signer: &NoteSigner) -> Result<String, NoteError> {
    let body = cp.body();
    if Checkpoint::parse_body(&body)? != *cp {
        return Err(NoteError::MalformedCheckpoint("origin or an extension line contains a newline"));
    }
    signer.sign(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PN_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PN_SKEY_DATA: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PN_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PN_SIG_LINE: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG_LINE: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    const GO_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    const GO_CHECKPOINT: &str = "go.sum database tree\n65664258\nWVVNVD2qx+fTq31zkj6UAqxT5X6HvGphGM+o8Thnbsg=\n\n\
         — sum.golang.org Az3grligJmgX7KGyGPKybykNTh3VgsbLvUuvOwrM5zLVlulmFp2wdvbxOw74/gcNxURShXEpb7RXcs3+BYflYN+w0gQ=\n";

    fn pn_note() -> String {
        format!("{PN_TEXT}\n{PN_SIG_LINE}")
    }

    fn pn_signer() -> NoteSigner {
        let raw = STANDARD.decode(PN_SKEY_DATA).unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        let seed: [u8; 32] = raw[1..].try_into().unwrap();
        NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&seed)).unwrap()
    }

    fn signer(name: &str, seed: u8) -> NoteSigner {
        NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    /// Replaces the signature blob of the last line of `note` by `f(blob)`.
    fn rewrite_sig(note: &str, f: impl Fn(&mut Vec<u8>)) -> String {
        let (head, b64) = note.trim_end_matches('\n').rsplit_once(' ').unwrap();
        let mut blob = STANDARD.decode(b64).unwrap();
        f(&mut blob);
        format!("{head} {}\n", STANDARD.encode(blob))
    }

    #[test]
    fn go_example_verifier_key_parses_and_round_trips() {
        let vk: VerifierKey = PN_VKEY.parse().unwrap();
        assert_eq!(vk.name(), Some("PeterNeumann"));
        assert_eq!(vk.id(), Some([0xc7, 0x4f, 0x20, 0xa3]));
        assert!(!vk.is_bare());
        assert_eq!(VerifierKey::key_id("PeterNeumann", vk.public_key()), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(vk.to_string(), PN_VKEY);
        assert_eq!(VerifierKey::new("PeterNeumann", *vk.public_key()).unwrap(), vk);
    }

    #[test]
    fn go_example_note_verifies() {
        let vk: VerifierKey = PN_VKEY.parse().unwrap();
        assert_eq!(open(&pn_note(), &vk).unwrap(), PN_TEXT);
    }

    #[test]
    fn go_example_signer_reproduces_note_byte_for_byte() {
        let s = pn_signer();
        assert_eq!(s.verifier().to_string(), PN_VKEY);
        assert_eq!(hex::encode(s.key_id()), "c74f20a3");
        assert_eq!(s.name(), "PeterNeumann");
        assert_eq!(s.sign(PN_TEXT).unwrap(), pn_note());
    }

    #[test]
    fn go_example_doubly_signed_note_ignores_unknown_signer() {
        let vk: VerifierKey = PN_VKEY.parse().unwrap();
        let note = format!("{PN_TEXT}\n{PN_SIG_LINE}{ENOCH_SIG_LINE}");
        assert_eq!(open(&note, &vk).unwrap(), PN_TEXT);
        let reversed = format!("{PN_TEXT}\n{ENOCH_SIG_LINE}{PN_SIG_LINE}");
        assert_eq!(open(&reversed, &vk).unwrap(), PN_TEXT);
        // Only the unknown signer: rejected.
        let only_enoch = format!("{PN_TEXT}\n{ENOCH_SIG_LINE}");
        assert!(matches!(open(&only_enoch, &vk), Err(NoteError::NoSignatureByKey { .. })));
    }

    #[test]
    fn sum_golang_org_checkpoint_verifies() {
        let vk: VerifierKey = GO_VKEY.parse().unwrap();
        assert_eq!(vk.to_string(), GO_VKEY);
        let cp = open_checkpoint(GO_CHECKPOINT, &vk).unwrap();
        assert_eq!(cp.origin, "go.sum database tree");
        assert_eq!(cp.size, 65_664_258);
        assert_eq!(STANDARD.encode(cp.root), "WVVNVD2qx+fTq31zkj6UAqxT5X6HvGphGM+o8Thnbsg=");
        assert!(cp.extensions.is_empty());
        assert_eq!(format!("{}\n", cp.body()), GO_CHECKPOINT.split_once("— ").unwrap().0);
        // One digit of the size changed.
        let bent = GO_CHECKPOINT.replace("65664258", "65664259");
        assert!(matches!(open_checkpoint(&bent, &vk), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn bare_key_is_accepted() {
        let named: VerifierKey = GO_VKEY.parse().unwrap();
        let bare_text = STANDARD.encode(named.public_key().as_bytes());
        let bare: VerifierKey = bare_text.parse().unwrap();
        assert!(bare.is_bare());
        assert_eq!(bare.name(), None);
        assert_eq!(bare.id(), None);
        assert_eq!(bare.to_string(), bare_text);
        assert_eq!(&bare, &VerifierKey::bare(*named.public_key()).unwrap());
        assert_eq!(open_checkpoint(GO_CHECKPOINT, &bare).unwrap().size, 65_664_258);
        // Surrounding whitespace (e.g. from a key file) is ignored.
        assert_eq!(format!(" {bare_text}\n").parse::<VerifierKey>().unwrap(), bare);

        // A bare key whose base64 contains '+' is not mistaken for a named key.
        let plus_key = (0u8..=255)
            .map(|seed| signer("x", seed).verifier())
            .find(|v| STANDARD.encode(v.public_key().as_bytes()).contains('+'))
            .unwrap();
        let plus_text = STANDARD.encode(plus_key.public_key().as_bytes());
        assert_eq!(
            plus_text.parse::<VerifierKey>().unwrap(),
            VerifierKey::bare(*plus_key.public_key()).unwrap()
        );

        // Bare key of our own signer, any name.
        let s = signer("example.com/log", 7);
        let bare = VerifierKey::bare(*s.verifier().public_key()).unwrap();
        let note = s.sign("hello\n").unwrap();
        assert_eq!(open(&note, &bare).unwrap(), "hello\n");
        // A bare key does not accept another key's signature under any name.
        assert!(matches!(open(GO_CHECKPOINT, &bare), Err(NoteError::NoSignatureByKey { .. })));
        // And a line whose id matches the bare key but whose signature is bad is rejected.
        let tampered = rewrite_sig(&note, |b| b[10] ^= 1);
        assert!(matches!(open(&tampered, &bare), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn round_trip_sign_open() {
        let s = signer("keyledger.example/log", 1);
        let vk = s.verifier();
        for body in ["x\n", "\n", "a\n\nb\n", "two\nlines\n", "ünïcode — ok\n", "a\n\n\n"] {
            let note = s.sign(body).unwrap();
            assert_eq!(open(&note, &vk).unwrap(), body, "body {body:?}");
        }
        // The verifier key text parses back to the same key.
        assert_eq!(vk.to_string().parse::<VerifierKey>().unwrap(), vk);
    }

    #[test]
    fn checkpoint_round_trip() {
        let s = signer("keyledger.example/log", 2);
        let mut cp = Checkpoint::new("keyledger.example/log", 0, [0u8; 32]);
        let note = sign_checkpoint(&cp, &s).unwrap();
        assert!(note.starts_with("keyledger.example/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— keyledger.example/log "));
        assert_eq!(open_checkpoint(&note, &s.verifier()).unwrap(), cp);

        cp.size = u64::MAX;
        cp.root = [0xab; 32];
        cp.extensions = vec!["ext one".into(), "— two".into()];
        let note = sign_checkpoint(&cp, &s).unwrap();
        assert_eq!(open_checkpoint(&note, &s.verifier()).unwrap(), cp);
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
    }

    #[test]
    fn sign_checkpoint_rejects_unrepresentable() {
        let s = signer("log", 3);
        for cp in [
            Checkpoint::new("", 1, [0; 32]),
            Checkpoint::new("a\nb", 1, [0; 32]),
            Checkpoint::new("a\tb", 1, [0; 32]),
            Checkpoint { extensions: vec![String::new()], ..Checkpoint::new("o", 1, [0; 32]) },
            Checkpoint { extensions: vec!["x\ny".into()], ..Checkpoint::new("o", 1, [0; 32]) },
        ] {
            assert!(matches!(sign_checkpoint(&cp, &s), Err(NoteError::MalformedCheckpoint(_))), "{cp:?}");
        }
    }

    #[test]
    fn tampered_body_is_rejected() {
        let s = signer("log", 4);
        let note = s.sign("origin\n5\n").unwrap();
        let bent = note.replacen("5\n", "6\n", 1);
        assert_eq!(
            open(&bent, &s.verifier()),
            Err(NoteError::BadSignature { name: "log".into(), key_id: hex::encode(s.key_id()) })
        );
        // Extra text line before the blank line.
        let extra = note.replacen("5\n", "5\nmore\n", 1);
        assert!(matches!(open(&extra, &s.verifier()), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let s = signer("log", 5);
        let vk = s.verifier();
        let note = s.sign("body\n").unwrap();
        for tamper in [
            (|b: &mut Vec<u8>| b[4] ^= 0x80) as fn(&mut Vec<u8>),
            |b| b[67] ^= 1,
            |b| b.truncate(67),
            |b| b.push(0),
            |b| b.truncate(5),
        ] {
            let bent = rewrite_sig(&note, tamper);
            assert!(matches!(open(&bent, &vk), Err(NoteError::BadSignature { .. })), "{bent:?}");
        }
        // A changed key id means the line is no longer this key's.
        let bent = rewrite_sig(&note, |b| b[0] ^= 1);
        assert!(matches!(open(&bent, &vk), Err(NoteError::NoSignatureByKey { .. })));
        // A good and a bad line by the same key: the bad one rejects the note.
        let bad_line = rewrite_sig(&note, |b| b[40] ^= 1);
        let bad_line = bad_line.rsplit_once("\n\n").unwrap().1;
        let both = format!("{note}{bad_line}");
        assert!(matches!(open(&both, &vk), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let s = signer("log", 6);
        let note = s.sign("body\n").unwrap();
        // Same name, different key: the id differs, so no line is this key's.
        let other = signer("log", 8).verifier();
        assert!(matches!(open(&note, &other), Err(NoteError::NoSignatureByKey { .. })));
        // Same key, different name.
        let renamed = VerifierKey::new("other", *s.verifier().public_key()).unwrap();
        assert!(matches!(open(&note, &renamed), Err(NoteError::NoSignatureByKey { .. })));
        // A line with this key's name and id but produced by another key.
        let o = signer("log", 9);
        let other_note = o.sign("body\n").unwrap();
        let forged = rewrite_sig(&other_note, |b| b[..4].copy_from_slice(&s.key_id()));
        assert!(matches!(open(&forged, &s.verifier()), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn verifier_key_errors() {
        let good_key = STANDARD.decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").unwrap();
        let err = |s: &str| s.parse::<VerifierKey>().unwrap_err();
        assert!(matches!(err(""), NoteError::MalformedVerifierKey(_)));
        assert!(matches!(err("PeterNeumann"), NoteError::MalformedVerifierKey(_)));
        assert!(matches!(err("PeterNeumann+c74f20a3"), NoteError::MalformedVerifierKey(_)));
        assert!(matches!(
            err("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            NoteError::InvalidKeyName { .. }
        ));
        assert!(matches!(
            err("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            NoteError::InvalidKeyName { .. }
        ));
        assert!(matches!(
            err("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            NoteError::MalformedVerifierKey(_)
        ));
        assert!(matches!(
            err("PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            NoteError::MalformedVerifierKey(_)
        ));
        assert_eq!(
            err("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            NoteError::KeyIdMismatch { stated: "c74f20a4".into(), computed: "c74f20a3".into() }
        );
        assert!(matches!(
            err("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T"),
            NoteError::MalformedVerifierKey(_)
        ));
        // Uppercase hex is accepted (as Go does); display is lowercase.
        let upper: VerifierKey =
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW".parse().unwrap();
        assert_eq!(upper.to_string(), PN_VKEY);

        // Another type byte, with a correct id: unsupported.
        let mut typed = good_key.clone();
        typed[0] = 0x02;
        let id = key_hash("n", &typed);
        let s = format!("n+{}+{}", hex::encode(id), STANDARD.encode(&typed));
        assert_eq!(err(&s), NoteError::UnsupportedKeyType(2));
        // Wrong length with a correct id.
        let short = &good_key[..32];
        let s = format!("n+{}+{}", hex::encode(key_hash("n", short)), STANDARD.encode(short));
        assert_eq!(err(&s), NoteError::InvalidPublicKey("not 32 bytes"));
        // Empty key data.
        assert!(matches!(err("n+00000000+"), NoteError::MalformedVerifierKey(_)));
        // Weak key (identity point), named and bare.
        let mut identity = [0u8; 33];
        identity[0] = 1;
        identity[1] = 1;
        let s = format!("n+{}+{}", hex::encode(key_hash("n", &identity)), STANDARD.encode(identity));
        assert!(matches!(err(&s), NoteError::InvalidPublicKey(_)));
        assert!(matches!(err(&STANDARD.encode(&identity[1..])), NoteError::InvalidPublicKey(_)));
        // Bare: wrong length or non-canonical base64.
        assert!(matches!(err(&STANDARD.encode([7u8; 31])), NoteError::MalformedVerifierKey(_)));
        assert!(matches!(
            err("zjNy11rR7l7Nr4cnKT1LER2H6zdTHXyG1NMAPw64Cfw"),
            NoteError::MalformedVerifierKey(_)
        ));
        // Names.
        let key = *pn_signer().verifier().public_key();
        for name in ["", "a+b", "a b", "a\u{a0}b", "a\u{3000}b", "a\tb", "a\u{1}b"] {
            assert!(matches!(VerifierKey::new(name, key), Err(NoteError::InvalidKeyName { .. })), "{name:?}");
            assert!(
                matches!(
                    NoteSigner::new(name, SigningKey::from_bytes(&[1; 32])),
                    Err(NoteError::InvalidKeyName { .. })
                ),
                "{name:?}"
            );
        }
        assert!(VerifierKey::new("ünï.example/log", key).is_ok());
    }

    #[test]
    fn malformed_notes_are_rejected() {
        let vk: VerifierKey = PN_VKEY.parse().unwrap();
        let note = pn_note();
        let malformed = |n: &str| {
            matches!(
                open(n, &vk),
                Err(NoteError::MalformedNote(_) | NoteError::MalformedSignatureLine { .. })
            )
        };
        let sig_b64 = PN_SIG_LINE.rsplit_once(' ').unwrap().1.trim_end();
        let cases: Vec<String> = vec![
            String::new(),
            "\n".into(),
            "\n\n".into(),
            PN_TEXT.into(),
            note.trim_end_matches('\n').into(),
            format!("{PN_TEXT}{PN_SIG_LINE}"),
            note.replace('\u{2014}', "-"),
            note.replace("\u{2014} ", "\u{2014}"),
            note.replace("PeterNeumann ", "PeterNeumann  "),
            note.replace("PeterNeumann ", "Peter+Neumann "),
            note.replace("PeterNeumann ", "PeterNeumann"),
            note.replace(sig_b64, ""),
            note.replace(sig_b64, "AAAAAA=="),
            note.replace(sig_b64, &sig_b64[..sig_b64.len() - 1]),
            note.replace(sig_b64, &format!("{sig_b64}=")),
            format!("{note}junk\n"),
            format!("{note}\n"),
            note.replace("problem,\n", "problem,\r\n"),
            note.replace("problem,", "problem,\u{7}"),
            note.replace('\n', "\r\n"),
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(malformed(case), "case {i}: {case:?} -> {:?}", open(case, &vk));
        }
    }

    #[test]
    fn size_limits() {
        let vk: VerifierKey = PN_VKEY.parse().unwrap();
        let huge = format!("{}\n{PN_SIG_LINE}", "a".repeat(MAX_NOTE_BYTES));
        assert!(matches!(open(&huge, &vk), Err(NoteError::NoteTooLarge { .. })));
        let s = signer("log", 10);
        assert!(matches!(
            s.sign(&format!("{}\n", "a".repeat(MAX_NOTE_BYTES - 10))),
            Err(NoteError::NoteTooLarge { .. })
        ));

        let many = format!("{PN_TEXT}\n{}", ENOCH_SIG_LINE.repeat(MAX_SIGNATURES));
        assert!(matches!(open(&many, &vk), Err(NoteError::NoSignatureByKey { .. })));
        let many = format!("{PN_TEXT}\n{}{PN_SIG_LINE}", ENOCH_SIG_LINE.repeat(MAX_SIGNATURES - 1));
        assert_eq!(open(&many, &vk).unwrap(), PN_TEXT);
        let too_many = format!("{PN_TEXT}\n{PN_SIG_LINE}{}", ENOCH_SIG_LINE.repeat(MAX_SIGNATURES));
        assert_eq!(open(&too_many, &vk), Err(NoteError::TooManySignatures { max: MAX_SIGNATURES }));
    }

    #[test]
    fn sign_rejects_bad_bodies() {
        let s = signer("log", 11);
        for body in ["", "no newline", "tab\there\n", "cr\r\n", "nul\0\n"] {
            assert!(matches!(s.sign(body), Err(NoteError::InvalidBody(_))), "{body:?}");
        }
        assert!(!format!("{s:?}").contains(&hex::encode([11u8; 32])));
    }

    #[test]
    fn checkpoint_parse_body_is_strict() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        // The tlog-checkpoint spec's example text.
        let cp = Checkpoint::parse_body(&format!("example.com/behind-the-sofa\n20852163\n{root}\n")).unwrap();
        assert_eq!(cp.origin, "example.com/behind-the-sofa");
        assert_eq!(cp.size, 20_852_163);
        assert_eq!(STANDARD.encode(cp.root), root);

        let ok = |b: &str| Checkpoint::parse_body(b).is_ok();
        assert!(ok(&format!("o\n0\n{root}\n")));
        assert!(ok(&format!("o\n18446744073709551615\n{root}\n")));
        assert!(ok(&format!("o\n1\n{root}\next\n")));
        assert_eq!(
            Checkpoint::parse_body(&format!("o\n1\n{root}\ne1\ne 2\n")).unwrap().extensions,
            vec!["e1".to_string(), "e 2".to_string()]
        );
        for bad in [
            String::new(),
            "\n".into(),
            format!("o\n1\n{root}"),
            format!("\n1\n{root}\n"),
            "o\n1\n".into(),
            "o\n".into(),
            format!("o\n\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n00\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n 1\n{root}\n"),
            format!("o\n1.0\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            "o\n1\nAAAA\n".into(),
            format!("o\n1\n{}\n", root.trim_end_matches('=')),
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".into(),
            format!("o\n1\n{}\n", hex::encode([0u8; 32])),
            format!("o\n1\n{root}\n\n"),
            format!("o\n1\n{root}\next\n\n"),
            format!("o\r\n1\n{root}\n"),
            format!("o\t\n1\n{root}\n"),
        ] {
            assert!(
                matches!(Checkpoint::parse_body(&bad), Err(NoteError::MalformedCheckpoint(_))),
                "{bad:?} -> {:?}",
                Checkpoint::parse_body(&bad)
            );
        }
    }

    #[test]
    fn open_checkpoint_rejects_unsigned_or_non_checkpoint() {
        let s = signer("log", 12);
        let note = s.sign("just text\n").unwrap();
        assert!(matches!(open_checkpoint(&note, &s.verifier()), Err(NoteError::MalformedCheckpoint(_))));
        let spec_example = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
            — example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        assert!(matches!(
            open_checkpoint(spec_example, &s.verifier()),
            Err(NoteError::NoSignatureByKey { .. })
        ));
    }

    #[test]
    fn error_messages_are_specific() {
        assert_eq!(
            NoteError::NoSignatureByKey { key: PN_VKEY.into() }.to_string(),
            format!("note has no signature by key {PN_VKEY}")
        );
        assert_eq!(
            NoteError::UnsupportedKeyType(2).to_string(),
            "unsupported signature type 0x02: only Ed25519 (0x01) is supported"
        );
        assert_eq!(
            NoteError::MalformedSignatureLine { line: 2, reason: "x" }.to_string(),
            "malformed signature line 2: x"
        );
    }

    fn notey_string() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\n".to_string()),
                Just("\u{2014} ".to_string()),
                Just(" ".to_string()),
                Just("+".to_string()),
                Just("=".to_string()),
                Just("PeterNeumann".to_string()),
                Just("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".to_string()),
                Just("AAAA".to_string()),
                Just("0".to_string()),
                "[a-zA-Z0-9/+=\u{2014}]{0,8}",
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn open_never_panics(s in any::<String>()) {
            let vk: VerifierKey = PN_VKEY.parse().unwrap();
            let _ = open(&s, &vk);
            let bare = VerifierKey::bare(*vk.public_key()).unwrap();
            let _ = open(&s, &bare);
        }

        #[test]
        fn open_never_panics_on_note_like_input(s in notey_string()) {
            let vk: VerifierKey = PN_VKEY.parse().unwrap();
            let _ = open(&s, &vk);
            let _ = open(&format!("{PN_TEXT}\n{s}"), &vk);
            let _ = open(&format!("{s}\n\n{PN_SIG_LINE}"), &vk);
        }

        #[test]
        fn parse_body_never_panics(s in any::<String>(), t in notey_string()) {
            let _ = Checkpoint::parse_body(&s);
            let _ = Checkpoint::parse_body(&t);
        }

        #[test]
        fn verifier_key_from_str_never_panics(s in any::<String>(), t in notey_string()) {
            let _ = s.parse::<VerifierKey>();
            let _ = t.parse::<VerifierKey>();
            let _ = format!("PeterNeumann+c74f20a3+{t}").parse::<VerifierKey>();
        }

        #[test]
        fn checkpoint_sign_open_round_trips(
            origin in "[a-z0-9./ -]{0,5}[a-z0-9./-]{1,20}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[ -~]{1,10}", 0..3),
            seed in any::<[u8; 32]>(),
        ) {
            let s = NoteSigner::new("log.example", SigningKey::from_bytes(&seed)).unwrap();
            let cp = Checkpoint { origin, size, root, extensions };
            let note = sign_checkpoint(&cp, &s).unwrap();
            prop_assert_eq!(open_checkpoint(&note, &s.verifier()).unwrap(), cp.clone());
            let bare = VerifierKey::bare(*s.verifier().public_key()).unwrap();
            prop_assert_eq!(open_checkpoint(&note, &bare).unwrap(), cp);
        }
    }
}
