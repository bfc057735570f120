//! Witnesses with several nodes: one node at a time submits checkpoints (the `jobs` lease),
//! and every node serves what the witnesses said, read back from the database: the
//! cosigned checkpoint (`GET /checkpoint`, the integrity view, exports) and fork alarms
//! (docs/architecture.md, "The log store seam").
use keyledger_ledger::export::{ExportFormat, ExportPlan, ExportRequest};
use keyledger_ledger::witness::{Witness, WitnessOptions, WitnessPolicy};
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_log::WriterOptions;
use keyledger_verify::cosignature::{WitnessKey, verify_cosignatures};
use keyledger_verify::note::{Checkpoint, NoteSigner, VerifierKey, sign_checkpoint};
use keyledger_witness::LogConfig;
use keyledger_witness::store::{Latest, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{Ledger, admin, spec, ws};

const WITNESS: &str = "witness.example/w1";

/// A running keyledger witness following the ledger's log.
struct RunningWitness {
    key: WitnessKey,
    url: String,
    _dir: tempfile::TempDir,
}

/// Starts a witness of the log signed by `log_key`; with `ahead`, the witness already holds
/// a checkpoint of that origin at this size from another view of the log (a fork).
async fn start_witness(log_key: &VerifierKey, ahead: Option<u64>) -> RunningWitness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("witness");
    let key = Store::init(&path, WITNESS).unwrap();
    let origin = log_key.name().unwrap().to_owned();
    if let Some(size) = ahead {
        let other = NoteSigner::new(&origin, ed25519_dalek::SigningKey::from_bytes(&[7; 32])).unwrap();
        let checkpoint = Checkpoint::new(origin.clone(), size, [9; 32]);
        let note = sign_checkpoint(&checkpoint, &other).unwrap();
        let (store, _) = Store::open(&path).unwrap();
        store.save(&Latest { checkpoint, note }).unwrap();
    }
    let witness =
        keyledger_witness::Witness::open(&path, vec![LogConfig { origin, keys: vec![log_key.clone()] }])
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keyledger_witness::serve(listener, Arc::new(witness), std::future::pending()));
    RunningWitness { key, url, _dir: dir }
}

fn options(witness: &RunningWitness) -> EngineOptions {
    let flag = Witness::parse_flag(&format!("{}={}", witness.key, witness.url)).unwrap();
    EngineOptions {
        writer: WriterOptions {
            checkpoint_every: Duration::from_millis(50),
            checkpoint_every_events: 1,
            ..WriterOptions::default()
        },
        witnesses: WitnessOptions {
            policy: Some(WitnessPolicy::new(vec![flag], None).unwrap()),
            poll_interval: Duration::from_millis(20),
            first_retry: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            timeout: Duration::from_secs(2),
        },
        ..EngineOptions::default()
    }
}

/// Node `a` initialised, a witness of its log, and nodes `a` and `b` opened with it.
async fn two_witnessed_nodes(
    ledger: &Ledger,
    ahead: Option<u64>,
) -> (String, RunningWitness, Engine, Engine) {
    let init = ledger.init("a");
    let log_key: VerifierKey = init.log_public_key.parse().unwrap();
    let witness = start_witness(&log_key, ahead).await;
    let a = ledger.open_with(&ledger.dir("a"), options(&witness));
    let b = ledger.open_with(&ledger.node_dir("b", "a"), options(&witness));
    (init.admin_key.expose().to_owned(), witness, a, b)
}

/// Polls `done` every 20 ms until it holds, or fails after 10 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node holding the `jobs` lease first, then the other.
async fn holder_first(a: Engine, b: Engine) -> (Engine, Engine) {
    wait_until("a node holds the jobs lease", || a.runs_jobs() || b.runs_jobs()).await;
    if a.runs_jobs() { (a, b) } else { (b, a) }
}

