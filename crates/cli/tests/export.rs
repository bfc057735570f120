//! `keyledger export verify` as a user runs it: exit 0 and a summary for a valid export,
//! non-zero and the reason (with the line) for a tampered one.

use keyledger_ledger::export::{ExportPlan, ExportRequest};
use keyledger_ledger::{Engine, EngineOptions};
use std::process::Command;

#[test]
fn export_verify_accepts_a_valid_export_and_names_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Engine::init(&data, EngineOptions::default()).unwrap();
    let engine = Engine::open(&data, EngineOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let old = rt.block_on(engine.checkpoint_now()).unwrap();
    let plan = rt
        .block_on(ExportPlan::prepare(
            &engine,
            ExportRequest { consistency_from: Some(old.size), ..Default::default() },
        ))
        .unwrap();
    let mut export = Vec::new();
    plan.write(engine.log(), &mut export).unwrap();
    let key = engine.public_key().to_string();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &export).unwrap();
    let trusted = dir.path().join("checkpoint.note");
    std::fs::write(&trusted, &old.note).unwrap();

    let run = |file: &std::path::Path, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(["export", "verify"])
            .arg(file)
            .args(["--public-key", &key])
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&file, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("export valid: 1 events"), "{stdout}");
    let (code, stdout, stderr) = run(&file, &["--trusted-checkpoint", trusted.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("consistent with the trusted checkpoint"), "{stdout}");
    let (code, stdout, _) = run(&file, &["--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["valid"], true);

    let text = String::from_utf8(export).unwrap();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("init admin key", "init admin kez", 1)).unwrap();
    let (code, _, stderr) = run(&tampered, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("export verify FAILED: line 1:"), "{stderr}");

    let (code, _, stderr) = run(&dir.path().join("missing.jsonl"), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["export", "verify"])
        .arg(&file)
        .args(["--public-key", "not-a-key"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    engine.shutdown_blocking();
}
