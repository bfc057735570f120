//! Witness cosigning end to end in-process: the engine's submitters POST every new
//! checkpoint to fake tlog-witness servers on loopback (axum, cosigning with the verify
//! crate's `Cosigner`), and the API serves what they cosigned, their status and fork alarms.

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use keyledger_ledger::witness::{Witness, WitnessOptions, WitnessPolicy};
use keyledger_ledger::{EngineOptions, WebhookOptions};
use keyledger_log::WriterOptions;
use keyledger_server::ServerConfig;
use keyledger_verify::cosignature::{Cosigner, Quorum, unverified_checkpoint};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Api;

mod support;

// ----- a fake witness ------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// tlog-witness semantics: 409 with its size unless `old` matches, else cosign.
    Honest,
    /// Answers this status (no body) this many times, then is honest.
    Fail(u16, u32),
    /// Always 409 with this size.
    Claims(u64),
    /// Cosigns the checkpoint with another root, under its own key.
    ForeignRoot,
    /// Cosigns under its own name with another key.
    WrongKey,
    /// Answers after a long time.
    Hang,
}

struct WitnessState {
    cosigner: Cosigner,
    mode: Mode,
    size: u64,
    /// The `old` line of every request.
    olds: Vec<u64>,
    proof_lines: Vec<usize>,
}

#[derive(Clone)]
struct FakeWitness {
    state: Arc<Mutex<WitnessState>>,
    url: String,
}

async fn add_checkpoint(
    State(state): State<Arc<Mutex<WitnessState>>>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (old_line, rest) = body.split_once('\n').unwrap();
    let old: u64 = old_line.strip_prefix("old ").unwrap().parse().unwrap();
    let mut note = rest;
    let mut proof_lines = 0;
    loop {
        let (line, tail) = note.split_once('\n').unwrap();
        note = tail;
        if line.is_empty() {
            break;
        }
        proof_lines += 1;
    }
    let mode = {
        let mut s = state.lock().unwrap();
        s.olds.push(old);
        s.proof_lines.push(proof_lines);
        s.mode
    };
    let (text, checkpoint) = unverified_checkpoint(note).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let conflict = |size: u64| {
        (StatusCode::CONFLICT, [("content-type", "text/x.tlog.size")], format!("{size}\n")).into_response()
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Mode::Fail(status, times) => {
            let mut s = state.lock().unwrap();
            s.mode = if times > 1 { Mode::Fail(status, times - 1) } else { Mode::Honest };
            StatusCode::from_u16(status).unwrap().into_response()
        }
        Mode::Claims(size) => conflict(size),
        Mode::Honest => {
            let mut s = state.lock().unwrap();
            if old != s.size {
                return conflict(s.size);
            }
            s.size = checkpoint.size;
            s.cosigner.cosign(&text, now).unwrap().into_response()
        }
        Mode::ForeignRoot => {
            let s = state.lock().unwrap();
            let root = base64::engine::general_purpose::STANDARD.encode(checkpoint.root);
            let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
            s.cosigner.cosign(&text.replace(&root, &other), now).unwrap().into_response()
        }
        Mode::WrongKey => {
            let s = state.lock().unwrap();
            let impostor =
                Cosigner::new(s.cosigner.name(), ed25519_dalek::SigningKey::from_bytes(&[99; 32])).unwrap();
            impostor.cosign(&text, now).unwrap().into_response()
        }
    }
}

