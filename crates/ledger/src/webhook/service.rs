//! The webhook threads: the dispatcher (log → outbox) and the senders (outbox → HTTP).
//! None holds a lock another component waits for while doing I/O: the registry's read
//! lock is taken only to copy a workspace's configuration.
//!
//! The senders ([`WebhookOptions::senders`] threads) take the earliest due delivery of a
//! workspace no other sender is attempting: a workspace's deliveries are attempted one at a
//! time, in due order, and a receiver that is slow or never answers holds one sender (each
//! attempt within its timeout) while the others deliver to every other workspace
//! (docs/webhooks.md, "Delivery, retries, limits").
//!
//! With several nodes only the one holding the `jobs` lease sends; every node queues every
//! delivery, and the holder shares each attempt it records through the database, which the
//! other nodes' dispatchers apply to their outboxes ([`follow_shared`]; docs/webhooks.md,
//! "Several nodes"), so that the node taking over sends only what was not settled.

use super::destination::{GuardedResolver, RefusedDestination};
use super::outbox::{Attempt, AttemptOutcome, Outbox, Pending};
use super::{WebhookCounters, WebhookOptions, expiring_notification, notifications_for, sign};
use crate::projection::ProjectionError;
use crate::state::{KeyStatus, LedgerState, Webhook};
use keyledger_core::{KeyId, Pepper, Timestamp, WorkspaceId};
use keyledger_log::LogReader;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Wakes the threads early (new deliveries) and tells them to stop.
#[derive(Default)]
struct Signal {
    state: Mutex<(bool, u64)>,
    changed: Condvar,
}

impl Signal {
    /// Waits up to `timeout` or until notified; true once stopping.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seen = guard.1;
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |(stop, generation)| !*stop && *generation == seen)
            .unwrap_or_else(|e| e.into_inner());
        guard.0
    }

    fn notify(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// Everything both threads share.
struct Shared {
    outbox: Outbox,
    options: WebhookOptions,
    state: Arc<RwLock<LedgerState>>,
    counters: Arc<WebhookCounters>,
    signal: Signal,
    /// The workspaces a sender is attempting a delivery of (at most one sender each).
    busy: Mutex<BTreeSet<WorkspaceId>>,
    /// With several nodes: where the lease holder's attempts are shared.
    shared_attempts: Option<keyledger_pg::PgWebhookAttempts>,
}

impl Shared {
    fn webhooks(&self) -> BTreeMap<WorkspaceId, Webhook> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).webhooks.clone()
    }

    fn webhook(&self, workspace: &WorkspaceId) -> Option<Webhook> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).webhooks.get(workspace).cloned()
    }
}

