//! Importing keys by a foreign SHA-256 hash through the engine (docs/import.md): verify
//! with the secret, re-hash on first use, restart and rebuild, idempotent re-import (also
//! after the key's first use), all-or-nothing on a bad entry, and authority as create
//! checks it.

use keyledger_core::{
    Actor, DenyReason, ForeignAlgorithm, ForeignHash, KeyHash, Payload, Timestamp, UsageContext,
};
use keyledger_ledger::import::{ImportSpec, ImportedKey};
use keyledger_ledger::{Caller, Engine, Expiry, LedgerError, VerifyOutcome, VerifyRequirements};
use sha2::{Digest, Sha256};

mod support;

use support::{ledger, open, persisted_and_rebuilt, rid, spec, ws};

fn entry(name: &str, secret: &str) -> ImportSpec {
    ImportSpec {
        key: spec(name, &["read"]),
        foreign: ForeignHash { algorithm: ForeignAlgorithm::Sha256, digest: Sha256::digest(secret).into() },
        external_id: Some(format!("ext-{name}")),
        allowed_sources: None,
    }
}

async fn verify(engine: &Engine, secret: &str) -> Result<Result<(), DenyReason>, String> {
    match engine.verify(rid(), secret, VerifyRequirements::default(), UsageContext::default()).await.unwrap()
    {
        VerifyOutcome::Known(verdict) => Ok(verdict.outcome),
        other => Err(format!("{other:?}")),
    }
}

fn rehashed_events(engine: &Engine) -> Vec<(Actor, keyledger_core::KeyId)> {
    let log = engine.log();
    (0..log.len())
        .filter_map(|seq| match log.event(seq).unwrap() {
            e @ keyledger_core::Event { payload: Payload::KeyRehashed(_), .. } => {
                Some((e.actor.clone(), e.payload.key_id().unwrap()))
            }
            _ => None,
        })
        .collect()
}

