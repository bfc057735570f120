//! The database stopped: appends and verifications fail closed (503), reads keep working
//! from the node's mirror, and the node recovers by itself when the database returns.
use keyledger_core::UsageContext;
use keyledger_ledger::{LedgerError, VerifyOutcome, VerifyRequirements};
use std::time::{Duration, Instant};

mod support;

use support::{Ledger, admin, rid, spec, verify, ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_closed_and_the_node_recovers_by_itself() {
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let key = init.admin_key.expose().to_owned();
    let (record, secret) = a.create(admin(&a, &key).await, ws("acme"), spec("k", &["read"])).await.unwrap();
    assert_eq!(verify(&b, secret.expose()).await, Some(true));
    let acknowledged = a.log().len().max(b.log().len());
    let lengths = [a.log().len(), b.log().len()];
    let callers = [admin(&a, &key).await, admin(&b, &key).await];

    std::thread::scope(|s| s.spawn(|| ledger.cluster.stop().unwrap()).join().unwrap());
    for ((node, length), caller) in [&a, &b].into_iter().zip(lengths).zip(callers) {
        let answer =
            node.verify(rid(), secret.expose(), VerifyRequirements::default(), UsageContext::default()).await;
        assert!(matches!(answer, Err(LedgerError::Unavailable(_))), "verify fails closed: {answer:?}");
        let answer = node.revoke(caller, record.key_id, None).await;
        assert!(matches!(answer, Err(LedgerError::Unavailable(_))), "revoke fails closed: {answer:?}");
        // So does an admin's authentication: whether the key was revoked meanwhile on
        // another node is not known.
        let answer = node.authenticate_admin(&key).await.map(|k| k.key_id);
        assert!(
            matches!(answer, Err(LedgerError::Unavailable(_))),
            "admin authentication fails closed: {answer:?}"
        );
        // The engine's own reads are served from the node's mirror and registry.
        assert!(node.key(&record.key_id).is_some());
        assert!(node.log().len() >= length);
        assert!(!node.is_healthy());
    }
    // Recovery attempts (100 ms, doubling) keep failing while the database is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!a.is_healthy() && !b.is_healthy(), "a node recovered without its database");

    std::thread::scope(|s| s.spawn(|| ledger.cluster.start_server().unwrap()).join().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in [&a, &b] {
        loop {
            let answer = node
                .verify(rid(), secret.expose(), VerifyRequirements::default(), UsageContext::default())
                .await;
            match answer {
                Ok(VerifyOutcome::Known(verdict)) => {
                    assert!(verdict.outcome.is_ok());
                    break;
                }
                Err(LedgerError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("the node did not recover within 20 s: {other:?}"),
            }
        }
        assert!(node.is_healthy());
    }
    // Nothing acknowledged was lost, and both nodes hold one history again.
    a.revoke(admin(&a, &key).await, record.key_id, None).await.unwrap();
    assert_eq!(verify(&b, secret.expose()).await, Some(false));
    assert!(a.wait_for_projections(Duration::from_secs(5)).await);
    assert!(b.wait_for_projections(Duration::from_secs(5)).await);
    let size: i64 = ledger.sql(|c| c.query_one("SELECT size FROM keyledger_head", &[]).unwrap().get(0));
    assert!(size as u64 >= acknowledged);
    assert_eq!(a.log().len(), size as u64);
    assert_eq!(b.log().len(), size as u64);
    assert_eq!(a.log().root_at(size as u64).unwrap(), b.log().root_at(size as u64).unwrap());
    a.shutdown().await;
    b.shutdown().await;
}

/// After a lost database, a node's rate-limit counters are recounted from the log (docs/
/// api.md, "Rate limits"): the spends made on both nodes before the outage still count
/// once the node has recovered, so the outage gives no key a fresh allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_node_still_counts_the_spends_made_before_the_outage() {
    use keyledger_core::{DenyReason, RateLimit};
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let caller = admin(&a, init.admin_key.expose()).await;
    let (key, secret) = a.create(caller.clone(), ws("acme"), spec("k", &["read"])).await.unwrap();
    // A 30-day window aligned to the epoch: no run crosses its end by chance.
    let limit =
        RateLimit { name: "api".into(), limit: 3, duration: 30 * 86_400 * 1_000_000, auto_apply: true };
    a.set_ratelimits(caller, ws("acme"), Some(key.key_id), vec![limit]).await.unwrap();
    assert_eq!(verify(&a, secret.expose()).await, Some(true));
    assert_eq!(verify(&b, secret.expose()).await, Some(true));

    std::thread::scope(|s| s.spawn(|| ledger.cluster.stop().unwrap()).join().unwrap());
    let answer =
        a.verify(rid(), secret.expose(), VerifyRequirements::default(), UsageContext::default()).await;
    assert!(matches!(answer, Err(LedgerError::Unavailable(_))), "{answer:?}");
    std::thread::scope(|s| s.spawn(|| ledger.cluster.start_server().unwrap()).join().unwrap());

    assert_eq!(decided("A", &a, secret.expose()).await, Ok(()), "the third of three");
    for (name, node) in [("A", &a), ("B", &b)] {
        assert_eq!(
            decided(name, node, secret.expose()).await,
            Err(DenyReason::RateLimited("api".into())),
            "on {name}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// `node`'s decision on `secret` once it has recovered (it retries with a growing pause).
async fn decided(
    name: &str,
    node: &keyledger_ledger::Engine,
    secret: &str,
) -> Result<(), keyledger_core::DenyReason> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match node.verify(rid(), secret, VerifyRequirements::default(), UsageContext::default()).await {
            Ok(VerifyOutcome::Known(verdict)) => return verdict.outcome,
            Err(LedgerError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("{name} did not recover within 20 s: {other:?}"),
        }
    }
}
