//! `keyledger export verify` as a user runs it: exit 0 and a summary for a valid export,
//! non-zero and the reason (with the line) for a tampered one.

use keyledger_ledger::export::{Bound, ExportPlan, ExportRequest};
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_verify::export::{Completeness, LinesHasher, line_value, sign_manifest, verify_export};
use keyledger_verify::merkle::Frontier;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod support;

#[test]
fn export_verify_accepts_a_valid_export_and_names_the_bad_line() {
    let support::Local { dir, data: _, engine, rt } = support::local();
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

    let run = |file: &std::path::Path, extra: &[&str]| support::export_verify(file, &key, extra);
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
    let output = Command::new(support::BIN)
        .args(["export", "verify"])
        .arg(&file)
        .args(["--public-key", "not-a-key"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    engine.shutdown_blocking();
}

/// An engine whose log holds `keys + 1` events with distinct times (a key created every
/// few milliseconds), so that time bounds fall between events.
fn engine_with_distinct_times(data: &std::path::Path, keys: usize) -> Engine {
    use keyledger_ledger::{Caller, Expiry, KeySpec};
    Engine::init(data, EngineOptions::default()).unwrap();
    let engine = Engine::open(data, EngineOptions::default()).unwrap();
    for i in 0..keys {
        std::thread::sleep(Duration::from_millis(3));
        let spec = KeySpec {
            name: format!("svc {i}"),
            scopes: vec!["read".into()],
            resources: Vec::new(),
            environment: keyledger_core::Environment::Live,
            owner: None,
            metadata: "{}".into(),
            expiry: Expiry::Never,
            credits: None,
        };
        engine.create_blocking(Caller::system(), "acme".parse().unwrap(), spec).unwrap();
    }
    engine
}

/// What a malicious signer can make of an unfiltered export: its first (or last) event
/// line dropped, the manifest's range, count, hash and range proof rebuilt to match,
/// `edit` applied, and the manifest re-signed with the log's own key.
fn shortened(
    data: &Path,
    engine: &Engine,
    export: &str,
    drop_first: bool,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> String {
    let mut lines: Vec<&str> = export.lines().collect();
    let manifest_line = lines.pop().unwrap();
    let mut manifest =
        serde_json::from_str::<Value>(manifest_line).unwrap()["manifest"].as_object().unwrap().clone();
    if drop_first {
        lines.remove(0);
    } else {
        lines.pop();
    }
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap();
    let (first, last) = (parse(lines[0]), parse(lines[lines.len() - 1]));
    let (first_seq, last_seq) = (first["seq"].as_u64().unwrap(), last["seq"].as_u64().unwrap());
    let hash = engine.log().tree_hash();
    let mut left = Frontier::new(hash);
    for record in engine.log().records_from(0).take(first_seq as usize) {
        left.push(hash.leaf(&record.unwrap().1));
    }
    let size = manifest["checkpoint"]["size"].as_u64().unwrap();
    let consistency = engine.log().tree().consistency_proof(last_seq + 1, size).unwrap();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut hasher = LinesHasher::new();
    hasher.update(body.as_bytes());
    manifest["range"] =
        json!({"first_seq": first_seq, "last_seq": last_seq, "from": first["at"], "to": last["at"]});
    manifest["lines"] = lines.len().into();
    manifest["lines_hash"] = hex::encode(hasher.finalize()).into();
    manifest["range_proof"] = json!({
        "left_peaks": left.peaks().iter().map(hex::encode).collect::<Vec<_>>(),
        "consistency": consistency.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    edit(&mut manifest);
    let signer = keyledger_ledger::datadir::load(data).unwrap().signer;
    sign_manifest(&mut manifest, &signer);
    format!("{body}{}\n", keyledger_verify::export::manifest_line(manifest))
}

/// Security review finding: with time bounds the verifier used to skip the range-edge
/// checks yet claim "complete range", so a signer could drop the first or last events of
/// a time window unnoticed. Now a time-bounded export carries the events just outside the
/// window (with inclusion proofs) and only then claims a complete range.
#[test]
fn time_bounded_export_proves_its_edges_or_says_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let engine = engine_with_distinct_times(&data, 9);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let at = |seq: u64| engine.log().event(seq).unwrap().at;
    let request =
        ExportRequest { from: Some(Bound::Time(at(3))), to: Some(Bound::Time(at(7))), ..Default::default() };
    let plan = rt.block_on(ExportPlan::prepare(&engine, request)).unwrap();
    let mut export = Vec::new();
    plan.write(engine.log(), &mut export).unwrap();
    let export = String::from_utf8(export).unwrap();
    let key = engine.public_key().clone();
    let summary = verify_export(export.as_bytes(), &key, None).unwrap();
    assert_eq!((summary.first_seq, summary.last_seq), (Some(3), Some(6)));
    assert!(summary.to_string().contains("complete range (no event missing)"), "{summary}");

    // Windows at the start and the end of the log, and an empty one, are proved as well.
    let late = keyledger_core::Timestamp(at(9).0 + 1_000_000);
    for (from, to, lines) in [
        (None, Some(at(2)), 2),
        (Some(at(8)), None, 2),
        (Some(at(5)), Some(at(5)), 0),
        (Some(late), None, 0),
        (Some(at(0)), Some(late), 10),
    ] {
        let request =
            ExportRequest { from: from.map(Bound::Time), to: to.map(Bound::Time), ..Default::default() };
        let plan = rt.block_on(ExportPlan::prepare(&engine, request)).unwrap();
        let mut out = Vec::new();
        plan.write(engine.log(), &mut out).unwrap();
        let summary = verify_export(out.as_slice(), engine.public_key(), None).unwrap();
        assert_eq!(summary.lines, lines, "{from:?}..{to:?}");
        assert_eq!(summary.completeness, Completeness::Complete, "{from:?}..{to:?}");
    }

    let claims_complete = |text: &str| {
        verify_export(text.as_bytes(), &key, None).is_ok_and(|s| s.to_string().contains("complete range"))
    };
    for drop_first in [true, false] {
        // As an older producer would write it: no neighbours, so no claim about the edges.
        let without_edges = shortened(&data, &engine, &export, drop_first, |m| {
            m.remove("edges");
        });
        assert!(!claims_complete(&without_edges), "drop_first={drop_first}");
        let summary = verify_export(without_edges.as_bytes(), &key, None).unwrap();
        assert!(summary.to_string().contains("range edges not proved"), "{summary}");
        // The neighbours kept: they no longer touch the lines.
        let kept = shortened(&data, &engine, &export, drop_first, |_| {});
        let error = verify_export(kept.as_bytes(), &key, None).unwrap_err();
        assert!(error.to_string().contains("edges"), "{error}");
        // The dropped event passed off as the neighbour: it lies inside the window.
        let dropped_seq = if drop_first { 3 } else { 6 };
        let raw = engine.log().records_from(dropped_seq).next().unwrap().unwrap().1;
        let event = engine.log().event(dropped_seq).unwrap();
        let proof = engine.log().tree().inclusion_proof(dropped_seq, plan.anchor.size).unwrap();
        let neighbour = line_value(&event, &raw, Some(&proof), engine.log().tree_hash());
        let forged = shortened(&data, &engine, &export, drop_first, |m| {
            m["edges"][if drop_first { "before" } else { "after" }] = neighbour;
        });
        let error = verify_export(forged.as_bytes(), &key, None).unwrap_err();
        assert!(error.to_string().contains("window"), "{error}");
    }

    // Through the real binary.
    let run = |text: &str| {
        let file = dir.path().join("time.jsonl");
        std::fs::write(&file, text).unwrap();
        let output = Command::new(support::BIN)
            .args(["export", "verify"])
            .arg(&file)
            .args(["--public-key", &key.to_string()])
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, stdout) = run(&export);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("complete range (no event missing)"), "{stdout}");
    let (code, stdout) = run(&shortened(&data, &engine, &export, true, |m| {
        m.remove("edges");
    }));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("interior contiguous; range edges not proved"), "{stdout}");
    assert!(!stdout.contains("complete range"), "{stdout}");
    let (code, _) = run(&shortened(&data, &engine, &export, false, |_| {}));
    assert_eq!(code, Some(1));
    engine.shutdown_blocking();
}
