//! The authority rule: which admin key may do what to which key. Decided here, once, on the
//! writer thread, for every command that issues or changes a key (see docs/security.md,
//! "Who may act on which key").
//!
//! HTTP handlers check scopes and visibility too, but only as an early answer: what they
//! read may be stale, and a handler can be forgotten. The sequencer calls this module for
//! every key command against the registry as it is when the command is sequenced, so the
//! rule holds whatever path a command took.
//!
//! The rule, for a caller that is an admin key (keyledger itself, at `init`, and the
//! offline `admin recover` are not restricted):
//!
//! * **Visibility.** A key of a workspace outside the caller's resources answers 404, as if
//!   it did not exist (empty resources = every workspace).
//! * **Scopes of the command.** Writing keys needs `ledger:keys:write`; writing `_ledger`
//!   keys, policies and webhooks also needs `ledger:admin`.
//! * **Domination.** A `_ledger` key may be issued, rotated, changed, disabled, enabled or
//!   revoked only by a caller holding every scope it holds (except [`INTROSPECT`], which
//!   grants nothing a caller could lack), whose resources cover its resources (a key with
//!   empty resources, reaching every workspace, is covered only by a caller with empty
//!   resources) and whose source allow-list covers its list (a key without a list, usable
//!   from anywhere, is covered only by a caller without one). A workspace key's scopes and
//!   sources are the application's, not keyledger's: covering its workspace suffices.
//! * **Expiry.** A caller with an expiry never gives a key (its own included) an expiry
//!   later than its own, nor none at all.
//!
//! And one rule for every caller: the last active key without expiry holding every admin
//! scope over every workspace (a *lasting full* admin key) cannot be revoked, disabled,
//! given an expiry or narrowed, so there is always a way to act. A full key that will
//! expire (a rotation's overlap gives the old key one) does not count: it would lapse. If it is lost anyway (its secret forgotten, or it
//! expired), `keyledger admin recover` issues a new one (docs/operations.md).

use crate::commands::Caller;
use crate::error::LedgerError;
use crate::state::{KeyStatus, KeyView, LedgerState};
use keyledger_core::sources::is_narrowing;
use keyledger_core::{KeyId, SourceNet, Timestamp, WorkspaceId};

/// Every scope of keyledger's own API.
pub const ADMIN_SCOPES: [&str; 5] =
    ["ledger:admin", "ledger:audit:read", "ledger:export", "ledger:keys:read", "ledger:keys:write"];

/// The scope of RFC 7662 token introspection (`POST /oauth2/introspect`, docs/api.md). It
/// lets a gateway ask what `/v1/verify` answers anyone, with the gateway's own credential
/// checked first, and nothing else: no route of the admin API accepts it. It is therefore
/// not one of [`ADMIN_SCOPES`] (a *full* admin key needs not hold it, and `init` does not
/// give it), and domination ignores it: any caller that may write `_ledger` keys may issue
/// a key holding it.
pub const INTROSPECT: &str = "ledger:introspect";

/// Every scope a `_ledger` key may hold: [`ADMIN_SCOPES`] and [`INTROSPECT`].
pub const LEDGER_SCOPES: [&str; 6] = [
    "ledger:admin",
    "ledger:audit:read",
    "ledger:export",
    INTROSPECT,
    "ledger:keys:read",
    "ledger:keys:write",
];

/// Scope needed to write keys.
const KEYS_WRITE: &str = "ledger:keys:write";
/// Scope needed, besides [`KEYS_WRITE`], to write `_ledger` keys, policies and webhooks.
const ADMIN: &str = "ledger:admin";

/// What a key is, as far as authority goes.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub key_id: Option<KeyId>,
    pub workspace: &'a WorkspaceId,
    /// Sorted, as the registry keeps them.
    pub scopes: &'a [String],
    /// Sorted; empty = every workspace.
    pub resources: &'a [String],
    /// Its source allow-list; empty = any address.
    pub sources: &'a [SourceNet],
}

