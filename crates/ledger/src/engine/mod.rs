//! The engine: keyledger's one entry point for commands and reads.
//!
//! Data flows one way: a call becomes a [`Command`], the log's writer sequences it
//! (validating it against the registry and appending its events), the events become durable,
//! the in-memory registry already reflects them, and the call answers. A projector thread
//! then folds the durable events into redb.
//!
//! **Invariants.**
//! - Lifecycle calls answer only after their events are fsynced.
//! - Verification reads only memory; its usage event is written before it answers
//!   (`batched`) or fsynced (`strict`).
//! - A verification sequenced after a revoke sees the revoke (the sequencer decides it).
//! - Nothing but the writer appends to the log.
//!
//! With [`EngineOptions::store`] the log is held in PostgreSQL and this engine is one node of
//! the ledger (docs/architecture.md, "The log store seam"): the data dir holds the node's
//! local mirror of the log and its projections, the writer appends under the database's
//! lock and follows the other nodes' appends, and a verification decided on this node sees
//! every revoke that returned on any node (the writer applies it before deciding).

use crate::authority::ADMIN_SCOPES;
use crate::commands::{
    Caller, Command, Expiry, IdempotencyTag, IssuedSecret, KeyChanges, KeyControls, KeySpec, PolicyControls,
    Responder, Rotation, responder,
};
use crate::datadir::{self, DataDirError, DirLock};
use crate::error::{AuthError, LedgerError};
use crate::projection::{Projection, ProjectionError, Projections, RegistryProjection};
use crate::projector::{Feed, Projector};
use crate::state::{KeyRecord, KeyStatus, LedgerState, VerifyRequirements};
use crate::verdict::Verdict;
use keyledger_core::{
    KeyId, KeyPrefix, Pepper, Policy, RequestId, Secret, Timestamp, UsageContext, WorkspaceId, validate,
};
use keyledger_log::storage::{OsStorage, Storage};
use keyledger_log::{Durability, Log, LogConfig, LogReader, OpenError, WriterHandle, WriterOptions};
use keyledger_verify::note::{NoteSigner, VerifierKey};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How an engine runs.
#[derive(Clone)]
pub struct EngineOptions {
    /// Durability of `used`/`denied` events: `Written` is `--usage-durability=batched` (docs/operations.md).
    pub usage_durability: Durability,
    pub writer: WriterOptions,
    pub storage: Arc<dyn Storage>,
    pub webhooks: crate::webhook::WebhookOptions,
    /// The witnesses checkpoints are submitted to (docs/operations.md, "Witnesses").
    pub witnesses: crate::witness::WitnessOptions,
    /// How long an export or a compliance report waits for the witnesses to cosign its
    /// anchor checkpoint (docs/export-format.md, "Witness cosignatures"); unused without
    /// witnesses.
    pub export_witness_wait: Duration,
    /// redb's page cache for the projections, in bytes (see
    /// [`crate::projection::DEFAULT_CACHE_BYTES`]).
    pub projection_cache_bytes: usize,
    /// Durable batches the writer may queue for the projector (see [`crate::projector`]).
    pub projector_queue_batches: usize,
    /// Events the writer may queue for the projector, in those batches: what a stalled
    /// projector can hold in memory, whatever the batches' sizes (0: every batch is read
    /// back from the log instead).
    pub projector_queue_events: usize,
    /// The PostgreSQL connection string of a ledger held in a database (`--store`); `None`:
    /// the embedded store, the data dir holds the log.
    pub store: Option<String>,
    /// The pepper and signing key when given outside the data dir (`KEYLEDGER_PEPPER`,
    /// `KEYLEDGER_SIGNING_KEY`; see [`crate::secret_env`]); default: the data dir's files.
    pub secrets: crate::secret_env::SecretOverrides,
    /// Nodes of the previous version still share the store (`--rolling-upgrade`,
    /// docs/operations.md, "Upgrading the nodes"): append no event kind they cannot read.
    /// A rate-limited verification's `used` event then does not name its spends, so each
    /// node counts only its own, as that version did.
    pub rolling_upgrade: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            usage_durability: Durability::Written,
            writer: WriterOptions::default(),
            storage: OsStorage::shared(),
            webhooks: crate::webhook::WebhookOptions::default(),
            witnesses: crate::witness::WitnessOptions::default(),
            export_witness_wait: Duration::from_secs(10),
            projection_cache_bytes: crate::projection::DEFAULT_CACHE_BYTES,
            projector_queue_batches: 16_384,
            projector_queue_events: 65_536,
            store: None,
            secrets: crate::secret_env::SecretOverrides::default(),
            rolling_upgrade: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Log(#[from] OpenError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Command(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] keyledger_pg::PgError),
    #[error(transparent)]
    LogStore(#[from] keyledger_log::store::StoreError),
}

/// The projections an engine keeps in `projections.redb`, in the order each batch is applied
/// to them: the registry, then the audit indexes.
pub fn projection_list() -> Vec<Box<dyn Projection>> {
    vec![Box::new(RegistryProjection), Box::new(crate::audit::AuditProjection)]
}

/// What `init` produced. The admin secret is shown once, here.
#[derive(Debug)]
pub struct InitOutcome {
    pub data_dir: PathBuf,
    pub admin_key: Secret,
    pub admin_key_id: KeyId,
    pub log_public_key: String,
}

pub use crate::commands::RevokedAll;

mod open;
mod witnessed_anchor;

/// The outcome of a verification, for the API.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// Missing, not of keyledger's form, or a bad checksum: no lookup, no event.
    Malformed,
    /// Well-formed, but no key of this ledger: no event.
    Unknown,
    /// A known key: allowed or denied, recorded at `seq`.
    Known(Verdict),
}

/// A running engine over one data dir.
pub struct Engine {
    state: Arc<RwLock<LedgerState>>,
    writer: WriterHandle<crate::sequencer::LedgerSequencer>,
    reader: LogReader,
    pepper: Pepper,
    usage_durability: Durability,
    projected: watch::Receiver<u64>,
    /// The seq an audit read waits for (see [`Self::wait_for_projections`]): the projector
    /// applies what it holds at once instead of waiting for more.
    projection_demand: Arc<AtomicU64>,
    projector: Projector,
    projections_db: crate::projection::ProjectionsDb,
    webhooks: crate::webhook::WebhookService,
    webhook_counters: Arc<crate::webhook::WebhookCounters>,
    witnesses: crate::witness::service::WitnessService,
    export_witness_wait: Duration,
    data_dir: PathBuf,
    /// The log's signing key (the log signs checkpoints with its own copy): exports sign
    /// their manifests with it.
    signer: Arc<NoteSigner>,
    /// With a PostgreSQL store: the thread that wakes the writer on other nodes' appends.
    listener: std::sync::Mutex<Option<keyledger_pg::Listener>>,
    /// With a PostgreSQL store: the `jobs` lease (webhook delivery, witness submission).
    lease: std::sync::Mutex<Option<keyledger_pg::Lease>>,
    /// Whether the log is held in a shared store (PostgreSQL).
    shared: bool,
    _lock: DirLock,
}

impl Engine {
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log(&self) -> &LogReader {
        &self.reader
    }

