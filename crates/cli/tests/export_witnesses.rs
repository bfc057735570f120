//! An export anchored to a checkpoint that witnesses cosigned carries their cosignature
//! lines in the manifest's checkpoint note, verifies as before without a witness policy,
//! and `keyledger export verify --witness … --witness-quorum K` refuses it unless K of the
//! given witnesses validly cosigned (docs/export-format.md, "Witness cosignatures").

use ed25519_dalek::SigningKey;
use keyledger_ledger::export::{ExportPlan, ExportRequest};
use keyledger_log::checkpoint::StoredCheckpoint;
use keyledger_verify::cosignature::{CosignatureError, Cosigner, Quorum};
use keyledger_verify::export::{ExportError, verify_export, verify_export_witnessed};
use std::sync::Arc;

mod support;

fn witness(name: &str, seed: u8) -> Cosigner {
    Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

/// The engine's latest checkpoint with `cosigners`' lines appended to its note, as a log
/// that stores its witnesses' cosignatures serves it.
fn cosigned(checkpoint: &StoredCheckpoint, cosigners: &[&Cosigner]) -> StoredCheckpoint {
    let text = format!("{}\n", checkpoint.note.split_once("\n\n").unwrap().0);
    let mut cosigned = checkpoint.clone();
    for (i, cosigner) in cosigners.iter().enumerate() {
        cosigned.note.push_str(&cosigner.cosign(&text, 1_900_000_000 + i as u64).unwrap());
    }
    cosigned
}

#[test]
fn export_verify_requires_the_witness_quorum_of_the_anchor() {
    let support::Local { dir, data, engine, rt } = support::local();
    let checkpoint = rt.block_on(engine.checkpoint_now()).unwrap();
    let (w1, w2, stranger) =
        (witness("w1.example", 21), witness("w2.example", 22), witness("w3.example", 23));
    let signer = Arc::new(keyledger_ledger::datadir::load(&data).unwrap().signer);
    let anchor = cosigned(&checkpoint, &[&w1, &w2, &w1]);
    let plan = ExportPlan::new(engine.log(), signer, anchor.clone(), ExportRequest::default()).unwrap();
    let mut export = Vec::new();
    plan.write(engine.log(), &mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        manifest["manifest"]["checkpoint"]["note"],
        anchor.note.as_str(),
        "the note is carried verbatim"
    );

    let key = engine.public_key().clone();
    // Cosignature lines are signature lines of other keys: a verifier without witnesses
    // ignores them.
    verify_export(text.as_bytes(), &key, None).unwrap();
    let both = Quorum::new(vec![w1.witness_key(), w2.witness_key()], 2).unwrap();
    let summary = verify_export_witnessed(text.as_bytes(), &key, None, Some(&both)).unwrap();
    assert_eq!(summary.cosigned.len(), 2);
    assert!(summary.to_string().contains("cosigned by w1.example, w2.example"), "{summary}");
    let unknown = Quorum::new(vec![stranger.witness_key()], 1).unwrap();
    match verify_export_witnessed(text.as_bytes(), &key, None, Some(&unknown)) {
        Err(ExportError::Manifest { reason, .. }) => {
            let expected = CosignatureError::QuorumNotMet { valid: 0, quorum: 1, witnesses: 1 }.to_string();
            assert!(reason.contains(&expected), "{reason}");
        }
        other => panic!("an export without the stranger's cosignature was accepted: {other:?}"),
    }

    // Through the binary.
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &text).unwrap();
    let witness_file = dir.path().join("w2.vkey");
    std::fs::write(&witness_file, format!("{}\n", w2.witness_key())).unwrap();
    let public_key = key.to_string();
    let run = |extra: &[&str]| support::export_verify(&file, &public_key, extra);
    let (w1_key, stranger_key) = (w1.witness_key().to_string(), stranger.witness_key().to_string());
    let (code, stdout, stderr) = run(&["--witness", &w1_key, "--witness", witness_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("cosigned by w1.example, w2.example"), "{stdout}");
    let (code, stdout, stderr) =
        run(&["--witness", &w1_key, "--witness", &stranger_key, "--witness-quorum", "1"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, _, stderr) = run(&["--witness", &w1_key, "--witness", &stranger_key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("1 of the 2 trusted witnesses cosigned the checkpoint; 2 are required"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["--witness", &stranger_key, "--witness-quorum", "1", "--json"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["valid"], false);
    // Bad policies are usage errors, before the file is read.
    for bad in [
        &["--witness", &w1_key, "--witness-quorum", "2"][..],
        &["--witness", &w1_key, "--witness-quorum", "0"],
        &["--witness", &w1_key, "--witness", &w1_key],
        &["--witness", &key.to_string()],
        &["--witness-quorum", "1"],
    ] {
        let (code, _, stderr) = run(bad);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
    }
    engine.shutdown_blocking();
}
