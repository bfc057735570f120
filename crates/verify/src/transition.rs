//! The log-format transition note: the log's signed statement that its format-1 tree
//! (BLAKE3) and its format-2 tree (SHA-256) hold the same events (docs/log-format.md,
//! "The transition note").
//!
//! # Why it exists
//!
//! `keyledger log upgrade` rehashes a format-1 log's tree with SHA-256. Checkpoints signed
//! before the upgrade commit to BLAKE3 roots, those signed after to SHA-256 roots; without a
//! link between them an auditor holding an old checkpoint could not tell an honest upgrade
//! from a rewritten history. The transition note is that link: one C2SP signed note, by the
//! log's own key, binding the BLAKE3 root and the SHA-256 root of the tree of the same
//! `size` events. Anyone who recomputes both roots over the first `size` events (as
//! `keyledger log verify` does) knows the two chains of checkpoints describe one log.
//!
//! # Format
//!
//! ```text
//! <origin>
//! keyledger log format transition
//! 1 <size> <base64 BLAKE3 root>
//! 2 <size> <base64 SHA-256 root>
//!
//! — <key name> <signature>
//! ```
//!
//! Sizes are canonical decimal, roots standard padded base64 of 32 bytes, both sizes equal.
//! The second line is not a number, so a transition note never parses as a checkpoint (nor
//! a checkpoint as a transition note).
//!
//! # Guarantees
//!
//! [`Transition::parse_body`] accepts exactly the text [`Transition::body`] writes; nothing
//! here panics on any input.

use crate::merkle::{Hash, TreeHash};
use crate::note::{NoteError, NoteSigner, VerifierKey, open, parse_size};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The second line of every transition note.
pub const TRANSITION_LINE: &str = "keyledger log format transition";

/// Why a transition note was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The signed note does not open with the log's key.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note's text is not a transition.
    #[error("malformed transition note: {0}")]
    Malformed(&'static str),
}

/// What a transition note binds: the roots of the tree of the first `size` events, hashed
/// as format 1 and as format 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The log's origin (the checkpoints' first line).
    pub origin: String,
    /// The number of events both roots cover.
    pub size: u64,
    /// The format-1 root ([`TreeHash::Blake3`]).
    pub blake3_root: Hash,
    /// The format-2 root ([`TreeHash::Rfc6962`]).
    pub sha256_root: Hash,
}

impl Transition {
    /// The root this transition records for the tree hashed with `hash`.
    #[must_use]
    pub fn root(&self, hash: TreeHash) -> Hash {
        match hash {
            TreeHash::Blake3 => self.blake3_root,
            TreeHash::Rfc6962 => self.sha256_root,
        }
    }

    /// The note text (see the module docs).
    #[must_use]
    pub fn body(&self) -> String {
        let line = |hash: TreeHash| {
            format!("{} {} {}\n", hash.log_format(), self.size, STANDARD.encode(self.root(hash)))
        };
        format!("{}\n{TRANSITION_LINE}\n{}{}", self.origin, line(TreeHash::Blake3), line(TreeHash::Rfc6962))
    }

    /// Parses a note text written by [`Self::body`], strictly.
    ///
    /// # Errors
    ///
    /// [`TransitionError::Malformed`] naming what is wrong.
    pub fn parse_body(body: &str) -> Result<Self, TransitionError> {
        let bad = TransitionError::Malformed;
        let content = body.strip_suffix('\n').ok_or(bad("text does not end with a newline"))?;
        let lines: Vec<&str> = content.split('\n').collect();
        let [origin, kind, first, second] = lines[..] else {
            return Err(bad("expected exactly four lines"));
        };
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(bad("origin line is empty or holds a control character"));
        }
        if kind != TRANSITION_LINE {
            return Err(bad("second line is not `keyledger log format transition`"));
        }
        let (size1, blake3_root) = parse_root_line(first, TreeHash::Blake3)?;
        let (size2, sha256_root) = parse_root_line(second, TreeHash::Rfc6962)?;
        if size1 != size2 {
            return Err(bad("the two roots are of trees of different sizes"));
        }
        Ok(Self { origin: origin.to_owned(), size: size1, blake3_root, sha256_root })
    }
}

