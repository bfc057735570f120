//! `cargo xtask gen-log`: writes a realistic log straight through the engine, for the
//! scale figures in docs/benchmarks.md.
//!
//! Keys are spread over workspaces; usage comes from many addresses, user agents and
//! paths, with a few denials; rotations and revocations happen along the way. Key 0 is
//! "hot": it receives `hot_share` of the traffic, so a 10M-event log holds a key with
//! about 1M uses for the compromise-report figure.

use anyhow::{Context, Result, bail};
use keyledger_core::{Environment, KeyId, RequestId, Secret, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::{Caller, Engine, EngineOptions, Expiry, KeySpec, VerifyRequirements};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub struct Options {
    pub data_dir: PathBuf,
    pub events: u64,
    pub keys: u64,
    pub hot_share: f64,
    /// How many workspaces the keys are spread over (default: one per 1,000 keys, 1–100).
    pub workspaces: Option<u64>,
}

/// A tiny deterministic generator (xorshift64*): reproducible logs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const USER_AGENTS: [&str; 8] = [
    "curl/8.5.0",
    "python-requests/2.32",
    "Go-http-client/2.0",
    "okhttp/4.12",
    "Mozilla/5.0 (X11; Linux x86_64)",
    "aws-sdk-js/3.600",
    "axios/1.7",
    "k6/0.52",
];
const PATHS: [&str; 10] = [
    "/v1/orders",
    "/v1/orders/42",
    "/v1/invoices",
    "/v1/users/me",
    "/v1/reports",
    "/healthz",
    "/v1/search",
    "/v1/payments",
    "/v1/refunds",
    "/v1/export",
];

/// Creates waiting at once: each waits for its fsync, so many in flight share each fsync
/// (a million keys in minutes rather than an hour).
const CREATES_IN_FLIGHT: usize = 1024;

