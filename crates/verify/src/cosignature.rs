//! C2SP tlog-cosignature v1 (Ed25519): a witness's timestamped statement about a checkpoint.
//!
//! A witness checks that a log's new checkpoint is consistent with every checkpoint of that
//! log it has seen before, and then cosigns it (docs/witness.md). A verifier that requires
//! cosignatures from a quorum of witnesses it trusts cannot be shown a split view of the log
//! unless that many witnesses collude. This module is both sides of the
//! [tlog-cosignature](https://c2sp.org/tlog-cosignature) Ed25519 format: [`Cosigner`]
//! produces cosignature lines, [`verify_cosignatures`] and [`Quorum`] check them.
//!
//! # Wire format
//!
//! The signed message is the fixed header line, a timestamp line, and the checkpoint's
//! note text exactly (final newline included, signature lines excluded):
//!
//! ```text
//! cosignature/v1
//! time <POSIX seconds, decimal, no leading zero>
//! <origin>
//! <size>
//! <base64 root>
//! [extension lines]
//! ```
//!
//! A cosignature is a signed-note signature line:
//! `— <witness name> <base64(4-byte key id ‖ 8-byte big-endian timestamp ‖ 64-byte signature)>`.
//! The key id is `SHA-256(name ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[..4]`, and a witness's
//! verifier key (vkey) is `<name>+<8 hex key id>+<base64(0x04 ‖ public key)>`. The type
//! byte 0x04 differs from a log key's 0x01, so a cosignature can never pass for a log
//! signature nor the other way round, even under the same name.
//!
//! # Guarantees
//!
//! - Notes are parsed by the one note parser (`note::parse_note`); the same bounds apply
//!   and no input makes anything here panic.
//! - [`verify_cosignatures`] counts a witness only if a line carries its name and key id
//!   and verifies (`verify_strict`) over the message above; a line that names a trusted
//!   witness but does not verify rejects the note (as [`crate::note::open`] does for a
//!   log's key). Lines from other keys are ignored.
//! - It does not check the log's own signature: open the note with
//!   [`crate::note::open_checkpoint`] first.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::note::{self, Checkpoint, NoteError};

/// Signature type byte of a timestamped Ed25519 checkpoint cosignature (cosignature/v1).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The first line of every cosignature/v1 signed message (domain separation).
pub const COSIGNATURE_V1_HEADER: &str = "cosignature/v1\n";

/// The largest timestamp the format allows (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Bytes of a decoded cosignature: key id, timestamp, Ed25519 signature.
const BLOB_LEN: usize = 4 + 8 + 64;

/// Why a witness key, a cosignature or a quorum was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// The note or checkpoint itself is malformed, or a key's name or encoding is.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A witness verifier key has another type byte than 0x04.
    #[error("a witness key has signature type 0x04 (cosignature/v1), not 0x{0:02x}")]
    NotAWitnessKey(u8),
    /// A timestamp to sign is zero or above 2^63 - 1.
    #[error("cosignature timestamp {0} is not between 1 and 2^63 - 1")]
    BadTimestamp(u64),
    /// A line names a trusted witness (name and key id) but is not a valid cosignature.
    #[error("invalid cosignature by witness {name}+{key_id}")]
    BadCosignature {
        /// The witness's name.
        name: String,
        /// Its key id, in hex.
        key_id: String,
    },
    /// A quorum larger than the number of witnesses, or zero.
    #[error("a quorum of {quorum} is not between 1 and the {witnesses} witnesses given")]
    QuorumOutOfRange {
        /// The quorum asked for.
        quorum: usize,
        /// How many witnesses were given.
        witnesses: usize,
    },
    /// The same witness (name and key) is given twice.
    #[error("witness {0} is given twice")]
    DuplicateWitness(String),
    /// Fewer trusted witnesses than the quorum validly cosigned the note.
    #[error("{valid} of the {witnesses} trusted witnesses cosigned the checkpoint; {quorum} are required")]
    QuorumNotMet {
        /// How many trusted witnesses validly cosigned.
        valid: usize,
        /// The quorum.
        quorum: usize,
        /// How many witnesses are trusted.
        witnesses: usize,
    },
}

/// The exact message a cosignature/v1 signs: the header line, `time <timestamp>`, and the
/// checkpoint note text (final newline included).
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> String {
    format!("{COSIGNATURE_V1_HEADER}time {timestamp}\n{checkpoint_text}")
}

fn witness_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut typed = [0u8; 33];
    typed[0] = ALG_COSIGNATURE_V1;
    typed[1..].copy_from_slice(key.as_bytes());
    note::key_hash(name, &typed)
}

