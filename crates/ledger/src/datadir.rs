//! The data directory: its layout, its secrets, and `init`.
//!
//! ```text
//! D/                  mode 0700
//!   identity.json     log format, log origin, creation time (marks D as initialised)
//!   signing.key       Ed25519 seed of the log's checkpoint key   (0600)
//!   pepper.key        32-byte key of the keyed BLAKE3 hash         (0600)
//!   log/              the event log (events/, tree/, checkpoints/)
//!   projections.redb  projections and indexes
//!   LOCK              held by the process that owns D
//! ```
//!
//! A node of a ledger held in PostgreSQL (`--store`) has the same layout: its `identity.json`
//! says `"store": true` and names the database's identity, `log/` is its local mirror of the
//! database's log (rebuildable), and `signing.key` and `pepper.key` are copies of the
//! ledger's (docs/architecture.md, "The log store seam"). [`prepare_store_node`] writes that
//! identity on a node's first start. Such a dir is never opened without `--store`, and a dir
//! of the embedded store never with it: its log would be taken for a mirror.
//!
//! `init` builds everything in a sibling temporary directory and renames it into place, so
//! a data dir is either fully initialised or absent: a failed or repeated `init` changes
//! nothing.
//!
//! The identity's `format` is the log format (docs/log-format.md): new data dirs are format
//! 2 (an RFC 6962 SHA-256 tree). A format-1 data dir (BLAKE3 tree) is never reinterpreted:
//! [`load`], which everything that writes to the data dir goes through, refuses it and
//! names `keyledger log upgrade`; only [`load_any_format`] (for `log verify` and `log
//! upgrade`) reads it, and [`set_format`] is the upgrade's last, atomic step.

use crate::secret_env::SecretOverrides;
use keyledger_core::{Pepper, Timestamp};
use keyledger_verify::merkle::TreeHash;
use keyledger_verify::note::NoteSigner;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const IDENTITY_FILE: &str = "identity.json";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const PEPPER_FILE: &str = "pepper.key";
pub const LOG_DIR: &str = "log";
pub const PROJECTIONS_FILE: &str = "projections.redb";
/// The webhook outbox (not a projection: it remembers what was sent; see `webhook::outbox`).
pub const WEBHOOKS_FILE: &str = "webhooks.redb";
const LOCK_FILE: &str = "LOCK";
/// The log format of new data dirs, and the only one that is served and written.
pub const FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{0} is already initialised")]
    AlreadyInitialised(PathBuf),
    #[error("{0} exists and is not empty, but is not a keyledger data dir")]
    NotEmpty(PathBuf),
    #[error("{0} is not initialised (run `keyledger init`)")]
    NotInitialised(PathBuf),
    #[error("{0} is in use by another keyledger process")]
    Locked(PathBuf),
    #[error(
        "{} holds a format-1 log (BLAKE3 tree), which this version neither serves nor changes: stop keyledger and run `keyledger log upgrade --data-dir {}` to convert it to format 2 (docs/operations.md, \"Upgrading a format-1 data dir\")",
        .0.display(),
        .0.display()
    )]
    NeedsUpgrade(PathBuf),
    #[error("{0} is a node of a ledger held in PostgreSQL: start it with --store (or KEYLEDGER_STORE)")]
    StoreNode(PathBuf),
    #[error(
        "{0} holds a ledger of its own (the embedded store): it cannot become a node of a PostgreSQL ledger; copy it into the database with `keyledger store copy` instead"
    )]
    EmbeddedLedger(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error(transparent)]
    SecretEnv(#[from] crate::secret_env::SecretEnvError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io { op, path: path.to_owned(), source }
}

#[derive(Serialize, Deserialize)]
struct Identity {
    format: u32,
    origin: String,
    created_at: String,
    /// A node of a ledger held in PostgreSQL: `log/` is a mirror of the database's log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    store: bool,
}

/// The secrets and names loaded from a data dir.
pub struct DataDirSecrets {
    pub origin: String,
    pub signer: NoteSigner,
    pub pepper: Pepper,
    /// How the log's tree is hashed: the identity's log format.
    pub tree_hash: TreeHash,
    /// Whether the data dir is a node of a ledger held in PostgreSQL.
    pub store: bool,
}

impl std::fmt::Debug for DataDirSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDirSecrets")
            .field("origin", &self.origin)
            .field("tree_hash", &self.tree_hash)
            .finish_non_exhaustive()
    }
}

