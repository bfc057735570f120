//! Many nodes, one ledger in PostgreSQL, through the real binary and a real database
//! (docs/architecture.md, docs/operations.md "High availability"):
//!
//! - revocation holds on every node: once a revoke has returned on one node, no
//!   verification that starts afterwards succeeds on any node, a frozen node included;
//! - nodes crashed under mixed load lose nothing they acknowledged, the others keep
//!   serving, and a restarted node catches up;
//! - with the database down every node fails closed (503 `unavailable`) for appends and
//!   verifies, still answers key reads, and recovers by itself when the database returns;
//! - two nodes racing to append and to sign checkpoints leave one consistent history.
//!
//! Each test starts its own PostgreSQL cluster (`scripts/install-postgres.sh` installs the
//! server) and fails, naming that script, when PostgreSQL is missing.

use keyledger_e2e::store::{Caller, StoreLedger, StoreNode, init_store};
use keyledger_e2e::{Resp, log_verify, poll, text};
use keyledger_pg::testing::TestCluster;
use keyledger_verify::merkle::TreeHash;
use keyledger_verify::note::{VerifierKey, open_checkpoint};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of the test's own, with a fresh database `name`; its URL.
fn database(name: &str) -> (TestCluster, String) {
    let cluster = TestCluster::start().unwrap_or_else(|e| {
        panic!("these tests need PostgreSQL (scripts/install-postgres.sh installs it): {e}")
    });
    let url = cluster.create_database(name).unwrap_or_else(|e| panic!("create database {name}: {e}"));
    (cluster, url)
}

/// Creates a key named `name` in `workspace` through `caller` with the admin key.
fn create(caller: &Caller, ledger: &StoreLedger, workspace: &str, name: &str) -> Result<Resp, String> {
    caller.post(
        &format!("/v1/workspaces/{workspace}/keys"),
        Some(&ledger.admin_key),
        &json!({ "name": name }),
    )
}

fn revoke(caller: &Caller, ledger: &StoreLedger, key_id: &str) -> Result<Resp, String> {
    caller.post(&format!("/v1/keys/{key_id}/revoke"), Some(&ledger.admin_key), &json!({"reason": "ha test"}))
}

fn verify(caller: &Caller, secret: &str) -> Result<Resp, String> {
    caller.post("/v1/verify", None, &json!({ "key": secret }))
}

/// A created key: its id and secret.
#[derive(Clone, Debug)]
struct Key {
    id: String,
    secret: String,
}

fn created(resp: &Resp) -> Key {
    assert_eq!(resp.status, 201, "create: {}", resp.dump());
    Key { id: text(&resp.body, "key_id"), secret: text(&resp.body, "secret") }
}

/// The error shape of docs/api.md with status `status` and code `code`.
fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.dump());
    assert_eq!(resp.body["error"], code, "{}", resp.dump());
    assert!(resp.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", resp.dump());
    assert!(resp.body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{}", resp.dump());
}

/// The log size a node reports on `/healthz` (shown to the admin key).
fn log_size(node: &StoreNode, ledger: &StoreLedger) -> Option<u64> {
    let resp = node.caller(Duration::from_secs(5)).get("/healthz", Some(&ledger.admin_key)).ok()?;
    (resp.status == 200).then(|| resp.body["log_size"].as_u64()).flatten()
}

/// One verification a hammering thread made.
struct Attempt {
    node: &'static str,
    key: usize,
    started: Instant,
    outcome: Result<Resp, String>,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        self.outcome.as_ref().is_ok_and(|r| r.status == 200 && r.body["valid"] == true)
    }
}