impl<'a> Target<'a> {
    pub fn of(key: &KeyView<'a>) -> Self {
        Target {
            key_id: Some(key.key_id()),
            workspace: key.workspace(),
            scopes: key.scopes(),
            resources: key.resources(),
            sources: key.allowed_sources().map(|list| list.sources.as_slice()).unwrap_or_default(),
        }
    }
}

/// The powers of the caller of one command, read from the registry at sequencing time.
#[derive(Clone, Debug)]
pub struct Authority {
    /// `None`: keyledger itself (init, recovery), which no rule restricts.
    admin: Option<Powers>,
}

#[derive(Clone, Debug)]
struct Powers {
    key_id: KeyId,
    scopes: Vec<String>,
    resources: Vec<String>,
    /// Empty: usable from any address.
    sources: Vec<SourceNet>,
    expires_at: Option<Timestamp>,
}

impl Authority {
    /// The caller's powers. An admin caller must be known (the sequencer has already checked
    /// that its key is active).
    pub fn of(state: &LedgerState, caller: &Caller) -> Result<Self, LedgerError> {
        let Some(key_id) = caller.admin_key() else { return Ok(Authority { admin: None }) };
        let key = state.view(&key_id).ok_or(LedgerError::Unauthorized(crate::error::AuthError::Unknown))?;
        Ok(Authority {
            admin: Some(Powers {
                key_id,
                scopes: key.scopes().to_vec(),
                resources: key.resources().to_vec(),
                sources: key.allowed_sources().map(|list| list.sources.clone()).unwrap_or_default(),
                expires_at: key.expires_at(),
            }),
        })
    }

    /// The calling admin key, if the caller is one.
    pub fn key_id(&self) -> Option<KeyId> {
        self.admin.as_ref().map(|p| p.key_id)
    }

    /// 404 for a workspace outside the caller's resources, exactly as for an absent one.
    pub fn see_workspace(&self, workspace: &WorkspaceId) -> Result<(), LedgerError> {
        match &self.admin {
            Some(p) if !covers_workspace(&p.resources, workspace) => {
                Err(LedgerError::NotFound(format!("no workspace {workspace}")))
            }
            _ => Ok(()),
        }
    }

    /// 403 unless the caller holds `scope`.
    pub fn require(&self, scope: &str) -> Result<(), LedgerError> {
        match &self.admin {
            Some(p) if !holds(&p.scopes, scope) => {
                Err(LedgerError::Forbidden(format!("this admin key lacks the scope `{scope}`")))
            }
            _ => Ok(()),
        }
    }

    /// Policies and webhooks of `workspace`: visible, and `ledger:admin`.
    pub fn configure(&self, workspace: &WorkspaceId) -> Result<(), LedgerError> {
        self.see_workspace(workspace)?;
        self.require(ADMIN)
    }

    /// Writing the keys of `workspace` at all (revoke-all): visible, and the write scopes.
    pub fn write_keys_of(&self, workspace: &WorkspaceId) -> Result<(), LedgerError> {
        self.see_workspace(workspace)?;
        self.write_scopes(workspace)
    }

    /// May the caller issue a key like `target` expiring at `expires_at`?
    pub fn issue(&self, target: Target<'_>, expires_at: Option<Timestamp>) -> Result<(), LedgerError> {
        self.see_workspace(target.workspace)?;
        self.write_scopes(target.workspace)?;
        self.dominate(target, "issue")?;
        self.limit_expiry(expires_at)
    }

    /// May the caller act on the existing key `target` (rotate, change, disable, enable,
    /// revoke)? 404 if it may not see it, 403 naming what it lacks otherwise.
    pub fn act_on(&self, target: Target<'_>, verb: &str) -> Result<(), LedgerError> {
        if let (Some(p), Some(key_id)) = (&self.admin, target.key_id)
            && !covers_workspace(&p.resources, target.workspace)
        {
            return Err(LedgerError::NotFound(format!("no key {key_id}")));
        }
        self.write_scopes(target.workspace)?;
        self.dominate(target, verb)
    }

    /// Whether [`Self::act_on`] would allow it, for revoke-all's choice of keys.
    pub fn dominates(&self, target: Target<'_>) -> bool {
        self.act_on(target, "revoke").is_ok()
    }

