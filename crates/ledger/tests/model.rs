//! Model-based property test of the engine against docs/api.md ("Keys: the secret and its
//! fields", "Keys", "Verify": keys, rotation, revocation, policies, verification).
//!
//! proptest generates random sequences of commands (create, verify, rotate, revoke,
//! revoke-all, set policy, disable/enable, update, and a short real sleep so that keys with
//! one-second expiries do expire). Each step runs against a real engine on a fresh data dir
//! and against a small in-test model of the rules of docs/api.md; after every step the two must
//! agree on the answer (Ok, or which error kind, or which deny reason) and on the exact
//! events appended to the log (kinds and key ids, in order). At the end every key's status,
//! use count and lifecycle fields and the log length must agree.
//!
//! **Time.** The engine decides with the wall-clock time of the writer's batch, which the
//! test cannot choose. It is bracketed: `t_before <= batch time <= t_after`. When a step
//! appended events, their `at` *is* the batch time and the model uses it exactly. When it
//! appended nothing, the model accepts the answer if it is right for *some* instant in the
//! bracket (only expiry instants inside the bracket can change a decision, so those are the
//! candidates). The assertions are therefore exact and never depend on scheduling.

use keyledger_core::{
    Actor, DenyReason, Environment, Event, KeyId, KeyPrefix, Payload, Policy, Secret, Timestamp,
    UsageContext, WorkspaceId,
};
use keyledger_ledger::{
    Caller, Engine, Expiry, KeyChanges, KeyRecord, KeySpec, KeyStatus, LedgerError, VerifiedKey,
    VerifyOutcome, VerifyRequirements,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;
use std::time::Duration;

mod support;

use support::rid;

// ----- the universe the generator draws from --------------------------------------------

const WORKSPACES: [&str; 2] = ["alpha", "beta-2"];
/// Scopes a key can hold.
const KEY_SCOPES: [&str; 3] = ["admin", "read", "write"];
/// Scopes a verification can ask for (one no key ever holds).
const WANT_SCOPES: [&str; 4] = ["admin", "read", "write", "delete"];
/// Resources a key can be limited to (`r3` is only ever asked for).
const KEY_RESOURCES: [&str; 2] = ["r1", "r2"];
const WANT_RESOURCES: [&str; 3] = ["r1", "r2", "r3"];
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
/// Short real expiries; a `Sleep` step outlives the first.
const SHORT_EXPIRIES: [i64; 2] = [700_000, 1_200_000];
const SLEEP: Duration = Duration::from_millis(800);
/// At most this many sleeps are honoured per case (keeps the whole test well under 60 s).
const MAX_SLEEPS: usize = 2;
const MAX_LIFETIME: i64 = 10 * SECOND;
const DEFAULT_SEED: u64 = 0x6b65_796c_6564_6765;

#[derive(Clone, Copy, Debug)]
enum ExpiryChoice {
    Never,
    Short(usize),
    Hour,
}

#[derive(Clone, Debug)]
enum KeyPick {
    Known(Index),
    /// A well-formed key id that was never issued.
    Unknown,
}

#[derive(Clone, Debug)]
enum Target {
    Key(Index),
    /// A known key's secret with its last (checksum) character changed.
    Tampered(Index),
    /// Not a key at all.
    Malformed,
    /// A well-formed secret with a valid checksum that was never issued.
    Unissued,
}

#[derive(Clone, Debug)]
enum ScopeChange {
    Keep,
    /// Keep the key's scopes selected by this mask (a narrowing, or no change).
    Narrow(u8),
    /// Exactly these scopes of `KEY_SCOPES` (may widen: must then be refused).
    Exactly(u8),
}

#[derive(Clone, Debug)]
enum Step {
    Create {
        ws: usize,
        scopes: u8,
        resources: u8,
        test_env: bool,
        expiry: ExpiryChoice,
    },
    Verify {
        target: Target,
        scopes: Vec<usize>,
        resource: Option<usize>,
    },
    Rotate {
        key: KeyPick,
        overlap: bool,
    },
    Revoke {
        key: KeyPick,
        reason: bool,
    },
    RevokeAll {
        ws: usize,
    },
    SetPolicy {
        ws: usize,
        max_active_keys: Option<u32>,
        require_expiry: bool,
        prefix: Option<bool>,
        max_lifetime: bool,
    },
    SetDisabled {
        key: KeyPick,
        disabled: bool,
    },
    Update {
        key: KeyPick,
        scopes: ScopeChange,
        resources: Option<u8>,
    },
    Sleep,
}

fn key_pick() -> impl Strategy<Value = KeyPick> {
    prop_oneof![9 => any::<Index>().prop_map(KeyPick::Known), 1 => Just(KeyPick::Unknown)]
}

fn step() -> impl Strategy<Value = Step> {
    let expiry = prop_oneof![
        5 => Just(ExpiryChoice::Never),
        2 => (0..SHORT_EXPIRIES.len()).prop_map(ExpiryChoice::Short),
        2 => Just(ExpiryChoice::Hour),
    ];
    let create = (0..2usize, 0u8..8, 0u8..4, proptest::bool::weighted(0.2), expiry).prop_map(
        |(ws, scopes, resources, test_env, expiry)| Step::Create { ws, scopes, resources, test_env, expiry },
    );
    let target = prop_oneof![
        12 => any::<Index>().prop_map(Target::Key),
        1 => any::<Index>().prop_map(Target::Tampered),
        1 => Just(Target::Malformed),
        1 => Just(Target::Unissued),
    ];
    let verify = (
        target,
        proptest::collection::vec(0..WANT_SCOPES.len(), 0..3),
        proptest::option::of(0..WANT_RESOURCES.len()),
    )
        .prop_map(|(target, scopes, resource)| Step::Verify { target, scopes, resource });
    let rotate = (key_pick(), any::<bool>()).prop_map(|(key, overlap)| Step::Rotate { key, overlap });
    let revoke = (key_pick(), any::<bool>()).prop_map(|(key, reason)| Step::Revoke { key, reason });
    let revoke_all = (0..2usize).prop_map(|ws| Step::RevokeAll { ws });
    let policy =
        (
            0..2usize,
            proptest::option::of(1u32..=3),
            proptest::bool::weighted(0.3),
            proptest::option::of(proptest::bool::weighted(0.4)),
            proptest::bool::weighted(0.15),
        )
            .prop_map(|(ws, max_active_keys, require_expiry, prefix, max_lifetime)| {
                Step::SetPolicy { ws, max_active_keys, require_expiry, prefix, max_lifetime }
            });
    let disable = (key_pick(), any::<bool>()).prop_map(|(key, disabled)| Step::SetDisabled { key, disabled });
    let scope_change = prop_oneof![
        1 => Just(ScopeChange::Keep),
        3 => (0u8..8).prop_map(ScopeChange::Narrow),
        1 => (0u8..8).prop_map(ScopeChange::Exactly),
    ];
    let update = (key_pick(), scope_change, proptest::option::of(0u8..4))
        .prop_map(|(key, scopes, resources)| Step::Update { key, scopes, resources });
    prop_oneof![
        6 => create,
        12 => verify,
        3 => rotate,
        3 => revoke,
        1 => revoke_all,
        2 => policy,
        2 => disable,
        2 => update,
        1 => Just(Step::Sleep),
    ]
}

fn pick<T: Copy>(items: &[T], mask: u8) -> Vec<T> {
    items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, x)| *x).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ws(i: usize) -> WorkspaceId {
    support::ws(WORKSPACES[i])
}

