//! The ledger's identity in the database: which signing key and pepper every node must hold.
//!
//! The row holds the checkpoint origin, the log format, the verifier key of the signing key
//! and a pepper check: the keyed BLAKE3 of [`PEPPER_CHECK_LABEL`] under the pepper (what
//! `Pepper::hash` computes for a key). It never holds the pepper or the signing key. A node
//! whose keys do not match refuses to start, naming which ([`check`]).

use crate::error::PgError;
use keyledger_core::{KeyHash, Pepper};
use keyledger_verify::merkle::TreeHash;

/// The fixed label whose keyed hash under the pepper identifies the pepper.
pub const PEPPER_CHECK_LABEL: &str = "keyledger pepper check v1";

/// The identity row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub origin: String,
    pub log_format: i32,
    /// The C2SP note verifier key of the signing key (`origin+id+key`).
    pub verifier_key: String,
    pub pepper_check: [u8; 32],
}

/// The pepper check of `pepper`.
pub fn pepper_check(pepper: &Pepper) -> [u8; 32] {
    pepper.hash(PEPPER_CHECK_LABEL).0
}

/// Reads the identity, if the ledger was initialised.
pub fn read(client: &mut postgres::Client) -> Result<Option<Identity>, PgError> {
    let Some(row) = client
        .query_opt("SELECT origin, log_format, verifier_key, pepper_check FROM keyledger_identity", &[])?
    else {
        return Ok(None);
    };
    let check: Vec<u8> = row.get(3);
    let pepper_check =
        check.try_into().map_err(|_| PgError::Malformed("the pepper check is not 32 bytes".into()))?;
    Ok(Some(Identity { origin: row.get(0), log_format: row.get(1), verifier_key: row.get(2), pepper_check }))
}

/// Creates the ledger: the identity and the empty log head, in one transaction. Refuses,
/// changing nothing, if the database already holds a ledger.
pub fn create(client: &mut postgres::Client, identity: &Identity, hash: TreeHash) -> Result<(), PgError> {
    let mut tx = client.transaction()?;
    let inserted = tx.execute(
        "INSERT INTO keyledger_identity (origin, log_format, verifier_key, pepper_check)
         VALUES ($1, $2, $3, $4) ON CONFLICT (singleton) DO NOTHING",
        &[&identity.origin, &identity.log_format, &identity.verifier_key, &identity.pepper_check.as_slice()],
    )?;
    if inserted == 0 {
        return Err(PgError::AlreadyInitialised);
    }
    let empty: &[u8] = &[];
    tx.execute(
        "INSERT INTO keyledger_head (size, root, frontier) VALUES (0, $1, $2)",
        &[&hash.empty_root().as_slice(), &empty],
    )?;
    tx.commit()?;
    Ok(())
}

/// Checks that a node's keys are the ledger's: the signing key's verifier key, then the
/// pepper (compared in constant time), then the log format.
pub fn check(
    identity: &Identity,
    verifier_key: &str,
    pepper: &Pepper,
    log_format: u32,
) -> Result<(), PgError> {
    if identity.verifier_key != verifier_key {
        return Err(PgError::SigningKeyMismatch);
    }
    if !KeyHash(identity.pepper_check).ct_eq(&KeyHash(pepper_check(pepper))) {
        return Err(PgError::PepperMismatch);
    }
    if i64::from(identity.log_format) != i64::from(log_format) {
        return Err(PgError::LogFormat { found: identity.log_format, known: log_format });
    }
    Ok(())
}
