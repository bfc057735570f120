//! The `keyledger` command: `init`, `serve`, and offline `log verify`, `log upgrade` and
//! `admin recover`.
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod audit_view;
mod client;
mod connection;
mod credits;
mod export;
mod import;
mod proof;
mod ratelimits;
mod recover;
mod report;
mod scan;
mod store;
mod table;
mod upgrade;
mod witness;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use keyledger_ledger::{Engine, EngineOptions};
use keyledger_log::{Durability, WriterOptions};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "keyledger", version, about = "A self-hosted, tamper-evident ledger of API keys.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir: the log, the signing key, the pepper and the first admin key.
    /// Prints one JSON object with the admin key (shown only this once).
    Init {
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
        /// The checkpoint origin (the log's name in every signed checkpoint and in its
        /// public key). Default: `keyledger/<16 hex digits of the public key's hash>`.
        #[arg(long, env = "KEYLEDGER_ORIGIN")]
        origin: Option<String>,
        /// Hold the ledger in this PostgreSQL database (`postgres://…` or `host=a,b …`):
        /// creates its schema and identity; other nodes then `serve --store` with copies of
        /// this data dir's signing.key and pepper.key (docs/operations.md).
        #[arg(long, env = "KEYLEDGER_STORE", hide_env_values = true)]
        store: Option<String>,
    },
    /// Run the HTTP service (initialising the data dir first if needed).
    Serve(ServeArgs),
    /// Work with the log offline.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Offline administration of a stopped server's data dir: `admin recover`.
    Admin {
        #[command(subcommand)]
        command: recover::AdminCommand,
    },
    /// Manage the API keys of a running server.
    Keys(admin::KeysArgs),
    /// Show or set a workspace's key policy on a running server.
    Policy(admin::PolicyArgs),
    /// Configure a workspace's signed webhook notifications on a running server, and list
    /// their deliveries.
    Webhook(admin::WebhookArgs),
    /// Download a signed export from a running server, or verify one offline.
    Export(export::ExportArgs),
    /// Download a signed compliance report, or verify one against the log.
    Report(report::ReportArgs),
    /// Ask a running server what happened: a key's events, a leak report, request ids,
    /// sources, the keys valid at an instant, hygiene, and which key a leaked secret is.
    Audit(audit::AuditArgs),
    /// Find keyledger keys in files and a git history, offline (by their checksum); with
    /// --lookup ask the server which are keys, with --revoke revoke the active ones. Exits 1
    /// when a live key was found (a pre-commit or CI check).
    Scan(scan::ScanArgs),
    /// Move a ledger between a data dir and a PostgreSQL database: `store copy`.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Run an auditor's own C2SP tlog-witness: `witness init`, `witness serve`.
    Witness {
        #[command(subcommand)]
        command: witness::WitnessCommand,
    },
    /// Verify offline the proof of one event written by `keyledger audit prove`.
    Proof(proof::ProofArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Re-hash the whole log, check every checkpoint signature and that the projections
    /// equal a replay. Run with the server stopped. Exits non-zero naming the first bad seq.
    Verify {
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
        /// Verify the log a PostgreSQL database holds instead (a connection string); it may
        /// run while nodes serve: it reads one consistent snapshot.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// Convert a format-1 data dir (BLAKE3 tree) to log format 2 (RFC 6962 SHA-256 tree):
    /// verifies the whole log, signs a transition note binding the old root to the new one,
    /// rebuilds the tree and signs a new checkpoint. Run with the server stopped; a log that
    /// does not verify is refused and nothing changes.
    Upgrade {
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
    },
    /// Save the latest signed checkpoint (a C2SP signed note) of a running server.
    Checkpoint(admin::CheckpointArgs),
    /// Print the log's public key (C2SP note verifier key) of a running server.
    PublicKey(admin::PublicKeyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageDurability {
    /// Usage events are written before verify answers and fsynced within 10 ms: a power
    /// cut can lose at most that window of usage records (never a lifecycle event).
    Batched,
    /// Verify answers only after its usage event is fsynced.
    Strict,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory.
    #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
    data_dir: PathBuf,
    /// Serve the ledger held in this PostgreSQL database (a node of it; the data dir holds
    /// the node's keys, its local mirror of the log and its projections).
    #[arg(long, env = "KEYLEDGER_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "KEYLEDGER_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Also serve Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`,
    /// plaintext HTTP/2) on this address; off unless given (docs/gateways.md).
    #[arg(long, env = "KEYLEDGER_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Nodes of the previous version still share the `--store`: append no event kind they
    /// cannot read (a rate-limited verification's `used` event then does not name its
    /// spends, and each node counts only its own). Drop it, in a second rolling restart,
    /// once every node runs this version (docs/operations.md, "Upgrading the nodes").
    #[arg(long, env = "KEYLEDGER_ROLLING_UPGRADE")]
    rolling_upgrade: bool,
    /// How durable a usage (`used`/`denied`) event is before verify answers.
    #[arg(long, env = "KEYLEDGER_USAGE_DURABILITY", value_enum, default_value = "batched")]
    usage_durability: UsageDurability,
    /// Sign a checkpoint after this many events…
    #[arg(long, env = "KEYLEDGER_CHECKPOINT_EVERY_EVENTS", default_value_t = 100_000)]
    checkpoint_every_events: u64,
    /// …or after this many seconds, whichever comes first.
    #[arg(long, env = "KEYLEDGER_CHECKPOINT_INTERVAL_SECS", default_value_t = 10)]
    checkpoint_interval_secs: u64,
    /// Take the client address of forward-auth verifications from X-Forwarded-For /
    /// X-Real-IP (only behind a proxy you control).
    #[arg(long, env = "KEYLEDGER_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Proxy address ranges (CIDR) whose forwarded headers are believed; repeatable.
    /// Without any, every peer is believed when --trust-forwarded-for is set.
    #[arg(long = "trusted-proxy", env = "KEYLEDGER_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "KEYLEDGER_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
    /// redb's page cache for the projections (audit indexes, registry rows), in MiB: memory
    /// the server may hold beyond its registry. More speeds up audit writes and queries.
    #[arg(long, env = "KEYLEDGER_PROJECTION_CACHE_MB", default_value_t = 256)]
    projection_cache_mb: usize,
    /// Longest time a request may take before it answers 408, in seconds.
    #[arg(long, env = "KEYLEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Longest wait for a request's headers on a connection, in seconds, counted from its
    /// opening or its previous response: a client that sends them slower (slow loris), or
    /// an idle keep-alive connection, is disconnected.
    #[arg(long, env = "KEYLEDGER_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Failed (401/403) verifications allowed per client address and minute; beyond that,
    /// verify answers 429 with Retry-After until the address's budget refills. 0 = off (the
    /// default: a trusted gateway funnels many clients through one address).
    #[arg(
        long,
        env = "KEYLEDGER_THROTTLE_FAILED_VERIFICATIONS",
        default_value_t = 0,
        value_name = "PER_MINUTE"
    )]
    throttle_failed_verifications: u32,
    /// Let webhooks be delivered to loopback, private (RFC 1918, CGNAT, unique-local) and
    /// link-local addresses, for receivers on the internal network. Off, such destinations
    /// are refused; cloud metadata endpoints are refused either way (docs/webhooks.md).
    #[arg(long, env = "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
    /// Failed admin authentications (a presented key that is unknown, revoked, disabled,
    /// expired or not a `_ledger` key) allowed per client address and minute; beyond that,
    /// each further failed authentication from the address answers 429 with Retry-After
    /// until its budget refills. A valid admin key is always served. 0 = off.
    #[arg(
        long,
        env = "KEYLEDGER_THROTTLE_FAILED_ADMIN_AUTH",
        default_value_t = keyledger_server::throttle::DEFAULT_ADMIN_AUTH_FAILURES,
        value_name = "PER_MINUTE"
    )]
    throttle_failed_admin_auth: u32,
    /// Show the log size on /healthz to anyone (by default only to admin keys holding
    /// ledger:audit:read: it counts every tenant's traffic).
    #[arg(long, env = "KEYLEDGER_HEALTHZ_DETAILS")]
    healthz_details: bool,
    /// Serve /checkpoint and the tlog hash tiles (/tile/<L>/…) to anyone, without a key
    /// (docs/api.md, "Tiles"). Entry bundles (/tile/entries/…) always need an admin key
    /// holding ledger:audit:read over all workspaces.
    #[arg(long, env = "KEYLEDGER_PUBLIC_LOG")]
    public_log: bool,
    /// GitHub secret scanning's public keys (the shape of GitHub's public-keys metadata
    /// document, saved locally; reloaded on SIGHUP): enables POST /v1/leaks/github
    /// (docs/leaks.md).
    #[arg(long, env = "KEYLEDGER_GITHUB_SCANNING_KEYS")]
    github_scanning_keys: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS directly (with --tls-key), for deployments
    /// without a TLS-terminating proxy in front.
    #[arg(long, env = "KEYLEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "KEYLEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "KEYLEDGER_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Log filter on stderr: a level (`warn`, `info`, `debug`…) or tracing directives, e.g.
    /// `info,keyledger_server::request_id=debug` to also log every successful verification.
    /// Without it, RUST_LOG, else `info`.
    #[arg(long, env = "KEYLEDGER_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// A witness every new checkpoint is submitted to (C2SP tlog-witness), as its
    /// cosignature/v1 verifier key, `=`, and its base URL; repeatable
    /// (docs/operations.md, "Witnesses").
    #[arg(
        long = "witness",
        env = "KEYLEDGER_WITNESSES",
        value_delimiter = ',',
        value_name = "NAME+KEYID+VKEY=URL",
        value_parser = parse_witness,
        conflicts_with = "witness_policy"
    )]
    witnesses: Vec<keyledger_ledger::witness::Witness>,
    /// A C2SP tlog-policy file naming the witnesses (`witness NAME VKEY URL`) and the
    /// quorum (`quorum K|NAME|none`), instead of --witness.
    #[arg(long, env = "KEYLEDGER_WITNESS_POLICY", value_name = "FILE")]
    witness_policy: Option<PathBuf>,
    /// How many --witness witnesses must cosign a checkpoint (default: all of them).
    #[arg(long, env = "KEYLEDGER_WITNESS_QUORUM", value_name = "K", requires = "witnesses")]
    witness_quorum: Option<usize>,
}