// ----- the model -------------------------------------------------------------------------

/// What docs/api.md says a key is.
#[derive(Clone, Debug)]
struct MKey {
    id: KeyId,
    secret: String,
    ws: usize,
    scopes: Vec<String>,
    resources: Vec<String>,
    environment: Environment,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    /// The lifetime the key was issued with; a rotation's new key inherits it (docs/api.md,
    /// "Keys").
    lifetime: Option<i64>,
    revoked_at: Option<Timestamp>,
    revoked_reason: Option<String>,
    disabled: bool,
    /// An `expired` event has been recorded (first denied verification after expiry).
    expiry_recorded: bool,
    uses: u64,
    rotated_from: Option<KeyId>,
    rotated_to: Option<KeyId>,
}

impl MKey {
    fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Counts against `max_active_keys`: not revoked, not expired.
    fn live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && !self.expired(now)
    }

    fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expired(now) {
            KeyStatus::Expired
        } else if self.disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }

    /// The decision order of `LedgerState::decide` (docs/architecture.md): revoked, expired,
    /// disabled, scope, resource.
    fn decide(&self, scopes: &[String], resource: Option<&str>, now: Timestamp) -> Result<(), DenyReason> {
        if self.revoked_at.is_some() {
            return Err(DenyReason::Revoked);
        }
        if self.expired(now) {
            return Err(DenyReason::Expired);
        }
        if self.disabled {
            return Err(DenyReason::Disabled);
        }
        if let Some(missing) = scopes.iter().find(|s| !self.scopes.contains(s)) {
            return Err(DenyReason::MissingScope(missing.clone()));
        }
        if let Some(resource) = resource
            && !self.resources.is_empty()
            && !self.resources.iter().any(|r| r == resource)
        {
            return Err(DenyReason::ResourceNotAllowed(resource.to_string()));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invalid,
    NotFound,
    Conflict,
    Forbidden,
    Unauthorized,
    Unavailable,
    Internal,
}

fn kind(error: &LedgerError) -> Kind {
    match error {
        LedgerError::Invalid(_) => Kind::Invalid,
        LedgerError::NotFound(_) => Kind::NotFound,
        LedgerError::Conflict(_) => Kind::Conflict,
        LedgerError::Forbidden(_) => Kind::Forbidden,
        LedgerError::Unauthorized(_) => Kind::Unauthorized,
        LedgerError::Unavailable(_) => Kind::Unavailable,
        LedgerError::Internal(_) => Kind::Internal,
    }
}

/// An appended event as the model predicts it: its kind and the key it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Created(KeyId),
    Used(KeyId),
    Denied(KeyId, DenyReason),
    Rotated(KeyId),
    Revoked(KeyId),
    Expired(KeyId),
    PolicySet(String),
    Updated(KeyId),
    Disabled(KeyId),
    Enabled(KeyId),
    Other(String),
}

