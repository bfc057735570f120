//! [`PgWebhookAttempts`]: the webhook delivery attempts of the node holding the `jobs`
//! lease, in `keyledger_webhook_attempts` (schema version 3), so that every node's outbox
//! follows them (docs/webhooks.md, "Several nodes").
//!
//! The holder appends each attempt it recorded; every node reads the rows past the last it
//! applied, in `serial` order, skipping its own. A node's appends go through one connection
//! under one lock, so one publisher's serials are in commit order and a reader never passes
//! over one of them committed later; only while the lease changes hands (the old holder
//! finishing a slow attempt) can a row be passed over, which costs a re-send of that
//! delivery, never its loss. The attempt is opaque JSON here: what it holds is the ledger's
//! business.

use crate::error::describe;
use crate::session::Session;
use postgres::Config;
use std::time::Duration;

/// Most rows one [`PgWebhookAttempts::follow`] returns.
pub const FOLLOW_LIMIT: i64 = 1000;

/// Why the shared attempts could not be read or written (the database's error, described).
#[derive(Debug, thiserror::Error)]
#[error("webhook attempts in the database: {0}")]
pub struct AttemptsError(String);

fn failed(error: postgres::Error) -> AttemptsError {
    AttemptsError(describe(&error))
}

/// One attempt another node recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedAttempt {
    pub serial: u64,
    pub workspace: String,
    /// The attempt record as the holder wrote it (JSON).
    pub attempt: String,
}

/// What [`PgWebhookAttempts::follow`] read: other nodes' attempts, and the last serial
/// passed over (this node's own rows included), to follow from next time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    pub attempts: Vec<SharedAttempt>,
    pub last_serial: u64,
}

/// The shared attempts of the database `config` connects to, as node `node` sees them.
pub struct PgWebhookAttempts {
    session: Session,
    node: String,
}

impl std::fmt::Debug for PgWebhookAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection string: it may hold a password.
        f.debug_struct("PgWebhookAttempts").field("node", &self.node).finish_non_exhaustive()
    }
}

impl PgWebhookAttempts {
    /// Connects on first use.
    pub fn new(config: Config, node: String) -> Self {
        Self { session: Session::new(config), node }
    }

    /// Appends an attempt this node made.
    pub fn publish(&self, workspace: &str, attempt: &str) -> Result<(), AttemptsError> {
        self.session.run(
            |e| AttemptsError(e.to_string()),
            |c| {
                c.execute(
                    "INSERT INTO keyledger_webhook_attempts (node, workspace, attempt) VALUES ($1, $2, $3)",
                    &[&self.node, &workspace, &attempt],
                )
                .map(drop)
                .map_err(failed)
            },
        )
    }

    /// The rows past `after`, at most [`FOLLOW_LIMIT`]: other nodes' attempts, in order.
    pub fn follow(&self, after: u64) -> Result<Followed, AttemptsError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self.session.run(
            |e| AttemptsError(e.to_string()),
            |c| {
                c.query(
                    "SELECT serial, node, workspace, attempt FROM keyledger_webhook_attempts
                     WHERE serial > $1 ORDER BY serial LIMIT $2",
                    &[&after, &FOLLOW_LIMIT],
                )
                .map_err(failed)
            },
        )?;
        let mut followed = Followed { attempts: Vec::new(), last_serial: u64::try_from(after).unwrap_or(0) };
        for row in rows {
            let serial = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            followed.last_serial = followed.last_serial.max(serial);
            if row.get::<_, &str>(1) != self.node {
                followed.attempts.push(SharedAttempt { serial, workspace: row.get(2), attempt: row.get(3) });
            }
        }
        Ok(followed)
    }

    /// Deletes the rows recorded more than `older_than` ago.
    pub fn prune(&self, older_than: Duration) -> Result<u64, AttemptsError> {
        let seconds = older_than.as_secs_f64();
        self.session.run(
            |e| AttemptsError(e.to_string()),
            |c| {
                c.execute(
                    "DELETE FROM keyledger_webhook_attempts
                     WHERE recorded_at < now() - make_interval(secs => $1)",
                    &[&seconds],
                )
                .map_err(failed)
            },
        )
    }
}
