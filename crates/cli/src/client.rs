//! A typed, blocking HTTP client for keyledger's admin API (docs/api.md).
//!
//! [`Client`] speaks HTTP or HTTPS (rustls, Mozilla's roots) through a `ureq` agent, authenticates with
//! `Authorization: Bearer <admin key>`, and turns every non-2xx answer into a
//! [`ClientError`] parsed from the API's error body (docs/api.md, "Errors")
//! `{"error": CODE, "message": TEXT, "request_id": ID}`. Each error class has its own exit
//! code ([`ClientError::exit_code`]).
//!
//! The admin key is a secret: it is never part of the `Debug` output of a [`Client`], and
//! any error text that happens to contain it (a server message, a transport error) has it
//! replaced by `[redacted]` before it reaches a [`ClientError`].

use serde_json::Value;
use std::fmt;
use std::io::Read;
use std::time::Duration;

/// How long any request may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a JSON request may take in all, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a streamed answer ([`Client::get_stream`]) may take to start: the server may
/// work for a while before its first byte (an export's range and proofs). Reading the body
/// has no overall limit: a large export may take longer than any fixed bound.
const STREAM_START_TIMEOUT: Duration = Duration::from_secs(300);

/// Exit codes of the admin commands, one per error class.
pub mod exit {
    /// Bad command line or local input; nothing was sent (or a confirmation was refused).
    pub const USAGE: u8 = 2;
    /// 401/403: the admin key is missing, unknown, revoked, expired or lacks a scope.
    pub const AUTH: u8 = 3;
    /// 404: no such key, workspace or checkpoint (or one the admin key may not see).
    pub const NOT_FOUND: u8 = 4;
    /// Any other answer of the server: invalid request, conflict, unavailable, internal…
    pub const SERVER: u8 = 5;
    /// The server could not be reached or its answer could not be read.
    pub const TRANSPORT: u8 = 6;
    /// The server's answer could not be written to stdout (a full disk, a closed terminal).
    pub const OUTPUT: u8 = 7;
}

/// What can go wrong talking to keyledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A local mistake (bad URL, missing admin key, bad input); nothing was sent.
    #[error("usage: {0}")]
    Usage(String),
    /// 401 or 403.
    #[error("{code}: {message}")]
    Auth { code: String, message: String, status: u16 },
    /// 404.
    #[error("not_found: {message}")]
    NotFound { message: String },
    /// Every other non-2xx answer (400, 409, 413, 422, 5xx, …).
    #[error("{code}: {message}")]
    Server { status: u16, code: String, message: String },
    /// The request did not get a readable answer.
    #[error("transport: {0}")]
    Transport(String),
}

impl ClientError {
    /// The process exit code of this class of error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => exit::USAGE,
            ClientError::Auth { .. } => exit::AUTH,
            ClientError::NotFound { .. } => exit::NOT_FOUND,
            ClientError::Server { .. } => exit::SERVER,
            ClientError::Transport(_) => exit::TRANSPORT,
        }
    }

    /// Classifies a non-2xx answer from its status and body. A body in the API's error shape
    /// gives the code and message; anything else (a proxy's HTML page…) is summarised.
    pub fn from_response(status: u16, body: &str) -> Self {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let field =
            |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_owned);
        let code = field("error").unwrap_or_else(|| match status {
            401 => "unauthorized".to_owned(),
            403 => "forbidden".to_owned(),
            404 => "not_found".to_owned(),
            _ => format!("http_{status}"),
        });
        let message = field("message").unwrap_or_else(|| {
            let text = body.trim();
            if text.is_empty() {
                format!("the server answered HTTP {status} with no body")
            } else {
                format!("the server answered HTTP {status}: {}", truncate(text, 200))
            }
        });
        match status {
            401 | 403 => ClientError::Auth { code, message, status },
            404 => ClientError::NotFound { message },
            _ => ClientError::Server { status, code, message },
        }
    }

    /// The API's error code of this error (`usage` and `transport` for local ones).
    #[cfg(test)]
    pub fn code(&self) -> &str {
        match self {
            ClientError::Usage(_) => "usage",
            ClientError::Auth { code, .. } | ClientError::Server { code, .. } => code,
            ClientError::NotFound { .. } => "not_found",
            ClientError::Transport(_) => "transport",
        }
    }

    fn redacted(self, secret: &str) -> Self {
        let r = |text: String| redact(text, secret);
        match self {
            ClientError::Usage(m) => ClientError::Usage(r(m)),
            ClientError::Auth { code, message, status } => {
                ClientError::Auth { code: r(code), message: r(message), status }
            }
            ClientError::NotFound { message } => ClientError::NotFound { message: r(message) },
            ClientError::Server { status, code, message } => {
                ClientError::Server { status, code: r(code), message: r(message) }
            }
            ClientError::Transport(m) => ClientError::Transport(r(m)),
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Replaces every occurrence of `secret` in `text` by `[redacted]`.
pub fn redact(text: String, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) { text } else { text.replace(secret, "[redacted]") }
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The latest signed checkpoint (`GET /v1/log/checkpoint`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub size: u64,
    pub root_hash: String,
    pub timestamp: String,
    /// The signed note text (C2SP signed note), exactly as served.
    pub note: String,
}

impl Checkpoint {
    pub fn from_json(value: &Value) -> Result<Self, ClientError> {
        let text = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Transport(format!("the checkpoint answer has no `{name}`")))
        };
        Ok(Checkpoint {
            size: value
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| ClientError::Transport("the checkpoint answer has no `size`".into()))?,
            root_hash: text("root_hash")?,
            timestamp: text("timestamp")?,
            note: text("note")?,
        })
    }
}