fn ev(event: &Event) -> Ev {
    match &event.payload {
        Payload::Created(c) => Ev::Created(c.key_id),
        Payload::Denied(d) => Ev::Denied(d.key_id, d.reason.clone()),
        Payload::Rotated(r) => Ev::Rotated(r.key_id),
        Payload::Revoked(r) => Ev::Revoked(r.key_id),
        Payload::Expired(k) => Ev::Expired(k.key_id),
        Payload::PolicySet(p) => Ev::PolicySet(p.workspace.to_string()),
        Payload::Updated(u) => Ev::Updated(u.key_id),
        Payload::Disabled(d) => Ev::Disabled(d.key_id),
        Payload::Enabled(k) => Ev::Enabled(k.key_id),
        // Every `used` event, whichever variant carries it.
        payload if let Some(u) = payload.usage() => Ev::Used(u.key_id),
        // Kinds this model never causes (the payload enum grows over time).
        #[allow(unreachable_patterns)]
        other => Ev::Other(format!("{other:?}")),
    }
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// Every key ever issued, in issue order.
    keys: Vec<MKey>,
    policies: [Option<Policy>; 2],
    /// Events the model expects the engine to have appended since the case began.
    events: u64,
}

/// A step with its random picks resolved against the keys known before it ran.
#[derive(Clone, Debug)]
enum Resolved {
    Create { ws: usize, spec: KeySpec, lifetime: Option<i64> },
    Verify { secret: String, known: Option<usize>, scopes: Vec<String>, resource: Option<String> },
    Rotate { key: Result<usize, KeyId>, overlap: i64 },
    Revoke { key: Result<usize, KeyId>, reason: Option<String> },
    RevokeAll { ws: usize },
    SetPolicy { ws: usize, policy: Policy },
    SetDisabled { key: Result<usize, KeyId>, disabled: bool },
    Update { key: Result<usize, KeyId>, changes: KeyChanges },
    Sleep,
}

/// What the engine answered.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Answer {
    Created(Result<(KeyRecord, Secret), LedgerError>),
    Verified(Result<VerifyOutcome, LedgerError>),
    Rotated(Result<(KeyRecord, KeyRecord, Secret), LedgerError>),
    Key(Result<KeyRecord, LedgerError>),
    RevokedAll(Result<Vec<KeyId>, LedgerError>),
    Policy(Result<Policy, LedgerError>),
    Slept,
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn expect_err<T: std::fmt::Debug>(got: &Result<T, LedgerError>, want: Kind) -> Result<(), String> {
    match got {
        Err(e) if kind(e) == want => Ok(()),
        other => Err(format!("expected {want:?}, engine answered {other:?}")),
    }
}

impl Model {
    fn policy(&self, ws: usize) -> Policy {
        self.policies[ws].clone().unwrap_or_default()
    }

    fn prefix(&self, ws: usize) -> String {
        self.policy(ws).key_prefix.map_or_else(|| "kl".to_string(), |p| p.as_str().to_string())
    }

    fn live_count(&self, ws: usize, now: Timestamp) -> usize {
        self.keys.iter().filter(|k| k.ws == ws && k.live(now)).count()
    }

    /// A create or rotate issuing a key of lifetime `lifetime` (from now), leaving
    /// `live_after` live keys in the workspace: does it keep the policy? (docs/api.md, "Keys":
    /// 409 if not.)
    fn policy_allows(&self, ws: usize, lifetime: Option<i64>, live_after: usize) -> bool {
        let policy = self.policy(ws);
        if policy.max_active_keys.is_some_and(|max| live_after > max as usize) {
            return false;
        }
        if policy.require_expiry && lifetime.is_none() {
            return false;
        }
        if let Some(max) = policy.max_lifetime
            && lifetime.is_none_or(|l| l > max)
        {
            return false;
        }
        true
    }

    /// A verdict shows the key's id, workspace, environment, scopes and expiry as modelled.
    fn check_verified(&self, i: usize, key: &VerifiedKey) -> Result<(), String> {
        let k = &self.keys[i];
        ensure!(key.key_id == k.id, "verdict key: key id {} != model {}", key.key_id, k.id);
        ensure!(*key.workspace == ws(k.ws), "verdict key: workspace {}", key.workspace);
        ensure!(*key.scopes == k.scopes, "verdict key: scopes {:?} != model {:?}", key.scopes, k.scopes);
        ensure!(key.environment == k.environment, "verdict key: environment");
        ensure!(key.expires_at == k.expires_at, "verdict key: expires_at {:?}", key.expires_at);
        Ok(())
    }

