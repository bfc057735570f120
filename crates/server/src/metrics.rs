//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its Prometheus
//! exporter.
//!
//! Recorded: HTTP requests by route template and status (never the concrete path, which
//! would carry key ids), verifications by outcome and reason, unknown/malformed key
//! attempts, the writer's batch sizes, write/fsync latencies and events per fsync, log size
//! and checkpoint age. Never a secret, hash or hint.
//!
//! Every label value comes from a closed set, so no caller can grow `/metrics`: a route is
//! a route template or `unmatched`, a method one of the nine standard methods or `other`,
//! a status a code of 100 to 999, and every other label a `&'static str` of this crate.
//! Every metric has HELP text (see [`describe`]), so `promtool check metrics` accepts the
//! page. The closed sets are listed in docs/operations.md (Metrics).

use crate::AppState;
use crate::outcome::Outcome;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use keyledger_core::Timestamp;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{OnceLock, RwLock};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("keyledger_log_batch_events".into()), &sizes)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("keyledger_log_events_per_fsync".into()), &sizes)
                })
                .ok()?
                .install_recorder()
                .ok()
                .inspect(|_| describe())
        })
        .as_ref()
}

/// The HELP text of every metric keyledger records, those of `keyledger-log`'s writer too
/// (a description belongs to the recorder, which is installed here). A metric without one
/// fails `promtool check metrics`.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "keyledger_http_requests_total",
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        "keyledger_http_request_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template"
    );
    describe_counter!("keyledger_verifications_total", "Verifications of known keys, by outcome and reason");
    describe_counter!(
        "keyledger_verify_rejected_total",
        "Verifications of keys that matched nothing (malformed or unknown); nothing appended"
    );
    describe_gauge!("keyledger_log_events", "Events in the log");
    describe_counter!("keyledger_log_fsyncs_total", "fsyncs of the log");
    describe_counter!("keyledger_log_batches_total", "Batches written to the log");
    describe_counter!("keyledger_log_checkpoints_total", "Checkpoints signed");
    describe_counter!(
        "keyledger_log_handoffs_skipped_total",
        "Durable batches not handed to the projector because its queue was full"
    );
    describe_counter!("keyledger_webhook_deliveries_total", "Webhook deliveries, by outcome");
    describe_counter!(
        "keyledger_webhook_failed_attempts_total",
        "Webhook attempts answered non-2xx or not answered"
    );
    describe_counter!(
        "keyledger_witness_cosignatures_total",
        "Valid witness cosignatures received, by witness"
    );
    describe_counter!(
        "keyledger_witness_submission_failures_total",
        "Failed checkpoint submissions to witnesses, by witness and class"
    );
    describe_counter!("keyledger_witness_fork_alarms_total", "Fork alarms raised, by witness");
    describe_gauge!("keyledger_log_healthy", "1, or 0 while the log writer is poisoned");
    describe_gauge!("keyledger_checkpoint_age_seconds", Unit::Seconds, "Age of the latest checkpoint");
    describe_gauge!("keyledger_checkpoint_size", "Tree size of the latest checkpoint");
    describe_histogram!("keyledger_log_write_seconds", Unit::Seconds, "Latency of a batch write to the log");
    describe_histogram!("keyledger_log_batch_events", "Events per batch written to the log");
    describe_histogram!("keyledger_log_fsync_seconds", Unit::Seconds, "Latency of an fsync of the log");
    describe_histogram!("keyledger_log_events_per_fsync", "Events made durable by one fsync");
    describe_counter!(
        "keyledger_log_failures_total",
        "Failed log writes, fsyncs or checkpoints (each poisons the writer)"
    );
    describe_counter!(
        "keyledger_log_recoveries_total",
        "Recoveries of the log writer after which appends were accepted again"
    );
}

/// The `method` label: a standard method by name, anything else (hyper accepts any token
/// as an extension method) as `other`.
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    STANDARD.iter().find(|(m, _)| m == method).map_or("other", |(_, name)| name)
}

/// The route template a request matched, carried out to the outer middleware.
#[derive(Clone)]
pub struct RouteTemplate(pub MatchedPath);

/// Inner (route) layer: remembers which route template matched.
pub async fn remember_route(request: Request, next: Next) -> Response {
    let template = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(template) = template {
        response.extensions_mut().insert(RouteTemplate(template));
    }
    response
}