    pub fn public_key(&self) -> &VerifierKey {
        self.reader.verifier()
    }

    /// The log's signer, for what is signed with the log's key besides checkpoints.
    pub(crate) fn signer(&self) -> &Arc<NoteSigner> {
        &self.signer
    }

    /// The projections' database, for audit queries (read transactions only).
    pub fn projections_db(&self) -> &crate::projection::ProjectionsDb {
        &self.projections_db
    }

    /// A consistent snapshot of the registry, for reads that need more than one key.
    pub fn registry(&self) -> std::sync::RwLockReadGuard<'_, LedgerState> {
        self.read_state()
    }

    pub fn webhook_counters(&self) -> &crate::webhook::WebhookCounters {
        &self.webhook_counters
    }

    /// What the witnesses cosigned, their status and any fork alarm (docs/api.md,
    /// "Integrity").
    pub fn witness_view(&self) -> crate::witness::WitnessView {
        self.witnesses.view()
    }

    /// Each configured witness's counters, for metrics.
    pub fn witness_counters(&self) -> Vec<crate::witness::WitnessCountersView> {
        self.witnesses.counters()
    }

    /// The latest checkpoint's note, with the witnesses' cosignature lines when they
    /// cosigned that very checkpoint (what `GET /checkpoint` and `GET /v1/log/checkpoint`
    /// serve).
    pub fn latest_checkpoint_note(&self) -> Option<String> {
        let checkpoint = self.reader.latest_checkpoint()?;
        Some(
            self.witnesses
                .view()
                .cosigned
                .filter(|c| c.size == checkpoint.size && c.root == checkpoint.root)
                .map_or(checkpoint.note, |c| c.note),
        )
    }

