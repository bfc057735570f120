//! The closed-loop HTTP/1.1 load generator of `cargo xtask load`, on the hyper 1 client.
//!
//! `connections` tasks each hold one keep-alive connection and send one request at a time
//! (the next as soon as the previous answer's body is read), like `wrk`. Requests started
//! during the warm-up are counted (every answered verification must be accounted for) but
//! not timed; requests started in the measured window are timed into an HDR histogram
//! (microseconds, 3 significant digits). Every run is bounded by its deadline.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Builds the `n`-th request of a run (n counts across all connections).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// How long and how wide one run is.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one run measured.
pub struct Outcome {
    /// Latency of the requests started in the measured window, in microseconds.
    pub latency: Histogram<u64>,
    /// Requests started in the measured window (and answered).
    pub measured: u64,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Answers by status over the whole run, warm-up included.
    pub statuses: BTreeMap<u16, u64>,
    /// Answers by status in the measured window.
    pub measured_statuses: BTreeMap<u16, u64>,
    /// Transport errors (connect, send, receive), and the first one's text.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    /// Nothing measured yet, over a window of `seconds`.
    pub fn empty(seconds: Duration) -> Self {
        Self {
            latency: new_histogram(),
            measured: 0,
            seconds: seconds.as_secs_f64(),
            statuses: BTreeMap::new(),
            measured_statuses: BTreeMap::new(),
            errors: 0,
            first_error: None,
        }
    }

    /// Adds another run (or another connection's part of this one): counts and windows add.
    pub fn merge(&mut self, other: Outcome) -> Result<()> {
        self.latency.add(&other.latency).context("merging histograms")?;
        self.measured += other.measured;
        self.seconds += other.seconds;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (status, n) in other.measured_statuses {
            *self.measured_statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    pub fn per_second(&self) -> f64 {
        self.measured as f64 / self.seconds.max(1e-9)
    }

    /// Latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.latency.value_at_quantile(q)
    }

    /// Answers with `status` over the whole run.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    fn note_error(&mut self, error: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> Result<Self> {
        let stream =
            tokio::net::TcpStream::connect(address).await.with_context(|| format!("connect {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await.context("connection closed")?;
        let response = self.sender.send_request(request).await.context("send")?;
        let status = response.status();
        let body = response.into_body().collect().await.context("read body")?.to_bytes();
        Ok((status, body))
    }
}

/// A request to `path` with a `host` header, the given extra headers and body.
pub fn request(
    method: hyper::Method,
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder =
        Request::builder().method(method).uri(path).header(hyper::header::HOST, address.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).expect("a valid request")
}

/// A request built once and sent many times: each send clones it, its header values and
/// body shared rather than copied, so building a row's requests costs the generator the
/// same whatever their headers (the forward-auth row's five headers used to be parsed and
/// copied anew for every request, the JSON row's body never was).
pub struct Prepared {
    method: hyper::Method,
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// What [`request`] would build from the same arguments.
    pub fn new(
        method: hyper::Method,
        address: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Self {
        let (parts, _) = request(method, address, path, headers, Bytes::new()).into_parts();
        Self { method: parts.method, uri: parts.uri, headers: parts.headers, body }
    }

    /// A copy to send.
    pub fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Sends the prepared requests round-robin (the `n`-th request is `prepared[n % len]`).
pub fn round_robin(prepared: Vec<Prepared>) -> MakeRequest {
    assert!(!prepared.is_empty(), "at least one request to send");
    Arc::new(move |n| prepared[(n % prepared.len() as u64) as usize].request())
}

/// One request on a fresh connection (for the harness's own admin calls).
pub async fn call(
    address: SocketAddr,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, Bytes)> {
    let mut connection = Connection::open(address).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        connection.send(request(method, address, path, headers, body)),
    )
    .await
    .with_context(|| format!("{path}: no answer within 60 s"))?
}

/// Runs `make` against `address` with `plan.connections` connections for
/// `plan.warmup + plan.measure`.
pub async fn run(address: SocketAddr, plan: Plan, make: MakeRequest) -> Result<Outcome> {
    if plan.connections == 0 {
        bail!("at least one connection is needed");
    }
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let deadline = measure_from + plan.measure;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let (make, counter) = (make.clone(), counter.clone());
        tasks.spawn(connection_loop(address, make, counter, measure_from, deadline));
    }
    let mut total = Outcome::empty(plan.measure);
    while let Some(joined) = tasks.join_next().await {
        let mut part = joined.context("load task")?;
        part.seconds = 0.0;
        total.merge(part)?;
    }
    Ok(total)
}

/// One connection's loop: reconnects after a transport error while time remains.
async fn connection_loop(
    address: SocketAddr,
    make: MakeRequest,
    counter: Arc<AtomicU64>,
    measure_from: Instant,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::empty(Duration::ZERO);
    'connect: while Instant::now() < deadline {
        let mut connection = match tokio::time::timeout_at(deadline.into(), Connection::open(address)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                out.note_error(error);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => break,
        };
        loop {
            let sent = Instant::now();
            if sent >= deadline {
                break 'connect;
            }
            let request = make(counter.fetch_add(1, Ordering::Relaxed));
            // A request still unanswered 30 s after the deadline counts as an error.
            let limit = deadline + Duration::from_secs(30);
            let answer = match tokio::time::timeout_at(limit.into(), connection.send(request)).await {
                Ok(answer) => answer,
                Err(_) => Err(anyhow::anyhow!("no answer within 30 s after the deadline")),
            };
            match answer {
                Ok((status, _body)) => {
                    let micros = sent.elapsed().as_micros() as u64;
                    *out.statuses.entry(status.as_u16()).or_default() += 1;
                    if sent >= measure_from {
                        out.latency.saturating_record(micros.max(1));
                        out.measured += 1;
                        *out.measured_statuses.entry(status.as_u16()).or_default() += 1;
                    }
                }
                Err(error) => {
                    out.note_error(error);
                    continue 'connect;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_prepared_request_is_the_request_it_was_built_from() {
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let headers = [("content-type", "application/json"), ("x-request-id", "gw-7")];
        let body = Bytes::from_static(b"{\"key\":\"k\"}");
        let built = request(hyper::Method::POST, address, "/v1/verify", &headers, body.clone());
        let prepared = Prepared::new(hyper::Method::POST, address, "/v1/verify", &headers, body);
        for sent in [prepared.request(), prepared.request()] {
            assert_eq!(sent.method(), built.method());
            assert_eq!(sent.uri(), built.uri());
            assert_eq!(sent.headers(), built.headers());
            let bytes = sent.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"{\"key\":\"k\"}");
        }
    }
}
