//! `serve_tls`: the API over rustls, checked with a real TLS client that trusts only the
//! fixture certificate.

use keyledger_ledger::{Engine, EngineOptions};
use keyledger_server::{AppState, ServerConfig, serve_tls};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let path = path.clone();
        std::thread::spawn(move || Engine::init(&path, EngineOptions::default()).unwrap()).join().unwrap();
    }
    let engine = Arc::new(Engine::open(&path, EngineOptions::default()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (listening, address) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_tls(
        "127.0.0.1:0".parse().unwrap(),
        fixtures.join("tls-cert.pem"),
        fixtures.join("tls-key.pem"),
        AppState::new(engine, ServerConfig::default()),
        async move {
            let _ = stopped.await;
        },
        Some(listening),
    ));
    let address = address.await.unwrap();

    let certificate = std::fs::read(fixtures.join("ca-cert.pem")).unwrap();
    let response = tokio::task::spawn_blocking(move || {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let der = pem_body(&certificate);
        roots.add(rustls::pki_types::CertificateDer::from(der)).unwrap();
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let socket = std::net::TcpStream::connect(address).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, socket);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = tls.read_to_string(&mut text);
        text
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("request-id: req_"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The DER bytes of a one-certificate PEM file.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
