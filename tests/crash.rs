//! Crash tests through the real binary (docs/security.md, "Crashes (SIGKILL under load)";
//! docs/operations.md, "Durability").
//!
//! Each round starts `keyledger serve` on one data dir shared by all rounds (strict usage
//! durability in every other round), drives a mixed load from several threads (verifiers,
//! a creator, a revoker, a rotator with overlap 0), SIGKILLs the server (`kill -KILL`) at a
//! random moment, and records every acknowledged create (key id), rotation (new and old
//! ids), revocation (key id and the instant its response arrived) and every verification
//! (the instant it started, its outcome and keyledger's request id). Then:
//!
//! 1. `keyledger log verify` passes on the crashed data dir as it is (a crash never leaves a
//!    log that fails verification; a torn tail is only reported);
//! 2. the server restarts, and through the API, for every round so far: every acknowledged
//!    create and rotation is present (rotation links on both keys) and every acknowledged
//!    revocation (and overlap-0 rotation) is still `revoked` — all keys from one listing;
//!    the keys this round touched (and a sample of up to 50 older revoked ones) also by
//!    `GET /v1/keys/{id}`, and their revoked secrets verify 401 `invalid_api_key`. (The
//!    per-key calls are limited so a round stays a few seconds however many rounds ran.)
//! 3. no verification that *started* after its key's revocation response *arrived* succeeded
//!    (revocation is linearizable across the crash);
//! 4. usage: every acknowledged verification of a known key (200, and the 401/403 denials) is
//!    present as a usage event (`GET /v1/keys/{id}/events?kind=usage`, matched by keyledger's
//!    request id). In `strict` rounds none may be missing. In `batched` rounds
//!    docs/operations.md ("Durability") allows losing the sync window: usage events are
//!    written before verify answers and fsynced within 10 ms, so only a power cut can lose
//!    them, and at most those answered in the last 10 ms. A SIGKILL is not a power cut (the
//!    page cache survives), so the expected loss is 0; the test tolerates only verifications
//!    answered within [`BATCHED_WINDOW`] (10 ms + [`FSYNC_ALLOWANCE`] for the fsync itself and scheduling)
//!    before the kill, and reports how many were lost;
//! 5. the server stops cleanly (SIGTERM) and `keyledger log verify` passes again.
//!
//! `KEYLEDGER_CRASH_ROUNDS` raises the number of rounds (default [`DEFAULT_ROUNDS`]);
//! `KEYLEDGER_CRASH_SEED` replays a seed (the seed is printed; thread interleaving still
//! varies). Run with `--nocapture` to see the per-round figures; the last line
//! (`crash-figures: {…}`) has the totals as JSON. `cargo xtask crash --rounds N` runs this
//! test in release mode with many rounds and collects that line.

use keyledger_e2e::{Ledger, Server, log_verify, text};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_ROUNDS: u64 = 8;
/// The prefix of the last line on stderr: the run's figures as one JSON object.
const FIGURES_PREFIX: &str = "crash-figures: ";
const WORKSPACE: &str = "crash";
/// The batched sync window (docs/operations.md, "Durability").
const SYNC_WINDOW: Duration = Duration::from_millis(10);
/// Time allowed on top of the window for the fsync itself and thread scheduling.
const FSYNC_ALLOWANCE: Duration = Duration::from_millis(100);
const BATCHED_WINDOW: Duration = Duration::from_millis(10 + 100);
const VERIFIERS: usize = 3;

// ----- a small HTTP client that reports transport errors instead of panicking ----------