    fn check_record(&self, i: usize, record: &KeyRecord, what: &str) -> Result<(), String> {
        let k = &self.keys[i];
        ensure!(record.key_id == k.id, "{what}: key id {} != model {}", record.key_id, k.id);
        ensure!(record.workspace == ws(k.ws), "{what}: workspace {}", record.workspace);
        ensure!(record.scopes == k.scopes, "{what}: scopes {:?} != model {:?}", record.scopes, k.scopes);
        ensure!(
            record.resources == k.resources,
            "{what}: resources {:?} != model {:?}",
            record.resources,
            k.resources
        );
        ensure!(record.environment == k.environment, "{what}: environment");
        ensure!(record.created_at == k.created_at, "{what}: created_at");
        ensure!(
            record.expires_at == k.expires_at,
            "{what}: expires_at {:?} != model {:?}",
            record.expires_at,
            k.expires_at
        );
        ensure!(
            record.revoked_at == k.revoked_at,
            "{what}: revoked_at {:?} != model {:?}",
            record.revoked_at,
            k.revoked_at
        );
        ensure!(
            record.revoked_reason == k.revoked_reason,
            "{what}: revoked_reason {:?}",
            record.revoked_reason
        );
        ensure!(
            record.disabled.is_some() == k.disabled,
            "{what}: disabled {:?} != model {}",
            record.disabled,
            k.disabled
        );
        ensure!(record.rotated_from == k.rotated_from, "{what}: rotated_from");
        ensure!(record.rotated_to == k.rotated_to, "{what}: rotated_to");
        ensure!(
            record.last_used.count == k.uses,
            "{what}: use_count {} != model {}",
            record.last_used.count,
            k.uses
        );
        Ok(())
    }

