//! Failover of the database under keyledger nodes, through the real binary
//! (docs/operations.md "High availability"): a primary and a synchronous standby, nodes
//! connected through the multi-host connection string (`target_session_attrs=read-write`),
//! load running, the primary crashed, the standby promoted. The nodes resume writing by
//! themselves, nothing they acknowledged is lost, and the log verifies.
//!
//! The test prints `failover: first write N ms after primary death` (the figure of
//! docs/benchmarks.md). It starts its own PostgreSQL servers (`scripts/install-postgres.sh`
//! installs them) and fails, naming that script, when PostgreSQL is missing.

use keyledger_e2e::store::{Caller, StoreLedger, init_store};
use keyledger_e2e::{Resp, log_verify, poll, text};
use keyledger_pg::testing::SyncPair;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn create(caller: &Caller, ledger: &StoreLedger, name: &str) -> Result<Resp, String> {
    caller.post("/v1/workspaces/load/keys", Some(&ledger.admin_key), &json!({ "name": name }))
}

/// One create a load thread sent: on which node, when it started and returned, and the key id
/// if it was acknowledged (201).
struct Write {
    node: String,
    started: Instant,
    returned: Instant,
    acknowledged: Option<String>,
}

#[test]
fn after_the_primary_dies_and_the_standby_is_promoted_writes_resume_and_nothing_acknowledged_is_lost() {
    let pair = SyncPair::start().unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL (scripts/install-postgres.sh installs it): {e}")
    });
    let url = pair.create_database("failover").expect("create database");
    let ledger = Arc::new(init_store(&url));
    let mut nodes = [ledger.node("a", &[]), ledger.node("b", &[])];

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
    let mut load = Vec::new();
    for node in &nodes {
        let caller = node.caller(Duration::from_secs(15));
        let name = node.name.clone();
        let (ledger, stop, writes) = (ledger.clone(), stop.clone(), writes.clone());
        load.push(thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let outcome = create(&caller, &ledger, &format!("{name}-{n}"));
                let returned = Instant::now();
                let acknowledged = match &outcome {
                    Ok(resp) if resp.status == 201 => Some(text(&resp.body, "key_id")),
                    Ok(resp) => {
                        // While there is no primary the node fails closed, and says so.
                        assert_eq!(resp.status, 503, "{name}: {}", resp.dump());
                        assert_eq!(resp.body["error"], "unavailable", "{name}: {}", resp.dump());
                        None
                    }
                    Err(e) => panic!("{name} stopped answering: {e}"),
                };
                if acknowledged.is_none() {
                    thread::sleep(Duration::from_millis(20));
                }
                writes.lock().unwrap().push(Write { node: name.clone(), started, returned, acknowledged });
            }
        }));
    }

    thread::sleep(Duration::from_millis(1500));
    let died = Instant::now();
    pair.primary.kill().expect("kill the primary");
    pair.standby.promote().expect("promote the standby");
    let promoted = Instant::now();
    let resumed = |node: &str| {
        writes
            .lock()
            .unwrap()
            .iter()
            .any(|w| w.node == node && w.started > promoted && w.acknowledged.is_some())
    };
    poll(Duration::from_secs(30), "both nodes to write again after the promotion", || {
        (resumed("a") && resumed("b")).then_some(())
    });
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("load thread");
    }

    let writes = writes.lock().unwrap();
    let acknowledged: BTreeMap<&str, &Write> =
        writes.iter().filter_map(|w| w.acknowledged.as_deref().map(|id| (id, w))).collect();
    let before_death = writes.iter().filter(|w| w.acknowledged.is_some() && w.returned < died).count();
    assert!(before_death >= 5, "the load ran before the primary died: {before_death} writes");
    let first_write = writes
        .iter()
        .filter(|w| w.acknowledged.is_some() && w.started > died)
        .map(|w| w.returned)
        .min()
        .expect("a write sent after the primary died");
    println!(
        "failover: first write {} ms after primary death (promotion took {} ms; {} writes acknowledged before it, {} in all)",
        first_write.duration_since(died).as_millis(),
        promoted.duration_since(died).as_millis(),
        before_death,
        acknowledged.len()
    );

    // Every acknowledged write is in the promoted database, as every node sees it once it
    // has followed the new primary (a node's listener connection died with the old one, so
    // it follows on its next poll: allow it a few seconds).
    for node in &mut nodes {
        assert!(node.running(), "{} rode through the failover without a restart", node.name);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let listed = node.client().get("/v1/workspaces/load/keys", &ledger.admin_key);
            assert_eq!(listed.status, 200, "{}", listed.dump());
            let present: Vec<String> =
                listed.body["keys"].as_array().expect("keys").iter().map(|k| text(k, "key_id")).collect();
            let missing = acknowledged.iter().find(|(id, _)| !present.iter().any(|p| p == *id));
            let Some((id, write)) = missing else { break };
            assert!(
                std::time::Instant::now() < deadline,
                "{}: key {id} acknowledged by {} {} ms {} the primary died is lost",
                node.name,
                write.node,
                if write.returned < died { died - write.returned } else { write.returned - died }.as_millis(),
                if write.returned < died { "before" } else { "after" },
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let mut db = pair.standby.connect("failover").expect("connect to the promoted standby");
    let size: i64 = db.query_one("SELECT size FROM keyledger_head", &[]).expect("head").get(0);
    assert!(size as usize > acknowledged.len(), "the promoted database holds the log");

    let [a, b] = nodes;
    b.stop();
    let data_dir = a.data_dir.clone();
    a.stop();
    let run = log_verify(&data_dir);
    assert!(run.success(), "log verify on a's data dir:\n{}\n{}", run.stdout, run.stderr);
}
