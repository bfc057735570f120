//! Bringing an engine into being: a new data dir (`init`), an offline recovery of admin
//! access (`recover`), and the start of a node (`open`): the log recovered and checked,
//! the registry loaded from the projections and the log's tail, and the writer, projector,
//! webhook, witness and store threads started in the order docs/architecture.md gives.

use super::*;

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
        let mut store = match &options.store {
            Some(url) => {
                let mut store = keyledger_pg::PgStore::connect(url)?;
                if store.identity()?.is_some() {
                    return Err(keyledger_pg::PgError::AlreadyInitialised.into());
                }
                Some(store)
            }
            None => None,
        };
        let staging = datadir::staging_path(dir);
        let built = (|| {
            datadir::create_files(&staging, origin, store.is_some(), &options.secrets)?;
            if let Some(store) = &mut store {
                // The ledger's identity in the database: created once, refused if another
                // init won the race.
                let secrets = datadir::load(&staging)?;
                let identity = keyledger_pg::Identity {
                    origin: secrets.origin.clone(),
                    log_format: datadir::FORMAT as i32,
                    verifier_key: secrets.signer.verifier().to_string(),
                    pepper_check: keyledger_pg::identity::pepper_check(&secrets.pepper),
                };
                store.create(&identity, secrets.tree_hash)?;
            }
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
        let mut store = match &options.store {
            Some(url) => {
                let mut store = keyledger_pg::PgStore::connect(url)?;
                let identity = store.identity()?.ok_or(keyledger_pg::PgError::NotInitialised)?;
                let format = u32::try_from(identity.log_format).map_err(|_| {
                    keyledger_pg::PgError::LogFormat { found: identity.log_format, known: datadir::FORMAT }
                })?;
                datadir::prepare_store_node(dir, &identity.origin, format, &options.secrets)?;
                Some((store, identity))
            }
            None => None,
        };
        let secrets = datadir::load_with(dir, &options.secrets)?;
        match (&store, secrets.store) {
            (None, true) => return Err(DataDirError::StoreNode(dir.to_owned()).into()),
            (Some(_), false) => return Err(DataDirError::EmbeddedLedger(dir.to_owned()).into()),
            (Some((_, identity)), true) => keyledger_pg::identity::check(
                identity,
                &secrets.signer.verifier().to_string(),
                &secrets.pepper,
                datadir::FORMAT,
            )?,
            (None, false) => {}
        }
        let log_config = || LogConfig {
            dir: dir.join(datadir::LOG_DIR),
            storage: options.storage.clone(),
            signer: secrets.signer.clone(),
            origin: secrets.origin.clone(),
            tree_hash: secrets.tree_hash,
        };
        let log = match &mut store {
            None => Log::open(log_config())?,
            Some((store, _)) => open_mirror(dir, log_config, store)?,
        };
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
        let mut projections = Projections::open_with_cache(
            &projections_file,
            options.projection_cache_bytes,
            projection_list(),
        )?;
        if projections.cursor()? > reader.len() {
            tracing::warn!("projections are ahead of the log; rebuilding them from the log");
            projections.rebuild(&reader)?;
        }
        projections.catch_up(&reader)?;
        let state = projections.load_state()?;
        let counters =
            crate::sequencer_ratelimit::recount(&state, reader.segments(), state.applied, Timestamp::now())
                .map_err(ProjectionError::Log)?;
        let projections_db = projections.database();
        let applied = state.applied;
        let state = Arc::new(RwLock::new(state));
        let (events_tx, events_rx) =
            keyledger_log::handoff(options.projector_queue_batches, options.projector_queue_events);
        let (projected_tx, projected_rx) = watch::channel(applied);
        let projection_demand = Arc::new(AtomicU64::new(0));
        let sequencer = crate::sequencer::LedgerSequencer {
            state: state.clone(),
            projections_db: projections_db.clone(),
            counters,
            spends_in_events: !options.rolling_upgrade,
        };
        let shared = store.is_some();
        // The database's settings, parsed once before anything starts: nothing that runs
        // below can then fail to start for a reason found only halfway.
        let store_config = store.as_ref().map(|(store, _)| store.config().clone());
        let (writer, listener) = match store {
            None => (log.start(sequencer, options.writer.clone(), Some(events_tx)), None),
            Some((store, _)) => {
                let config = store.config().clone();
                let writer =
                    log.start_with_store(sequencer, options.writer.clone(), Some(events_tx), Box::new(store));
                let waker = writer.clone();
                match keyledger_pg::Listener::start(config, move || waker.wake()) {
                    Ok(listener) => (writer, Some(listener)),
                    Err(error) => {
                        writer.shutdown_blocking();
                        return Err(
                            ProjectionError::Log(format!("cannot start the listener: {error}")).into()
                        );
                    }
                }
            }
        };
        let feed = Feed {
            events: events_rx,
            applied: projected_tx,
            log: reader.clone(),
            committed: writer.committed(),
            demand: projection_demand.clone(),
        };
        let projector = match Projector::start(projections, feed) {
            Ok(projector) => projector,
            Err(error) => {
                writer.shutdown_blocking();
                return Err(error.into());
            }
        };
        // One node at a time delivers webhooks and submits to witnesses: the lease holder. It
        // shares its webhook attempts, which every other node's outbox follows.
        let node = keyledger_pg::lease::node_id();
        let shared_attempts = store_config
            .as_ref()
            .map(|config| keyledger_pg::PgWebhookAttempts::new(config.clone(), node.clone()));
        let (gate, lease): (crate::JobGate, _) = match (&listener, &store_config) {
            (Some(_), Some(config)) => {
                let config = config.clone();
                match keyledger_pg::Lease::start(config, "jobs", node, keyledger_pg::LeaseTimes::default()) {
                    Ok(lease) => {
                        let holding = lease.holding();
                        (Arc::new(move || holding.is_held()), Some(lease))
                    }
                    Err(error) => {
                        writer.shutdown_blocking();
                        (projector.stopper())();
                        return Err(ProjectionError::Log(format!("cannot start the lease: {error}")).into());
                    }
                }
            }
            _ => (Arc::new(|| true), None),
        };
        let webhook_counters = Arc::new(crate::webhook::WebhookCounters::default());
        let sources = crate::webhook::service::Sources {
            state: state.clone(),
            reader: reader.clone(),
            projections: projections_db.clone(),
            projected: projected_rx.clone(),
            pepper: secrets.pepper.clone(),
            gate: gate.clone(),
            shared_attempts,
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
                (projector.stopper())();
                return Err(error.into());
            }
        };
        let announcer = webhooks.announcer();
        // What the witnesses said is kept with the log's store, so every node serves it.
        let witness_records: Box<dyn keyledger_log::witnessed::WitnessRecords> = match store_config {
            Some(config) => Box::new(keyledger_pg::PgWitnessRecords::new(config)),
            None => Box::new(keyledger_log::witnessed::DirRecords::new(dir.join(datadir::LOG_DIR))),
        };
        let witnesses = crate::witness::service::WitnessService::start(
            options.witnesses.clone(),
            reader.clone(),
            witness_records,
            Box::new(move |alarm| {
                let subject = format!(
                    "{}\0{}\0{}\0{:?}",
                    alarm.witness, alarm.kind, alarm.log_size, alarm.witness_size
                );
                announcer.announce(subject.as_bytes(), &alarm.to_json());
            }),
            gate,
        );
        let witnesses = match witnesses {
            Ok(witnesses) => witnesses,
            Err(error) => {
                (webhooks.stopper())();
                writer.shutdown_blocking();
                // Joined, so that the projections database is closed when this returns (a
                // retry of the start may open it at once).
                (projector.stopper())();
                return Err(
                    ProjectionError::Log(format!("cannot start the witness submitters: {error}")).into()
                );
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
            projector,
            projections_db,
            webhooks,
            webhook_counters,
            witnesses,
            export_witness_wait: options.export_witness_wait,
            data_dir: dir.to_owned(),
            signer,
            listener: std::sync::Mutex::new(listener),
            lease: std::sync::Mutex::new(lease),
            shared,
            _lock: lock,
        })
    }
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
        credits: None,
    }
}

/// Opens a store node's local mirror and brings it up to the database; a mirror that cannot
/// be opened or is not a prefix of the database's log (a failover that lost commits it had
/// seen, a torn mirror after a power cut) is removed with the projections and rebuilt from
/// the database.
fn open_mirror(
    dir: &Path,
    config: impl Fn() -> LogConfig,
    store: &mut keyledger_pg::PgStore,
) -> Result<Log, EngineError> {
    use keyledger_log::store::StoreError;
    let reason = match Log::open(config()) {
        Ok(mut log) => match log.follow_store(store) {
            Ok(_) => return Ok(log),
            Err(StoreError::Diverged(reason)) => reason,
            Err(error) => return Err(error.into()),
        },
        Err(error) => error.to_string(),
    };
    tracing::warn!(%reason, "this node's local mirror does not match the database; rebuilding it from the database");
    datadir::remove_mirror(dir)?;
    let mut log = Log::open(config())?;
    log.follow_store(store)?;
    Ok(log)
}
