//! `keyledger log upgrade`: converts a stopped server's format-1 data dir (BLAKE3 tree) to
//! log format 2 (RFC 6962's SHA-256 tree), as docs/operations.md, "Upgrading a format-1
//! data dir", describes.
//!
//! The steps, in this order, each durable before the next:
//!
//! 1. verify the whole format-1 log as `keyledger log verify` does; if it fails, stop,
//!    having changed nothing;
//! 2. write the transition note (`log/checkpoints/transition.note`), signed with the log's
//!    key, binding the BLAKE3 root of every event to their SHA-256 root;
//! 3. switch the identity to format 2 (written beside, fsynced, renamed): the commit point;
//! 4. open the log as format 2, which recomputes the stored tree with SHA-256 and signs the
//!    first SHA-256 checkpoint at the transition's size.
//!
//! A crash before step 3 leaves a format-1 data dir (the note is ignored and rewritten by
//! the next upgrade); after it, a format-2 data dir whose next open finishes step 4 by
//! itself. The data dir's lock is held throughout, so no server runs meanwhile.

use anyhow::{Context, Result};
use keyledger_ledger::datadir;
use keyledger_log::storage::OsStorage;
use keyledger_log::upgrade::{UpgradeError, prepare};
use keyledger_log::{Log, LogConfig};
use keyledger_verify::merkle::TreeHash;
use std::path::Path;
use std::process::ExitCode;

/// Runs the upgrade of the data dir `data_dir`; `progress` follows the verification.
pub fn run(data_dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<ExitCode> {
    let _lock = datadir::lock(data_dir).context("stop the server before upgrading its log")?;
    let secrets = datadir::load_any_format(data_dir)?;
    if secrets.tree_hash != TreeHash::Blake3 {
        eprintln!(
            "log upgrade refused: {} is already log format {} (SHA-256 tree); nothing was changed",
            data_dir.display(),
            secrets.tree_hash.log_format()
        );
        return Ok(ExitCode::FAILURE);
    }
    let log_dir = data_dir.join(datadir::LOG_DIR);
    let storage = OsStorage::shared();
    let prepared = match prepare(storage.clone(), &log_dir, &secrets.signer, progress) {
        Ok(prepared) => prepared,
        Err(UpgradeError::Verify(error)) => {
            match error.first_bad_seq() {
                Some(seq) => eprintln!(
                    "log upgrade refused: the format-1 log does not verify at seq {seq}: {error}; nothing was changed"
                ),
                None => eprintln!(
                    "log upgrade refused: the format-1 log does not verify: {error}; nothing was changed"
                ),
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error).context("log upgrade failed; the data dir is still format 1"),
    };
    datadir::set_format(data_dir, TreeHash::Rfc6962.log_format())
        .context("log upgrade failed; the data dir is still format 1")?;
    let log = Log::open(LogConfig {
        dir: log_dir,
        storage,
        signer: secrets.signer,
        origin: secrets.origin,
        tree_hash: TreeHash::Rfc6962,
    })
    .context("the data dir is now format 2, but its log could not be opened")?;
    let latest = log.reader().latest_checkpoint();
    drop(log);
    let transition = &prepared.transition;
    crate::outln!(
        "log upgraded to format 2 (SHA-256 tree): {} events, format-1 root {} bound to format-2 root {} in log/checkpoints/transition.note; latest checkpoint at {} events",
        transition.size,
        hex::encode(transition.blake3_root),
        hex::encode(transition.sha256_root),
        latest.map_or(0, |c| c.size)
    );
    Ok(ExitCode::SUCCESS)
}
