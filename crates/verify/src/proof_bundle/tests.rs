use super::*;
use crate::cosignature::Cosigner;
use crate::merkle::TreeHash;
use crate::note::{NoteSigner, sign_checkpoint};
use crate::testing::path;
use ed25519_dalek::SigningKey;
use keyledger_core::{Actor, KeyId, KeyRef, Payload, RequestId, Timestamp, encode_event};
use proptest::prelude::*;
use std::process::Command;

const ORIGIN: &str = "keyledger/test";

fn log_signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).unwrap()
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        at: Timestamp(1_700_000_000_000_000 + seq as i64),
        actor: Actor::System,
        request_id: RequestId::from_bytes([7; 16]),
        payload: Payload::Expired(KeyRef {
            key_id: KeyId::from_bytes([seq as u8; 16]),
            workspace: "acme".parse().unwrap(),
        }),
    }
}

/// A log of `size` events: their stored bytes and the signed checkpoint note of the tree.
fn log(size: u64) -> (Vec<Vec<u8>>, String) {
    let raws: Vec<Vec<u8>> = (0..size).map(|seq| encode_event(&event(seq))).collect();
    let leaves: Vec<Hash> = raws.iter().map(|raw| TreeHash::Rfc6962.leaf(raw)).collect();
    let note = sign_checkpoint(
        &Checkpoint::new(ORIGIN, size, TreeHash::Rfc6962.root_from_leaves(&leaves)),
        &log_signer(),
    )
    .unwrap();
    (raws, note)
}

/// The bundle of event `index` in a log of `size` events, its checkpoint cosigned by `cosigners`.
fn bundle(index: u64, size: u64, cosigners: &[&Cosigner]) -> ProofBundle {
    let (raws, mut note) = log(size);
    let leaves: Vec<Hash> = raws.iter().map(|raw| TreeHash::Rfc6962.leaf(raw)).collect();
    let text = note.split_once("\n\n").unwrap().0.to_owned() + "\n";
    for (i, cosigner) in cosigners.iter().enumerate() {
        note.push_str(&cosigner.cosign(&text, 1_800_000_000 + i as u64).unwrap());
    }
    ProofBundle {
        extra: Some(raws[index as usize].clone()),
        index,
        proof: path(TreeHash::Rfc6962, index as usize, &leaves),
        checkpoint: note,
    }
}

