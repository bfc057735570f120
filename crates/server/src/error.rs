//! The error model of docs/api.md, "Errors": every error answers
//! `{"error": CODE, "message": TEXT, "request_id": ID}` with the matching status.
//!
//! Handlers return [`ApiError`]. Its response carries the code and message in an extension;
//! the request-id middleware ([`crate::request_id`]) writes the body, because only it knows
//! the request id. Framework rejections (bad JSON, bad path, unknown route, wrong method,
//! body too large) are turned into the same shape there, so no error escapes the model.

use crate::schema::{ErrorBody, ErrorExtra};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyledger_ledger::{AuthError, LedgerError};
use serde_json::Value;

/// The error codes of docs/api.md, "Errors".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    InvalidApiKey,
    ExpiredApiKey,
    Forbidden,
    NotFound,
    InvalidRequest,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    Internal,
    /// Too many failed admin authentications or (when turned on) failed verifications from one
    /// source (429, with `Retry-After`; see [`crate::throttle`]).
    RateLimited,
    /// A known key's credits do not cover the verification's cost (429; docs/credits.md).
    UsageExceeded,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::ExpiredApiKey => "expired_api_key",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UsageExceeded => "usage_exceeded",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized | ErrorCode::InvalidApiKey | ErrorCode::ExpiredApiKey => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RateLimited | ErrorCode::UsageExceeded => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// An error answer. `extra` fields are added to the body (e.g. `"valid": false`).
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub extra: ErrorExtra,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into(), extra: ErrorExtra::default() }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds the optional fields of [`ErrorBody`] that `extra` sets (over any added before).
    pub fn with_fields(mut self, extra: ErrorExtra) -> Self {
        self.extra.merge(extra);
        self
    }

    /// Adds fields to the body (over any added before): `valid`, `reason` or `key_ids`, the
    /// optional fields of [`ErrorBody`]; the error model has no others, so any other is left out.
    pub fn with_extra(mut self, extra: Value) -> Self {
        match serde_json::from_value::<ErrorExtra>(extra) {
            Ok(more) => self.extra.merge(more),
            Err(error) => tracing::error!(%error, "an error's extra fields are not those of the error model"),
        }
        self
    }

    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, format!("`{field}` {message}"))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// The body, given the request id.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        let ErrorExtra { valid, reason, key_ids } = self.extra.clone();
        ErrorBody {
            error: self.code.as_str(),
            message: self.message.clone(),
            request_id: request_id.to_owned(),
            valid,
            reason,
            key_ids,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::Unknown => ErrorCode::Unauthorized,
            AuthError::Revoked | AuthError::Disabled => ErrorCode::InvalidApiKey,
            AuthError::Expired => ErrorCode::ExpiredApiKey,
            AuthError::NotAdmin => ErrorCode::Forbidden,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Invalid(field) => ApiError::new(ErrorCode::InvalidRequest, field.to_string()),
            LedgerError::NotFound(message) => ApiError::not_found(message),
            LedgerError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            LedgerError::Forbidden(message) => ApiError::forbidden(message),
            LedgerError::Unauthorized(auth) => auth.into(),
            LedgerError::Unavailable(detail) => {
                // The detail (paths, OS errors) is for the operator's log, not for callers.
                tracing::error!(%detail, "refusing a call that must append: the log cannot be written");
                ApiError::new(ErrorCode::Unavailable, "the log cannot be written; keyledger fails closed")
            }
            LedgerError::Internal(message) => {
                tracing::error!(%message, "internal error");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// The error for a framework-level failure that produced `status` without an [`ApiError`].
pub fn from_status(status: StatusCode, method: &str, path: &str) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("no route {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::InvalidRequest, format!("method {method} is not allowed on {path}"))
                .with_status(StatusCode::METHOD_NOT_ALLOWED)
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body exceeds the limit")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::InvalidRequest, "the body must be JSON (Content-Type: application/json)")
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        status if status.is_server_error() => {
            ApiError::new(ErrorCode::Internal, "internal error").with_status(status)
        }
        status => {
            ApiError::new(ErrorCode::InvalidRequest, status.canonical_reason().unwrap_or("bad request"))
                .with_status(status)
        }
    }
}

impl From<keyledger_core::validate::FieldError> for ApiError {
    fn from(error: keyledger_core::validate::FieldError) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_an_error_adds_are_merged_into_the_one_error_body() {
        let error = ApiError::new(ErrorCode::InvalidApiKey, "the key is revoked")
            .with_extra(serde_json::json!({"valid": false}))
            .with_extra(serde_json::json!({"reason": "revoked"}))
            .with_fields(ErrorExtra { key_ids: Some(vec!["key_x".into()]), ..Default::default() });
        let body = serde_json::to_value(error.body("req_1")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "invalid_api_key",
                "message": "the key is revoked",
                "request_id": "req_1",
                "valid": false,
                "reason": "revoked",
                "key_ids": ["key_x"],
            })
        );
        // Without added fields the body has exactly the three of docs/api.md, "Errors".
        let plain = serde_json::to_value(ApiError::not_found("no key").body("req_2")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"error": "not_found", "message": "no key", "request_id": "req_2"})
        );
    }
}