pub fn is_initialised(dir: &Path) -> bool {
    dir.join(IDENTITY_FILE).exists()
}

fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Reads a 32-byte secret file straight into a buffer that is zeroed on drop: no other copy
/// of the secret is left behind (no growable buffer that reallocates, no array returned by
/// value).
fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, DataDirError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mode = file.metadata().map_err(io_err("stat", path))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(DataDirError::Invalid {
            path: path.to_owned(),
            message: format!("mode {:o} lets others read a secret; run `chmod 600` on it", mode & 0o777),
        });
    }
    let wrong_length =
        || DataDirError::Invalid { path: path.to_owned(), message: "expected 32 bytes".into() };
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    file.read_exact(secret.as_mut()).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => wrong_length(),
        _ => io_err("read", path)(e),
    })?;
    let mut extra = zeroize::Zeroizing::new([0u8; 1]);
    if file.read(extra.as_mut()).map_err(io_err("read", path))? != 0 {
        return Err(wrong_length());
    }
    Ok(secret)
}

/// The checkpoint origin of a new log, derived from its public key.
fn origin_for(signing: &ed25519_dalek::SigningKey) -> String {
    let digest = blake3::hash(signing.verifying_key().as_bytes());
    format!("keyledger/{}", &digest.to_hex()[..16])
}

/// Creates the data dir's files in `dir` (which must not exist), with the checkpoint origin
/// `origin` or, when `None`, one derived from the new public key.
/// The pepper and signing key are new random ones unless `given` holds them.
pub(crate) fn create_files(
    dir: &Path,
    origin: Option<&str>,
    store: bool,
    given: &SecretOverrides,
) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", dir))?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    match given.bytes(SIGNING_KEY_FILE) {
        Some(bytes) => *seed = *bytes,
        None => getrandom(seed.as_mut(), dir)?,
    }
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    write_secret_file(&dir.join(SIGNING_KEY_FILE), seed.as_ref())?;
    let mut pepper = zeroize::Zeroizing::new([0u8; 32]);
    match given.bytes(PEPPER_FILE) {
        Some(bytes) => *pepper = *bytes,
        None => getrandom(pepper.as_mut(), dir)?,
    }
    write_secret_file(&dir.join(PEPPER_FILE), pepper.as_ref())?;
    write_identity(dir, &origin.map_or_else(|| origin_for(&signing), str::to_owned), store)
}

/// Writes the identity file of a format-2 data dir with checkpoint origin `origin` (`store`:
/// whether it is a node of a PostgreSQL store): the last step of `init`, and of
/// `keyledger store copy` into a new data dir (whose key files it copies itself).
pub fn write_identity(dir: &Path, origin: &str, store: bool) -> Result<(), DataDirError> {
    let identity = Identity {
        format: FORMAT,
        origin: origin.to_owned(),
        created_at: Timestamp::now().to_rfc3339(),
        store,
    };
    let path = dir.join(IDENTITY_FILE);
    let text = serde_json::to_string_pretty(&identity)
        .map_err(|e| DataDirError::Invalid { path: path.clone(), message: e.to_string() })?;
    let mut file = File::create(&path).map_err(io_err("create", &path))?;
    file.write_all(text.as_bytes()).map_err(io_err("write", &path))?;
    file.sync_all().map_err(io_err("fsync", &path))
}

fn getrandom(buf: &mut [u8], dir: &Path) -> Result<(), DataDirError> {
    // A failing OS random source is reported, never papered over.
    ::getrandom::fill(buf).map_err(|e| DataDirError::Io {
        op: "random",
        path: dir.to_owned(),
        source: io::Error::other(e.to_string()),
    })
}

/// Loads the secrets of an initialised data dir of the current log format ([`FORMAT`]),
/// refusing looser-than-0600 secret files, and a format-1 data dir with
/// [`DataDirError::NeedsUpgrade`].
pub fn load(dir: &Path) -> Result<DataDirSecrets, DataDirError> {
    load_with(dir, &SecretOverrides::default())
}

/// [`load`], with the pepper and signing key given outside the data dir when `given` holds
/// them (docs/operations.md, "Secrets from the environment").
pub fn load_with(dir: &Path, given: &SecretOverrides) -> Result<DataDirSecrets, DataDirError> {
    let secrets = load_any_format_with(dir, given)?;
    if secrets.tree_hash.log_format() != FORMAT {
        return Err(DataDirError::NeedsUpgrade(dir.to_owned()));
    }
    Ok(secrets)
}