fn witness(name: &str, seed: u8) -> Cosigner {
    Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn key() -> VerifierKey {
    log_signer().verifier()
}

#[test]
fn every_event_of_every_small_log_verifies_and_round_trips() {
    for size in 1..=9 {
        for index in 0..size {
            let bundle = bundle(index, size, &[]);
            let text = bundle.encode();
            assert_eq!(ProofBundle::parse(&text).unwrap(), bundle);
            let verified = verify_bundle(&text, &key(), None).unwrap();
            assert_eq!(verified.event, event(index));
            assert_eq!(verified.checkpoint.size, size);
            assert_eq!(verified.leaf_hash, TreeHash::Rfc6962.leaf(&encode_event(&event(index))));
        }
    }
}

#[test]
fn a_bare_log_key_also_verifies() {
    let bare = VerifierKey::bare(*key().public_key()).unwrap();
    verify_bundle(&bundle(2, 5, &[]).encode(), &bare, None).unwrap();
}

#[test]
fn malformed_bundles_are_rejected_naming_the_line() {
    let good = bundle(1, 3, &[]).encode();
    let (head, note) = good.split_once("\n\n").unwrap();
    let lines: Vec<&str> = head.lines().collect();
    let extra = lines[1];
    let proof = lines[3..].join("\n");
    let cases: Vec<(String, usize, &str)> = vec![
        (String::new(), 1, "no complete first line"),
        (good.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1), 1, "first line"),
        (good.replacen("c2sp.org/tlog-proof@v1\n", "c2sp.org/tlog-proof@v1\r\n", 1), 1, "first line"),
        (good.replacen("extra ", "extra  ", 1), 2, "base64"),
        (good.replacen("extra ", "extra:", 1), 2, "expected `index"),
        (good.replacen("index 1", "index 01", 1), 3, "leading zeros"),
        (good.replacen("index 1", "index -1", 1), 3, "decimal"),
        (good.replacen("index 1", "index 99999999999999999999", 1), 3, "decimal"),
        (good.replacen("index 1", "idx 1", 1), 3, "expected `index"),
        (good.replacen(&format!("{extra}\n"), "", 1).replacen("index 1\n", "", 1), 2, "expected `index"),
        (good.replacen(&proof, &format!("{proof}\nAAAA"), 1), 6, "32-byte hash"),
        (good.replacen(&proof, &proof.replace('=', ""), 1), 4, "32-byte hash"),
        (format!("{head}\n"), 6, "blank line before the checkpoint is missing"),
        (format!("{head}\n\n"), 7, "checkpoint is missing"),
        (format!("{}\n", lines[..3].join("\n")), 4, "blank line"),
    ];
    for (text, line, reason) in cases {
        match ProofBundle::parse(&text) {
            Err(BundleError::Malformed { line: at, reason: why }) => {
                assert_eq!(at, line, "{text:?}: {why}");
                assert!(why.contains(reason), "{text:?}: {why:?} does not say {reason:?}");
            }
            other => panic!("{text:?} was not rejected as malformed: {other:?}"),
        }
    }
    let long =
        format!("{head}\n{}\n\n{note}", vec!["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; 65].join("\n"));
    assert!(
        matches!(ProofBundle::parse(&long), Err(BundleError::Malformed { reason, .. }) if reason.contains("64"))
    );
    let huge = "x".repeat(MAX_BUNDLE_BYTES + 1);
    assert!(matches!(ProofBundle::parse(&huge), Err(BundleError::TooLarge { .. })));
    // A note that is not a checkpoint note parses, and is refused when verified.
    let not_a_note = format!("{head}\n\nhello\n");
    assert!(matches!(verify_bundle(&not_a_note, &key(), None), Err(BundleError::Checkpoint(_))));
}

#[test]
fn a_bundle_without_extra_parses_but_does_not_verify() {
    let mut bundle = bundle(0, 2, &[]);
    bundle.extra = None;
    let text = bundle.encode();
    assert_eq!(ProofBundle::parse(&text).unwrap().extra, None);
    assert_eq!(verify_bundle(&text, &key(), None), Err(BundleError::NoEvent));
}

#[test]
fn a_tampered_event_is_refused() {
    let good = bundle(2, 5, &[]);
    // Every single-bit flip of the event bytes is refused: either they no longer decode
    // canonically, or the event is another one whose leaf is not in the tree.
    for byte in 0..good.extra.as_ref().unwrap().len() {
        let mut bad = good.clone();
        bad.extra.as_mut().unwrap()[byte] ^= 0x01;
        let error = verify_bundle(&bad.encode(), &key(), None).unwrap_err();
        assert!(
            matches!(
                error,
                BundleError::Event(_) | BundleError::Inclusion(_) | BundleError::SeqMismatch { .. }
            ),
            "byte {byte}: {error}"
        );
    }
    // Another event of the same log, at the claimed index, is refused too.
    let mut other = good.clone();
    other.extra = Some(encode_event(&event(3)));
    assert_eq!(
        verify_bundle(&other.encode(), &key(), None),
        Err(BundleError::SeqMismatch { index: 2, seq: 3 })
    );
}

#[test]
fn a_tampered_proof_is_refused() {
    let good = bundle(2, 5, &[]);
    for i in 0..good.proof.len() {
        let mut bad = good.clone();
        bad.proof[i][0] ^= 0x80;
        assert_eq!(
            verify_bundle(&bad.encode(), &key(), None),
            Err(BundleError::Inclusion(ProofError::RootMismatch))
        );
    }
    let mut short = good.clone();
    short.proof.pop();
    assert_eq!(
        verify_bundle(&short.encode(), &key(), None),
        Err(BundleError::Inclusion(ProofError::ProofTooShort))
    );
    let mut long = good.clone();
    long.proof.push([0; 32]);
    assert!(matches!(verify_bundle(&long.encode(), &key(), None), Err(BundleError::Inclusion(_))));
    // The right event and proof, at another index.
    let mut moved = good;
    moved.index = 3;
    moved.extra = Some(encode_event(&event(3)));
    assert!(matches!(verify_bundle(&moved.encode(), &key(), None), Err(BundleError::Inclusion(_))));
}

#[test]
fn a_tampered_checkpoint_or_another_key_is_refused() {
    let good = bundle(2, 5, &[]).encode();
    let bigger = good.replacen("\n5\n", "\n6\n", 1);
    assert_ne!(bigger, good);
    assert!(matches!(
        verify_bundle(&bigger, &key(), None),
        Err(BundleError::Checkpoint(NoteError::BadSignature { .. }))
    ));
    let stranger = NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[2; 32])).unwrap().verifier();
    assert!(matches!(verify_bundle(&good, &stranger, None), Err(BundleError::Checkpoint(_))));
    // A one-byte change anywhere is refused.
    for at in 0..good.len() {
        let mut bytes = good.clone().into_bytes();
        bytes[at] ^= 0x01;
        if let Ok(text) = String::from_utf8(bytes) {
            assert!(verify_bundle(&text, &key(), None).is_err(), "a change at byte {at} was accepted");
        }
    }
}

