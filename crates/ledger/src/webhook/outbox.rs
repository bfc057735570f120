//! The webhook outbox: `webhooks.redb` in the data dir, kept apart from the projections
//! because it is not derived from the log alone (it remembers what was sent), so it is
//! never rebuilt, and its writes never wait on the projector's.
//!
//! | table | key → value |
//! | --- | --- |
//! | `webhook_meta` | `cursor` (next seq to dispatch), `next_order`, `next_attempt` → u64 |
//! | `webhook_pending` | delivery id → postcard([`Pending`]) |
//! | `webhook_due` | next attempt time (8) ‖ order (8) → delivery id |
//! | `webhook_pending_count` | workspace → undelivered deliveries (for the cap) |
//! | `webhook_attempts` | workspace ‖ 0 ‖ attempt no (8) → postcard([`Attempt`]) |
//! | `webhook_expiring` | key id (16) ‖ expires at (8) → () (`key.expiring` already queued; dropped once the expiry has passed), or a fork alarm's digest (24) → () |
//! | `webhook_settled` | delivery id → when another node settled it (µs): never queued here |
//!
//! With several nodes (docs/webhooks.md, "Several nodes") every node queues every delivery,
//! and the node holding the `jobs` lease sends them; the other nodes apply the holder's
//! attempts as it shares them ([`Outbox::apply_shared`]; `shared_serial` in `webhook_meta` is
//! the last one applied): a delivery settled there leaves their `webhook_pending` too (or,
//! not queued here yet, is marked never to be), and a retry keeps its schedule, so the node
//! that takes over sends only what the last holder had not settled.
//!
//! Guarantees: new deliveries and the dispatcher's cursor are written in one transaction,
//! so a crash never loses an event's notifications nor queues them twice (a re-dispatch of
//! an already queued id keeps the queued row); a delivery leaves `webhook_pending` only in
//! the transaction that records its final attempt, made durable at once.

use super::Notification;
use crate::projection::ProjectionError;
use keyledger_core::{KeyId, Timestamp, WorkspaceId};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

const META: TableDefinition<&str, u64> = TableDefinition::new("webhook_meta");
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_pending");
const DUE: TableDefinition<&[u8], &str> = TableDefinition::new("webhook_due");
const PENDING_COUNT: TableDefinition<&str, u64> = TableDefinition::new("webhook_pending_count");
const ATTEMPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("webhook_attempts");
const EXPIRING: TableDefinition<&[u8], ()> = TableDefinition::new("webhook_expiring");
const SETTLED: TableDefinition<&str, u64> = TableDefinition::new("webhook_settled");
/// Every attempt listed in `ATTEMPTS`, by [`recorded_key`]: one applied again (this node's
/// own, read back after a restart under a new node id; or read by two follows at once) is
/// not listed twice.
const RECORDED: TableDefinition<&[u8], ()> = TableDefinition::new("webhook_recorded");

const CURSOR: &str = "cursor";
const NEXT_ORDER: &str = "next_order";
const NEXT_ATTEMPT: &str = "next_attempt";
const SHARED_SERIAL: &str = "shared_serial";

/// A delivery not yet delivered nor given up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub workspace: WorkspaceId,
    pub kind: String,
    /// The exact JSON body to POST (fixed when queued; only the signature changes).
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub created_at: Timestamp,
    pub next_at: Timestamp,
    /// Queue order among deliveries due at the same instant.
    pub order: u64,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// Answered 2xx: done.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed, and it was the last attempt (or the delivery was too old): given up.
    Failed,
    /// Not sent: the webhook was disabled or no longer subscribes to the type.
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// One recorded attempt (never the secret, the signature or the URL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub delivery_id: String,
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed without an answer (a failure class such as `connection failed` or
    /// `refused destination`, never OS error text), or that it was cancelled.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
    pub next_retry_at: Option<Timestamp>,
}

