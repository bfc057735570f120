//! The admin and verify APIs' JSON request bodies: every body type the server deserializes
//! (`CreateKey`, `UpdateKey`, `RotateKey`, `Reason`, `SetPolicy`, `LookupBody`), verify's own
//! parser (`verify::parse_request`, the very function the handler calls before its lookup)
//! on the input as a JSON body and as a forward-auth query string, then the field
//! validators the handlers apply, fed from any JSON object. Never panics.
#![no_main]

use keyledger_core::time::parse_duration;
use keyledger_core::{Environment, KeyId, KeyPrefix, Timestamp, WorkspaceId, validate};
use keyledger_server::{audit, keys, verify};
use libfuzzer_sys::fuzz_target;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Uri};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

fuzz_target!(|data: &[u8]| {
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut json = HeaderMap::new();
    json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let _ = verify::parse_request(&Method::POST, &Uri::from_static("/v1/verify"), &json, data, client);
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(uri) = format!("/v1/verify?{query}").parse::<Uri>()
    {
        let _ = verify::parse_request(&Method::GET, &uri, &HeaderMap::new(), b"", client);
    }
    let _ = serde_json::from_slice::<keys::CreateKey>(data);
    let _ = serde_json::from_slice::<keys::UpdateKey>(data);
    let _ = serde_json::from_slice::<keys::RotateKey>(data);
    let _ = serde_json::from_slice::<keys::Reason>(data);
    let _ = serde_json::from_slice::<keys::SetPolicy>(data);
    let _ = serde_json::from_slice::<audit::LookupBody>(data);

    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else { return };
    for (field, value) in &body {
        if let Some(text) = value.as_str() {
            match field.as_str() {
                "name" => drop(validate::name(text)),
                "owner" => drop(validate::owner(text)),
                "reason" => drop(validate::reason(text)),
                "expires_in" | "overlap" | "max_lifetime" => {
                    if let Some(micros) = parse_duration(text) {
                        assert!(micros >= 0, "{text} parsed to a negative duration");
                    }
                }
                "expires_at" | "from" | "to" => {
                    if let Some(at) = Timestamp::parse_rfc3339(text) {
                        let shown = at.to_rfc3339();
                        assert_eq!(Timestamp::parse_rfc3339(&shown), Some(at), "{text} → {shown}");
                    }
                }
                "key_prefix" => drop(text.parse::<KeyPrefix>()),
                "workspace" => drop(text.parse::<WorkspaceId>()),
                "key_id" => {
                    if let Ok(id) = text.parse::<KeyId>() {
                        assert_eq!(id.to_string().parse::<KeyId>().ok(), Some(id));
                    }
                }
                "environment" => drop(text.parse::<Environment>()),
                _ => {}
            }
        }
        match field.as_str() {
            "scopes" | "resources" => {
                if let Some(items) = strings(value) {
                    if validate::scopes(&items).is_ok() || validate::resources(&items).is_ok() {
                        let normal = validate::normalize(items.clone());
                        assert!(normal.windows(2).all(|w| w[0] < w[1]));
                    }
                }
            }
            "metadata" => {
                if let Ok(canonical) = validate::metadata(value) {
                    assert_eq!(serde_json::from_str::<Value>(&canonical).ok().as_ref(), Some(value));
                }
            }
            _ => {}
        }
    }
});
