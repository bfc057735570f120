//! Several engines (nodes, each with its own data dir) over one PostgreSQL database: one
//! history, revocation on every node, and the identity checks.
use keyledger_ledger::{Engine, EngineError};
use keyledger_pg::PgError;

mod support;

use support::{Ledger, admin, records, spec, verify, ws};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_interleaved_write_one_history() {
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let key = init.admin_key.expose().to_owned();

    let mut secrets = Vec::new();
    for round in 0..10 {
        let (node, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let caller = admin(node, &key).await;
        let (_, secret) =
            node.create(caller, ws("acme"), spec(&format!("k{round}"), &["read"])).await.unwrap();
        // Usable on the other node at once: a key it does not know yet makes it follow the
        // database before answering "unknown".
        assert_eq!(
            verify(other, secret.expose()).await,
            Some(true),
            "created on one node, valid on the other"
        );
        secrets.push(secret);
    }
    // Each node decides the other's keys once its writer has caught up with the database.
    for secret in &secrets {
        assert!(a.wait_for_projections(std::time::Duration::from_secs(5)).await);
        assert!(b.wait_for_projections(std::time::Duration::from_secs(5)).await);
        assert_eq!(verify(&a, secret.expose()).await, Some(true));
        assert_eq!(verify(&b, secret.expose()).await, Some(true));
    }
    assert!(a.wait_for_projections(std::time::Duration::from_secs(5)).await);
    assert!(b.wait_for_projections(std::time::Duration::from_secs(5)).await);

    let size: i64 = ledger.sql(|c| c.query_one("SELECT size FROM keyledger_head", &[]).unwrap().get(0));
    assert_eq!(a.log().len(), size as u64);
    assert_eq!(b.log().len(), size as u64);
    assert_eq!(records(&a), records(&b), "both nodes hold the same events at the same seqs");
    let stored: Vec<Vec<u8>> = ledger.sql(|c| {
        c.query("SELECT record FROM keyledger_events ORDER BY seq", &[])
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(records(&a), stored, "the mirrors are the database's log");
    let root: Vec<u8> = ledger.sql(|c| c.query_one("SELECT root FROM keyledger_head", &[]).unwrap().get(0));
    assert_eq!(a.log().root_at(size as u64).unwrap().to_vec(), root);
    assert_eq!(b.log().root_at(size as u64).unwrap().to_vec(), root);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_returned_on_one_node_denies_the_next_verify_on_the_other() {
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let caller = admin(&a, init.admin_key.expose()).await;
    let (key, secret) = a.create(caller.clone(), ws("acme"), spec("k", &["read"])).await.unwrap();
    assert!(b.wait_for_projections(std::time::Duration::from_secs(5)).await);
    assert_eq!(verify(&b, secret.expose()).await, Some(true));
    for _ in 0..20 {
        assert_eq!(verify(&b, secret.expose()).await, Some(true));
    }
    a.revoke(caller, key.key_id, None).await.unwrap();
    // No waiting, no follow: B's writer applies the revoke before deciding the verify.
    assert_eq!(verify(&b, secret.expose()).await, Some(false), "the revoke holds on the other node at once");
    a.shutdown().await;
    b.shutdown().await;
}

/// An admin request is authenticated against the database's state, not the node's copy: an
/// admin key revoked on one node is refused by the other as soon as the revoke returned,
/// and one created there is accepted at once (20 rounds: the other node's listener may
/// follow first, but not every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_revoked_on_one_node_is_refused_by_the_other_at_once() {
    use keyledger_ledger::{AuthError, LedgerError};
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let root = admin(&a, init.admin_key.expose()).await;
    for round in 0..20 {
        let (record, secret) = a
            .create(root.clone(), ws("_ledger"), spec(&format!("reader-{round}"), &["ledger:keys:read"]))
            .await
            .unwrap();
        let on_b = b.authenticate_admin(secret.expose()).await;
        assert_eq!(on_b.map(|k| k.key_id), Ok(record.key_id), "round {round}: created on A, known on B");
        a.revoke(root.clone(), record.key_id, None).await.unwrap();
        assert_eq!(
            b.authenticate_admin(secret.expose()).await.map(|k| k.key_id),
            Err(LedgerError::Unauthorized(AuthError::Revoked)),
            "round {round}: revoked on A, refused by B"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A lookup by secret after `follow` (what leak reports do) finds a key issued on another
/// node at once, not after this node caught up by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_issued_on_one_node_is_found_by_a_lookup_on_the_other_after_follow() {
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let root = admin(&a, init.admin_key.expose()).await;
    for round in 0..20 {
        let (record, secret) =
            a.create(root.clone(), ws("acme"), spec(&format!("leaky-{round}"), &["read"])).await.unwrap();
        b.follow().await.unwrap();
        let found = b.find_by_secret(secret.expose()).map(|k| k.key_id);
        assert_eq!(found, Some(record.key_id), "round {round}: issued on A, found on B");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_imported_on_one_node_is_valid_on_the_other_at_once() {
    use keyledger_core::{ForeignAlgorithm, ForeignHash};
    use keyledger_ledger::import::ImportSpec;
    use sha2::{Digest, Sha256};
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let caller = admin(&a, init.admin_key.expose()).await;
    let import = |name: &str, secret: &str| ImportSpec {
        key: spec(name, &["read"]),
        foreign: ForeignHash { algorithm: ForeignAlgorithm::Sha256, digest: Sha256::digest(secret).into() },
        external_id: None,
        allowed_sources: None,
    };
    // B has seen no imported key yet, then one, but not the next: each time a foreign
    // secret it cannot place makes it follow the database before answering.
    for (name, secret) in [("first", "unkey_3ZbV8vQeWm9kq7LrT2pNxYc"), ("second", "sk_test_51HxQ2eLkd8Vb0")] {
        a.import(caller.clone(), ws("acme"), vec![import(name, secret)], None).await.unwrap();
        assert_eq!(verify(&b, secret).await, Some(true), "{name}: imported on A, valid on B");
    }
    assert_eq!(verify(&b, "unkey_never_imported").await, None, "a foreign secret nobody imported");
    a.shutdown().await;
    b.shutdown().await;
}

/// A rate limit holds across the nodes: each counts the others' verifications, read from
/// the log before it decides (docs/api.md, "Rate limits").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_counts_the_verifications_of_every_node() {
    use keyledger_core::{DenyReason, RateLimit, UsageContext};
    use keyledger_ledger::{VerifyOutcome, VerifyRequirements};
    let ledger = Ledger::new();
    let (init, a, b) = ledger.two_nodes();
    let caller = admin(&a, init.admin_key.expose()).await;
    let (key, secret) = a.create(caller.clone(), ws("acme"), spec("k", &["read"])).await.unwrap();
    // A 30-day window aligned to the epoch: no run crosses its end by chance.
    let limit =
        RateLimit { name: "api".into(), limit: 4, duration: 30 * 86_400 * 1_000_000, auto_apply: true };
    a.set_ratelimits(caller, ws("acme"), Some(key.key_id), vec![limit]).await.unwrap();
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert_eq!(verify(node, secret.expose()).await, Some(true), "verification {i} is within the limit");
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let outcome = node.verify(
            support::rid(),
            secret.expose(),
            VerifyRequirements::default(),
            UsageContext::default(),
        );
        match outcome.await.unwrap() {
            VerifyOutcome::Known(verdict) => {
                assert_eq!(verdict.outcome, Err(DenyReason::RateLimited("api".into())), "on {name}");
                let statuses = verdict.ratelimits.expect("the limit's status");
                assert_eq!(statuses[0].remaining, 0, "on {name}");
            }
            _ => panic!("the key is known on {name}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn a_node_with_another_pepper_or_signing_key_is_refused_naming_which() {
    let ledger = Ledger::new();
    ledger.init("a");
    let other = ledger.dir("other");
    Engine::init(&other, keyledger_ledger::EngineOptions::default()).unwrap();

    let wrong_pepper = ledger.node_dir("wrong-pepper", "a");
    std::fs::remove_file(wrong_pepper.join("pepper.key")).unwrap();
    std::fs::copy(other.join("pepper.key"), wrong_pepper.join("pepper.key")).unwrap();
    let error = Engine::open(&wrong_pepper, ledger.options()).err().expect("a wrong pepper is refused");
    assert!(matches!(error, EngineError::Store(PgError::PepperMismatch)), "{error}");
    assert!(error.to_string().contains("pepper"), "{error}");

    let wrong_key = ledger.node_dir("wrong-key", "a");
    std::fs::remove_file(wrong_key.join("signing.key")).unwrap();
    std::fs::copy(other.join("signing.key"), wrong_key.join("signing.key")).unwrap();
    let error = Engine::open(&wrong_key, ledger.options()).err().expect("a wrong signing key is refused");
    assert!(matches!(error, EngineError::Store(PgError::SigningKeyMismatch)), "{error}");
    assert!(error.to_string().contains("signing key"), "{error}");

    // An embedded ledger never becomes a node (its log would be taken for a mirror).
    let error = Engine::open(&other, ledger.options()).err().expect("an embedded data dir is refused");
    assert!(error.to_string().contains("store copy"), "{error}");
    // And a node never opens without its store.
    let error = Engine::open(&ledger.dir("a"), keyledger_ledger::EngineOptions::default()).err().unwrap();
    assert!(error.to_string().contains("--store"), "{error}");
}

#[test]
fn init_on_an_initialised_database_refuses_and_changes_nothing() {
    let ledger = Ledger::new();
    ledger.init("a");
    let count = |ledger: &Ledger| -> i64 {
        ledger.client().query_one("SELECT count(*) FROM keyledger_events", &[]).unwrap().get(0)
    };
    let before = count(&ledger);
    let identity = keyledger_pg::identity::read(&mut ledger.client()).unwrap();
    let error = Engine::init(&ledger.dir("again"), ledger.options()).expect_err("refused");
    assert!(matches!(error, EngineError::Store(PgError::AlreadyInitialised)), "{error}");
    assert!(!ledger.dir("again").exists(), "no data dir was made");
    assert_eq!(count(&ledger), before);
    assert_eq!(keyledger_pg::identity::read(&mut ledger.client()).unwrap(), identity);
}

#[test]
fn a_database_with_a_newer_schema_is_refused() {
    let ledger = Ledger::new();
    ledger.init("a");
    let newer = keyledger_pg::schema::SCHEMA_VERSION + 1;
    ledger.client().execute("UPDATE keyledger_schema_version SET version = $1", &[&newer]).unwrap();
    let error = Engine::open(&ledger.dir("a"), ledger.options()).err().expect("refused");
    assert!(
        matches!(error, EngineError::Store(PgError::NewerSchema { found, .. }) if found == newer),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade keyledger"), "{error}");
}