/// The body of a streamed answer (see [`Client::get_stream`]), read chunk by chunk.
pub struct Download {
    reader: ureq::BodyReader<'static>,
    /// `GET <url>`, for errors.
    what: String,
    /// Only to redact it from errors.
    admin_key: String,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download").field("what", &self.what).finish_non_exhaustive()
    }
}

impl Download {
    /// Reads the next bytes of the body into `buffer`: `Ok(0)` at its end. A connection cut
    /// before the end (fewer bytes than announced, a broken chunk) is a transport error.
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<usize, ClientError> {
        loop {
            match self.reader.read(buffer) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = ClientError::Transport(format!("{}: the download was cut: {e}", self.what));
                    return Err(error.redacted(&self.admin_key));
                }
            }
        }
    }
}

/// An HTTP method of the admin API.
#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// A client of one keyledger server, authenticated with one admin key.
#[derive(Clone)]
pub struct Client {
    base_url: String,
    admin_key: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("admin_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port` or `https://host`, optionally
    /// with a path prefix). Refuses an empty or malformed admin key and a non-HTTP URL.
    pub fn new(base_url: &str, admin_key: &str) -> Result<Self, ClientError> {
        let admin_key = admin_key.trim();
        if admin_key.is_empty() {
            return Err(ClientError::Usage(
                "an admin key is required: pass --admin-key or set KEYLEDGER_ADMIN_KEY".into(),
            ));
        }
        if !admin_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Usage("the admin key contains spaces or non-ASCII characters".into()));
        }
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        let Some(rest) = base_url.strip_prefix("http://").or_else(|| base_url.strip_prefix("https://"))
        else {
            return Err(ClientError::Usage(format!("`{base_url}` is not an http:// or https:// URL")));
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', '@']) {
            return Err(ClientError::Usage(format!(
                "`{base_url}` is not a usable server URL (expected http://host:port)"
            )));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Never follow a redirect: it would carry the admin key elsewhere.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(concat!("keyledger-cli/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { base_url, admin_key: admin_key.to_owned(), agent: ureq::Agent::new_with_config(config) })
    }

    #[cfg(test)]
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request and returns the JSON of a 2xx answer (`null` for an empty body).
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.send_inner(method, path, query, body).map_err(|e| e.redacted(&self.admin_key))
    }

    fn send_inner(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let authorization = format!("Bearer {}", self.admin_key);
        let transport =
            |e: ureq::Error| ClientError::Transport(format!("{} {url}: {e}", method_name(method)));
        let response = match method {
            Method::Get => {
                let mut request = self
                    .agent
                    .get(&url)
                    .header("authorization", &authorization)
                    .header("accept", "application/json");
                for (k, v) in query {
                    request = request.query(*k, *v);
                }
                request.call()
            }
            Method::Delete => self
                .agent
                .delete(&url)
                .header("authorization", &authorization)
                .header("accept", "application/json")
                .call(),
            Method::Post | Method::Put | Method::Patch => {
                let mut request = match method {
                    Method::Post => self.agent.post(&url),
                    Method::Put => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                }
                .header("authorization", &authorization)
                .header("accept", "application/json");
                for (k, v) in query {
                    request = request.query(*k, *v);
                }
                request.send_json(body.cloned().unwrap_or_else(|| Value::Object(Default::default())))
            }
        };
        let mut response = response.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| {
            ClientError::Transport(format!("cannot read the answer of {} {url}: {e}", method_name(method)))
        })?;
        if !(200..300).contains(&status) {
            return Err(ClientError::from_response(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            ClientError::Transport(format!(
                "{} {url} answered {status} with a body that is not JSON: {e}",
                method_name(method)
            ))
        })
    }

    /// A GET whose 2xx answer is read as a stream, in chunks (an export, which can be far
    /// bigger than memory): the body of a non-2xx answer becomes a [`ClientError`] as for
    /// every other request. `query` values are percent-encoded.
    pub fn get_stream(&self, path: &str, query: &[(&str, &str)]) -> Result<Download, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let what = format!("GET {url}");
        let mut request = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.admin_key))
            .config()
            .timeout_global(None)
            .timeout_recv_response(Some(STREAM_START_TIMEOUT))
            .build();
        for (name, value) in query {
            request = request.query(*name, *value);
        }
        let mut response = request
            .call()
            .map_err(|e| ClientError::Transport(format!("{what}: {e}")).redacted(&self.admin_key))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(ClientError::from_response(status, &body).redacted(&self.admin_key));
        }
        let reader = response.into_body().into_reader();
        Ok(Download { reader, what, admin_key: self.admin_key.clone() })
    }

    /// `POST /v1/workspaces/{ws}/keys` → KeyView plus `secret`.
    pub fn create_key(&self, workspace: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::Post, &format!("/v1/workspaces/{}/keys", segment(workspace)), &[], Some(body))
    }

    /// `POST /v1/workspaces/{ws}/keys/import` → `{"keys", "imported", "already_present"}`.
    pub fn import_keys(&self, workspace: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(
            Method::Post,
            &format!("/v1/workspaces/{}/keys/import", segment(workspace)),
            &[],
            Some(body),
        )
    }

    /// `GET /v1/workspaces/{ws}/keys?status=` → `{"keys": [KeyView]}`.
    pub fn list_keys(&self, workspace: &str, status: Option<&str>) -> Result<Value, ClientError> {
        let query: Vec<(&str, &str)> = status.map(|s| ("status", s)).into_iter().collect();
        self.send(Method::Get, &format!("/v1/workspaces/{}/keys", segment(workspace)), &query, None)
    }

    /// `GET /v1/keys/{key_id}` → KeyView.
    pub fn get_key(&self, key_id: &str) -> Result<Value, ClientError> {
        self.send(Method::Get, &format!("/v1/keys/{}", segment(key_id)), &[], None)
    }

    /// `PATCH /v1/keys/{key_id}` → KeyView.
    pub fn update_key(&self, key_id: &str, patch: &Value) -> Result<Value, ClientError> {
        self.send(Method::Patch, &format!("/v1/keys/{}", segment(key_id)), &[], Some(patch))
    }

    /// `POST /v1/keys/{key_id}/rotate` → `{"key": KeyView + secret, "previous": KeyView}`.
    pub fn rotate(&self, key_id: &str, overlap: Option<&str>) -> Result<Value, ClientError> {
        let body = match overlap {
            Some(overlap) => serde_json::json!({ "overlap": overlap }),
            None => serde_json::json!({}),
        };
        self.send(Method::Post, &format!("/v1/keys/{}/rotate", segment(key_id)), &[], Some(&body))
    }

    /// POSTs `{"reason"?}` to `path`: the shape of revoke, revoke-all, disable and enable.
    fn post_reason(&self, path: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.send(Method::Post, path, &[], Some(&reason_body(reason)))
    }

    /// `POST /v1/keys/{key_id}/revoke` → KeyView.
    pub fn revoke(&self, key_id: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_reason(&format!("/v1/keys/{}/revoke", segment(key_id)), reason)
    }

    /// `POST /v1/workspaces/{ws}/keys/revoke-all` → `{"revoked": N, "key_ids": [...]}`.
    pub fn revoke_all(&self, workspace: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_reason(&format!("/v1/workspaces/{}/keys/revoke-all", segment(workspace)), reason)
    }

    /// `POST /v1/keys/{key_id}/disable` → KeyView.
    pub fn disable(&self, key_id: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_reason(&format!("/v1/keys/{}/disable", segment(key_id)), reason)
    }

    /// `POST /v1/keys/{key_id}/credits` (`{"add"}` or `{"set"}`) → KeyView.
    pub fn set_credits(&self, key_id: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::Post, &format!("/v1/keys/{}/credits", segment(key_id)), &[], Some(body))
    }

    /// `POST /v1/keys/{key_id}/enable` → KeyView.
    pub fn enable(&self, key_id: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_reason(&format!("/v1/keys/{}/enable", segment(key_id)), reason)
    }

    /// `GET /v1/workspaces/{ws}/policy`.
    pub fn get_policy(&self, workspace: &str) -> Result<Value, ClientError> {
        self.send(Method::Get, &format!("/v1/workspaces/{}/policy", segment(workspace)), &[], None)
    }

    /// `PUT /v1/workspaces/{ws}/policy` (replaces the whole policy).
    pub fn set_policy(&self, workspace: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::Put, &format!("/v1/workspaces/{}/policy", segment(workspace)), &[], Some(body))
    }

    /// `PUT /v1/workspaces/{ws}/webhook` → the webhook plus its new `secret`.
    pub fn set_webhook(&self, workspace: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::Put, &format!("/v1/workspaces/{}/webhook", segment(workspace)), &[], Some(body))
    }

    /// `GET /v1/workspaces/{ws}/webhook` → the webhook (never its secret).
    pub fn get_webhook(&self, workspace: &str) -> Result<Value, ClientError> {
        self.send(Method::Get, &format!("/v1/workspaces/{}/webhook", segment(workspace)), &[], None)
    }

    /// `DELETE /v1/workspaces/{ws}/webhook` → the disabled webhook.
    pub fn disable_webhook(&self, workspace: &str) -> Result<Value, ClientError> {
        self.send(Method::Delete, &format!("/v1/workspaces/{}/webhook", segment(workspace)), &[], None)
    }

    /// `GET /v1/workspaces/{ws}/webhook/deliveries?limit=` → `{"attempts", "pending"}`.
    pub fn webhook_deliveries(&self, workspace: &str, limit: Option<u32>) -> Result<Value, ClientError> {
        let limit = limit.map(|l| l.to_string());
        let query: Vec<(&str, &str)> = limit.as_deref().map(|l| ("limit", l)).into_iter().collect();
        let path = format!("/v1/workspaces/{}/webhook/deliveries", segment(workspace));
        self.send(Method::Get, &path, &query, None)
    }

    /// `GET /v1/log/checkpoint` → `{"size", "root_hash", "timestamp", "note"}`.
    pub fn checkpoint(&self) -> Result<Value, ClientError> {
        self.send(Method::Get, "/v1/log/checkpoint", &[], None)
    }

    /// `GET /v1/log/public-key` → `{"algorithm", "public_key", "origin", …}`.
    pub fn public_key(&self) -> Result<Value, ClientError> {
        self.send(Method::Get, "/v1/log/public-key", &[], None)
    }

    /// `GET /v1/log/entries/{seq}` → `{"seq", "raw" (base64), "leaf_hash"}`.
    pub fn log_entry(&self, seq: u64) -> Result<Value, ClientError> {
        self.send(Method::Get, &format!("/v1/log/entries/{seq}"), &[], None)
    }

    /// `GET /v1/log/proofs/inclusion?seq=&size=` → `{"hashes": [hex, …]}`.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Value, ClientError> {
        let (seq, size) = (seq.to_string(), size.to_string());
        self.send(Method::Get, "/v1/log/proofs/inclusion", &[("seq", &seq), ("size", &size)], None)
    }
}

