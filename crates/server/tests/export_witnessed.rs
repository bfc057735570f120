//! An export taken while witnesses are configured is anchored to a checkpoint they
//! cosigned: `GET /v1/export` right after appends waits (bounded) for the quorum's
//! cosignatures of its anchor and carries them in the manifest, so a verifier with that
//! witness quorum accepts it; a witness that never answers delays it by the bound only
//! (docs/export-format.md, "Witness cosignatures").

mod support;

use axum::extract::State;
use axum::http::StatusCode;
use keyledger_ledger::EngineOptions;
use keyledger_ledger::witness::{Witness, WitnessOptions, WitnessPolicy};
use keyledger_server::ServerConfig;
use keyledger_verify::cosignature::{Cosigner, Quorum, unverified_checkpoint};
use keyledger_verify::export::verify_export_witnessed;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A witness that cosigns whatever checkpoint it is sent (the consistency checks of a real
/// witness are tested in crates/witness), or, with `hang`, never answers.
async fn fake_witness(name: &str, seed: u8, hang: bool) -> (Witness, Cosigner) {
    let cosigner = Cosigner::new(name, ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap();
    async fn add_checkpoint(State((cosigner, hang)): State<(Arc<Cosigner>, bool)>, body: String) -> String {
        if hang {
            std::future::pending::<()>().await;
        }
        let note = body.split_once("\n\n").unwrap().1;
        let (text, _) = unverified_checkpoint(note).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        cosigner.cosign(&text, now).unwrap()
    }
    let state = (Arc::new(cosigner.clone()), hang);
    let app =
        axum::Router::new().route("/add-checkpoint", axum::routing::post(add_checkpoint)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let witness = Witness::parse_flag(&format!("{}={url}", cosigner.witness_key())).unwrap();
    (witness, cosigner)
}

/// Options with witnesses and production poll intervals: the export itself must get its
/// anchor submitted promptly, not a short test poll.
fn options(witnesses: Vec<Witness>, quorum: usize, wait: Duration) -> EngineOptions {
    EngineOptions {
        witnesses: WitnessOptions {
            policy: Some(WitnessPolicy::new(witnesses, Some(quorum)).unwrap()),
            poll_interval: Duration::from_secs(30),
            // Bounds how long dropping the engine waits for a hanging request.
            timeout: Duration::from_secs(2),
            ..WitnessOptions::default()
        },
        export_witness_wait: wait,
        ..EngineOptions::default()
    }
}

async fn append_keys(api: &support::Api, n: usize) {
    for i in 0..n {
        let created =
            api.admin("POST", "/v1/workspaces/ws/keys", Some(json!({"name": format!("k{i}")}))).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.dump());
    }
}

fn manifest(export: &str) -> Value {
    serde_json::from_str(export.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_export_carries_the_quorum_of_cosignatures_of_its_anchor() {
    let (a, a_cosigner) = fake_witness("a.witness.example", 1, false).await;
    let (b, b_cosigner) = fake_witness("b.witness.example", 2, false).await;
    let api = support::open(
        &support::init(),
        options(vec![a, b], 2, Duration::from_secs(10)),
        ServerConfig::default(),
    );
    append_keys(&api, 3).await;

    let export = api.admin("GET", "/v1/export", None).await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.dump());
    let note = manifest(&export.text)["manifest"]["checkpoint"]["note"].as_str().unwrap().to_owned();
    for name in ["a.witness.example", "b.witness.example"] {
        assert!(note.contains(&format!("\u{2014} {name} ")), "no cosignature line of {name}: {note}");
    }
    let quorum = Quorum::new(vec![a_cosigner.witness_key(), b_cosigner.witness_key()], 2).unwrap();
    let summary =
        verify_export_witnessed(export.text.as_bytes(), api.engine.public_key(), None, Some(&quorum))
            .unwrap();
    assert_eq!(summary.cosigned.len(), 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_never_answers_delays_an_export_by_the_bound_only() {
    let (silent, _) = fake_witness("silent.witness.example", 3, true).await;
    let wait = Duration::from_millis(800);
    let api = support::open(&support::init(), options(vec![silent], 1, wait), ServerConfig::default());
    append_keys(&api, 1).await;

    let started = Instant::now();
    let export = api.admin("GET", "/v1/export", None).await;
    let took = started.elapsed();
    assert_eq!(export.status, StatusCode::OK, "{}", export.dump());
    assert!(took >= wait, "the export did not wait for the witness: {took:?}");
    assert!(took < wait + Duration::from_secs(3), "the export outlived its bound: {took:?}");
    let note = manifest(&export.text)["manifest"]["checkpoint"]["note"].as_str().unwrap().to_owned();
    assert!(!note.contains("silent.witness.example"), "{note}");
}