fn read_identity(dir: &Path) -> Result<(Identity, PathBuf), DataDirError> {
    let identity_path = dir.join(IDENTITY_FILE);
    if !identity_path.exists() {
        return Err(DataDirError::NotInitialised(dir.to_owned()));
    }
    let text = std::fs::read_to_string(&identity_path).map_err(io_err("read", &identity_path))?;
    let identity: Identity = serde_json::from_str(&text)
        .map_err(|e| DataDirError::Invalid { path: identity_path.clone(), message: e.to_string() })?;
    Ok((identity, identity_path))
}

/// [`load`] for the tools that read a log of any known format (`log verify`) or convert it
/// (`log upgrade`): `tree_hash` says which format it is.
pub fn load_any_format(dir: &Path) -> Result<DataDirSecrets, DataDirError> {
    load_any_format_with(dir, &SecretOverrides::default())
}

fn load_any_format_with(dir: &Path, given: &SecretOverrides) -> Result<DataDirSecrets, DataDirError> {
    let (identity, identity_path) = read_identity(dir)?;
    let Some(tree_hash) = TreeHash::of_log_format(identity.format) else {
        return Err(DataDirError::Invalid {
            path: identity_path,
            message: format!("unknown format {}", identity.format),
        });
    };
    let seed = given.resolve(dir, SIGNING_KEY_FILE, read_secret_file)?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let signer = NoteSigner::new(&identity.origin, signing)
        .map_err(|e| DataDirError::Invalid { path: dir.join(IDENTITY_FILE), message: e.to_string() })?;
    let pepper = Pepper::from_bytes(*given.resolve(dir, PEPPER_FILE, read_secret_file)?);
    Ok(DataDirSecrets { origin: identity.origin, signer, pepper, tree_hash, store: identity.store })
}

/// Makes `dir` a node of the PostgreSQL ledger whose origin and log format are given, on its
/// first start: writes its `identity.json` (marked as a store node) unless it has one; the
/// dir must already hold the ledger's `signing.key` and `pepper.key` (checked against the
/// database's identity by the engine) unless `given` holds them. Refuses a dir of the
/// embedded store and one that belongs to a ledger of another origin.
pub fn prepare_store_node(
    dir: &Path,
    origin: &str,
    format: u32,
    given: &SecretOverrides,
) -> Result<(), DataDirError> {
    if is_initialised(dir) {
        let (identity, path) = read_identity(dir)?;
        if !identity.store {
            return Err(DataDirError::EmbeddedLedger(dir.to_owned()));
        }
        if identity.origin != origin {
            return Err(DataDirError::Invalid {
                path,
                message: format!(
                    "this node belongs to the ledger {:?}, the database holds {origin:?}",
                    identity.origin
                ),
            });
        }
        return Ok(());
    }
    for file in [SIGNING_KEY_FILE, PEPPER_FILE] {
        if !dir.join(file).exists() && !given.provides(file) {
            return Err(DataDirError::Invalid {
                path: dir.join(file),
                message: "missing: copy it from the node that ran `keyledger init --store`, or set KEYLEDGER_PEPPER / KEYLEDGER_SIGNING_KEY (docs/operations.md)".into(),
            });
        }
    }
    let identity = Identity {
        format,
        origin: origin.to_owned(),
        created_at: Timestamp::now().to_rfc3339(),
        store: true,
    };
    let path = dir.join(IDENTITY_FILE);
    let text = serde_json::to_string_pretty(&identity)
        .map_err(|e| DataDirError::Invalid { path: path.clone(), message: e.to_string() })?;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

/// Removes a store node's local mirror (its log files and projections), to rebuild them from
/// the database: only ever called on a dir marked as a store node.
pub(crate) fn remove_mirror(dir: &Path) -> Result<(), DataDirError> {
    let log = dir.join(LOG_DIR);
    match std::fs::remove_dir_all(&log) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataDirError::Io { op: "remove", path: log, source: e }),
    }
    let projections = dir.join(PROJECTIONS_FILE);
    match std::fs::remove_file(&projections) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataDirError::Io { op: "remove", path: projections, source: e }),
    }
}

