//! `keyledger admin recover`: the break-glass way back when no full admin key is left (its
//! secret lost, or it expired). See docs/operations.md, "Recovering admin access".
//!
//! It works offline only: the engine takes the data dir's `LOCK`, which a running server
//! holds, so it is refused while `serve` runs. Whoever can open the data dir (its pepper and
//! signing key files, readable by its owner only) already holds every secret keyledger has;
//! recovery gives them nothing more than an admin key, and the log records it: the new key's
//! `created` event has the actor `recovery`, so every use of it is visible to an auditor.

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
    },
}

pub fn run(command: AdminCommand) -> Result<ExitCode> {
    match command {
        AdminCommand::Recover { data_dir } => {
            let outcome = Engine::recover(&data_dir, EngineOptions::default())
                .context("recovery refused (stop the server first)")?;
            println!("{}", crate::init_json(&outcome));
            Ok(ExitCode::SUCCESS)
        }
    }
}
