use super::*;
use crate::note::{NoteSigner, sign_checkpoint};
use proptest::prelude::*;
use std::process::Command;

/// The tlog-cosignature spec's example checkpoint text and timestamp.
const SPEC_TEXT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const SPEC_TIME: u64 = 1_679_315_147;

fn cosigner(name: &str, seed: u8) -> Cosigner {
    Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn log_note(text: &str) -> String {
    let log = NoteSigner::new("example.com/behind-the-sofa", SigningKey::from_bytes(&[1; 32])).unwrap();
    log.sign(text).unwrap()
}

/// Runs a Python snippet with `cryptography` (present in CI; a missing python3 fails).
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed: the cosignature tests check against Python's cryptography");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Python's own reading of a cosignature line: decodes the line, rebuilds the
/// cosignature/v1 message from the checkpoint text, and verifies Ed25519 with
/// `cryptography`. Prints `ok <timestamp> <key id hex>` or raises.
const PY_VERIFY: &str = r#"
import base64, hashlib, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
name, pub_hex, text_hex, line = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
pub = bytes.fromhex(pub_hex)
text = bytes.fromhex(text_hex)
assert line.startswith("\u2014 " + name + " ")
blob = base64.b64decode(line.split(" ")[2], validate=True)
assert len(blob) == 4 + 8 + 64
key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + pub).digest()[:4]
assert blob[:4] == key_id
(ts,) = struct.unpack(">Q", blob[4:12])
msg = b"cosignature/v1\ntime " + str(ts).encode() + b"\n" + text
Ed25519PublicKey.from_public_bytes(pub).verify(blob[12:], msg)
print("ok", ts, key_id.hex())
"#;

fn python_verifies(c: &Cosigner, text: &str, line: &str) -> u64 {
    let key = c.witness_key();
    let out = python(
        PY_VERIFY,
        &[
            c.name(),
            &hex::encode(key.public_key().as_bytes()),
            &hex::encode(text),
            line.trim_end_matches('\n'),
        ],
    );
    let parts: Vec<&str> = out.split(' ').collect();
    assert_eq!(parts[0], "ok", "{out}");
    assert_eq!(parts[2], hex::encode(key.id()));
    parts[1].parse().unwrap()
}