    /// Applies `step` at instant `now`, checking the engine's `answer` and the events it
    /// appended against docs/api.md. On a mismatch the model is left half-updated: the
    /// caller works on a clone.
    fn apply(
        &mut self,
        step: &Resolved,
        now: Timestamp,
        answer: &Answer,
        appended: &[Event],
    ) -> Result<(), String> {
        let mut expected: Vec<Ev> = Vec::new();
        match (step, answer) {
            (Resolved::Sleep, Answer::Slept) => {}
            (Resolved::Create { ws: w, spec, lifetime }, Answer::Created(got)) => {
                let live_after = self.live_count(*w, now) + 1;
                if !self.policy_allows(*w, *lifetime, live_after) {
                    expect_err(got, Kind::Conflict)?;
                } else {
                    let (record, secret) =
                        got.as_ref().map_err(|e| format!("expected a new key, engine refused: {e:?}"))?;
                    let head = format!("{}_{}_", self.prefix(*w), spec.environment.as_str());
                    ensure!(secret.expose().starts_with(&head), "secret does not start with {head}");
                    ensure!(
                        record.created_at == now,
                        "created_at {:?} is not the batch time {now:?}",
                        record.created_at
                    );
                    self.keys.push(MKey {
                        id: record.key_id,
                        secret: secret.expose().to_string(),
                        ws: *w,
                        scopes: spec.scopes.clone(),
                        resources: spec.resources.clone(),
                        environment: spec.environment,
                        created_at: now,
                        expires_at: lifetime.map(|l| now.plus_micros(l)),
                        lifetime: *lifetime,
                        revoked_at: None,
                        revoked_reason: None,
                        disabled: false,
                        expiry_recorded: false,
                        uses: 0,
                        rotated_from: None,
                        rotated_to: None,
                    });
                    self.check_record(self.keys.len() - 1, record, "created key")?;
                    expected.push(Ev::Created(record.key_id));
                }
            }
            (Resolved::Verify { secret, known, scopes, resource }, Answer::Verified(got)) => {
                let got = got.as_ref().map_err(|e| format!("verify failed: {e:?}"))?;
                match known {
                    // A string not of the key format (checksum included) is malformed; a
                    // well-formed key that was never issued is unknown.
                    None if Secret::check(secret).is_err() => ensure!(
                        matches!(got, VerifyOutcome::Malformed),
                        "expected Malformed, engine answered {got:?}"
                    ),
                    None => ensure!(
                        matches!(got, VerifyOutcome::Unknown),
                        "expected Unknown, engine answered {got:?}"
                    ),
                    Some(i) => {
                        let VerifyOutcome::Known(verdict) = got else {
                            return Err(format!(
                                "expected a verdict for a known key, engine answered {got:?}"
                            ));
                        };
                        let want = self.keys[*i].decide(scopes, resource.as_deref(), now);
                        ensure!(verdict.outcome == want, "verdict {:?} != model {want:?}", verdict.outcome);
                        let id = self.keys[*i].id;
                        match &want {
                            Ok(()) => {
                                self.keys[*i].uses += 1;
                                expected.push(Ev::Used(id));
                            }
                            Err(reason) => {
                                if *reason == DenyReason::Expired && !self.keys[*i].expiry_recorded {
                                    self.keys[*i].expiry_recorded = true;
                                    expected.push(Ev::Expired(id));
                                }
                                expected.push(Ev::Denied(id, reason.clone()));
                            }
                        }
                        let last = appended.last().map(|e| e.seq);
                        ensure!(
                            Some(verdict.seq) == last,
                            "verdict seq {} is not the usage event's {last:?}",
                            verdict.seq
                        );
                        self.check_verified(*i, &verdict.key)?;
                    }
                }
            }
            (Resolved::Rotate { key, overlap }, Answer::Rotated(got)) => match key {
                Err(_) => expect_err(got, Kind::NotFound)?,
                Ok(i) if self.keys[*i].revoked_at.is_some() => expect_err(got, Kind::Conflict)?,
                Ok(i) => {
                    let old = self.keys[*i].clone();
                    let live_now = self.live_count(old.ws, now);
                    let freed = usize::from(*overlap == 0 && old.live(now));
                    let live_after = live_now + 1 - freed;
                    if !self.policy_allows(old.ws, old.lifetime, live_after) {
                        expect_err(got, Kind::Conflict)?;
                    } else {
                        let (new, previous, secret) = got
                            .as_ref()
                            .map_err(|e| format!("expected a rotation, engine refused: {e:?}"))?;
                        let head = format!("{}_{}_", self.prefix(old.ws), old.environment.as_str());
                        ensure!(
                            secret.expose().starts_with(&head),
                            "rotated secret does not start with {head}"
                        );
                        self.keys.push(MKey {
                            id: new.key_id,
                            secret: secret.expose().to_string(),
                            ws: old.ws,
                            scopes: old.scopes.clone(),
                            resources: old.resources.clone(),
                            environment: old.environment,
                            created_at: now,
                            expires_at: old.lifetime.map(|l| now.plus_micros(l)),
                            lifetime: old.lifetime,
                            revoked_at: None,
                            revoked_reason: None,
                            disabled: false,
                            expiry_recorded: false,
                            uses: 0,
                            rotated_from: Some(old.id),
                            rotated_to: None,
                        });
                        let k = &mut self.keys[*i];
                        k.rotated_to = Some(new.key_id);
                        expected.push(Ev::Created(new.key_id));
                        expected.push(Ev::Rotated(old.id));
                        if *overlap == 0 {
                            k.revoked_at = Some(now);
                            k.revoked_reason = Some("rotated".into());
                            expected.push(Ev::Revoked(old.id));
                        } else {
                            let until = now.plus_micros(*overlap);
                            k.expires_at = Some(k.expires_at.map_or(until, |e| e.min(until)));
                        }
                        self.check_record(self.keys.len() - 1, new, "rotation's new key")?;
                        self.check_record(*i, previous, "rotation's previous key")?;
                    }
                }
            },
            (Resolved::Revoke { key, reason }, Answer::Key(got)) => match key {
                Err(_) => expect_err(got, Kind::NotFound)?,
                Ok(i) => {
                    let record =
                        got.as_ref().map_err(|e| format!("expected a revocation, engine refused: {e:?}"))?;
                    let k = &mut self.keys[*i];
                    if k.revoked_at.is_none() {
                        k.revoked_at = Some(now);
                        k.revoked_reason = reason.clone();
                        expected.push(Ev::Revoked(k.id));
                    }
                    self.check_record(*i, record, "revoked key")?;
                }
            },
            (Resolved::RevokeAll { ws: w }, Answer::RevokedAll(got)) => {
                let ids = got.as_ref().map_err(|e| format!("expected revoke-all to succeed: {e:?}"))?;
                let mut targets: Vec<usize> = (0..self.keys.len())
                    .filter(|&i| self.keys[i].ws == *w && self.keys[i].revoked_at.is_none())
                    .collect();
                targets.sort_by_key(|&i| self.keys[i].id);
                let want: Vec<KeyId> = targets.iter().map(|&i| self.keys[i].id).collect();
                ensure!(*ids == want, "revoke-all revoked {ids:?}, model {want:?}");
                for i in targets {
                    let k = &mut self.keys[i];
                    k.revoked_at = Some(now);
                    k.revoked_reason = Some("drill".into());
                    expected.push(Ev::Revoked(k.id));
                }
            }
            (Resolved::SetPolicy { ws: w, policy }, Answer::Policy(got)) => {
                let answered = got.as_ref().map_err(|e| format!("expected the policy to be set: {e:?}"))?;
                ensure!(answered == policy, "policy answered {answered:?}");
                if self.policies[*w].as_ref() != Some(policy) {
                    expected.push(Ev::PolicySet(WORKSPACES[*w].to_string()));
                }
                self.policies[*w] = Some(policy.clone());
            }
            (Resolved::SetDisabled { key, disabled }, Answer::Key(got)) => match key {
                Err(_) => expect_err(got, Kind::NotFound)?,
                Ok(i) if self.keys[*i].revoked_at.is_some() => expect_err(got, Kind::Conflict)?,
                Ok(i) => {
                    let record =
                        got.as_ref().map_err(|e| format!("expected disable/enable to succeed: {e:?}"))?;
                    let k = &mut self.keys[*i];
                    if k.disabled != *disabled {
                        k.disabled = *disabled;
                        expected.push(if *disabled { Ev::Disabled(k.id) } else { Ev::Enabled(k.id) });
                    }
                    self.check_record(*i, record, "disabled/enabled key")?;
                }
            },
            (Resolved::Update { key, changes }, Answer::Key(got)) => match key {
                Err(_) => expect_err(got, Kind::NotFound)?,
                Ok(i) if self.keys[*i].revoked_at.is_some() => expect_err(got, Kind::Conflict)?,
                Ok(i) => {
                    let k = &self.keys[*i];
                    let widens_scopes =
                        changes.scopes.as_ref().is_some_and(|s| s.iter().any(|x| !k.scopes.contains(x)));
                    let widens_resources = changes.resources.as_ref().is_some_and(|r| {
                        !k.resources.is_empty()
                            && (r.is_empty() || r.iter().any(|x| !k.resources.contains(x)))
                    });
                    if widens_scopes || widens_resources {
                        expect_err(got, Kind::Invalid)?;
                    } else {
                        let record =
                            got.as_ref().map_err(|e| format!("expected the update to succeed: {e:?}"))?;
                        let changed = changes.scopes.as_ref().is_some_and(|s| *s != k.scopes)
                            || changes.resources.as_ref().is_some_and(|r| *r != k.resources);
                        let id = k.id;
                        let k = &mut self.keys[*i];
                        if let Some(s) = &changes.scopes {
                            k.scopes = s.clone();
                        }
                        if let Some(r) = &changes.resources {
                            k.resources = r.clone();
                        }
                        if changed {
                            expected.push(Ev::Updated(id));
                        }
                        self.check_record(*i, record, "updated key")?;
                    }
                }
            },
            (step, answer) => return Err(format!("test bug: step {step:?} got answer {answer:?}")),
        }
        let got: Vec<Ev> = appended.iter().map(ev).collect();
        ensure!(got == expected, "appended events {got:?}, model expected {expected:?}");
        if let Some(first) = appended.first() {
            ensure!(appended.iter().all(|e| e.at == first.at), "one command's events carry different times");
        }
        self.events += expected.len() as u64;
        Ok(())
    }
}

