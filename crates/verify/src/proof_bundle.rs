//! Offline proof bundles: one event of the log, its inclusion proof and the (cosigned)
//! checkpoint it is proven against, in the [C2SP tlog-proof](https://c2sp.org/tlog-proof)
//! v1 text format (docs/proof-bundles.md).
//!
//! # Why this module exists
//!
//! An auditor who is handed one event ("this key was used from that address at noon")
//! should be able to check, without the server and without trusting whoever handed it
//! over, that the event is in the log the operator signed, and (with witnesses) that the
//! operator showed the same log to everyone. A bundle carries everything needed for that;
//! [`verify_bundle`] checks it against a log key and, optionally, a witness [`Quorum`].
//!
//! # Format
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the event's stored bytes>
//! index <seq, decimal>
//! <base64 hash>            (zero or more lines: the inclusion proof, leaf to root)
//!
//! <checkpoint note, verbatim: text, blank line, log signature, cosignatures>
//! ```
//!
//! keyledger puts the event's stored bytes (`0x01 ‖ postcard`, docs/log-format.md) in
//! `extra`: the leaf is their hash, so the bundle proves exactly those bytes, and the
//! event is decoded from them.
//!
//! # Guarantees
//!
//! - [`ProofBundle::parse`] is strict (the header line exactly, standard padded base64,
//!   canonical decimal index, 32-byte hashes, at most [`MAX_PROOF_HASHES`] of them, input at
//!   most [`MAX_BUNDLE_BYTES`]), names the line at fault, and never panics;
//!   [`ProofBundle::encode`] writes what it reads back.
//! - [`verify_bundle`] accepts a bundle only if the checkpoint is signed by the log key
//!   (and, for a named key, its origin is the key's name), the quorum of witnesses
//!   validly cosigned it, `extra` decodes to the one canonical encoding of an event whose
//!   seq is `index`, and the inclusion proof binds that event's leaf hash
//!   ([`crate::merkle::TreeHash`], the one place the tree hash is defined) to the
//!   checkpoint's root.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyledger_core::{Event, decode_event};

use crate::cosignature::{CosignatureError, Cosigned, Quorum};
use crate::merkle::{self, Hash, ProofError};
use crate::note::{self, Checkpoint, NoteError, VerifierKey};

/// The first line of every bundle.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// The largest bundle accepted: a checkpoint note at its largest plus an event of up to
/// 2 MiB in base64 and a full proof.
pub const MAX_BUNDLE_BYTES: usize = note::MAX_NOTE_BYTES + (3 << 20);

/// The most hashes an inclusion proof can have (a tree of at most 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a bundle was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The input is larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The input's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A line of the bundle (1-based) is malformed.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The line at fault, 1-based.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The checkpoint does not open with the log key, or is not a checkpoint.
    #[error("the checkpoint is not signed by this log key: {0}")]
    Checkpoint(NoteError),
    /// The checkpoint's origin is not the log key's name.
    #[error("the checkpoint's origin {found:?} is not the log key's name {expected:?}")]
    Origin {
        /// The origin line of the checkpoint.
        found: String,
        /// The name of the log key.
        expected: String,
    },
    /// The witness policy is not met (or a trusted witness's line does not verify).
    #[error("witness cosignatures: {0}")]
    Cosignatures(CosignatureError),
    /// There is no `extra` line: keyledger bundles carry the event bytes there.
    #[error("the bundle has no `extra` line holding the event's bytes")]
    NoEvent,
    /// `extra` is not a keyledger event in its one canonical encoding.
    #[error("`extra` is not an event of the log: {0}")]
    Event(String),
    /// The event's own seq is not the bundle's index.
    #[error("the event in `extra` has seq {seq}, but the bundle's index is {index}")]
    SeqMismatch {
        /// The bundle's `index`.
        index: u64,
        /// The event's seq.
        seq: u64,
    },
    /// The inclusion proof does not bind the event's leaf hash to the checkpoint's root.
    #[error("the inclusion proof does not prove the event in the checkpoint: {0}")]
    Inclusion(ProofError),
}

/// A parsed proof bundle; nothing in it is verified yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofBundle {
    /// The `extra` data (for keyledger, the event's stored bytes), if the line is present.
    pub extra: Option<Vec<u8>>,
    /// The zero-based index of the entry (for keyledger, the event's seq).
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up to the root's child.
    pub proof: Vec<Hash>,
    /// The checkpoint note, verbatim (its text, a blank line and its signature lines).
    pub checkpoint: String,
}

/// Takes the next newline-terminated line off `rest`.
fn next_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (line, tail) = rest.split_once('\n')?;
    *rest = tail;
    Some(line)
}