// audit endpoints (docs/api.md, "Audit"), used by `keyledger audit …`

/// `path?name=value&…` with every value percent-encoded (so the `+` of a time offset stays
/// a `+`, and a CIDR's `/` cannot be mistaken for a path); absent values are left out.
pub fn with_query(path: &str, query: &[(&str, Option<&str>)]) -> String {
    let mut out = path.to_owned();
    let mut separator = '?';
    for (name, value) in query {
        if let Some(value) = value {
            out.push(separator);
            out.push_str(name);
            out.push('=');
            out.push_str(&segment(value));
            separator = '&';
        }
    }
    out
}

/// The filters of `GET /v1/keys/{key_id}/events`.
#[derive(Clone, Debug, Default)]
pub struct EventsQuery<'a> {
    pub kind: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: Option<u32>,
    pub cursor: Option<&'a str>,
}

/// The paths (with their queries) of the audit endpoints.
pub mod audit_url {
    use super::{EventsQuery, segment, with_query};

    /// `GET /v1/keys/{key_id}/events?kind=&from=&to=&limit=&cursor=`
    pub fn key_events(key_id: &str, query: &EventsQuery<'_>) -> String {
        let limit = query.limit.map(|n| n.to_string());
        with_query(
            &format!("/v1/keys/{}/events", segment(key_id)),
            &[
                ("kind", query.kind),
                ("from", query.from),
                ("to", query.to),
                ("limit", limit.as_deref()),
                ("cursor", query.cursor),
            ],
        )
    }

