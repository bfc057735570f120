//! Shared by the store's copy and verify tests: a real ledger (keys, a revocation, several
//! checkpoints) served by the `keyledger` binary and stopped cleanly, and a throwaway
//! PostgreSQL cluster to copy it into.

#![allow(dead_code)]

use keyledger_e2e::{Env, keyledger, path_str};
use keyledger_pg::testing::TestCluster;
use serde_json::{Value, json};

/// A stopped ledger's data dir, with what was done to it.
pub struct Source {
    pub env_dir: tempfile::TempDir,
    pub data_dir: std::path::PathBuf,
    /// `(key_id, secret)` of a key still active.
    pub active: (String, String),
    /// `(key_id, secret)` of a revoked key.
    pub revoked: (String, String),
}

/// Serves a new ledger signing a checkpoint every 3 events, creates keys, verifies one,
/// revokes one, and stops it cleanly (the final checkpoint is signed). The data dir is moved
/// out of the server's temporary directory so that it outlives it.
pub fn ledger_with_history() -> Source {
    let env = Env::start(&["--checkpoint-every-events", "3"]);
    let create = |name: &str| -> Value {
        let resp = env.http.post("/v1/workspaces/acme/keys", env.root(), &json!({"name": name}));
        assert_eq!(resp.status, 201, "{}", resp.dump());
        resp.body
    };
    let pair = |key: &Value| {
        (key["key_id"].as_str().unwrap().to_owned(), key["secret"].as_str().unwrap().to_owned())
    };
    let active = pair(&create("active"));
    let revoked = pair(&create("revoked"));
    for i in 0..5 {
        create(&format!("filler-{i}"));
    }
    let verified = env.http.send("POST", "/v1/verify", &[], Some(&json!({"key": active.1})));
    assert_eq!(verified.status, 200, "{}", verified.dump());
    let resp =
        env.http.post(&format!("/v1/keys/{}/revoke", revoked.0), env.root(), &json!({"reason": "leaked"}));
    assert_eq!(resp.status, 200, "{}", resp.dump());
    let Env { server, ledger, .. } = env;
    server.stop();
    let env_dir = tempfile::tempdir().unwrap();
    let data_dir = env_dir.path().join("source");
    std::fs::rename(&ledger.data_dir, &data_dir).unwrap();
    Source { env_dir, data_dir, active, revoked }
}

/// A cluster and the URL of a new, empty database in it.
pub fn database(name: &str) -> (TestCluster, String) {
    let cluster = TestCluster::start().expect("start PostgreSQL");
    let url = cluster.create_database(name).expect("create database");
    (cluster, url)
}

/// `keyledger store copy --from FROM --to TO [extra…]`, asserted to succeed.
pub fn store_copy(from: &str, to: &str, extra: &[&str]) -> keyledger_e2e::Run {
    let mut args = vec!["store", "copy", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    keyledger(&args)
}

/// Copies `source` into a new database and returns the cluster and its URL.
pub fn copied_into_database(source: &Source, name: &str) -> (TestCluster, String) {
    let (cluster, url) = database(name);
    let run = store_copy(path_str(&source.data_dir), &url, &[]);
    assert!(run.success(), "store copy into the database failed: {}{}", run.stdout, run.stderr);
    (cluster, url)
}

pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect")
}
