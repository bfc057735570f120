//! `keyledger admin recover`: the break-glass way back when no full admin key is left (its
//! secret lost, or it expired). See docs/operations.md, "Recovering admin access".
//!
//! It works offline only: the engine takes the data dir's `LOCK`, which a running server
//! holds, so it is refused while `serve` runs. Whoever can open the data dir (its pepper and
//! signing key files, readable by its owner only) already holds every secret keyledger has;
//! recovery gives them nothing more than an admin key, and the log records it: the new key's
//! `created` event has the actor `recovery`, so every use of it is visible to an auditor.
//!
//! With `--store` it recovers a ledger held in PostgreSQL through one node's data dir (its
//! pepper and signing key, from its files or `KEYLEDGER_PEPPER` / `KEYLEDGER_SIGNING_KEY`,
//! checked against the database's identity). That node must be stopped (its `LOCK`); the
//! other nodes may keep serving: the key is appended under the database's head lock like any
//! other write, and they apply it on their next poll.

use anyhow::{Context, Result};
use clap::Subcommand;
use keyledger_ledger::{Engine, EngineOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Issue a new full admin key offline (the server must be stopped). Prints one JSON
    /// object like `init` (the key is shown only this once); the log records the key as
    /// created by `recovery`.
    Recover {
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
        /// The ledger is held in this PostgreSQL database; the data dir is one of its nodes
        /// (stopped).
        #[arg(long, env = "KEYLEDGER_STORE", hide_env_values = true, value_name = "URL")]
        store: Option<String>,
    },
}

pub fn run(command: AdminCommand) -> Result<ExitCode> {
    match command {
        AdminCommand::Recover { data_dir, store } => {
            let options =
                EngineOptions { store, secrets: crate::secrets_from_env()?, ..EngineOptions::default() };
            let outcome =
                Engine::recover(&data_dir, options).context("recovery refused (stop the server first)")?;
            crate::print_admin_key(&crate::init_json(&outcome).to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
