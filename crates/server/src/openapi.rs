//! The OpenAPI 3 document served at `/openapi.json`, generated from the code with utoipa.
//!
//! This module only assembles the document: handlers carry `#[utoipa::path]` annotations and
//! the bodies they serialise are the types of [`crate::schema`], so nothing but the router
//! depends on it. Tests keep the document true: every `.route(` of the router must be in it,
//! and real responses are validated against its schemas.

use crate::schema::*;
use serde_json::Value;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

/// Answers every operation may give whatever its annotation says: 431 (URI and headers
/// over the limit, see [`crate::throttle`]); 429 and 503 for admin operations (failed admin
/// authentications throttled per source; with the PostgreSQL store, a database out of
/// reach, since an admin key is authenticated against its state); and, for operations with
/// a JSON request body, the framework's rejections of it (400, 413, 415 without
/// `Content-Type: application/json`, 422 for a body that does not match the schema). Found
/// missing by schemathesis.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let always = [("431", error("the URI and headers exceed the limit (invalid_request)"))];
        let with_body = [
            ("400", error("a field is invalid; the message names it (invalid_request)")),
            ("413", error("the body exceeds the limit (payload_too_large)")),
            ("415", error("the body is not `Content-Type: application/json` (invalid_request)")),
            ("422", error("the body does not match the schema (invalid_request)")),
        ];
        let admin_answers = [
            (
                "429",
                error(
                    "too many failed admin authentications from this address (rate_limited); see Retry-After",
                ),
            ),
            (
                "503",
                error(
                    "the log cannot be written, or (PostgreSQL store) the database cannot be reached to \
                     authenticate the admin key against its current state (unavailable)",
                ),
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                let extra = if operation.request_body.is_some() { &with_body[..] } else { &[] };
                // Operations that take an admin key: under the document's security, or with
                // a list of their own naming a scheme (not only the public `{}`).
                let takes_admin_key = operation.security.as_ref().is_none_or(|list| {
                    list.iter().any(|requirement| *requirement != SecurityRequirement::default())
                });
                let admin = if takes_admin_key { &admin_answers[..] } else { &[] };
                for (status, response) in always.iter().chain(extra).chain(admin) {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// `POST /v1/verify` takes a JSON body (JSON mode) or none (forward-auth mode, see
/// docs/api.md "Verify"). utoipa writes an optional body as `oneOf: [null, …]`, which says a
/// JSON `null` is accepted (it is not, and generated clients then send it); so the body is
/// annotated as required and made optional here.
struct OptionalVerifyBody;

impl Modify for OptionalVerifyBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = openapi
            .paths
            .paths
            .get_mut("/v1/verify")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut());
        if let Some(body) = body {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("keyledger API key").build(),
            ),
        );
        // Only `POST /oauth2/introspect` takes it: an admin key as the password, any user.
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "keyledger", description = "A self-hosted, tamper-evident ledger of API keys (contract v1)."),
    modifiers(&Security, &CommonResponses, &OptionalVerifyBody),
    security(("bearer" = []), ("x_api_key" = [])),
    paths(
        crate::health_doc,
        crate::metrics_doc,
        crate::openapi_doc,
        crate::keys::create,
        crate::keys::list,
        crate::keys::show,
        crate::keys::update,
        crate::keys::rotate,
        crate::keys::revoke,
        crate::keys::disable,
        crate::keys::enable,
        crate::credits::top_up,
        crate::keys::revoke_all,
        crate::import::import,
        crate::keys::get_policy,
        crate::keys::put_policy,
        crate::webhooks::set,
        crate::webhooks::show,
        crate::webhooks::disable,
        crate::webhooks::deliveries,
        crate::verify::verify_get_doc,
        crate::verify::verify_post_doc,
        crate::verify::verify_suffix_doc,
        crate::verify::verify_suffix_post_doc,
        crate::introspect::introspect,
        crate::integrity::checkpoint,
        crate::integrity::public_key,
        crate::integrity::inclusion,
        crate::integrity::consistency,
        crate::entries::entry,
        crate::tiles::checkpoint_doc,
        crate::tiles::tile_doc,
        crate::audit::key_events,
        crate::audit::compromise,
        crate::audit::request,
        crate::audit::sources,
        crate::audit::sources_query,
        crate::audit::active_keys,
        crate::audit::hygiene,
        crate::audit::lookup,
        crate::bulk_lookup::lookup_bulk,
        crate::leaks::github,
        crate::leaks::report::report,
        crate::export::export,
        crate::reports::compliance,
        crate::console::console_doc,
        crate::console::console_slash_doc,
        crate::console::console_file_doc,
    ),
    components(schemas(
        ErrorBody,
        ComplianceReport,
        KeyView,
        IssuedKey,
        KeyList,
        crate::import::ImportBody,
        crate::import::ImportEntry,
        crate::import::ForeignHashBody,
        crate::import::ImportResult,
        Rotation,
        RevokedAll,
        PolicyView,
        WebhookView,
        WebhookWithSecret,
        WebhookAttempt,
        WebhookDeliveries,
        Verified,
        Introspection,
        crate::introspect::IntrospectForm,
        CheckpointView,
        ForkAlarmView,
        WitnessStatusView,
        PublicKeyView,
        ProofView,
        Health,
        EventContext,
        LimitSpendView,
        EventKindName,
        EventView,
        EventList,
        ValueStats,
        PathCount,
        ReportWindow,
        UseCounts,
        AfterRevocation,
        CompromiseReport,
        RequestTrace,
        SourceKey,
        SourceKeys,
        KeyAtInstant,
        ActiveKeys,
        Hygiene,
        LookupAnswer,
        crate::bulk_lookup::BulkLookupBody,
        crate::bulk_lookup::BulkLookupAnswer,
        crate::bulk_lookup::BulkLookupResult,
        crate::leaks::GithubMatch,
        crate::leaks::GithubFeedback,
        crate::leaks::report::PublicReport,
        crate::leaks::report::ReportReceived,
    ))
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}