/// The running webhook threads of an engine.
pub(crate) struct WebhookService {
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What the dispatcher reads from.
pub struct Sources {
    pub state: Arc<RwLock<LedgerState>>,
    pub reader: LogReader,
    pub projections: crate::projection::ProjectionsDb,
    pub projected: watch::Receiver<u64>,
    pub pepper: Pepper,
    /// Deliveries are sent only while this says so (see [`crate::JobGate`]); every node
    /// dispatches into its own outbox, so the node that takes over has every delivery.
    pub(crate) gate: crate::JobGate,
    /// With several nodes: where the lease holder shares its attempts and the others
    /// follow them (see the module docs).
    pub(crate) shared_attempts: Option<keyledger_pg::PgWebhookAttempts>,
}

impl WebhookService {
    pub(crate) fn start(
        path: &std::path::Path,
        options: WebhookOptions,
        sources: Sources,
        counters: Arc<WebhookCounters>,
    ) -> Result<Self, ProjectionError> {
        let outbox = Outbox::open(path)?;
        let start = *sources.projected.borrow();
        match outbox.cursor()? {
            // A new outbox (a new data dir, or one from before webhooks): nothing before now
            // is announced.
            None => {
                outbox.enqueue(&[], start, 0, &mut 0)?;
            }
            // Only durable events are dispatched, so this means the log was replaced or cut
            // by hand: follow the log rather than skip its next events.
            Some(cursor) if cursor > start => {
                tracing::warn!(
                    cursor,
                    log = start,
                    "the webhook outbox is ahead of the log; following the log"
                );
                outbox.enqueue(&[], start, 0, &mut 0)?;
            }
            Some(_) => {}
        }
        let shared = Arc::new(Shared {
            outbox,
            options: options.clone(),
            state: sources.state.clone(),
            counters,
            signal: Signal::default(),
            busy: Mutex::new(BTreeSet::new()),
            shared_attempts: sources.shared_attempts,
        });
        let mut threads = Vec::new();
        if options.enabled {
            let dispatcher = shared.clone();
            let gate = sources.gate.clone();
            let spawned = std::thread::Builder::new()
                .name("keyledger-webhook-dispatch".into())
                .spawn(move || {
                    dispatch_loop(
                        &dispatcher,
                        &sources.reader,
                        &sources.projections,
                        sources.projected,
                        &gate,
                    )
                })
                .map_err(|e| ProjectionError::Log(format!("cannot start the webhook dispatcher: {e}")))?;
            threads.push(spawned);
            for _ in 0..options.senders.max(1) {
                let sender = shared.clone();
                let pepper = sources.pepper.clone();
                let gate = sources.gate.clone();
                let spawned = std::thread::Builder::new()
                    .name("keyledger-webhook-send".into())
                    .spawn(move || send_loop(&sender, &pepper, &gate))
                    .map_err(|e| ProjectionError::Log(format!("cannot start a webhook sender: {e}")))?;
                threads.push(spawned);
            }
        }
        Ok(Self { shared, threads: Mutex::new(threads) })
    }

    pub(crate) fn outbox(&self) -> &Outbox {
        &self.shared.outbox
    }

    /// What queues `log.fork_alarm` notifications (see [`AlarmAnnouncer`]).
    pub(crate) fn announcer(&self) -> AlarmAnnouncer {
        AlarmAnnouncer(self.shared.clone())
    }

    /// Where deliveries may go.
    pub(crate) fn destination_rule(&self) -> super::DestinationRule {
        self.shared.options.destination_rule()
    }

    /// What stops both threads (an attempt under way finishes first, within its timeout)
    /// and persists the outbox; blocking, so async callers run it on a blocking thread.
    pub(crate) fn stopper(&self) -> impl FnOnce() + Send + 'static {
        self.shared.signal.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let shared = self.shared.clone();
        move || {
            for thread in threads {
                let _ = thread.join();
            }
            if let Err(error) = shared.outbox.persist() {
                tracing::error!(%error, "could not persist the webhook outbox at shutdown");
            }
        }
    }
}

impl Drop for WebhookService {
    fn drop(&mut self) {
        // An engine dropped without shutdown must not leave its threads polling forever.
        self.shared.signal.stop();
    }
}

/// Queues a `log.fork_alarm` notification for every workspace with an enabled webhook,
/// whatever types it subscribes to (docs/webhooks.md). An alarm is queued at most once per workspace: its subject makes
/// the delivery id and the marker that records it as queued.
pub(crate) struct AlarmAnnouncer(Arc<Shared>);

impl AlarmAnnouncer {
    pub(crate) fn announce(&self, subject: &[u8], data: &serde_json::Value) {
        let mut queued = false;
        for (workspace, webhook) in self.0.webhooks() {
            if !webhook.wants("log.fork_alarm") {
                continue;
            }
            let notification = super::notification(
                &workspace,
                "log.fork_alarm",
                subject,
                Timestamp::now(),
                None,
                data.clone(),
            );
            let mut marker = [0u8; 24];
            let digest = blake3::hash(format!("keyledger fork alarm\0{}", notification.id).as_bytes());
            marker.copy_from_slice(&digest.as_bytes()[..24]);
            let mut dropped = 0;
            match self.0.outbox.enqueue_expiring(
                &notification,
                &marker,
                self.0.options.max_pending_per_workspace,
                &mut dropped,
            ) {
                Ok(q) => queued |= q,
                Err(error) => tracing::error!(%error, %workspace, "could not queue the fork alarm webhook"),
            }
            note_dropped(&self.0, dropped);
        }
        if queued {
            self.0.signal.notify();
        }
    }
}

