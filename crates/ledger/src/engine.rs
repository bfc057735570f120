//! The engine: keyledger's one entry point for commands and reads.
//!
//! Data flows one way: a call becomes a [`Command`], the log's writer thread sequences it
//! (validating it against the registry and appending its events), the events become durable,
//! the in-memory registry already reflects them, and the call answers. A projector thread
//! then folds the durable events into redb.
//!
//! **Invariants.**
//! - Lifecycle calls answer only after their events are fsynced.
//! - Verification reads only memory; its usage event is written before it answers
//!   (`batched`) or fsynced (`strict`).
//! - A verification sequenced after a revoke sees the revoke (the sequencer decides it).
//! - Nothing but the writer thread appends to the log.

use crate::commands::{
    Caller, Command, Expiry, IdempotencyTag, IssuedSecret, KeyChanges, KeySpec, Reply, Verdict,
};
use crate::datadir::{self, DataDirError, DirLock};
use crate::error::{AuthError, LedgerError};
use crate::projection::{ProjectionError, Projections};
use crate::state::{KeyRecord, KeyStatus, LedgerState, VerifyRequirements};
use keyledger_core::{
    KeyId, KeyPrefix, Pepper, Policy, RequestId, Secret, Timestamp, UsageContext, WorkspaceId, validate,
};
use keyledger_log::storage::{OsStorage, Storage};
use keyledger_log::{
    CommittedEvents, Durability, Log, LogConfig, LogReader, OpenError, WriterHandle, WriterOptions,
};
use keyledger_verify::note::{NoteSigner, VerifierKey};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How an engine runs.
#[derive(Clone)]
pub struct EngineOptions {
    /// Durability of `used`/`denied` events: `Written` is the contract's `batched`.
    pub usage_durability: Durability,
    pub writer: WriterOptions,
    pub storage: Arc<dyn Storage>,
    pub webhooks: crate::webhook::WebhookOptions,
    /// redb's page cache for the projections, in bytes (see
    /// [`crate::projection::DEFAULT_CACHE_BYTES`]).
    pub projection_cache_bytes: usize,
    /// Durable batches the writer may queue for the projector (see [`run_projector`]).
    pub projector_queue_batches: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            usage_durability: Durability::Written,
            writer: WriterOptions::default(),
            storage: OsStorage::shared(),
            webhooks: crate::webhook::WebhookOptions::default(),
            projection_cache_bytes: crate::projection::DEFAULT_CACHE_BYTES,
            projector_queue_batches: 1024,
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
}

/// What `init` produced. The admin secret is shown once, here.
#[derive(Debug)]
pub struct InitOutcome {
    pub data_dir: PathBuf,
    pub admin_key: Secret,
    pub admin_key_id: KeyId,
    pub log_public_key: String,
}

/// Every scope of keyledger's own API.
pub const ADMIN_SCOPES: [&str; 5] =
    ["ledger:admin", "ledger:audit:read", "ledger:export", "ledger:keys:read", "ledger:keys:write"];

/// What a revoke-all did: the keys it revoked, and how many unrevoked keys of the workspace
/// it left alone (the caller's own, keys it does not dominate, the last full admin key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedAll {
    pub key_ids: Vec<KeyId>,
    pub skipped: usize,
}

/// A key holding every admin scope over every workspace, without expiry.
fn full_admin_spec(name: &str) -> KeySpec {
    KeySpec {
        name: name.into(),
        scopes: ADMIN_SCOPES.iter().map(|s| s.to_string()).collect(),
        resources: Vec::new(),
        environment: keyledger_core::Environment::Live,
        owner: None,
        metadata: "{}".into(),
        expiry: Expiry::Never,
    }
}

/// Counters kept by the engine (exported as metrics).
#[derive(Default, Debug)]
pub struct EngineCounters {
    pub verify_malformed: AtomicU64,
    pub verify_unknown: AtomicU64,
}

/// The outcome of a verification, for the API.
#[derive(Debug, Clone)]
pub enum VerifyOutcome {
    /// Malformed key, bad checksum, or unknown: no event.
    Unknown,
    /// A known key: allowed or denied, recorded at `seq`.
    Known(Box<Verdict>),
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
    projector: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    projections_db: crate::projection::ProjectionsDb,
    /// The size of `projections.redb` when it was opened (see [`should_compact`]).
    projections_len_at_open: u64,
    webhooks: crate::webhook::WebhookService,
    webhook_counters: Arc<crate::webhook::WebhookCounters>,
    counters: EngineCounters,
    data_dir: PathBuf,
    /// The log's signing key (the log signs checkpoints with its own copy): exports sign
    /// their manifests with it.
    signer: Arc<NoteSigner>,
    _lock: DirLock,
}

