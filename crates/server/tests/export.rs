//! Exports end to end: produced by the engine (and over HTTP), verified offline, and
//! rejected after every kind of tampering, naming the line.

use axum::http::StatusCode;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use keyledger_core::{Environment, RequestId, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::export::{Bound, ExportFormat, ExportPlan, ExportRequest};
use keyledger_ledger::{Caller, Engine, EngineOptions, Expiry, KeySpec, VerifyRequirements};
use keyledger_server::ServerConfig;
use keyledger_verify::export::{ExportError, manifest_line, sign_manifest, verify_export};
use keyledger_verify::note::{Checkpoint, NoteSigner, VerifierKey, sign_checkpoint};
use serde_json::{Map, Value};
use std::sync::Arc;

mod support;

struct Fixture {
    engine: Arc<Engine>,
    admin: String,
    rt: tokio::runtime::Runtime,
    _dir: Arc<tempfile::TempDir>,
}

fn spec(name: &str, scopes: &[&str], resources: &[&str]) -> KeySpec {
    KeySpec {
        name: name.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        environment: Environment::Live,
        owner: None,
        metadata: "{}".into(),
        expiry: Expiry::Never,
        credits: None,
    }
}

/// A data dir with events in two workspaces: creations, uses and denials.
fn fixture(uses: usize) -> Fixture {
    let data = support::init();
    let engine = Arc::new(Engine::open(&data.path, EngineOptions::default()).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut secrets = Vec::new();
    for ws in ["acme", "globex"] {
        let ws: WorkspaceId = ws.parse().unwrap();
        let (_, secret) = engine.create_blocking(Caller::system(), ws, spec("svc", &["read"], &[])).unwrap();
        secrets.push(secret);
    }
    rt.block_on(async {
        for i in 0..uses {
            let secret = &secrets[i % 2];
            let scopes = if i % 5 == 4 { vec!["write".to_string()] } else { vec!["read".to_string()] };
            let context = UsageContext {
                ip: Some("203.0.113.7".parse().unwrap()),
                user_agent: Some(format!("agent, \"{i}\"")),
                path: Some("/v1/things".into()),
                ..Default::default()
            };
            engine
                .verify(
                    RequestId::generate(Timestamp::now().millis()),
                    secret.expose(),
                    VerifyRequirements { scopes, ..Default::default() },
                    context,
                )
                .await
                .unwrap();
        }
    });
    Fixture { engine, admin: data.admin, rt, _dir: data.dir }
}

impl Fixture {
    fn export(&self, request: ExportRequest) -> String {
        let plan = self.rt.block_on(ExportPlan::prepare(&self.engine, request)).unwrap();
        let mut out = Vec::new();
        plan.write(self.engine.log(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn key(&self) -> VerifierKey {
        self.engine.public_key().clone()
    }

    /// The log's own signer, as a malicious operator holding `signing.key` has it.
    fn signing_key(&self) -> NoteSigner {
        keyledger_ledger::datadir::load(self.engine.data_dir()).unwrap().signer
    }

    fn checkpoint(&self) -> String {
        self.rt.block_on(self.engine.checkpoint_now()).unwrap().note
    }

    fn verify(&self, export: &str) -> Result<keyledger_verify::export::ExportSummary, ExportError> {
        verify_export(export.as_bytes(), &self.key(), None)
    }
}

fn lines(export: &str) -> Vec<String> {
    export.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn manifest(export: &str) -> Map<String, Value> {
    let last: Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    last["manifest"].as_object().unwrap().clone()
}

/// Replaces the manifest with `edit(manifest)`, re-signed with `key`.
fn resign(export: &str, key: &NoteSigner, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut all = lines(export);
    let mut m = manifest(export);
    edit(&mut m);
    sign_manifest(&mut m, key);
    *all.last_mut().unwrap() = manifest_line(m);
    join(&all)
}

fn seq_request(from: u64, to: Option<u64>) -> ExportRequest {
    ExportRequest { from: Some(Bound::Seq(from)), to: to.map(Bound::Seq), ..Default::default() }
}

#[test]
fn unfiltered_export_verifies_and_describes_itself() {
    let f = fixture(20);
    let export = f.export(seq_request(3, Some(17)));
    let summary = f.verify(&export).unwrap();
    assert_eq!((summary.lines, summary.first_seq, summary.last_seq), (14, Some(3), Some(16)));
    assert!(!summary.filtered);
    let m = manifest(&export);
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "checkpoint",
            "consistency_from",
            "filtered",
            "filters",
            "lines",
            "lines_hash",
            "origin",
            "range",
            "range_proof",
            "signature",
            "tree_hash",
            "version"
        ]
    );
    assert_eq!(m["tree_hash"], "sha256", "a format-2 log's export names its SHA-256 tree");
    assert_eq!(summary.tree_hash, keyledger_verify::merkle::TreeHash::Rfc6962);
    assert_eq!(m["range_proof"]["left_peaks"].as_array().unwrap().len(), 2, "peaks of size 3");
    assert_eq!(m["filters"]["from"], 3);
    // Every range shape verifies, including the whole log and an empty range.
    for (from, to) in
        [(0, None), (1, Some(2)), (8, Some(16)), (7, None), (23, None), (30, None), (5, Some(5))]
    {
        let export = f.export(seq_request(from, to));
        f.verify(&export).unwrap_or_else(|e| panic!("{from}..{to:?}: {e}"));
    }
    // Time bounds resolve to seqs.
    let event = f.engine.log().event(10).unwrap();
    let export = f.export(ExportRequest { from: Some(Bound::Time(event.at)), ..Default::default() });
    let summary = f.verify(&export).unwrap();
    assert!(summary.first_seq.unwrap() <= 10);
    assert_eq!(f.engine.log().event(summary.first_seq.unwrap()).unwrap().at, event.at);
}

#[test]
fn every_tampering_is_rejected_naming_the_line() {
    let f = fixture(20);
    let export = f.export(seq_request(3, Some(17)));
    let good = lines(&export);
    let n = good.len(); // 14 events + manifest
    let line_of = |result: Result<_, ExportError>| result.unwrap_err().line();

    // An edited JSON field.
    let mut edited = good.clone();
    edited[1] = edited[1].replacen("\"kind\":\"used\"", "\"kind\":\"revoked\"", 1);
    edited[1] = edited[1].replacen("\"kind\":\"denied\"", "\"kind\":\"used\"", 1);
    assert_ne!(edited[1], good[1]);
    let error = f.verify(&join(&edited)).unwrap_err();
    assert_eq!(error.line(), Some(2), "{error}");
    assert!(error.to_string().contains("`kind`"), "{error}");

    // An edited raw (valid base64, different bytes).
    let mut edited = good.clone();
    let raw_at = edited[2].find("\"raw\":\"").unwrap() + 7 + 10;
    let c = edited[2].as_bytes()[raw_at];
    let swap = if c == b'A' { "B" } else { "A" };
    edited[2].replace_range(raw_at..raw_at + 1, swap);
    assert_eq!(line_of(f.verify(&join(&edited))), Some(3));

    // A raw and leaf hash taken from another line: the JSON no longer matches.
    let mut edited = good.clone();
    let field = |line: &str, name: &str| {
        let v: Value = serde_json::from_str(line).unwrap();
        v[name].as_str().unwrap().to_owned()
    };
    let (raw4, leaf4) = (field(&good[4], "raw"), field(&good[4], "leaf_hash"));
    edited[3] =
        edited[3].replace(&field(&good[3], "raw"), &raw4).replace(&field(&good[3], "leaf_hash"), &leaf4);
    assert_eq!(line_of(f.verify(&join(&edited))), Some(4));

    // Deleted lines: in the middle, the first, the last event.
    for (delete, expected) in [(5, Some(6)), (0, Some(1)), (n - 2, Some(n as u64 - 2))] {
        let mut edited = good.clone();
        edited.remove(delete);
        let error = f.verify(&join(&edited)).unwrap_err();
        assert_eq!(error.line(), expected, "deleting line {}: {error}", delete + 1);
    }

    // Swapped lines.
    let mut edited = good.clone();
    edited.swap(4, 5);
    assert_eq!(line_of(f.verify(&join(&edited))), Some(5));

    // A duplicated line.
    let mut edited = good.clone();
    edited.insert(6, good[6].clone());
    assert_eq!(line_of(f.verify(&join(&edited))), Some(8));

    // Appended lines after the manifest.
    let mut edited = good.clone();
    edited.push(good[0].clone());
    let error = f.verify(&join(&edited)).unwrap_err();
    assert_eq!(error.line(), Some(n as u64), "{error}");
    let mut edited = good.clone();
    edited.push(good[n - 1].clone());
    assert_eq!(line_of(f.verify(&join(&edited))), Some(n as u64));

    // Truncated: the manifest missing, or the last line cut.
    let error = f.verify(&join(&good[..n - 1])).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    let cut = &export[..export.len() - 30];
    let error = f.verify(cut).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    let error = f.verify(&export[..export.len() - 1]).unwrap_err();
    assert!(error.to_string().contains("truncated"), "{error}");
    assert!(f.verify("").is_err());

    // The manifest re-signed with another key.
    let other_key = SigningKey::from_bytes(&[42; 32]);
    let other = NoteSigner::new("other", other_key.clone()).unwrap();
    let error = f.verify(&resign(&export, &other, |_| {})).unwrap_err();
    assert!(error.to_string().contains("signature"), "{error}");
    assert_eq!(error.line(), Some(n as u64));
    // A changed manifest member (without re-signing).
    let tampered = export.replace("\"lines\":14", "\"lines\":13");
    assert!(f.verify(&tampered).unwrap_err().to_string().contains("signature"));

    // A checkpoint from another key (same origin name), even in a manifest signed by the log key.
    let origin = f.key().name().unwrap().to_owned();
    let m = manifest(&export);
    let size = m["checkpoint"]["size"].as_u64().unwrap();
    let root: [u8; 32] =
        hex::decode(m["checkpoint"]["root_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
    let foreign = NoteSigner::new(&origin, other_key).unwrap();
    let foreign_note = sign_checkpoint(&Checkpoint::new(origin.clone(), size, root), &foreign).unwrap();
    let error = f
        .verify(&resign(&export, &f.signing_key(), |m| {
            m["checkpoint"]["note"] = Value::String(foreign_note.clone())
        }))
        .unwrap_err();
    assert!(error.to_string().contains("checkpoint note"), "{error}");
    let error = f
        .verify(&resign(&export, &other, |m| m["checkpoint"]["note"] = Value::String(foreign_note.clone())))
        .unwrap_err();
    assert!(error.to_string().contains("signature"), "{error}");

    // Even the log key cannot make a gap or a shifted range verify.
    let key = f.signing_key();
    let error = f
        .verify(&resign(&export, &key, |m| {
            let peaks = m["range_proof"]["left_peaks"].as_array_mut().unwrap();
            peaks.swap(0, 1);
        }))
        .unwrap_err();
    assert!(error.to_string().contains("not leaves"), "{error}");
    let error = f.verify(&resign(&export, &key, |m| m["range"]["first_seq"] = 4.into())).unwrap_err();
    assert!(error.to_string().contains("range"), "{error}");
    let error = f.verify(&resign(&export, &key, |m| m["filters"]["from"] = 2.into())).unwrap_err();
    assert_eq!(error.line(), Some(1), "{error}");
}

#[test]
fn filtered_exports_verify_with_inclusion_proofs() {
    let f = fixture(20);
    let acme: WorkspaceId = "acme".parse().unwrap();
    let export = f.export(ExportRequest { workspace: Some(acme.clone()), ..Default::default() });
    let summary = f.verify(&export).unwrap();
    assert!(summary.filtered);
    assert_eq!(summary.workspace.as_deref(), Some("acme"));
    assert_eq!(summary.lines, 11, "one creation and ten uses");
    for line in export.lines().take(summary.lines as usize) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["workspace"], "acme");
        assert!(v["inclusion_proof"].as_array().is_some());
    }
    assert_eq!(manifest(&export)["range_proof"], Value::Null);

    // A bent inclusion proof names its line; a line from another workspace too.
    let mut edited = lines(&export);
    let proof_at = edited[3].find("\"inclusion_proof\":[\"").unwrap() + 20;
    let c = edited[3].as_bytes()[proof_at];
    edited[3].replace_range(proof_at..proof_at + 1, if c == b'0' { "1" } else { "0" });
    let error = f.verify(&join(&edited)).unwrap_err();
    assert_eq!(error.line(), Some(4), "{error}");
    let mut edited = lines(&export);
    edited.remove(2);
    let error = f.verify(&join(&edited)).unwrap_err();
    assert!(error.to_string().contains("lines"), "{error}");

    // With a time range and a workspace nobody uses.
    let first_use = f.engine.log().event(4).unwrap().at;
    let export = f.export(ExportRequest {
        workspace: Some(acme),
        from: Some(Bound::Time(first_use)),
        to: Some(Bound::Seq(15)),
        ..Default::default()
    });
    let summary = f.verify(&export).unwrap();
    assert!(summary.first_seq.unwrap() >= 3 && summary.last_seq.unwrap() < 15);
    let export = f.export(ExportRequest { workspace: Some("nobody".parse().unwrap()), ..Default::default() });
    assert_eq!(f.verify(&export).unwrap().lines, 0);
}

#[test]
fn trusted_checkpoints_are_extended_and_forks_are_caught() {
    let f = fixture(6);
    let old_note = f.checkpoint();
    let old = keyledger_verify::note::open_checkpoint(&old_note, &f.key()).unwrap();
    // More events after the trusted checkpoint.
    let ws: WorkspaceId = "acme".parse().unwrap();
    f.engine.create_blocking(Caller::system(), ws, spec("later", &["read"], &[])).unwrap();

    let without = f.export(ExportRequest::default());
    let error = verify_export(without.as_bytes(), &f.key(), Some(&old_note)).unwrap_err();
    assert!(error.to_string().contains(&format!("consistency_from={}", old.size)), "{error}");

    let export = f.export(ExportRequest { consistency_from: Some(old.size), ..Default::default() });
    let summary = verify_export(export.as_bytes(), &f.key(), Some(&old_note)).unwrap();
    assert_eq!(summary.trusted_size, Some(old.size));
    assert!(summary.checkpoint_size > old.size);

    // A fork: the same key signed a different tree of the trusted size.
    let signer = f.signing_key();
    let forked = sign_checkpoint(&Checkpoint::new(old.origin.clone(), old.size, [7; 32]), &signer).unwrap();
    let error = verify_export(export.as_bytes(), &f.key(), Some(&forked)).unwrap_err();
    assert!(matches!(error, ExportError::Trusted(_)), "{error}");
    assert!(error.to_string().contains("does not extend"), "{error}");
    // …and of the anchor's own size.
    let anchor_size = manifest(&export)["checkpoint"]["size"].as_u64().unwrap();
    let forked =
        sign_checkpoint(&Checkpoint::new(old.origin.clone(), anchor_size, [7; 32]), &signer).unwrap();
    let error = verify_export(export.as_bytes(), &f.key(), Some(&forked)).unwrap_err();
    assert!(error.to_string().contains("forked"), "{error}");
    // The same checkpoint as the anchor is fine; one by another key is refused.
    let anchor_note = manifest(&export)["checkpoint"]["note"].as_str().unwrap().to_owned();
    verify_export(export.as_bytes(), &f.key(), Some(&anchor_note)).unwrap();
    let stranger = NoteSigner::new(&old.origin, SigningKey::from_bytes(&[9; 32])).unwrap();
    let foreign =
        sign_checkpoint(&Checkpoint::new(old.origin.clone(), old.size, old.root), &stranger).unwrap();
    assert!(matches!(
        verify_export(export.as_bytes(), &f.key(), Some(&foreign)),
        Err(ExportError::Trusted(_))
    ));
    // A bare public key verifies as well.
    let bare = VerifierKey::bare(*f.key().public_key()).unwrap();
    verify_export(export.as_bytes(), &bare, Some(&old_note)).unwrap();
}

#[test]
fn csv_is_flat_and_quoted() {
    let f = fixture(4);
    let csv = f.export(ExportRequest { format: ExportFormat::Csv, ..Default::default() });
    let mut rows = csv.split("\r\n");
    assert_eq!(
        rows.next().unwrap(),
        "seq,at,kind,workspace,key_id,actor,request_id,ip,user_agent,method,path,reason"
    );
    let used: Vec<&str> = csv.split("\r\n").filter(|r| r.contains(",used,")).collect();
    assert_eq!(used.len(), 4);
    assert!(used[0].contains(",203.0.113.7,\"agent, \"\"0\"\"\",,/v1/things,"), "{}", used[0]);
    assert_eq!(csv.split("\r\n").filter(|r| !r.is_empty()).count(), 1 + f.engine.log().len() as usize);
}

async fn get(app: &axum::Router, uri: &str, key: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let answer = support::send(app, support::request("GET", uri, Some(key), &[], None)).await;
    assert!(!answer.text.contains('\u{FFFD}'), "the body is not UTF-8");
    (answer.status, answer.headers, answer.text)
}

#[test]
fn http_export_streams_and_enforces_scope_and_workspaces() {
    let f = fixture(300);
    let (_, limited) = f
        .engine
        .create_blocking(
            Caller::system(),
            WorkspaceId::ledger(),
            spec("auditor", &["ledger:export"], &["acme"]),
        )
        .unwrap();
    let (_, no_scope) = f
        .engine
        .create_blocking(Caller::system(), WorkspaceId::ledger(), spec("reader", &["ledger:keys:read"], &[]))
        .unwrap();
    let app = support::app(f.engine.clone(), ServerConfig::default());
    let key = f.key();
    f.rt.block_on(async {
        let (status, headers, body) = get(&app, "/v1/export", &f.admin).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/x-ndjson");
        let summary = verify_export(body.as_bytes(), &key, None).unwrap();
        assert!(summary.lines > 300 && body.len() > 128 * 1024, "spans several chunks");

        let (status, _, body) =
            get(&app, "/v1/export?from=5&to=2030-01-01T00:00:00Z&workspace=globex", &f.admin).await;
        assert_eq!(status, StatusCode::OK);
        assert!(verify_export(body.as_bytes(), &key, None).unwrap().filtered);

        let (status, headers, body) =
            get(&app, "/v1/export?format=csv&workspace=acme", limited.expose()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));
        assert!(body.starts_with("seq,at,kind"));

        let checkpoint = f.engine.checkpoint_now().await.unwrap();
        let uri = format!("/v1/export?consistency_from={}", checkpoint.size);
        let (status, _, body) = get(&app, &uri, &f.admin).await;
        assert_eq!(status, StatusCode::OK);
        verify_export(body.as_bytes(), &key, Some(&checkpoint.note)).unwrap();

        for (uri, secret, status, code) in [
            ("/v1/export", no_scope.expose(), StatusCode::FORBIDDEN, "forbidden"),
            ("/v1/export", limited.expose(), StatusCode::FORBIDDEN, "forbidden"),
            ("/v1/export?workspace=globex", limited.expose(), StatusCode::NOT_FOUND, "not_found"),
            ("/v1/export?from=yesterday", f.admin.as_str(), StatusCode::BAD_REQUEST, "invalid_request"),
            ("/v1/export?format=xml", f.admin.as_str(), StatusCode::BAD_REQUEST, "invalid_request"),
            ("/v1/export?workspace=Bad!", f.admin.as_str(), StatusCode::BAD_REQUEST, "invalid_request"),
            (
                "/v1/export?consistency_from=999999",
                f.admin.as_str(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            ("/v1/export?limit=3", f.admin.as_str(), StatusCode::BAD_REQUEST, "invalid_request"),
            ("/v1/export", "kl_live_nope", StatusCode::UNAUTHORIZED, "unauthorized"),
        ] {
            let (got, _, body) = get(&app, uri, secret).await;
            assert_eq!(got, status, "{uri}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"], code, "{uri}: {body}");
        }
    });
}

/// The worked example of docs/export-format.md: a tiny export with fixed keys and times,
/// checked byte for byte, so the document cannot drift from the code.
#[test]
fn documented_example_is_exact() {
    use keyledger_core::{Actor, Event, KeyId, KeyRef, Payload, Revoked};
    use keyledger_verify::export::{canonical_json, line_value, manifest_message};
    use keyledger_verify::merkle::{Frontier, TreeHash};
    let ws: WorkspaceId = "acme".parse().unwrap();
    let events: Vec<Event> = (0..4u64)
        .map(|seq| Event {
            seq,
            at: Timestamp(1_700_000_000_000_000 + seq as i64 * 1_000_000),
            actor: Actor::System,
            request_id: RequestId::from_bytes([seq as u8 + 1; 16]),
            payload: if seq != 2 {
                Payload::Expired(KeyRef {
                    key_id: KeyId::from_bytes([seq as u8 + 1; 16]),
                    workspace: ws.clone(),
                })
            } else {
                Payload::Revoked(Revoked {
                    key_id: KeyId::from_bytes([9; 16]),
                    workspace: ws.clone(),
                    reason: Some("leak".into()),
                })
            },
        })
        .collect();
    let raws: Vec<Vec<u8>> = events.iter().map(keyledger_core::encode_event).collect();
    let line = canonical_json(&line_value(&events[2], &raws[2], None, TreeHash::Rfc6962));
    let leaves: Vec<_> = raws.iter().map(|r| TreeHash::Rfc6962.leaf(r)).collect();
    let mut tree = Frontier::new(TreeHash::Rfc6962);
    leaves.iter().for_each(|l| tree.push(*l));
    let seed = SigningKey::from_bytes(&[1; 32]);
    let signer = NoteSigner::new("example.org/log", seed.clone()).unwrap();
    let note = sign_checkpoint(&Checkpoint::new("example.org/log", 4, tree.root()), &signer).unwrap();
    let nodes = keyledger_log::proof::MemoryNodes::from_leaves(TreeHash::Rfc6962, &leaves);
    let consistency = keyledger_log::proof::consistency_proof(&nodes, 3, 4).unwrap();
    // The export of seq 2 (from=2, to=3) of this 4-event log.
    let mut hasher = blake3::Hasher::new();
    hasher.update(format!("{line}\n").as_bytes());
    let mut manifest: Map<String, Value> = serde_json::from_value(serde_json::json!({
        "version": 1,
        "origin": "example.org/log",
        "tree_hash": "sha256",
        "range": {"first_seq": 2, "last_seq": 2, "from": events[2].at.to_rfc3339(), "to": events[2].at.to_rfc3339()},
        "filters": {"workspace": null, "from": 2, "to": 3},
        "filtered": false,
        "lines": 1,
        "lines_hash": hex::encode(hasher.finalize().as_bytes()),
        "checkpoint": {"note": note, "size": 4, "root_hash": hex::encode(tree.root())},
        "range_proof": {"left_peaks": [hex::encode(TreeHash::Rfc6962.node(&leaves[0], &leaves[1]))], "consistency": consistency.iter().map(hex::encode).collect::<Vec<_>>()},
        "consistency_from": null,
    }))
    .unwrap();
    let message = manifest_message(&manifest);
    sign_manifest(&mut manifest, &signer);
    let export = format!("{line}\n{}\n", manifest_line(manifest.clone()));
    let key = signer.verifier();
    let summary = verify_export(export.as_bytes(), &key, None).unwrap();
    assert_eq!(summary.lines, 1);

    // Print everything the document shows (run with --nocapture to refresh it).
    println!("public key: {key}");
    println!("raw[2] hex: {}", hex::encode(&raws[2]));
    for (i, l) in leaves.iter().enumerate() {
        println!("leaf[{i}]: {}", hex::encode(l));
    }
    println!("root: {}", hex::encode(tree.root()));
    println!("line: {line}");
    println!("message: {}", String::from_utf8_lossy(&message));
    println!("export:\n{export}");

    // The document's values, pinned.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/export-format.md"))
        .unwrap_or_default();
    if !doc.is_empty() {
        for needle in [
            key.to_string(),
            hex::encode(&raws[2]),
            hex::encode(leaves[2]),
            hex::encode(tree.root()),
            hex::encode(consistency[0]),
            line.clone(),
            base64::engine::general_purpose::STANDARD.encode(
                base64::engine::general_purpose::STANDARD
                    .decode(manifest["signature"].as_str().unwrap())
                    .unwrap(),
            ),
        ] {
            assert!(doc.contains(&needle), "docs/export-format.md lacks {needle}");
        }
    }
}

/// Throughput of export and verify (run: `cargo test --release -p keyledger-server --test
/// export throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let n: usize = std::env::var("EXPORT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let started = std::time::Instant::now();
    let f = fixture(0);
    let secret = {
        let ws: WorkspaceId = "acme".parse().unwrap();
        f.engine.create_blocking(Caller::system(), ws, spec("bulk", &["read"], &[])).unwrap().1
    };
    f.rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let engine = f.engine.clone();
            let secret = secret.expose().to_owned();
            tasks.spawn(async move {
                for _ in 0..n / 8 {
                    let context =
                        UsageContext { ip: Some("198.51.100.1".parse().unwrap()), ..Default::default() };
                    engine
                        .verify(
                            RequestId::generate(Timestamp::now().millis()),
                            &secret,
                            Default::default(),
                            context,
                        )
                        .await
                        .unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    eprintln!("filled {} events in {:.1}s", f.engine.log().len(), started.elapsed().as_secs_f64());
    for request in [
        ExportRequest::default(),
        ExportRequest { workspace: Some("acme".parse().unwrap()), ..Default::default() },
    ] {
        let filtered = request.workspace.is_some();
        let t = std::time::Instant::now();
        let export = f.export(request);
        let produce = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let summary = f.verify(&export).unwrap();
        let verify = t.elapsed().as_secs_f64();
        eprintln!(
            "filtered={filtered}: {} lines, {:.1} MB; export {:.2}s ({:.0} lines/s), verify {:.2}s ({:.0} lines/s)",
            summary.lines,
            export.len() as f64 / 1e6,
            produce,
            summary.lines as f64 / produce,
            verify,
            summary.lines as f64 / verify
        );
    }
}