#[derive(Clone)]
struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(base: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .build();
        Http { agent: ureq::Agent::new_with_config(config), base: base.trim_end_matches('/').to_owned() }
    }

    /// `None` on a transport error (e.g. the server was killed mid-request).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = key.map(|k| format!("Bearer {k}"));
        let response = match method {
            "GET" => {
                let mut request = self.agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.call()
            }
            "POST" => {
                let mut request = self.agent.post(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                match body {
                    Some(body) => request.send_json(body),
                    None => request.send_empty(),
                }
            }
            other => panic!("unsupported method {other}"),
        };
        let mut response = response.ok()?;
        let status = response.status().as_u16();
        // The one listing of every key of every round passes ureq's 10 MB default after
        // about 80 rounds of `cargo xtask crash`.
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string().ok()?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Some((status, body))
    }

    /// A call that must succeed at the transport level (the checks after a restart).
    fn must(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(method, path, Some(key), body).unwrap_or_else(|| panic!("{method} {path}: transport error"))
    }
}

// ----- randomness (no rand crate in this package) -----------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ----- what the clients saw -----------------------------------------------------------------

#[derive(Clone, Debug)]
struct KeyInfo {
    secret: String,
    /// When the response of the call that revoked it (revoke, or rotation with overlap 0)
    /// arrived.
    revoked_ack: Option<Instant>,
    rotated_to: Option<String>,
    rotated_from: Option<String>,
    round: u64,
    /// The last round that created, rotated or revoked it.
    touched: u64,
}

#[derive(Debug)]
struct Verification {
    key_id: String,
    started: Instant,
    answered: Option<Instant>,
    /// `None`: no answer (the server died under it): not acknowledged.
    status: Option<u16>,
    body: Value,
}

#[derive(Default)]
struct Model {
    keys: HashMap<String, KeyInfo>,
    /// Active (as far as the clients know) key ids, for picking targets.
    active: Vec<String>,
    revoked: Vec<String>,
    rotations: Vec<(String, String)>,
    verifications: Vec<Verification>,
    // This round's counters.
    creates: u64,
    revocations: u64,
    rotated: u64,
    refused_other: Vec<String>,
}

impl Model {
    fn mark_revoked(&mut self, key_id: &str, at: Instant, round: u64) {
        if let Some(info) = self.keys.get_mut(key_id) {
            info.touched = round;
            if info.revoked_ack.is_none() {
                info.revoked_ack = Some(at);
            }
        }
        if let Some(position) = self.active.iter().position(|k| k == key_id) {
            self.active.swap_remove(position);
            self.revoked.push(key_id.to_owned());
        }
    }

    fn pick(&self, rng: &mut Rng, revoked_share: u64) -> Option<(String, String)> {
        let from_revoked =
            !self.revoked.is_empty() && (self.active.is_empty() || rng.below(100) < revoked_share);
        let pool = if from_revoked { &self.revoked } else { &self.active };
        if pool.is_empty() {
            return None;
        }
        let id = pool[rng.below(pool.len() as u64) as usize].clone();
        let secret = self.keys[&id].secret.clone();
        Some((id, secret))
    }
}

fn lock(model: &Mutex<Model>) -> std::sync::MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- load -------------------------------------------------------------------------------

fn verifier(http: Http, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>, seed: u64) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let Some((key_id, secret)) = lock(&model).pick(&mut rng, 15) else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let started = Instant::now();
        let answer = http.call("POST", "/v1/verify", None, Some(&json!({"key": secret})));
        let answered = answer.as_ref().map(|_| Instant::now());
        let (status, body) = match answer {
            Some((status, body)) => (Some(status), body),
            None => (None, Value::Null),
        };
        lock(&model).verifications.push(Verification { key_id, started, answered, status, body });
    }
}

fn creator(http: Http, admin: String, model: Arc<Mutex<Model>>, stop: Arc<AtomicBool>, round: u64) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // Throttled so the keys checked after each restart (all rounds so far) stay few
        // enough for a round to last seconds.
        std::thread::sleep(Duration::from_millis(2 + n % 4));
        n += 1;
        let body = json!({"name": format!("r{round}-k{n}"), "scopes": ["read"]});
        let Some((status, body)) =
            http.call("POST", &format!("/v1/workspaces/{WORKSPACE}/keys"), Some(&admin), Some(&body))
        else {
            continue;
        };
        let mut model = lock(&model);
        if status == 201 {
            let key_id = text(&body, "key_id");
            let info = KeyInfo {
                secret: text(&body, "secret"),
                revoked_ack: None,
                rotated_to: None,
                rotated_from: None,
                round,
                touched: round,
            };
            model.keys.insert(key_id.clone(), info);
            model.active.push(key_id);
            model.creates += 1;
        } else {
            model.refused_other.push(format!("create: {status} {body}"));
        }
    }
}

