//! Offline proofs of one event through the real binary (docs/proof-bundles.md): a key is
//! created and used, `keyledger audit prove` writes the proof of the `used` event (found by
//! the verification's request id), `keyledger proof verify` accepts it with the log's key
//! alone, refuses it after any one-byte change, and refuses it when witnesses are required
//! and none cosigned.

use keyledger_e2e::{Ledger, keyledger, path_str};
use serde_json::{Value, json};

/// A witness nobody runs (name `witness.example.org`, Ed25519 seed 42 repeated): the
/// bundle's checkpoint carries no cosignature by it.
const UNKNOWN_WITNESS: &str = "witness.example.org+6605b45c+BBl/ayPhbIUyxqvIOPrNXqeJvgx2spIDNAOb+os9No1h";

#[test]
fn audit_prove_writes_a_bundle_that_proof_verify_checks_offline() {
    let ledger = Ledger::init();
    let server = ledger.serve(&["--checkpoint-interval-secs", "1"]);
    let http = server.client();
    let created = http.post(
        "/v1/workspaces/acme/keys",
        &ledger.admin_key,
        &json!({"name": "billing", "scopes": ["read"]}),
    );
    assert_eq!(created.status, 201, "{}", created.dump());
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let verified = http.send("POST", "/v1/verify", &[], Some(&json!({"key": secret, "scopes": ["read"]})));
    assert_eq!(verified.status, 200, "{}", verified.dump());
    let request_id = verified.body["request_id"].as_str().unwrap().to_owned();

    let out = ledger.tmp.path().join("used.tlog-proof");
    let prove = |target: &str| {
        keyledger(&[
            "audit",
            "prove",
            target,
            "--out",
            path_str(&out),
            "--url",
            &server.url,
            "--admin-key",
            &ledger.admin_key,
            "--wait",
            "20",
        ])
    };
    let run = prove(&request_id);
    assert!(run.success(), "audit prove failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("keyledger proof verify"), "{}", run.stdout);
    let bundle = std::fs::read_to_string(&out).unwrap();
    assert!(bundle.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{bundle}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
    assert!(!ledger.tmp.path().join("used.tlog-proof.partial").exists());

    let verify = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["proof", "verify", path_str(file), "--public-key", &ledger.log_public_key];
        args.extend_from_slice(extra);
        keyledger(&args)
    };
    let run = verify(&out, &[]);
    assert!(run.success(), "proof verify failed: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("proof valid: event "), "{}", run.stdout);
    let run = verify(&out, &["--json"]);
    assert!(run.success(), "{}", run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answer["valid"], true);
    assert_eq!(answer["event"]["kind"], "used", "{answer}");
    assert_eq!(answer["event"]["request_id"], request_id.as_str(), "{answer}");
    assert_eq!(answer["event"]["key_id"], created.body["key_id"], "{answer}");

    // A one-byte change anywhere in the file is refused: in the event, in the proof, in
    // the checkpoint's root and in its signature.
    let tampered = ledger.tmp.path().join("tampered.tlog-proof");
    let lines: Vec<&str> = bundle.split('\n').collect();
    let root_line = bundle.split("\n\n").nth(1).unwrap().split('\n').nth(2).unwrap();
    let signature_at = bundle.rfind(' ').unwrap() + 5;
    for at in [lines[0].len() + 1 + "extra ".len() + 20, bundle.find(root_line).unwrap() + 3, signature_at] {
        let mut bytes = bundle.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        std::fs::write(&tampered, &bytes).unwrap();
        let run = verify(&tampered, &[]);
        assert_eq!(run.status.code(), Some(1), "a change at byte {at} was accepted: {}", run.stdout);
        assert!(run.stderr.contains("proof verify FAILED"), "{}", run.stderr);
    }

    // Witnesses required, none cosigned: refused, saying so.
    let run = verify(&out, &["--witness", UNKNOWN_WITNESS, "--witness-quorum", "1"]);
    assert_eq!(run.status.code(), Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("0 of the 1 trusted witnesses cosigned the checkpoint; 1 are required"),
        "{}",
        run.stderr
    );
    // Bad command lines are usage errors.
    assert_eq!(verify(&out, &["--witness", "not-a-key"]).status.code(), Some(2));
    assert_eq!(verify(&ledger.tmp.path().join("missing"), &[]).status.code(), Some(2));

    // By seq too; an event that does not exist is not found.
    let seq = answer["event"]["seq"].as_u64().unwrap().to_string();
    assert!(prove(&seq).success());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().nth(2), Some(format!("index {seq}").as_str()));
    assert_eq!(prove("999999").status.code(), Some(4));
    let run = keyledger(&["audit", "prove", "0", "--out", path_str(&out), "--wait", "18446744073709551615"]);
    assert_eq!(run.status.code(), Some(2), "an absurd --wait must be a usage error: {}", run.stderr);

    // A request that wrote several events is refused, listing their seqs.
    for name in ["one", "two"] {
        let created = http.post("/v1/workspaces/beta/keys", &ledger.admin_key, &json!({"name": name}));
        assert_eq!(created.status, 201, "{}", created.dump());
    }
    let revoked = http.post("/v1/workspaces/beta/keys/revoke-all", &ledger.admin_key, &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.dump());
    let before = std::fs::read(&out).unwrap();
    let run = prove(revoked.header("request-id").unwrap());
    assert_eq!(run.status.code(), Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("has 2 events (seq "), "{}", run.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), before, "a refused prove wrote the file");
    server.stop();
}