#[test]
fn a_named_key_requires_the_origin_to_be_its_name() {
    // The log signs under "other" a checkpoint whose origin is ORIGIN.
    let signer = NoteSigner::new("other", SigningKey::from_bytes(&[1; 32])).unwrap();
    let mut bundle = bundle(0, 1, &[]);
    let leaf = TreeHash::Rfc6962.leaf(bundle.extra.as_ref().unwrap());
    bundle.checkpoint = sign_checkpoint(&Checkpoint::new(ORIGIN, 1, leaf), &signer).unwrap();
    assert!(matches!(
        verify_bundle(&bundle.encode(), &signer.verifier(), None),
        Err(BundleError::Origin { .. })
    ));
    let bare = VerifierKey::bare(*signer.verifier().public_key()).unwrap();
    verify_bundle(&bundle.encode(), &bare, None).unwrap();
}

fn quorum(witnesses: &[&Cosigner], k: usize) -> Quorum {
    Quorum::new(witnesses.iter().map(|w| w.witness_key()).collect(), k).unwrap()
}

#[test]
fn no_cosignature_does_not_meet_a_quorum_of_one() {
    let w1 = witness("witness1.example", 11);
    let error = verify_bundle(&bundle(1, 4, &[]).encode(), &key(), Some(&quorum(&[&w1], 1))).unwrap_err();
    assert_eq!(
        error,
        BundleError::Cosignatures(CosignatureError::QuorumNotMet { valid: 0, quorum: 1, witnesses: 1 })
    );
    assert!(error.to_string().contains("0 of the 1 trusted witnesses"), "{error}");
}

#[test]
fn two_cosignatures_meet_a_quorum_of_two() {
    let (w1, w2) = (witness("witness1.example", 11), witness("witness2.example", 12));
    let text = bundle(1, 4, &[&w1, &w2]).encode();
    let verified = verify_bundle(&text, &key(), Some(&quorum(&[&w1, &w2], 2))).unwrap();
    assert_eq!(verified.cosigned.len(), 2);
    // The cosignatures do not get in the way of a verifier without witnesses.
    verify_bundle(&text, &key(), None).unwrap();
}

#[test]
fn a_cosignature_by_an_unknown_key_is_ignored() {
    let (w1, stranger) = (witness("witness1.example", 11), witness("stranger.example", 13));
    let text = bundle(1, 4, &[&stranger]).encode();
    assert!(matches!(
        verify_bundle(&text, &key(), Some(&quorum(&[&w1], 1))),
        Err(BundleError::Cosignatures(CosignatureError::QuorumNotMet { valid: 0, .. }))
    ));
    // A stranger claiming a trusted witness's name, under its own key, is ignored too.
    let impostor = witness("witness1.example", 14);
    let text = bundle(1, 4, &[&impostor, &w1]).encode();
    let verified = verify_bundle(&text, &key(), Some(&quorum(&[&w1], 1))).unwrap();
    assert_eq!(verified.cosigned.len(), 1);
}

