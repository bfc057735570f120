//! Request extractors that fail in the error shape of docs/api.md, naming the field.

use crate::error::{ApiError, ErrorCode};
use axum::RequestExt;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A JSON body. Unknown fields, wrong types and missing fields answer `invalid_request`
/// naming the field; an oversized body answers `payload_too_large`.
pub struct JsonBody<T>(pub T);

/// Whether the request says its body is JSON (`application/json`, or a `+json` type), as
/// axum's `Json` asks.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body into `T`: 400 `invalid_request` for JSON that does not parse, 422 for
/// JSON of another shape, naming the field; no value of the body is repeated
/// ([`crate::json_error`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let refused = |at: String, error: &serde_json::Error| {
        let detail = crate::json_error::without_values(&error.to_string());
        let status = match error.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match at.is_empty() {
            true => format!("invalid JSON body: {detail}"),
            false => format!("invalid JSON body: {at}: {detail}"),
        };
        ApiError::new(ErrorCode::InvalidRequest, message).with_status(status)
    };
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| refused(crate::json_error::path(e.path()), e.inner()))?;
    deserializer.end().map_err(|e| refused(String::new(), &e))?;
    Ok(value)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the body must be JSON (Content-Type: application/json)",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let (_, body) = request.with_limited_body().into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| body_error(&e))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be absent (then `T::default()`). Read like every body, under
/// [`axum::extract::DefaultBodyLimit`] (the router sets it to
/// [`crate::ServerConfig::body_limit`]): a body is refused with 413 as soon as it passes the
/// limit, and the rest of it is never buffered.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.with_limited_body().into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| body_error(&e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        JsonBody::<T>::from_request(request, state).await.map(|JsonBody(v)| OptionalJson(v))
    }
}

/// Why a body could not be read: over the limit (413 `payload_too_large`), or the client
/// went away mid-body (400).
pub fn body_error(error: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(ErrorCode::PayloadTooLarge, "the request body exceeds the limit");
        }
        source = cause.source();
    }
    ApiError::new(ErrorCode::InvalidRequest, "the request body could not be read")
}

/// The query string as ordered name/value pairs (repeated names kept, e.g. `scope`).
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// Refuses parameters the route does not know.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => {
                Err(ApiError::invalid(crate::redact::echo(k), "is not a parameter of this route"))
            }
            None => Ok(()),
        }
    }
}

impl QueryPairs {
    /// The pairs of a query string (none for no query).
    pub fn parse(query: Option<&str>) -> Self {
        QueryPairs(form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(QueryPairs::parse(parts.uri.query()))
    }
}

/// Parses a path segment, answering `invalid_request` (or `not_found`) naming it.
pub fn path_param<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::invalid(name, format!("`{}` is not valid", crate::redact::echo(text))))
}

/// Deserializes a field that distinguishes "absent" (outer `None`) from `null`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