#[test]
fn once_a_revoke_returned_on_one_node_no_verification_succeeds_on_any_node_even_a_frozen_one() {
    const KEYS: usize = 12;
    let (_cluster, url) = database("revocation");
    let ledger = init_store(&url);
    let a = ledger.node("a", &[]);
    let b = ledger.node("b", &[]);
    let c = ledger.node("c", &[]);
    let on_a = a.caller(Duration::from_secs(20));
    let keys: Vec<Key> = (0..KEYS)
        .map(|i| created(&create(&on_a, &ledger, "acme", &format!("k{i}")).expect("create on a")))
        .collect();

    // Before the run: a key created on A verifies at once on B and C.
    for node in [&b, &c] {
        let resp = verify(&node.caller(Duration::from_secs(20)), &keys[0].secret).expect("verify");
        assert_eq!(resp.status, 200, "a key created on a verifies on {}: {}", node.name, resp.dump());
    }

    let keys = Arc::new(keys);
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let mut hammers = Vec::new();
    for (node, name) in [(&b, "b"), (&c, "c")] {
        for thread_no in 0..2 {
            // Longer than C stays frozen: a frozen node's requests wait, they do not fail.
            let caller = node.caller(Duration::from_secs(30));
            let (keys, stop, attempts) = (keys.clone(), stop.clone(), attempts.clone());
            hammers.push(thread::spawn(move || {
                let mut n = thread_no;
                while !stop.load(Ordering::Relaxed) {
                    let key = (n * 7) % KEYS;
                    n += 1;
                    let started = Instant::now();
                    let outcome = verify(&caller, &keys[key].secret);
                    attempts.lock().unwrap().push(Attempt { node: name, key, started, outcome });
                }
            }));
        }
    }

    // A revokes one key after another; meanwhile C is frozen for 1.5 s and thawed. (C may
    // be frozen holding the log head's lock: A's revokes then wait until C thaws.)
    let mut revoked_at: Vec<Option<Instant>> = vec![None; KEYS];
    let mut revoke_started: Vec<Option<Instant>> = vec![None; KEYS];
    let mut slowest_revoke = Duration::ZERO;
    let mut freezer = None;
    thread::sleep(Duration::from_millis(400));
    for (i, key) in keys.iter().enumerate() {
        if i == KEYS / 3 {
            let pid = c.pid().to_string();
            let signal = move |signal: &str| {
                let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill");
                assert!(status.success(), "kill {signal} c");
            };
            freezer = Some(thread::spawn(move || {
                signal("-STOP");
                let frozen = Instant::now();
                thread::sleep(Duration::from_millis(1500));
                signal("-CONT");
                (frozen, Instant::now())
            }));
            thread::sleep(Duration::from_millis(50));
        }
        let started = Instant::now();
        revoke_started[i] = Some(started);
        let resp = revoke(&on_a, &ledger, &key.id).expect("revoke on a");
        revoked_at[i] = Some(Instant::now());
        slowest_revoke = slowest_revoke.max(started.elapsed());
        assert_eq!(resp.status, 200, "revoke {}: {}", key.id, resp.dump());
        assert_eq!(resp.body["status"], "revoked", "{}", resp.dump());
        thread::sleep(Duration::from_millis(150));
    }
    let (frozen, thawed) = freezer.expect("c was frozen").join().expect("freezer thread");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.join().expect("verifier thread");
    }

    let attempts = attempts.lock().unwrap();
    let mut violations = Vec::new();
    let mut tested_after_revoke = BTreeMap::<&str, usize>::new();
    let mut succeeded_before = BTreeMap::<&str, usize>::new();
    let mut frozen_then_refused = 0;
    for attempt in attempts.iter() {
        let revoked = revoked_at[attempt.key].expect("every key was revoked");
        match &attempt.outcome {
            Err(e) => panic!("verify on {} failed in transport: {e}", attempt.node),
            Ok(resp) if attempt.succeeded() => {
                if attempt.started > revoked {
                    violations.push(format!(
                        "{}: key {} verified in a request that started {:?} after its revoke returned: {}",
                        attempt.node,
                        keys[attempt.key].id,
                        attempt.started.duration_since(revoked),
                        resp.dump()
                    ));
                } else {
                    *succeeded_before.entry(attempt.node).or_default() += 1;
                }
            }
            // A refusal: only ever because the key is revoked (the database is healthy).
            Ok(resp) => {
                assert_error(resp, 401, "invalid_api_key");
                assert_eq!(resp.body["valid"], false, "{}", resp.dump());
                if attempt.started > revoked {
                    *tested_after_revoke.entry(attempt.node).or_default() += 1;
                    // A key whose revoke was asked while C was frozen, refused by C after it
                    // thawed. (If C froze holding the log head's lock, that revoke returns
                    // only once C thaws: what counts is that it was asked meanwhile.)
                    let asked = revoke_started[attempt.key].expect("every key was revoked");
                    if attempt.node == "c" && attempt.started > thawed && asked > frozen && asked < thawed {
                        frozen_then_refused += 1;
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{} verifications succeeded after a revoke returned:\n{}",
        violations.len(),
        {
            violations.truncate(10);
            violations.join("\n")
        }
    );
    for node in ["b", "c"] {
        assert!(
            succeeded_before.get(node).copied().unwrap_or(0) > 0,
            "{node} verified keys before their revoke"
        );
        assert!(tested_after_revoke.get(node).copied().unwrap_or(0) > 0, "{node} was asked after revokes");
    }
    assert!(frozen_then_refused > 0, "C, thawed, was asked about keys revoked after it froze");
    assert!(thawed.duration_since(frozen) >= Duration::from_millis(1500), "C stayed frozen 1.5 s");

    // Afterwards every node, A included, refuses every key.
    for node in [&a, &b, &c] {
        let caller = node.caller(Duration::from_secs(20));
        for key in keys.iter() {
            let resp = verify(&caller, &key.secret).expect("verify");
            assert_error(&resp, 401, "invalid_api_key");
        }
    }
    eprintln!(
        "revocation: {} verifications on b and c, {} of them after their key's revoke, none succeeded; \
         slowest revoke {} ms (c frozen 1.5 s)",
        attempts.len(),
        tested_after_revoke.values().sum::<usize>(),
        slowest_revoke.as_millis()
    );
}

/// What the load of [`nodes_crashed_under_mixed_load_lose_nothing_acknowledged_and_catch_up`]
/// saw: every acknowledged create and revoke, and every revoke that was attempted.
#[derive(Default)]
struct Acks {
    created: Vec<(String, Key)>,
    revoked: BTreeSet<String>,
    revoke_attempted: BTreeSet<String>,
    /// Per node: answers (not transport errors) and when they came.
    answers: BTreeMap<String, Vec<(Instant, u16)>>,
}

#[test]
fn nodes_crashed_under_mixed_load_lose_nothing_acknowledged_and_catch_up() {
    let (_cluster, url) = database("crashes");
    let ledger = Arc::new(init_store(&url));
    let mut nodes: Vec<StoreNode> = ["a", "b", "c"].iter().map(|name| ledger.node(name, &[])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut load = Vec::new();
    for node in &nodes {
        let name = node.name.clone();
        let caller = node.caller(Duration::from_secs(10));
        let (ledger, stop, acks) = (ledger.clone(), stop.clone(), acks.clone());
        // Creates, revokes of every other key it created, verifies of what it created.
        load.push(thread::spawn(move || {
            let mut mine: Vec<Key> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let outcome = if n % 3 == 0 && mine.len() >= 2 {
                    let key = mine.remove(0);
                    acks.lock().unwrap().revoke_attempted.insert(key.id.clone());
                    let outcome = revoke(&caller, &ledger, &key.id);
                    if outcome.as_ref().is_ok_and(|r| r.status == 200) {
                        acks.lock().unwrap().revoked.insert(key.id);
                    }
                    outcome
                } else if n % 3 == 1 && !mine.is_empty() {
                    verify(&caller, &mine[mine.len() - 1].secret)
                } else {
                    let outcome = create(&caller, &ledger, "load", &format!("{name}-{n}"));
                    if let Ok(resp) = &outcome
                        && resp.status == 201
                    {
                        let key = created(resp);
                        acks.lock().unwrap().created.push((name.clone(), key.clone()));
                        mine.push(key);
                    }
                    outcome
                };
                match outcome {
                    Ok(resp) => acks
                        .lock()
                        .unwrap()
                        .answers
                        .entry(name.clone())
                        .or_default()
                        .push((Instant::now(), resp.status)),
                    // The node is down: try again shortly.
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        }));
    }

    let served_since = |node: &str, since: Instant| {
        acks.lock()
            .unwrap()
            .answers
            .get(node)
            .map_or(0, |a| a.iter().filter(|(at, s)| *at > since && *s < 300).count())
    };
    thread::sleep(Duration::from_millis(1500));
    nodes[1].kill();
    let b_killed = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    nodes[2].kill();
    let c_killed = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    assert!(served_since("a", c_killed) > 0, "a keeps serving with b and c dead");
    assert!(served_since("c", b_killed) > 0, "c kept serving after b died");
    nodes[1].restart();
    let b_back = Instant::now();
    nodes[2].restart();
    thread::sleep(Duration::from_millis(1000));
    assert!(served_since("b", b_back) > 0, "the restarted b serves again");
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("load thread");
    }

    let acks = acks.lock().unwrap();
    // Live nodes answered every request with success: no 5xx, no refusal.
    for (node, answers) in &acks.answers {
        let failed: Vec<u16> = answers.iter().map(|(_, s)| *s).filter(|s| *s >= 300).collect();
        assert!(failed.is_empty(), "{node} answered {failed:?}");
    }
    let before_kill = acks.created.len();
    assert!(before_kill >= 10 && !acks.revoked.is_empty(), "the load ran: {before_kill} creates");

    // The log is the same on every node once they have caught up.
    let size_on_a = log_size(&nodes[0], &ledger).expect("a's log size");
    for node in &nodes[1..] {
        poll(Duration::from_secs(20), &format!("{} to catch up to {size_on_a}", node.name), || {
            (log_size(node, &ledger)? >= size_on_a).then_some(())
        });
    }
    // Every acknowledged create and revoke is in the log, seen from every node.
    for node in &nodes {
        let http = node.client();
        let listed = http.get("/v1/workspaces/load/keys", &ledger.admin_key);
        assert_eq!(listed.status, 200, "{}", listed.dump());
        let status: BTreeMap<String, String> = listed.body["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| (text(k, "key_id"), text(k, "status")))
            .collect();
        for (origin, key) in &acks.created {
            let Some(status) = status.get(&key.id) else {
                panic!("{}: key {} acknowledged by {origin} is missing", node.name, key.id)
            };
            if acks.revoked.contains(&key.id) {
                assert_eq!(status, "revoked", "{}: acknowledged revoke of {}", node.name, key.id);
            } else if !acks.revoke_attempted.contains(&key.id) {
                assert_eq!(status, "active", "{}: {}", node.name, key.id);
            }
        }
    }
    // The audit trail of a key revoked on the node killed first, read on that node restarted.
    let http = nodes[1].client();
    let revoked_by_b = acks
        .created
        .iter()
        .find(|(origin, key)| origin == "b" && acks.revoked.contains(&key.id))
        .map(|(_, key)| key.id.clone())
        .expect("b acknowledged a revoke");
    let events = http.get(&format!("/v1/keys/{revoked_by_b}/events?kind=lifecycle"), &ledger.admin_key);
    assert_eq!(events.status, 200, "{}", events.dump());
    let kinds: Vec<&str> =
        events.body["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["created", "revoked"], "{}", events.dump());
    for node in &mut nodes {
        assert!(node.running(), "{} still runs", node.name);
    }
}

#[test]
fn with_the_database_down_every_node_fails_closed_and_recovers_by_itself() {
    let (cluster, url) = database("outage");
    let ledger = init_store(&url);
    let mut nodes = [ledger.node("a", &[]), ledger.node("b", &[])];
    let key =
        created(&create(&nodes[0].caller(Duration::from_secs(20)), &ledger, "acme", "k").expect("create"));
    let size_before = log_size(&nodes[0], &ledger).expect("log size");

    cluster.stop().expect("stop PostgreSQL");
    for node in &nodes {
        let caller = node.caller(Duration::from_secs(20));
        let started = Instant::now();
        let resp = create(&caller, &ledger, "acme", "during-outage").expect("create answers");
        assert_error(&resp, 503, "unavailable");
        let resp = verify(&caller, &key.secret).expect("verify answers");
        assert_error(&resp, 503, "unavailable");
        assert_eq!(resp.body["valid"], false, "{}", resp.dump());
        assert!(started.elapsed() < Duration::from_secs(15), "{} fails closed promptly", node.name);
        // Admin reads too: whether the admin key was revoked on another node cannot be known.
        let resp =
            caller.get(&format!("/v1/keys/{}", key.id), Some(&ledger.admin_key)).expect("read answers");
        assert_error(&resp, 503, "unavailable");
    }

    cluster.start_server().expect("start PostgreSQL again");
    for node in &nodes {
        let caller = node.caller(Duration::from_secs(20));
        poll(Duration::from_secs(30), &format!("{} to verify again", node.name), || {
            verify(&caller, &key.secret).ok().filter(|r| r.status == 200)
        });
        let resp = create(&caller, &ledger, "acme", &format!("after-{}", node.name)).expect("create");
        assert_eq!(resp.status, 201, "{}: {}", node.name, resp.dump());
    }
    for node in &mut nodes {
        assert!(node.running(), "{} recovered without a restart", node.name);
    }
    let listed = nodes[1].client().get("/v1/workspaces/acme/keys", &ledger.admin_key);
    let names: BTreeSet<String> =
        listed.body["keys"].as_array().expect("keys").iter().map(|k| text(k, "name")).collect();
    assert_eq!(
        names,
        ["k", "after-a", "after-b"].map(str::to_owned).into(),
        "the refused create changed nothing"
    );
    assert!(log_size(&nodes[0], &ledger).expect("log size") > size_before);
}

#[test]
fn two_nodes_racing_to_append_and_sign_checkpoints_leave_one_consistent_history() {
    let (cluster, url) = database("race");
    let ledger = Arc::new(init_store(&url));
    let flags = ["--checkpoint-interval-secs", "1", "--checkpoint-every-events", "8"];
    let nodes = [ledger.node("a", &flags), ledger.node("b", &flags)];
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for node in &nodes {
        for thread_no in 0..2 {
            let caller = node.caller(Duration::from_secs(20));
            let name = format!("{}-{thread_no}", node.name);
            let (ledger, stop, appended) = (ledger.clone(), stop.clone(), appended.clone());
            load.push(thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let resp = create(&caller, &ledger, "race", &format!("{name}-{n}")).expect("create");
                    let key = created(&resp);
                    let resp = verify(&caller, &key.secret).expect("verify");
                    assert_eq!(resp.status, 200, "{}", resp.dump());
                    appended.fetch_add(2, Ordering::Relaxed);
                }
            }));
        }
    }
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("load thread");
    }
    // Time for both nodes to sign the checkpoint of the final size.
    thread::sleep(Duration::from_millis(2500));
    assert!(appended.load(Ordering::Relaxed) >= 20, "the load ran");

    let mut db = cluster.connect("race").expect("connect");
    let events =
        db.query("SELECT seq, record, leaf FROM keyledger_events ORDER BY seq", &[]).expect("events");
    let mut leaves = Vec::with_capacity(events.len());
    for (i, row) in events.iter().enumerate() {
        let seq: i64 = row.get(0);
        assert_eq!(seq, i as i64, "seqs are 0, 1, 2… without a gap");
        let record: Vec<u8> = row.get(1);
        let leaf: Vec<u8> = row.get(2);
        assert_eq!(leaf, TreeHash::Rfc6962.leaf(&record), "the leaf of seq {seq} hashes its record");
        leaves.push(TreeHash::Rfc6962.leaf(&record));
    }
    let head = db.query_one("SELECT size, root FROM keyledger_head", &[]).expect("head");
    let (size, root): (i64, Vec<u8>) = (head.get(0), head.get(1));
    assert_eq!(size as usize, leaves.len(), "the head counts every event");
    assert_eq!(root, TreeHash::Rfc6962.root_from_leaves(&leaves), "the head's root is the events' root");

    let forks = db
        .query("SELECT size FROM keyledger_checkpoints GROUP BY size HAVING count(DISTINCT root) > 1", &[])
        .expect("checkpoints by size");
    assert!(forks.is_empty(), "never two checkpoints of one size with different roots");
    let key: VerifierKey = ledger.log_public_key.parse().expect("log public key");
    let checkpoints = db
        .query("SELECT size, root, note FROM keyledger_checkpoints ORDER BY size", &[])
        .expect("checkpoints");
    assert!(checkpoints.len() >= 3, "checkpoints were signed while the nodes raced: {}", checkpoints.len());
    for row in &checkpoints {
        let (size, root, note): (i64, Vec<u8>, String) = (row.get(0), row.get(1), row.get(2));
        let checkpoint =
            open_checkpoint(&note, &key).unwrap_or_else(|e| panic!("checkpoint {size}: {e}\n{note}"));
        assert_eq!(checkpoint.size, size as u64, "{note}");
        assert_eq!(checkpoint.root.to_vec(), root, "{note}");
        let size = usize::try_from(size).expect("size");
        assert!(size <= leaves.len(), "checkpoint {size} beyond the log's {}", leaves.len());
        assert_eq!(
            checkpoint.root,
            TreeHash::Rfc6962.root_from_leaves(&leaves[..size]),
            "checkpoint {size} signs the root of the log's first {size} events: one history"
        );
    }
    let latest: i64 = checkpoints.last().expect("a checkpoint").get(0);
    assert_eq!(latest as usize, leaves.len(), "the final size was checkpointed");

    for node in nodes {
        let data_dir = node.data_dir.clone();
        node.stop();
        let run = log_verify(&data_dir);
        assert!(
            run.success(),
            "log verify on {}'s data dir:\n{}\n{}",
            data_dir.display(),
            run.stdout,
            run.stderr
        );
    }
}

/// The hex of a node secret file of `ledger`'s init data dir (what `KEYLEDGER_PEPPER` /
/// `KEYLEDGER_SIGNING_KEY` carry, docs/operations.md "Secrets from the environment").
fn secret_hex(ledger: &StoreLedger, file: &str) -> String {
    hex::encode(std::fs::read(ledger.data_dir.join(file)).expect("read secret file"))
}

/// Runs `serve --store` on `dir` with `env`, expecting it to refuse to start; its stderr.
fn refused_serve(ledger: &StoreLedger, dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let port = keyledger_e2e::free_port().to_string();
    let output = keyledger_e2e::store::run(
        &["serve", "--store", &ledger.store, "--data-dir", keyledger_e2e::path_str(dir)]
            .into_iter()
            .chain(["--listen", &format!("127.0.0.1:{port}")])
            .collect::<Vec<_>>(),
        env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "serve must refuse to start, it exited {}: {stderr}", output.status);
    stderr
}

#[test]
fn a_node_takes_its_pepper_and_signing_key_from_the_environment_and_refuses_wrong_ones_naming_which() {
    let (_cluster, url) = database("secrets_env");
    let ledger = init_store(&url);
    let pepper = secret_hex(&ledger, "pepper.key");
    let signing = secret_hex(&ledger, "signing.key");
    let other = hex::encode([0x5a_u8; 32]);
    let empty_dir = |name: &str| {
        let dir = ledger.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("create node dir");
        dir
    };

    // Secrets from the environment only: the node serves the ledger, and writes no key file.
    let dir = empty_dir("env");
    let node = StoreNode::start_with_env(
        "env",
        &ledger.store,
        &dir,
        &[],
        &[("KEYLEDGER_PEPPER", &pepper), ("KEYLEDGER_SIGNING_KEY", &format!("{signing}\n"))],
    );
    let on_env = node.caller(Duration::from_secs(20));
    let key = created(&create(&on_env, &ledger, "acme", "from-env").expect("create"));
    let resp = verify(&on_env, &key.secret).expect("verify");
    assert_eq!(resp.status, 200, "the pepper from the environment hashes keys: {}", resp.dump());
    assert!(!dir.join("pepper.key").exists() && !dir.join("signing.key").exists());
    drop(node);

    // A wrong pepper or signing key is named, whichever the other is.
    let stderr = refused_serve(
        &ledger,
        &empty_dir("bad_pepper"),
        &[("KEYLEDGER_PEPPER", &other), ("KEYLEDGER_SIGNING_KEY", &signing)],
    );
    assert!(stderr.contains("pepper") && stderr.contains("KEYLEDGER_PEPPER"), "{stderr}");
    assert!(!stderr.contains("signing key"), "the signing key is right: {stderr}");
    let stderr = refused_serve(
        &ledger,
        &empty_dir("bad_signing"),
        &[("KEYLEDGER_PEPPER", &pepper), ("KEYLEDGER_SIGNING_KEY", &other)],
    );
    assert!(stderr.contains("signing key") && stderr.contains("KEYLEDGER_SIGNING_KEY"), "{stderr}");

    // A file and a variable that disagree are refused, naming both; a malformed value is
    // named and never echoed.
    let both = ledger.node_dir("both");
    let stderr = refused_serve(&ledger, &both, &[("KEYLEDGER_PEPPER", &other)]);
    assert!(stderr.contains("KEYLEDGER_PEPPER") && stderr.contains("pepper.key"), "{stderr}");
    assert!(stderr.contains("different"), "{stderr}");
    let stderr = refused_serve(&ledger, &both, &[("KEYLEDGER_SIGNING_KEY", &signing[..60])]);
    assert!(stderr.contains("KEYLEDGER_SIGNING_KEY") && stderr.contains("64 hexadecimal"), "{stderr}");
    assert!(!stderr.contains(&signing[..20]), "the secret leaked: {stderr}");

    // A file and a variable that agree are fine.
    let node = StoreNode::start_with_env("both", &ledger.store, &both, &[], &[("KEYLEDGER_PEPPER", &pepper)]);
    let resp = verify(&node.caller(Duration::from_secs(20)), &key.secret).expect("verify");
    assert_eq!(resp.status, 200, "{}", resp.dump());
}

#[test]
fn admin_recover_with_store_issues_an_admin_key_every_node_accepts() {
    let (_cluster, url) = database("recover");
    let ledger = init_store(&url);
    let a = ledger.node("a", &[]);
    // Recovery through a stopped node's data dir, secrets from the environment; a serving.
    let dir = ledger.tmp.path().join("recovering");
    std::fs::create_dir_all(&dir).expect("create dir");
    let pepper = secret_hex(&ledger, "pepper.key");
    let signing = secret_hex(&ledger, "signing.key");
    let recover = |pepper: &str| {
        keyledger_e2e::store::run(
            &["admin", "recover", "--store", &ledger.store, "--data-dir", keyledger_e2e::path_str(&dir)],
            &[("KEYLEDGER_PEPPER", pepper), ("KEYLEDGER_SIGNING_KEY", &signing)],
        )
    };
    let wrong = recover(&hex::encode([1_u8; 32]));
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("pepper"), "{wrong:?}");

    let output = recover(&pepper);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "recover --store: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let admin_key = text(&printed, "admin_key");
    assert_ne!(admin_key, ledger.admin_key);

    // The running node applies the recovery key from the database and accepts it.
    let on_a = a.caller(Duration::from_secs(20));
    let resp = poll(Duration::from_secs(15), "node a accepts the recovery admin key", || {
        let resp = on_a
            .post("/v1/workspaces/acme/keys", Some(&admin_key), &json!({ "name": "after-recovery" }))
            .ok()?;
        (resp.status == 201).then_some(resp)
    });
    created(&resp);
}
