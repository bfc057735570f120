//! Nodes that append nothing follow the log; checkpoints signed by racing nodes never give
//! two roots for one size.
use keyledger_ledger::{Caller, Engine, EngineOptions};
use keyledger_log::WriterOptions;
use std::time::{Duration, Instant};

mod support;

use support::{Ledger, admin, rid, spec, verify, ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_appends_nothing_follows_the_log_and_its_audit_sees_the_other_nodes_writes() {
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let caller = admin(&a, init.admin_key.expose()).await;
    let request = rid();
    let creator = Caller { request_id: request, ..caller };
    a.create(creator, ws("acme"), spec("k", &["read"])).await.unwrap();
    // Nobody calls B: its listener (or its poll) makes it follow by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.log().len() < a.log().len() {
        assert!(Instant::now() < deadline, "B did not follow A within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.log().latest_checkpoint().is_none_or(|c| c.size <= b.log().len()));

    // An audit read on B sees a write that returned on A just before it, without waiting.
    let second = rid();
    let creator = Caller { request_id: second, ..admin(&a, init.admin_key.expose()).await };
    a.create(creator, ws("acme"), spec("k2", &["read"])).await.unwrap();
    assert!(b.wait_for_projections(Duration::from_secs(5)).await);
    let events = b.audit().request_events(&second.to_string()).unwrap();
    assert_eq!(events.len(), 1, "B's audit index holds A's create");
    assert_eq!(b.audit().request_events(&request.to_string()).unwrap().len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_signing_checkpoints_concurrently_never_give_two_roots_for_one_size() {
    let ledger = Ledger::new();
    let init = ledger.init("a");
    let options = EngineOptions {
        writer: WriterOptions {
            checkpoint_every_events: 1,
            checkpoint_every: Duration::from_millis(1),
            ..WriterOptions::default()
        },
        ..ledger.options()
    };
    let open = |dir: std::path::PathBuf| {
        let options = options.clone();
        std::thread::spawn(move || Engine::open(&dir, options).unwrap()).join().unwrap()
    };
    let a = std::sync::Arc::new(open(ledger.dir("a")));
    let b = std::sync::Arc::new(open(ledger.node_dir("b", "a")));
    let key = init.admin_key.expose().to_owned();
    let (_, secret) = a.create(admin(&a, &key).await, ws("acme"), spec("k", &["read"])).await.unwrap();
    let secret = secret.expose().to_owned();
    let mut tasks = Vec::new();
    for node in [a.clone(), b.clone()] {
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..40 {
                assert_eq!(verify(&node, &secret).await, Some(true));
                if round % 4 == 0 {
                    let checkpoint = node.checkpoint_now().await.unwrap();
                    assert!(checkpoint.size <= node.log().len());
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rows: Vec<(i64, Vec<u8>, String)> = ledger.sql(|c| {
        c.query("SELECT size, root, note FROM keyledger_checkpoints ORDER BY size", &[])
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    });
    assert!(rows.len() >= 5, "both nodes signed: {} checkpoints", rows.len());
    assert!(b.wait_for_projections(Duration::from_secs(5)).await);
    assert!(a.wait_for_projections(Duration::from_secs(5)).await);
    let key = a.public_key().clone();
    for (size, root, note) in &rows {
        let opened = keyledger_verify::note::open_checkpoint(note, &key).unwrap();
        assert_eq!((opened.size, opened.root.to_vec()), (*size as u64, root.clone()));
        // Every checkpoint is of the one tree both nodes hold.
        assert_eq!(a.log().root_at(*size as u64).unwrap().to_vec(), *root, "size {size}");
        assert_eq!(b.log().root_at(*size as u64).unwrap().to_vec(), *root, "size {size}");
    }
    a.shutdown().await;
    b.shutdown().await;
}