#[test]
fn a_duplicate_cosignature_counts_once() {
    let (w1, w2) = (witness("witness1.example", 11), witness("witness2.example", 12));
    let text = bundle(1, 4, &[&w1, &w1]).encode();
    assert!(matches!(
        verify_bundle(&text, &key(), Some(&quorum(&[&w1, &w2], 2))),
        Err(BundleError::Cosignatures(CosignatureError::QuorumNotMet { valid: 1, quorum: 2, .. }))
    ));
    assert_eq!(verify_bundle(&text, &key(), Some(&quorum(&[&w1, &w2], 1))).unwrap().cosigned.len(), 1);
}

#[test]
fn a_forged_cosignature_by_a_trusted_witness_is_refused() {
    let w1 = witness("witness1.example", 11);
    let good = bundle(1, 4, &[&w1]).encode();
    let last = good.trim_end().rsplit('\n').next().unwrap().to_owned();
    let sig = last.rsplit(' ').next().unwrap();
    let mut blob = STANDARD.decode(sig).unwrap();
    let end = blob.len() - 1;
    blob[end] ^= 1;
    let forged = good.replacen(sig, &STANDARD.encode(blob), 1);
    assert!(matches!(
        verify_bundle(&forged, &key(), Some(&quorum(&[&w1], 1))),
        Err(BundleError::Cosignatures(CosignatureError::BadCosignature { .. }))
    ));
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(text in "\\PC*", cut in 0usize..400) {
        let _ = verify_bundle(&text, &key(), None);
        let good = bundle(1, 3, &[]).encode();
        let cut = cut.min(good.len());
        if good.is_char_boundary(cut) {
            let _ = verify_bundle(&format!("{}{text}", &good[..cut]), &key(), None);
        }
    }
}

/// An independent reading of a bundle, in Python: the tlog-proof lines, the log's Ed25519
/// signature on the checkpoint (with `cryptography`), and the RFC 6962 inclusion proof of
/// SHA-256(0x00 ‖ extra) (with `hashlib`). Prints `ok <index> <size>` or raises.
const PY_VERIFY_BUNDLE: &str = r#"
import base64, hashlib, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
bundle, name, pub = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
head, note = bundle.split("\n\n", 1)
lines = head.split("\n")
assert lines[0] == "c2sp.org/tlog-proof@v1"
assert lines[1].startswith("extra ")
extra = base64.b64decode(lines[1][6:], validate=True)
assert lines[2].startswith("index ")
index = int(lines[2][6:])
proof = [base64.b64decode(l, validate=True) for l in lines[3:]]
text, sigs = note.rsplit("\n\n", 1)
text += "\n"
key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + pub).digest()[:4]
signed = False
for line in sigs.strip("\n").split("\n"):
    signer, blob = line[2:].split(" ")
    blob = base64.b64decode(blob)
    if signer == name and blob[:4] == key_id:
        Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode())
        signed = True
assert signed, "no signature by the log key"
origin, size, root = text.split("\n")[:3]
size, root = int(size), base64.b64decode(root)
h = lambda b: hashlib.sha256(b).digest()
r = h(b"\x00" + extra)
fn, sn = index, size - 1
for p in proof:
    assert sn != 0
    if fn & 1 or fn == sn:
        r = h(b"\x01" + p + r)
        if not fn & 1:
            while fn and not fn & 1:
                fn >>= 1; sn >>= 1
    else:
        r = h(b"\x01" + r + p)
    fn >>= 1; sn >>= 1
assert sn == 0 and r == root, "the inclusion proof does not lead to the root"
print("ok", index, size)
"#;

#[test]
fn python_verifies_a_bundle_independently() {
    for (index, size) in [(0, 1), (3, 7), (6, 7), (8, 13)] {
        let text = bundle(index, size, &[&witness("witness1.example", 11)]).encode();
        let out = Command::new("python3")
            .args(["-c", PY_VERIFY_BUNDLE, &text, ORIGIN, &hex::encode(key().public_key().as_bytes())])
            .output()
            .expect("python3 must be installed");
        assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("ok {index} {size}"));
    }
}