/// The request metrics of one route template, registered once (label strings are built
/// and looked up in the registry only the first time a route, method and status is seen).
/// Bounded: routes are the router's templates and `unmatched`, methods [`method_label`]'s
/// ten values, statuses 100 to 999 (all `http::StatusCode` can hold).
struct RouteMetrics {
    seconds: Histogram,
    requests: HashMap<(&'static str, u16), Counter>,
}

static ROUTES: OnceLock<RwLock<HashMap<Box<str>, RouteMetrics>>> = OnceLock::new();

/// Counts a finished request.
pub fn record_request(route: &str, method: &Method, status: u16, seconds: f64) {
    let method = method_label(method);
    let routes = ROUTES.get_or_init(Default::default);
    {
        let known = routes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(metrics) = known.get(route)
            && let Some(counter) = metrics.requests.get(&(method, status))
        {
            counter.increment(1);
            metrics.seconds.record(seconds);
            return;
        }
    }
    let mut known = routes.write().unwrap_or_else(|e| e.into_inner());
    let metrics = known.entry(route.into()).or_insert_with(|| RouteMetrics {
        seconds: metrics::histogram!("keyledger_http_request_seconds", "route" => route.to_owned()),
        requests: HashMap::new(),
    });
    let counter = metrics.requests.entry((method, status)).or_insert_with(|| {
        let labels =
            [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
        metrics::counter!("keyledger_http_requests_total", &labels)
    });
    counter.increment(1);
    metrics.seconds.record(seconds);
}

/// Counts a verification by its outcome: a known key's in `keyledger_verifications_total`
/// by outcome (`allowed`, `denied`, `throttled`) and reason (`ok`, a deny reason code,
/// `rate_limited`), a key that matched nothing in `keyledger_verify_rejected_total` by
/// reason (`malformed`, `unknown`). Every label is a `&'static str`, never a caller's text.
pub(crate) fn record_verification(outcome: &Outcome) {
    static ALLOWED: OnceLock<Counter> = OnceLock::new();
    match outcome {
        Outcome::Allowed => ALLOWED
            .get_or_init(|| metrics::counter!("keyledger_verifications_total", "outcome" => "allowed", "reason" => "ok"))
            .increment(1),
        Outcome::Denied(reason) => {
            metrics::counter!("keyledger_verifications_total", "outcome" => "denied", "reason" => *reason)
                .increment(1)
        }
        Outcome::Throttled => {
            metrics::counter!("keyledger_verifications_total", "outcome" => "throttled", "reason" => "rate_limited")
                .increment(1)
        }
        Outcome::Malformed => rejected("malformed").increment(1),
        Outcome::Unknown => rejected("unknown").increment(1),
    }
}

/// `keyledger_verify_rejected_total{reason}`.
fn rejected(reason: &'static str) -> Counter {
    metrics::counter!("keyledger_verify_rejected_total", "reason" => reason)
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse;
    let engine = &state.engine;
    let stats = engine.writer_stats();
    metrics::gauge!("keyledger_log_events").set(engine.log().len() as f64);
    metrics::counter!("keyledger_log_fsyncs_total").absolute(stats.fsyncs.load(Ordering::Relaxed));
    metrics::counter!("keyledger_log_batches_total").absolute(stats.batches.load(Ordering::Relaxed));
    metrics::counter!("keyledger_log_checkpoints_total").absolute(stats.checkpoints.load(Ordering::Relaxed));
    metrics::counter!("keyledger_log_handoffs_skipped_total")
        .absolute(stats.handoffs_skipped.load(Ordering::Relaxed));
    // Listed from the first page on, at 0 until a key matches nothing.
    rejected("malformed").increment(0);
    rejected("unknown").increment(0);
    let webhooks = engine.webhook_counters();
    metrics::counter!("keyledger_webhook_deliveries_total", "outcome" => "delivered")
        .absolute(webhooks.delivered.load(Ordering::Relaxed));
    metrics::counter!("keyledger_webhook_deliveries_total", "outcome" => "given_up")
        .absolute(webhooks.given_up.load(Ordering::Relaxed));
    metrics::counter!("keyledger_webhook_deliveries_total", "outcome" => "dropped")
        .absolute(webhooks.dropped.load(Ordering::Relaxed));
    metrics::counter!("keyledger_webhook_failed_attempts_total")
        .absolute(webhooks.failed_attempts.load(Ordering::Relaxed));
    // Witness labels are names from the server's configuration only (bounded).
    for witness in engine.witness_counters() {
        let name = witness.witness;
        metrics::counter!("keyledger_witness_cosignatures_total", "witness" => name.clone())
            .absolute(witness.cosignatures);
        metrics::counter!("keyledger_witness_fork_alarms_total", "witness" => name.clone())
            .absolute(witness.fork_alarms);
        for (class, count) in witness.failures {
            metrics::counter!("keyledger_witness_submission_failures_total", "witness" => name.clone(), "class" => class)
                .absolute(count);
        }
    }
    metrics::gauge!("keyledger_log_healthy").set(if engine.is_healthy() { 1.0 } else { 0.0 });
    if let Some(checkpoint) = engine.log().latest_checkpoint() {
        let age = (Timestamp::now().micros() - checkpoint.timestamp.micros()) as f64 / 1e6;
        metrics::gauge!("keyledger_checkpoint_age_seconds").set(age);
        metrics::gauge!("keyledger_checkpoint_size").set(checkpoint.size as f64);
    }
    let text = handle().map(|h| h.render()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_label_is_a_standard_method_or_other() {
        for name in ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] {
            let method = Method::from_bytes(name.as_bytes()).expect("method");
            assert_eq!(method_label(&method), name);
        }
        for name in ["get", "BREW", "PROPFIND", "ZRCZWNIZLSOWYSACLFREY"] {
            let method = Method::from_bytes(name.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "other", "{name}");
        }
    }
}
