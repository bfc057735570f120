//! [`KeyledgerLayer`] and its service: verify, then call the inner service or answer.

use crate::client::{Denial, Failure, KeyledgerClient, Verdict};
use crate::key::{PresentedKey, take_presented_key};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use keyledger_core::{Environment, RequestId, Timestamp, WorkspaceId};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// keyledger refuses context fields longer than this (characters); they are cut to fit.
const MAX_CONTEXT_CHARS: usize = 2048;

/// The response body of a [`KeyledgerService`]: the inner service's (`Left`) or the
/// middleware's own JSON answer (`Right`).
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

type ClientIpFn = dyn Fn(&HeaderMap, &http::Extensions) -> Option<IpAddr> + Send + Sync;

/// What a route requires of a key, sent with every verification.
#[derive(Clone, Default, Debug)]
struct Requirements {
    scopes: Vec<String>,
    resource: Option<String>,
    environment: Option<Environment>,
    workspace: Option<WorkspaceId>,
}

/// A [`tower_layer::Layer`] that verifies each request's API key against keyledger before
/// the inner service sees the request. See the [crate docs](crate) for how to use it.
///
/// The builder methods return a new layer, so one base layer can be specialised per route:
/// `auth.clone().require_scopes(["reports:write"])`.
#[derive(Clone)]
pub struct KeyledgerLayer {
    client: KeyledgerClient,
    requirements: Arc<Requirements>,
    client_ip: Arc<ClientIpFn>,
}

impl fmt::Debug for KeyledgerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyledgerLayer")
            .field("client", &self.client)
            .field("requirements", &self.requirements)
            .finish_non_exhaustive()
    }
}

impl KeyledgerLayer {
    /// A layer that requires a valid key and nothing more. The client address comes from
    /// axum's `ConnectInfo<SocketAddr>` when the `axum` feature is on (the default), else
    /// from nowhere; see [`client_ip_from`](Self::client_ip_from).
    pub fn new(client: KeyledgerClient) -> Self {
        Self { client, requirements: Arc::default(), client_ip: Arc::new(default_client_ip) }
    }

    /// Also requires these scopes (all of them; repeated calls add up).
    pub fn require_scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let requirements = Arc::make_mut(&mut self.requirements);
        for scope in scopes {
            let scope = scope.into();
            if !requirements.scopes.contains(&scope) {
                requirements.scopes.push(scope);
            }
        }
        self
    }

    /// Requires the key's resources to allow `resource` (keys without resources allow all).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.requirements).resource = Some(resource.into());
        self
    }

    /// Requires a key of this environment (`live` or `test`).
    pub fn environment(mut self, environment: Environment) -> Self {
        Arc::make_mut(&mut self.requirements).environment = Some(environment);
        self
    }

    /// Requires a key of this workspace.
    pub fn workspace(mut self, workspace: WorkspaceId) -> Self {
        Arc::make_mut(&mut self.requirements).workspace = Some(workspace);
        self
    }

    /// How to find the client's address, recorded in the `used`/`denied` event (e.g. from
    /// `X-Forwarded-For` behind a proxy you trust, or tonic's `TcpConnectInfo`). `None`
    /// records no address.
    pub fn client_ip_from(
        mut self,
        find: impl Fn(&HeaderMap, &http::Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.client_ip = Arc::new(find);
        self
    }
}

#[cfg(feature = "axum")]
fn default_client_ip(_headers: &HeaderMap, extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip())
}

#[cfg(not(feature = "axum"))]
fn default_client_ip(_headers: &HeaderMap, _extensions: &http::Extensions) -> Option<IpAddr> {
    None
}

impl<S> Layer<S> for KeyledgerLayer {
    type Service = KeyledgerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyledgerService { inner, layer: self.clone() }
    }
}

/// The service [`KeyledgerLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct KeyledgerService<S> {
    inner: S,
    layer: KeyledgerLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KeyledgerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready by `poll_ready` handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Some(key) = take_presented_key(request.headers_mut()) else {
                return Ok(local_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing API key: send `Authorization: Bearer K`, `Authorization: Api-Key K` or `x-api-key: K`",
                    true,
                ));
            };
            let body = layer.verify_body(key, &request);
            match layer.client.verify(body).await {
                Ok(Verdict::Allowed(verified)) => {
                    tracing::debug!(key_id = %verified.key_id, workspace = %verified.workspace, request_id = %verified.request_id, "keyledger: key verified");
                    request.extensions_mut().insert(verified);
                    inner.call(request).await.map(|response| response.map(Either::Left))
                }
                Ok(Verdict::Denied(denial)) => Ok(denied(denial)),
                Err(failure) => {
                    let response = local_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the API key cannot be verified now; the request was refused",
                        false,
                    );
                    let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok());
                    match &failure {
                        // keyledger refused the request itself: a configuration error.
                        Failure::Status { status, .. } if status.is_client_error() => {
                            tracing::error!(%failure, request_id, "keyledger: verification refused; answering 503")
                        }
                        _ => tracing::warn!(%failure, request_id, "keyledger: no verdict; answering 503"),
                    }
                    Ok(response)
                }
            }
        })
    }
}

