//! What can go wrong with the PostgreSQL store, named so an operator can act on it.

/// An error of the PostgreSQL store. Messages name what to do; none carries a secret, a
/// record or a connection string's password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the --store connection string is invalid: {0}")]
    BadUrl(String),
    #[error("cannot reach the database: {0}")]
    Connect(String),
    #[error("database error: {0}")]
    Database(String),
    #[error(
        "the database's keyledger schema is version {found}, newer than this build knows ({known}): upgrade keyledger before serving this database"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error("the database holds no keyledger ledger (run `keyledger init --store …` first)")]
    NotInitialised,
    #[error("the database already holds a keyledger ledger; refusing to initialise it again")]
    AlreadyInitialised,
    #[error(
        "this node's signing key (signing.key or KEYLEDGER_SIGNING_KEY) does not match the ledger's identity in the database: copy the signing key of the node that ran `keyledger init --store`"
    )]
    SigningKeyMismatch,
    #[error(
        "this node's pepper (pepper.key or KEYLEDGER_PEPPER) does not match the ledger's identity in the database: copy the pepper of the node that ran `keyledger init --store`"
    )]
    PepperMismatch,
    #[error("the database's ledger is log format {found}; this build serves format {known}")]
    LogFormat { found: i32, known: u32 },
    #[error("the database's ledger has origin {found:?}, this node's data dir {local:?}")]
    Origin { found: String, local: String },
    #[error("the database's ledger identity is malformed: {0}")]
    Malformed(String),
}

impl From<postgres::Error> for PgError {
    fn from(error: postgres::Error) -> Self {
        PgError::Database(describe(&error))
    }
}

/// A database error's text: the server's message when there is one (never the statement's
/// parameters), else the client's.
pub(crate) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}
