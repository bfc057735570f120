//! The pepper and the signing key delivered by the environment instead of the data dir's
//! files: secret managers (Kubernetes secrets, Vault agents, systemd credentials) deliver
//! secrets that way, and every node of a PostgreSQL ledger must hold the same two.
//!
//! `KEYLEDGER_PEPPER` and `KEYLEDGER_SIGNING_KEY` hold the same 32 bytes as `pepper.key` and
//! `signing.key`, as 64 hexadecimal digits (`xxd -p -c 32 pepper.key` prints them); blanks
//! around them (a secret file's trailing newline) are ignored. See docs/operations.md,
//! "Secrets from the environment".
//!
//! Guarantees: a value that is not exactly 32 bytes of hex is refused, naming the variable,
//! never echoing it. Neither source silently wins: when a variable and its file are both
//! present they must hold the same bytes (compared in constant time), otherwise the node
//! refuses to start naming both, so a stale file left beside a rotated secret can never be
//! used by one node while another uses the new one. The decoded bytes live in buffers zeroed
//! on drop and never appear in `Debug` or in an error. `init` with them set writes them as
//! the new data dir's files instead of random ones (so `init --store` can create a ledger
//! whose secrets a secret manager already holds).

use keyledger_core::KeyHash;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The variable holding the pepper (the bytes of `pepper.key`, in hex).
pub const PEPPER_ENV: &str = "KEYLEDGER_PEPPER";
/// The variable holding the signing key (the Ed25519 seed of `signing.key`, in hex).
pub const SIGNING_KEY_ENV: &str = "KEYLEDGER_SIGNING_KEY";

/// Why a secret from the environment was refused. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretEnvError {
    #[error("{0} must be 64 hexadecimal digits (the 32 bytes of its key file, e.g. `xxd -p -c 32 <file>`)")]
    Malformed(&'static str),
    #[error("{0} is not valid Unicode")]
    NotUnicode(&'static str),
    #[error(
        "{var} and {file} are both set and hold different secrets: remove one (or make them equal) so that it is clear which this node uses"
    )]
    Ambiguous { var: &'static str, file: String },
}

type Secret = Arc<Zeroizing<[u8; 32]>>;

/// Secrets given outside the data dir; by default none (the files are used).
#[derive(Clone, Default)]
pub struct SecretOverrides {
    pepper: Option<Secret>,
    signing_key: Option<Secret>,
}

impl std::fmt::Debug for SecretOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretOverrides")
            .field("pepper", &self.pepper.is_some())
            .field("signing_key", &self.signing_key.is_some())
            .finish()
    }
}