    /// 403 if the caller has an expiry and `expires_at` is later, or none.
    pub fn limit_expiry(&self, expires_at: Option<Timestamp>) -> Result<(), LedgerError> {
        let Some(Powers { expires_at: Some(own), .. }) = &self.admin else { return Ok(()) };
        match expires_at {
            Some(at) if at <= *own => Ok(()),
            _ => Err(LedgerError::Forbidden(format!(
                "this admin key expires at {}; it cannot give a key a later expiry, or none",
                own.to_rfc3339()
            ))),
        }
    }

    fn write_scopes(&self, workspace: &WorkspaceId) -> Result<(), LedgerError> {
        self.require(KEYS_WRITE)?;
        if workspace.is_ledger() {
            self.require(ADMIN)?;
        }
        Ok(())
    }

    fn dominate(&self, target: Target<'_>, verb: &str) -> Result<(), LedgerError> {
        let (Some(p), true) = (&self.admin, target.workspace.is_ledger()) else { return Ok(()) };
        let which = target.key_id.map_or_else(|| "a key".to_owned(), |id| format!("key {id}"));
        if let Some(scope) = target.scopes.iter().find(|s| *s != INTROSPECT && !holds(&p.scopes, s)) {
            return Err(LedgerError::Forbidden(format!(
                "cannot {verb} {which}: it holds the scope `{scope}`, which this admin key lacks"
            )));
        }
        if !covers_resources(&p.resources, target.resources) {
            return Err(LedgerError::Forbidden(format!(
                "cannot {verb} {which}: it reaches workspaces beyond this admin key's resources"
            )));
        }
        if !is_narrowing(&p.sources, target.sources) {
            return Err(LedgerError::Forbidden(format!(
                "cannot {verb} {which}: it may be used from addresses beyond this admin key's source allow-list"
            )));
        }
        Ok(())
    }
}

fn holds(scopes: &[String], scope: &str) -> bool {
    scopes.iter().any(|s| s == scope)
}

/// Empty resources cover every workspace.
fn covers_workspace(resources: &[String], workspace: &WorkspaceId) -> bool {
    resources.is_empty() || resources.iter().any(|r| r == workspace.as_str())
}

/// `mine` covers `theirs` if it reaches every workspace `theirs` reaches.
fn covers_resources(mine: &[String], theirs: &[String]) -> bool {
    mine.is_empty() || (!theirs.is_empty() && theirs.iter().all(|r| holds(mine, r)))
}

/// A `_ledger` key holding every admin scope over every workspace.
pub fn is_full_admin(workspace: &WorkspaceId, scopes: &[String], resources: &[String]) -> bool {
    workspace.is_ledger() && resources.is_empty() && ADMIN_SCOPES.iter().all(|s| holds(scopes, s))
}

/// A full admin key that lasts: active at `now` (not disabled, revoked or expired) and
/// without expiry. Only such a key counts as a survivor for the no-lockout rule: one that
/// will expire (a rotation's overlap gives the old key an expiry) would leave nothing able
/// to act once it lapses.
pub fn is_lasting_full_admin(key: &KeyView<'_>, now: Timestamp) -> bool {
    key.status(now) == KeyStatus::Active
        && key.expires_at().is_none()
        && is_full_admin(key.workspace(), key.scopes(), key.resources())
}

/// Whether `key_id` is the only lasting full admin key at `now` (see
/// [`is_lasting_full_admin`]).
pub fn is_last_full_admin(state: &LedgerState, key_id: &KeyId, now: Timestamp) -> bool {
    let Some(key) = state.view(key_id) else { return false };
    is_lasting_full_admin(&key, now)
        && !state
            .workspace_keys(&WorkspaceId::ledger())
            .any(|k| k.key_id() != *key_id && is_lasting_full_admin(&k, now))
}

