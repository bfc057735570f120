//! `axum-service --listen ADDR --keyledger-url URL`: the example service over TCP.

use anyhow::Context;
use clap::Parser;
use keyledger_example_axum::{Config, app};
use keyledger_tower::KeyledgerClient;
use std::net::SocketAddr;
use std::time::Duration;

/// An example service whose routes are protected by keyledger.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SERVICE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// keyledger's base URL (http only).
    #[arg(long, env = "KEYLEDGER_URL", default_value = "http://127.0.0.1:7878")]
    keyledger_url: String,
    /// Time allowed for one verification, in milliseconds (longer: 503).
    #[arg(long, default_value_t = 3000)]
    verify_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let keyledger = KeyledgerClient::builder(&args.keyledger_url)
        .timeout(Duration::from_millis(args.verify_timeout_ms))
        .build()
        .context("--keyledger-url")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, keyledger = %args.keyledger_url, "serving");
    axum::serve(listener, app(Config { keyledger }).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let on_term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = on_term => {}
    }
}