/// The deliveries listing of one workspace.
#[derive(Clone, Debug, Default)]
pub struct DeliveryList {
    /// Most recent first.
    pub attempts: Vec<Attempt>,
    /// Deliveries waiting for a first attempt or a retry.
    pub pending: u64,
}

/// The outbox database.
pub struct Outbox {
    db: Database,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProjectionError> {
    postcard::to_allocvec(value).map_err(|e| ProjectionError::Corrupt(format!("webhook row: {e}")))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes).map_err(|e| ProjectionError::Corrupt(format!("webhook row: {e}")))
}

fn due_key(next_at: Timestamp, order: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(next_at.micros().max(0) as u64).to_be_bytes());
    key[8..].copy_from_slice(&order.to_be_bytes());
    key
}

fn attempts_prefix(workspace: &WorkspaceId) -> Vec<u8> {
    let mut key = workspace.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

/// What tells one attempt from every other: its delivery, its number and when it was made.
fn recorded_key(attempt: &Attempt) -> Vec<u8> {
    let mut key = attempt.delivery_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&attempt.attempt.to_be_bytes());
    key.extend_from_slice(&attempt.at.micros().to_be_bytes());
    key
}

fn next(txn: &WriteTransaction, counter: &str) -> Result<u64, ProjectionError> {
    let mut meta = txn.open_table(META)?;
    let value = meta.get(counter)?.map_or(0, |v| v.value());
    meta.insert(counter, value + 1)?;
    Ok(value)
}