// ----- running a case --------------------------------------------------------------------

fn resolve(model: &Model, step: &Step, sleeps: &mut usize) -> Resolved {
    let key = |p: &KeyPick| -> Result<usize, KeyId> {
        match p {
            KeyPick::Known(ix) if !model.keys.is_empty() => Ok(ix.index(model.keys.len())),
            _ => Err(KeyId::generate(Timestamp::now().millis())),
        }
    };
    match step {
        Step::Create { ws, scopes, resources, test_env, expiry } => {
            let lifetime = match expiry {
                ExpiryChoice::Never => None,
                ExpiryChoice::Short(i) => Some(SHORT_EXPIRIES[*i]),
                ExpiryChoice::Hour => Some(HOUR),
            };
            let spec = KeySpec {
                name: "model key".into(),
                scopes: strings(&pick(&KEY_SCOPES, *scopes)),
                resources: strings(&pick(&KEY_RESOURCES, *resources)),
                environment: if *test_env { Environment::Test } else { Environment::Live },
                owner: None,
                metadata: "{}".into(),
                expiry: lifetime.map_or(Expiry::Never, Expiry::In),
                credits: None,
            };
            Resolved::Create { ws: *ws, spec, lifetime }
        }
        Step::Verify { target, scopes, resource } => {
            let scopes: Vec<String> = scopes.iter().map(|&i| WANT_SCOPES[i].to_string()).collect();
            let resource = resource.map(|i| WANT_RESOURCES[i].to_string());
            let (secret, known) = match target {
                Target::Key(ix) if !model.keys.is_empty() => {
                    let i = ix.index(model.keys.len());
                    (model.keys[i].secret.clone(), Some(i))
                }
                Target::Tampered(ix) if !model.keys.is_empty() => {
                    let mut s = model.keys[ix.index(model.keys.len())].secret.clone();
                    let last = s.pop().unwrap();
                    s.push(if last == 'A' { 'B' } else { 'A' });
                    (s, None)
                }
                Target::Unissued => (
                    Secret::generate(&KeyPrefix::default_prefix(), Environment::Live)
                        .unwrap()
                        .expose()
                        .to_string(),
                    None,
                ),
                _ => ("kl_live_not-a-key".to_string(), None),
            };
            Resolved::Verify { secret, known, scopes, resource }
        }
        Step::Rotate { key: p, overlap } => {
            Resolved::Rotate { key: key(p), overlap: if *overlap { HOUR } else { 0 } }
        }
        Step::Revoke { key: p, reason } => {
            Resolved::Revoke { key: key(p), reason: reason.then(|| "leaked in a paste".to_string()) }
        }
        Step::RevokeAll { ws } => Resolved::RevokeAll { ws: *ws },
        Step::SetPolicy { ws, max_active_keys, require_expiry, prefix, max_lifetime } => {
            Resolved::SetPolicy {
                ws: *ws,
                policy: Policy {
                    max_active_keys: *max_active_keys,
                    require_expiry: *require_expiry,
                    max_lifetime: max_lifetime.then_some(MAX_LIFETIME),
                    key_prefix: prefix.map(|ab| if ab { "ab" } else { "kl" }.parse().unwrap()),
                },
            }
        }
        Step::SetDisabled { key: p, disabled } => Resolved::SetDisabled { key: key(p), disabled: *disabled },
        Step::Update { key: p, scopes, resources } => {
            let k = key(p);
            let current: Vec<String> = k.as_ref().map(|&i| model.keys[i].scopes.clone()).unwrap_or_default();
            let scopes = match scopes {
                ScopeChange::Keep => None,
                ScopeChange::Narrow(mask) => Some(
                    current
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, s)| s.clone())
                        .collect(),
                ),
                ScopeChange::Exactly(mask) => Some(strings(&pick(&KEY_SCOPES, *mask))),
            };
            let resources = resources.map(|mask| strings(&pick(&KEY_RESOURCES, mask)));
            Resolved::Update { key: k, changes: KeyChanges { scopes, resources, ..Default::default() } }
        }
        Step::Sleep => {
            *sleeps += 1;
            Resolved::Sleep
        }
    }
}