/// A witness's public key: its name, its cosignature/v1 key id and its Ed25519 key.
///
/// Written as the vkey `<name>+<8 hex key id>+<base64(0x04 ‖ key)>` ([`fmt::Display`],
/// [`FromStr`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl WitnessKey {
    /// A witness key. Fails if `name` breaks the key-name rules or `key` is weak.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, CosignatureError> {
        note::check_key_name(name)?;
        let key = note::decode_public_key(key.as_bytes())?;
        Ok(Self { name: name.to_owned(), key_id: witness_key_id(name, &key), key })
    }

    /// The cosignature/v1 key id of `key` under `name`:
    /// `SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[..4]`.
    pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
        witness_key_id(name, key)
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The witness's key id.
    pub fn id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Display for WitnessKey {
    /// `<name>+<8 lowercase hex key id>+<base64(0x04 ‖ key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = [0u8; 33];
        typed[0] = ALG_COSIGNATURE_V1;
        typed[1..].copy_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.key_id), STANDARD.encode(typed))
    }
}

impl FromStr for WitnessKey {
    type Err = CosignatureError;

    /// Parses `<name>+<8 hex key id>+<base64(0x04 ‖ 32-byte key)>` with the note module's
    /// vkey parser (name rules, key id check), then requires type 0x04 and a usable key.
    /// Leading and trailing whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 4096 {
            return Err(NoteError::MalformedVerifierKey("longer than 4096 bytes").into());
        }
        let (name, typed) = note::parse_vkey(s)?;
        let Some((&alg, raw)) = typed.split_first() else {
            return Err(NoteError::MalformedVerifierKey("key is empty").into());
        };
        if alg != ALG_COSIGNATURE_V1 {
            return Err(CosignatureError::NotAWitnessKey(alg));
        }
        let key = note::decode_public_key(raw)?;
        Ok(Self { name: name.to_owned(), key_id: witness_key_id(name, &key), key })
    }
}

/// A witness's signing key: produces cosignature/v1 lines under its name.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key_id: [u8; 4],
    key: SigningKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Cosigner {
    /// A cosigner named `name`. Fails if `name` breaks the key-name rules.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, CosignatureError> {
        note::check_key_name(name)?;
        Ok(Self { name: name.to_owned(), key_id: witness_key_id(name, &key.verifying_key()), key })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key to hand to verifiers.
    pub fn witness_key(&self) -> WitnessKey {
        // The name was checked in `new`; a key derived from a secret scalar is never weak.
        WitnessKey { name: self.name.clone(), key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// Cosigns a checkpoint's note text at `timestamp` (POSIX seconds, 1 to 2^63 - 1) and
    /// returns the signature line, `— <name> <base64>` and a newline, ready to be appended
    /// to the note. The text must be a valid checkpoint ([`Checkpoint::parse_body`]).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> Result<String, CosignatureError> {
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::BadTimestamp(timestamp));
        }
        note::check_text(checkpoint_text)?;
        Checkpoint::parse_body(checkpoint_text)?;
        let signature = self.key.sign(signed_message(checkpoint_text, timestamp).as_bytes());
        let mut blob = [0u8; BLOB_LEN];
        blob[..4].copy_from_slice(&self.key_id);
        blob[4..12].copy_from_slice(&timestamp.to_be_bytes());
        blob[12..].copy_from_slice(&signature.to_bytes());
        Ok(format!("{}{} {}\n", note::SIG_PREFIX, self.name, STANDARD.encode(blob)))
    }
}

/// One trusted witness's valid cosignature of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    /// The witness that cosigned.
    pub witness: WitnessKey,
    /// When it cosigned (POSIX seconds).
    pub timestamp: u64,
}

fn check_cosignature(text: &str, key: &WitnessKey, sig: &[u8]) -> Option<u64> {
    // The note parser has taken the 4-byte key id off; 8 + 64 bytes remain.
    let (time, signature) = sig.split_first_chunk::<8>()?;
    let timestamp = u64::from_be_bytes(*time);
    let signature = <[u8; 64]>::try_from(signature).ok()?;
    if timestamp > MAX_TIMESTAMP {
        return None;
    }
    key.key
        .verify_strict(signed_message(text, timestamp).as_bytes(), &Signature::from_bytes(&signature))
        .ok()?;
    Some(timestamp)
}

