//! What the store's engine tests share: a database in a throwaway cluster, nodes (data dirs
//! holding copies of the ledger's keys) and the small values commands need.
#![allow(dead_code)]

use keyledger_core::{Environment, RequestId, Timestamp, UsageContext, WorkspaceId};
use keyledger_ledger::{
    Caller, Engine, EngineOptions, Expiry, InitOutcome, KeySpec, VerifyOutcome, VerifyRequirements,
};
use keyledger_pg::testing::TestCluster;
use std::path::{Path, PathBuf};

/// A cluster with one database, and a parent directory for the nodes' data dirs.
pub struct Ledger {
    pub cluster: TestCluster,
    pub url: String,
    pub root: tempfile::TempDir,
}

impl Ledger {
    /// Starts the cluster (off the runtime: the synchronous client blocks).
    pub fn new() -> Self {
        std::thread::spawn(|| {
            let cluster = TestCluster::start().expect("start a PostgreSQL test cluster");
            let url = cluster.create_database("ledger").unwrap();
            Self { cluster, url, root: tempfile::tempdir().unwrap() }
        })
        .join()
        .unwrap()
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn options(&self) -> EngineOptions {
        EngineOptions { store: Some(self.url.clone()), ..EngineOptions::default() }
    }

    /// `keyledger init --store` into the data dir `name`.
    pub fn init(&self, name: &str) -> InitOutcome {
        let (dir, options) = (self.dir(name), self.options());
        std::thread::spawn(move || Engine::init(&dir, options).unwrap()).join().unwrap()
    }

    /// A new node's data dir `name` holding copies of `from`'s signing key and pepper.
    pub fn node_dir(&self, name: &str, from: &str) -> PathBuf {
        let dir = self.dir(name);
        std::fs::create_dir(&dir).unwrap();
        for file in ["signing.key", "pepper.key"] {
            std::fs::copy(self.dir(from).join(file), dir.join(file)).unwrap();
        }
        dir
    }

    /// Opens the node `dir` (off the runtime: opening blocks).
    pub fn open(&self, dir: &Path) -> Engine {
        self.open_with(dir, self.options())
    }

    /// Opens the node `dir` with `options` (its `store` set to this ledger's database).
    pub fn open_with(&self, dir: &Path, options: EngineOptions) -> Engine {
        let (dir, options) = (dir.to_owned(), EngineOptions { store: Some(self.url.clone()), ..options });
        std::thread::spawn(move || Engine::open(&dir, options).unwrap()).join().unwrap()
    }

    /// Node `a` initialised on the database and opened, and node `b` opened beside it with
    /// copies of `a`'s keys: the start of every two-node test.
    pub fn two_nodes(&self) -> (InitOutcome, Engine, Engine) {
        let init = self.init("a");
        let a = self.open(&self.dir("a"));
        let b = self.open(&self.node_dir("b", "a"));
        (init, a, b)
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Runs `f` on a connection of its own, off the runtime (the synchronous client blocks).
    pub fn sql<T: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
        std::thread::scope(|s| s.spawn(|| f(&mut self.client())).join().unwrap())
    }
}

/// The caller an admin key makes on `engine`.
pub async fn admin(engine: &Engine, key: &str) -> Caller {
    let admin = engine.authenticate_admin(key).await.unwrap();
    Caller { actor: keyledger_core::Actor::Admin(admin.key_id), request_id: rid() }
}

pub fn rid() -> RequestId {
    RequestId::generate(Timestamp::now().millis())
}

pub fn ws(name: &str) -> WorkspaceId {
    name.parse().unwrap()
}

pub fn spec(name: &str, scopes: &[&str]) -> KeySpec {
    KeySpec {
        name: name.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        resources: vec![],
        environment: Environment::Live,
        owner: None,
        metadata: "{}".into(),
        expiry: Expiry::Never,
        credits: None,
    }
}

/// Verifies `secret` on `engine`: `Some(true)` allowed, `Some(false)` denied, `None` unknown.
pub async fn verify(engine: &Engine, secret: &str) -> Option<bool> {
    match engine.verify(rid(), secret, VerifyRequirements::default(), UsageContext::default()).await.unwrap()
    {
        VerifyOutcome::Known(verdict) => Some(verdict.outcome.is_ok()),
        VerifyOutcome::Malformed | VerifyOutcome::Unknown => None,
    }
}

/// Every record of the engine's log, as stored.
pub fn records(engine: &Engine) -> Vec<Vec<u8>> {
    let log = engine.log();
    (0..log.len()).map(|seq| log.raw(seq).unwrap()).collect()
}
