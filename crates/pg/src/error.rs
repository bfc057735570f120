//! What can go wrong with the PostgreSQL store, named so an operator can act on it.

/// An error of the PostgreSQL store. Messages name what to do; none carries a secret, a
/// record or a connection string's password.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the --store connection string is invalid: {0}")]
    BadUrl(UrlFault),
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

/// Why a connection string was refused: what is wrong with it, never any of its text, which
/// may hold a password (docs/operations.md, "Connection strings": keyledger never prints
/// one). It holds no text but option names from a fixed list (`&'static str`), so no part of
/// a string can reach a message, a log or a `Debug` through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlFault {
    /// The value of this option (one of libpq's names) is not one it takes.
    InvalidValue(&'static str),
    /// The value of an option this build does not name is invalid.
    InvalidValueOfAnOption,
    /// It names an option libpq does not know (the name itself may be a misplaced secret).
    UnknownOption,
    /// A `'…` value of the key=value form is not closed.
    UnterminatedQuote,
    /// A URL's parameter after `?` has no `=`.
    ParameterWithoutValue,
    /// A URL's %-escape does not decode to UTF-8.
    NotUtf8,
    /// A `postgres://` URL the client refused for another reason.
    MalformedUrl,
    /// Neither a `postgres://` URL nor key=value pairs.
    NotKeyValue,
}

impl std::fmt::Display for UrlFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlFault::InvalidValue(option) => write!(f, "invalid value for option `{option}`"),
            UrlFault::InvalidValueOfAnOption => f.write_str("the value of an option is invalid"),
            UrlFault::UnknownOption => f.write_str("an option it names is unknown"),
            UrlFault::UnterminatedQuote => f.write_str("unterminated quoted connection parameter value"),
            UrlFault::ParameterWithoutValue => f.write_str("a parameter after `?` has no `=`"),
            UrlFault::NotUtf8 => f.write_str("a %-escape in it does not decode to UTF-8"),
            UrlFault::MalformedUrl => f.write_str("it is not a well-formed postgres:// URL"),
            UrlFault::NotKeyValue => f.write_str("it is neither a postgres:// URL nor key=value pairs"),
        }
    }
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