fn dispatch_loop(
    shared: &Shared,
    reader: &LogReader,
    projections: &crate::projection::ProjectionsDb,
    projected: watch::Receiver<u64>,
    gate: &crate::JobGate,
) {
    let mut last_scan: Option<Instant> = None;
    let mut last_prune = Instant::now();
    loop {
        if let Err(error) = dispatch(shared, reader, projections, &projected) {
            tracing::error!(%error, "webhook dispatch failed; retrying");
        }
        if let Err(error) = follow_shared(shared) {
            tracing::warn!(%error, "following the other nodes' webhook attempts failed; retrying");
        }
        if last_scan.is_none_or(|t| t.elapsed() >= shared.options.expiring_scan_interval) {
            if let Err(error) = scan_expiring(shared) {
                tracing::error!(%error, "webhook expiry scan failed");
            }
            last_scan = Some(Instant::now());
        }
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            let keep = i64::try_from(shared.options.attempt_retention.as_micros()).unwrap_or(i64::MAX);
            let before = Timestamp(Timestamp::now().micros().saturating_sub(keep));
            if let Err(error) = shared.outbox.prune_attempts(before) {
                tracing::error!(%error, "pruning webhook attempt records failed");
            }
            // The registry lock is taken per marker, never across the outbox's transaction.
            let is_key = |key: &[u8; 16]| {
                let state = shared.state.read().unwrap_or_else(|e| e.into_inner());
                state.view(&KeyId::from_bytes(*key)).is_some()
            };
            match shared.outbox.prune_expiring(Timestamp::now(), is_key) {
                Ok(0) => {}
                Ok(dropped) => tracing::debug!(dropped, "dropped the key.expiring markers of past expiries"),
                Err(error) => tracing::error!(%error, "pruning the key.expiring markers failed"),
            }
            if let Some(attempts) = shared.shared_attempts.as_ref().filter(|_| gate())
                && let Err(error) = attempts.prune(shared.options.attempt_retention)
            {
                tracing::warn!(%error, "pruning the shared webhook attempts failed");
            }
            last_prune = Instant::now();
        }
        if shared.signal.wait(shared.options.poll_interval) {
            return;
        }
    }
}

/// Turns the durable, projected events after the cursor into queued deliveries.
fn dispatch(
    shared: &Shared,
    reader: &LogReader,
    projections: &crate::projection::ProjectionsDb,
    projected: &watch::Receiver<u64>,
) -> Result<(), ProjectionError> {
    let Some(mut cursor) = shared.outbox.cursor()? else { return Ok(()) };
    // Events below `target` are durable and in the audit index (new-source lookups).
    let target = *projected.borrow();
    while cursor < target {
        let webhooks = shared.webhooks();
        let end = target.min(cursor.saturating_add(4096));
        let mut notifications = Vec::new();
        if webhooks.values().any(|w| w.enabled) {
            let snapshot = redb::ReadableDatabase::begin_read(&*projections.get()?)?;
            for event in reader.events_from(cursor).take((end - cursor) as usize) {
                let event = event.map_err(|e| ProjectionError::Log(e.to_string()))?;
                let Some(webhook) = webhooks.get(event.payload.workspace()) else { continue };
                if !webhook.enabled || event.seq < webhook.since_seq {
                    continue;
                }
                let first_from_source = |key_id, ip| {
                    webhook.wants("key.new_source")
                        && crate::audit::first_use_from(&snapshot, key_id, ip)
                            .is_ok_and(|first| first == Some(event.seq))
                };
                notifications.extend(
                    notifications_for(&event, first_from_source)
                        .into_iter()
                        .filter(|n| webhook.wants(n.kind)),
                );
                let threshold = |key_id| {
                    let state = shared.state.read().unwrap_or_else(|e| e.into_inner());
                    state.credits.get(&key_id).map(|c| c.low_threshold)
                };
                notifications.extend(super::credits_low(&event, threshold).filter(|n| webhook.wants(n.kind)));
            }
        }
        let mut dropped = 0;
        let queued = shared.outbox.enqueue(
            &notifications,
            end,
            shared.options.max_pending_per_workspace,
            &mut dropped,
        )?;
        note_dropped(shared, dropped);
        if queued > 0 {
            shared.signal.notify();
        }
        cursor = end;
    }
    Ok(())
}

