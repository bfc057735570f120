//! How connections reach the router: keyledger's own accept loop over hyper's HTTP/1, so
//! that a connection cannot hold a socket and a task forever without sending a request.
//!
//! `axum::serve` installs no timer in hyper, so hyper's header-read timeout never fires
//! there: a client that dribbles its request head one byte at a time (slow loris), or opens
//! connections and sends nothing, keeps them open indefinitely. Here every connection gets
//! hyper's timer and [`crate::ServerConfig::header_read_timeout`]:
//!
//! - a request head (request line and headers) must arrive completely within the timeout
//!   of the moment the server starts waiting for it, however steadily its bytes trickle in;
//!   otherwise the connection is closed without an answer;
//! - the wait starts when the connection is accepted and again after each response, so an
//!   idle keep-alive connection is closed after the same timeout (the idle limit);
//! - bodies are not covered here: the request timeout (408) bounds a request once its head
//!   has arrived, and the header size cap (431) bounds the head's size
//!   ([`crate::throttle::header_size_refusal`]).
//!
//! The gateways' routes (`/v1/verify…`, `GET /healthz`) go to [`crate::fast_path`], which
//! does the router layers' work for them without the layers; every other request goes to
//! the router.
//!
//! [`serve_http`] keeps what `axum::serve` gave: `ConnectInfo<SocketAddr>` for every
//! request, accept errors that do not stop the server, and graceful shutdown (no new
//! connections once the signal resolves; idle ones close at once, busy ones after their
//! response). `serve_tls` sets the same timeout on axum-server's builder, which has a
//! timer, and as its first-request timeout, which also bounds the HTTP/1-or-2 detection
//! that precedes hyper's own header timer there (the TLS handshake has axum-server's own
//! 10 s limit).

use crate::AppState;
use crate::fast_path::{self, Route};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tower::ServiceExt;

/// Serves `app` over HTTP/1 on `listener` until `shutdown` resolves, then waits for the
/// open connections to finish their current request.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    state: AppState,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    // One reference count per request instead of one per field of the state.
    let shared = std::sync::Arc::new((app, state));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole; never hold one back for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // The gateways' routes skip the router's layers (see `crate::fast_path`).
            let lean = Route::of(request.method(), request.uri().path());
            let shared = shared.clone();
            async move {
                match lean {
                    Some(route) => Ok(fast_path::serve(&shared.1, route, request).await),
                    None => shared.0.clone().oneshot(request).await,
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header-read timeouts, resets, malformed requests: the client's problem.
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An `accept` error. Per-connection errors (the peer reset before we accepted) are
/// nothing; others (out of file descriptors) are logged and the loop pauses a second
/// rather than spin, as `axum::serve` does.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