impl SecretOverrides {
    /// Reads `KEYLEDGER_PEPPER` and `KEYLEDGER_SIGNING_KEY` (an empty variable counts as
    /// unset).
    pub fn from_env() -> Result<Self, SecretEnvError> {
        let read = |var: &'static str| match std::env::var(var) {
            Ok(value) => Ok(Some(Zeroizing::new(value))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretEnvError::NotUnicode(var)),
        };
        let pepper = read(PEPPER_ENV)?;
        let signing_key = read(SIGNING_KEY_ENV)?;
        Self::from_values(pepper.as_deref().map(String::as_str), signing_key.as_deref().map(String::as_str))
    }

    /// Parses the two values as [`Self::from_env`] does (`None` or blank: not given).
    pub fn from_values(pepper: Option<&str>, signing_key: Option<&str>) -> Result<Self, SecretEnvError> {
        Ok(Self { pepper: parse(PEPPER_ENV, pepper)?, signing_key: parse(SIGNING_KEY_ENV, signing_key)? })
    }

    /// Whether the secret normally held in the data dir's file `file` is given here.
    pub fn provides(&self, file: &str) -> bool {
        self.get(file).is_some()
    }

    /// The given bytes of the secret of `file`, if any (`init` writes them as the file).
    pub(crate) fn bytes(&self, file: &str) -> Option<&[u8; 32]> {
        self.get(file).map(|(_, secret)| &***secret)
    }

    fn get(&self, file: &str) -> Option<(&'static str, &Secret)> {
        match file {
            crate::datadir::PEPPER_FILE => self.pepper.as_ref().map(|s| (PEPPER_ENV, s)),
            crate::datadir::SIGNING_KEY_FILE => self.signing_key.as_ref().map(|s| (SIGNING_KEY_ENV, s)),
            _ => None,
        }
    }

    /// The secret of `dir`'s file `file`: the given one, the file's (read with `read_file`),
    /// or the given one checked against the file when both exist.
    pub(crate) fn resolve<E: From<SecretEnvError>>(
        &self,
        dir: &Path,
        file: &str,
        read_file: impl FnOnce(&Path) -> Result<Zeroizing<[u8; 32]>, E>,
    ) -> Result<Zeroizing<[u8; 32]>, E> {
        let path = dir.join(file);
        let Some((var, given)) = self.get(file) else {
            return read_file(&path);
        };
        if !path.exists() {
            return Ok(Zeroizing::new(***given));
        }
        let on_disk = read_file(&path)?;
        if !KeyHash(*on_disk).ct_eq(&KeyHash(***given)) {
            return Err(SecretEnvError::Ambiguous { var, file: path.display().to_string() }.into());
        }
        Ok(on_disk)
    }
}

fn parse(var: &'static str, value: Option<&str>) -> Result<Option<Secret>, SecretEnvError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(value, bytes.as_mut()).map_err(|_| SecretEnvError::Malformed(var))?;
    Ok(Some(Arc::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_with_blanks_and_treats_blank_as_unset() {
        let given =
            SecretOverrides::from_values(Some(&format!(" {}\n", HEX.to_uppercase())), Some("")).unwrap();
        assert!(given.provides(crate::datadir::PEPPER_FILE));
        assert!(!given.provides(crate::datadir::SIGNING_KEY_FILE));
        let (_, pepper) = given.get(crate::datadir::PEPPER_FILE).unwrap();
        assert_eq!(pepper[31], 0x1f);
    }

    #[test]
    fn refuses_wrong_length_or_non_hex_without_echoing_it() {
        for bad in [&HEX[..62], &format!("{HEX}00"), &HEX.replace('0', "g")] {
            let error = SecretOverrides::from_values(None, Some(bad)).unwrap_err().to_string();
            assert!(error.contains(SIGNING_KEY_ENV), "{error}");
            assert!(!error.contains(&bad[..16]), "the value leaked: {error}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let given = SecretOverrides::from_values(Some(HEX), Some(HEX)).unwrap();
        let debug = format!("{given:?}");
        assert!(!debug.contains("0a0b") && !debug.contains("10, 11"), "{debug}");
    }

    #[test]
    fn file_and_variable_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(crate::datadir::PEPPER_FILE);
        std::fs::write(&file, [7u8; 32]).unwrap();
        let read = |p: &Path| -> Result<Zeroizing<[u8; 32]>, SecretEnvError> {
            Ok(Zeroizing::new(std::fs::read(p).unwrap().try_into().unwrap()))
        };
        let differing = SecretOverrides::from_values(Some(HEX), None).unwrap();
        let error = differing.resolve(dir.path(), crate::datadir::PEPPER_FILE, read).unwrap_err();
        assert!(matches!(error, SecretEnvError::Ambiguous { var: PEPPER_ENV, .. }));
        let same = SecretOverrides::from_values(Some(&hex::encode([7u8; 32])), None).unwrap();
        assert_eq!(*same.resolve(dir.path(), crate::datadir::PEPPER_FILE, read).unwrap(), [7u8; 32]);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(differing.resolve(dir.path(), crate::datadir::PEPPER_FILE, read).unwrap()[1], 1);
    }
}