/// Applies to this node's outbox the attempts the other nodes shared since the last applied
/// (nothing with one node).
fn follow_shared(shared: &Shared) -> Result<(), ProjectionError> {
    let Some(attempts) = &shared.shared_attempts else { return Ok(()) };
    loop {
        let after = shared.outbox.shared_serial()?;
        let followed = attempts.follow(after).map_err(|e| ProjectionError::Log(e.to_string()))?;
        if followed.last_serial <= after {
            return Ok(());
        }
        let mut decoded = Vec::with_capacity(followed.attempts.len());
        for row in followed.attempts {
            match (row.workspace.parse::<WorkspaceId>(), serde_json::from_str::<Attempt>(&row.attempt)) {
                (Ok(workspace), Ok(attempt)) => decoded.push((workspace, attempt)),
                _ => tracing::warn!(serial = row.serial, "a shared webhook attempt is unreadable; skipped"),
            }
        }
        if shared.outbox.apply_shared(&decoded, followed.last_serial)? > 0 {
            shared.signal.notify();
        }
    }
}

/// Records an attempt of `pending` in this node's outbox (see [`Outbox::record`]) and, with
/// several nodes, shares it with the others; a failure to share is logged (the others then
/// send it again if they take over: delivery is at least once).
fn record(
    shared: &Shared,
    pending: &Pending,
    attempt: Attempt,
    retry_at: Option<Timestamp>,
) -> Result<(), ProjectionError> {
    let shared_copy = Attempt { next_retry_at: retry_at, ..attempt.clone() };
    shared.outbox.record(pending, attempt, retry_at)?;
    if let Some(attempts) = &shared.shared_attempts {
        let published = serde_json::to_string(&shared_copy)
            .map_err(|e| e.to_string())
            .and_then(|json| attempts.publish(pending.workspace.as_str(), &json).map_err(|e| e.to_string()));
        if let Err(error) = published {
            tracing::warn!(%error, delivery = %pending.id, "sharing a webhook attempt with the other nodes failed");
        }
    }
    Ok(())
}

fn note_dropped(shared: &Shared, dropped: u64) {
    if dropped > 0 {
        shared.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        tracing::warn!(dropped, "webhook outbox full: notifications dropped");
    }
}

/// Queues `key.expiring` for active keys of subscribed workspaces that expire within 7 days.
fn scan_expiring(shared: &Shared) -> Result<(), ProjectionError> {
    let now = Timestamp::now();
    let horizon = now.plus_micros(super::EXPIRING_WITHIN_MICROS);
    let expiring: Vec<_> = {
        let state = shared.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .webhooks
            .iter()
            .filter(|(_, webhook)| webhook.wants("key.expiring"))
            .flat_map(|(workspace, _)| state.workspace_keys(workspace))
            .filter(|key| key.status(now) == KeyStatus::Active)
            .filter_map(|key| key.expires_at().filter(|at| *at <= horizon).map(|at| (key.record(), at)))
            .collect()
    };
    let mut queued = false;
    for (key, expires_at) in expiring {
        let marker = Outbox::expiring_marker(&key.key_id, expires_at);
        if shared.outbox.expiring_announced(&marker)? {
            continue;
        }
        let mut dropped = 0;
        let notification = expiring_notification(&key, expires_at);
        queued |= shared.outbox.enqueue_expiring(
            &notification,
            &marker,
            shared.options.max_pending_per_workspace,
            &mut dropped,
        )?;
        note_dropped(shared, dropped);
    }
    if queued {
        shared.signal.notify();
    }
    Ok(())
}