fn parse_index(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

impl ProofBundle {
    /// Parses a bundle strictly (see the module docs); the checkpoint note is only split
    /// off here, and checked by [`verify_bundle`].
    ///
    /// # Errors
    ///
    /// [`BundleError::TooLarge`] or [`BundleError::Malformed`], naming the line.
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        if text.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge { size: text.len(), max: MAX_BUNDLE_BYTES });
        }
        let bad = |line: usize, reason| BundleError::Malformed { line, reason };
        // Split off the header lines one by one; the rest is the checkpoint note, verbatim.
        let mut rest = text;
        let mut number = 1;
        match next_line(&mut rest) {
            Some(HEADER) => {}
            Some(_) => return Err(bad(number, "the first line must be `c2sp.org/tlog-proof@v1`")),
            None => return Err(bad(number, "not a tlog-proof: no complete first line")),
        }
        number += 1;
        let mut line = next_line(&mut rest).ok_or(bad(number, "the `index` line is missing"))?;
        let extra = match line.strip_prefix("extra ") {
            Some(data) => {
                let bytes = STANDARD
                    .decode(data)
                    .map_err(|_| bad(number, "`extra` is not standard padded base64"))?;
                number += 1;
                line = next_line(&mut rest).ok_or(bad(number, "the `index` line is missing"))?;
                Some(bytes)
            }
            None => None,
        };
        let index =
            line.strip_prefix("index ").ok_or(bad(number, "expected `index <decimal>`")).and_then(|n| {
                parse_index(n).ok_or(bad(number, "the index is not a decimal number without leading zeros"))
            })?;
        let mut proof = Vec::new();
        loop {
            number += 1;
            let line =
                next_line(&mut rest).ok_or(bad(number, "the blank line before the checkpoint is missing"))?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_HASHES {
                return Err(bad(number, "the inclusion proof has more than 64 hashes"));
            }
            let hash = STANDARD
                .decode(line)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or(bad(number, "a proof line is not the standard base64 of a 32-byte hash"))?;
            proof.push(hash);
        }
        if rest.is_empty() {
            return Err(bad(number + 1, "the checkpoint is missing"));
        }
        Ok(Self { extra, index, proof, checkpoint: rest.to_owned() })
    }

    /// The bundle's text: what [`ProofBundle::parse`] reads back.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.checkpoint.len() + 64 * self.proof.len() + 128);
        out.push_str(HEADER);
        out.push('\n');
        if let Some(extra) = &self.extra {
            out.push_str("extra ");
            out.push_str(&STANDARD.encode(extra));
            out.push('\n');
        }
        out.push_str(&format!("index {}\n", self.index));
        for hash in &self.proof {
            out.push_str(&STANDARD.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

/// What a valid bundle proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The event, decoded from `extra`.
    pub event: Event,
    /// Its stored bytes.
    pub raw: Vec<u8>,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// The signed checkpoint it is proven in.
    pub checkpoint: Checkpoint,
    /// The trusted witnesses that validly cosigned the checkpoint (empty without a quorum).
    pub cosigned: Vec<Cosigned>,
}

/// Verifies a bundle's text against the log's key and, if given, a witness quorum (see
/// the module docs for what is checked, in the order of the tlog-proof spec).
///
/// # Errors
///
/// The first check that fails, as a [`BundleError`].
pub fn verify_bundle(
    text: &str,
    log_key: &VerifierKey,
    witnesses: Option<&Quorum>,
) -> Result<VerifiedBundle, BundleError> {
    let bundle = ProofBundle::parse(text)?;
    let checkpoint = note::open_checkpoint(&bundle.checkpoint, log_key).map_err(BundleError::Checkpoint)?;
    if let Some(name) = log_key.name()
        && name != checkpoint.origin
    {
        return Err(BundleError::Origin {
            found: checkpoint.origin.chars().take(note::MAX_ECHOED_NAME).collect(),
            expected: name.to_owned(),
        });
    }
    let cosigned = match witnesses {
        Some(quorum) => quorum.check(&bundle.checkpoint).map_err(BundleError::Cosignatures)?,
        None => Vec::new(),
    };
    let raw = bundle.extra.ok_or(BundleError::NoEvent)?;
    let event = decode_event(&raw).map_err(|e| BundleError::Event(e.to_string()))?;
    if event.seq != bundle.index {
        return Err(BundleError::SeqMismatch { index: bundle.index, seq: event.seq });
    }
    // A tlog-proof's hashes are SHA-256 (RFC 6962): the tree of log format 2.
    let tree = merkle::TreeHash::Rfc6962;
    let leaf_hash = tree.leaf(&raw);
    merkle::verify_inclusion(
        tree,
        bundle.index,
        checkpoint.size,
        &leaf_hash,
        &bundle.proof,
        &checkpoint.root,
    )
    .map_err(BundleError::Inclusion)?;
    Ok(VerifiedBundle { event, raw, leaf_hash, checkpoint, cosigned })
}

#[cfg(test)]
mod tests;