impl Engine {
    /// Initialises a new data dir at `dir` and issues the first admin key.
    /// Refuses, changing nothing, if `dir` is initialised or not empty.
    pub fn init(dir: &Path, options: EngineOptions) -> Result<InitOutcome, EngineError> {
        Self::init_with_origin(dir, options, None)
    }

    /// [`Self::init`] with a chosen checkpoint origin (default: `keyledger/<16 hex of the
    /// BLAKE3 of the public key>`).
    pub fn init_with_origin(
        dir: &Path,
        options: EngineOptions,
        origin: Option<&str>,
    ) -> Result<InitOutcome, EngineError> {
        if let Some(origin) = origin {
            datadir::check_origin(origin)?;
        }
        datadir::check_initialisable(dir)?;
        let staging = datadir::staging_path(dir);
        let built = (|| {
            datadir::create_files(&staging, origin)?;
            let engine = Engine::open(&staging, options)?;
            let spec = full_admin_spec("init admin key");
            let (record, secret) = engine.create_blocking(Caller::system(), WorkspaceId::ledger(), spec)?;
            let public_key = engine.public_key().to_string();
            engine.shutdown_blocking();
            Ok::<_, EngineError>((record, secret, public_key))
        })();
        let (record, secret, log_public_key) = match built {
            Ok(parts) => parts,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(error);
            }
        };
        if let Err(error) = std::fs::rename(&staging, dir) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(match error.kind() {
                std::io::ErrorKind::DirectoryNotEmpty => DataDirError::NotEmpty(dir.to_owned()),
                _ => DataDirError::Io { op: "rename", path: dir.to_owned(), source: error },
            }
            .into());
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(InitOutcome {
            data_dir: dir.to_owned(),
            admin_key: secret,
            admin_key_id: record.key_id,
            log_public_key,
        })
    }

    /// Break-glass recovery (`keyledger admin recover`, docs/operations.md): opens the data
    /// dir offline (refused while a server holds its lock), issues a new full admin key, and
    /// records its `created` event with the actor `recovery`, so the log shows every use.
    /// Workspace policies of `_ledger` do not apply to it: it is the way back, not a key like
    /// others.
    pub fn recover(dir: &Path, options: EngineOptions) -> Result<InitOutcome, EngineError> {
        let engine = Engine::open(dir, options)?;
        let issued = engine.create_blocking(
            Caller::recovery(),
            WorkspaceId::ledger(),
            full_admin_spec("recovery admin key"),
        );
        let log_public_key = engine.public_key().to_string();
        engine.shutdown_blocking();
        let (record, secret) = issued?;
        Ok(InitOutcome {
            data_dir: dir.to_owned(),
            admin_key: secret,
            admin_key_id: record.key_id,
            log_public_key,
        })
    }

    /// Opens an initialised data dir: recovers the log, loads the registry from its
    /// projection (no full replay), catches up from the log, and starts the writer.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Self, EngineError> {
        let lock = datadir::lock(dir)?;
        let secrets = datadir::load(dir)?;
        let log = Log::open(LogConfig {
            dir: dir.join(datadir::LOG_DIR),
            storage: options.storage.clone(),
            signer: secrets.signer.clone(),
            origin: secrets.origin,
        })?;
        let signer = Arc::new(secrets.signer);
        if log.recovery().truncated_records > 0 || log.recovery().truncated_bytes > 0 {
            tracing::warn!(
                records = log.recovery().truncated_records,
                bytes = log.recovery().truncated_bytes,
                "cut a torn, unacknowledged tail off the log"
            );
        }
        let reader = log.reader();
        let projections_file = dir.join(datadir::PROJECTIONS_FILE);
        let mut projections =
            Projections::open_with_cache(&projections_file, options.projection_cache_bytes)?;
        let projections_len_at_open = file_len(&projections_file);
        if projections.cursor()? > reader.len() {
            tracing::warn!("projections are ahead of the log; rebuilding them from the log");
            projections.rebuild(&reader)?;
        }
        projections.catch_up(&reader)?;
        let state = projections.load_state()?;
        let projections_db = projections.database();
        let applied = state.applied;
        let state = Arc::new(RwLock::new(state));
        let (events_tx, events_rx) =
            std::sync::mpsc::sync_channel::<CommittedEvents>(options.projector_queue_batches.max(1));
        let (projected_tx, projected_rx) = watch::channel(applied);
        let projection_demand = Arc::new(AtomicU64::new(0));
        let sequencer = crate::sequencer::LedgerSequencer {
            state: state.clone(),
            projections_db: projections_db.clone(),
        };
        let writer = log.start(sequencer, options.writer.clone(), Some(events_tx));
        let projector = {
            let (reader, committed, demand) = (reader.clone(), writer.committed(), projection_demand.clone());
            std::thread::Builder::new()
                .name("keyledger-projector".into())
                .spawn(move || {
                    run_projector(projections, events_rx, projected_tx, reader, committed, &demand)
                })
                .map_err(|e| LedgerError::Internal(format!("cannot start the projector: {e}")))?
        };
        let webhook_counters = Arc::new(crate::webhook::WebhookCounters::default());
        let sources = crate::webhook::service::Sources {
            state: state.clone(),
            reader: reader.clone(),
            projections: projections_db.clone(),
            projected: projected_rx.clone(),
            pepper: secrets.pepper.clone(),
        };
        let webhooks = crate::webhook::WebhookService::start(
            &dir.join(datadir::WEBHOOKS_FILE),
            options.webhooks.clone(),
            sources,
            webhook_counters.clone(),
        );
        let webhooks = match webhooks {
            Ok(webhooks) => webhooks,
            Err(error) => {
                writer.shutdown_blocking();
                return Err(error.into());
            }
        };
        Ok(Self {
            state,
            writer,
            reader,
            pepper: secrets.pepper,
            usage_durability: options.usage_durability,
            projected: projected_rx,
            projection_demand,
            projector: std::sync::Mutex::new(Some(projector)),
            projections_db,
            projections_len_at_open,
            webhooks,
            webhook_counters,
            counters: EngineCounters::default(),
            data_dir: dir.to_owned(),
            signer,
            _lock: lock,
        })
    }

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

    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    pub fn webhook_counters(&self) -> &crate::webhook::WebhookCounters {
        &self.webhook_counters
    }

    pub fn writer_stats(&self) -> &keyledger_log::WriterStats {
        self.writer.stats()
    }

    /// A signed checkpoint covering every event appended so far (signed now if needed).
    pub async fn checkpoint_now(&self) -> Result<keyledger_log::checkpoint::StoredCheckpoint, LedgerError> {
        Ok(self.writer.checkpoint_now().await?)
    }

    /// False once the log could not be written (the engine then refuses every append).
    pub fn is_healthy(&self) -> bool {
        self.writer.is_healthy()
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, LedgerState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    // ----- commands -------------------------------------------------------------------

    async fn submit(&self, command: Command) -> Result<Reply, LedgerError> {
        self.writer.submit(command, Durability::Synced).await?
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

    fn create_command(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
    ) -> Result<(Secret, Command), LedgerError> {
        let (secret, issued) = self.issue_secret(&workspace, spec.environment)?;
        Ok((secret, Command::Create { caller, workspace, spec, secret: issued, idempotency: None }))
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
        let (secret, mut command) = self.create_command(caller, workspace, spec)?;
        if let Command::Create { idempotency: tag, .. } = &mut command {
            *tag = idempotency;
        }
        match self.submit(command).await? {
            Reply::Key(record) => Ok((*record, secret)),
            other => Err(unexpected(other)),
        }
    }

    /// [`Self::create`] for synchronous callers (init, generators); not from async code.
    pub fn create_blocking(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        spec: KeySpec,
    ) -> Result<(KeyRecord, Secret), LedgerError> {
        let (secret, command) = self.create_command(caller, workspace, spec)?;
        match self.writer.submit_blocking(command, Durability::Synced)?? {
            Reply::Key(record) => Ok((*record, secret)),
            other => Err(unexpected(other)),
        }
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
        match self.submit(Command::Rotate { caller, key_id, overlap, secret: issued, idempotency }).await? {
            Reply::Rotation { key, previous } => Ok((*key, *previous, secret)),
            other => Err(unexpected(other)),
        }
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
        expect_key(self.submit(Command::Revoke { caller, key_id, reason }).await?)
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
        match self.submit(Command::RevokeAll { caller, workspace, reason, idempotency }).await? {
            Reply::RevokedAll { key_ids, skipped } => Ok(RevokedAll { key_ids, skipped }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn set_policy(
        &self,
        caller: Caller,
        workspace: WorkspaceId,
        policy: Policy,
    ) -> Result<Policy, LedgerError> {
        match self.submit(Command::SetPolicy { caller, workspace, policy }).await? {
            Reply::Policy(policy) => Ok(policy),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update(
        &self,
        caller: Caller,
        key_id: KeyId,
        changes: KeyChanges,
    ) -> Result<KeyRecord, LedgerError> {
        expect_key(self.submit(Command::Update { caller, key_id, changes }).await?)
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
        expect_key(self.submit(Command::SetDisabled { caller, key_id, disabled, reason }).await?)
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
        let Some(key_id) = self.lookup(presented) else { return Ok(VerifyOutcome::Unknown) };
        let command = Command::Verify { request_id, key_id, wants, context };
        match self.writer.submit(command, self.usage_durability).await?? {
            Reply::Verdict(verdict) => Ok(VerifyOutcome::Known(verdict)),
            other => Err(unexpected(other)),
        }
    }

    /// Checksum, keyed hash, registry lookup: the part of verification that needs no log.
    fn lookup(&self, presented: &str) -> Option<KeyId> {
        if Secret::check(presented).is_err() {
            self.counters.verify_malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let hash = self.pepper.hash(presented);
        let found = self.read_state().id_by_hash(&hash);
        if found.is_none() {
            self.counters.verify_unknown.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Authenticates an admin key (workspace `_ledger`). Appends nothing.
    pub fn authenticate_admin(&self, presented: &str) -> Result<KeyRecord, AuthError> {
        if Secret::check(presented).is_err() {
            return Err(AuthError::Unknown);
        }
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
        self.read_state().key_by_hash(&hash)
    }

    // ----- reads ----------------------------------------------------------------------

    pub fn key(&self, key_id: &KeyId) -> Option<KeyRecord> {
        self.read_state().key(key_id)
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
        let command =
            Command::SetWebhook { caller, workspace: workspace.clone(), config: Some((url, events)) };
        match self.submit(command).await? {
            Reply::Webhook(webhook) => {
                let secret = self.pepper.webhook_secret(workspace.as_str(), webhook.set_seq);
                Ok((*webhook, secret))
            }
            other => Err(unexpected(other)),
        }
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
        match self.submit(Command::SetWebhook { caller, workspace, config: None }).await? {
            Reply::Webhook(webhook) => Ok(*webhook),
            other => Err(unexpected(other)),
        }
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
        let workspace = found.map_or_else(WorkspaceId::ledger, |k| k.workspace.clone());
        let command = Command::RecordLookup { caller, workspace, found: found.map(|k| k.key_id) };
        match self.submit(command).await? {
            Reply::Recorded(seq) => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    // ----- end audit ----

    /// Waits until the redb projections have applied every event written so far (an audit
    /// read's barrier: it sees every write that answered before it), or until `timeout`.
    pub async fn wait_for_projections(&self, timeout: Duration) -> bool {
        // Everything already written (a verify in `batched` mode answers before its fsync,
        // which follows within the sync window): the projector sees it once durable.
        let target = self.reader.len();
        self.projection_demand.fetch_max(target, Ordering::AcqRel);
        let mut projected = self.projected.clone();
        tokio::time::timeout(timeout, projected.wait_for(|applied| *applied >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Drains pending appends, writes a final checkpoint, persists projections and stops.
    pub async fn shutdown(&self) {
        let stop_webhooks = self.webhooks.stopper();
        let _ = tokio::task::spawn_blocking(stop_webhooks).await;
        self.writer.shutdown().await;
        let _ = tokio::task::spawn_blocking(self.projector_stopper()).await;
    }

    pub fn shutdown_blocking(&self) {
        (self.webhooks.stopper())();
        self.writer.shutdown_blocking();
        (self.projector_stopper())();
    }

    /// What stops the projections once the writer has stopped (so the projector has seen its
    /// last batch): joins the projector thread, then compacts the file if it grew enough
    /// ([`compact_projections`]). Blocking; the async shutdown runs it on a blocking thread.
    fn projector_stopper(&self) -> impl FnOnce() + Send + 'static {
        let projector = self.projector.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (db, path) = (self.projections_db.clone(), self.data_dir.join(datadir::PROJECTIONS_FILE));
        let at_open = self.projections_len_at_open;
        move || {
            if let Some(projector) = projector {
                let _ = projector.join();
            }
            compact_projections(&db, &path, at_open);
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Growth of `projections.redb` since it was opened below which a clean stop does not compact
/// it (see [`should_compact`]).
const COMPACT_AFTER_GROWTH: u64 = 64 << 20;

/// Whether a clean stop compacts `projections.redb`: only if the file grew by at least
/// [`COMPACT_AFTER_GROWTH`] and an eighth since it was opened. Free pages come from the
/// projector's writes, and a compaction walks the whole file whether or not it finds pages
/// to move (5.5 s for a 1.5 GB file on a loaded 2-core VM), so a stop after little indexing
/// skips it.
fn should_compact(len_at_open: u64, len_now: u64) -> bool {
    len_now.saturating_sub(len_at_open) >= COMPACT_AFTER_GROWTH.max(len_at_open / 8)
}

/// Compacts the projections once the projector has stopped, if they grew enough (see
/// [`should_compact`] and [`crate::projection::ProjectionsDb::compact`]). A failure loses
/// nothing: the file stays as it was, or redb repairs it on the next open.
fn compact_projections(db: &crate::projection::ProjectionsDb, path: &Path, len_at_open: u64) {
    let len_now = file_len(path);
    if !should_compact(len_at_open, len_now) {
        tracing::debug!(len_at_open, len_now, "projections grew little since the start; not compacting");
        return;
    }
    let started = Instant::now();
    match db.compact(Duration::from_secs(2)) {
        Ok(compacted) => {
            tracing::info!(compacted, ms = started.elapsed().as_millis() as u64, "projections compacted")
        }
        Err(error) => tracing::warn!(%error, "could not compact the projections at shutdown"),
    }
}

fn expect_key(reply: Reply) -> Result<KeyRecord, LedgerError> {
    match reply {
        Reply::Key(record) => Ok(*record),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> LedgerError {
    LedgerError::Internal(format!("unexpected reply kind {:?}", std::mem::discriminant(&reply)))
}

/// The longest the projector holds durable usage events before applying them when no audit
/// read waits: one redb transaction then folds many writer batches, so aggregates merge in
/// memory and index inserts share the leaf pages they copy (a key's rows are appended to the
/// same leaf once a second instead of once per writer batch), and each (durable) commit
/// costs one fsync a second. Lifecycle events are applied at once.
const PROJECTION_LAG: Duration = Duration::from_millis(1000);
/// How often the projector looks for a waiting audit read while it holds events.
const PROJECTION_POLL: Duration = Duration::from_millis(2);
/// The most events one projection transaction applies.
const PROJECTION_MAX_EVENTS: usize = 131_072;

/// How long an idle projector waits before it compares the projections with the log's
/// durable length (batches the writer skipped are read from the log).
const PROJECTION_IDLE_CHECK: Duration = Duration::from_millis(50);

/// Applies the durable events before `end` from the log (the batches the writer did not
/// hand over). False if the projections could not be written.
fn catch_up_from_log(
    projections: &mut Projections,
    log: &LogReader,
    end: u64,
    applied: &watch::Sender<u64>,
) -> bool {
    match projections.catch_up_to(log, end) {
        Ok(next) => {
            applied.send_replace(next);
            true
        }
        Err(error) => {
            tracing::error!(%error, "projection catch-up from the log failed; reopening the projections");
            false
        }
    }
}

/// True if the batch has an event other than a use or a denial: those are applied at
/// once, so that key reads, webhooks and other projection readers see a lifecycle change
/// without the usage lag.
fn has_lifecycle(batch: &CommittedEvents) -> bool {
    batch.iter().any(|e| !e.payload.kind().is_usage())
}

/// Folds durable batches into redb until the writer hangs up (at shutdown). Batches are
/// gathered for up to [`PROJECTION_LAG`], or until `demand` (an audit read's barrier) asks
/// for events already received.
///
/// If redb fails (e.g. the disk is full), the projector does not stop: it reopens the
/// database with backoff (100 ms doubling to 5 s) and catches up from the log up to the
/// writer's durable length, then resumes with the batches queued meanwhile (events already
/// applied are skipped by the cursors).
///
/// The writer's channel is bounded and the writer never waits for it: when it is full, a
/// batch is skipped. The projector notices the gap (a batch starting past what it expects,
/// or, when idle, a durable length past it) and reads the missing events from the log, so
/// its memory is bounded by the channel and [`PROJECTION_MAX_EVENTS`] whatever the load. Readers meanwhile get
/// [`ProjectionError::Reopening`] or the last snapshot; the log stays the truth.
fn run_projector(
    mut projections: Projections,
    events: std::sync::mpsc::Receiver<CommittedEvents>,
    applied: watch::Sender<u64>,
    log: LogReader,
    committed: watch::Receiver<u64>,
    demand: &AtomicU64,
) {
    use std::sync::mpsc::RecvTimeoutError;
    const RETRY_INITIAL: Duration = Duration::from_millis(100);
    const RETRY_MAX: Duration = Duration::from_secs(5);
    let mut broken: Option<Duration> = None;
    let mut open = true;
    let mut pending: Vec<CommittedEvents> = Vec::new();
    let mut carried: Option<CommittedEvents> = None;
    while open {
        if let Some(delay) = broken {
            let end = *committed.borrow();
            let repaired =
                projections.reopen(Duration::from_secs(10)).and_then(|()| projections.catch_up_to(&log, end));
            match repaired {
                Ok(next) => {
                    tracing::warn!(events = next, "projections reopened and caught up with the log");
                    applied.send_replace(next);
                    broken = None;
                }
                Err(error) => {
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "projections still cannot be written");
                    // Batches arriving meanwhile are covered by the next catch-up.
                    match events.recv_timeout(delay) {
                        Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    broken = Some((delay * 2).min(RETRY_MAX));
                }
            }
            continue;
        }
        // The next seq the projections expect: what is applied, or what is held to apply.
        let expected = *applied.borrow();
        let first = match carried.take() {
            Some(batch) => batch,
            None => match events.recv_timeout(PROJECTION_IDLE_CHECK) {
                Ok(batch) => batch,
                Err(RecvTimeoutError::Timeout) => {
                    // Nothing handed over for a while: durable events beyond the projections
                    // are batches the writer skipped (full channel); read them from the log.
                    let end = *committed.borrow();
                    if end > expected && !catch_up_from_log(&mut projections, &log, end, &applied) {
                        broken = Some(RETRY_INITIAL);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if let Some(start) = first.first().map(|e| e.seq)
            && start > expected
            && !catch_up_from_log(&mut projections, &log, start, &applied)
        {
            broken = Some(RETRY_INITIAL);
            continue;
        }
        pending.push(first);
        let mut held = pending.iter().map(|b| b.len()).sum::<usize>();
        let mut urgent = pending.iter().any(has_lifecycle);
        let deadline = Instant::now() + PROJECTION_LAG;
        loop {
            let received = pending.last().and_then(|b| b.last()).map_or(0, |e| e.seq + 1);
            if held >= PROJECTION_MAX_EVENTS
                || urgent
                || demand.load(Ordering::Acquire) > *applied.borrow() && received > *applied.borrow()
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match events.recv_timeout((deadline - now).min(PROJECTION_POLL)) {
                Ok(more) if more.first().is_some_and(|e| e.seq > received) => {
                    // The writer skipped batches in between: apply what is held, then read
                    // the gap from the log before this one.
                    carried = Some(more);
                    break;
                }
                Ok(more) => {
                    held += more.len();
                    urgent |= has_lifecycle(&more);
                    pending.push(more);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let batches: Vec<&[keyledger_core::Event]> = pending.iter().map(|b| b.as_slice()).collect();
        let Some(last) = batches.iter().rev().find_map(|b| b.last()).map(|e| e.seq) else {
            pending.clear();
            continue;
        };
        let result = projections.apply_batches(&batches);
        drop(batches);
        pending.clear();
        match result {
            Ok(()) => {
                applied.send_replace(last + 1);
            }
            Err(error) => {
                tracing::error!(%error, "projection update failed; reopening the projections and catching up from the log");
                broken = Some(RETRY_INITIAL);
            }
        }
    }
    if let Err(error) = projections.persist() {
        tracing::error!(%error, "could not persist projections at shutdown; they catch up from the log on the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stop_compacts_only_after_enough_growth() {
        const MIB: u64 = 1 << 20;
        // A fresh file that indexing grew: compacted.
        assert!(should_compact(0, 300 * MIB));
        assert!(should_compact(MIB, 65 * MIB));
        // Little growth, in absolute terms or relative to a large file: left alone.
        assert!(!should_compact(0, 63 * MIB));
        assert!(!should_compact(1500 * MIB, 1500 * MIB));
        assert!(!should_compact(1500 * MIB, 1600 * MIB));
        assert!(should_compact(1500 * MIB, 1700 * MIB));
        // A file that shrank (or vanished) is never compacted.
        assert!(!should_compact(300 * MIB, 0));
    }
}