async fn execute(engine: &Engine, caller: &Caller, model: &Model, step: &Resolved, sleep: bool) -> Answer {
    let id = |k: &Result<usize, KeyId>| match k {
        Ok(i) => model.keys[*i].id,
        Err(unknown) => *unknown,
    };
    match step {
        Resolved::Create { ws: w, spec, .. } => {
            Answer::Created(engine.create(caller.clone(), ws(*w), spec.clone()).await)
        }
        Resolved::Verify { secret, scopes, resource, .. } => {
            let wants = VerifyRequirements {
                scopes: scopes.clone(),
                resource: resource.clone(),
                ..Default::default()
            };
            Answer::Verified(engine.verify(rid(), secret, wants, UsageContext::default()).await)
        }
        Resolved::Rotate { key, overlap } => {
            Answer::Rotated(engine.rotate(caller.clone(), id(key), *overlap).await)
        }
        Resolved::Revoke { key, reason } => {
            Answer::Key(engine.revoke(caller.clone(), id(key), reason.clone()).await)
        }
        Resolved::RevokeAll { ws: w } => {
            Answer::RevokedAll(engine.revoke_all(caller.clone(), ws(*w), Some("drill".into())).await)
        }
        Resolved::SetPolicy { ws: w, policy } => {
            Answer::Policy(engine.set_policy(caller.clone(), ws(*w), policy.clone()).await)
        }
        Resolved::SetDisabled { key, disabled } => {
            Answer::Key(engine.set_disabled(caller.clone(), id(key), *disabled, None).await)
        }
        Resolved::Update { key, changes } => {
            Answer::Key(engine.update(caller.clone(), id(key), changes.clone()).await)
        }
        Resolved::Sleep => {
            if sleep {
                tokio::time::sleep(SLEEP).await;
            }
            Answer::Slept
        }
    }
}

async fn run_case(engine: &Engine, caller: Caller, steps: &[Step]) -> Result<(), String> {
    let base = engine.log().len();
    let mut model = Model::default();
    let mut sleeps = 0;
    for (n, step) in steps.iter().enumerate() {
        let resolved = resolve(&model, step, &mut sleeps);
        let len_before = engine.log().len();
        let t_before = Timestamp::now();
        let answer = execute(engine, &caller, &model, &resolved, sleeps <= MAX_SLEEPS).await;
        let t_after = Timestamp::now();
        let appended: Vec<Event> = engine
            .log()
            .events_from(len_before)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("reading the log: {e}"))?;
        // The instants at which the engine may have decided: exactly the batch time when
        // something was appended; otherwise the bracket's start or any expiry inside it.
        let candidates: Vec<Timestamp> = match appended.first() {
            Some(first) => {
                if !(t_before <= first.at && first.at <= t_after) {
                    return Err(format!(
                        "step {n}: event time {:?} outside [{t_before:?}, {t_after:?}]",
                        first.at
                    ));
                }
                vec![first.at]
            }
            None => {
                let mut c = vec![t_before];
                c.extend(
                    model.keys.iter().filter_map(|k| k.expires_at).filter(|&e| t_before < e && e <= t_after),
                );
                c
            }
        };
        let mut failures = Vec::new();
        let mut accepted = None;
        for now in candidates {
            let mut trial = model.clone();
            match trial.apply(&resolved, now, &answer, &appended) {
                Ok(()) => {
                    accepted = Some(trial);
                    break;
                }
                Err(why) => failures.push(why),
            }
        }
        let Some(next) = accepted else {
            return Err(format!(
                "step {n} {step:?} (resolved {resolved:?}): engine and model disagree: {failures:?}"
            ));
        };
        model = next;
        cover(&answer, &appended);
        let len = engine.log().len();
        if len != base + model.events {
            return Err(format!("step {n}: log length {len} != {base} + model's {} events", model.events));
        }
    }

    // Final: every key's status, use count and lifecycle fields; nothing the model does not know.
    let now = Timestamp::now();
    for (i, k) in model.keys.iter().enumerate() {
        let record = engine.key(&k.id).ok_or_else(|| format!("engine lost key {}", k.id))?;
        model.check_record(i, &record, "final")?;
        let (got, want) = (record.status(now), k.status(now));
        if got != want {
            return Err(format!("key {}: status {got:?} != model {want:?}", k.id));
        }
    }
    for (w, name) in WORKSPACES.iter().enumerate() {
        let listed = engine.keys(&ws(w), |_| true).len();
        let known = model.keys.iter().filter(|k| k.ws == w).count();
        if listed != known {
            return Err(format!("workspace {name}: engine lists {listed} keys, model {known}"));
        }
        if engine.policy(&ws(w)) != model.policy(w) {
            return Err(format!("workspace {name}: policy differs"));
        }
    }
    let len = engine.log().len();
    if len != base + model.events {
        return Err(format!("final log length {len} != {base} + model's {} events", model.events));
    }
    Ok(())
}