#[test]
fn signed_message_is_the_spec_example_byte_for_byte() {
    assert_eq!(
        signed_message(SPEC_TEXT, SPEC_TIME),
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
         CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
    // Extension lines are part of the message.
    assert_eq!(signed_message("o\n1\nr\next\n", 1), "cosignature/v1\ntime 1\no\n1\nr\next\n");
}

#[test]
fn spec_example_cosignature_line_has_our_layout() {
    // The spec's example cosignature is timestamped at the example message's time: the
    // 8 bytes after the key id are that timestamp, big-endian, then 64 signature bytes.
    let blob = STANDARD
        .decode(
            "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==",
        )
        .unwrap();
    assert_eq!(blob.len(), BLOB_LEN);
    assert_eq!(u64::from_be_bytes(blob[4..12].try_into().unwrap()), SPEC_TIME);
}

#[test]
fn cosignatures_verify_here_and_in_python() {
    let w = cosigner("witness.example.com/w1", 7);
    let line = w.cosign(SPEC_TEXT, SPEC_TIME).unwrap();
    assert!(line.starts_with("\u{2014} witness.example.com/w1 "));
    assert!(line.ends_with('\n'));
    assert_eq!(python_verifies(&w, SPEC_TEXT, &line), SPEC_TIME);

    let note = format!("{}{line}", log_note(SPEC_TEXT));
    let found = verify_cosignatures(&note, &[w.witness_key()]).unwrap();
    assert_eq!(found, vec![Cosigned { witness: w.witness_key(), timestamp: SPEC_TIME }]);
    // The log's own signature still opens.
    let log = NoteSigner::new("example.com/behind-the-sofa", SigningKey::from_bytes(&[1; 32])).unwrap();
    assert_eq!(note::open_checkpoint(&note, &log.verifier()).unwrap().size, 20_852_163);

    // With extension lines, and at the largest allowed time.
    let text = "log.example/x\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\nmy extension\n";
    let line = w.cosign(text, MAX_TIMESTAMP).unwrap();
    assert_eq!(python_verifies(&w, text, &line), MAX_TIMESTAMP);
}

#[test]
fn witness_vkey_matches_python_and_round_trips() {
    let w = cosigner("witness.example.com/w1", 9);
    let key = w.witness_key();
    let vkey = key.to_string();
    let expected = python(
        r#"
import base64, hashlib, sys
name, pub = sys.argv[1], bytes.fromhex(sys.argv[2])
typed = b"\x04" + pub
print(name + "+" + hashlib.sha256(name.encode() + b"\n" + typed).digest()[:4].hex() + "+" + base64.b64encode(typed).decode())
"#,
        &[key.name(), &hex::encode(key.public_key().as_bytes())],
    );
    assert_eq!(vkey, expected);
    assert_eq!(vkey.parse::<WitnessKey>().unwrap(), key);
    assert_eq!(WitnessKey::new(key.name(), *key.public_key()).unwrap(), key);
    assert_eq!(WitnessKey::key_id(key.name(), key.public_key()), key.id());
}

#[test]
fn witness_key_parse_errors() {
    let err = |s: &str| s.parse::<WitnessKey>().unwrap_err();
    // The signed-note spec's example vkey is a log key (type 0x01), not a witness key.
    assert_eq!(
        err("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"),
        CosignatureError::NotAWitnessKey(1)
    );
    let good = cosigner("w", 3).witness_key().to_string();
    assert!(matches!(
        err(&good.replacen('w', "x", 1)),
        CosignatureError::Note(NoteError::KeyIdMismatch { .. })
    ));
    assert!(matches!(err(""), CosignatureError::Note(NoteError::MalformedVerifierKey(_))));
    assert!(matches!(err("w+00000000+"), CosignatureError::Note(NoteError::MalformedVerifierKey(_))));
    assert!(matches!(err(&"a".repeat(5000)), CosignatureError::Note(NoteError::MalformedVerifierKey(_))));
    // A bare key has no name, and a witness always has one.
    assert!(matches!(
        err(&STANDARD.encode([9u8; 32])),
        CosignatureError::Note(NoteError::MalformedVerifierKey(_))
    ));
    // Weak key with a correct id.
    let mut typed = [0u8; 33];
    typed[0] = ALG_COSIGNATURE_V1;
    typed[1] = 1;
    let s = format!("w+{}+{}", hex::encode(note::key_hash("w", &typed)), STANDARD.encode(typed));
    assert!(matches!(err(&s), CosignatureError::Note(NoteError::InvalidPublicKey(_))));
    assert!(matches!(
        Cosigner::new("bad name", SigningKey::from_bytes(&[1; 32])),
        Err(CosignatureError::Note(NoteError::InvalidKeyName { .. }))
    ));
}

#[test]
fn a_log_signature_is_never_a_cosignature() {
    // The same key and name as the log: the type byte makes the key ids differ, so the
    // log's own line does not count as this witness's cosignature.
    let key = SigningKey::from_bytes(&[1; 32]);
    let as_witness = Cosigner::new("example.com/behind-the-sofa", key).unwrap();
    assert_eq!(verify_cosignatures(&log_note(SPEC_TEXT), &[as_witness.witness_key()]).unwrap(), vec![]);
}

#[test]
fn bad_or_foreign_cosignatures() {
    let w1 = cosigner("w1", 11);
    let w2 = cosigner("w2", 12);
    let stranger = cosigner("w3", 13);
    let base = log_note(SPEC_TEXT);
    let line1 = w1.cosign(SPEC_TEXT, 100).unwrap();
    let keys = [w1.witness_key(), w2.witness_key()];

    // Strangers are ignored; a witness counts once even with two lines.
    let note = format!(
        "{base}{}{line1}{}",
        stranger.cosign(SPEC_TEXT, 5).unwrap(),
        w1.cosign(SPEC_TEXT, 200).unwrap()
    );
    let found = verify_cosignatures(&note, &keys).unwrap();
    assert_eq!(found, vec![Cosigned { witness: w1.witness_key(), timestamp: 100 }]);

    // A cosignature over another checkpoint (copied onto this one) is refused.
    let other = w2
        .cosign("example.com/behind-the-sofa\n20852164\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", 100);
    let note = format!("{base}{line1}{}", other.unwrap());
    assert_eq!(
        verify_cosignatures(&note, &keys),
        Err(CosignatureError::BadCosignature {
            name: "w2".into(),
            key_id: hex::encode(w2.witness_key().id())
        })
    );

    // A changed timestamp breaks the signature.
    let mut blob = STANDARD.decode(line1.trim_end().rsplit_once(' ').unwrap().1).unwrap();
    blob[11] ^= 1;
    let bent = format!("\u{2014} w1 {}\n", STANDARD.encode(&blob));
    assert!(matches!(
        verify_cosignatures(&format!("{base}{bent}"), &keys),
        Err(CosignatureError::BadCosignature { .. })
    ));
    // A line with the witness's id but the wrong length, and one with a timestamp ≥ 2^63.
    let short = format!("\u{2014} w1 {}\n", STANDARD.encode(&blob[..40]));
    assert!(matches!(
        verify_cosignatures(&format!("{base}{short}"), &keys),
        Err(CosignatureError::BadCosignature { .. })
    ));
    blob[11] ^= 1;
    blob[4] |= 0x80;
    let future = format!("\u{2014} w1 {}\n", STANDARD.encode(&blob));
    assert!(matches!(
        verify_cosignatures(&format!("{base}{future}"), &keys),
        Err(CosignatureError::BadCosignature { .. })
    ));
    // Malformed notes are note errors.
    assert!(matches!(verify_cosignatures(SPEC_TEXT, &keys), Err(CosignatureError::Note(_))));
}

#[test]
fn quorum_k_of_n() {
    let ws: Vec<Cosigner> = (0..3).map(|i| cosigner(&format!("w{i}"), 20 + i)).collect();
    let keys: Vec<WitnessKey> = ws.iter().map(Cosigner::witness_key).collect();
    let two_of_three = Quorum::new(keys.clone(), 2).unwrap();
    let base = log_note(SPEC_TEXT);
    let one = format!("{base}{}", ws[0].cosign(SPEC_TEXT, 1).unwrap());
    assert_eq!(
        two_of_three.check(&one),
        Err(CosignatureError::QuorumNotMet { valid: 1, quorum: 2, witnesses: 3 })
    );
    // The same witness twice is still one.
    let twice = format!("{one}{}", ws[0].cosign(SPEC_TEXT, 2).unwrap());
    assert!(matches!(two_of_three.check(&twice), Err(CosignatureError::QuorumNotMet { valid: 1, .. })));
    let two = format!("{one}{}", ws[2].cosign(SPEC_TEXT, 3).unwrap());
    let found = two_of_three.check(&two).unwrap();
    assert_eq!(found.iter().map(|c| c.witness.name()).collect::<Vec<_>>(), ["w0", "w2"]);

    assert_eq!(
        Quorum::new(keys.clone(), 0),
        Err(CosignatureError::QuorumOutOfRange { quorum: 0, witnesses: 3 })
    );
    assert_eq!(
        Quorum::new(keys.clone(), 4),
        Err(CosignatureError::QuorumOutOfRange { quorum: 4, witnesses: 3 })
    );
    let dup = vec![keys[0].clone(), keys[1].clone(), keys[0].clone()];
    assert!(matches!(Quorum::new(dup, 1), Err(CosignatureError::DuplicateWitness(_))));
    // One key under two names is one witness, not two.
    let renamed = WitnessKey::new("other", *keys[0].public_key()).unwrap();
    assert!(matches!(
        Quorum::new(vec![keys[0].clone(), renamed], 2),
        Err(CosignatureError::DuplicateWitness(_))
    ));
}

#[test]
fn cosign_refuses_what_it_must_not_sign() {
    let w = cosigner("w", 30);
    assert_eq!(w.cosign(SPEC_TEXT, 0), Err(CosignatureError::BadTimestamp(0)));
    assert_eq!(
        w.cosign(SPEC_TEXT, MAX_TIMESTAMP + 1),
        Err(CosignatureError::BadTimestamp(MAX_TIMESTAMP + 1))
    );
    assert!(matches!(w.cosign("not a checkpoint\n", 1), Err(CosignatureError::Note(_))));
    assert!(matches!(w.cosign("o\n1\n", 1), Err(CosignatureError::Note(_))));
    assert!(!format!("{w:?}").contains(&hex::encode([30u8; 32])));
}

#[test]
fn unverified_checkpoint_reads_the_claimed_origin() {
    let cp = Checkpoint::new("log.example/a", 5, [7; 32]);
    let log = NoteSigner::new("log.example/a", SigningKey::from_bytes(&[2; 32])).unwrap();
    let note = sign_checkpoint(&cp, &log).unwrap();
    let (text, parsed) = unverified_checkpoint(&note).unwrap();
    assert_eq!(parsed, cp);
    assert_eq!(text, cp.body());
    assert!(unverified_checkpoint(&cp.body()).is_err());
}

#[test]
fn signature_lines_by_picks_the_lines_of_the_given_keys() {
    let log = NoteSigner::new("example.com/behind-the-sofa", SigningKey::from_bytes(&[1; 32])).unwrap();
    let other = NoteSigner::new("other", SigningKey::from_bytes(&[2; 32])).unwrap();
    let note = log_note(SPEC_TEXT);
    let log_line = note.rsplit_once("\n\n").unwrap().1.to_owned();
    let other_line = other.sign(SPEC_TEXT).unwrap().rsplit_once("\n\n").unwrap().1.to_owned();
    let cosig = cosigner("w", 50).cosign(SPEC_TEXT, 1).unwrap();
    let mixed = format!("{SPEC_TEXT}\n{other_line}{log_line}{cosig}{log_line}");
    assert_eq!(signature_lines_by(&mixed, &[log.verifier()]).unwrap(), format!("{log_line}{log_line}"));
    assert_eq!(signature_lines_by(&mixed, &[other.verifier()]).unwrap(), other_line);
    let bare = note::VerifierKey::bare(*log.verifier().public_key()).unwrap();
    assert_eq!(signature_lines_by(&mixed, &[bare]).unwrap(), format!("{log_line}{log_line}"));
    assert_eq!(signature_lines_by(&mixed, &[]).unwrap(), "");
    assert!(signature_lines_by(SPEC_TEXT, &[log.verifier()]).is_err());
}

proptest! {
    #[test]
    fn verification_never_panics(s in any::<String>(), tail in "[a-zA-Z0-9/+=\u{2014} \n]{0,120}") {
        let keys = [cosigner("w1", 40).witness_key()];
        let _ = verify_cosignatures(&s, &keys);
        let _ = verify_cosignatures(&format!("{}\u{2014} w1 {tail}", log_note(SPEC_TEXT)), &keys);
        let _ = unverified_checkpoint(&s);
        let _ = s.parse::<WitnessKey>();
    }
}
