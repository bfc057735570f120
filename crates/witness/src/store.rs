//! The witness's directory: its key, and the latest checkpoint it cosigned for each log.
//!
//! ```text
//! W/                      mode 0700
//!   witness.key           the Ed25519 seed, 32 bytes, mode 0600
//!   witness.vkey          the witness's public key, `<name>+<key id>+<base64(0x04 ‖ key)>`
//!   logs/<sha256(origin)> the latest cosigned checkpoint of that log: its note with the
//!                         log's signatures the witness verified and its own cosignature
//! ```
//!
//! Guarantees: a checkpoint is durable before [`Store::save`] returns: it is written to a
//! temporary file, fsynced, renamed over the old one and the directory fsynced, so after a
//! crash the file holds either the old checkpoint or the new one, never a mix
//! (docs/witness.md, "What it guarantees"). A key file readable by others, a state file
//! that is not a checkpoint of its origin, or a key that does not match its vkey refuse to
//! load: the witness never starts on state it cannot trust.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use keyledger_verify::cosignature::{self, Cosigner, WitnessKey};
use keyledger_verify::note::Checkpoint;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

const KEY_FILE: &str = "witness.key";
const VKEY_FILE: &str = "witness.vkey";
const LOGS_DIR: &str = "logs";
/// Largest state file read back: the note parser's own limit.
const MAX_STATE_BYTES: u64 = keyledger_verify::note::MAX_NOTE_BYTES as u64;

/// Why the witness directory cannot be created, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds something it must not.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `init` found a witness (or other files) already there.
    #[error("{} already exists and is not empty: a witness key is never overwritten", .0.display())]
    NotEmpty(PathBuf),
    /// The witness name is not a valid key name.
    #[error("invalid witness name: {0}")]
    Name(#[from] keyledger_verify::cosignature::CosignatureError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_owned(), source }
}

fn invalid(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Invalid { path: path.to_owned(), message: message.into() }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync
/// of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    sync_dir(dir)
}

/// The name of a log's state file: the lowercase hex SHA-256 of its origin (the same
/// identifier the tlog-witness monitoring path uses), so any origin is a safe file name.
pub fn origin_file_name(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

/// The latest checkpoint cosigned for a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its note as the witness serves it to monitors: the checkpoint text, the log's
    /// signature lines the witness verified, and the witness's cosignature.
    pub note: String,
}

/// An open witness directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates a witness directory with a fresh key named `name` and returns its public key.
    /// `dir` must not exist or be empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotEmpty`] if `dir` holds anything; [`StoreError::Name`] for a bad name;
    /// I/O errors.
    pub fn init(dir: &Path, name: &str) -> Result<WitnessKey, StoreError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| StoreError::Io {
            op: "draw a random key for",
            path: dir.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let cosigner = Cosigner::new(name, SigningKey::from_bytes(&seed))?;
        if dir.exists() && std::fs::read_dir(dir).map_err(io("read", dir))?.next().is_some() {
            return Err(StoreError::NotEmpty(dir.to_owned()));
        }
        std::fs::create_dir_all(dir.join(LOGS_DIR)).map_err(io("create", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))?;
        let key_path = dir.join(KEY_FILE);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io("create", &key_path))?;
        file.write_all(seed.as_ref()).map_err(io("write", &key_path))?;
        file.sync_all().map_err(io("fsync", &key_path))?;
        let vkey = cosigner.witness_key();
        write_atomic(&dir.join(VKEY_FILE), format!("{vkey}\n").as_bytes())?;
        sync_dir(&dir.join(LOGS_DIR))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(vkey)
    }

    /// Opens a witness directory made by [`Store::init`] and returns it with its cosigner.
    ///
    /// # Errors
    ///
    /// I/O errors; [`StoreError::Invalid`] if the key is readable by others, is not 32 bytes,
    /// or does not match `witness.vkey`.
    pub fn open(dir: &Path) -> Result<(Store, Cosigner), StoreError> {
        let key_path = dir.join(KEY_FILE);
        let mut file = File::open(&key_path).map_err(io("open", &key_path))?;
        let mode = file.metadata().map_err(io("stat", &key_path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(invalid(
                &key_path,
                format!("mode {:o} lets others read the witness key; run `chmod 600` on it", mode & 0o777),
            ));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut extra = [0u8; 1];
        if file.read_exact(seed.as_mut()).is_err()
            || file.read(&mut extra).map_err(io("read", &key_path))? != 0
        {
            return Err(invalid(&key_path, "expected 32 bytes"));
        }
        let vkey_path = dir.join(VKEY_FILE);
        let vkey_text = std::fs::read_to_string(&vkey_path).map_err(io("read", &vkey_path))?;
        let vkey: WitnessKey = vkey_text.parse().map_err(|e| invalid(&vkey_path, format!("{e}")))?;
        let cosigner = Cosigner::new(vkey.name(), SigningKey::from_bytes(&seed))?;
        if cosigner.witness_key() != vkey {
            return Err(invalid(&vkey_path, "does not match the key in witness.key"));
        }
        Ok((Store { dir: dir.to_owned() }, cosigner))
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        self.dir.join(LOGS_DIR).join(origin_file_name(origin))
    }

    /// The latest checkpoint cosigned for `origin`, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// I/O errors; [`StoreError::Invalid`] if the file is not a checkpoint note of `origin`.
    pub fn load(&self, origin: &str) -> Result<Option<Latest>, StoreError> {
        let path = self.state_path(origin);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", &path)(e)),
        };
        let mut note = String::new();
        file.take(MAX_STATE_BYTES + 1).read_to_string(&mut note).map_err(io("read", &path))?;
        let (_, checkpoint) =
            cosignature::unverified_checkpoint(&note).map_err(|e| invalid(&path, e.to_string()))?;
        if checkpoint.origin != origin {
            return Err(invalid(
                &path,
                format!("holds a checkpoint of {:?}, not of {origin:?}", checkpoint.origin),
            ));
        }
        Ok(Some(Latest { checkpoint, note }))
    }

    /// Durably replaces the latest checkpoint of its origin with `latest`.
    ///
    /// # Errors
    ///
    /// I/O errors. The previous checkpoint stays in place unless the rename happened.
    pub fn save(&self, latest: &Latest) -> Result<(), StoreError> {
        write_atomic(&self.state_path(&latest.checkpoint.origin), latest.note.as_bytes())
    }
}