/// What the cases exercised (printed at the end, to see that the generator reaches the
/// interesting corners: expiries, policy refusals, conflicts, every deny reason).
static COVERAGE: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn cover(answer: &Answer, appended: &[Event]) {
    fn outcome<T>(name: &str, r: &Result<T, LedgerError>) -> String {
        match r {
            Ok(_) => format!("{name}: ok"),
            Err(e) => format!("{name}: {:?}", kind(e)),
        }
    }
    let label = match answer {
        Answer::Created(r) => outcome("create", r),
        Answer::Verified(Ok(VerifyOutcome::Unknown)) => "verify: unknown".into(),
        Answer::Verified(Ok(VerifyOutcome::Known(v))) => match &v.outcome {
            Ok(()) => "verify: allowed".into(),
            Err(reason) => format!("verify: denied {}", reason.code()),
        },
        Answer::Verified(r) => outcome("verify", r),
        Answer::Rotated(r) => outcome("rotate", r),
        Answer::Key(r) => outcome("revoke/disable/update", r),
        Answer::RevokedAll(r) => outcome("revoke-all", r),
        Answer::Policy(r) => outcome("policy", r),
        Answer::Slept => "sleep".into(),
    };
    let mut coverage = COVERAGE.lock().unwrap();
    *coverage.entry(label).or_default() += 1;
    for e in appended {
        let name = match &e.payload {
            Payload::Expired(_) => "event expired",
            Payload::Rotated(_) => "event rotated",
            _ => continue,
        };
        *coverage.entry(name.into()).or_default() += 1;
    }
}

#[test]
fn engine_agrees_with_the_contract_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = support::proptest_config(DEFAULT_SEED, 300);
    let (config_cases, config_seed) = (config.cases, config.rng_seed);
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(step(), 1..60);
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |steps| {
        let (_dir, outcome, engine) = support::ledger();
        let caller = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
        let verdict = runtime.block_on(async {
            let verdict = run_case(&engine, caller, &steps).await;
            engine.shutdown().await;
            verdict
        });
        drop(engine);
        verdict.map_err(TestCaseError::fail)
    });
    eprintln!("model test: {:?} ({} cases, seed {})", started.elapsed(), config_cases, config_seed);
    for (label, count) in COVERAGE.lock().unwrap().iter().filter(|(_, c)| **c > 0) {
        eprintln!("  {label}: {count}");
    }
    if let Err(error) = result {
        panic!("{error}");
    }
}

// ----- focused regressions ---------------------------------------------------------------

/// docs/api.md, "Keys": rotation copies the old key's lifetime to the new key. A key rotated
/// with an overlap has its `expires_at` cut to the end of the overlap; that is not its
/// lifetime. Rotating it a second time (allowed: it is not revoked) must give the new key the
/// lifetime the key was issued with, not `valid_until - created_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_inherits_the_issued_lifetime_not_the_overlap() {
    let (_dir, outcome, engine) = support::ledger();
    let caller = Caller { actor: Actor::Admin(outcome.admin_key_id), request_id: rid() };
    let spec = |expiry| KeySpec { expiry, ..support::spec("k", &["read"]) };

    // A key that never expires.
    let (key, _) = engine.create(caller.clone(), ws(0), spec(Expiry::Never)).await.unwrap();
    let (first, previous, _) = engine.rotate(caller.clone(), key.key_id, HOUR).await.unwrap();
    assert_eq!(first.expires_at, None);
    assert!(previous.expires_at.is_some(), "the overlap bounds the old key");
    let (second, _, _) = engine.rotate(caller.clone(), key.key_id, 0).await.unwrap();
    let mut failures = Vec::new();
    if second.expires_at.is_some() {
        failures.push(format!(
            "never-expiring key, rotated twice: the second successor expires at {:?} (created {:?}); expected never",
            second.expires_at, second.created_at
        ));
    }

    // A key issued for 90 days.
    let lifetime = 90 * 24 * HOUR;
    let (key, _) = engine.create(caller.clone(), ws(1), spec(Expiry::In(lifetime))).await.unwrap();
    engine.rotate(caller.clone(), key.key_id, HOUR).await.unwrap();
    let (second, _, _) = engine.rotate(caller.clone(), key.key_id, 0).await.unwrap();
    let got = second.expires_at.map(|at| at.micros() - second.created_at.micros());
    if got != Some(lifetime) {
        failures.push(format!(
            "90-day key, rotated twice: the second successor's lifetime is {got:?} µs, expected {lifetime}"
        ));
    }
    engine.shutdown().await;
    assert!(failures.is_empty(), "{failures:#?}");
}