#[derive(Serialize)]
struct VerifyRequest<'a> {
    key: &'a str,
    scopes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<&'a str>,
    context: UsageContext<'a>,
}

#[derive(Serialize)]
struct UsageContext<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl KeyledgerLayer {
    /// The JSON-mode body: the key, this route's requirements, and what keyledger records
    /// about the request (method, path without the query, client address, user agent, the
    /// caller's `x-request-id`). Consumes the key, which is dropped (zeroed) here.
    fn verify_body<B>(&self, key: PresentedKey, request: &Request<B>) -> Bytes {
        let headers = request.headers();
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(bounded);
        let wants = &self.requirements;
        let body = VerifyRequest {
            key: key.expose(),
            scopes: &wants.scopes,
            resource: wants.resource.as_deref(),
            environment: wants.environment.map(Environment::as_str),
            workspace: wants.workspace.as_ref().map(WorkspaceId::as_str),
            context: UsageContext {
                ip: (self.client_ip)(headers, request.extensions()).map(|ip| ip.to_string()),
                user_agent: text(header::USER_AGENT),
                method: request.method().as_str(),
                path: bounded(request.uri().path()),
                request_id: text(header::HeaderName::from_static("x-request-id")),
            },
        };
        // Serialising borrowed strings and a slice cannot fail; an empty body would only be
        // refused by keyledger (and answered 503).
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// `text` cut to at most [`MAX_CONTEXT_CHARS`] characters, and a word the cut would split
/// dropped whole: keyledger redacts a word holding a key secret, which it recognises by its
/// checksum, so a secret cut short would be recorded in part (a word is a run of the
/// characters a secret is written with: ASCII letters, digits, `_` and `%`).
fn bounded(text: &str) -> &str {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '%';
    match text.char_indices().nth(MAX_CONTEXT_CHARS) {
        Some((cut, next)) if is_word(next) => {
            let kept = &text[..cut];
            kept.trim_end_matches(is_word)
        }
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// keyledger's denial, passed on: its status, its body, its request id and `Retry-After`.
fn denied<B>(denial: Denial) -> Response<ResponseBody<B>> {
    let mut response = Response::new(Either::Right(Full::new(denial.body)));
    *response.status_mut() = denial.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(value) = denial.request_id {
        headers.insert("request-id", value);
    }
    if let Some(value) = denial.retry_after {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// An answer of the middleware itself, in the error shape of docs/api.md, under a fresh
/// request id (also in the `request-id` header, and in the log line of a failure).
fn local_error<B>(status: StatusCode, code: &str, message: &str, denial: bool) -> Response<ResponseBody<B>> {
    let request_id = RequestId::generate(Timestamp::now().millis()).to_string();
    let mut body = serde_json::json!({"error": code, "message": message, "request_id": request_id});
    if denial {
        body["valid"] = serde_json::Value::Bool(false);
    }
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_drops_a_word_the_cut_would_split() {
        let text = format!("/{}/kl_live_{}", "p".repeat(MAX_CONTEXT_CHARS - 12), "s".repeat(49));
        assert_eq!(bounded(&text), format!("/{}/", "p".repeat(MAX_CONTEXT_CHARS - 12)));
        let exact = format!("/{}/end", "p".repeat(MAX_CONTEXT_CHARS - 5));
        assert_eq!(bounded(&format!("{exact}/more")), exact, "a cut between words keeps both sides");
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        let long = "é".repeat(MAX_CONTEXT_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), MAX_CONTEXT_CHARS);
        assert_eq!(bounded("/reports"), "/reports");
    }

    #[test]
    fn required_scopes_add_up_without_duplicates() {
        let client = KeyledgerClient::new("http://127.0.0.1:1").unwrap();
        let base = KeyledgerLayer::new(client).require_scopes(["a"]);
        let more = base.clone().require_scopes(["b", "a"]);
        assert_eq!(base.requirements.scopes, ["a"]);
        assert_eq!(more.requirements.scopes, ["a", "b"]);
    }
}
