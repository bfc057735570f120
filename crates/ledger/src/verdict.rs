//! [`Verdict`]: what a verification of a known key answers, and nothing more.
//!
//! The sequencer decides a verification under the registry's write lock, so what it builds
//! there delays every other command. A verdict therefore holds only what the verify answer
//! and its usage event need (docs/api.md, `POST /v1/verify`): the key's id, workspace,
//! environment, scopes, owner and expiry, the decision and the seq of the event recording
//! it. The workspace, scope list and owner are the registry's interned values, shared
//! (a reference count each), never copied: building a verdict allocates only its box.
//!
//! **Guarantee:** a verdict's fields are the key's values as of the verification's own
//! event (the sequencer builds it right after appending that event).

use keyledger_core::{DenyReason, Environment, KeyId, Timestamp, WorkspaceId};
use std::sync::Arc;

/// The decision on a known key, as recorded in the log at `seq`.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub key: VerifiedKey,
    pub outcome: Result<(), DenyReason>,
    /// The seq of the `used` or `denied` event recording this decision.
    pub seq: u64,
    /// The key's credit balance after this verification; `None` for a key without credits.
    pub credits_remaining: Option<u64>,
    /// Each rate limit applied, with what is left of it (nothing spent when refused);
    /// `None` when none applies (boxed: most keys have none, and a verdict stays small).
    pub ratelimits: Option<Box<Vec<crate::ratelimit::LimitStatus>>>,
}

/// The fields of the verified key a verify answer shows (never its hash, hint or metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    pub key_id: KeyId,
    pub workspace: Arc<WorkspaceId>,
    pub environment: Environment,
    /// Every scope the key holds, sorted.
    pub scopes: Arc<Vec<String>>,
    pub owner: Option<Arc<String>>,
    pub expires_at: Option<Timestamp>,
}