/// Sets the identity's log format to `format`, atomically: the new identity is written
/// beside, fsynced and renamed over the old one, and the directory fsynced, so a crash
/// leaves either identity whole. The last step of `keyledger log upgrade`.
pub fn set_format(dir: &Path, format: u32) -> Result<(), DataDirError> {
    let (mut identity, path) = read_identity(dir)?;
    identity.format = format;
    let text = serde_json::to_string_pretty(&identity)
        .map_err(|e| DataDirError::Invalid { path: path.clone(), message: e.to_string() })?;
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

/// An exclusive lock on a data dir, released on drop.
pub struct DirLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DataDirError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(DataDirError::Io { op: "lock", path, source: e }),
    }
}

/// Where to build a data dir before renaming it into place.
pub(crate) fn staging_path(dir: &Path) -> PathBuf {
    let name =
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "keyledger-data".into());
    let suffix = keyledger_core::RequestId::generate(Timestamp::now().millis()).to_string();
    dir.with_file_name(format!(".{name}.init-{}", &suffix[4..]))
}

/// Checks a checkpoint origin chosen by the operator: it names the log in every checkpoint
/// and is the name of its verifier key, so the signed-note rules apply (no spaces, no `+`).
pub fn check_origin(origin: &str) -> Result<(), DataDirError> {
    let valid = !origin.is_empty()
        && origin.len() <= 255
        && !origin.contains('+')
        && !origin.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(DataDirError::Invalid {
            path: PathBuf::from("--origin"),
            message: "the origin must be 1 to 255 characters without spaces, control characters or `+`"
                .into(),
        })
    }
}

/// Checks that `dir` may be initialised: absent, or an empty directory.
pub(crate) fn check_initialisable(dir: &Path) -> Result<(), DataDirError> {
    if is_initialised(dir) {
        return Err(DataDirError::AlreadyInitialised(dir.to_owned()));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DataDirError::NotEmpty(dir.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataDirError::Io { op: "read", path: dir.to_owned(), source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}

    #[test]
    fn new_data_dirs_are_format_2_and_a_format_1_dir_is_only_read_by_the_log_tools() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        create_files(&dir, Some("example.org/log"), false, &SecretOverrides::default()).unwrap();
        let identity = std::fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
        assert!(identity.contains("\"format\": 2"), "{identity}");
        assert_eq!(load(&dir).unwrap().tree_hash, TreeHash::Rfc6962);

        set_format(&dir, 1).unwrap();
        match load(&dir) {
            Err(error @ DataDirError::NeedsUpgrade(_)) => {
                let message = error.to_string();
                let command = format!("keyledger log upgrade --data-dir {}", dir.display());
                assert!(message.contains(&command), "{message}");
                assert!(message.contains("format-1"), "{message}");
            }
            other => panic!("a format-1 dir must be refused, got {other:?}"),
        }
        let secrets = load_any_format(&dir).unwrap();
        assert_eq!((secrets.tree_hash, secrets.origin.as_str()), (TreeHash::Blake3, "example.org/log"));

        set_format(&dir, 3).unwrap();
        match load_any_format(&dir) {
            Err(DataDirError::Invalid { message, .. }) => assert_eq!(message, "unknown format 3"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.join(format!("{IDENTITY_FILE}.tmp")).exists(), "the identity is renamed into place");
        set_format(&dir, 2).unwrap();
        assert_eq!(load(&dir).unwrap().tree_hash, TreeHash::Rfc6962);
    }

    #[test]
    fn a_secret_file_is_read_into_a_zeroizing_buffer_of_exactly_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepper.key");
        let bytes: Vec<u8> = (1..=32).collect();
        write_secret_file(&path, &bytes).unwrap();
        let secret = read_secret_file(&path).unwrap();
        // The only copy handed out is zeroed on drop.
        zeroed_on_drop(&secret);
        assert_eq!(&secret[..], &bytes[..]);
        for (name, length) in [("short.key", 31), ("long.key", 33), ("empty.key", 0)] {
            let path = dir.path().join(name);
            write_secret_file(&path, &vec![7; length]).unwrap();
            match read_secret_file(&path) {
                Err(DataDirError::Invalid { message, .. }) => {
                    assert_eq!(message, "expected 32 bytes", "{name}")
                }
                other => panic!("{name}: {:?}", other.map(|_| "read")),
            }
        }
    }
}
