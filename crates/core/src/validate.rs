//! Field rules of keys and workspace policies (docs/api.md, "Keys: the secret and its
//! fields"), shared by every command that takes the fields.
//!
//! Each check returns a [`FieldError`] naming the offending field, which the API turns into
//! `invalid_request` with that name. The bounds here are the ones `/openapi.json` documents
//! (`crates/server/tests/openapi.rs` checks that the server takes exactly those).

use serde_json::Value;

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// What an error message calls a value sent in a field of names (scopes, notification
/// types): the value itself, quoted, if it could be such a name (a typo worth showing: 1 to
/// 40 lowercase letters, `:`, `_`, `-`, `.`, `*`), else `a value`: it may be a secret pasted
/// into the wrong field, and an error message never repeats one (docs/security.md, "Secrets
/// in bodies").
pub fn shown_name(text: &str) -> String {
    let plausible = (1..=40).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b":_-.*".contains(&b));
    if plausible { format!("`{text}`") } else { "a value".to_owned() }
}

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_SCOPES: usize = 64;
pub const MAX_SCOPE_CHARS: usize = 128;
pub const MAX_RESOURCES: usize = 256;
pub const MAX_RESOURCE_CHARS: usize = 256;
pub const MAX_OWNER_CHARS: usize = 200;
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_REASON_CHARS: usize = 500;
/// The smallest `max_active_keys` a policy may set (0 would forbid every key: unset it).
pub const MIN_ACTIVE_KEYS_LIMIT: u32 = 1;
/// The largest `max_active_keys` a policy may set: the largest `int32`, so that every
/// client generated from the OpenAPI document can hold it.
pub const MAX_ACTIVE_KEYS_LIMIT: u32 = i32::MAX as u32;

fn no_control_chars(field: &str, text: &str) -> Result<(), FieldError> {
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

pub fn name(text: &str) -> Result<(), FieldError> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || text.trim().is_empty() {
        return Err(FieldError::new("name", format!("must be 1 to {MAX_NAME_CHARS} characters")));
    }
    no_control_chars("name", text)
}

fn string_list(field: &str, items: &[String], max_items: usize, max_chars: usize) -> Result<(), FieldError> {
    if items.len() > max_items {
        return Err(FieldError::new(field, format!("may hold at most {max_items} entries")));
    }
    for item in items {
        let chars = item.chars().count();
        if chars == 0 || chars > max_chars || item.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(FieldError::new(
                field,
                format!("entries must be 1 to {max_chars} characters without spaces or control characters"),
            ));
        }
    }
    Ok(())
}

pub fn scopes(items: &[String]) -> Result<(), FieldError> {
    string_list("scopes", items, MAX_SCOPES, MAX_SCOPE_CHARS)
}

pub fn resources(items: &[String]) -> Result<(), FieldError> {
    string_list("resources", items, MAX_RESOURCES, MAX_RESOURCE_CHARS)
}

pub fn owner(text: &str) -> Result<(), FieldError> {
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_OWNER_CHARS {
        return Err(FieldError::new("owner", format!("must be 1 to {MAX_OWNER_CHARS} characters")));
    }
    no_control_chars("owner", text)
}

pub fn reason(text: &str) -> Result<(), FieldError> {
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(FieldError::new("reason", format!("must be at most {MAX_REASON_CHARS} characters")));
    }
    Ok(())
}

/// Checks a policy's `max_active_keys` and returns it as the policy holds it.
pub fn max_active_keys(value: u64) -> Result<u32, FieldError> {
    u32::try_from(value)
        .ok()
        .filter(|n| (MIN_ACTIVE_KEYS_LIMIT..=MAX_ACTIVE_KEYS_LIMIT).contains(n))
        .ok_or_else(|| {
            FieldError::new(
                "max_active_keys",
                format!("must be from {MIN_ACTIVE_KEYS_LIMIT} to {MAX_ACTIVE_KEYS_LIMIT}"),
            )
        })
}

/// Checks that metadata is a JSON object of at most 4 KiB and returns its canonical text
/// (keys sorted, no insignificant white space).
pub fn metadata(value: &Value) -> Result<String, FieldError> {
    if !value.is_object() {
        return Err(FieldError::new("metadata", "must be a JSON object"));
    }
    let canonical =
        serde_json::to_string(value).map_err(|_| FieldError::new("metadata", "must be a JSON object"))?;
    if canonical.len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    Ok(canonical)
}

/// Sorts and de-duplicates a list so equal sets always encode alike.
pub fn normalize(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_fields_in_errors() {
        assert_eq!(name("").unwrap_err().field, "name");
        assert!(name(&"x".repeat(100)).is_ok());
        assert!(name(&"x".repeat(101)).is_err());
        assert!(name("a\u{0}b").is_err());
        assert!(scopes(&vec!["a".to_string(); 64]).is_ok());
        assert_eq!(scopes(&vec!["a".to_string(); 65]).unwrap_err().field, "scopes");
        assert!(scopes(&["x".repeat(129)]).is_err());
        assert!(scopes(&["has space".into()]).is_err());
        assert!(resources(&[String::new()]).is_err());
    }

    #[test]
    fn max_active_keys_is_a_positive_int32() {
        assert_eq!(max_active_keys(1), Ok(1));
        assert_eq!(max_active_keys(2_147_483_647), Ok(2_147_483_647));
        for bad in [0, 2_147_483_648, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX] {
            assert_eq!(max_active_keys(bad).unwrap_err().field, "max_active_keys", "{bad}");
        }
    }

    #[test]
    fn metadata_is_a_small_canonical_object() {
        assert_eq!(metadata(&json!({"b": 1, "a": [true]})).unwrap(), r#"{"a":[true],"b":1}"#);
        assert!(metadata(&json!([1])).is_err());
        assert!(metadata(&json!({"k": "x".repeat(4090)})).is_err());
    }
}