fn send_loop(shared: &Shared, pepper: &Pepper, gate: &crate::JobGate) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A redirect is a failure: the signature was made for the configured URL only, and
        // a redirect could lead to a refused destination.
        .max_redirects(0)
        // Connect directly, never through a proxy from the environment: the resolver below
        // must see, check and pick the very address connected to (see `destination`).
        .proxy(None)
        .timeout_global(Some(shared.options.timeout))
        .user_agent(concat!("keyledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        GuardedResolver::new(shared.options.destination_rule()),
    );
    let mut held = false;
    while !shared.signal.stopped() {
        if !gate() {
            // Another node delivers (it holds the lease).
            held = false;
            if shared.signal.wait(shared.options.poll_interval) {
                return;
            }
            continue;
        }
        if !held {
            // Taking over: first what the last holder settled, so that it is not sent again.
            // Until that succeeds nothing is sent.
            if let Err(error) = follow_shared(shared) {
                tracing::warn!(%error, "following the other nodes' webhook attempts failed");
                if shared.signal.wait(shared.options.poll_interval) {
                    return;
                }
                continue;
            }
            held = true;
        }
        let wait = match take_due(shared) {
            Ok(None) => shared.options.poll_interval,
            Ok(Some(Taken::Due(pending))) => {
                let outcome = attempt(shared, &agent, pepper, &pending);
                shared.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&pending.workspace);
                // Another sender may be waiting for this workspace's next delivery.
                shared.signal.notify();
                if let Err(error) = outcome {
                    tracing::error!(%error, "recording a webhook attempt failed");
                    shared.options.poll_interval
                } else {
                    Duration::ZERO
                }
            }
            Ok(Some(Taken::Later(pending))) => {
                let micros = u64::try_from(pending.next_at.micros() - Timestamp::now().micros()).unwrap_or(0);
                Duration::from_micros(micros).min(shared.options.poll_interval)
            }
            Err(error) => {
                tracing::error!(%error, "reading the webhook outbox failed");
                shared.options.poll_interval
            }
        };
        if !wait.is_zero() && shared.signal.wait(wait) {
            return;
        }
    }
}

/// What a sender found in the outbox.
enum Taken {
    /// Due now, and its workspace marked busy for this sender.
    Due(Pending),
    /// The first delivery of a workspace no sender is attempting, due later.
    Later(Pending),
}

/// The earliest delivery of a workspace no other sender is attempting; if it is due, its
/// workspace is marked busy in the same step, so no two senders attempt one workspace.
fn take_due(shared: &Shared) -> Result<Option<Taken>, ProjectionError> {
    let mut busy = shared.busy.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pending) = shared.outbox.first_due_except(&busy)? else { return Ok(None) };
    if pending.next_at > Timestamp::now() {
        return Ok(Some(Taken::Later(pending)));
    }
    busy.insert(pending.workspace.clone());
    Ok(Some(Taken::Due(pending)))
}

