//! `keyledger store copy` and `keyledger log verify --store`: the PostgreSQL store's offline
//! tools (docs/operations.md, "High availability").
//!
//! A copy moves one ledger between a data dir and a database, in either direction, with the
//! same seqs, records, tree and signed checkpoints (`keyledger_pg::copy`); this file does the
//! data dir's part: its lock (a data dir a server holds is refused), its key files, and
//! building a new data dir in a staging directory renamed into place only once its log
//! verifies, so a failed copy leaves no data dir behind. Every copy ends by verifying the
//! target. Connection strings may carry a password: they are never printed.

use anyhow::{Context, Result, bail};
use keyledger_ledger::datadir::{self, LOG_DIR, PEPPER_FILE, PROJECTIONS_FILE, SIGNING_KEY_FILE};
use keyledger_log::storage::OsStorage;
use keyledger_pg::copy::{StoreIdentity, copy_log_to_store, copy_store_to_log, pepper_check, read_identity};
use keyledger_pg::verify::verify_store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy a ledger between a data dir and a PostgreSQL database, either way, with identical
    /// seqs, tree and signed checkpoints; the target must be empty and is verified at the end.
    /// Run it with the source's servers stopped.
    Copy(CopyArgs),
}

#[derive(clap::Args)]
pub struct CopyArgs {
    /// The source: a data dir, or a connection string (`postgres://…`, or `host=… dbname=…`;
    /// without a password in it, the password comes from `PGPASSWORD` or `~/.pgpass`).
    #[arg(long)]
    from: String,
    /// The target: a new data dir (absent or empty), or an empty database.
    #[arg(long)]
    to: String,
    /// Copying from a database: the data dir of one of its nodes, whose `signing.key` and
    /// `pepper.key` the new data dir gets (checked against the database's identity).
    #[arg(long, value_name = "DIR")]
    keys_from: Option<PathBuf>,
}

/// Whether `target` names a database rather than a directory: any string in a connection
/// string's form, so that none is used, and echoed, as a path (docs/operations.md,
/// "Connection strings").
fn is_database(target: &str) -> bool {
    keyledger_pg::store::is_connection_string(target)
}

/// Connects to the database at `url` (never echoed: it may hold a password), with the
/// password from `PGPASSWORD` or the password file when `url` names none
/// (`keyledger_pg::password`).
pub fn connect(url: &str) -> Result<postgres::Client> {
    let config = keyledger_pg::store::parse_url(url).context("not a connection string")?;
    config.connect(postgres::NoTls).context("cannot connect to the database")
}

pub fn run(command: StoreCommand) -> Result<ExitCode> {
    match command {
        StoreCommand::Copy(args) => match (is_database(&args.from), is_database(&args.to)) {
            (false, true) => dir_to_store(Path::new(&args.from), &args.to),
            (true, false) => {
                let keys = args.keys_from.context("copying from a database needs --keys-from DIR")?;
                store_to_dir(&args.from, Path::new(&args.to), &keys)
            }
            _ => bail!("one of --from and --to must be a data dir and the other a database"),
        },
    }
}

/// Calls `work` with a progress callback drawing the terminal's progress bar.
fn with_progress<T>(work: impl FnOnce(&mut dyn FnMut(u64, u64)) -> T) -> T {
    let bar = crate::progress_bar();
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = work(&mut progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result
}

fn dir_to_store(data_dir: &Path, url: &str) -> Result<ExitCode> {
    let _lock = datadir::lock(data_dir).context("stop the server before copying its data dir")?;
    let secrets = datadir::load(data_dir)?;
    let verifier = secrets.signer.verifier();
    let storage = OsStorage::shared();
    let log_dir = data_dir.join(LOG_DIR);
    let source = with_progress(|progress| {
        keyledger_log::verify::verify_log(storage.clone(), &log_dir, &verifier, secrets.tree_hash, progress)
    })
    .context("the source log does not verify; nothing was copied")?;
    let identity = StoreIdentity {
        origin: secrets.origin.clone(),
        verifier_key: verifier.to_string(),
        pepper_check: pepper_check(&secrets.pepper),
    };
    let mut client = connect(url)?;
    let copied =
        with_progress(|progress| copy_log_to_store(storage, &log_dir, &identity, &mut client, progress))
            .context("store copy refused")?;
    let verified = with_progress(|progress| verify_store(&mut client, progress))
        .context("the copied database does not verify")?;
    if verified.root != source.root || verified.events != source.events {
        bail!("the copied database's tree is not the data dir's");
    }
    crate::outln!(
        "copied {} events and {} checkpoints{}{} into the database; it verifies: root {}",
        copied.events,
        copied.checkpoints,
        if copied.cosigned { " and the cosigned checkpoint" } else { "" },
        alarms_copied(copied.alarms),
        hex::encode(verified.root)
    );
    Ok(ExitCode::SUCCESS)
}

/// A directory that may become a new data dir: absent, or empty.
fn check_new_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => {
                bail!("store copy refused: {} exists and is not empty; nothing was copied", dir.display())
            }
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "keyledger-data".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.copy-{}", std::process::id()))
}

