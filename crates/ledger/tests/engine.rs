//! Engine behaviour through its public API, on real data dirs.

use keyledger_core::{DenyReason, Timestamp, UsageContext};
use keyledger_ledger::engine::projection_list;
use keyledger_ledger::projection::{ProjectionError, Projections};
use keyledger_ledger::{
    Caller, Engine, EngineOptions, Expiry, KeyStatus, LedgerError, VerifyOutcome, VerifyRequirements,
};
use std::sync::Arc;

mod support;

use support::{init, rid, spec, ws};

async fn verify(engine: &Engine, secret: &str, scopes: &[&str]) -> Result<(), Option<DenyReason>> {
    let wants =
        VerifyRequirements { scopes: scopes.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    match engine.verify(rid(), secret, wants, UsageContext::default()).await.unwrap() {
        VerifyOutcome::Malformed | VerifyOutcome::Unknown => Err(None),
        VerifyOutcome::Known(verdict) => verdict.outcome.map_err(Some),
    }
}

#[test]
fn init_refuses_an_initialised_or_non_empty_dir_and_changes_nothing() {
    let dir = support::DataDir::new();
    let first = Engine::init(&dir, EngineOptions::default()).unwrap();
    assert!(first.admin_key.expose().starts_with("kl_live_"));
    let listing = |p: &std::path::Path| {
        let mut names: Vec<_> = walk(p);
        names.sort();
        names
    };
    let before = listing(dir.root());
    assert!(matches!(
        Engine::init(&dir, EngineOptions::default()),
        Err(keyledger_ledger::EngineError::DataDir(_))
    ));
    assert_eq!(listing(dir.root()), before, "a refused init changed files");

    let other = dir.root().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "x").unwrap();
    assert!(Engine::init(&other, EngineOptions::default()).is_err());
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);

    use std::os::unix::fs::PermissionsExt;
    for secret_file in ["signing.key", "pepper.key"] {
        let mode = std::fs::metadata(dir.join(secret_file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret_file}");
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push((entry.path().display().to_string(), meta.len()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_verify_rotate_revoke_and_restart() {
    let (dir, init, engine) = support::ledger();
    let admin = engine.authenticate_admin(init.admin_key.expose()).await.unwrap();
    let caller = Caller { actor: keyledger_core::Actor::Admin(admin.key_id), request_id: rid() };

    let (key, secret) =
        engine.create(caller.clone(), ws("acme"), spec("ci", &["read", "write"])).await.unwrap();
    assert_eq!(verify(&engine, secret.expose(), &["read"]).await, Ok(()));
    assert_eq!(
        verify(&engine, secret.expose(), &["admin"]).await,
        Err(Some(DenyReason::MissingScope("admin".into())))
    );
    assert_eq!(verify(&engine, "kl_live_nope", &[]).await, Err(None));
    // A non-admin key cannot authenticate as admin.
    assert!(engine.authenticate_admin(secret.expose()).await.is_err());

    let (new, old, new_secret) = engine.rotate(caller.clone(), key.key_id, 0).await.unwrap();
    assert_eq!(old.status(Timestamp::now()), KeyStatus::Revoked);
    assert_eq!(new.rotated_from, Some(key.key_id));
    assert_eq!(old.rotated_to, Some(new.key_id));
    assert_eq!(verify(&engine, secret.expose(), &[]).await, Err(Some(DenyReason::Revoked)));
    assert_eq!(verify(&engine, new_secret.expose(), &["write"]).await, Ok(()));
    assert!(matches!(engine.rotate(caller.clone(), key.key_id, 0).await, Err(LedgerError::Conflict(_))));

    let revoked = engine.revoke(caller.clone(), new.key_id, Some("leak".into())).await.unwrap();
    let len_after_revoke = engine.log().len();
    let again = engine.revoke(caller.clone(), new.key_id, Some("other".into())).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    assert_eq!(engine.log().len(), len_after_revoke, "a repeated revoke appended");
    assert_eq!(verify(&engine, new_secret.expose(), &[]).await, Err(Some(DenyReason::Revoked)));
    let uses = engine.key(&key.key_id).unwrap().last_used.count;
    assert_eq!(uses, 1);
    assert!(engine.wait_for_projections(std::time::Duration::from_secs(5)).await);
    let events = engine.log().len();
    engine.shutdown().await;
    drop(engine);

    // Restart: state comes back from the projection and equals a full replay.
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    assert_eq!(engine.log().len(), events);
    assert_eq!(engine.key(&new.key_id).unwrap().status(Timestamp::now()), KeyStatus::Revoked);
    assert_eq!(verify(&engine, new_secret.expose(), &[]).await, Err(Some(DenyReason::Revoked)));
    let checkpoint = engine.log().latest_checkpoint().unwrap();
    assert_eq!(checkpoint.size, events, "clean shutdown signs a checkpoint of the whole log");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_projections_from_scratch_equals_the_incremental_state() {
    let (dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let mut secrets = Vec::new();
    for i in 0..20 {
        let mut s = spec(&format!("k{i}"), &["a", "b"]);
        if i % 3 == 0 {
            s.expiry = Expiry::In(3_600_000_000);
        }
        let (key, secret) =
            engine.create(caller.clone(), ws(if i % 2 == 0 { "even" } else { "odd" }), s).await.unwrap();
        secrets.push((key.key_id, secret));
    }
    for (i, (key_id, secret)) in secrets.iter().enumerate() {
        for _ in 0..(i % 4) {
            let _ = verify(&engine, secret.expose(), &["a"]).await;
        }
        if i % 5 == 0 {
            engine.revoke(caller.clone(), *key_id, None).await.unwrap();
        }
        if i % 5 != 0 && i % 7 == 1 {
            engine.rotate(caller.clone(), *key_id, 3_600_000_000).await.unwrap();
        }
    }
    // Webhook configurations, including a reconfiguration (which keeps `since_seq`) and a
    // disabling, rebuild like everything else.
    // A name, not a loopback address: those are refused (docs/webhooks.md, "Destinations").
    let hook = |n: u8| format!("http://hooks.invalid:9/{n}");
    let (first, _) = engine.set_webhook(caller.clone(), ws("even"), hook(1), vec![]).await.unwrap();
    let (second, _) =
        engine.set_webhook(caller.clone(), ws("even"), hook(2), vec!["key.revoked".into()]).await.unwrap();
    assert_eq!((second.since_seq, first.since_seq), (first.set_seq, first.set_seq));
    assert!(second.set_seq > first.set_seq);
    engine.set_webhook(caller.clone(), ws("odd"), hook(3), vec![]).await.unwrap();
    assert!(!engine.disable_webhook(caller.clone(), ws("odd")).await.unwrap().enabled);
    engine.revoke_all(caller.clone(), ws("odd"), Some("drill".into())).await.unwrap();
    engine.shutdown().await;
    drop(engine);

    let (incremental, rebuilt, log_len) = support::persisted_and_rebuilt(&dir);
    assert_eq!(rebuilt.applied, log_len);
    assert_eq!(rebuilt, incremental);
    assert!(incremental.workspace_keys(&ws("odd")).all(|k| k.is_revoked()));
    assert!(incremental.workspace_keys(&ws("odd")).count() > 0);
    assert_eq!(incremental.webhooks.len(), 2);
    assert!(incremental.webhooks[&ws("even")].enabled && !incremental.webhooks[&ws("odd")].enabled);
    assert_eq!(incremental.webhooks[&ws("even")].url, hook(2));
}

#[test]
fn init_takes_a_chosen_checkpoint_origin_and_refuses_a_bad_one() {
    let dir = support::DataDir::new();
    let bad = Engine::init_with_origin(&dir, EngineOptions::default(), Some("has space"));
    assert!(bad.is_err());
    assert!(!dir.exists(), "a refused init created the data dir");
    let outcome = Engine::init_with_origin(&dir, EngineOptions::default(), Some("example.com/keys")).unwrap();
    assert!(outcome.log_public_key.starts_with("example.com/keys+"), "{}", outcome.log_public_key);
    let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
    let note = engine.log().latest_checkpoint().unwrap().note;
    assert_eq!(note.lines().next(), Some("example.com/keys"));
    engine.shutdown_blocking();
}

/// After a storage error redb refuses every later call until reopened: the projector
/// reopens the database (waiting for readers still holding the failed one), keeps what was
/// committed, catches up only to a given (durable) length, and refuses a batch that would
/// leave a gap.
#[test]
fn projections_reopen_in_place_catch_up_to_a_bound_and_refuse_gaps() {
    let dir = support::DataDir::new();
    let outcome = init(&dir);
    {
        let engine = Engine::open(&dir, EngineOptions::default()).unwrap();
        let caller = Caller { actor: keyledger_core::Actor::Admin(outcome.admin_key_id), request_id: rid() };
        for name in ["a", "b", "c"] {
            engine.create_blocking(caller.clone(), ws("acme"), spec(name, &["read"])).unwrap();
        }
        engine.shutdown_blocking();
    }
    let log = {
        let secrets = keyledger_ledger::datadir::load(&dir).unwrap();
        keyledger_log::Log::open(keyledger_log::LogConfig {
            dir: dir.join("log"),
            storage: keyledger_log::storage::OsStorage::shared(),
            signer: secrets.signer,
            origin: secrets.origin,
            tree_hash: secrets.tree_hash,
        })
        .unwrap()
    };
    let reader = log.reader();
    assert_eq!(reader.len(), 4);

    let mut projections = Projections::open(&dir.root().join("p.redb"), projection_list()).unwrap();
    assert_eq!(projections.catch_up_to(&reader, 1).unwrap(), 1, "stops at the bound");
    assert_eq!(projections.cursor().unwrap(), 1);
    let before = projections.load_state().unwrap();

    let handle = projections.database();
    let held = handle.get().unwrap();
    assert!(
        matches!(projections.reopen(std::time::Duration::from_millis(50)), Err(ProjectionError::Reopening)),
        "a reader still holds the old database"
    );
    assert!(Arc::ptr_eq(&handle.get().unwrap(), &held), "given back to readers");
    drop(held);
    // A weak handle keeps the old allocation's address from being reused by the new one.
    let old = Arc::downgrade(&handle.get().unwrap());
    projections.reopen(std::time::Duration::from_secs(5)).unwrap();
    assert!(old.upgrade().is_none(), "the old database was closed");
    assert!(
        !std::ptr::eq(Arc::as_ptr(&handle.get().unwrap()), old.as_ptr()),
        "readers see the reopened database"
    );
    assert_eq!(projections.load_state().unwrap(), before, "committed rows survive the reopen");

    let mut ahead = reader.event(reader.len() - 1).unwrap();
    ahead.seq = 5;
    assert!(matches!(projections.apply(&[ahead]), Err(ProjectionError::Gap { expected: 1, first: 5, .. })));
    assert_eq!(projections.catch_up(&reader).unwrap(), reader.len());
}

/// With a projector queue of one batch, most of the writer's batches are skipped under
/// concurrent verifications; the projector reads them from the log, so the audit indexes
/// still count every use exactly once (and memory stays bounded whatever the load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_that_falls_behind_reads_the_skipped_batches_from_the_log() {
    falls_behind_and_reads_back(EngineOptions { projector_queue_batches: 1, ..EngineOptions::default() })
        .await;
}

/// The same with a queue of a few events (and many batches): a batch that would take the
/// queue past its events is skipped, whatever the number of batches queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_queue_full_of_events_skips_batches_that_are_read_from_the_log() {
    falls_behind_and_reads_back(EngineOptions { projector_queue_events: 3, ..EngineOptions::default() })
        .await;
}

async fn falls_behind_and_reads_back(options: EngineOptions) {
    let dir = support::DataDir::new();
    init(&dir);
    let engine = Arc::new(Engine::open(&dir, options).unwrap());
    let mut keys = Vec::new();
    for i in 0..4 {
        keys.push(engine.create(Caller::system(), ws("acme"), spec(&format!("k{i}"), &["a"])).await.unwrap());
    }
    // Whether the one-batch queue overflows depends on thread timing (a fast projector on an
    // idle machine can keep up with one round), so rounds repeat until the writer has skipped
    // a handoff; every use of every round must then be counted exactly once.
    let skipped = || engine.writer_stats().handoffs_skipped.load(std::sync::atomic::Ordering::Relaxed);
    let mut rounds = 0;
    while skipped() == 0 && rounds < 40 {
        rounds += 1;
        let mut tasks = Vec::new();
        for task in 0..16 {
            let (engine, secret) = (engine.clone(), keys[task % keys.len()].1.expose().to_owned());
            tasks.push(tokio::spawn(async move {
                for _ in 0..150 {
                    verify(&engine, &secret, &["a"]).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    assert!(skipped() > 0, "a small queue under 16 concurrent verifiers skipped nothing in {rounds} rounds");
    // The barrier returns once the projections reach the log's end, whether the last
    // batches came through the queue or (skipped) from the log.
    assert!(engine.wait_for_projections(std::time::Duration::from_secs(10)).await);
    for (key, _) in &keys {
        let report = engine.audit().compromise(key, None, None).unwrap();
        assert_eq!(report.uses.allowed, 600 * rounds, "uses of {} in the audit index", key.key_id);
    }
    engine.shutdown().await;
}

/// The nice value of each of this process's threads named `name` (its first 15 bytes, as
/// the kernel keeps it), from /proc.
#[cfg(target_os = "linux")]
fn thread_nice(name: &str) -> Vec<i32> {
    let comm: String = name.chars().take(15).collect();
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path();
            (std::fs::read_to_string(path.join("comm")).ok()?.trim_end() == comm).then_some(path)
        })
        .map(|path| {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            // Fields after the parenthesised name; the nice value is field 19 of the line.
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            fields[16].parse().unwrap()
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_runs_at_the_background_priority_and_the_writer_does_not() {
    let (_dir, _, engine) = support::ledger();
    // Other tests of this binary run engines too: every one's threads are checked. A
    // projector lowers itself as it starts: give it a moment.
    let lowered = |nice: Vec<i32>| {
        !nice.is_empty() && nice.iter().all(|n| *n == keyledger_ledger::background::BACKGROUND_NICE)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !lowered(thread_nice("keyledger-projector")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", thread_nice("keyledger-projector"));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let writers = thread_nice("keyledger-log-writer");
    assert!(
        !writers.is_empty() && writers.iter().all(|n| *n == 0),
        "on every verification's path: {writers:?}"
    );
    engine.shutdown().await;
}

/// A workspace's `max_lifetime` counts from a key's creation (as the compliance report
/// measures it), so an update cannot stretch a key past it by setting a later expiry that
/// is within the maximum from now; the refused update appends nothing. Shortening a key,
/// or giving one without expiry an expiry, is always allowed, even for a key issued before
/// the policy and already older than the maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_cannot_stretch_a_key_past_the_policys_max_lifetime() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let mut brief = spec("brief", &["read"]);
    brief.expiry = Expiry::In(60_000_000);
    let (key, _) = engine.create(caller.clone(), ws("acme"), brief).await.unwrap();
    // Issued before the policy, without an expiry.
    let (old, _) = engine.create(caller.clone(), ws("acme"), spec("old", &["read"])).await.unwrap();
    let mut policy = engine.policy(&ws("acme"));
    policy.max_lifetime = Some(60_100_000);
    engine.set_policy(caller.clone(), ws("acme"), policy).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    // 59.5 s from now is within the 60.1 s maximum of now, but (1.2 s having passed) more
    // than it after the key's creation, and later than its expiry.
    let later = Timestamp(Timestamp::now().micros() + 59_500_000);
    let expire_at =
        |at: Timestamp| keyledger_ledger::KeyChanges { expires_at: Some(Some(at)), ..Default::default() };
    let len = engine.log().len();
    let refused = engine.update(caller.clone(), key.key_id, expire_at(later)).await;
    assert!(
        matches!(&refused, Err(LedgerError::Conflict(m)) if m.contains("max_lifetime") && m.contains("creation")),
        "{refused:?}"
    );
    assert_eq!(engine.log().len(), len, "a refused update appends nothing");
    let forever = keyledger_ledger::KeyChanges { expires_at: Some(None), ..Default::default() };
    assert!(engine.update(caller.clone(), key.key_id, forever).await.is_err(), "nor may it lose its expiry");

    // Shortening, and a first expiry for a key issued without one, make a key safer.
    let sooner = Timestamp(key.expires_at.unwrap().micros() - 100_000);
    engine.update(caller.clone(), key.key_id, expire_at(sooner)).await.unwrap();
    engine.update(caller.clone(), old.key_id, expire_at(later)).await.unwrap();
    engine.shutdown().await;
}

/// A rotation's successor inherits the old key's lifetime, and an overlap extends nothing
/// past the latest instant a view can write: both stay at or before `Timestamp::LATEST`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_never_gives_an_expiry_past_the_latest_instant() {
    let (_dir, _, engine) = support::ledger();
    let caller = Caller::system();
    let mut last = spec("last", &["read"]);
    last.expiry = Expiry::At(Timestamp::LATEST);
    let (key, _) = engine.create(caller.clone(), ws("acme"), last).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (new, old, _) = engine.rotate(caller.clone(), key.key_id, i64::MAX / 2).await.unwrap();
    assert_eq!(new.expires_at, Some(Timestamp::LATEST));
    assert!(old.expires_at.is_some_and(|at| at <= Timestamp::LATEST), "{:?}", old.expires_at);
    engine.shutdown().await;
}
