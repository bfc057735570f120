//! Property test of the authority rule (docs/security.md, "Who may act on which key").
//!
//! proptest draws admin keys (random subsets of the five admin scopes, random resources
//! among `[]`, `_ledger` and two workspaces, random expiries) issued by the init key, then
//! random commands (create, rotate, update, disable, enable, revoke, revoke-all) by random
//! ones of them on random keys, against a real engine. After every command, whatever it
//! answered, the registry is compared with the one before it:
//!
//! * every key that is new or changed was within the caller's power: the caller held the
//!   write scopes, covers the key's workspace and, for `_ledger` keys, holds every scope the
//!   key holds (before and after) and covers its resources;
//! * no key got an expiry later than both its previous one and the caller's own;
//! * at least one active key without expiry still holds every admin scope over all
//!   workspaces (a key that will expire, e.g. one in a rotation overlap, is no survivor:
//!   once it lapses nothing could act).

use keyledger_core::{Actor, KeyId, Timestamp, WorkspaceId};
use keyledger_ledger::{
    ADMIN_SCOPES, Caller, Engine, Expiry, KeyChanges, KeyRecord, KeySpec, KeyStatus, LedgerError,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;

mod support;

use support::rid;

const MINUTE: i64 = 60 * 1_000_000;
const WORKSPACES: [&str; 3] = ["_ledger", "acme", "beta"];
/// Resource lists a `_ledger` key can have (empty = every workspace).
const RESOURCES: [&[&str]; 5] = [&[], &["_ledger"], &["acme"], &["_ledger", "acme"], &["beta"]];
/// Expiries in minutes from now; `None` = never.
const EXPIRIES: [Option<i64>; 5] = [None, Some(30), Some(60), Some(120), Some(180)];

#[derive(Clone, Debug)]
struct AdminKey {
    scopes: Vec<usize>,
    resources: usize,
    expiry: usize,
}

#[derive(Clone, Debug)]
enum Op {
    Create { ws: usize, scopes: Vec<usize>, resources: usize, expiry: usize },
    Rotate { overlap_minutes: i64 },
    Update { expiry: Option<usize>, scopes: Option<Vec<usize>>, resources: Option<usize> },
    Disable,
    Enable,
    Revoke,
    RevokeAll { ws: usize },
}

#[derive(Clone, Debug)]
struct Step {
    caller: prop::sample::Index,
    target: prop::sample::Index,
    op: Op,
}

fn scope_set() -> impl Strategy<Value = Vec<usize>> {
    proptest::sample::subsequence((0..ADMIN_SCOPES.len()).collect::<Vec<_>>(), 0..=ADMIN_SCOPES.len())
}

fn admin_key() -> impl Strategy<Value = AdminKey> {
    (scope_set(), 0..RESOURCES.len(), 0..EXPIRIES.len()).prop_map(|(scopes, resources, expiry)| AdminKey {
        scopes,
        resources,
        expiry,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..WORKSPACES.len(), scope_set(), 0..RESOURCES.len(), 0..EXPIRIES.len())
            .prop_map(|(ws, scopes, resources, expiry)| Op::Create { ws, scopes, resources, expiry }),
        prop_oneof![Just(0), Just(60)].prop_map(|overlap_minutes| Op::Rotate { overlap_minutes }),
        (
            proptest::option::of(0..EXPIRIES.len()),
            proptest::option::of(scope_set()),
            proptest::option::of(0..RESOURCES.len())
        )
            .prop_map(|(expiry, scopes, resources)| Op::Update { expiry, scopes, resources }),
        Just(Op::Disable),
        Just(Op::Enable),
        Just(Op::Revoke),
        (0..WORKSPACES.len()).prop_map(|ws| Op::RevokeAll { ws }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (any::<prop::sample::Index>(), any::<prop::sample::Index>(), op()).prop_map(|(caller, target, op)| Step {
        caller,
        target,
        op,
    })
}

fn ws(i: usize) -> WorkspaceId {
    support::ws(WORKSPACES[i])
}

fn scopes_of(ix: &[usize]) -> Vec<String> {
    let mut scopes: Vec<String> = ix.iter().map(|i| ADMIN_SCOPES[*i].to_owned()).collect();
    scopes.sort();
    scopes
}

fn resources_of(i: usize) -> Vec<String> {
    let mut resources: Vec<String> = RESOURCES[i].iter().map(|r| (*r).to_owned()).collect();
    resources.sort();
    resources
}

fn expiry_of(i: usize) -> Expiry {
    EXPIRIES[i].map_or(Expiry::Never, |m| Expiry::In(m * MINUTE))
}

fn spec(scopes: Vec<String>, resources: Vec<String>, expiry: Expiry) -> KeySpec {
    KeySpec { scopes, resources, expiry, ..support::spec("k", &[]) }
}

type Registry = BTreeMap<KeyId, KeyRecord>;

fn registry(engine: &Engine) -> Registry {
    WORKSPACES
        .iter()
        .flat_map(|w| engine.keys(&w.parse().unwrap(), |_| true))
        .map(|k| (k.key_id, k))
        .collect()
}

fn covers_workspace(resources: &[String], workspace: &WorkspaceId) -> bool {
    resources.is_empty() || resources.iter().any(|r| r == workspace.as_str())
}

fn covers(mine: &[String], theirs: &[String]) -> bool {
    mine.is_empty() || (!theirs.is_empty() && theirs.iter().all(|r| mine.contains(r)))
}

/// A full admin key that lasts: active, holding every admin scope over every workspace, and
/// without expiry.
fn is_full(key: &KeyRecord, now: Timestamp) -> bool {
    key.workspace.is_ledger()
        && key.resources.is_empty()
        && key.expires_at.is_none()
        && key.status(now) == KeyStatus::Active
        && ADMIN_SCOPES.iter().all(|s| key.scopes.iter().any(|k| k == s))
}

/// `a` is no later than `b` (`None` = never expires).
fn no_later(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

/// Checks one command's effect; `Err` describes the violation.
fn check(before: &Registry, after: &Registry, caller: &KeyRecord, now: Timestamp) -> Result<(), String> {
    let caller_was_active = caller.status(now) == KeyStatus::Active;
    let mut changed_key = false;
    for (id, key) in after {
        let old = before.get(id);
        let changed = old.is_none_or(|old| {
            let mut old = old.clone();
            old.last_used = key.last_used;
            old != *key
        });
        if !changed {
            continue;
        }
        changed_key = true;
        let why = |what: &str| Err(format!("{what}: key {id} {old:?} → {key:?} by {caller:?}"));
        if !caller_was_active {
            return why("an inactive caller changed a key");
        }
        let writes = caller.scopes.iter().any(|s| s == "ledger:keys:write")
            && (!key.workspace.is_ledger() || caller.scopes.iter().any(|s| s == "ledger:admin"));
        if !writes {
            return why("a caller without the write scopes changed a key");
        }
        if !covers_workspace(&caller.resources, &key.workspace) {
            return why("a key outside the caller's workspaces changed");
        }
        if key.workspace.is_ledger() {
            for version in [Some(key), old].into_iter().flatten() {
                if version.scopes.iter().any(|s| !caller.scopes.contains(s)) {
                    return why("a key with a scope the caller lacks changed");
                }
                if !covers(&caller.resources, &version.resources) {
                    return why("a key reaching beyond the caller's resources changed");
                }
            }
        }
        let previous = old.map_or(Some(Timestamp(i64::MIN)), |o| o.expires_at);
        if !no_later(key.expires_at, previous) && !no_later(key.expires_at, caller.expires_at) {
            return why("a key got an expiry later than its own and the caller's");
        }
    }
    if before.len() > after.len() {
        return Err("a key vanished".into());
    }
    if !after.values().any(|k| is_full(k, now)) {
        return Err(format!("no full admin key without expiry is left (changed a key: {changed_key})"));
    }
    Ok(())
}

async fn run_case(engine: &Engine, root: KeyId, admins: &[AdminKey], steps: &[Step]) -> Result<(), String> {
    let root_caller = Caller { actor: Actor::Admin(root), request_id: rid() };
    let mut callers = vec![root];
    for admin in admins {
        let spec = spec(scopes_of(&admin.scopes), resources_of(admin.resources), expiry_of(admin.expiry));
        let (key, _) = engine.create(root_caller.clone(), WorkspaceId::ledger(), spec).await.unwrap();
        callers.push(key.key_id);
    }
    for w in ["acme", "beta"] {
        for expiry in [Expiry::Never, Expiry::In(60 * MINUTE)] {
            let spec = spec(vec!["read".into()], vec![], expiry);
            engine.create(root_caller.clone(), w.parse().unwrap(), spec).await.unwrap();
        }
    }
    for (n, step) in steps.iter().enumerate() {
        let before = registry(engine);
        let ids: Vec<KeyId> = before.keys().copied().collect();
        let caller_id = callers[step.caller.index(callers.len())];
        let target = ids[step.target.index(ids.len())];
        let caller = Caller { actor: Actor::Admin(caller_id), request_id: rid() };
        let result: Result<(), LedgerError> = match &step.op {
            Op::Create { ws: w, scopes, resources, expiry } => {
                let (scopes, resources) = if ws(*w).is_ledger() {
                    (scopes_of(scopes), resources_of(*resources))
                } else {
                    (vec!["read".into()], vec![])
                };
                engine.create(caller, ws(*w), spec(scopes, resources, expiry_of(*expiry))).await.map(
                    |(k, _)| {
                        if k.workspace.is_ledger() {
                            callers.push(k.key_id);
                        }
                    },
                )
            }
            Op::Rotate { overlap_minutes } => {
                engine.rotate(caller, target, overlap_minutes * MINUTE).await.map(|(k, _, _)| {
                    if k.workspace.is_ledger() {
                        callers.push(k.key_id);
                    }
                })
            }
            Op::Update { expiry, scopes, resources } => {
                let is_ledger = before[&target].workspace.is_ledger();
                let changes = KeyChanges {
                    expires_at: expiry.map(|e| EXPIRIES[e].map(|m| Timestamp::now().plus_micros(m * MINUTE))),
                    scopes: scopes.as_ref().filter(|_| is_ledger).map(|s| scopes_of(s)),
                    resources: resources.filter(|_| is_ledger).map(resources_of),
                    ..KeyChanges::default()
                };
                engine.update(caller, target, changes).await.map(drop)
            }
            Op::Disable => engine.set_disabled(caller, target, true, None).await.map(drop),
            Op::Enable => engine.set_disabled(caller, target, false, None).await.map(drop),
            Op::Revoke => engine.revoke(caller, target, None).await.map(drop),
            Op::RevokeAll { ws: w } => engine.revoke_all(caller, ws(*w), None).await.map(drop),
        };
        if let Err(LedgerError::Internal(e) | LedgerError::Unavailable(e)) = &result {
            return Err(format!("step {n} {step:?}: engine failure {e}"));
        }
        let after = registry(engine);
        check(&before, &after, &before[&caller_id], Timestamp::now())
            .map_err(|e| format!("step {n} {step:?} answered {result:?}: {e}"))?;
    }
    Ok(())
}

#[test]
fn no_command_gives_a_key_more_than_its_caller_had_and_a_lasting_full_admin_key_remains() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = support::proptest_config(0x6175_7468, 200);
    let mut runner = TestRunner::new(config);
    let strategy = (proptest::collection::vec(admin_key(), 1..6), proptest::collection::vec(step(), 1..40));
    let result = runner.run(&strategy, |(admins, steps)| {
        let (_dir, outcome, engine) = support::ledger();
        let verdict = runtime.block_on(async {
            let verdict = run_case(&engine, outcome.admin_key_id, &admins, &steps).await;
            engine.shutdown().await;
            verdict
        });
        drop(engine);
        verdict.map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