/// Makes one attempt of `pending` and records it.
fn attempt(
    shared: &Shared,
    agent: &ureq::Agent,
    pepper: &Pepper,
    pending: &Pending,
) -> Result<(), ProjectionError> {
    let number = pending.attempts + 1;
    let attempt_record = |outcome, status, error: Option<String>, duration_ms| Attempt {
        delivery_id: pending.id.clone(),
        kind: pending.kind.clone(),
        attempt: number,
        at: Timestamp::now(),
        status,
        error,
        duration_ms,
        outcome,
        next_retry_at: None,
    };
    let webhook = shared.webhook(&pending.workspace).filter(|w| w.wants(&pending.kind));
    let Some(webhook) = webhook else {
        let why = "the webhook was disabled or no longer subscribes to this type";
        tracing::info!(workspace = %pending.workspace, delivery = %pending.id, kind = %pending.kind, "webhook delivery cancelled");
        return record(
            shared,
            pending,
            attempt_record(AttemptOutcome::Cancelled, None, Some(why.into()), 0),
            None,
        );
    };
    // Given up by age only once attempted: a delivery that waited behind others (or
    // through an outage of this node) is sent at least once.
    let max_age = i64::try_from(shared.options.max_age.as_micros()).unwrap_or(i64::MAX);
    if pending.attempts > 0 && Timestamp::now().micros().saturating_sub(pending.created_at.micros()) > max_age
    {
        shared.counters.given_up.fetch_add(1, Ordering::Relaxed);
        let why = "older than the maximum age of a delivery";
        tracing::warn!(workspace = %pending.workspace, delivery = %pending.id, kind = %pending.kind, "webhook delivery given up");
        return record(
            shared,
            pending,
            attempt_record(AttemptOutcome::Failed, None, Some(why.into()), 0),
            None,
        );
    }
    let secret = pepper.webhook_secret(pending.workspace.as_str(), webhook.set_seq);
    let timestamp = Timestamp::now().micros().div_euclid(1_000_000);
    let signature = sign(secret.expose(), &pending.id, timestamp, pending.body.as_bytes());
    drop(secret);
    let started = Instant::now();
    let result = agent
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("keyledger-webhook-id", &pending.id)
        .header("keyledger-webhook-timestamp", &timestamp.to_string())
        .header("keyledger-signature", &signature)
        .send(pending.body.as_bytes());
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, error) = match result {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(error) => (None, Some(transport_error(&error).to_owned())),
    };
    if status.is_some_and(|s| (200..300).contains(&s)) {
        shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(workspace = %pending.workspace, delivery = %pending.id, kind = %pending.kind, attempt = number, status, duration_ms, "webhook delivered");
        return record(
            shared,
            pending,
            attempt_record(AttemptOutcome::Delivered, status, None, duration_ms),
            None,
        );
    }
    shared.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
    if number >= shared.options.max_attempts {
        shared.counters.given_up.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(workspace = %pending.workspace, delivery = %pending.id, kind = %pending.kind, attempt = number, status, error = error.as_deref(), "webhook delivery failed; given up");
        return record(
            shared,
            pending,
            attempt_record(AttemptOutcome::Failed, status, error, duration_ms),
            None,
        );
    }
    let delay = i64::try_from(shared.options.backoff(number).as_micros()).unwrap_or(i64::MAX);
    let retry_at = Timestamp::now().plus_micros(delay);
    tracing::warn!(workspace = %pending.workspace, delivery = %pending.id, kind = %pending.kind, attempt = number, status, error = error.as_deref(), retry_at = %retry_at.to_rfc3339(), "webhook delivery failed; will retry");
    record(
        shared,
        pending,
        attempt_record(AttemptOutcome::Retrying, status, error, duration_ms),
        Some(retry_at),
    )
}

/// The class of a transport failure, as the deliveries list shows it (`docs/webhooks.md`).
/// Never the OS error or ureq's text: a workspace admin reads it, and "connection refused"
/// against "timed out" would tell a closed port from a filtered one. So every failure to
/// get an answer is "connection failed": refused, reset, unreachable, and every timeout.
/// A timeout after the connection was made is not told apart: the agent has one global
/// timeout, and ureq reports the same `Timeout` for it whichever phase ran out.
fn transport_error(error: &ureq::Error) -> &'static str {
    match error {
        ureq::Error::Other(e) if e.is::<RefusedDestination>() => "refused destination",
        ureq::Error::HostNotFound => "host not found",
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) => "connection failed",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) | ureq::Error::TlsRequired => {
            "TLS failed"
        }
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => "invalid URL",
        _ => "request failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_reported_as_classes_without_os_text() {
        // A closed port (refused), a filtered one (no answer until the timeout) and an
        // unreachable network are one class: the class never tells them apart.
        use std::io::ErrorKind::{
            ConnectionRefused, ConnectionReset, HostUnreachable, NetworkUnreachable, TimedOut,
        };
        for kind in [ConnectionRefused, ConnectionReset, HostUnreachable, NetworkUnreachable, TimedOut] {
            let error = ureq::Error::Io(std::io::Error::from(kind));
            assert_eq!(transport_error(&error), "connection failed", "{kind:?}");
        }
        assert_eq!(transport_error(&ureq::Error::ConnectionFailed), "connection failed");
        // ureq's global timeout does not say which phase ran out: every timeout is the same
        // class as a refusal.
        for timeout in [ureq::Timeout::Connect, ureq::Timeout::Global, ureq::Timeout::RecvResponse] {
            assert_eq!(transport_error(&ureq::Error::Timeout(timeout)), "connection failed", "{timeout:?}");
        }
        assert_eq!(transport_error(&ureq::Error::Other(Box::new(RefusedDestination))), "refused destination");
        assert_eq!(transport_error(&ureq::Error::Other("os error 111".into())), "request failed");
    }
}
