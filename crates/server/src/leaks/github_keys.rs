//! The public keys GitHub's secret scanning signs its partner reports with, and the check
//! of a report's signature (docs/leaks.md, "GitHub secret scanning").
//!
//! The keys come from a local file in the shape of GitHub's public-keys metadata document
//! (`{"public_keys":[{"key_identifier","key","is_current"}]}`), read at start-up and again
//! on SIGHUP; keyledger never fetches it. A report is accepted only when its
//! `Github-Public-Key-Identifier` names a key of the file and its
//! `Github-Public-Key-Signature` (base64 of a DER ECDSA P-256 signature) verifies over the
//! raw body with SHA-256. Bounds: at most [`MAX_KEYS`] keys, a file of at most
//! [`MAX_FILE_BYTES`].

use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Most keys kept from the file.
pub const MAX_KEYS: usize = 64;
/// Largest keys file read.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Why a keys file was refused (the previous keys then stay in force).
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a public-keys document: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Why a report's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Github-Public-Key-Identifier or Github-Public-Key-Signature header is missing")]
    Missing,
    #[error("the key identifier is not one of the configured GitHub keys")]
    UnknownKey,
    #[error("the signature is not valid for this body")]
    BadSignature,
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    key_identifier: String,
    key: String,
    #[serde(default)]
    #[allow(dead_code)]
    is_current: bool,
}

/// Parsed keys: (identifier, key).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<(String, VerifyingKey)>,
}

impl KeySet {
    /// Parses a public-keys document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let document: Document = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if document.public_keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let mut keys = Vec::with_capacity(document.public_keys.len());
        for entry in document.public_keys {
            let key = VerifyingKey::from_public_key_pem(entry.key.trim())
                .map_err(|_| format!("key `{}` is not a P-256 public key in PEM", entry.key_identifier))?;
            keys.push((entry.key_identifier, key));
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature headers' values over `body`.
    pub fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return Err(SignatureError::Missing);
        };
        let key = self
            .keys
            .iter()
            .find(|(id, _)| id == identifier)
            .map(|(_, key)| key)
            .ok_or(SignatureError::UnknownKey)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::BadSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::BadSignature)?;
        key.verify(body, &signature).map_err(|_| SignatureError::BadSignature)
    }
}

/// The keys file and its current keys, reloadable.
#[derive(Debug)]
pub struct GithubKeys {
    path: PathBuf,
    keys: RwLock<KeySet>,
}

impl GithubKeys {
    /// Reads `path` (an error leaves keyledger unable to start with it).
    pub fn load(path: &Path) -> Result<Self, KeysFileError> {
        let keys = read(path)?;
        Ok(Self { path: path.to_owned(), keys: RwLock::new(keys) })
    }

    /// Reads the file again; on error the keys in force stay (and the error is returned).
    pub fn reload(&self) -> Result<usize, KeysFileError> {
        let keys = read(&self.path)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(count)
    }

    pub fn verify(
        &self,
        identifier: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).verify(identifier, signature, body)
    }
}

/// Loads the keys file and reloads it on every SIGHUP for as long as the process runs (a
/// file that fails to load is logged and the keys in force stay). Needs a tokio runtime.
pub fn spawn_reload(path: &Path) -> Result<std::sync::Arc<GithubKeys>, KeysFileError> {
    let keys = std::sync::Arc::new(GithubKeys::load(path)?);
    let reloaded = keys.clone();
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the GitHub scanning keys will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match reloaded.reload() {
                Ok(count) => tracing::info!(keys = count, "reloaded the GitHub secret scanning keys"),
                Err(error) => tracing::error!(%error, "kept the GitHub secret scanning keys in force"),
            }
        }
    });
    Ok(keys)
}

fn read(path: &Path) -> Result<KeySet, KeysFileError> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|source| KeysFileError::Read { path: path.into(), source })?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| KeysFileError::Read { path: path.into(), source })?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(KeysFileError::TooLarge { path: path.into() });
    }
    KeySet::parse(&text).map_err(|reason| KeysFileError::Invalid { path: path.into(), reason })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    /// A signing key and its keys document entry, signed as GitHub signs.
    pub fn key_pair(seed: u8) -> (SigningKey, String) {
        let signing = SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        let pem = signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        (signing, pem)
    }

    pub fn sign(signing: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = signing.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    fn document(entries: &[(&str, &str)]) -> String {
        let keys: Vec<_> = entries
            .iter()
            .map(|(id, pem)| serde_json::json!({"key_identifier": id, "key": pem, "is_current": true}))
            .collect();
        serde_json::json!({ "public_keys": keys }).to_string()
    }

    #[test]
    fn a_github_signature_verifies_and_anything_else_is_refused() {
        let (signing, pem) = key_pair(7);
        let (other, other_pem) = key_pair(9);
        let keys = KeySet::parse(&document(&[("abc", &pem), ("old", &other_pem)])).unwrap();
        let body =
            br#"[{"token":"x","type":"keyledger_key","url":"https://github.com/a","source":"content"}]"#;
        let good = sign(&signing, body);
        assert_eq!(keys.verify(Some("abc"), Some(&good), body), Ok(()));
        assert_eq!(keys.verify(Some("old"), Some(&sign(&other, body)), body), Ok(()));
        // Another key's signature, a changed body, an unknown id, garbage, nothing.
        assert_eq!(
            keys.verify(Some("abc"), Some(&sign(&other, body)), body),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(keys.verify(Some("abc"), Some(&good), b"[]"), Err(SignatureError::BadSignature));
        assert_eq!(keys.verify(Some("nope"), Some(&good), body), Err(SignatureError::UnknownKey));
        assert_eq!(keys.verify(Some("abc"), Some("%%%"), body), Err(SignatureError::BadSignature));
        assert_eq!(keys.verify(Some("abc"), Some("AAAA"), body), Err(SignatureError::BadSignature));
        assert_eq!(keys.verify(None, Some(&good), body), Err(SignatureError::Missing));
        assert_eq!(keys.verify(Some("abc"), None, body), Err(SignatureError::Missing));
    }

    #[test]
    fn the_keys_file_is_checked_and_reloaded() {
        let (signing, pem) = key_pair(3);
        let (next, next_pem) = key_pair(4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, document(&[("one", &pem)])).unwrap();
        let keys = GithubKeys::load(&path).unwrap();
        let body = b"[]";
        assert!(keys.verify(Some("one"), Some(&sign(&signing, body)), body).is_ok());
        assert_eq!(keys.verify(Some("two"), Some(&sign(&next, body)), body), Err(SignatureError::UnknownKey));
        std::fs::write(&path, document(&[("two", &next_pem)])).unwrap();
        assert_eq!(keys.reload().unwrap(), 1);
        assert!(keys.verify(Some("two"), Some(&sign(&next, body)), body).is_ok());
        assert_eq!(
            keys.verify(Some("one"), Some(&sign(&signing, body)), body),
            Err(SignatureError::UnknownKey)
        );
        // A broken file is refused and the keys in force stay.
        std::fs::write(&path, r#"{"public_keys":[{"key_identifier":"x","key":"not a key"}]}"#).unwrap();
        assert!(matches!(keys.reload(), Err(KeysFileError::Invalid { .. })));
        assert!(keys.verify(Some("two"), Some(&sign(&next, body)), body).is_ok());
        std::fs::write(&path, "{}").unwrap();
        assert!(keys.reload().is_err());
        assert!(GithubKeys::load(&dir.path().join("absent.json")).is_err());
    }
}
