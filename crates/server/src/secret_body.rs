//! A JSON body that carries a secret (the leaked candidate of `POST /v1/audit/lookup`).
//!
//! It answers exactly like [`JsonBody`] (same errors, same limits), and once the body is
//! parsed it zeroes the buffer that held the raw bytes, when keyledger holds the only
//! reference to it. Zeroing the parsed value is up to `T` (derive `ZeroizeOnDrop`).
//!
//! Out of reach: hyper's own read buffers (a body that arrived in one chunk may share its
//! allocation with the connection's buffer, which hyper reuses and frees without zeroing),
//! and serde_json's scratch buffer, used only for strings with escapes.

use crate::error::ApiError;
use crate::extract::{JsonBody, body_error};
use axum::RequestExt;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

/// A JSON body holding a secret; the raw bytes are zeroed once parsed.
pub struct SecretJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for SecretJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Bounded by the body limit (`DefaultBodyLimit`), like every JSON body.
        let (parts, body) = request.with_limited_body().into_parts();
        // Over the limit is 413, a client that went away mid-body 400, as for `JsonBody`.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| body_error(&e))?;
        let request = Request::from_parts(parts, Body::from(bytes.clone()));
        let parsed = JsonBody::<T>::from_request(request, state).await;
        // The parser's handle on the bytes is gone: ours is the last one unless hyper's
        // buffer shares the allocation.
        let _ = wipe(bytes);
        parsed.map(|JsonBody(value)| SecretJson(value))
    }
}

/// Zeroes `bytes` in place if this is the only reference to them, and gives the zeroed
/// buffer back (for tests); otherwise leaves them to their other owner.
fn wipe(bytes: Bytes) -> Option<Vec<u8>> {
    let mut owned = bytes.try_into_mut().ok()?;
    owned.as_mut().zeroize();
    Some(owned.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use axum::http::StatusCode;

    #[test]
    fn an_unshared_body_is_zeroed_and_a_shared_one_is_left_alone() {
        let body = Bytes::from(br#"{"secret":"kl_live_candidate"}"#.to_vec());
        let len = body.len();
        assert_eq!(wipe(body), Some(vec![0; len]));
        let shared = Bytes::from(b"shared".to_vec());
        let other = shared.clone();
        assert_eq!(wipe(shared), None);
        assert_eq!(&other[..], b"shared");
    }

    async fn read(body: Body) -> Result<serde_json::Value, ApiError> {
        let request =
            Request::builder().method("POST").header("content-type", "application/json").body(body).unwrap();
        SecretJson::<serde_json::Value>::from_request(request, &()).await.map(|SecretJson(value)| value)
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_a_bad_request_and_one_over_the_limit_is_too_large() {
        let chunks: [Result<Bytes, std::io::Error>; 2] =
            [Ok(Bytes::from_static(b"{\"secret\":")), Err(std::io::ErrorKind::ConnectionReset.into())];
        let broken = read(Body::from_stream(futures_util::stream::iter(chunks))).await.unwrap_err();
        assert_eq!((broken.status, broken.code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));
        // Without a `DefaultBodyLimit` layer, axum's default limit (2 MiB) applies.
        let large = read(Body::from(vec![b' '; 2 * 1024 * 1024 + 1])).await.unwrap_err();
        assert_eq!((large.status, large.code), (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge));
        assert_eq!(read(Body::from(r#"{"a":1}"#)).await.unwrap(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn the_lookup_body_is_zeroed_on_drop() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroed_on_drop::<crate::audit::LookupBody>();
    }
}
