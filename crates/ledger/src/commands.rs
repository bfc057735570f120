//! Commands: what callers ask the engine to do, and what the sequencer answers.
//!
//! A command carries everything the writer thread needs to decide it against the current
//! state (secrets are already reduced to their keyed hash and hint). Pure field validation
//! happens before a command is built; state-dependent rules are checked by the sequencer.

use crate::error::LedgerError;
use crate::state::{KeyRecord, VerifyRequirements};
use crate::verdict::Verdict;
use keyledger_core::{
    Actor, Environment, KeyHash, KeyId, KeyPrefix, Policy, RequestId, Timestamp, UsageContext, WorkspaceId,
};

/// Who asks, under which request id.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    pub request_id: RequestId,
}

impl Caller {
    pub fn system() -> Self {
        Self { actor: Actor::System, request_id: RequestId::generate(Timestamp::now().millis()) }
    }

    /// The offline break-glass recovery (`keyledger admin recover`), recorded as such.
    pub fn recovery() -> Self {
        Self { actor: Actor::Recovery, request_id: RequestId::generate(Timestamp::now().millis()) }
    }

    pub fn admin_key(&self) -> Option<KeyId> {
        match self.actor {
            Actor::Admin(key) => Some(key),
            _ => None,
        }
    }
}

/// Identifies an idempotent request (see `IdempotencyRecord` in core): hashes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyTag {
    /// BLAKE3 of the caller's credential and its `Idempotency-Key`.
    pub id: [u8; 32],
    /// BLAKE3 of the request (method, path, body).
    pub fingerprint: [u8; 32],
}

/// When a new key expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(Timestamp),
    /// Microseconds from the moment the key is created.
    In(i64),
}

/// A key's fields as issued; validated and normalised.
#[derive(Clone, Debug)]
pub struct KeySpec {
    pub name: String,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub environment: Environment,
    pub owner: Option<String>,
    pub metadata: String,
    pub expiry: Expiry,
}

/// The public traces of a freshly generated secret.
#[derive(Clone, Debug)]
pub struct IssuedSecret {
    pub key_id: KeyId,
    pub hash: KeyHash,
    pub hint: String,
    pub prefix: KeyPrefix,
}

/// Changes to a key; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyChanges {
    pub name: Option<String>,
    pub owner: Option<Option<String>>,
    pub metadata: Option<String>,
    pub expires_at: Option<Option<Timestamp>>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Vec<String>>,
}

#[derive(Debug)]
pub enum Command {
    Create {
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
        secret: IssuedSecret,
        idempotency: Option<IdempotencyTag>,
    },
    Rotate {
        caller: Caller,
        key_id: KeyId,
        overlap: i64,
        secret: IssuedSecret,
        idempotency: Option<IdempotencyTag>,
    },
    Revoke {
        caller: Caller,
        key_id: KeyId,
        reason: Option<String>,
    },
    RevokeAll {
        caller: Caller,
        workspace: WorkspaceId,
        reason: Option<String>,
        idempotency: Option<IdempotencyTag>,
    },
    SetPolicy {
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
    },
    Update {
        caller: Caller,
        key_id: KeyId,
        changes: KeyChanges,
    },
    SetDisabled {
        caller: Caller,
        key_id: KeyId,
        disabled: bool,
        reason: Option<String>,
    },
    Verify {
        request_id: RequestId,
        key_id: KeyId,
        wants: VerifyRequirements,
        context: UsageContext,
    },
    /// Configures (`Some(url, events)`) or disables (`None`) a workspace's webhook.
    SetWebhook {
        caller: Caller,
        workspace: WorkspaceId,
        config: Option<(String, Vec<String>)>,
    },
    /// Records that an admin looked up a candidate leaked secret (never the candidate).
    RecordLookup {
        caller: Caller,
        workspace: WorkspaceId,
        found: Option<KeyId>,
    },
}

/// The answer to a command. Large records are boxed: replies cross a channel per command.
#[derive(Debug)]
pub enum Reply {
    Key(Box<KeyRecord>),
    Rotation {
        key: Box<KeyRecord>,
        previous: Box<KeyRecord>,
    },
    /// The keys a revoke-all revoked, and how many unrevoked keys of the workspace it left
    /// alone (the caller's own, keys it does not dominate, the last full admin key).
    RevokedAll {
        key_ids: Vec<KeyId>,
        skipped: usize,
    },
    Policy(Policy),
    Verdict(Box<Verdict>),
    /// The seq of a recorded event.
    Recorded(u64),
    Webhook(Box<crate::state::Webhook>),
}

pub type CommandResult = Result<Reply, LedgerError>;
