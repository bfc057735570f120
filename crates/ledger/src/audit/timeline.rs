//! A key's validity timeline: what it was at creation and every later change that affects
//! whether (and as what) it was valid, so `active_at` can reconstruct any instant without
//! the log. The fold mirrors [`crate::state::LedgerState::apply`] field for field.

use crate::state::KeyStatus;
use keyledger_core::{Actor, Environment, Event, KeyId, Payload, Timestamp, WorkspaceId};
use serde::{Deserialize, Serialize};

/// A key's descriptive and validity fields at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub scopes: Vec<String>,
    pub resources: Vec<String>,
    pub owner: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub rotated_to: Option<KeyId>,
    pub disabled: bool,
}

impl Snapshot {
    /// Status at `at`, with the registry's precedence (revoked, expired, disabled).
    pub fn status(&self, at: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= at) {
            KeyStatus::Expired
        } else if self.disabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }
}

/// One change after creation, at the time of its event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Updated {
        name: Option<String>,
        owner: Option<Option<String>>,
        expires_at: Option<Option<Timestamp>>,
        scopes: Option<Vec<String>>,
        resources: Option<Vec<String>>,
    },
    Rotated {
        to: KeyId,
        valid_until: Option<Timestamp>,
    },
    Revoked,
    Disabled,
    Enabled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub key_id: KeyId,
    pub workspace: WorkspaceId,
    pub hint: String,
    pub environment: Environment,
    pub created_at: Timestamp,
    pub created_by: Actor,
    pub rotated_from: Option<KeyId>,
    pub initial: Snapshot,
    /// In seq order (so in time order).
    pub changes: Vec<(Timestamp, Change)>,
}

impl Timeline {
    /// The timeline of a `created` event; `None` for any other event.
    pub fn from_created(event: &Event) -> Option<Self> {
        let Payload::Created(c) = &event.payload else { return None };
        Some(Self {
            key_id: c.key_id,
            workspace: c.workspace.clone(),
            hint: c.hint.clone(),
            environment: c.environment,
            created_at: event.at,
            created_by: event.actor.clone(),
            rotated_from: c.rotated_from,
            initial: Snapshot {
                name: c.name.clone(),
                scopes: c.scopes.clone(),
                resources: c.resources.clone(),
                owner: c.owner.clone(),
                expires_at: c.expires_at,
                revoked_at: None,
                rotated_to: None,
                disabled: false,
            },
            changes: Vec::new(),
        })
    }

    /// Records a later event about this key; returns whether it changed the timeline.
    pub fn record(&mut self, event: &Event) -> bool {
        let change = match &event.payload {
            Payload::Updated(u) => Change::Updated {
                name: u.name.clone(),
                owner: u.owner.clone(),
                expires_at: u.expires_at,
                scopes: u.scopes.clone(),
                resources: u.resources.clone(),
            },
            Payload::Rotated(r) => Change::Rotated { to: r.rotated_to, valid_until: r.valid_until },
            Payload::Revoked(_) => Change::Revoked,
            Payload::Disabled(_) => Change::Disabled,
            Payload::Enabled(_) => Change::Enabled,
            _ => return false,
        };
        self.changes.push((event.at, change));
        true
    }

    /// The key as it stood at `at` (every event at or before `at` applied), or `None` if
    /// it did not exist yet.
    pub fn at(&self, at: Timestamp) -> Option<Snapshot> {
        if self.created_at > at {
            return None;
        }
        let mut s = self.initial.clone();
        for (when, change) in &self.changes {
            if *when > at {
                break;
            }
            match change {
                Change::Updated { name, owner, expires_at, scopes, resources } => {
                    if let Some(name) = name {
                        s.name = name.clone();
                    }
                    if let Some(owner) = owner {
                        s.owner = owner.clone();
                    }
                    if let Some(expires_at) = expires_at {
                        s.expires_at = *expires_at;
                    }
                    if let Some(scopes) = scopes {
                        s.scopes = scopes.clone();
                    }
                    if let Some(resources) = resources {
                        s.resources = resources.clone();
                    }
                }
                Change::Rotated { to, valid_until } => {
                    s.rotated_to = Some(*to);
                    if let Some(until) = valid_until {
                        s.expires_at = Some(s.expires_at.map_or(*until, |e| e.min(*until)));
                    }
                }
                Change::Revoked => {
                    if s.revoked_at.is_none() {
                        s.revoked_at = Some(*when);
                    }
                }
                Change::Disabled => s.disabled = true,
                Change::Enabled => s.disabled = false,
            }
        }
        Some(s)
    }
}
