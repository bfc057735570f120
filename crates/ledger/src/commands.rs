//! Commands: what callers ask the engine to do, and what the sequencer answers.
//!
//! A command carries everything the writer thread needs to decide it against the current
//! state (secrets are already reduced to their keyed hash and hint). Pure field validation
//! happens before a command is built; state-dependent rules are checked by the sequencer.
//!
//! Each command also carries its own [`Responder`], typed for its answer (a create answers
//! a [`KeyRecord`], a verification a [`Verdict`], …): the sequencer answers through it, and
//! the engine reads the answer with [`Answer::take`] only once the log's writer has
//! acknowledged the command, so a caller never sees an answer whose events are not as
//! durable as it asked, and never an answer of another kind.

use crate::error::LedgerError;
use crate::state::{KeyRecord, VerifyRequirements, Webhook};
use crate::verdict::Verdict;
use keyledger_core::{
    Actor, Environment, KeyHash, KeyId, KeyPrefix, Policy, RequestId, Timestamp, UsageContext, WorkspaceId,
};
use tokio::sync::oneshot;

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
    /// Usage credits, if the key is metered (docs/credits.md).
    pub credits: Option<crate::credits::CreditsSpec>,
}

/// The verify-time controls a key is issued with, besides its credits (in [`KeySpec`]): set
/// in the batch of its `created` event, so that no verification ever sees the key without
/// them.
#[derive(Clone, Debug, Default)]
pub struct KeyControls {
    /// The key's source allow-list; `None` (or empty) takes the workspace default.
    pub sources: Option<Vec<keyledger_core::SourceNet>>,
    /// The key's own rate limits; `None` (or empty) leaves it under the workspace default.
    pub ratelimits: Option<Vec<keyledger_core::RateLimit>>,
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
    /// A narrower source allow-list (see [`crate::sources`]).
    pub allowed_sources: Option<Vec<keyledger_core::SourceNet>>,
    /// The key's own rate limits, replacing its list whole (`[]` removes it; see
    /// [`crate::sequencer_ratelimit`]).
    pub ratelimits: Option<Vec<keyledger_core::RateLimit>>,
}

/// What a workspace's policy sets beside its [`Policy`], each `None` leaving it as it is:
/// decided with the policy and set in the batch of its `policy_set` event, so a refusal of
/// any part changes nothing.
#[derive(Clone, Debug, Default)]
pub struct PolicyControls {
    /// The policy for source allow-lists.
    pub sources: Option<crate::state::SourcePolicy>,
    /// What a leak report of one of the workspace's keys does (docs/leaks.md).
    pub on_leak: Option<keyledger_core::OnLeak>,
    /// The rate limits of keys without their own (docs/api.md, "Rate limits").
    pub ratelimits: Option<Vec<keyledger_core::RateLimit>>,
}

/// Where the sequencer puts a command's answer (see the module docs).
#[derive(Debug)]
pub struct Responder<T>(oneshot::Sender<Result<T, LedgerError>>);

/// The engine's side of a [`Responder`].
#[derive(Debug)]
pub struct Answer<T>(oneshot::Receiver<Result<T, LedgerError>>);

/// A responder and the answer it fills.
pub fn responder<T>() -> (Responder<T>, Answer<T>) {
    let (sender, receiver) = oneshot::channel();
    (Responder(sender), Answer(receiver))
}

impl<T> Responder<T> {
    /// Answers the command. An engine that stopped waiting simply never reads it.
    pub fn send(self, answer: Result<T, LedgerError>) {
        let _ = self.0.send(answer);
    }
}

impl<T> Answer<T> {
    /// The sequencer's answer, read after the writer acknowledged the command: the
    /// sequencer answers every command it sequences before the writer acknowledges it, so
    /// the answer is there. Without one (a sequencer that did not run), an internal error.
    pub fn take(mut self) -> Result<T, LedgerError> {
        self.0.try_recv().unwrap_or_else(|_| {
            Err(LedgerError::Internal("the writer acknowledged an unanswered command".into()))
        })
    }
}