    /// `GET /v1/audit/keys/{key_id}/compromise?since=&until=`
    pub fn compromise(key_id: &str, since: Option<&str>, until: Option<&str>) -> String {
        with_query(
            &format!("/v1/audit/keys/{}/compromise", segment(key_id)),
            &[("since", since), ("until", until)],
        )
    }

    /// `GET /v1/audit/requests/{request_id}`
    pub fn request(request_id: &str) -> String {
        format!("/v1/audit/requests/{}", segment(request_id))
    }

    /// `GET /v1/audit/sources?cidr=&from=&to=` (an address or a network, in the query).
    pub fn sources(source: &str, from: Option<&str>, to: Option<&str>) -> String {
        with_query("/v1/audit/sources", &[("cidr", Some(source)), ("from", from), ("to", to)])
    }

    /// `GET /v1/audit/keys?workspace=&active_at=`
    pub fn active_keys(workspace: &str, at: Option<&str>) -> String {
        with_query("/v1/audit/keys", &[("workspace", Some(workspace)), ("active_at", at)])
    }

    /// `GET /v1/audit/hygiene?workspace=&unused_for=&older_than=`
    pub fn hygiene(workspace: &str, unused_for: Option<&str>, older_than: Option<&str>) -> String {
        with_query(
            "/v1/audit/hygiene",
            &[("workspace", Some(workspace)), ("unused_for", unused_for), ("older_than", older_than)],
        )
    }