pub fn run(options: Options) -> Result<()> {
    if options.keys == 0 || options.events == 0 {
        bail!("--events and --keys must be positive");
    }
    if options.data_dir.exists() {
        bail!("{} exists: gen-log writes a fresh data dir", options.data_dir.display());
    }
    let started = Instant::now();
    let init = Engine::init(&options.data_dir, EngineOptions::default()).context("init")?;
    let engine = Arc::new(Engine::open(&options.data_dir, EngineOptions::default()).context("open")?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let workspaces = options.workspaces.unwrap_or(options.keys / 1_000).clamp(1, 100);
    let summary = runtime.block_on(generate(engine.clone(), &options, workspaces))?;
    runtime.block_on(engine.shutdown());
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = crate::dir_size(&options.data_dir);
    println!(
        "{}",
        serde_json::json!({
            "data_dir": options.data_dir.display().to_string(),
            "events": summary.events,
            "keys": summary.keys,
            "workspaces": workspaces,
            "hot_key_id": summary.hot_key.to_string(),
            "hot_key_uses": summary.hot_uses,
            "rotations": summary.rotations,
            "revocations": summary.revocations,
            "seconds": elapsed,
            "events_per_second": summary.events as f64 / elapsed,
            "bytes_on_disk": bytes,
            "bytes_per_event": bytes as f64 / summary.events.max(1) as f64,
            "admin_key_id": init.admin_key_id.to_string(),
        })
    );
    Ok(())
}

struct Summary {
    events: u64,
    keys: u64,
    hot_key: KeyId,
    hot_uses: u64,
    rotations: u64,
    revocations: u64,
}

async fn generate(engine: Arc<Engine>, options: &Options, workspaces: u64) -> Result<Summary> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys: Vec<(KeyId, Secret)> = Vec::with_capacity(options.keys as usize);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..options.keys {
        let engine = engine.clone();
        let workspace: WorkspaceId = format!("ws-{:03}", i % workspaces).parse()?;
        let spec = KeySpec {
            name: format!("service-{i}"),
            scopes: vec!["read".into(), "write".into()],
            resources: vec![],
            environment: if rng.chance(0.2) { Environment::Test } else { Environment::Live },
            owner: Some(format!("team-{}", i % 17)),
            metadata: "{}".into(),
            expiry: if rng.chance(0.5) {
                Expiry::In(rng.below(365) as i64 * 86_400_000_000 + 86_400_000_000)
            } else {
                Expiry::Never
            },
            credits: None,
        };
        creates.spawn(async move { engine.create(Caller::system(), workspace, spec).await });
        if creates.len() >= CREATES_IN_FLIGHT {
            let (record, secret) = creates.join_next().await.context("create task")???;
            keys.push((record.key_id, secret));
        }
    }
    while let Some(created) = creates.join_next().await {
        let (record, secret) = created??;
        keys.push((record.key_id, secret));
    }
    keys.sort_by_key(|(id, _)| *id);
    let hot_key = keys[0].0;
    let keys = Arc::new(keys);
    let hot_uses = Arc::new(AtomicU64::new(0));
    let rotations = Arc::new(AtomicU64::new(0));
    let revocations = Arc::new(AtomicU64::new(0));
    let target = options.events;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..64u64 {
        let (engine, keys, hot_uses) = (engine.clone(), keys.clone(), hot_uses.clone());
        let (rotations, revocations) = (rotations.clone(), revocations.clone());
        let hot_share = options.hot_share;
        workers.spawn(async move {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (worker + 1).wrapping_mul(0x9E37_79B9));
            let mut done = 0u64;
            while engine.log().len() < target {
                let index = if rng.chance(hot_share) {
                    0
                } else {
                    1 + rng.below(keys.len() as u64 - 1) as usize % (keys.len() - 1).max(1)
                };
                let index = index.min(keys.len() - 1);
                let (key_id, secret) = &keys[index];
                // Each key has a small home set of addresses; 2% of calls come from anywhere.
                let home = key_id.as_bytes()[15] as u64;
                let ip = if rng.chance(0.02) {
                    std::net::IpAddr::from([198, 51, (rng.below(256)) as u8, rng.below(256) as u8])
                } else {
                    std::net::IpAddr::from([
                        10,
                        (home % 200) as u8,
                        (rng.below(4)) as u8,
                        (home % 250) as u8 + 1,
                    ])
                };
                let scopes =
                    if rng.chance(0.03) { vec!["admin".to_string()] } else { vec!["read".to_string()] };
                let context = UsageContext {
                    ip: Some(ip),
                    user_agent: Some(USER_AGENTS[rng.below(USER_AGENTS.len() as u64) as usize].into()),
                    method: Some(if rng.chance(0.7) { "GET" } else { "POST" }.into()),
                    path: Some(PATHS[rng.below(PATHS.len() as u64) as usize].into()),
                    request_id: Some(format!("gw-{worker}-{done}")),
                    scopes: scopes.clone(),
                    resource: None,
                };
                let wants = VerifyRequirements { scopes, ..Default::default() };
                let request = RequestId::generate(Timestamp::now().millis());
                engine.verify(request, secret.expose(), wants, context).await?;
                if index == 0 {
                    hot_uses.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
                if worker == 0 && done.is_multiple_of(50_000) {
                    let victim =
                        keys[1 + rng.below(keys.len() as u64 - 1) as usize % (keys.len() - 1).max(1)].0;
                    if rng.chance(0.5) {
                        if engine.rotate(Caller::system(), victim, 3_600_000_000).await.is_ok() {
                            rotations.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if engine.revoke(Caller::system(), victim, Some("generated".into())).await.is_ok()
                    {
                        revocations.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if worker == 0 && done.is_multiple_of(200_000) {
                    eprintln!("gen-log: {} events", engine.log().len());
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(Summary {
        events: engine.log().len(),
        keys: keys.len() as u64,
        hot_key,
        hot_uses: hot_uses.load(Ordering::Relaxed),
        rotations: rotations.load(Ordering::Relaxed),
        revocations: revocations.load(Ordering::Relaxed),
    })
}
