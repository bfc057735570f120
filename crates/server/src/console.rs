//! The web console (docs/decisions/0005-console-plain-js.md): a small plain-JS single page,
//! embedded in the binary at build time and served at `/console` (the page) and `/console/{file}`
//! (its assets).
//!
//! The console holds no power of its own: it signs in with an admin key (kept in the
//! tab's `sessionStorage` only) and calls the public admin API with
//! `Authorization: Bearer`, same-origin, so it can do nothing that key cannot. Every
//! response carries a strict Content-Security-Policy (no inline script or style, no
//! third-party origin, no framing) and the usual hardening headers. Auth is a header,
//! never a cookie, so cross-site request forgery has nothing to ride on.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../console/index.html");
const APP_JS: &str = include_str!("../console/app.js");
const APP_CSS: &str = include_str!("../console/app.css");

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = concat!(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; ",
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
);

/// The embedded asset named `file`, with its content type.
fn asset(file: &str) -> Option<(&'static str, &'static str)> {
    match file {
        "" | "index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

fn hardened(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Revalidate every time: a new binary must never run with an old script.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    );
    response
}

/// `GET /console`: the page.
pub async fn index() -> Response {
    hardened(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/{file}`: an embedded asset (`app.js`, `app.css`), or 404.
pub async fn file(Path(file): Path<String>) -> Response {
    match asset(&file) {
        Some((content_type, body)) => hardened(StatusCode::OK, content_type, body),
        None => hardened(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "no such console file\n"),
    }
}

/// The web console's page (documentation of `/console`).
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "getConsole",
    summary = "Web console",
    tag = "console",
    security(()),
    description = concat!(
        "The web console: a single HTML page (assets embedded in the binary). It signs in with ",
        "an admin key held in the tab's sessionStorage and calls this API with `Authorization: ",
        "Bearer`. Served with a strict Content-Security-Policy, `X-Frame-Options: DENY`, ",
        "`X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`."
    ),
    responses(
        (status = 200, description = "The console's HTML page", content_type = "text/html", body = String)
    )
)]
pub fn console_doc() {}

/// The same page at `/console/` (documentation only).
#[utoipa::path(
    get,
    path = "/console/",
    operation_id = "getConsoleWithSlash",
    summary = "Web console (trailing slash)",
    tag = "console",
    security(()),
    description = "The web console, as at `/console`.",
    responses(
        (status = 200, description = "The console's HTML page", content_type = "text/html", body = String)
    )
)]
pub fn console_slash_doc() {}

/// An asset of the web console (documentation of `/console/{file}`).
#[utoipa::path(
    get,
    path = "/console/{file}",
    operation_id = "getConsoleAsset",
    summary = "Web console asset",
    tag = "console",
    security(()),
    description = concat!(
        "A static asset of the web console (`app.js`, `app.css`), with the same security headers ",
        "as the page."
    ),
    params(
        ("file" = String, Path, description = "Asset name: `app.js` or `app.css`")
    ),
    responses(
        (status = 200, description = "The asset (text/javascript or text/css)", content_type = "text/plain", body = String),
        (status = 404, description = "No such asset", body = crate::schema::ErrorBody)
    )
)]
pub fn console_file_doc() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_no_inline_script_or_style() {
        assert!(asset("app.js").is_some() && asset("app.css").is_some() && asset("nope").is_none());
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<style"), "inline <style> would be blocked by the CSP");
        assert!(!html.contains("style="), "inline style attributes would be blocked by the CSP");
        let handler = html.match_indices(" on").any(|(at, _)| {
            let name: String = html[at + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && html[at + 3 + name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handlers would be blocked by the CSP");
        for chunk in html.split("<script").skip(1) {
            assert!(chunk.trim_start().starts_with("type=\"module\" src=") || chunk.contains(" src="));
            assert!(chunk.split_once('>').is_some_and(|(_, rest)| rest.starts_with("</script>")));
        }
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"));
        assert!(!APP_JS.contains("insertAdjacentHTML") && !APP_JS.contains("document.write"));
        assert!(!APP_JS.contains("localStorage"), "the admin key lives in sessionStorage only");
        assert!(INDEX_HTML.len() + APP_JS.len() + APP_CSS.len() < 200 * 1024);
    }
}