/// `<format> <size> <base64 root>` for the format of `hash`.
fn parse_root_line(line: &str, hash: TreeHash) -> Result<(u64, Hash), TransitionError> {
    let bad = TransitionError::Malformed;
    let mut parts = line.split(' ');
    let (Some(format), Some(size), Some(root), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("a root line is not `<format> <size> <root>`"));
    };
    if format != hash.log_format().to_string() {
        return Err(bad("root lines must be those of format 1 then format 2"));
    }
    let size = parse_size(size).map_err(|_| bad("a size is not canonical decimal"))?;
    let root = STANDARD
        .decode(root)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes).ok())
        .ok_or(bad("a root is not the standard padded base64 of 32 bytes"))?;
    Ok((size, root))
}

/// Signs `transition` as a C2SP note with the log's key.
///
/// # Errors
///
/// If the text would not parse back to `transition` (an origin with a newline or a control
/// character), or the signer refuses it.
pub fn sign_transition(transition: &Transition, signer: &NoteSigner) -> Result<String, TransitionError> {
    let body = transition.body();
    if Transition::parse_body(&body)? != *transition {
        return Err(TransitionError::Malformed("the origin cannot be written on one line"));
    }
    Ok(signer.sign(&body)?)
}

/// Opens a transition note signed by `key`.
///
/// # Errors
///
/// [`TransitionError::Note`] if the signature does not verify, [`TransitionError::Malformed`]
/// if the signed text is not a transition.
pub fn open_transition(note: &str, key: &VerifierKey) -> Result<Transition, TransitionError> {
    Transition::parse_body(&open(note, key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Checkpoint, open_checkpoint, sign_checkpoint};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::new("example.org/log", SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn transition() -> Transition {
        Transition { origin: "example.org/log".into(), size: 42, blake3_root: [1; 32], sha256_root: [2; 32] }
    }

    #[test]
    fn body_is_the_documented_text_and_round_trips() {
        let t = transition();
        assert_eq!(
            t.body(),
            format!(
                "example.org/log\nkeyledger log format transition\n1 42 {}\n2 42 {}\n",
                STANDARD.encode([1; 32]),
                STANDARD.encode([2; 32])
            )
        );
        let note = sign_transition(&t, &signer(1)).unwrap();
        assert_eq!(open_transition(&note, &signer(1).verifier()), Ok(t.clone()));
        assert_eq!(t.root(TreeHash::Blake3), [1; 32]);
        assert_eq!(t.root(TreeHash::Rfc6962), [2; 32]);
    }

    #[test]
    fn another_key_or_an_altered_root_is_rejected() {
        let t = transition();
        let note = sign_transition(&t, &signer(1)).unwrap();
        assert!(matches!(open_transition(&note, &signer(2).verifier()), Err(TransitionError::Note(_))));
        let root = STANDARD.encode([2; 32]);
        let bent = note.replacen(&root, &STANDARD.encode([3; 32]), 1);
        assert!(matches!(
            open_transition(&bent, &signer(1).verifier()),
            Err(TransitionError::Note(NoteError::BadSignature { .. }))
        ));
    }

    #[test]
    fn transitions_and_checkpoints_are_never_confused() {
        let s = signer(1);
        let note = sign_transition(&transition(), &s).unwrap();
        assert!(open_checkpoint(&note, &s.verifier()).is_err());
        let checkpoint = sign_checkpoint(&Checkpoint::new("example.org/log", 42, [2; 32]), &s).unwrap();
        assert!(open_transition(&checkpoint, &s.verifier()).is_err());
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let good = transition().body();
        let (one, two) = (STANDARD.encode([1; 32]), STANDARD.encode([2; 32]));
        for body in [
            String::new(),
            good.trim_end().to_owned(),
            good.replace("transition", "transitions"),
            good.replace("1 42", "2 42"),
            good.replace("2 42", "1 42"),
            good.replace("2 42", "2 43"),
            good.replace("1 42", "1 042"),
            good.replace(&two, &two[..40]),
            good.replace(&one, "AQ=="),
            format!("{good}extra\n"),
            format!("\n{}", &good[good.find('\n').unwrap() + 1..]),
            good.replace("1 42 ", "1 42  "),
        ] {
            assert!(Transition::parse_body(&body).is_err(), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(text in "\\PC*") {
            if let Ok(t) = Transition::parse_body(&text) {
                prop_assert_eq!(t.body(), text);
            }
        }

        #[test]
        fn any_transition_round_trips(size in any::<u64>(), a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let t = Transition { origin: "o".into(), size, blake3_root: a, sha256_root: b };
            prop_assert_eq!(Transition::parse_body(&t.body()), Ok(t));
        }
    }
}