/// 409 if `key_id` is the last lasting full admin key, which the command would `undo`.
pub fn keep_last_full_admin(
    state: &LedgerState,
    key_id: &KeyId,
    now: Timestamp,
    undo: &str,
) -> Result<(), LedgerError> {
    if is_last_full_admin(state, key_id, now) {
        return Err(LedgerError::Conflict(format!(
            "key {key_id} is the last active admin key without expiry holding every admin scope over all workspaces; \
             {undo} it would leave no key able to administer keyledger. Issue another such key first \
             (or see `keyledger admin recover` in docs/operations.md)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn powers(scopes: &[&str]) -> Authority {
        Authority {
            admin: Some(Powers {
                key_id: KeyId::from_bytes([7; 16]),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                resources: Vec::new(),
                sources: Vec::new(),
                expires_at: None,
            }),
        }
    }

    fn ledger_key<'a>(workspace: &'a WorkspaceId, scopes: &'a [String]) -> Target<'a> {
        Target { key_id: None, workspace, scopes, resources: &[], sources: &[] }
    }

    #[test]
    fn a_writer_of_ledger_keys_may_issue_an_introspection_key_without_holding_its_scope() {
        let ledger = WorkspaceId::ledger();
        let introspect = vec![INTROSPECT.to_owned()];
        let full = powers(&ADMIN_SCOPES);
        full.issue(ledger_key(&ledger, &introspect), None).expect("a full admin key issues it");
        // Any other scope the caller lacks still blocks it.
        let narrow = powers(&["ledger:admin", "ledger:keys:write"]);
        let both = vec![INTROSPECT.to_owned(), "ledger:export".to_owned()];
        assert!(narrow.issue(ledger_key(&ledger, &introspect), None).is_ok());
        assert!(matches!(narrow.issue(ledger_key(&ledger, &both), None), Err(LedgerError::Forbidden(_))));
    }

    #[test]
    fn the_introspection_scope_alone_writes_nothing_and_is_no_full_admin() {
        let introspector = powers(&[INTROSPECT]);
        let ledger = WorkspaceId::ledger();
        let acme: WorkspaceId = "acme".parse().expect("workspace");
        assert!(matches!(introspector.write_keys_of(&acme), Err(LedgerError::Forbidden(_))));
        assert!(matches!(introspector.configure(&acme), Err(LedgerError::Forbidden(_))));
        let introspect = vec![INTROSPECT.to_owned()];
        assert!(introspector.issue(ledger_key(&ledger, &introspect), None).is_err());
        let mut every: Vec<String> = LEDGER_SCOPES.iter().map(|s| s.to_string()).collect();
        assert!(is_full_admin(&ledger, &every, &[]));
        every.retain(|s| s != "ledger:admin");
        assert!(!is_full_admin(&ledger, &every, &[]), "the introspection scope makes no key full");
    }

    #[test]
    fn an_admin_key_with_a_source_list_issues_admin_keys_only_inside_it() {
        let ledger = WorkspaceId::ledger();
        let scopes = vec!["ledger:keys:read".to_owned()];
        let nets = |list: &[&str]| keyledger_core::sources::parse_sources(list).unwrap();
        let mut listed = powers(&ADMIN_SCOPES);
        if let Some(p) = &mut listed.admin {
            p.sources = nets(&["10.0.0.0/8"]);
        }
        let with = |sources: &'static [SourceNet]| Target { sources, ..ledger_key(&ledger, &scopes) };
        let inside: &'static [SourceNet] = Box::leak(nets(&["10.1.0.0/16"]).into_boxed_slice());
        let wider: &'static [SourceNet] = Box::leak(nets(&["10.0.0.0/8", "192.0.2.1"]).into_boxed_slice());
        assert!(listed.issue(with(inside), None).is_ok());
        for target in [with(&[]), with(wider)] {
            let refused = listed.issue(target, None);
            assert!(
                matches!(&refused, Err(LedgerError::Forbidden(m)) if m.contains("source allow-list")),
                "{refused:?}"
            );
        }
        // A workspace key's sources are the application's.
        let acme: WorkspaceId = "acme".parse().unwrap();
        assert!(listed.issue(Target { workspace: &acme, ..with(&[]) }, None).is_ok());
        // A caller without a list covers any.
        assert!(powers(&ADMIN_SCOPES).issue(with(wider), None).is_ok());
    }
}