impl Outbox {
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(META)?;
        txn.open_table(PENDING)?;
        txn.open_table(DUE)?;
        txn.open_table(PENDING_COUNT)?;
        txn.open_table(ATTEMPTS)?;
        txn.open_table(EXPIRING)?;
        txn.open_table(SETTLED)?;
        txn.open_table(RECORDED)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// The next seq to dispatch, or `None` on a fresh outbox.
    pub fn cursor(&self) -> Result<Option<u64>, ProjectionError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(CURSOR)?.map(|v| v.value()))
    }

    /// Queues `notifications` (skipping ids already queued, and counting those over the
    /// workspace's cap in `dropped`) and moves the cursor to `cursor`, in one transaction.
    /// Returns how many were queued.
    pub fn enqueue(
        &self,
        notifications: &[Notification],
        cursor: u64,
        max_pending: u64,
        dropped: &mut u64,
    ) -> Result<usize, ProjectionError> {
        let mut txn = self.db.begin_write()?;
        // A lost commit is redone from the log on restart; only queued rows need durability.
        txn.set_durability(if notifications.is_empty() { Durability::None } else { Durability::Immediate })?;
        let queued = Self::queue(&txn, notifications, max_pending, dropped)?;
        txn.open_table(META)?.insert(CURSOR, cursor)?;
        txn.commit()?;
        Ok(queued)
    }

    fn queue(
        txn: &WriteTransaction,
        notifications: &[Notification],
        max_pending: u64,
        dropped: &mut u64,
    ) -> Result<usize, ProjectionError> {
        let now = Timestamp::now();
        let mut queued = 0;
        for notification in notifications {
            let id = notification.id.as_str();
            if txn.open_table(PENDING)?.get(id)?.is_some() || txn.open_table(SETTLED)?.get(id)?.is_some() {
                continue;
            }
            let mut counts = txn.open_table(PENDING_COUNT)?;
            let count = counts.get(notification.workspace.as_str())?.map_or(0, |v| v.value());
            if count >= max_pending {
                *dropped += 1;
                continue;
            }
            counts.insert(notification.workspace.as_str(), count + 1)?;
            drop(counts);
            let order = next(txn, NEXT_ORDER)?;
            let pending = Pending {
                id: notification.id.clone(),
                workspace: notification.workspace.clone(),
                kind: notification.kind.to_owned(),
                body: notification.body.clone(),
                attempts: 0,
                created_at: now,
                next_at: now,
                order,
            };
            txn.open_table(PENDING)?.insert(pending.id.as_str(), encode(&pending)?.as_slice())?;
            txn.open_table(DUE)?.insert(due_key(now, order).as_slice(), pending.id.as_str())?;
            queued += 1;
        }
        Ok(queued)
    }

    /// Queues a once-only notification (`key.expiring` of a key and expiry,
    /// `log.fork_alarm` of an alarm) unless its marker records it as queued.
    pub fn enqueue_expiring(
        &self,
        notification: &Notification,
        marker: &[u8; 24],
        max_pending: u64,
        dropped: &mut u64,
    ) -> Result<bool, ProjectionError> {
        let txn = self.db.begin_write()?;
        if txn.open_table(EXPIRING)?.get(marker.as_slice())?.is_some() {
            return Ok(false);
        }
        let full_before = *dropped;
        let queued = Self::queue(&txn, std::slice::from_ref(notification), max_pending, dropped)?;
        // Queued now, or already queued or settled (by another node, with several): announced
        // either way. Only one a full queue dropped is tried again at the next scan.
        if *dropped == full_before {
            txn.open_table(EXPIRING)?.insert(marker.as_slice(), ())?;
        }
        txn.commit()?;
        Ok(queued > 0)
    }

    /// Whether this key and expiry were announced.
    pub fn expiring_announced(&self, marker: &[u8; 24]) -> Result<bool, ProjectionError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(EXPIRING)?.get(marker.as_slice())?.is_some())
    }

    /// The delivery due first, whether or not its time has come, among those of workspaces
    /// not in `busy` (whose deliveries another sender is attempting). The scan passes over
    /// the busy workspaces' deliveries only, at most their cap each.
    pub fn first_due_except(&self, busy: &BTreeSet<WorkspaceId>) -> Result<Option<Pending>, ProjectionError> {
        let txn = self.db.begin_read()?;
        let due = txn.open_table(DUE)?;
        let pending = txn.open_table(PENDING)?;
        for entry in due.iter()? {
            let (_, id) = entry?;
            let row =
                pending.get(id.value())?.ok_or_else(|| ProjectionError::Corrupt("webhook due row".into()))?;
            let candidate: Pending = decode(row.value())?;
            if !busy.contains(&candidate.workspace) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Records an attempt of `pending` and either reschedules it (`retry_at`) or removes it,
    /// durably. The attempt is numbered `pending.attempts + 1`.
    pub fn record(
        &self,
        pending: &Pending,
        mut attempt: Attempt,
        retry_at: Option<Timestamp>,
    ) -> Result<(), ProjectionError> {
        let txn = self.db.begin_write()?;
        attempt.next_retry_at = retry_at;
        // Another node's attempt may have been applied to the row meanwhile
        // ([`Self::apply_shared`]): settle the row as it is now, if it is still queued.
        let current = txn
            .open_table(PENDING)?
            .get(pending.id.as_str())?
            .map(|row| decode::<Pending>(row.value()))
            .transpose()?;
        if let Some(current) = current {
            Self::settle(&txn, &Pending { attempts: pending.attempts, ..current }, retry_at)?;
        }
        Self::append_attempt(&txn, &pending.workspace, &attempt)?;
        txn.commit()?;
        Ok(())
    }

    /// Reschedules `pending` after one more attempt (`retry_at`) or removes it.
    fn settle(
        txn: &WriteTransaction,
        pending: &Pending,
        retry_at: Option<Timestamp>,
    ) -> Result<(), ProjectionError> {
        let mut due = txn.open_table(DUE)?;
        due.remove(due_key(pending.next_at, pending.order).as_slice())?;
        let mut rows = txn.open_table(PENDING)?;
        match retry_at {
            Some(next_at) => {
                let updated = Pending { attempts: pending.attempts + 1, next_at, ..pending.clone() };
                rows.insert(pending.id.as_str(), encode(&updated)?.as_slice())?;
                due.insert(due_key(next_at, pending.order).as_slice(), pending.id.as_str())?;
            }
            None => {
                rows.remove(pending.id.as_str())?;
                let mut counts = txn.open_table(PENDING_COUNT)?;
                let count = counts.get(pending.workspace.as_str())?.map_or(0, |v| v.value());
                if count <= 1 {
                    counts.remove(pending.workspace.as_str())?;
                } else {
                    counts.insert(pending.workspace.as_str(), count - 1)?;
                }
            }
        }
        Ok(())
    }

    fn append_attempt(
        txn: &WriteTransaction,
        workspace: &WorkspaceId,
        attempt: &Attempt,
    ) -> Result<(), ProjectionError> {
        if txn.open_table(RECORDED)?.insert(recorded_key(attempt).as_slice(), ())?.is_some() {
            return Ok(());
        }
        let no = next(txn, NEXT_ATTEMPT)?;
        let mut key = attempts_prefix(workspace);
        key.extend_from_slice(&no.to_be_bytes());
        txn.open_table(ATTEMPTS)?.insert(key.as_slice(), encode(attempt)?.as_slice())?;
        Ok(())
    }

    /// The last serial of the attempts other nodes shared that [`Self::apply_shared`] applied.
    pub fn shared_serial(&self) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get(SHARED_SERIAL)?.map_or(0, |v| v.value()))
    }

    /// Applies, in one durable transaction, attempts the node holding the `jobs` lease made
    /// (in its order) and moves `shared_serial` to `last_serial`: each is recorded among the
    /// workspace's attempts; its delivery, if queued here, is rescheduled as the holder did
    /// or leaves the queue once settled (delivered, given up or cancelled); a settled one not
    /// queued here is marked so that it never is. Returns how many deliveries left the queue.
    pub fn apply_shared(
        &self,
        attempts: &[(WorkspaceId, Attempt)],
        last_serial: u64,
    ) -> Result<usize, ProjectionError> {
        let txn = self.db.begin_write()?;
        let mut settled = 0;
        for (workspace, attempt) in attempts {
            if txn.open_table(RECORDED)?.get(recorded_key(attempt).as_slice())?.is_some() {
                // Applied (or made) here already: its effect on the queue is there too.
                continue;
            }
            let id = attempt.delivery_id.as_str();
            let queued =
                txn.open_table(PENDING)?.get(id)?.map(|row| decode::<Pending>(row.value())).transpose()?;
            let retry_at = match (attempt.outcome, attempt.next_retry_at) {
                (AttemptOutcome::Retrying, Some(at)) => Some(at),
                // A retry without its time says nothing this node can act on.
                (AttemptOutcome::Retrying, None) => continue,
                _ => None,
            };
            match queued {
                Some(pending) if &pending.workspace == workspace => {
                    let pending = Pending { attempts: attempt.attempt.saturating_sub(1), ..pending };
                    Self::settle(&txn, &pending, retry_at)?;
                    settled += usize::from(retry_at.is_none());
                }
                Some(_) => continue,
                None if retry_at.is_none() => {
                    let at = u64::try_from(attempt.at.micros()).unwrap_or(0);
                    txn.open_table(SETTLED)?.insert(id, at)?;
                }
                None => {}
            }
            Self::append_attempt(&txn, workspace, attempt)?;
        }
        txn.open_table(META)?.insert(SHARED_SERIAL, last_serial)?;
        txn.commit()?;
        Ok(settled)
    }

    /// The most recent `limit` attempts of a workspace and its pending count.
    pub fn deliveries(&self, workspace: &WorkspaceId, limit: usize) -> Result<DeliveryList, ProjectionError> {
        let txn = self.db.begin_read()?;
        let prefix = attempts_prefix(workspace);
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 8]);
        let table = txn.open_table(ATTEMPTS)?;
        let mut attempts = Vec::new();
        for row in table.range(prefix.as_slice()..=end.as_slice())?.rev().take(limit) {
            attempts.push(decode(row?.1.value())?);
        }
        let pending = txn.open_table(PENDING_COUNT)?.get(workspace.as_str())?.map_or(0, |v| v.value());
        Ok(DeliveryList { attempts, pending })
    }

    /// Drops attempt records, and marks of deliveries settled elsewhere, older than `before`.
    pub fn prune_attempts(&self, before: Timestamp) -> Result<(), ProjectionError> {
        let txn = self.db.begin_write()?;
        let mut table = txn.open_table(ATTEMPTS)?;
        let mut stale = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let attempt: Attempt = decode(value.value())?;
            if attempt.at < before {
                stale.push((key.value().to_vec(), recorded_key(&attempt)));
            }
        }
        let mut recorded = txn.open_table(RECORDED)?;
        for (key, mark) in stale {
            table.remove(key.as_slice())?;
            recorded.remove(mark.as_slice())?;
        }
        drop((table, recorded));
        let mut settled = txn.open_table(SETTLED)?;
        let before = u64::try_from(before.micros()).unwrap_or(0);
        settled.retain(|_, at| at >= before)?;
        drop(settled);
        txn.commit()?;
        Ok(())
    }

    /// The marker recording that `key_id`'s `key.expiring` was announced for `expires_at`.
    pub fn expiring_marker(key_id: &KeyId, expires_at: Timestamp) -> [u8; 24] {
        let mut marker = [0u8; 24];
        marker[..16].copy_from_slice(key_id.as_bytes());
        marker[16..].copy_from_slice(&expires_at.micros().to_be_bytes());
        marker
    }

    /// Drops the `key.expiring` markers ([`Self::expiring_marker`]) of expiries already past:
    /// such a key has expired and is never announced again for that expiry (a new expiry gets
    /// a marker of its own). A marker is a key's only if `is_key` knows its first 16 bytes as
    /// a key id; the once-only markers of fork alarms (digests) share the table and are kept.
    /// Returns how many were dropped.
    pub fn prune_expiring(
        &self,
        now: Timestamp,
        is_key: impl Fn(&[u8; 16]) -> bool,
    ) -> Result<u64, ProjectionError> {
        let txn = self.db.begin_write()?;
        let mut dropped = 0;
        let mut table = txn.open_table(EXPIRING)?;
        table.retain(|marker, ()| {
            let past = marker
                .split_first_chunk::<16>()
                .and_then(|(key, rest)| Some((key, rest.first_chunk::<8>()?)))
                .is_some_and(|(key, at)| i64::from_be_bytes(*at) < now.micros() && is_key(key));
            dropped += u64::from(past);
            !past
        })?;
        drop(table);
        txn.commit()?;
        Ok(dropped)
    }

    /// Makes every commit durable (at shutdown).
    pub fn persist(&self) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(id: &str, workspace: &WorkspaceId) -> Notification {
        Notification { id: id.into(), kind: "key.created", workspace: workspace.clone(), body: "{}".into() }
    }

    fn attempt(id: &str, number: u32, outcome: AttemptOutcome, next_retry_at: Option<Timestamp>) -> Attempt {
        Attempt {
            delivery_id: id.into(),
            kind: "key.created".into(),
            attempt: number,
            at: Timestamp::now(),
            status: Some(if outcome == AttemptOutcome::Delivered { 200 } else { 503 }),
            error: None,
            duration_ms: 3,
            outcome,
            next_retry_at,
        }
    }

    /// Another node's attempts, applied here: a retry keeps the holder's schedule and count,
    /// a settled delivery leaves the queue, one settled before it was queued here never is,
    /// and every one is listed among the workspace's attempts.
    #[test]
    fn the_holders_attempts_applied_here_reschedule_settle_and_keep_out_what_it_settled() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("webhooks.redb")).unwrap();
        let acme: WorkspaceId = "acme".parse().unwrap();
        let queue = |ids: &[&str]| {
            let notifications: Vec<_> = ids.iter().map(|id| notification(id, &acme)).collect();
            outbox.enqueue(&notifications, 0, 100, &mut 0).unwrap()
        };
        assert_eq!(queue(&["d1", "d2"]), 2);
        let later = Timestamp::now().plus_micros(3_600_000_000);
        let retrying = attempt("d1", 1, AttemptOutcome::Retrying, Some(later));
        assert_eq!(outbox.apply_shared(&[(acme.clone(), retrying)], 7).unwrap(), 0);
        assert_eq!(outbox.shared_serial().unwrap(), 7);
        let first = outbox.first_due_except(&BTreeSet::new()).unwrap().unwrap();
        assert_eq!(first.id, "d2", "d1 waits for the holder's retry time");
        assert_eq!(outbox.deliveries(&acme, 10).unwrap().pending, 2);

        let settled = [
            (acme.clone(), attempt("d1", 2, AttemptOutcome::Delivered, None)),
            (acme.clone(), attempt("d3", 1, AttemptOutcome::Delivered, None)),
        ];
        assert_eq!(outbox.apply_shared(&settled, 9).unwrap(), 1);
        let list = outbox.deliveries(&acme, 10).unwrap();
        assert_eq!(list.pending, 1);
        assert_eq!(list.attempts.len(), 3);
        assert_eq!(outbox.first_due_except(&BTreeSet::new()).unwrap().unwrap().id, "d2");
        assert_eq!(queue(&["d3"]), 0, "settled by the holder before this node queued it");

        // Marks go with the attempt records they are as old as.
        outbox.prune_attempts(Timestamp::now().plus_micros(1)).unwrap();
        assert_eq!(queue(&["d3"]), 1);
    }

    /// An attempt applied again (this node's own, read back under the new node id a restart
    /// gave it, or read by two follows at once) is listed once and changes nothing more;
    /// its mark goes with its record when pruned.
    #[test]
    fn an_attempt_applied_again_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("webhooks.redb")).unwrap();
        let acme: WorkspaceId = "acme".parse().unwrap();
        outbox.enqueue(&[notification("d1", &acme), notification("d2", &acme)], 0, 100, &mut 0).unwrap();
        let taken = outbox.first_due_except(&BTreeSet::new()).unwrap().unwrap();
        let later = Timestamp::now().plus_micros(3_600_000_000);
        let failed = attempt("d1", 1, AttemptOutcome::Retrying, Some(later));
        outbox.record(&taken, failed.clone(), Some(later)).unwrap();
        let delivered = attempt("d2", 1, AttemptOutcome::Delivered, None);
        let shared = [(acme.clone(), failed.clone()), (acme.clone(), delivered.clone())];
        assert_eq!(outbox.apply_shared(&shared, 1).unwrap(), 1);
        assert_eq!(outbox.apply_shared(&shared, 2).unwrap(), 0, "nothing settled twice");
        let list = outbox.deliveries(&acme, 10).unwrap();
        assert_eq!(list.attempts.len(), 2, "each attempt listed once: {:?}", list.attempts);
        assert_eq!(list.pending, 1);
        assert_eq!(outbox.shared_serial().unwrap(), 2);
        // The same delivery's next attempt is another one.
        let again = attempt("d1", 2, AttemptOutcome::Delivered, None);
        assert_eq!(outbox.apply_shared(&[(acme.clone(), again)], 3).unwrap(), 1);
        assert_eq!(outbox.deliveries(&acme, 10).unwrap().attempts.len(), 3);

        outbox.prune_attempts(Timestamp::now().plus_micros(1)).unwrap();
        assert_eq!(outbox.apply_shared(&[(acme.clone(), delivered)], 4).unwrap(), 0);
        assert_eq!(outbox.deliveries(&acme, 10).unwrap().attempts.len(), 1, "listed again once pruned");
    }

    /// A once-only notification another node already settled is announced here too, so the
    /// expiry scan does not try it again every time; one dropped for a full queue is not.
    #[test]
    fn a_once_only_notification_settled_elsewhere_counts_as_announced() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("webhooks.redb")).unwrap();
        let acme: WorkspaceId = "acme".parse().unwrap();
        let expiring = |id: &str| Notification { kind: "key.expiring", ..notification(id, &acme) };
        let delivered = attempt("exp-1", 1, AttemptOutcome::Delivered, None);
        outbox.apply_shared(&[(acme.clone(), delivered)], 1).unwrap();
        let (settled, full) = ([1u8; 24], [2u8; 24]);
        assert!(!outbox.enqueue_expiring(&expiring("exp-1"), &settled, 100, &mut 0).unwrap());
        assert!(outbox.expiring_announced(&settled).unwrap(), "settled by the holder: announced");
        let mut dropped = 0;
        assert!(!outbox.enqueue_expiring(&expiring("exp-2"), &full, 0, &mut dropped).unwrap());
        assert_eq!(dropped, 1);
        assert!(!outbox.expiring_announced(&full).unwrap(), "dropped: tried again at the next scan");
        assert!(outbox.enqueue_expiring(&expiring("exp-2"), &full, 100, &mut dropped).unwrap());
        assert!(outbox.expiring_announced(&full).unwrap());
    }

    /// The markers of expiries already past are dropped; a future expiry's, and a past one
    /// whose first 16 bytes name no key (a fork alarm's digest), are kept.
    #[test]
    fn the_markers_of_past_expiries_are_pruned_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("webhooks.redb")).unwrap();
        let acme: WorkspaceId = "acme".parse().unwrap();
        let now = Timestamp::now();
        let key = KeyId::from_bytes([1u8; 16]);
        let past = Outbox::expiring_marker(&key, now.plus_micros(-1_000_000));
        let future = Outbox::expiring_marker(&key, now.plus_micros(1_000_000));
        // Read as a key's marker, its time (0) is long past.
        let not_a_key = [0u8; 24];
        for (i, m) in [past, future, not_a_key].iter().enumerate() {
            let notification =
                Notification { kind: "key.expiring", ..notification(&format!("n-{i}"), &acme) };
            assert!(outbox.enqueue_expiring(&notification, m, 100, &mut 0).unwrap());
        }
        assert_eq!(outbox.prune_expiring(now, |bytes| bytes == key.as_bytes()).unwrap(), 1);
        assert!(!outbox.expiring_announced(&past).unwrap(), "past: pruned");
        assert!(outbox.expiring_announced(&future).unwrap());
        assert!(outbox.expiring_announced(&not_a_key).unwrap());
    }

    /// A sender records its attempt on the row as it is when it records, so another node's
    /// attempt applied meanwhile leaves no due entry behind and no count wrong.
    #[test]
    fn a_local_attempt_recorded_after_a_shared_one_settles_the_row_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("webhooks.redb")).unwrap();
        let acme: WorkspaceId = "acme".parse().unwrap();
        outbox.enqueue(&[notification("d1", &acme), notification("d2", &acme)], 0, 100, &mut 0).unwrap();
        let taken = outbox.first_due_except(&BTreeSet::new()).unwrap().unwrap();
        assert_eq!(taken.id, "d1");
        let later = Timestamp::now().plus_micros(3_600_000_000);
        outbox
            .apply_shared(&[(acme.clone(), attempt("d1", 1, AttemptOutcome::Retrying, Some(later)))], 1)
            .unwrap();
        outbox.record(&taken, attempt("d1", 1, AttemptOutcome::Delivered, None), None).unwrap();
        assert_eq!(outbox.first_due_except(&BTreeSet::new()).unwrap().unwrap().id, "d2");
        assert_eq!(outbox.deliveries(&acme, 10).unwrap().pending, 1);
        outbox.apply_shared(&[(acme.clone(), attempt("d2", 1, AttemptOutcome::Delivered, None))], 2).unwrap();
        let d2 = Pending { id: "d2".into(), ..taken };
        outbox.record(&d2, attempt("d2", 1, AttemptOutcome::Delivered, None), None).unwrap();
        assert_eq!(outbox.deliveries(&acme, 10).unwrap().pending, 0, "not counted down twice");
        assert!(outbox.first_due_except(&BTreeSet::new()).unwrap().is_none());
    }
}
