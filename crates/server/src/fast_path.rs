//! The lean path of the routes a gateway or balancer calls on every request: `/v1/verify`,
//! `/v1/verify/{*path}` (any method) and `GET /healthz`.
//!
//! Why it exists: on these routes the tower stack around the router (the request-id
//! `from_fn` layer, the timeout and error-handling layers, the body-limit layer, the router's
//! own dispatch and boxed services) cost as much as the verification itself
//! (docs/benchmarks.md, "Third pass"). The accept loop (`crate::transport`) hands these
//! requests here instead, and this module does the same bounded work in straight-line code:
//!
//! - keyledger's request id in the extensions and in the `request-id` header, and every
//!   error answer rewritten to docs/api.md's error body with that id (the very code of the
//!   layer: [`crate::request_id::begin`] and [`crate::request_id::finish`]);
//! - the header size cap (431) before anything else;
//! - the request timeout (408 with the same body as the router's timeout layer);
//! - the body read under the configured limit (413), as the verify handler always did;
//! - the request metrics of the same names and labels (`route` is the route template),
//!   through handles registered once per route, method and 200 status ([`HotMetrics`]); any
//!   other status goes through [`crate::metrics::record_request`] as before;
//! - the access line, at `debug` for a success and `info` otherwise, as in the layer.
//!
//! Everything else (and the TLS listener, which runs the router through axum-server) goes
//! through the router, whose layers do the same for these routes: in-process tests of the
//! router see the same answers as the binary.

use crate::AppState;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use metrics::{Counter, Histogram};
use std::sync::OnceLock;
use std::time::Instant;

/// A route served here. Its template is the router's, so metrics and logs name it alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Healthz,
    Verify,
    VerifySuffix,
}

impl Route {
    /// The route of a request this module serves, or `None` for the router. Matches exactly
    /// what the router would send to the same handler: `GET /healthz`, `/v1/verify` and any
    /// non-empty path under `/v1/verify/`, whatever the method.
    pub(crate) fn of(method: &Method, path: &str) -> Option<Self> {
        match path {
            "/healthz" if method == Method::GET => Some(Self::Healthz),
            "/v1/verify" => Some(Self::Verify),
            _ => path.strip_prefix("/v1/verify/").filter(|rest| !rest.is_empty()).map(|_| Self::VerifySuffix),
        }
    }

    /// The router's template of this route (the `route` label and the access line's).
    pub(crate) const fn template(self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::Verify => "/v1/verify",
            Self::VerifySuffix => "/v1/verify/{*path}",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Serves `request` on `route` (one [`Route::of`] returned for it).
pub(crate) async fn serve(state: &AppState, route: Route, mut request: Request<Incoming>) -> Response {
    let started = Instant::now();
    let id = crate::request_id::begin(&mut request);
    let method = request.method().clone();
    let uri = request.uri().clone();
    let request = request.map(Body::new);
    let response = match crate::throttle::header_size_refusal(&request, state.config.max_header_bytes) {
        Some(refused) => refused,
        None => {
            let handled = async {
                match route {
                    Route::Healthz => crate::healthz(axum::extract::State(state.clone()), request).await,
                    Route::Verify | Route::VerifySuffix => {
                        let (parts, body) = request.into_parts();
                        crate::verify::verify_parts(state, parts, body).await
                    }
                }
            };
            match tokio::time::timeout(state.config.request_timeout, handled).await {
                Ok(response) => response,
                Err(_) => crate::timed_out().into_response(),
            }
        }
    };
    crate::request_id::finish(response, id, &method, uri.path(), route.template(), started, |r, m, s, t| {
        record(route, r, m, s, t)
    })
}

/// The request metrics of this module's routes answered 200 by GET or POST, registered on
/// first use: a counter increment and a histogram record per request, no label strings, no
/// map lookup, no lock. Bounded: 3 routes × 2 methods.
struct HotMetrics {
    seconds: Histogram,
    requests: Counter,
}

fn record(route: Route, template: &str, method: &Method, status: u16, seconds: f64) {
    static HOT: [[OnceLock<HotMetrics>; 2]; 3] = [const { [const { OnceLock::new() }; 2] }; 3];
    let slot = match *method {
        Method::GET => 0,
        Method::POST => 1,
        _ => return crate::metrics::record_request(template, method, status, seconds),
    };
    if status != 200 {
        return crate::metrics::record_request(template, method, status, seconds);
    }
    let hot = HOT[route.index()][slot].get_or_init(|| HotMetrics {
        seconds: metrics::histogram!("keyledger_http_request_seconds", "route" => template.to_owned()),
        requests: metrics::counter!(
            "keyledger_http_requests_total",
            "route" => template.to_owned(),
            "method" => crate::metrics::method_label(method),
            "status" => "200"
        ),
    });
    hot.requests.increment(1);
    hot.seconds.record(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_the_router_gives_these_handlers_take_the_lean_path() {
        assert_eq!(Route::of(&Method::GET, "/healthz"), Some(Route::Healthz));
        assert_eq!(Route::of(&Method::POST, "/healthz"), None, "the router's 405");
        assert_eq!(Route::of(&Method::HEAD, "/healthz"), None);
        assert_eq!(Route::of(&Method::GET, "/healthz/"), None);
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            assert_eq!(Route::of(&method, "/v1/verify"), Some(Route::Verify));
            assert_eq!(Route::of(&method, "/v1/verify/orders/7"), Some(Route::VerifySuffix));
        }
        assert_eq!(Route::of(&Method::GET, "/v1/verify/"), None);
        assert_eq!(Route::of(&Method::GET, "/v1/verifyx"), None);
        assert_eq!(Route::of(&Method::GET, "/v1/verify-all"), None);
        assert_eq!(Route::of(&Method::GET, "/metrics"), None);
    }
}