    /// `POST /v1/audit/lookup` (the candidate secret goes in the body, never in a URL).
    pub const LOOKUP: &str = "/v1/audit/lookup";
    /// `POST /v1/audit/lookup/bulk` (up to 500 candidates in the body).
    pub const LOOKUP_BULK: &str = "/v1/audit/lookup/bulk";
}

impl Client {
    /// `GET /v1/keys/{key_id}/events` → `{"events": [Event], "next_cursor"}`.
    pub fn key_events(&self, key_id: &str, query: &EventsQuery<'_>) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::key_events(key_id, query), &[], None)
    }

    /// `GET /v1/audit/keys/{key_id}/compromise` → the leak report.
    pub fn compromise(
        &self,
        key_id: &str,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::compromise(key_id, since, until), &[], None)
    }

    /// `GET /v1/audit/requests/{request_id}` → the events and key behind a request id.
    pub fn audit_request(&self, request_id: &str) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::request(request_id), &[], None)
    }

    /// `GET /v1/audit/sources?cidr=` → the keys used from an address or network.
    pub fn audit_sources(
        &self,
        source: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::sources(source, from, to), &[], None)
    }

    /// `GET /v1/audit/keys?workspace=&active_at=` → the keys valid at that instant.
    pub fn active_keys(&self, workspace: &str, at: Option<&str>) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::active_keys(workspace, at), &[], None)
    }

    /// `GET /v1/audit/hygiene` → `never_used`, `unused`, `no_expiry`, `older_than`, …
    pub fn hygiene(
        &self,
        workspace: &str,
        unused_for: Option<&str>,
        older_than: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.send(Method::Get, &audit_url::hygiene(workspace, unused_for, older_than), &[], None)
    }

    /// `POST /v1/audit/lookup {"secret"}` → `{"key_id", "workspace", "status", "report"}`.
    /// The candidate is redacted from any error, like the admin key.
    pub fn lookup(&self, secret: &str) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "secret": secret });
        self.send(Method::Post, audit_url::LOOKUP, &[], Some(&body)).map_err(|e| e.redacted(secret))
    }

    /// `POST /v1/audit/lookup/bulk` for up to 500 candidates; the candidates never appear in
    /// an error.
    pub fn lookup_bulk(&self, secrets: &[&str]) -> Result<Value, ClientError> {
        let body = serde_json::json!({ "secrets": secrets });
        self.send(Method::Post, audit_url::LOOKUP_BULK, &[], Some(&body))
            .map_err(|e| secrets.iter().fold(e, |e, secret| e.redacted(secret)))
    }
}