fn revoker(
    http: Http,
    admin: String,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    round: u64,
) {
    every_few_ms_on_an_active_key(&model, &stop, seed, |key_id| {
        let answer = http.call(
            "POST",
            &format!("/v1/keys/{key_id}/revoke"),
            Some(&admin),
            Some(&json!({"reason": "crash test"})),
        );
        let arrived = Instant::now();
        let Some((status, body)) = answer else { return };
        let mut model = lock(&model);
        if status == 200 && body["status"] == "revoked" {
            model.mark_revoked(&key_id, arrived, round);
            model.revocations += 1;
        } else {
            model.refused_other.push(format!("revoke {key_id}: {status} {body}"));
        }
    });
}

fn rotator(
    http: Http,
    admin: String,
    model: Arc<Mutex<Model>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    round: u64,
) {
    every_few_ms_on_an_active_key(&model, &stop, seed, |old_id| {
        let answer = http.call(
            "POST",
            &format!("/v1/keys/{old_id}/rotate"),
            Some(&admin),
            Some(&json!({"overlap": "0s"})),
        );
        let arrived = Instant::now();
        let Some((status, body)) = answer else { return };
        let mut model = lock(&model);
        match status {
            201 => {
                let new_id = text(&body["key"], "key_id");
                assert_eq!(body["previous"]["key_id"], old_id.as_str(), "{body}");
                assert_eq!(body["previous"]["status"], "revoked", "overlap 0 revokes the old key: {body}");
                let info = KeyInfo {
                    secret: text(&body["key"], "secret"),
                    revoked_ack: None,
                    rotated_to: None,
                    rotated_from: Some(old_id.clone()),
                    round,
                    touched: round,
                };
                model.keys.insert(new_id.clone(), info);
                model.active.push(new_id.clone());
                if let Some(old) = model.keys.get_mut(&old_id) {
                    old.rotated_to = Some(new_id.clone());
                }
                model.mark_revoked(&old_id, arrived, round);
                model.rotations.push((old_id, new_id));
                model.rotated += 1;
            }
            // The revoker got there first: a rotation of a revoked key is refused.
            409 => {}
            _ => model.refused_other.push(format!("rotate {old_id}: {status} {body}")),
        }
    });
}

/// Until `stop`: every 3–12 ms, `act` on an active key picked at random (while at least four
/// are active, so creates keep up with the revoker and the rotator).
fn every_few_ms_on_an_active_key(
    model: &Mutex<Model>,
    stop: &AtomicBool,
    seed: u64,
    mut act: impl FnMut(String),
) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(3 + rng.below(10)));
        let target = {
            let model = lock(model);
            if model.active.len() < 4 { None } else { model.pick(&mut rng, 0).map(|(id, _)| id) }
        };
        if let Some(key_id) = target {
            act(key_id);
        }
    }
}

// ----- checks -----------------------------------------------------------------------------

/// A key's view after the restart agrees with everything acknowledged about it.
fn check_view(round: u64, key_id: &str, info: &KeyInfo, view: &Value) {
    assert_eq!(view["key_id"], key_id);
    if let Some(from) = &info.rotated_from {
        assert_eq!(
            view["rotated_from"],
            from.as_str(),
            "round {round}: rotation link lost on {key_id}: {view}"
        );
    }
    if let Some(to) = &info.rotated_to {
        assert_eq!(view["rotated_to"], to.as_str(), "round {round}: rotation link lost on {key_id}: {view}");
    }
    if info.revoked_ack.is_some() {
        assert_eq!(
            view["status"], "revoked",
            "round {round}: acknowledged revocation of {key_id} was lost: {view}"
        );
    }
    // A key with no acknowledged revocation may still be revoked: a revoke or rotation in
    // flight at the kill may have landed (unacknowledged, so allowed).
}