    pub fn writer_stats(&self) -> &keyledger_log::WriterStats {
        self.writer.stats()
    }

    /// A signed checkpoint covering every event appended so far (signed now if needed);
    /// the witness submitters are woken to submit it at once.
    pub async fn checkpoint_now(&self) -> Result<keyledger_log::checkpoint::StoredCheckpoint, LedgerError> {
        let checkpoint = self.writer.checkpoint_now().await?;
        self.witnesses.wake();
        Ok(checkpoint)
    }

    /// False once the log could not be written (the engine then refuses every append).
    pub fn is_healthy(&self) -> bool {
        self.writer.is_healthy()
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, LedgerState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    // ----- commands -------------------------------------------------------------------

    /// Submits the command `command` builds around its responder, at `durability`, and
    /// returns its answer once the writer acknowledged it.
    async fn run<T>(
        &self,
        durability: Durability,
        command: impl FnOnce(Responder<T>) -> Command,
    ) -> Result<T, LedgerError> {
        let (reply, answer) = responder();
        self.writer.submit(command(reply), durability).await?;
        answer.take()
    }

    /// A lifecycle command: answered once its events are fsynced.
    async fn submit<T>(&self, command: impl FnOnce(Responder<T>) -> Command) -> Result<T, LedgerError> {
        self.run(Durability::Synced, command).await
    }

    fn issue_secret(
        &self,
        workspace: &WorkspaceId,
        environment: keyledger_core::Environment,
    ) -> Result<(Secret, IssuedSecret), LedgerError> {
        let prefix = self.read_state().policy(workspace).key_prefix.unwrap_or_else(KeyPrefix::default_prefix);
        let secret =
            Secret::generate(&prefix, environment).map_err(|e| LedgerError::Internal(e.to_string()))?;
        let issued = IssuedSecret {
            key_id: KeyId::generate(Timestamp::now().millis()),
            hash: self.pepper.hash(secret.expose()),
            hint: secret.hint(),
            prefix,
        };
        Ok((secret, issued))
    }

    /// Issues a key. Returns its record and the secret (the only time it exists outside
    /// the caller's hands).
    pub async fn create(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
    ) -> Result<(KeyRecord, Secret), LedgerError> {
        self.create_idempotent(caller, workspace, spec, None).await
    }

    /// [`Self::create`] under an idempotency tag: recorded with the key, in one batch; a
    /// repeat of the tag within 24 h is refused (409) and creates nothing.
    pub async fn create_idempotent(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
        idempotency: Option<IdempotencyTag>,
    ) -> Result<(KeyRecord, Secret), LedgerError> {
        self.create_with_controls(caller, workspace, spec, idempotency, KeyControls::default()).await
    }

    /// [`Self::create_idempotent`] with a source allow-list and rate limits, set in the
    /// batch of the key's `created` event (see [`KeyControls`], [`crate::sources`]).
    pub async fn create_with_controls(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
        idempotency: Option<IdempotencyTag>,
        controls: KeyControls,
    ) -> Result<(KeyRecord, Secret), LedgerError> {
        let (secret, issued) = self.issue_secret(&workspace, spec.environment)?;
        let record = self
            .submit(|reply| Command::Create {
                caller,
                workspace,
                spec,
                secret: issued,
                idempotency,
                controls,
                reply,
            })
            .await?;
        Ok((record, secret))
    }

    /// [`Self::create`] for synchronous callers (init, generators); not from async code.
    pub fn create_blocking(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
    ) -> Result<(KeyRecord, Secret), LedgerError> {
        let (secret, issued) = self.issue_secret(&workspace, spec.environment)?;
        let (reply, answer) = responder();
        let command = Command::Create {
            caller,
            workspace,
            spec,
            secret: issued,
            idempotency: None,
            controls: KeyControls::default(),
            reply,
        };
        self.writer.submit_blocking(command, Durability::Synced)?;
        Ok((answer.take()?, secret))
    }

    /// Imports keys known by a foreign hash of their secret, all or nothing, idempotently
    /// (docs/import.md; see [`crate::import`]). Answers one outcome per entry, in order.
    pub async fn import(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        keys: Vec<crate::import::ImportSpec>,
        idempotency: Option<IdempotencyTag>,
    ) -> Result<Vec<crate::import::ImportedKey>, LedgerError> {
        self.submit(|reply| Command::Import { caller, workspace, keys, idempotency, reply }).await
    }

    /// What the registry knows of an imported key (`None` for a key issued here).
    pub fn import_mark(&self, key_id: &KeyId) -> Option<crate::state::imported::ImportMark> {
        self.read_state().imported.mark(key_id).cloned()
    }

    /// Rotates a key: a new key inheriting its fields, the old one revoked now
    /// (`overlap == 0`) or valid for `overlap` more microseconds.
    pub async fn rotate(
        &self,
        caller: Caller,
        key_id: KeyId,
        overlap: i64,
    ) -> Result<(KeyRecord, KeyRecord, Secret), LedgerError> {
        self.rotate_idempotent(caller, key_id, overlap, None).await
    }

    /// [`Self::rotate`] under an idempotency tag (see [`Self::create_idempotent`]).
    pub async fn rotate_idempotent(
        &self,
        caller: Caller,
        key_id: KeyId,
        overlap: i64,
        idempotency: Option<IdempotencyTag>,
    ) -> Result<(KeyRecord, KeyRecord, Secret), LedgerError> {
        let (workspace, environment) = {
            let state = self.read_state();
            let key = state.view(&key_id).ok_or_else(|| LedgerError::NotFound(format!("no key {key_id}")))?;
            (key.workspace().clone(), key.environment())
        };
        let (secret, issued) = self.issue_secret(&workspace, environment)?;
        let Rotation { key, previous } = self
            .submit(|reply| Command::Rotate { caller, key_id, overlap, secret: issued, idempotency, reply })
            .await?;
        Ok((key, previous, secret))
    }

    pub async fn revoke(
        &self,
        caller: Caller,
        key_id: KeyId,
        reason: Option<String>,
    ) -> Result<KeyRecord, LedgerError> {
        if let Some(reason) = &reason {
            validate::reason(reason)?;
        }
        self.submit(|reply| Command::Revoke { caller, key_id, reason, reply }).await
    }

    pub async fn revoke_all(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        reason: Option<String>,
    ) -> Result<Vec<KeyId>, LedgerError> {
        Ok(self.revoke_all_idempotent(caller, workspace, reason, None).await?.key_ids)
    }

    /// [`Self::revoke_all`] under an idempotency tag (see [`Self::create_idempotent`]).
    pub async fn revoke_all_idempotent(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        reason: Option<String>,
        idempotency: Option<IdempotencyTag>,
    ) -> Result<RevokedAll, LedgerError> {
        if let Some(reason) = &reason {
            validate::reason(reason)?;
        }
        self.submit(|reply| Command::RevokeAll { caller, workspace, reason, idempotency, reply }).await
    }

    pub async fn set_policy(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
    ) -> Result<Policy, LedgerError> {
        self.set_policy_with_sources(caller, workspace, policy, None).await
    }

    /// [`Self::set_policy`] and, when `sources` is given, the workspace's policy for source
    /// allow-lists, in one batch.
    pub async fn set_policy_with_sources(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
        sources: Option<crate::state::SourcePolicy>,
    ) -> Result<Policy, LedgerError> {
        self.set_policy_with(
            caller,
            workspace,
            policy,
            PolicyControls { sources, ..PolicyControls::default() },
        )
        .await
    }

    /// [`Self::set_policy`] with the controls beside it (source allow-lists, `on_leak`, the
    /// default rate limits; see [`PolicyControls`]): one command, decided whole, its events
    /// in one batch or none at all.
    pub async fn set_policy_with(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
        controls: PolicyControls,
    ) -> Result<Policy, LedgerError> {
        self.submit(|reply| Command::SetPolicy { caller, workspace, policy, controls, reply }).await
    }

    /// A workspace's `on_leak` (default `notify`).
    pub fn on_leak(&self, workspace: &WorkspaceId) -> keyledger_core::OnLeak {
        self.read_state().leaks.on_leak(workspace)
    }

    /// Records leak reports of known keys (see [`crate::leaks`]), durably, in one batch.
    pub async fn report_leaks(
        &self,
        reporter: keyledger_core::LeakReporter,
        reports: Vec<crate::leaks::LeakReportIn>,
        only_active: bool,
    ) -> Result<Vec<crate::leaks::LeakOutcome>, LedgerError> {
        let request_id = Caller::system().request_id;
        self.submit(|reply| Command::ReportLeaks { request_id, reporter, reports, only_active, reply }).await
    }

    /// Sets the rate limits of a key (`Some(key_id)`) or the default of `workspace`
    /// (docs/api.md, "Rate limits"); the list replaces the previous one whole.
    pub async fn set_ratelimits(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        key_id: Option<KeyId>,
        limits: Vec<keyledger_core::RateLimit>,
    ) -> Result<Vec<keyledger_core::RateLimit>, LedgerError> {
        self.submit(|reply| Command::SetRateLimits { caller, workspace, key_id, limits, reply }).await
    }

    /// Changes a key (see [`KeyChanges`]): one command, decided whole, its events (`updated`,
    /// `sources_set`, `ratelimits_set`) in one batch or none at all. A change of the rate
    /// limits alone appends no `updated` event.
    pub async fn update(
        &self,
        caller: Caller,
        key_id: KeyId,
        changes: KeyChanges,
    ) -> Result<KeyRecord, LedgerError> {
        self.submit(|reply| Command::Update { caller, key_id, changes, reply }).await
    }

    pub async fn set_disabled(
        &self,
        caller: Caller,
        key_id: KeyId,
        disabled: bool,
        reason: Option<String>,
    ) -> Result<KeyRecord, LedgerError> {
        if let Some(reason) = &reason {
            validate::reason(reason)?;
        }
        self.submit(|reply| Command::SetDisabled { caller, key_id, disabled, reason, reply }).await
    }

    /// Adds to or sets a key's credits (docs/credits.md): one `credits_set` event, durable
    /// before the answer, after a `credits_refilled` one if a refill was due.
    pub async fn set_credits(
        &self,
        caller: Caller,
        key_id: KeyId,
        change: crate::credits::CreditsChange,
    ) -> Result<(KeyRecord, crate::credits::KeyCredits), LedgerError> {
        let amount = match change {
            crate::credits::CreditsChange::Add(n) | crate::credits::CreditsChange::Set(n) => n,
        };
        if amount > keyledger_core::credits::MAX_CREDITS {
            let field = if matches!(change, crate::credits::CreditsChange::Add(_)) { "add" } else { "set" };
            return Err(LedgerError::invalid(
                field,
                format!("must be at most {}", keyledger_core::credits::MAX_CREDITS),
            ));
        }
        self.submit(|reply| Command::SetCredits { caller, key_id, change, reply }).await
    }

    /// Verifies a presented key. Malformed, mis-checksummed and unknown keys are refused
    /// here, before any lookup or append; known keys are decided by the sequencer, which
    /// records exactly one `used` or `denied` event.
    pub async fn verify(
        &self,
        request_id: RequestId,
        presented: &str,
        wants: VerifyRequirements,
        context: UsageContext,
    ) -> Result<VerifyOutcome, LedgerError> {
        let source = context.ip;
        self.verify_from(request_id, presented, wants, context, source).await
    }

    /// [`Self::verify`] with the source allow-list checked against `source` rather than
    /// `context.ip` (JSON mode from a caller that is not a trusted proxy: the address it
    /// states is recorded, its own is checked; docs/gateways.md, "Trusted proxies").
    pub async fn verify_from(
        &self,
        request_id: RequestId,
        presented: &str,
        wants: VerifyRequirements,
        context: UsageContext,
        source: Option<std::net::IpAddr>,
    ) -> Result<VerifyOutcome, LedgerError> {
        let (key_id, rehash) = match self.lookup(presented) {
            Ok(found) => found,
            // A key another node created or imported moments ago: follow the database once,
            // then look again (a verification never answers "unknown" for a key whose
            // creation or import returned before it arrived). A malformed secret is worth the
            // look only if it could be a foreign one (docs/import.md).
            Err(outcome)
                if self.shared
                    && match outcome {
                        VerifyOutcome::Unknown => true,
                        _ => crate::import::may_be_foreign(presented),
                    } =>
            {
                self.writer.follow_now().await?;
                match self.lookup(presented) {
                    Ok(found) => found,
                    Err(outcome) => return Ok(outcome),
                }
            }
            Err(outcome) => return Ok(outcome),
        };
        let verdict = self
            .run(self.usage_durability, |reply| Command::Verify {
                request_id,
                key_id,
                wants,
                context,
                source,
                rehash,
                reply,
            })
            .await?;
        Ok(VerifyOutcome::Known(verdict))
    }

    /// Checksum, keyed hash, registry lookup: the part of verification that needs no log.
    /// A key that matches nothing is its outcome ([`VerifyOutcome::Malformed`] or
    /// [`VerifyOutcome::Unknown`]). A key found by its foreign digest (docs/import.md) comes
    /// with the secret's keyed hash, for its re-hash on first use.
    // Its error is only ever `Malformed` or `Unknown` (no payload): the size of `Known` costs nothing.
    #[allow(clippy::result_large_err)]
    fn lookup(&self, presented: &str) -> Result<(KeyId, Option<keyledger_core::KeyHash>), VerifyOutcome> {
        let native = Secret::check(presented).is_ok();
        // A secret not of keyledger's shape can only be an imported key's.
        if !native && !crate::import::may_be_imported(&self.read_state(), presented) {
            return Err(VerifyOutcome::Malformed);
        }
        let hash = self.pepper.hash(presented);
        let found = {
            let state = self.read_state();
            match state.id_by_hash(&hash) {
                Some(key_id) => Some((key_id, None)),
                None => crate::import::find_foreign(&state, presented).map(|id| (id, Some(hash))),
            }
        };
        found.ok_or(if native { VerifyOutcome::Unknown } else { VerifyOutcome::Malformed })
    }

    /// Authenticates an admin key (workspace `_ledger`). Appends nothing.
    ///
    /// With a shared store the node first follows the database, as a verification does
    /// before it is decided: an admin key revoked, disabled or narrowed on another node (or
    /// while this node's writer had failed) is refused here as soon as that call returned,
    /// and one created there is known. A node that cannot reach the database answers
    /// [`LedgerError::Unavailable`], never from its older copy (docs/operations.md, "High
    /// availability").
    pub async fn authenticate_admin(&self, presented: &str) -> Result<KeyRecord, LedgerError> {
        if Secret::check(presented).is_err() {
            return Err(LedgerError::Unauthorized(AuthError::Unknown));
        }
        self.follow().await?;
        self.admin_by_secret(presented).map_err(LedgerError::Unauthorized)
    }

    /// With the PostgreSQL store, reads what the other nodes appended before it returns, so
    /// a lookup after it ([`Self::find_by_secret`]) sees every key issued anywhere before
    /// the call; an error when the database cannot be reached. Nothing to do embedded.
    pub async fn follow(&self) -> Result<(), LedgerError> {
        if self.shared {
            self.writer.follow_now().await?;
        }
        Ok(())
    }

    /// The admin key `presented` is, as this node's registry holds it.
    fn admin_by_secret(&self, presented: &str) -> Result<KeyRecord, AuthError> {
        let hash = self.pepper.hash(presented);
        let state = self.read_state();
        let key = state.view_by_hash(&hash).ok_or(AuthError::Unknown)?;
        if !key.hash().ct_eq(&hash) {
            return Err(AuthError::Unknown);
        }
        match key.status(Timestamp::now()) {
            KeyStatus::Revoked => Err(AuthError::Revoked),
            KeyStatus::Expired => Err(AuthError::Expired),
            KeyStatus::Disabled => Err(AuthError::Disabled),
            KeyStatus::Active if !key.workspace().is_ledger() => Err(AuthError::NotAdmin),
            KeyStatus::Active => Ok(key.record()),
        }
    }

    /// Finds the key a candidate secret is (or was), by its keyed hash.
    pub fn find_by_secret(&self, candidate: &str) -> Option<KeyRecord> {
        let hash = self.pepper.hash(candidate);
        let state = self.read_state();
        // An imported key not yet used is known by its foreign digest (docs/import.md).
        state
            .key_by_hash(&hash)
            .or_else(|| crate::import::find_foreign(&state, candidate).and_then(|id| state.key(&id)))
    }

    // ----- reads ----------------------------------------------------------------------

    pub fn key(&self, key_id: &KeyId) -> Option<KeyRecord> {
        self.read_state().key(key_id)
    }

    /// A key's credits as the registry holds them; `None` for a key without credits.
    pub fn credits(&self, key_id: &KeyId) -> Option<crate::credits::KeyCredits> {
        self.read_state().credits.get(key_id).cloned()
    }

    /// The rate limits a key is subject to (its own, else its workspace's default), and
    /// whether they are its own (docs/api.md, "Rate limits").
    pub fn ratelimits(
        &self,
        key_id: &KeyId,
        workspace: &WorkspaceId,
    ) -> (Vec<keyledger_core::RateLimit>, bool) {
        let state = self.read_state();
        (state.ratelimits_of(key_id, workspace).to_vec(), state.own_ratelimits(key_id).is_some())
    }

    /// A workspace's default rate limits.
    pub fn workspace_ratelimits(&self, workspace: &WorkspaceId) -> Vec<keyledger_core::RateLimit> {
        self.read_state().workspace_ratelimits.get(workspace).cloned().unwrap_or_default()
    }

    /// A workspace's keys whose status at `now` passes `filter`, oldest first.
    pub fn keys(&self, workspace: &WorkspaceId, filter: impl Fn(KeyStatus) -> bool) -> Vec<KeyRecord> {
        let now = Timestamp::now();
        self.read_state()
            .workspace_keys(workspace)
            .filter(|k| filter(k.status(now)))
            .map(|k| k.record())
            .collect()
    }

    /// What an idempotent request with this id did, if it ran within the last 24 hours.
    pub fn idempotent_result(&self, id: &[u8; 32]) -> Option<crate::state::IdempotentResult> {
        let now = Timestamp::now().micros();
        self.read_state()
            .idempotency
            .get(id)
            .filter(|r| now.saturating_sub(r.at.micros()) < crate::sequencer::IDEMPOTENCY_WINDOW_MICROS)
            .cloned()
    }

    pub fn policy(&self, workspace: &WorkspaceId) -> Policy {
        self.read_state().policy(workspace)
    }

    /// Workspaces that hold at least one key or a policy.
    pub fn workspaces(&self) -> Vec<WorkspaceId> {
        let state = self.read_state();
        let mut all: Vec<WorkspaceId> =
            state.workspaces_with_keys().chain(state.policies.keys()).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    // ----- webhooks ----

    /// Configures a workspace's webhook (replacing any previous one) and returns it with its
    /// new signing secret: the only time the secret leaves keyledger.
    pub async fn set_webhook(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        url: String,
        events: Vec<String>,
    ) -> Result<(crate::state::Webhook, Secret), LedgerError> {
        crate::webhook::validate_url(&url)?;
        crate::webhook::check_destination(&url, self.webhooks.destination_rule())?;
        let events = crate::webhook::validate_events(events)?;
        let config = Some((url, events));
        let webhook = self
            .submit(|reply| Command::SetWebhook { caller, workspace: workspace.clone(), config, reply })
            .await?;
        let secret = self.pepper.webhook_secret(workspace.as_str(), webhook.set_seq);
        Ok((webhook, secret))
    }

    /// Where this engine delivers webhooks (`--webhook-allow-private`; see
    /// [`crate::webhook::destination`]).
    pub fn webhook_destination_rule(&self) -> crate::webhook::DestinationRule {
        self.webhooks.destination_rule()
    }

    /// Disables a workspace's webhook; its undelivered deliveries are cancelled.
    pub async fn disable_webhook(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
    ) -> Result<crate::state::Webhook, LedgerError> {
        self.submit(|reply| Command::SetWebhook { caller, workspace, config: None, reply }).await
    }

    /// A workspace's webhook configuration (never its secret).
    pub fn webhook(&self, workspace: &WorkspaceId) -> Option<crate::state::Webhook> {
        self.read_state().webhooks.get(workspace).cloned()
    }

    /// The most recent delivery attempts of a workspace's webhook, and how many wait.
    pub fn webhook_deliveries(
        &self,
        workspace: &WorkspaceId,
        limit: usize,
    ) -> Result<crate::webhook::DeliveryList, LedgerError> {
        self.webhooks.outbox().deliveries(workspace, limit).map_err(|e| LedgerError::Internal(e.to_string()))
    }

    // ----- audit ----

    /// The audit indexes (read them after [`Self::wait_for_projections`] to see the
    /// caller's last write).
    pub fn audit(&self) -> crate::audit::AuditQueries<'_> {
        crate::audit::AuditQueries::new(&self.projections_db, &self.reader)
    }

    /// Records (durably) that `caller` looked up a candidate leaked secret and what it
    /// found; never the candidate. Returns the event's seq.
    pub async fn record_lookup(&self, caller: Caller, found: Option<&KeyRecord>) -> Result<u64, LedgerError> {
        self.record_lookups(caller, &[found]).await
    }

    /// Records (durably, in one batch) one lookup per candidate of a bulk lookup, each with
    /// what it found; never a candidate. `found` is not empty (the caller bounds it).
    pub async fn record_lookups(
        &self,
        caller: Caller,
        found: &[Option<&KeyRecord>],
    ) -> Result<u64, LedgerError> {
        let lookups = found
            .iter()
            .map(|key| keyledger_core::Lookup {
                workspace: key.map_or_else(WorkspaceId::ledger, |k| k.workspace.clone()),
                found: key.map(|k| k.key_id),
            })
            .collect();
        self.submit(|reply| Command::RecordLookups { caller, lookups, reply }).await
    }

    // ----- end audit ----

    /// Waits until the redb projections have applied every event written so far (an audit
    /// read's barrier: it sees every write that answered before it), or until `timeout`.
    pub async fn wait_for_projections(&self, timeout: Duration) -> bool {
        // Everything already written (a verify in `batched` mode answers before its fsync,
        // which follows within the sync window): the projector sees it once durable.
        if self.shared {
            // Another node's writes: follow the database first (one query).
            let _ = tokio::time::timeout(timeout, self.writer.follow_now()).await;
        }
        let target = self.reader.len();
        self.projection_demand.fetch_max(target, Ordering::AcqRel);
        let mut projected = self.projected.clone();
        tokio::time::timeout(timeout, projected.wait_for(|applied| *applied >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Drains pending appends, writes a final checkpoint, persists projections and stops.
    pub async fn shutdown(&self) {
        let _ = tokio::task::spawn_blocking(self.witnesses.stopper()).await;
        let stop_webhooks = self.webhooks.stopper();
        let _ = tokio::task::spawn_blocking(stop_webhooks).await;
        let _ = tokio::task::spawn_blocking(self.node_threads_stopper()).await;
        self.writer.shutdown().await;
        let _ = tokio::task::spawn_blocking(self.projector.stopper()).await;
    }

    pub fn shutdown_blocking(&self) {
        (self.witnesses.stopper())();
        (self.webhooks.stopper())();
        (self.node_threads_stopper())();
        self.writer.shutdown_blocking();
        (self.projector.stopper())();
    }

    /// What stops a PostgreSQL node's own threads (after its jobs stopped): the listener,
    /// and the `jobs` lease, released so that another node takes over at once.
    fn node_threads_stopper(&self) -> impl FnOnce() + Send + 'static {
        let listener = self.listener.lock().unwrap_or_else(|e| e.into_inner()).take();
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        move || {
            if let Some(mut listener) = listener {
                listener.stop();
            }
            if let Some(mut lease) = lease {
                lease.stop();
            }
        }
    }

    /// Whether this node may deliver webhooks and submit to witnesses now (always with the
    /// embedded store; with PostgreSQL while it holds the `jobs` lease).
    pub fn runs_jobs(&self) -> bool {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        lease.as_ref().is_none_or(|lease| lease.holding().is_held())
    }
}
