//! `xtask bare --listen ADDR`: the reference server of `cargo xtask load`.
//!
//! A bare axum server on the same tokio runtime shape as `keyledger serve` (multi-threaded,
//! default workers), built with the same release profile, that answers every GET or POST on
//! any path with 200 and a constant JSON body about the size of a verify answer. It reads
//! the request body, as verify does. No verification can beat it on a given machine, so
//! the load test reports keyledger's figures as ratios to it.
//!
//! Prints `listening on ADDR` on stdout once bound (so `--listen 127.0.0.1:0` works) and
//! runs until SIGTERM/SIGINT.

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::header;
use std::io::Write as _;
use std::net::SocketAddr;

/// Roughly the shape and size of a successful verify answer.
const BODY: &str = r#"{"valid":true,"key_id":"key_01JBARE0000000000000000000","workspace":"load","environment":"live","scopes":["read","write"],"owner":null,"expires_at":null,"request_id":"req_01JBARE0000000000000000000"}"#;

async fn answer(_body: Bytes) -> impl axum::response::IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

/// Parses `--listen ADDR` and serves until a shutdown signal.
pub fn run(args: &[String]) -> Result<()> {
    let listen: SocketAddr = match args {
        [flag, value] if flag == "--listen" => value.parse().context("--listen")?,
        [] => "127.0.0.1:0".parse()?,
        _ => bail!("usage: xtask bare [--listen ADDR]"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        stdout.flush()?;
        let app = axum::Router::new().fallback(axum::routing::any(answer));
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}
