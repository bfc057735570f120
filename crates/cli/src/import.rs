//! `keyledger keys import FILE --workspace W` (docs/import.md): reads keys known by a
//! foreign SHA-256 hash from a JSON file (`{"keys": [...]}` or a bare array) or JSONL (one
//! entry per line) and sends them in one all-or-nothing request.

use crate::client::ClientError;
use serde_json::{Value, json};
use std::path::Path;

/// Most entries one import request (and so one file) may hold, as the server's bound.
pub const MAX_KEYS: usize = 1_000;
/// Largest file read (bytes).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The entries of an import file, in order.
pub fn read_entries(path: &Path) -> Result<Vec<Value>, ClientError> {
    let usage = |m: String| ClientError::Usage(format!("{}: {m}", path.display()));
    let size = std::fs::metadata(path).map_err(|e| usage(e.to_string()))?.len();
    if size > MAX_FILE_BYTES {
        return Err(usage(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    let entries = parse_entries(&text).map_err(usage)?;
    if entries.is_empty() || entries.len() > MAX_KEYS {
        return Err(usage(format!(
            "holds {} keys; an import takes 1 to {MAX_KEYS} (split the file)",
            entries.len()
        )));
    }
    Ok(entries)
}

/// `{"keys": [...]}`, `[...]`, or JSONL (blank lines skipped).
pub fn parse_entries(text: &str) -> Result<Vec<Value>, String> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return match value {
            Value::Object(mut object) if object.contains_key("keys") => match object.remove("keys") {
                Some(Value::Array(keys)) => Ok(keys),
                _ => Err("`keys` must be an array".into()),
            },
            Value::Array(keys) => Ok(keys),
            // One entry alone is a JSONL file of one line.
            entry @ Value::Object(_) => Ok(vec![entry]),
            _ => Err("must hold a JSON object or array".into()),
        };
    }
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON ({e})", n + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The request body for `entries`.
pub fn body(entries: Vec<Value>) -> Value {
    json!({ "keys": entries })
}

/// The human summary of an import's answer.
pub fn summary(workspace: &str, answer: &Value) -> String {
    let imported = answer.get("imported").and_then(Value::as_u64).unwrap_or(0);
    let present = answer.get("already_present").and_then(Value::as_u64).unwrap_or(0);
    format!("Imported {imported} keys into workspace {workspace}; {present} already present.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_object_and_jsonl_are_read() {
        let entry = r#"{"name":"a","hash":{"algorithm":"sha256","value":"00"}}"#;
        assert_eq!(parse_entries(&format!(r#"{{"keys":[{entry},{entry}]}}"#)).unwrap().len(), 2);
        assert_eq!(parse_entries(&format!("[{entry}]")).unwrap().len(), 1);
        assert_eq!(parse_entries(&format!("{entry}\n\n{entry}\n")).unwrap().len(), 2);
        let err = parse_entries(&format!("{entry}\nnot json\n")).unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
        assert!(parse_entries(r#"{"keys": 3}"#).is_err());
    }

    #[test]
    fn the_summary_counts_both() {
        let answer = json!({"imported": 2, "already_present": 1, "keys": []});
        assert_eq!(summary("acme", &answer), "Imported 2 keys into workspace acme; 1 already present.");
    }
}