fn store_to_dir(url: &str, data_dir: &Path, keys_from: &Path) -> Result<ExitCode> {
    check_new_dir(data_dir)?;
    let mut client = connect(url)?;
    let identity = read_identity(&mut client).context("store copy refused")?;
    let staging = staging_dir(data_dir);
    let built = build_dir(&mut client, &identity, &staging, keys_from);
    let report = match built {
        Ok(report) => report,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    // An empty target directory is replaced; a non-empty one was refused above.
    let _ = std::fs::remove_dir(data_dir);
    if let Err(error) = std::fs::rename(&staging, data_dir) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error).with_context(|| format!("cannot move the copy into {}", data_dir.display()));
    }
    crate::outln!(
        "copied {} events and {} checkpoints{} into {}; its log verifies: root {}",
        report.events,
        report.checkpoints,
        alarms_copied(report.alarms),
        data_dir.display(),
        hex::encode(report.root)
    );
    Ok(ExitCode::SUCCESS)
}

/// The copy report's words for the fork alarms it carried (none: nothing).
fn alarms_copied(alarms: usize) -> String {
    match alarms {
        0 => String::new(),
        1 => " and 1 witness's fork alarm".into(),
        n => format!(" and {n} witnesses' fork alarms"),
    }
}

/// Builds the new data dir in `staging`: the key files from `keys_from` (checked against the
/// database's identity), the identity file, the log copied and verified, the projections
/// built from it.
fn build_dir(
    client: &mut postgres::Client,
    identity: &StoreIdentity,
    staging: &Path,
    keys_from: &Path,
) -> Result<keyledger_pg::copy::CopyReport> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(staging).with_context(|| format!("cannot create {}", staging.display()))?;
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o700))?;
    for file in [SIGNING_KEY_FILE, PEPPER_FILE] {
        let (from, to) = (keys_from.join(file), staging.join(file));
        std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
    }
    datadir::write_identity(staging, &identity.origin, false)?;
    let secrets =
        datadir::load(staging).with_context(|| format!("the key files in {}", keys_from.display()))?;
    if secrets.signer.verifier().to_string() != identity.verifier_key {
        bail!("{} is not the ledger's signing key (the database's identity names another)", SIGNING_KEY_FILE);
    }
    if pepper_check(&secrets.pepper) != identity.pepper_check {
        bail!("{} is not the ledger's pepper (the database's identity names another)", PEPPER_FILE);
    }
    let storage = OsStorage::shared();
    let log_dir = staging.join(LOG_DIR);
    let copied = with_progress(|progress| copy_store_to_log(client, storage.clone(), &log_dir, progress))
        .context("store copy failed")?;
    // Opening the log builds its tree from the events; the projections follow the log.
    let log = keyledger_log::Log::open(keyledger_log::LogConfig {
        dir: log_dir.clone(),
        storage: storage.clone(),
        signer: secrets.signer.clone(),
        origin: secrets.origin.clone(),
        tree_hash: secrets.tree_hash,
    })
    .context("the copied log does not open")?;
    let mut projections = keyledger_ledger::projection::Projections::open_with_cache(
        &staging.join(PROJECTIONS_FILE),
        64 << 20,
        keyledger_ledger::engine::projection_list(),
    )
    .context("cannot create the projections")?;
    projections.catch_up(&log.reader()).context("cannot build the projections")?;
    drop(projections);
    drop(log);
    let verifier = secrets.signer.verifier();
    let verified = with_progress(|progress| {
        keyledger_log::verify::verify_log(storage, &log_dir, &verifier, secrets.tree_hash, progress)
    })
    .context("the copied log does not verify")?;
    if verified.root != copied.root || verified.events != copied.events {
        bail!("the copied log's tree is not the database's");
    }
    Ok(copied)
}

/// `keyledger log verify --store URL`: the database-held log, checked like a data dir's.
pub fn log_verify(url: &str) -> Result<ExitCode> {
    let mut client = connect(url)?;
    let started = std::time::Instant::now();
    match with_progress(|progress| verify_store(&mut client, progress)) {
        Ok(report) => {
            crate::outln!(
                "log intact: {} events, {} checkpoints verified{}, origin {}, root {} ({:.2}s)",
                report.events,
                report.checkpoints,
                report
                    .cosigned_size
                    .map_or(String::new(), |size| format!(", cosigned checkpoint of size {size}")),
                report.origin,
                hex::encode(report.root),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            match error.first_bad_seq() {
                Some(seq) => eprintln!("log verify FAILED at seq {seq}: {error}"),
                None => eprintln!("log verify FAILED: {error}"),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection string taken for a data dir would be echoed as a path in the errors
    /// (and become a directory's name): every form `parse_url` accepts counts as a database.
    #[test]
    fn a_connection_string_is_never_taken_for_a_data_dir_nor_echoed() {
        let secret = "s3cretpw";
        let tmp = tempfile::tempdir().unwrap();
        let absent_dir = tmp.path().join("keyledger-data");
        let absent_dir = absent_dir.to_str().unwrap();
        for database in [
            "hostaddr=127.0.0.1 port=1 dbname=ledger password=s3cretpw",
            "dbname=ledger host = 127.0.0.1 port=1 password=s3cretpw",
        ] {
            let copy = |from: &str, to: &str| {
                let args = CopyArgs { from: from.into(), to: to.into(), keys_from: None };
                run(StoreCommand::Copy(args)).expect_err("refused")
            };
            for error in [copy(database, "postgres://keeper@127.0.0.1:1/ledger"), copy(absent_dir, database)]
            {
                let (shown, debug) = (format!("{error:#}"), format!("{error:?}"));
                assert!(!shown.contains(secret) && !debug.contains(secret), "{shown} / {debug}");
            }
            assert!(is_database(database), "{database}");
        }
        assert!(!is_database("./keyledger-data") && !is_database("/var/lib/keyledger"));
    }
}
