//! Envoy's gRPC external authorization, `envoy.service.auth.v3.Authorization/Check`, served
//! on its own listener (`serve --grpc-listen ADDR`, off by default).
//!
//! Why it exists: Envoy's HTTP ext_authz cannot carry a route's requirements to keyledger,
//! but its gRPC form sends each route's `context_extensions`, so one Envoy (or Istio, with a
//! CUSTOM `AuthorizationPolicy` provider) can require different scopes on different routes
//! (docs/gateways.md shows the tested configuration).
//!
//! What it guarantees: a check is a verification like `/v1/verify`'s, decided by the
//! engine's verify, so revocation and every verify-time control hold, each check of a known
//! key appends exactly one `used` or `denied` event, it counts in the verification metrics
//! by outcome, and the failure throttle (when configured) counts its failures as the HTTP
//! path's. The translation of Envoy's messages is in [`check`]. Everything is bounded: a
//! check message by [`MAX_CHECK_BYTES`], HTTP/2 headers by `ServerConfig::max_header_bytes`,
//! each check by `ServerConfig::request_timeout`, and each connection's concurrent checks
//! by [`MAX_CONCURRENT_STREAMS`].

mod check;

use crate::AppState;
use crate::error::ApiError;
use crate::outcome::Outcome;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use keyledger_core::{RequestId, Timestamp};
use keyledger_ledger::VerifyOutcome;

/// Largest `CheckRequest` accepted, in bytes: the original request's headers and
/// attributes (Envoy sends no body unless `with_request_body` is configured).
pub const MAX_CHECK_BYTES: usize = 1 << 20;

/// Concurrent checks on one HTTP/2 connection (Envoy multiplexes its checks on a few).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The `Authorization` service over the engine.
struct ExtAuthz {
    state: AppState,
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(decide(&self.state, request.get_ref()).await))
    }
}

/// Decides one check: parse, throttle, verify, answer.
async fn decide(state: &AppState, request: &CheckRequest) -> CheckResponse {
    let request_id = RequestId::generate(Timestamp::now().millis());
    let id = request_id.to_string();
    let check = match check::parse(request) {
        Ok(check) => check,
        Err(refusal) => return check::denied(&refusal, &id, None),
    };
    if let (Some(throttle), Some(source)) = (&state.throttle, check.source)
        && let Err(retry_after) = throttle.check(source)
    {
        crate::metrics::record_verification(&Outcome::Throttled);
        let error = ApiError::new(
            crate::error::ErrorCode::RateLimited,
            format!("too many failed verifications from this address; retry after {retry_after} s"),
        );
        return check::denied(&error, &id, Some(retry_after.max(1)));
    }
    let source = check.source;
    let verified = state.engine.verify(request_id, &check.key, check.wants, check.context).await;
    let (outcome, response) = match verified {
        // The log cannot be written: no verification took place; fail closed (503).
        Err(error) => return check::denied(&ApiError::from(error), &id, None),
        Ok(VerifyOutcome::Malformed) => (Outcome::Malformed, check::denied(&unknown_key(), &id, None)),
        Ok(VerifyOutcome::Unknown) => (Outcome::Unknown, check::denied(&unknown_key(), &id, None)),
        Ok(VerifyOutcome::Known(verdict)) => {
            let statuses = verdict.ratelimits.as_deref().map_or(&[][..], Vec::as_slice);
            let (outcome, response) = match &verdict.outcome {
                Ok(()) => (Outcome::Allowed, check::allowed(&verdict.key, &id)),
                Err(reason) => {
                    let now = keyledger_core::Timestamp::now();
                    let retry = match reason {
                        keyledger_core::DenyReason::RateLimited(name) => {
                            Some(crate::ratelimit_headers::retry_after(name, statuses, now))
                        }
                        _ => None,
                    };
                    let error = crate::verify::deny_error(reason.clone());
                    (Outcome::Denied(reason.code()), check::denied(&error, &id, retry))
                }
            };
            (outcome, check::with_ratelimit_headers(response, statuses))
        }
    };
    crate::metrics::record_verification(&outcome);
    if let (Some(throttle), Some(source), true) = (&state.throttle, source, outcome.is_failure()) {
        throttle.charge(source);
    }
    response
}

fn unknown_key() -> ApiError {
    ApiError::new(crate::error::ErrorCode::Unauthorized, "missing, malformed or unknown API key")
}

/// Serves the gRPC ext_authz service on `listener` until `shutdown` resolves (the engine is
/// shared with, and stopped by, the HTTP server).
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let header_bytes = u32::try_from(state.config.max_header_bytes).unwrap_or(u32::MAX);
    tonic::transport::Server::builder()
        .timeout(state.config.request_timeout)
        .http2_max_header_list_size(Some(header_bytes))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .add_service(AuthorizationServer::new(ExtAuthz { state }).max_decoding_message_size(MAX_CHECK_BYTES))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