fn kill_9(server: Server) -> Instant {
    let pid = server.pid().to_string();
    let status = Command::new("kill").args(["-KILL", &pid]).status().expect("cannot run kill");
    let killed = Instant::now();
    assert!(status.success(), "kill -KILL {pid} failed");
    drop(server); // reaps the process
    killed
}

/// Every usage event (used/denied) of `key_id`: keyledger request id → kind.
fn usage_events(http: &Http, admin: &str, key_id: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/keys/{key_id}/events?kind=usage&limit=1000");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = http.must("GET", &path, admin, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        for event in body["events"].as_array().expect("events array") {
            out.insert(text(event, "request_id"), text(event, "kind"));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

#[derive(Default, Debug)]
struct Totals {
    rounds: u64,
    strict_rounds: u64,
    creates: u64,
    rotations: u64,
    revocations: u64,
    verifications: u64,
    acknowledged_verifications: u64,
    allowed: u64,
    linearizability_checked: u64,
    usage_checked: u64,
    batched_lost: u64,
    unanswered: u64,
    presence_checks: u64,
    get_checks: u64,
    revoked_verified_after_restart: u64,
}

#[test]
fn sigkill_under_mixed_load_loses_nothing_acknowledged() {
    let rounds: u64 =
        std::env::var("KEYLEDGER_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 =
        std::env::var("KEYLEDGER_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    eprintln!("crash test: {rounds} rounds, KEYLEDGER_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let ledger = Ledger::init();
    let admin = ledger.admin_key.clone();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut totals = Totals::default();
    let test_started = Instant::now();

    for round in 0..rounds {
        let round_started = Instant::now();
        let strict = round % 2 == 0;
        let mode: &[&str] = if strict { &["--usage-durability", "strict"] } else { &[] };
        let server = ledger.serve(mode);
        let started_in = round_started.elapsed();
        let http = Http::new(&server.url);
        {
            let mut model = lock(&model);
            model.verifications.clear();
            model.creates = 0;
            model.revocations = 0;
            model.rotated = 0;
        }

        // Load, then SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for v in 0..VERIFIERS {
            let (http, model, stop, s) = (http.clone(), model.clone(), stop.clone(), rng.next() ^ v as u64);
            workers.push(std::thread::spawn(move || verifier(http, model, stop, s)));
        }
        {
            let (http, admin, model, stop) = (http.clone(), admin.clone(), model.clone(), stop.clone());
            workers.push(std::thread::spawn(move || creator(http, admin, model, stop, round)));
        }
        {
            let (http, admin, model, stop, s) =
                (http.clone(), admin.clone(), model.clone(), stop.clone(), rng.next());
            workers.push(std::thread::spawn(move || revoker(http, admin, model, stop, s, round)));
        }
        {
            let (http, admin, model, stop, s) =
                (http.clone(), admin.clone(), model.clone(), stop.clone(), rng.next());
            workers.push(std::thread::spawn(move || rotator(http, admin, model, stop, s, round)));
        }
        let run_for = Duration::from_millis(300 + rng.below(1200));
        std::thread::sleep(run_for);
        let killed = kill_9(server);
        stop.store(true, Ordering::SeqCst);
        for worker in workers {
            worker.join().expect("a load thread panicked");
        }

        // 1. The crashed data dir verifies as it is, before any restart: the log, its
        //    checkpoints, and the projections against a replay.
        let crashed = log_verify(&ledger.data_dir);
        assert!(
            crashed.success(),
            "round {round}: `log verify` fails on the crashed data dir:\n{}{}",
            crashed.stdout,
            crashed.stderr
        );

        let verified_at = Instant::now();
        // 2. Restart; everything acknowledged is there.
        let server = ledger.serve(mode);
        let restarted_at = Instant::now();
        let http = Http::new(&server.url);
        let model_guard = lock(&model);
        let model = &*model_guard;
        assert!(
            model.refused_other.is_empty(),
            "round {round}: unexpected refusals: {:#?}",
            model.refused_other
        );
        // Every key of every round so far, from one listing; keys this round touched (and a
        // sample of older revoked ones) also by `GET /v1/keys/{id}` and a verification.
        let (status, listing) = http.must("GET", &format!("/v1/workspaces/{WORKSPACE}/keys"), &admin, None);
        assert_eq!(status, 200, "round {round}: list: {listing}");
        let listed: HashMap<String, Value> = listing["keys"]
            .as_array()
            .expect("keys array")
            .iter()
            .map(|view| (text(view, "key_id"), view.clone()))
            .collect();
        let mut older_revoked_sampled = 0;
        for (key_id, info) in &model.keys {
            let view = listed.get(key_id).unwrap_or_else(|| {
                panic!(
                    "round {round}: acknowledged key {key_id} (created in round {}) is missing from the listing after the crash",
                    info.round
                )
            });
            check_view(round, key_id, info, view);
            let touched = info.touched == round;
            let sampled =
                !touched && info.revoked_ack.is_some() && older_revoked_sampled < 50 && rng.below(4) == 0;
            older_revoked_sampled += sampled as u64;
            if touched || sampled {
                let (status, view) = http.must("GET", &format!("/v1/keys/{key_id}"), &admin, None);
                assert_eq!(
                    status, 200,
                    "round {round}: acknowledged key {key_id} (created in round {}) is missing after the crash: {view}",
                    info.round
                );
                check_view(round, key_id, info, &view);
                if info.revoked_ack.is_some() {
                    let (status, body) = http
                        .call("POST", "/v1/verify", None, Some(&json!({"key": info.secret})))
                        .expect("verify");
                    assert_eq!(
                        (status, &body["error"], &body["valid"]),
                        (401, &json!("invalid_api_key"), &json!(false)),
                        "round {round}: revoked key {key_id} verifies after the crash: {body}"
                    );
                    totals.revoked_verified_after_restart += 1;
                }
                totals.get_checks += 1;
            }
            totals.presence_checks += 1;
        }
        for (old, new) in &model.rotations {
            assert!(model.keys.contains_key(old) && model.keys.contains_key(new));
        }

        // 3. No verification that started after its key's revocation answered succeeded.
        let mut linearizability_checked = 0;
        for verification in &model.verifications {
            let Some(revoked_ack) = model.keys[&verification.key_id].revoked_ack else { continue };
            if verification.started > revoked_ack {
                linearizability_checked += 1;
                assert_ne!(
                    verification.status,
                    Some(200),
                    "round {round}: a verification of {} that started {:?} after its revocation was answered succeeded: {}",
                    verification.key_id,
                    verification.started - revoked_ack,
                    verification.body
                );
            }
        }

        // 4. Usage events of acknowledged verifications.
        let acknowledged: Vec<&Verification> =
            model.verifications.iter().filter(|v| matches!(v.status, Some(200 | 401 | 403))).collect();
        let mut by_key: HashMap<&str, Vec<&Verification>> = HashMap::new();
        for v in &acknowledged {
            by_key.entry(v.key_id.as_str()).or_default().push(v);
        }
        let mut lost: Vec<String> = Vec::new();
        let mut lost_late = 0u64;
        for (key_id, verifications) in &by_key {
            let events = usage_events(&http, &admin, key_id);
            for v in verifications {
                let request_id = text(&v.body, "request_id");
                let expected_kind = if v.status == Some(200) { "used" } else { "denied" };
                match events.get(&request_id) {
                    Some(kind) => assert_eq!(
                        kind, expected_kind,
                        "round {round}: {request_id} of {key_id} recorded as {kind}, answered {:?}",
                        v.status
                    ),
                    None => {
                        let answered = v.answered.expect("acknowledged");
                        let before_kill = killed.saturating_duration_since(answered);
                        if before_kill <= BATCHED_WINDOW {
                            lost_late += 1;
                        }
                        lost.push(format!(
                            "{expected_kind} {request_id} of {key_id} (answered {:?}, {before_kill:?} before the kill)",
                            v.status
                        ));
                    }
                }
            }
        }
        if strict {
            assert!(
                lost.is_empty(),
                "round {round} (strict): acknowledged verifications missing from the log after the crash: {lost:#?}"
            );
        } else {
            assert_eq!(
                lost.len() as u64,
                lost_late,
                "round {round} (batched): acknowledged usage lost outside the {SYNC_WINDOW:?} sync window (+{FSYNC_ALLOWANCE:?}): {lost:#?}"
            );
        }

        let answered = model.verifications.iter().filter(|v| v.status.is_some()).count() as u64;
        let allowed = model.verifications.iter().filter(|v| v.status == Some(200)).count() as u64;
        eprintln!(
            "round {round} ({}): killed after {run_for:?}; {} creates, {} rotations, {} revocations acknowledged; {} verifications ({} answered, {allowed} allowed, {} unanswered), {} started after their key's revocation, {} usage events checked, {} lost; {} keys checked",
            if strict { "strict" } else { "batched" },
            model.creates,
            model.rotated,
            model.revocations,
            model.verifications.len(),
            answered,
            model.verifications.len() as u64 - answered,
            linearizability_checked,
            acknowledged.len(),
            lost.len(),
            model.keys.len(),
        );
        totals.rounds += 1;
        totals.strict_rounds += strict as u64;
        totals.creates += model.creates;
        totals.rotations += model.rotated;
        totals.revocations += model.revocations;
        totals.verifications += model.verifications.len() as u64;
        totals.acknowledged_verifications += acknowledged.len() as u64;
        totals.allowed += allowed;
        totals.unanswered += model.verifications.len() as u64 - answered;
        totals.linearizability_checked += linearizability_checked;
        totals.usage_checked += acknowledged.len() as u64;
        totals.batched_lost += lost.len() as u64;
        drop(model_guard);

        let checked_at = Instant::now();
        // 5. A clean stop; the log verifies.
        server.stop();
        let clean = log_verify(&ledger.data_dir);
        assert!(
            clean.success(),
            "round {round}: `log verify` fails after a clean stop:\n{}{}",
            clean.stdout,
            clean.stderr
        );
        eprintln!(
            "round {round} done in {:?} (start {started_in:?}, crashed-dir verify {:?}, restart {:?}, checks {:?}, stop + verify {:?})",
            round_started.elapsed(),
            verified_at - killed,
            restarted_at - verified_at,
            checked_at - restarted_at,
            checked_at.elapsed()
        );
    }
    assert!(totals.creates > 0 && totals.verifications > 0, "the load did nothing: {totals:?}");
    eprintln!("crash test survived {} rounds in {:?}: {totals:?}", totals.rounds, test_started.elapsed());
    // One machine-readable line, collected by `cargo xtask crash`.
    let figures = json!({
        "seed": seed,
        "seconds": test_started.elapsed().as_secs_f64(),
        "rounds": totals.rounds,
        "strict_rounds": totals.strict_rounds,
        "keys": lock(&model).keys.len(),
        "creates": totals.creates,
        "rotations": totals.rotations,
        "revocations": totals.revocations,
        "verifications": totals.verifications,
        "acknowledged_verifications": totals.acknowledged_verifications,
        "allowed": totals.allowed,
        "unanswered": totals.unanswered,
        "linearizability_checked": totals.linearizability_checked,
        "usage_checked": totals.usage_checked,
        "batched_lost": totals.batched_lost,
        "presence_checks": totals.presence_checks,
        "get_checks": totals.get_checks,
        "revoked_verified_after_restart": totals.revoked_verified_after_restart,
    });
    eprintln!("{FIGURES_PREFIX}{figures}");
}
