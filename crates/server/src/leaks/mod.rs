//! Leak reports from outside (docs/leaks.md): `POST /v1/leaks/github`, GitHub's secret
//! scanning partner endpoint (here), and `POST /v1/leaks/report`, anyone's ([`report`]).
//!
//! A report is believed only when GitHub's signature over the raw body verifies with a key
//! of the configured keys file ([`github_keys`]); otherwise nothing is recorded (401).
//! Each token that passes the checksum and is (or was) a key is recorded by a
//! `leak_reported` event and its workspace's `on_leak` applied, all in one durable batch
//! before the answer ([`keyledger_ledger::leaks`]). Tokens are only hashed (with the
//! pepper to find the key, with SHA-256 for GitHub's feedback); never stored, logged or
//! echoed. Bounds: [`MAX_TOKENS`] tokens, a body of [`GITHUB_BODY_LIMIT`].

pub mod github_keys;
pub mod report;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use keyledger_core::{LeakReporter, Secret};
use keyledger_ledger::leaks::LeakReportIn;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use zeroize::Zeroize;

/// Most tokens per report.
pub const MAX_TOKENS: usize = 1000;
/// Largest body of `POST /v1/leaks/github` (GitHub batches up to 1000 matches).
pub const GITHUB_BODY_LIMIT: usize = 1024 * 1024;

/// One match GitHub found.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct GithubMatch {
    /// The matched string (only hashed, never kept).
    token: String,
    /// GitHub's name of the secret type.
    #[serde(rename = "type")]
    token_type: String,
    /// Where it was found.
    #[serde(default)]
    url: Option<String>,
    /// `content`, `commit`, `pull_request_description`, …
    #[serde(default)]
    source: Option<String>,
}

impl Drop for GithubMatch {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

/// GitHub's feedback on one match.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GithubFeedback {
    /// SHA-256 (hex) of the token, as GitHub's feedback format asks (never the token).
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` (the token is or was a keyledger key) or `false_positive`.
    pub label: String,
}

#[utoipa::path(
    post,
    path = "/v1/leaks/github",
    operation_id = "githubSecretScanning",
    summary = "GitHub secret scanning partner report",
    tag = "leaks",
    description = concat!(
        "GitHub's secret scanning partner program posts the keys it found in public places. ",
        "The body is signed by GitHub (`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`: ",
        "base64 DER ECDSA P-256 SHA-256) and checked against `serve --github-scanning-keys`. Each ",
        "token that is (or was) a key gets a `leak_reported` event and its workspace's `on_leak`; ",
        "a replay of the same (key, url, source) is recorded once. Up to 1000 tokens."
    ),
    request_body = Vec<GithubMatch>,
    responses(
        (status = 200, description = "Feedback, one entry per token, in order", body = Vec<GithubFeedback>),
        (status = 400, description = "not a list of matches, or more than 1000 (invalid_request)", body = crate::schema::ErrorBody),
        (status = 401, description = "signature missing or invalid, or unknown key identifier (unauthorized)", body = crate::schema::ErrorBody),
        (status = 404, description = "the endpoint is not configured (not_found)", body = crate::schema::ErrorBody),
        (status = 503, description = "the reports cannot be appended, or (PostgreSQL store) the database cannot be reached to look the tokens up (unavailable)", body = crate::schema::ErrorBody)
    )
)]
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<GithubFeedback>>, ApiError> {
    let Some(keys) = state.github_keys.as_ref() else {
        return Err(ApiError::not_found("GitHub secret scanning is not configured"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    keys.verify(header("github-public-key-identifier"), header("github-public-key-signature"), &body)
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))?;
    let matches: Vec<GithubMatch> = serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid("body", "must be a JSON array of {token, type, url, source}"))?;
    drop(body);
    if matches.len() > MAX_TOKENS {
        return Err(ApiError::invalid("body", "must hold at most 1000 matches"));
    }
    let engine = &state.engine;
    // Keys issued on another node are looked up too (503 if the database cannot be
    // reached: GitHub sends the report again).
    engine.follow().await?;
    let mut reports = Vec::new();
    let mut feedback = Vec::with_capacity(matches.len());
    for found in &matches {
        let key = Secret::check(&found.token).ok().and_then(|_| engine.find_by_secret(&found.token));
        if let Some(key) = &key {
            reports.push(LeakReportIn {
                key_id: key.key_id,
                // Recorded for ever: never with a secret in it (docs/security.md).
                url: found.url.as_deref().map(|url| crate::redact::words(url).into_owned()),
                source: found.source.as_deref().map(|source| crate::redact::words(source).into_owned()),
            });
        }
        feedback.push(GithubFeedback {
            token_hash: hex::encode(sha2::Sha256::digest(found.token.as_bytes())),
            token_type: found.token_type.clone(),
            label: if key.is_some() { "true_positive" } else { "false_positive" }.into(),
        });
    }
    drop(matches); // zeroes the tokens
    if !reports.is_empty() {
        engine.report_leaks(LeakReporter::Github, reports, false).await?;
    }
    Ok(Json(feedback))
}