/// Which of `witnesses` validly cosigned `note`, in the order of `witnesses`, each at most
/// once (with the timestamp of its first valid line).
///
/// # Errors
///
/// [`CosignatureError::Note`] if the note is malformed; [`CosignatureError::BadCosignature`]
/// if a line carries a trusted witness's name and key id but does not verify.
pub fn verify_cosignatures(note: &str, witnesses: &[WitnessKey]) -> Result<Vec<Cosigned>, CosignatureError> {
    let (text, lines) = note::parse_note(note)?;
    let mut found: Vec<Option<u64>> = vec![None; witnesses.len()];
    for line in &lines {
        for (index, witness) in witnesses.iter().enumerate() {
            if witness.name != line.name || witness.key_id != line.key_id {
                continue;
            }
            let Some(timestamp) = check_cosignature(text, witness, &line.sig) else {
                return Err(CosignatureError::BadCosignature {
                    name: line.name.chars().take(note::MAX_ECHOED_NAME).collect(),
                    key_id: hex::encode(line.key_id),
                });
            };
            found[index].get_or_insert(timestamp);
        }
    }
    Ok(witnesses
        .iter()
        .zip(found)
        .filter_map(|(witness, timestamp)| Some(Cosigned { witness: witness.clone(), timestamp: timestamp? }))
        .collect())
}

/// A verifier's witness policy: `quorum` of these `witnesses` must cosign (K of N).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    witnesses: Vec<WitnessKey>,
    quorum: usize,
}

impl Quorum {
    /// A policy requiring `quorum` (1 to `witnesses.len()`) distinct witnesses.
    ///
    /// # Errors
    ///
    /// [`CosignatureError::QuorumOutOfRange`], or [`CosignatureError::DuplicateWitness`] if
    /// a witness is listed twice (it would count twice).
    pub fn new(witnesses: Vec<WitnessKey>, quorum: usize) -> Result<Self, CosignatureError> {
        if quorum == 0 || quorum > witnesses.len() {
            return Err(CosignatureError::QuorumOutOfRange { quorum, witnesses: witnesses.len() });
        }
        for (i, w) in witnesses.iter().enumerate() {
            if witnesses[..i].iter().any(|v| (v.name == w.name && v.key_id == w.key_id) || v.key == w.key) {
                return Err(CosignatureError::DuplicateWitness(w.to_string()));
            }
        }
        Ok(Self { witnesses, quorum })
    }

    /// The trusted witnesses.
    pub fn witnesses(&self) -> &[WitnessKey] {
        &self.witnesses
    }

    /// How many must cosign.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Checks that at least the quorum of trusted witnesses validly cosigned `note` and
    /// returns those that did ([`verify_cosignatures`]).
    ///
    /// # Errors
    ///
    /// Those of [`verify_cosignatures`], and [`CosignatureError::QuorumNotMet`].
    pub fn check(&self, note: &str) -> Result<Vec<Cosigned>, CosignatureError> {
        let cosigned = verify_cosignatures(note, &self.witnesses)?;
        if cosigned.len() < self.quorum {
            return Err(CosignatureError::QuorumNotMet {
                valid: cosigned.len(),
                quorum: self.quorum,
                witnesses: self.witnesses.len(),
            });
        }
        Ok(cosigned)
    }
}

/// The checkpoint a note claims, before any signature is checked: only for finding the
/// keys that must then verify it (a witness looks up the log by its origin). Parsed by the
/// one note parser and [`Checkpoint::parse_body`].
///
/// # Errors
///
/// A malformed note or checkpoint.
pub fn unverified_checkpoint(note: &str) -> Result<(String, Checkpoint), NoteError> {
    let (text, _) = note::parse_note(note)?;
    Ok((text.to_owned(), Checkpoint::parse_body(text)?))
}

/// The signature lines of `note` that carry the name and key id of one of `keys`, each
/// with its final newline, in the note's order. They are not verified here: call this on a
/// note [`crate::note::open`] accepted for those keys, which checked every such line. A
/// witness keeps these lines, the log's signatures it verified, next to its cosignature.
///
/// # Errors
///
/// A malformed note.
pub fn signature_lines_by(note: &str, keys: &[note::VerifierKey]) -> Result<String, NoteError> {
    let (text, lines) = note::parse_note(note)?;
    // Every line is one of the note's own, after the text and its blank line: find each
    // by walking the signature block in step with the parsed lines.
    let block = &note[text.len() + 1..];
    Ok(block
        .split_inclusive('\n')
        .zip(&lines)
        .filter(|(_, parsed)| keys.iter().any(|key| key.matches(parsed.name, parsed.key_id)))
        .map(|(line, _)| line)
        .collect())
}

#[cfg(test)]
mod tests;
