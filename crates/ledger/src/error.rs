//! The engine's typed errors. Each maps to one error code of docs/api.md, "Errors".

use keyledger_core::validate::FieldError;

/// Why an authentication failed (the 401 codes of docs/api.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing, malformed or unknown API key")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key is disabled")]
    Disabled,
    #[error("the API key has expired")]
    Expired,
    #[error("this key is not an admin key of keyledger")]
    NotAdmin,
}

/// Everything a command can answer besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("the log cannot be written: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<keyledger_log::LogError> for LedgerError {
    fn from(error: keyledger_log::LogError) -> Self {
        LedgerError::Unavailable(error.to_string())
    }
}

impl LedgerError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        LedgerError::Invalid(FieldError::new(field, message))
    }
}