/// What a rotation answers: the new key, and the rotated one as the rotation left it.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub key: KeyRecord,
    pub previous: KeyRecord,
}

/// What a revoke-all did: the keys it revoked, and how many unrevoked keys of the workspace
/// it left alone (the caller's own, keys it does not dominate, the last full admin key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedAll {
    pub key_ids: Vec<KeyId>,
    pub skipped: usize,
}

#[derive(Debug)]
pub enum Command {
    Create {
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
        secret: IssuedSecret,
        idempotency: Option<IdempotencyTag>,
        controls: KeyControls,
        reply: Responder<KeyRecord>,
    },
    Rotate {
        caller: Caller,
        key_id: KeyId,
        overlap: i64,
        secret: IssuedSecret,
        idempotency: Option<IdempotencyTag>,
        reply: Responder<Rotation>,
    },
    Revoke {
        caller: Caller,
        key_id: KeyId,
        reason: Option<String>,
        reply: Responder<KeyRecord>,
    },
    RevokeAll {
        caller: Caller,
        workspace: WorkspaceId,
        reason: Option<String>,
        idempotency: Option<IdempotencyTag>,
        reply: Responder<RevokedAll>,
    },
    SetPolicy {
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
        controls: PolicyControls,
        reply: Responder<Policy>,
    },
    Update {
        caller: Caller,
        key_id: KeyId,
        changes: KeyChanges,
        reply: Responder<KeyRecord>,
    },
    SetDisabled {
        caller: Caller,
        key_id: KeyId,
        disabled: bool,
        reason: Option<String>,
        reply: Responder<KeyRecord>,
    },
    Verify {
        request_id: RequestId,
        key_id: KeyId,
        wants: VerifyRequirements,
        context: UsageContext,
        /// The address the source allow-list is checked against (see
        /// [`crate::state::decide_with_source`]).
        source: Option<std::net::IpAddr>,
        /// The secret's keyed hash when the key was found by its foreign digest: the key is
        /// re-hashed if the verification is allowed (docs/import.md).
        rehash: Option<KeyHash>,
        reply: Responder<Verdict>,
    },
    /// Imports keys known by a foreign hash, all or nothing (see [`crate::import`]).
    Import {
        caller: Caller,
        workspace: WorkspaceId,
        keys: Vec<crate::import::ImportSpec>,
        idempotency: Option<IdempotencyTag>,
        reply: Responder<Vec<crate::import::ImportedKey>>,
    },
    /// Configures (`Some(url, events)`) or disables (`None`) a workspace's webhook.
    SetWebhook {
        caller: Caller,
        workspace: WorkspaceId,
        config: Option<(String, Vec<String>)>,
        reply: Responder<Webhook>,
    },
    /// A top-up of a key's credits.
    SetCredits {
        caller: Caller,
        key_id: KeyId,
        change: crate::credits::CreditsChange,
        reply: Responder<(KeyRecord, crate::credits::KeyCredits)>,
    },
    /// Sets a key's rate limits (`key_id`) or its workspace's default (`None`).
    SetRateLimits {
        caller: Caller,
        workspace: WorkspaceId,
        key_id: Option<KeyId>,
        limits: Vec<keyledger_core::RateLimit>,
        reply: Responder<Vec<keyledger_core::RateLimit>>,
    },
    /// Leak reports (see [`crate::leaks`]), one outcome each, in order.
    ReportLeaks {
        request_id: RequestId,
        reporter: keyledger_core::LeakReporter,
        reports: Vec<crate::leaks::LeakReportIn>,
        only_active: bool,
        reply: Responder<Vec<crate::leaks::LeakOutcome>>,
    },
    /// Records that an admin looked up candidate leaked secrets (never a candidate): one
    /// `lookup` event each, in one batch. Answers the last event's seq.
    RecordLookups {
        caller: Caller,
        lookups: Vec<keyledger_core::Lookup>,
        reply: Responder<u64>,
    },
}