fn parse_witness(text: &str) -> Result<keyledger_ledger::witness::Witness, String> {
    keyledger_ledger::witness::Witness::parse_flag(text).map_err(|e| e.to_string())
}

/// The witness policy of `serve`'s flags, checked before anything is opened.
fn witness_policy(args: &ServeArgs) -> Result<Option<keyledger_ledger::WitnessPolicy>> {
    if let Some(path) = &args.witness_policy {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the witness policy {}", path.display()))?;
        let policy = keyledger_ledger::WitnessPolicy::parse(&text)
            .with_context(|| format!("invalid witness policy {}", path.display()))?;
        return Ok(Some(policy));
    }
    if args.witnesses.is_empty() {
        return Ok(None);
    }
    keyledger_ledger::WitnessPolicy::new(args.witnesses.clone(), args.witness_quorum)
        .map(Some)
        .context("invalid --witness / --witness-quorum")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { data_dir, origin, store } => init(data_dir, origin, store),
        Command::Serve(args) => serve(args),
        Command::Log { command: LogCommand::Verify { store: Some(url), .. } } => store::log_verify(&url),
        Command::Log { command: LogCommand::Verify { data_dir, store: None } } => log_verify(data_dir),
        Command::Log { command: LogCommand::Upgrade { data_dir } } => log_upgrade(data_dir),
        Command::Log { command: LogCommand::Checkpoint(args) } => Ok(admin::run_checkpoint(args)),
        Command::Log { command: LogCommand::PublicKey(args) } => Ok(admin::run_public_key(args)),
        Command::Admin { command } => recover::run(command),
        Command::Keys(args) => Ok(admin::run_keys(args)),
        Command::Policy(args) => Ok(admin::run_policy(args)),
        Command::Webhook(args) => Ok(admin::run_webhook(args)),
        Command::Export(args) => Ok(export::run(args)),
        Command::Report(args) => Ok(report::run(args)),
        Command::Audit(args) => Ok(audit::run(args)),
        Command::Scan(args) => Ok(scan::run(args)),
        Command::Store { command } => store::run(command),
        Command::Witness { command } => witness::run(command),
        Command::Proof(args) => Ok(proof::run(args)),
        Command::Completions { shell } => Ok(admin::completions(shell)),
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keyledger: {error:#}");
            ExitCode::FAILURE
        }
    };
    // An answer that could not be written is not a success (a refusal keeps its own code).
    match connection::take_output_error() {
        Some(error) if code == ExitCode::SUCCESS => {
            eprintln!("keyledger: the answer could not be written to standard output ({error})");
            ExitCode::from(client::exit::OUTPUT)
        }
        _ => code,
    }
}