// end audit endpoints

fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(reason) => serde_json::json!({ "reason": reason }),
        None => serde_json::json!({}),
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kl_live_0123456789abcdefghijABCDEFGHIJklmnopqrstuvwxyzAB";

    #[test]
    fn contract_error_bodies_are_classified_with_their_exit_codes() {
        let body = |code: &str, message: &str| {
            serde_json::json!({"error": code, "message": message, "request_id": "req_1"}).to_string()
        };
        let cases = [
            (401, "unauthorized", exit::AUTH),
            (401, "invalid_api_key", exit::AUTH),
            (401, "expired_api_key", exit::AUTH),
            (403, "forbidden", exit::AUTH),
            (404, "not_found", exit::NOT_FOUND),
            (400, "invalid_request", exit::SERVER),
            (422, "invalid_request", exit::SERVER),
            (409, "conflict", exit::SERVER),
            (413, "payload_too_large", exit::SERVER),
            (503, "unavailable", exit::SERVER),
            (500, "internal", exit::SERVER),
        ];
        for (status, code, exit_code) in cases {
            let error = ClientError::from_response(status, &body(code, "it went wrong"));
            assert_eq!(error.exit_code(), exit_code, "{status} {code}");
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), format!("{code}: it went wrong"));
        }
        assert_eq!(
            ClientError::from_response(403, &body("forbidden", "lacks scope")),
            ClientError::Auth { code: "forbidden".into(), message: "lacks scope".into(), status: 403 }
        );
        assert_eq!(
            ClientError::from_response(404, &body("not_found", "no key key_x")),
            ClientError::NotFound { message: "no key key_x".into() }
        );
        assert_eq!(
            ClientError::from_response(409, &body("conflict", "policy allows 1 active key")),
            ClientError::Server {
                status: 409,
                code: "conflict".into(),
                message: "policy allows 1 active key".into()
            }
        );
    }

    #[test]
    fn bodies_outside_the_contract_are_summarised() {
        let error = ClientError::from_response(502, "<html>Bad Gateway</html>");
        assert_eq!(error.exit_code(), exit::SERVER);
        assert_eq!(error.code(), "http_502");
        assert!(error.to_string().contains("HTTP 502: <html>Bad Gateway</html>"), "{error}");
        let error = ClientError::from_response(401, "");
        assert_eq!(error.exit_code(), exit::AUTH);
        assert_eq!(error.code(), "unauthorized");
        assert_eq!(ClientError::from_response(404, "nope").exit_code(), exit::NOT_FOUND);
        let long = "x".repeat(1000);
        assert!(ClientError::from_response(500, &long).to_string().len() < 300);
    }

    #[test]
    fn local_error_classes_have_their_exit_codes() {
        assert_eq!(ClientError::Usage("x".into()).exit_code(), 2);
        assert_eq!(ClientError::Transport("x".into()).exit_code(), 6);
        assert_eq!(ClientError::Usage("x".into()).code(), "usage");
    }

    #[test]
    fn the_admin_key_never_shows_in_debug_or_errors() {
        let client = Client::new("http://127.0.0.1:7878/", KEY).expect("client");
        let debug = format!("{client:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert_eq!(client.base_url(), "http://127.0.0.1:7878");

        let echoed = serde_json::json!({"error": "unauthorized", "message": format!("bad key {KEY}"), "request_id": "r"}).to_string();
        let error = ClientError::from_response(401, &echoed).redacted(KEY);
        assert!(!error.to_string().contains(KEY));
        assert!(!format!("{error:?}").contains(KEY));
        assert!(error.to_string().contains("[redacted]"));
    }

    #[test]
    fn bad_configuration_is_a_usage_error() {
        for (url, key) in [
            ("http://127.0.0.1:7878", ""),
            ("http://127.0.0.1:7878", "   "),
            ("http://127.0.0.1:7878", "kl live"),
            ("ftp://example", KEY),
            ("127.0.0.1:7878", KEY),
            ("http://", KEY),
            ("http://user@host", KEY),
        ] {
            let error = Client::new(url, key).expect_err(url);
            assert_eq!(error.exit_code(), exit::USAGE, "{url}: {error}");
            assert!(!error.to_string().contains(KEY));
        }
    }

    #[test]
    fn https_urls_are_accepted() {
        let client = Client::new("https://keyledger.example/", KEY).expect("https client");
        assert_eq!(client.base_url(), "https://keyledger.example");
    }

    #[test]
    fn unreachable_servers_are_transport_errors() {
        // Port 1 on loopback: nothing listens there.
        let client = Client::new("http://127.0.0.1:1", KEY).expect("client");
        let error = client.get_key("key_x").expect_err("no server");
        assert_eq!(error.exit_code(), exit::TRANSPORT, "{error}");
        assert!(!error.to_string().contains(KEY));
    }

    /// A server on loopback that answers one request with `answer` (raw HTTP) and hands
    /// back the request's head.
    fn answer_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            while reader.read_line(&mut head).expect("read") > 2 {}
            let mut stream = reader.into_inner();
            stream.write_all(answer).expect("write");
            head
        });
        (url, server)
    }

    #[test]
    fn streamed_gets_read_the_body_in_chunks() {
        let (url, server) = answer_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/jsonl\r\ncontent-length: 12\r\nconnection: close\r\n\r\nline1\nline2\n",
        );
        let client = Client::new(&url, KEY).expect("client");
        let mut download = client
            .get_stream("/v1/export", &[("from", "2026-01-01T00:00:00+01:00"), ("format", "jsonl")])
            .expect("2xx");
        let (mut body, mut chunk) = (Vec::new(), [0u8; 5]);
        loop {
            let n = download.read(&mut chunk).expect("read");
            if n == 0 {
                break;
            }
            assert!(n <= chunk.len());
            body.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(body, b"line1\nline2\n");
        assert!(!format!("{download:?}").contains(KEY));
        let head = server.join().expect("server");
        assert!(
            head.starts_with(
                "GET /v1/export?from=2026-01-01T00%3A00%3A00%2B01%3A00&format=jsonl HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("authorization: bearer {}\r\n", KEY.to_ascii_lowercase())),
            "{head}"
        );
    }

    #[test]
    fn streamed_gets_turn_error_answers_and_cuts_into_client_errors() {
        let body =
            format!(r#"{{"error":"forbidden","message":"{KEY} lacks ledger:export","request_id":"req_1"}}"#);
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (url, server) = answer_once(answer.leak().as_bytes());
        let error = Client::new(&url, KEY).expect("client").get_stream("/v1/export", &[]).expect_err("403");
        server.join().expect("server");
        assert_eq!(error.exit_code(), exit::AUTH, "{error}");
        assert_eq!(error.to_string(), "forbidden: [redacted] lacks ledger:export");

        // Ten bytes announced, four sent, then the connection closes.
        let (url, server) =
            answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nline");
        let mut download =
            Client::new(&url, KEY).expect("client").get_stream("/v1/export", &[]).expect("2xx");
        server.join().expect("server");
        let mut chunk = [0u8; 64];
        let error = loop {
            match download.read(&mut chunk) {
                Ok(0) => panic!("a cut download read to its end"),
                Ok(_) => continue,
                Err(error) => break error,
            }
        };
        assert_eq!(error.exit_code(), exit::TRANSPORT, "{error}");
        assert!(error.to_string().contains("the download was cut"), "{error}");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("acme-prod_1"), "acme-prod_1");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn checkpoints_parse_from_the_servers_json() {
        let value = serde_json::json!({"size": 3, "root_hash": "ab", "timestamp": "2025-01-01T00:00:00Z", "note": "origin\n3\nq80=\n\n— sig\n"});
        let checkpoint = Checkpoint::from_json(&value).expect("parses");
        assert_eq!(checkpoint.size, 3);
        assert!(checkpoint.note.starts_with("origin\n"));
        assert_eq!(
            Checkpoint::from_json(&serde_json::json!({"size": 3})).expect_err("incomplete").exit_code(),
            exit::TRANSPORT
        );
    }
}
