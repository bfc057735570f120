//! What the server's in-process tests share: an initialised data dir with its init admin
//! key, the router over an engine on it, and one way to send a request and read the answer.
//!
//! Every test binary declares `mod support;` and uses the part it needs. The router is driven
//! with `tower::ServiceExt::oneshot`, never a socket; the peer address handlers see is
//! `127.0.0.1` unless a request carries its own `ConnectInfo` (which takes precedence over
//! the router's `MockConnectInfo`).
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use keyledger_core::Environment;
use keyledger_ledger::{Engine, EngineOptions, Expiry, KeySpec};
use keyledger_server::{AppState, ServerConfig, router};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

/// An initialised data dir (`<tempdir>/data`) and the admin key `init` printed. The
/// temporary directory lives as long as the last clone of `dir`.
#[derive(Clone)]
pub struct DataDir {
    pub dir: Arc<tempfile::TempDir>,
    pub path: PathBuf,
    pub admin: String,
}

/// Initialises a fresh data dir. `Engine::init` is synchronous and must not run on a runtime
/// thread, so it runs on a thread of its own (tests call this from inside tokio).
pub fn init() -> DataDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let init = {
        let path = path.clone();
        std::thread::spawn(move || Engine::init(&path, EngineOptions::default()).unwrap()).join().unwrap()
    };
    DataDir { dir: Arc::new(dir), path, admin: init.admin_key.expose().to_owned() }
}

/// The server's router over `engine`, seeing every request as coming from `127.0.0.1`.
pub fn app(engine: Arc<Engine>, config: ServerConfig) -> axum::Router {
    router(AppState::new(engine, config)).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))))
}

/// An engine open on a data dir and the router over it.
pub struct Api {
    pub app: axum::Router,
    pub engine: Arc<Engine>,
    pub admin: String,
    pub path: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// A fresh data dir, opened with default engine options, served with `config`.
pub fn api(config: ServerConfig) -> Api {
    open(&init(), EngineOptions::default(), config)
}

/// Opens `data` with `options` and serves it with `config`.
pub fn open(data: &DataDir, options: EngineOptions, config: ServerConfig) -> Api {
    open_at(data.dir.clone(), &data.path, &data.admin, options, config)
}

fn open_at(
    dir: Arc<tempfile::TempDir>,
    path: &Path,
    admin: &str,
    options: EngineOptions,
    config: ServerConfig,
) -> Api {
    let engine = Arc::new(Engine::open(path, options).unwrap());
    Api {
        app: app(engine.clone(), config),
        engine,
        admin: admin.to_owned(),
        path: path.to_owned(),
        _dir: dir,
    }
}

/// An answer as a test reads it: the body parsed as JSON (`Null` when it is not JSON), as
/// text, and as the bytes served (tiles are binary).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// Status and body, for assertion messages.
    pub fn dump(&self) -> String {
        format!("{} {}", self.status, self.body)
    }

    /// The value of header `name`, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts a contract error: `status` and a body `{"error": code, "message",
    /// "request_id"}` with a non-empty message and a `req_` request id.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let body = &self.body;
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert!(body["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{body}");
    }
}

/// A key spec for a live key named `name` with `scopes` over `resources`, never expiring.
pub fn spec(name: &str, scopes: &[&str], resources: Vec<String>) -> KeySpec {
    KeySpec {
        name: name.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        resources,
        environment: Environment::Live,
        owner: None,
        metadata: "{}".into(),
        expiry: Expiry::Never,
        credits: None,
    }
}

/// A request: `Authorization: Bearer <bearer>` when given, the `headers`, and `body` as
/// `application/json` when given (sent as is, so a test can send malformed JSON).
pub fn request(
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = bearer {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    request.body(body.map_or(Body::empty(), Body::from)).unwrap()
}

/// Sends `request` through `app` and reads the whole answer.
pub async fn send(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
        bytes: bytes.to_vec(),
    }
}

impl Api {
    /// Sends `request` through this router.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        send(&self.app, request).await
    }

    /// `method uri` with an optional bearer key and JSON body.
    pub async fn call_as(
        &self,
        bearer: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> Answer {
        self.send(request(method, uri, bearer, &[], body.map(|b| b.to_string()))).await
    }

    /// `method uri` with the init admin key and an optional JSON body.
    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        self.call_as(Some(&self.admin), method, uri, body).await
    }
}