const FOREIGN: &str = "unkey_3ZbV8vQeWm9kq7LrT2pNxYc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_key_verifies_with_its_secret_and_is_rehashed_on_first_use_only() {
    let (_dir, _, engine) = ledger();
    let caller = Caller::system();
    let answer = engine.import(caller.clone(), ws("acme"), vec![entry("a", FOREIGN)], None).await.unwrap();
    let [ImportedKey { record, existed: false }] = answer.as_slice() else { panic!("{answer:?}") };
    let key_id = record.key_id;
    assert_eq!(record.hint, "(imported)");
    let mark = engine.import_mark(&key_id).unwrap();
    assert!(mark.is_waiting() && mark.foreign.digest == <[u8; 32]>::from(Sha256::digest(FOREIGN)));
    assert!(
        !format!("{record:?}{mark:?}").contains(&hex::encode(Sha256::digest(FOREIGN))),
        "digest in Debug"
    );

    // A lookup of the secret (leak lookups, introspection's visibility check) finds it.
    assert_eq!(engine.find_by_secret(FOREIGN).map(|k| k.key_id), Some(key_id));
    // A wrong foreign-shaped secret is malformed, as before imports existed.
    assert!(verify(&engine, "unkey_wrong").await.is_err());
    let before = engine.log().len();
    assert_eq!(verify(&engine, FOREIGN).await, Ok(Ok(())));
    // `used`, then `key_rehashed` in the same batch.
    assert_eq!(engine.log().len(), before + 2);
    assert_eq!(rehashed_events(&engine), vec![(Actor::Verifier, key_id)]);
    let mark = engine.import_mark(&key_id).unwrap();
    assert!(!mark.is_waiting() && mark.rehashed_at.is_some());
    assert!(engine.registry().imported.is_waiting_empty(), "verification no longer looks the digest up");
    assert_eq!(engine.find_by_secret(FOREIGN).map(|k| k.key_id), Some(key_id), "by its keyed hash now");
    // Found by its keyed hash from now on; no second re-hash.
    assert_eq!(verify(&engine, FOREIGN).await, Ok(Ok(())));
    assert_eq!(rehashed_events(&engine).len(), 1);
    assert_eq!(engine.key(&key_id).unwrap().last_used.count, 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_use_does_not_rehash_and_a_revoked_imported_key_is_refused() {
    let (_dir, _, engine) = ledger();
    let caller = Caller::system();
    let keys = vec![entry("a", "foreign-a"), entry("b", "foreign-b")];
    let answer = engine.import(caller.clone(), ws("acme"), keys, None).await.unwrap();
    let wants = VerifyRequirements { scopes: vec!["write".into()], ..Default::default() };
    match engine.verify(rid(), "foreign-a", wants, UsageContext::default()).await.unwrap() {
        VerifyOutcome::Known(v) => assert_eq!(v.outcome, Err(DenyReason::MissingScope("write".into()))),
        other => panic!("{other:?}"),
    }
    assert!(rehashed_events(&engine).is_empty(), "only an allowed use re-hashes");
    engine.revoke(caller.clone(), answer[1].record.key_id, None).await.unwrap();
    assert_eq!(verify(&engine, "foreign-b").await, Ok(Err(DenyReason::Revoked)));
    assert!(rehashed_events(&engine).is_empty());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reimport_answers_the_existing_key_and_a_bad_entry_imports_nothing() {
    let (_dir, _, engine) = ledger();
    let caller = Caller::system();
    let first = engine.import(caller.clone(), ws("acme"), vec![entry("a", "s-a")], None).await.unwrap();
    let len = engine.log().len();
    // Same digest again, and twice in one request: one key, nothing appended.
    let again = engine
        .import(caller.clone(), ws("acme"), vec![entry("a2", "s-a"), entry("a3", "s-a")], None)
        .await
        .unwrap();
    assert!(again.iter().all(|k| k.existed && k.record.key_id == first[0].record.key_id));
    assert_eq!(engine.log().len(), len);
    // Another workspace may not take the same digest.
    let err = engine.import(caller.clone(), ws("beta"), vec![entry("x", "s-a")], None).await.unwrap_err();
    assert!(matches!(&err, LedgerError::Conflict(m) if m.starts_with("keys[0]")), "{err:?}");

    // Entry 1 of 3 expired: nothing at all is imported.
    let mut bad = entry("b", "s-b2");
    bad.key.expiry = Expiry::At(Timestamp(1));
    let keys = vec![entry("c", "s-c"), bad, entry("d", "s-d")];
    let err = engine.import(caller.clone(), ws("acme"), keys, None).await.unwrap_err();
    match err {
        LedgerError::Invalid(f) => assert_eq!(f.field, "keys[1].expires_at"),
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.log().len(), len);
    assert_eq!(engine.keys(&ws("acme"), |_| true).len(), 1);
    assert!(verify(&engine, "s-c").await.is_err(), "the good entry before the bad one was not imported");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_needs_the_same_authority_as_create() {
    let (_dir, outcome, engine) = ledger();
    let root = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let mut beta_admin = spec("beta-admin", &["ledger:keys:read", "ledger:keys:write"]);
    beta_admin.resources = vec!["beta".into()];
    beta_admin.expiry = Expiry::In(3_600_000_000);
    let (admin, _) =
        engine.create(root.clone(), keyledger_core::WorkspaceId::ledger(), beta_admin).await.unwrap();
    let narrow = Caller { actor: Actor::Admin(admin.key_id), request_id: rid() };
    // Outside its workspaces: as if the workspace did not exist for it.
    let err = engine.import(narrow.clone(), ws("acme"), vec![entry("a", "s-1")], None).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound(_)), "{err:?}");
    // Its own workspace, but a key without expiry outlives the caller: refused, as create.
    let err = engine.import(narrow.clone(), ws("beta"), vec![entry("a", "s-1")], None).await.unwrap_err();
    assert!(matches!(&err, LedgerError::Forbidden(m) if m.starts_with("keys[0]")), "{err:?}");
    let create = engine.create(narrow.clone(), ws("beta"), spec("c", &["read"])).await.unwrap_err();
    assert!(matches!(create, LedgerError::Forbidden(_)), "create refuses it the same way");
    let mut ok = entry("a", "s-1");
    ok.key.expiry = Expiry::In(60_000_000);
    engine.import(narrow.clone(), ws("beta"), vec![ok.clone()], None).await.unwrap();
    // Never into `_ledger`: an admin key's secret is keyledger's own.
    let err = engine.import(root, keyledger_core::WorkspaceId::ledger(), vec![entry("z", "s-z")], None).await;
    assert!(matches!(err, Err(LedgerError::Invalid(_))), "{err:?}");
    engine.shutdown().await;
}

/// A stopped ledger with two imported keys, `s-used` verified (re-hashed) and `s-waiting`
/// not: its data dir, the import's answer and the registry when it stopped.
async fn one_used_one_waiting() -> (support::DataDir, Vec<ImportedKey>, keyledger_ledger::LedgerState) {
    let (dir, _, engine) = ledger();
    let caller = Caller::system();
    let keys = vec![entry("used", "s-used"), entry("waiting", "s-waiting")];
    let answer = engine.import(caller.clone(), ws("acme"), keys, None).await.unwrap();
    assert_eq!(verify(&engine, "s-used").await, Ok(Ok(())));
    let live = engine.registry().clone();
    engine.shutdown().await;
    drop(engine);
    (dir, answer, live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_and_rehashes_survive_a_restart_and_a_rebuild_from_the_log() {
    let (dir, answer, live) = one_used_one_waiting().await;

    let (incremental, rebuilt, _) = persisted_and_rebuilt(&dir);
    assert_eq!(incremental, live, "the persisted projection holds the marks");
    assert_eq!(incremental.imported.waiting(), 1);
    assert_eq!(rebuilt, incremental, "a rebuild from the log gives the same state");

    let engine = open(&dir);
    let used = engine.import_mark(&answer[0].record.key_id).unwrap();
    assert!(!used.is_waiting() && used.rehashed_at.is_some());
    assert_ne!(engine.key(&answer[0].record.key_id).unwrap().hash, KeyHash([0; 32]));
    assert_eq!(verify(&engine, "s-used").await, Ok(Ok(())));
    assert_eq!(verify(&engine, "s-waiting").await, Ok(Ok(())));
    assert_eq!(rehashed_events(&engine).len(), 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_imported_again_after_its_key_was_used_answers_that_key() {
    let (dir, _, engine) = ledger();
    let caller = Caller::system();
    let first = engine.import(caller.clone(), ws("acme"), vec![entry("a", "s-a")], None).await.unwrap();
    let key_id = first[0].record.key_id;
    assert_eq!(verify(&engine, "s-a").await, Ok(Ok(())));
    assert_eq!(rehashed_events(&engine), vec![(Actor::Verifier, key_id)]);
    let len = engine.log().len();
    let again = engine.import(caller.clone(), ws("acme"), vec![entry("a2", "s-a")], None).await.unwrap();
    assert!(again[0].existed && again[0].record.key_id == key_id, "{again:?}");
    assert_eq!(engine.log().len(), len, "nothing appended");
    assert_eq!(engine.keys(&ws("acme"), |_| true).len(), 1);
    let err = engine.import(caller.clone(), ws("beta"), vec![entry("x", "s-a")], None).await.unwrap_err();
    assert!(matches!(&err, LedgerError::Conflict(_)), "another workspace may not take it: {err:?}");
    engine.shutdown().await;
    drop(engine);

    let (incremental, rebuilt, _) = persisted_and_rebuilt(&dir);
    assert_eq!(incremental.imported.imported_as(&Sha256::digest("s-a").into()), Some(key_id));
    assert_eq!(rebuilt.imported.imported_as(&Sha256::digest("s-a").into()), Some(key_id));
    let engine = open(&dir);
    let again = engine.import(caller, ws("acme"), vec![entry("a3", "s-a")], None).await.unwrap();
    assert!(again[0].existed && again[0].record.key_id == key_id, "after a restart too: {again:?}");
    assert_eq!(engine.log().len(), len);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_import_marks_of_the_older_layout_is_rebuilt_from_the_log_on_open() {
    let (dir, answer, live) = one_used_one_waiting().await;
    // What the older layout left: its marks' table (rows that did not keep a re-hashed key's
    // digest), and none of the current one.
    {
        let db = redb::Database::create(dir.join("projections.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new("registry_import_marks")).unwrap();
        let mut old =
            txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("registry_imported")).unwrap();
        old.insert(answer[0].record.key_id.as_bytes().as_slice(), [0u8; 4].as_slice()).unwrap();
        drop(old);
        txn.commit().unwrap();
    }
    let engine = open(&dir);
    assert_eq!(*engine.registry(), live, "rebuilt from the log");
    assert_eq!(engine.registry().imported.waiting(), 1);
    let again = engine.import(Caller::system(), ws("acme"), vec![entry("u2", "s-used")], None).await.unwrap();
    assert!(again[0].existed && again[0].record.key_id == answer[0].record.key_id, "{again:?}");
    assert_eq!(verify(&engine, "s-waiting").await, Ok(Ok(())));
    engine.shutdown().await;
    drop(engine);
    let (incremental, rebuilt, _) = persisted_and_rebuilt(&dir);
    assert_eq!(incremental, rebuilt);
}

/// An import follows the source allow-list rules of a create (docs/api.md, "Source
/// allow-lists"): an entry without a list takes the workspace default, one with a list
/// keeps it, and under `require_on_live` a live entry without either refuses the whole
/// request (409, naming the entry) and appends nothing; the lists survive a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_takes_the_source_default_and_honours_the_requirement() {
    use keyledger_core::SourceNet;
    use keyledger_core::sources::parse_sources;
    let nets = |list: &[&str]| -> Vec<SourceNet> { parse_sources(list).unwrap() };
    let (dir, _, engine) = ledger();
    let caller = Caller::system();
    let require = |default: &[&str]| keyledger_ledger::state::SourcePolicy {
        default_sources: nets(default),
        require_on_live: true,
    };
    let policy = engine.policy(&ws("acme"));
    engine
        .set_policy_with_sources(caller.clone(), ws("acme"), policy, Some(require(&["10.0.0.0/8"])))
        .await
        .unwrap();

    let mut own = entry("own", "s-own");
    own.allowed_sources = Some(nets(&["192.0.2.0/24"]));
    let answer = engine
        .import(caller.clone(), ws("acme"), vec![entry("default", "s-default"), own], None)
        .await
        .unwrap();
    let lists: Vec<_> = answer.iter().map(|k| k.record.allowed_sources.clone().unwrap()).collect();
    assert_eq!((lists[0].sources.clone(), lists[0].from_policy), (nets(&["10.0.0.0/8"]), true));
    assert_eq!((lists[1].sources.clone(), lists[1].from_policy), (nets(&["192.0.2.0/24"]), false));
    let from = |ip: &str| UsageContext { ip: Some(ip.parse().unwrap()), ..Default::default() };
    let outcome = |answer: VerifyOutcome| match answer {
        VerifyOutcome::Known(verdict) => verdict.outcome,
        other => panic!("{other:?}"),
    };
    let refused =
        engine.verify(rid(), "s-default", VerifyRequirements::default(), from("192.0.2.1")).await.unwrap();
    assert!(matches!(outcome(refused), Err(DenyReason::SourceNotAllowed(_))), "the default list holds");
    let allowed =
        engine.verify(rid(), "s-own", VerifyRequirements::default(), from("192.0.2.1")).await.unwrap();
    assert_eq!(outcome(allowed), Ok(()));

    // No default, a requirement: a live entry without a list refuses the request.
    let policy = engine.policy(&ws("acme"));
    engine.set_policy_with_sources(caller.clone(), ws("acme"), policy, Some(require(&[]))).await.unwrap();
    let len = engine.log().len();
    let mut listed = entry("listed", "s-listed");
    listed.allowed_sources = Some(nets(&["10.0.0.1"]));
    let keys = vec![listed, entry("bare", "s-bare")];
    let err = engine.import(caller.clone(), ws("acme"), keys, None).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::Conflict(m) if m.starts_with("keys[1]") && m.contains("allowed_sources")),
        "{err:?}"
    );
    assert_eq!(engine.log().len(), len, "nothing appended");
    let mut test_env = entry("test-env", "s-test");
    test_env.key.environment = keyledger_core::Environment::Test;
    engine.import(caller.clone(), ws("acme"), vec![test_env], None).await.unwrap();

    let live = engine.registry().clone();
    engine.shutdown().await;
    drop(engine);
    let (incremental, rebuilt, _) = persisted_and_rebuilt(&dir);
    assert_eq!(incremental, live);
    assert_eq!(rebuilt, incremental, "a rebuild from the log gives the same lists");
}