/// Whether `note` carries a valid cosignature of `witness`.
fn cosigned_by(note: &str, witness: &RunningWitness) -> bool {
    verify_cosignatures(note, std::slice::from_ref(&witness.key)).is_ok_and(|found| !found.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holders_cosignatures_are_served_by_every_node_and_kept_at_a_takeover() {
    let ledger = Ledger::new();
    let (key, witness, a, b) = two_witnessed_nodes(&ledger, None).await;
    let (holder, other) = holder_first(a, b).await;
    holder.create(admin(&holder, &key).await, ws("acme"), spec("k", &["read"])).await.unwrap();
    wait_until("the holder got a cosignature", || holder.witness_view().cosigned.is_some()).await;

    // The other node submits nothing, yet serves the cosignature of the log's checkpoint.
    wait_until("the other node serves the cosigned checkpoint", || {
        other.latest_checkpoint_note().is_some_and(|note| cosigned_by(&note, &witness))
    })
    .await;
    let view = other.witness_view();
    let cosigned = view.cosigned.expect("the other node's view holds the cosigned checkpoint");
    assert_eq!(cosigned.witnesses, [WITNESS]);
    assert!(cosigned.quorum_met);
    assert!(cosigned_by(&cosigned.note, &witness));
    assert_eq!(view.statuses[0].acknowledged_size, Some(cosigned.size));
    // An export on the other node anchors on a checkpoint carrying the cosignature
    // (docs/export-format.md, "Witness cosignatures").
    let request = ExportRequest {
        from: None,
        to: None,
        workspace: None,
        format: ExportFormat::Jsonl,
        consistency_from: None,
    };
    let plan = ExportPlan::prepare(&other, request).await.unwrap();
    assert!(cosigned_by(&plan.anchor.note, &witness), "{}", plan.anchor.note);

    // The database keeps one row, of a checkpoint of the log, as `store verify` checks.
    let rows: i64 =
        ledger.sql(|c| c.query_one("SELECT count(*) FROM keyledger_cosigned", &[]).unwrap().get(0));
    assert_eq!(rows, 1);
    let report = ledger.sql(|c| keyledger_pg::verify::verify_store(c, &mut |_, _| {}).unwrap());
    assert!(report.cosigned_size.is_some());

    // The holder stops: the other takes the lease over, still knows the cosignature, and goes
    // on to the next checkpoint from it.
    holder.shutdown().await;
    wait_until("the other node took the jobs lease over", || other.runs_jobs()).await;
    assert!(other.witness_view().cosigned.is_some_and(|c| c.size >= cosigned.size));
    other.create(admin(&other, &key).await, ws("acme"), spec("k2", &["read"])).await.unwrap();
    let size = other.log().len();
    wait_until("the new holder got the next checkpoint cosigned", || {
        other.witness_view().cosigned.is_some_and(|c| c.size >= size && c.witnesses == [WITNESS])
    })
    .await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_alarm_raised_by_the_holder_shows_on_every_node() {
    let ledger = Ledger::new();
    let (_, _witness, a, b) = two_witnessed_nodes(&ledger, Some(1_000_000)).await;
    let (holder, other) = holder_first(a, b).await;
    wait_until("the holder raised a fork alarm", || holder.witness_view().fork_alarm.is_some()).await;
    let alarm = holder.witness_view().fork_alarm.unwrap();
    assert_eq!(
        (alarm.witness.as_str(), alarm.kind, alarm.witness_size),
        (WITNESS, "witness_ahead", Some(1_000_000))
    );

    wait_until("the other node shows the fork alarm", || other.witness_view().fork_alarm.is_some()).await;
    assert_eq!(other.witness_view().fork_alarm, Some(alarm.clone()));
    // The holder announced it; the other node counts nothing of its own.
    let counted = |engine: &Engine| engine.witness_counters()[0].fork_alarms;
    assert_eq!((counted(&holder), counted(&other)), (1, 0));
    let rows: i64 =
        ledger.sql(|c| c.query_one("SELECT count(*) FROM keyledger_fork_alarms", &[]).unwrap().get(0));
    assert_eq!(rows, 1, "one alarm per witness, however often it answers the same");
    holder.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_a_stored_cosigned_checkpoint_only_once_it_verifies() {
    let ledger = Ledger::new();
    let init = ledger.init("a");
    let log_key: VerifierKey = init.log_public_key.parse().unwrap();
    let witness = start_witness(&log_key, None).await;
    let a = ledger.open_with(&ledger.dir("a"), options(&witness));
    wait_until("node a got a cosignature", || a.witness_view().cosigned.is_some()).await;
    a.shutdown().await;
    drop(a);

    // The other nodes know the witness's key but cannot reach it: what they serve comes from
    // the database alone.
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let offline =
        RunningWitness { url: unreachable, key: witness.key.clone(), _dir: tempfile::tempdir().unwrap() };
    let stored: String =
        ledger.sql(|c| c.query_one("SELECT note FROM keyledger_cosigned", &[]).unwrap().get(0));
    // A cosignature line altered in the database (a base64 character of its signature) is
    // not served.
    let (kept, last) = stored.trim_end().rsplit_once(' ').unwrap();
    let at = last.len() - 5;
    let flipped = if last[at..].starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{kept} {}{flipped}{}\n", &last[..at], &last[at + 1..]);
    assert!(last.ends_with("=="), "a cosignature is 76 bytes: {last}");
    ledger.sql(|c| c.execute("UPDATE keyledger_cosigned SET note = $1", &[&forged]).unwrap());
    let b = ledger.open_with(&ledger.node_dir("b", "a"), options(&offline));
    assert_eq!(b.witness_view().cosigned, None, "a forged cosignature is not served");
    b.shutdown().await;
    drop(b);

    // Intact, it is served by a node that never talked to the witness, even when the log has
    // a later checkpoint (node a signed one at shutdown, perhaps): it is of the log's tree.
    ledger.sql(|c| c.execute("UPDATE keyledger_cosigned SET note = $1", &[&stored]).unwrap());
    let c = ledger.open_with(&ledger.node_dir("c", "a"), options(&offline));
    let cosigned = c.witness_view().cosigned.expect("the stored cosigned checkpoint is served");
    assert_eq!(cosigned.note, stored);
    assert_eq!(cosigned.witnesses, [WITNESS]);
    c.shutdown().await;
}
