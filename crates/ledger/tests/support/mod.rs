//! What the ledger's integration tests share: initialising a data dir off the runtime, the
//! small values every command needs (a request id, a workspace, a key spec), a deterministic
//! PRNG for races, and the proptest configuration of the model tests.
//!
//! Every test binary declares `mod support;` and uses the part it needs.
#![allow(dead_code)]

use keyledger_core::{Environment, RequestId, Timestamp, WorkspaceId};
use keyledger_ledger::engine::projection_list;
use keyledger_ledger::projection::Projections;
use keyledger_ledger::{Engine, EngineOptions, Expiry, InitOutcome, KeySpec, LedgerState};
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use std::path::{Path, PathBuf};

/// A data dir path, `…/data` inside a temporary directory removed when this is dropped; not
/// created (`init` creates it).
pub struct DataDir {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl DataDir {
    pub fn new() -> Self {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("data");
        Self { _parent: parent, path }
    }

    /// The temporary directory holding the data dir (room for other files of the test).
    pub fn root(&self) -> &Path {
        self._parent.path()
    }
}

impl std::ops::Deref for DataDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for DataDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Opens the engine on `dir` with the default options.
pub fn open(dir: &Path) -> Engine {
    Engine::open(dir, EngineOptions::default()).unwrap()
}

/// For the data dir of a stopped engine: the registry its projections hold, the same state
/// rebuilt from its log alone (in a scratch file), and the log's length. Projections are
/// derived: the first two must be equal.
pub fn persisted_and_rebuilt(dir: &Path) -> (LedgerState, LedgerState, u64) {
    let persisted =
        Projections::open(&dir.join("projections.redb"), projection_list()).unwrap().load_state().unwrap();
    let secrets = keyledger_ledger::datadir::load(dir).unwrap();
    let log = keyledger_log::Log::open(keyledger_log::LogConfig {
        dir: dir.join("log"),
        storage: keyledger_log::storage::OsStorage::shared(),
        signer: secrets.signer,
        origin: secrets.origin,
        tree_hash: secrets.tree_hash,
    })
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut rebuilt = Projections::open(&scratch.path().join("p.redb"), projection_list()).unwrap();
    rebuilt.rebuild(&log.reader()).unwrap();
    (persisted, rebuilt.load_state().unwrap(), log.len())
}

/// A new data dir, initialised, with what `init` printed and the engine opened on it.
pub fn ledger() -> (DataDir, InitOutcome, Engine) {
    let dir = DataDir::new();
    let init = init(&dir);
    let engine = open(&dir);
    (dir, init, engine)
}

/// Initialises the data dir `dir`. `Engine::init` is synchronous (it runs before any runtime
/// in `serve`) and must not run on a runtime thread, so it runs on a thread of its own.
pub fn init(dir: &Path) -> InitOutcome {
    let dir = dir.to_owned();
    std::thread::spawn(move || Engine::init(&dir, EngineOptions::default()).unwrap()).join().unwrap()
}

/// A fresh request id.
pub fn rid() -> RequestId {
    RequestId::generate(Timestamp::now().millis())
}

/// The workspace `name` (which must be valid).
pub fn ws(name: &str) -> WorkspaceId {
    name.parse().unwrap()
}

/// A live key named `name` with `scopes`, no resources, no owner, no metadata, no expiry.
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

/// A tiny deterministic PRNG (xorshift64*) for delays and picks in race tests; no test
/// asserts on the numbers it gives.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The proptest configuration of the model tests: deterministic by default (`seed`, 24
/// cases); `PROPTEST_CASES` and `PROPTEST_RNG_SEED` (a number, or `random`) explore further.
pub fn proptest_config(seed: u64, max_shrink_iters: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { defaults.cases } else { 24 },
        rng_seed: match std::env::var("PROPTEST_RNG_SEED").as_deref() {
            Ok("random") => RngSeed::Random,
            Ok(_) => defaults.rng_seed,
            Err(_) => RngSeed::Fixed(seed),
        },
        max_shrink_iters,
        failure_persistence: None,
        ..defaults
    }
}