fn init_json(outcome: &keyledger_ledger::InitOutcome) -> serde_json::Value {
    serde_json::json!({
        "data_dir": outcome.data_dir.display().to_string(),
        "admin_key": outcome.admin_key.expose(),
        "admin_key_id": outcome.admin_key_id.to_string(),
        "log_public_key": outcome.log_public_key,
    })
}

fn init(data_dir: PathBuf, origin: Option<String>, store: Option<String>) -> Result<ExitCode> {
    let held_in_store = store.is_some();
    let options = EngineOptions { store, secrets: secrets_from_env()?, ..EngineOptions::default() };
    let outcome = Engine::init_with_origin(&data_dir, options, origin.as_deref()).context("init refused")?;
    let mut json = init_json(&outcome);
    if held_in_store {
        // The kind of store, never the connection string (it may hold a password).
        json["store"] = "postgresql".into();
    }
    print_admin_key(&json.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the JSON holding a new admin key's secret (shown once), or fails naming what to
/// do: the key exists, so a lost secret is recovered with `keyledger admin recover`.
pub(crate) fn print_admin_key(json: &str) -> Result<()> {
    connection::print_required(json).context(
        "the admin key could not be written to standard output; it cannot be shown again: run `keyledger admin recover` (server stopped) for a new one",
    )
}

/// `KEYLEDGER_PEPPER` / `KEYLEDGER_SIGNING_KEY` (docs/operations.md, "Secrets from the
/// environment").
pub(crate) fn secrets_from_env() -> Result<keyledger_ledger::secret_env::SecretOverrides> {
    Ok(keyledger_ledger::secret_env::SecretOverrides::from_env()?)
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let filter = match &args.log_level {
        Some(directives) => tracing_subscriber::EnvFilter::try_new(directives)
            .with_context(|| format!("--log-level {directives:?} is not a log filter"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Human => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    if args.trust_forwarded_for && args.trusted_proxies.is_empty() {
        tracing::warn!(
            "--trust-forwarded-for without --trusted-proxy: every peer's X-Forwarded-For is believed, so \
             anyone who can reach keyledger chooses the client address that source allow-lists check, \
             usage events record and the failure throttles count by; name the gateways with \
             --trusted-proxy CIDR (docs/gateways.md)"
        );
    }
    let witnesses = witness_policy(&args)?;
    // Built before the engine, whose log writer runs on it; entered only below (opening a
    // PostgreSQL node must not run inside it).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let options = EngineOptions {
        usage_durability: match args.usage_durability {
            UsageDurability::Batched => Durability::Written,
            UsageDurability::Strict => Durability::Synced,
        },
        writer: WriterOptions {
            checkpoint_every_events: args.checkpoint_every_events.max(1),
            checkpoint_every: Duration::from_secs(args.checkpoint_interval_secs.max(1)),
            // With strict usage durability every verification batch waits for an fsync,
            // which on the runtime would be blocking work each time: the writer keeps its
            // thread (docs/benchmarks.md, "The writer as a task").
            run_on: matches!(args.usage_durability, UsageDurability::Batched)
                .then(|| runtime.handle().clone()),
            ..WriterOptions::default()
        },
        projection_cache_bytes: args.projection_cache_mb.max(1).saturating_mul(1 << 20),
        webhooks: keyledger_ledger::WebhookOptions {
            allow_private: args.webhook_allow_private,
            ..keyledger_ledger::WebhookOptions::default()
        },
        witnesses: keyledger_ledger::WitnessOptions {
            policy: witnesses,
            ..keyledger_ledger::WitnessOptions::default()
        },
        store: args.store.clone(),
        secrets: secrets_from_env()?,
        rolling_upgrade: args.rolling_upgrade,
        ..EngineOptions::default()
    };
    // A node of a PostgreSQL ledger is prepared from the database by `Engine::open`;
    // the database itself is initialised only by `keyledger init --store`.
    if args.store.is_none() && !keyledger_ledger::datadir::is_initialised(&args.data_dir) {
        let outcome =
            Engine::init(&args.data_dir, options.clone()).context("cannot initialise the data dir")?;
        print_admin_key(&init_json(&outcome).to_string())?;
    }
    let engine = Arc::new(Engine::open(&args.data_dir, options).context("cannot open the data dir")?);
    let config = keyledger_server::ServerConfig {
        trust_forwarded_for: args.trust_forwarded_for,
        trusted_proxies: args.trusted_proxies,
        body_limit: args.body_limit,
        request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
        throttle_failed_verifications: args.throttle_failed_verifications,
        throttle_failed_admin_auth: args.throttle_failed_admin_auth,
        healthz_details: args.healthz_details,
        public_log: args.public_log,
        ..keyledger_server::ServerConfig::default()
    };
    runtime.block_on(async move {
        let mut state = keyledger_server::AppState::new(engine, config);
        if let Some(path) = &args.github_scanning_keys {
            state.github_keys = Some(keyledger_server::leaks::github_keys::spawn_reload(path)?);
        }
        if let Some(address) = args.grpc_listen {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (--grpc-listen)"))?;
            tracing::info!(address = %listener.local_addr()?, "keyledger is serving gRPC ext_authz");
            let grpc = keyledger_server::grpc::serve_grpc(listener, state.clone(), shutdown_signal());
            tokio::spawn(async move {
                if let Err(error) = grpc.await {
                    tracing::error!(%error, "the gRPC ext_authz listener stopped");
                }
            });
        }
        match (args.tls_cert, args.tls_key) {
            (Some(certificate), Some(key)) => {
                tracing::info!(address = %args.listen, data_dir = %args.data_dir.display(), "keyledger is serving HTTPS");
                keyledger_server::serve_tls(args.listen, certificate, key, state, shutdown_signal(), None)
                    .await
                    .context("cannot serve HTTPS")?;
            }
            _ => {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                tracing::info!(address = %listener.local_addr()?, data_dir = %args.data_dir.display(), "keyledger is serving");
                keyledger_server::serve(listener, state, shutdown_signal()).await?;
            }
        }
        tracing::info!("stopped cleanly");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} verifying {pos}/{len} events [{bar:40}] {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

fn log_upgrade(data_dir: PathBuf) -> Result<ExitCode> {
    let bar = progress_bar();
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = upgrade::run(&data_dir, &mut progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result
}

fn log_verify(data_dir: PathBuf) -> Result<ExitCode> {
    let _lock =
        keyledger_ledger::datadir::lock(&data_dir).context("stop the server before verifying its log")?;
    // Either format is verified (a format-1 data dir before its upgrade).
    let secrets = keyledger_ledger::datadir::load_any_format(&data_dir)?;
    let verifier = secrets.signer.verifier();
    let storage = keyledger_log::storage::OsStorage::shared();
    let bar = progress_bar();
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let started = std::time::Instant::now();
    let log_dir = data_dir.join(keyledger_ledger::datadir::LOG_DIR);
    let report = keyledger_log::verify::verify_log(
        storage.clone(),
        &log_dir,
        &verifier,
        secrets.tree_hash,
        &mut progress,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            match error.first_bad_seq() {
                Some(seq) => eprintln!("log verify FAILED at seq {seq}: {error}"),
                None => eprintln!("log verify FAILED: {error}"),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    // Projections: compared with a replay of the same (read-only) log.
    match keyledger_ledger::projection::registry_check::check_registry(&data_dir, &log_dir, storage) {
        Ok(compared) => {
            crate::outln!(
                "log intact: {} events, {} checkpoints verified, log format {} ({} tree), root {}, projections equal a replay of {compared} events ({:.2}s)",
                report.events,
                report.checkpoints,
                report.tree_hash.log_format(),
                report.tree_hash.name(),
                hex_root(&report.root),
                started.elapsed().as_secs_f64()
            );
            if let Some(size) = report.transition_size {
                crate::outln!(
                    "upgraded from format 1 at {size} events: the transition note's signature and both of its roots verified"
                );
            }
            if report.tree_hash != keyledger_verify::merkle::TreeHash::Rfc6962 {
                crate::outln!(
                    "note: this is a format-1 log; run `keyledger log upgrade --data-dir {}` before serving it",
                    data_dir.display()
                );
            }
            if report.torn_checkpoint_bytes > 0 {
                crate::outln!(
                    "note: {} bytes of an unfinished checkpoint write will be cut at the next start",
                    report.torn_checkpoint_bytes
                );
            }
            if report.torn_tail_bytes > 0 {
                crate::outln!(
                    "note: {} bytes of an unfinished last batch will be cut at the next start",
                    report.torn_tail_bytes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("log verify FAILED: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hex_root(root: &[u8; 32]) -> String {
    root.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["keyledger", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Serve(args) => Ok(args),
            _ => unreachable!("serve parses as serve"),
        }
    }

    // A witness vkey (cosignature/v1) of the all-zero seed's key, named w.example.
    const VKEY: &str = "w.example+5eda88e9+BDtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";

    #[test]
    fn witness_flags_are_checked_before_anything_starts() {
        let bad_key = serve_args(&["--witness", "w.example+00000000+AAAA=https://w.example/"]);
        assert!(bad_key.is_err());
        let no_url = serve_args(&["--witness", VKEY]);
        assert!(no_url.is_err());
        let quorum_alone = serve_args(&["--witness-quorum", "1"]);
        assert!(quorum_alone.is_err());
        let too_many =
            serve_args(&["--witness", &format!("{VKEY}=https://w.example/"), "--witness-quorum", "2"]);
        assert!(witness_policy(&too_many.unwrap()).is_err());
        let policy =
            witness_policy(&serve_args(&["--witness", &format!("{VKEY}=https://w.example/")]).unwrap());
        assert_eq!(policy.unwrap().unwrap().witnesses().len(), 1);
    }
}
