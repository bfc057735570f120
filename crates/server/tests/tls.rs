//! `serve_tls`: the API over rustls, checked with a real TLS client that trusts only the
//! fixture certificate; and the header-read timeout holds over TLS too.

use keyledger_ledger::{Engine, EngineOptions};
use keyledger_server::{AppState, ServerConfig, serve_tls};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `serve_tls` on a fresh data dir; send on the returned channel to stop it.
struct Live {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Arc<tempfile::TempDir>,
}

async fn start(config: ServerConfig) -> Live {
    let data = support::init();
    let engine = Arc::new(Engine::open(&data.path, EngineOptions::default()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (listening, address) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_tls(
        "127.0.0.1:0".parse().unwrap(),
        fixtures().join("tls-cert.pem"),
        fixtures().join("tls-key.pem"),
        AppState::new(engine, config),
        async move {
            let _ = stopped.await;
        },
        Some(listening),
    ));
    let address = address.await.unwrap();
    Live { address, stop, server, _dir: data.dir }
}

/// A blocking TLS connection to `address` that trusts only the fixture CA.
fn connect(address: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = std::fs::read(fixtures().join("ca-cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(pem_body(&certificate))).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = std::net::TcpStream::connect(address).unwrap();
    rustls::StreamOwned::new(connection, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    let live = start(ServerConfig::default()).await;
    let address = live.address;
    let response = tokio::task::spawn_blocking(move || {
        let mut tls = connect(address);
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
    live.stop.send(()).unwrap();
    live.server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_dribbling_its_headers_is_cut_off() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let live = start(ServerConfig { header_read_timeout: TIMEOUT, ..ServerConfig::default() }).await;
    let address = live.address;
    // Two slow clients: one on its first request (axum-server's first-request timeout and
    // protocol detection), one after a first request answered on the same connection
    // (hyper's HTTP/1 header timer).
    let slow = |first_request: bool| {
        tokio::task::spawn_blocking(move || {
            let mut tls = connect(address);
            if !first_request {
                tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
                let mut answer = Vec::new();
                while !answer.ends_with(b"}") {
                    let mut chunk = [0u8; 1024];
                    let n = tls.read(&mut chunk).unwrap();
                    assert!(n > 0, "closed after the first response");
                    answer.extend_from_slice(&chunk[..n]);
                }
                assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
            }
            tls.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let started = Instant::now();
            let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nx-slow: ";
            for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                if started.elapsed() > Duration::from_secs(20) {
                    return (started.elapsed(), false);
                }
                if tls.write_all(&[*byte]).and_then(|()| tls.flush()).is_err() {
                    return (started.elapsed(), true);
                }
                let mut chunk = [0u8; 256];
                match tls.read(&mut chunk) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    // EOF, close_notify, reset, or an answer: the connection is over.
                    Ok(0) | Err(_) => return (started.elapsed(), true),
                    Ok(n) => {
                        panic!("the slow client got an answer: {}", String::from_utf8_lossy(&chunk[..n]))
                    }
                }
            }
            unreachable!("the head never ends")
        })
    };
    for (what, task) in [("first request", slow(true)), ("second request", slow(false))] {
        let (waited, closed) = task.await.unwrap();
        assert!(closed, "{what}: the slow TLS client is still connected after {waited:?}");
        assert!(
            waited + Duration::from_millis(150) >= TIMEOUT && waited <= TIMEOUT + Duration::from_millis(1500),
            "{what}: the slow TLS client was cut off after {waited:?}, not after about {TIMEOUT:?}"
        );
    }
    live.stop.send(()).unwrap();
    live.server.await.unwrap().unwrap();
}

/// The DER bytes of a one-certificate PEM file.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