impl FakeWitness {
    async fn start(name: &str, seed: u8, mode: Mode, size: u64) -> Self {
        let cosigner = Cosigner::new(name, ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap();
        let state = Arc::new(Mutex::new(WitnessState {
            cosigner,
            mode,
            size,
            olds: Vec::new(),
            proof_lines: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/w/add-checkpoint", axum::routing::post(add_checkpoint))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/w", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { state, url }
    }

    fn witness(&self) -> Witness {
        let key = self.state.lock().unwrap().cosigner.witness_key();
        Witness::parse_flag(&format!("{key}={}", self.url)).unwrap()
    }

    fn olds(&self) -> Vec<u64> {
        self.state.lock().unwrap().olds.clone()
    }
}

// ----- keyledger in-process ------------------------------------------------------------

fn options(witnesses: Vec<Witness>, quorum: Option<usize>) -> EngineOptions {
    EngineOptions {
        writer: WriterOptions {
            checkpoint_every: Duration::from_millis(50),
            checkpoint_every_events: 1,
            ..WriterOptions::default()
        },
        webhooks: WebhookOptions {
            allow_private: true,
            poll_interval: Duration::from_millis(20),
            ..WebhookOptions::default()
        },
        witnesses: WitnessOptions {
            policy: Some(WitnessPolicy::new(witnesses, quorum).unwrap()),
            poll_interval: Duration::from_millis(20),
            first_retry: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            timeout: Duration::from_secs(2),
        },
        ..EngineOptions::default()
    }
}

/// A fresh data dir served with the engine `options` for `witnesses`.
fn api(witnesses: Vec<Witness>, quorum: Option<usize>) -> Api {
    support::open(&support::init(), options(witnesses, quorum), ServerConfig::default())
}

impl Api {
    /// `method uri` as the init admin: the status, the body as JSON and as text.
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value, String) {
        let answer = self.admin(method, uri, body).await;
        (answer.status, answer.body, answer.text)
    }

    async fn create(&self, workspace: &str) {
        let body = json!({"name": "k"});
        let (status, key, _) =
            self.call("POST", &format!("/v1/workspaces/{workspace}/keys"), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
    }

    async fn checkpoint(&self) -> Value {
        let (status, view, _) = self.call("GET", "/v1/log/checkpoint", None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view
    }

    /// Polls the checkpoint view until `done` holds, or fails after 10 s.
    async fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.checkpoint().await;
            if done(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {view:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        self.call("GET", "/metrics", None).await.2
    }
}

fn latest_size(api: &Api) -> u64 {
    api.engine.log().latest_checkpoint().unwrap().size
}

// ----- the cases -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_cosignatures_is_verified_stored_served_and_reloaded() {
    let a = FakeWitness::start("a.witness.example", 1, Mode::Honest, 0).await;
    let b = FakeWitness::start("b.witness.example", 2, Mode::Honest, 0).await;
    let data = support::init();
    let api = support::open(&data, options(vec![a.witness(), b.witness()], None), ServerConfig::default());
    api.create("acme").await;
    let size = latest_size(&api);
    let view = api
        .wait_for("two cosignatures of the latest checkpoint", |v| {
            v["cosignatures"] == 2
                && v["size"].as_u64() >= Some(size)
                && v["size"].as_u64() == Some(latest_size(&api))
        })
        .await;
    assert_eq!(view["witnesses"], json!(["a.witness.example", "b.witness.example"]));
    assert_eq!(view["quorum"], 2);
    assert_eq!(view["quorum_met"], true);
    assert_eq!(view["fork_alarm"], Value::Null);
    let note = view["note"].as_str().unwrap();
    // The note is the log's signed checkpoint plus cosignatures a verifier accepts.
    keyledger_verify::note::open_checkpoint(note, api.engine.public_key()).unwrap();
    let quorum = Quorum::new(vec![a.witness().key, b.witness().key], 2).unwrap();
    assert_eq!(quorum.check(note).unwrap().len(), 2);
    let statuses = view["witness_status"].as_array().unwrap();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|s| s["last_error"].is_null() && s["last_success"].is_string()), "{view:#}");
    assert!(
        api.metrics().await.contains("keyledger_witness_cosignatures_total{witness=\"a.witness.example\"}")
    );

    // After a restart with the witnesses gone, the stored cosignatures of the latest
    // checkpoint are served again.
    let served = api.engine.latest_checkpoint_note().unwrap();
    let stored_size = view["size"].as_u64().unwrap();
    api.engine.shutdown().await;
    drop(api);
    let gone = FakeWitness::start("a.witness.example", 1, Mode::Fail(503, 1000), 0).await;
    let mut gone_b = b.witness();
    gone_b.url = gone.url.clone();
    let api = support::open(&data, options(vec![gone.witness(), gone_b], None), ServerConfig::default());
    let view = api.checkpoint().await;
    if view["size"].as_u64() == Some(stored_size) {
        assert_eq!(view["cosignatures"], 2, "{view:#}");
        assert_eq!(api.engine.latest_checkpoint_note().unwrap(), served);
    } else {
        // The shutdown signed a newer checkpoint: the older cosignatures are not served.
        assert_eq!(view["cosignatures"], 0, "{view:#}");
    }
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_with_a_smaller_size_is_answered_by_resending_from_that_size() {
    let witness = FakeWitness::start("w.example", 3, Mode::Honest, 1).await;
    let api = api(vec![witness.witness()], None);
    api.create("acme").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while latest_size(&api) <= 1 {
        assert!(Instant::now() < deadline, "no checkpoint after the create");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let size = latest_size(&api);
    api.wait_for("a cosignature of a later checkpoint", |v| {
        v["cosignatures"] == 1 && v["size"].as_u64() >= Some(size)
    })
    .await;
    // The first request (old 0) met the witness's size 1; the next started from there, and
    // a later checkpoint came with a consistency proof from size 1.
    let olds = witness.olds();
    assert_eq!(&olds[..2], &[0, 1], "{olds:?}");
    let proofs = witness.state.lock().unwrap().proof_lines.clone();
    assert_eq!(proofs[0], 0);
    assert!(olds.iter().zip(&proofs).any(|(old, lines)| *old == 1 && *lines > 0), "{olds:?} {proofs:?}");
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_ahead_of_the_log_raises_a_fork_alarm_metric_and_webhook() {
    let witness = FakeWitness::start("ahead.example", 4, Mode::Honest, 0).await;
    let api = api(vec![witness.witness()], None);
    let (status, answer, _) =
        api.call("PUT", "/v1/workspaces/acme/webhook", Some(json!({"url": "http://127.0.0.1:9/hook"}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Only once the webhook exists does the witness claim a larger tree (an alarm is
    // announced to the webhooks configured when it is raised).
    witness.state.lock().unwrap().mode = Mode::Claims(1_000_000);
    api.create("acme").await;
    let view = api.wait_for("a fork alarm", |v| !v["fork_alarm"].is_null()).await;
    let alarm = &view["fork_alarm"];
    assert_eq!(alarm["witness"], "ahead.example");
    assert_eq!(alarm["kind"], "witness_ahead");
    assert_eq!(alarm["witness_size"], 1_000_000);
    assert_eq!(view["cosignatures"], 0);
    assert_eq!(view["witness_status"][0]["last_error"], "fork_alarm");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains("keyledger_witness_fork_alarms_total{witness=\"ahead.example\"} 1"),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, list, text) = api.call("GET", "/v1/workspaces/acme/webhook/deliveries", None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        if text.contains("log.fork_alarm") {
            break;
        }
        assert!(Instant::now() < deadline, "no log.fork_alarm delivery: {list:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Repeated 409s of the same claim alarm once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.engine.witness_counters()[0].fork_alarms, 1);
    api.engine.shutdown().await;
}

/// Stored fork alarms that cannot be read stop the start with a message naming the file: a
/// damaged file must not make an alarm vanish from the checkpoint's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_fork_alarms_file_stops_the_start_instead_of_hiding_the_alarm() {
    let witness = FakeWitness::start("ahead.example", 4, Mode::Claims(1_000_000), 0).await;
    let data = support::init();
    let api = support::open(&data, options(vec![witness.witness()], None), ServerConfig::default());
    api.create("acme").await;
    api.wait_for("a fork alarm", |v| !v["fork_alarm"].is_null()).await;
    api.engine.shutdown().await;
    drop(api);
    let file = data.path.join("log").join(keyledger_log::witnessed::ALARMS_FILE);
    let stored = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &stored[..stored.len() / 2]).unwrap();

    let (path, engine_options) = (data.path.clone(), options(vec![witness.witness()], None));
    let opened = std::thread::spawn(move || keyledger_ledger::Engine::open(&path, engine_options).map(drop))
        .join()
        .unwrap();
    let error =
        opened.expect_err("a start that cannot read the alarms does not serve without them").to_string();
    assert!(error.contains("witness-alarms.json") && error.contains("forked log"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stored[..stored.len() / 2], "left as it was");

    // Repaired, the alarm is shown again.
    std::fs::write(&file, &stored).unwrap();
    let api = support::open(&data, options(vec![witness.witness()], None), ServerConfig::default());
    assert_eq!(api.checkpoint().await["fork_alarm"]["kind"], "witness_ahead");
    api.engine.shutdown().await;
}

/// A fork alarm on the embedded store is kept in the data dir: shown after a restart
/// although the witness, now failing, raises nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_alarm_is_still_shown_after_a_restart() {
    let witness = FakeWitness::start("ahead.example", 4, Mode::Claims(1_000_000), 0).await;
    let data = support::init();
    let api = support::open(&data, options(vec![witness.witness()], None), ServerConfig::default());
    api.create("acme").await;
    let raised = api.wait_for("a fork alarm", |v| !v["fork_alarm"].is_null()).await["fork_alarm"].clone();
    api.engine.shutdown().await;
    drop(api);
    witness.state.lock().unwrap().mode = Mode::Fail(503, u32::MAX);
    let api = support::open(&data, options(vec![witness.witness()], None), ServerConfig::default());
    let view = api.checkpoint().await;
    assert_eq!(view["fork_alarm"], raised, "{view:#}");
    assert_eq!(view["fork_alarm"]["kind"], "witness_ahead");
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosignature_over_a_foreign_root_is_a_fork_alarm_and_not_counted() {
    let witness = FakeWitness::start("forked.example", 5, Mode::ForeignRoot, 0).await;
    let api = api(vec![witness.witness()], None);
    api.create("acme").await;
    let view = api.wait_for("a fork alarm", |v| !v["fork_alarm"].is_null()).await;
    assert_eq!(view["fork_alarm"]["kind"], "foreign_cosignature");
    assert_eq!(view["fork_alarm"]["witness_size"], Value::Null);
    assert_eq!(view["cosignatures"], 0);
    assert_eq!(api.engine.witness_counters()[0].cosignatures, 0);
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cosignature_under_another_key_is_not_counted_and_raises_no_alarm() {
    let witness = FakeWitness::start("impostor.example", 6, Mode::WrongKey, 0).await;
    let api = api(vec![witness.witness()], None);
    api.create("acme").await;
    let view =
        api.wait_for("a failed submission", |v| v["witness_status"][0]["last_error"] == "bad_response").await;
    assert_eq!(view["cosignatures"], 0);
    assert_eq!(view["fork_alarm"], Value::Null);
    assert_eq!(view["quorum_met"], false);
    assert!(!view["note"].as_str().unwrap().contains("impostor.example"));
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_and_counted_by_class() {
    let witness = FakeWitness::start("flaky.example", 7, Mode::Fail(422, 2), 0).await;
    let api = api(vec![witness.witness()], None);
    api.create("acme").await;
    api.wait_for("a cosignature after two 422s", |v| v["cosignatures"] == 1).await;
    let counters = &api.engine.witness_counters()[0];
    assert_eq!(counters.failures.iter().find(|(c, _)| *c == "unprocessable").unwrap().1, 2);
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            "keyledger_witness_submission_failures_total{witness=\"flaky.example\",class=\"unprocessable\"} 2"
        ),
        "{metrics}"
    );
    api.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_continue_while_a_witness_hangs() {
    let hanging = FakeWitness::start("slow.example", 8, Mode::Hang, 0).await;
    let api = api(vec![hanging.witness()], None);
    api.create("acme").await;
    // Let the submitter be stuck in its request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while hanging.olds().is_empty() {
        assert!(Instant::now() < deadline, "the witness was never asked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = latest_size(&api);
    let started = Instant::now();
    for _ in 0..5 {
        api.create("acme").await;
    }
    assert!(started.elapsed() < Duration::from_secs(1), "appends waited: {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while latest_size(&api) <= before {
        assert!(Instant::now() < deadline, "no newer checkpoint while the witness hangs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.engine.shutdown().await;
}
