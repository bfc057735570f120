//! The HTTP client of keyledger's `POST /v1/verify` (JSON mode, docs/api.md, "Verify").
//!
//! One verification is one request; nothing is cached. Everything that is not a clear
//! verdict (connection refused, timeout, a 5xx, an answer that does not parse) is a
//! [`Failure`], which the middleware turns into 503: it fails closed.

use crate::key::VerifiedKey;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use keyledger_core::{Environment, KeyId, RequestId, Timestamp, WorkspaceId};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read from keyledger (its answers are a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Default time to establish the TCP connection to keyledger.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time for a whole verification (connect, send, read the answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a [`KeyledgerClient`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the keyledger URL is not a valid URI")]
    InvalidUrl,
    #[error("the keyledger URL must be http://host[:port][/path]; https and other schemes are not supported")]
    UnsupportedScheme,
    #[error("the keyledger URL must not carry credentials, a query or a fragment")]
    UnexpectedUrlPart,
}

/// A verification that did not produce a verdict. Carries no request data, so it is safe
/// to log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("keyledger is unreachable: {0}")]
    Unreachable(String),
    #[error("keyledger did not answer within {0:?}")]
    Timeout(Duration),
    #[error("keyledger answered {status} ({code})")]
    Status { status: StatusCode, code: String },
    #[error("keyledger's answer is not a verification result: {0}")]
    BadAnswer(&'static str),
}

/// What keyledger decided.
pub(crate) enum Verdict {
    Allowed(VerifiedKey),
    /// A 401, 403 or 429 answer, to be passed on as it is.
    Denied(Denial),
}

/// keyledger's denial: its status, its JSON error body, and the headers worth passing on.
pub(crate) struct Denial {
    pub status: StatusCode,
    pub body: Bytes,
    pub request_id: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
}

/// A client of one keyledger server's verify endpoint. Cheap to clone (clones share one
/// connection pool).
///
/// Plain `http://` only: run keyledger next to the service or on a private network, or put
/// a TLS-terminating sidecar in between.
#[derive(Clone)]
pub struct KeyledgerClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<HttpConnector, Full<Bytes>>,
    verify_uri: Uri,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for KeyledgerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyledgerClient")
            .field("verify_uri", &self.inner.verify_uri)
            .field("timeout", &self.inner.timeout)
            .field("connect_timeout", &self.inner.connect_timeout)
            .finish()
    }
}

/// Builds a [`KeyledgerClient`] with non-default timeouts.
#[derive(Clone, Debug)]
pub struct KeyledgerClientBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl KeyledgerClientBuilder {
    /// The time allowed for a whole verification (default [`DEFAULT_TIMEOUT`]). A request
    /// whose verification takes longer is answered 503.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time allowed to connect to keyledger (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<KeyledgerClient, Error> {
        let verify_uri = verify_uri(&self.url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);
        Ok(KeyledgerClient {
            inner: Arc::new(Inner {
                http,
                verify_uri,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
            }),
        })
    }
}

/// `{base}/v1/verify`, keeping a path prefix (keyledger behind a path-routing proxy).
fn verify_uri(base: &str) -> Result<Uri, Error> {
    let uri: Uri = base.trim().parse().map_err(|_| Error::InvalidUrl)?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::UnsupportedScheme);
    }
    let authority = uri.authority().ok_or(Error::InvalidUrl)?;
    if authority.as_str().contains('@') || uri.query().is_some() || base.contains('#') {
        return Err(Error::UnexpectedUrlPart);
    }
    let prefix = uri.path().trim_end_matches('/');
    format!("http://{authority}{prefix}/v1/verify").parse().map_err(|_| Error::InvalidUrl)
}

/// The 200 answer (docs/api.md, "Verify"), unknown fields ignored.
#[derive(Deserialize)]
struct Allowed {
    valid: bool,
    key_id: KeyId,
    workspace: WorkspaceId,
    environment: Environment,
    #[serde(default)]
    scopes: Vec<String>,
    owner: Option<String>,
    expires_at: Option<String>,
    request_id: RequestId,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

impl KeyledgerClient {
    /// A client of the keyledger at `url` (e.g. `http://127.0.0.1:7878`) with the default
    /// timeouts.
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).build()
    }

    pub fn builder(url: &str) -> KeyledgerClientBuilder {
        KeyledgerClientBuilder {
            url: url.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sends one JSON-mode verification (`body` holds the key) and reads the verdict.
    pub(crate) async fn verify(&self, body: Bytes) -> Result<Verdict, Failure> {
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, self.exchange(body)).await.map_err(|_| Failure::Timeout(timeout))?
    }

    async fn exchange(&self, body: Bytes) -> Result<Verdict, Failure> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.inner.verify_uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|_| Failure::BadAnswer("cannot build the request"))?;
        let response =
            self.inner.http.request(request).await.map_err(|e| Failure::Unreachable(describe(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| Failure::BadAnswer("the body could not be read or is too large"))?
            .to_bytes();
        match parts.status {
            StatusCode::OK => {
                let answer: Allowed = serde_json::from_slice(&body)
                    .map_err(|_| Failure::BadAnswer("a 200 without the verified key"))?;
                if !answer.valid {
                    return Err(Failure::BadAnswer("a 200 with `valid: false`"));
                }
                let expires_at = match answer.expires_at {
                    None => None,
                    Some(text) => Some(
                        Timestamp::parse_rfc3339(&text)
                            .ok_or(Failure::BadAnswer("`expires_at` is not RFC 3339"))?,
                    ),
                };
                Ok(Verdict::Allowed(VerifiedKey {
                    key_id: answer.key_id,
                    workspace: answer.workspace,
                    environment: answer.environment,
                    scopes: answer.scopes,
                    owner: answer.owner,
                    expires_at,
                    request_id: answer.request_id,
                }))
            }
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) => {
                serde_json::from_slice::<ErrorAnswer>(&body)
                    .map_err(|_| Failure::BadAnswer("a denial without the error body"))?;
                Ok(Verdict::Denied(Denial {
                    status,
                    body,
                    request_id: parts.headers.get("request-id").cloned(),
                    retry_after: parts.headers.get(header::RETRY_AFTER).cloned(),
                }))
            }
            status => {
                let code = serde_json::from_slice::<ErrorAnswer>(&body)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| "no error body".to_owned());
                Err(Failure::Status { status, code })
            }
        }
    }
}

/// The error and its causes in one line (hyper's top-level message alone is vague).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verify_uri_keeps_host_port_and_prefix() {
        for (base, expected) in [
            ("http://127.0.0.1:7878", "http://127.0.0.1:7878/v1/verify"),
            ("http://127.0.0.1:7878/", "http://127.0.0.1:7878/v1/verify"),
            ("http://keyledger.internal/auth/", "http://keyledger.internal/auth/v1/verify"),
            ("  http://[::1]:80  ", "http://[::1]:80/v1/verify"),
        ] {
            assert_eq!(verify_uri(base).unwrap().to_string(), expected, "{base}");
        }
    }

    #[test]
    fn unsupported_urls_are_refused_at_construction() {
        assert!(matches!(verify_uri("https://keyledger:7878"), Err(Error::UnsupportedScheme)));
        assert!(matches!(verify_uri("127.0.0.1:7878"), Err(Error::UnsupportedScheme)));
        assert!(matches!(verify_uri("not a url"), Err(Error::InvalidUrl)));
        assert!(matches!(verify_uri("http://user:pw@keyledger"), Err(Error::UnexpectedUrlPart)));
        assert!(matches!(verify_uri("http://keyledger/?a=b"), Err(Error::UnexpectedUrlPart)));
    }
}
